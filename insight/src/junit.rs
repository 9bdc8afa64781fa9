//! JUnit XML: one `<testsuite>` per run, one `<testcase>` per step, with its log.
//!
//! The shape is the one CI systems read (Jenkins, GitLab, GitHub test reporters):
//! a failed step is a `<failure>` (a timed-out one an `<error>`), a skipped or cancelled
//! one `<skipped>`, and the step's log is its `<system-out>`. Written by hand: the format
//! is a dozen elements and attributes, and escaping (with the characters XML 1.0 cannot
//! carry removed) is the only subtle part, tested here.

use std::fmt::Write as _;

use crate::record::{RunRecord, Status};

/// Bytes of each step's log kept in `<system-out>` (its end: where failures are).
pub const LOG_LIMIT: usize = 256 * 1024;

/// The JUnit document of `record`; `log` gives a job's log text by job id.
pub fn render(record: &RunRecord, log: impl Fn(&str) -> Option<String>) -> String {
    let suite = record.plan.as_deref().unwrap_or("ci-intel");
    let count = |s: Status| record.jobs.iter().filter(|j| j.status == s).count();
    let timed_out = |j: &crate::record::Job| j.state.as_deref() == Some("timed out");
    let errors = record.jobs.iter().filter(|j| timed_out(j)).count();
    let failures = count(Status::Failed) - errors;
    let skipped = count(Status::Skipped) + count(Status::Canceled);
    let secs = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{}\">",
        attr(suite),
        record.jobs.len(),
        secs(record.wall_ms.unwrap_or(0)),
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\">",
        attr(suite),
        record.jobs.len(),
        secs(record.wall_ms.unwrap_or(0)),
        attr(&record.started_at),
    );
    let mut props = Vec::new();
    for (k, v) in [
        ("run_id", Some(record.run_id.as_str())),
        ("commit", record.commit_sha.as_deref()),
        ("branch", record.branch.as_deref()),
        ("traceparent", record.traceparent.as_deref()),
    ] {
        if let Some(v) = v {
            props.push(format!(
                "      <property name=\"{k}\" value=\"{}\"/>",
                attr(v)
            ));
        }
    }
    if !props.is_empty() {
        let _ = writeln!(
            x,
            "    <properties>\n{}\n    </properties>",
            props.join("\n")
        );
    }
    for job in &record.jobs {
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
            attr(&job.id),
            attr(suite),
            secs(job.duration_ms)
        );
        let reason = job.reason.as_deref().unwrap_or(match job.status {
            Status::Failed => "failed",
            Status::Canceled => "cancelled",
            Status::Skipped => "skipped",
            Status::Success => "",
        });
        let causes: Vec<String> = record
            .autopsy
            .iter()
            .flat_map(|a| &a.root_causes)
            .filter(|c| c.job.as_deref() == Some(job.id.as_str()))
            .map(|c| {
                let place = match (&c.file, c.line) {
                    (Some(f), Some(l)) => format!(" at {f}:{l}"),
                    (Some(f), None) => format!(" at {f}"),
                    _ => String::new(),
                };
                format!("{}{place}: {}", c.pattern, c.suggestion)
            })
            .collect();
        let body = match job.status {
            Status::Failed => {
                let tag = if timed_out(job) { "error" } else { "failure" };
                format!(
                    "      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>\n",
                    attr(reason),
                    attr(job.state.as_deref().unwrap_or("failed")),
                    text(&causes.join("\n"))
                )
            }
            Status::Skipped | Status::Canceled => {
                format!("      <skipped message=\"{}\"/>\n", attr(reason))
            }
            Status::Success => String::new(),
        };
        let out = log(&job.id)
            .map(|l| {
                format!(
                    "      <system-out>{}</system-out>\n",
                    text(tail(&l, LOG_LIMIT))
                )
            })
            .unwrap_or_default();
        if body.is_empty() && out.is_empty() {
            x.push_str("/>\n");
        } else {
            let _ = write!(x, ">\n{body}{out}    </testcase>\n");
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// The last `limit` bytes of `s`, cut at a character boundary.
fn tail(s: &str, limit: usize) -> &str {
    if s.len() <= limit {
        return s;
    }
    let mut start = s.len() - limit;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Whether XML 1.0 can carry `c` at all.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escaped element text; characters XML cannot carry (terminal escapes, NUL) dropped.
pub fn text(s: &str) -> String {
    escape(s, false)
}

/// An escaped attribute value (newlines kept as character references).
pub fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, in_attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| xml_char(*c)) {
        match (c, in_attribute) {
            ('&', _) => out.push_str("&amp;"),
            ('<', _) => out.push_str("&lt;"),
            ('>', _) => out.push_str("&gt;"),
            ('"', true) => out.push_str("&quot;"),
            ('\'', true) => out.push_str("&apos;"),
            ('\n', true) => out.push_str("&#10;"),
            ('\r', true) => out.push_str("&#13;"),
            ('\t', true) => out.push_str("&#9;"),
            (c, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_and_drops_what_xml_cannot_carry() {
        assert_eq!(text("a<b>&\u{1b}[31mred\u{0}"), "a&lt;b&gt;&amp;[31mred");
        assert_eq!(attr("\"x\"\n'y'"), "&quot;x&quot;&#10;&apos;y&apos;");
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ééé", 3), "é");
        assert_eq!(tail("ab", 10), "ab");
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_markup(s in ".*") {
            let t = text(&s);
            prop_assert!(!t.contains('<') && !t.contains('>'));
            let a = attr(&s);
            prop_assert!(!a.contains('"') && !a.contains('<') && !a.contains('\n'));
            prop_assert!(t.chars().all(xml_char) && a.chars().all(xml_char));
        }
    }
}
