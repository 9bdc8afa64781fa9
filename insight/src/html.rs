//! The static HTML report: one self-contained page built from past run records.
//!
//! The page has no scripts, loads nothing (CSS is inline, charts are inline SVG drawn
//! here), and escapes every string that comes from a record. Each section has a stable
//! `id` (`health`, `trend`, `slowest`, `critical-path`, `cache`, `prediction`, `egress`,
//! `autopsy`, `determinism`, `chaos`, `metrics`) and says plainly when there is nothing to
//! show and what would produce it. docs/report.md describes the sections and the metrics.

pub(crate) mod fmt;
mod read;
mod sections;
pub(crate) mod stats;
mod svg;

use std::fmt::Write as _;

pub use read::{ReadError, Records, read_records};

use crate::record::{RunRecord, Status};
use fmt::esc;

/// What the page is for and when it was made.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The page's title.
    pub title: String,
    /// How many of the newest records to show; 0 shows all.
    pub runs: usize,
    /// When the page was made, RFC 3339 (the caller's clock: rendering reads none).
    pub generated_at: String,
    /// Lines of the history that were not valid records ([`Records::skipped_lines`]);
    /// the page warns when there were any.
    pub skipped_lines: usize,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions {
            title: "ci-intel report".into(),
            runs: 50,
            generated_at: String::new(),
            skipped_lines: 0,
        }
    }
}

pub(crate) const CSS: &str = include_str!("html/style.css");

/// The sections in page order: id and the link text of the contents bar.
const SECTIONS: [(&str, &str); 9] = [
    ("health", "Health"),
    ("slowest", "Slowest steps"),
    ("cache", "Cache"),
    ("prediction", "Prediction"),
    ("egress", "Egress"),
    ("autopsy", "Autopsy"),
    ("determinism", "Determinism"),
    ("chaos", "Chaos"),
    ("metrics", "Metrics"),
];

/// The whole page for the last `opts.runs` of `records` (oldest first, as read).
pub fn render(records: &[RunRecord], opts: &ReportOptions) -> String {
    let shown = if opts.runs == 0 || opts.runs >= records.len() {
        records
    } else {
        &records[records.len() - opts.runs..]
    };
    let title = if opts.title.trim().is_empty() {
        "ci-intel report"
    } else {
        opts.title.as_str()
    };
    let mut page = String::with_capacity(64 * 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"ci-intel\">\n<title>{t}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        t = esc(title)
    );
    header(&mut page, title, shown.len(), records.len(), opts);
    page.push_str("<main class=\"wrap\">\n");
    page.push_str(&sections::health(shown));
    page.push_str(&sections::slowest(shown));
    page.push_str(&sections::cache(shown));
    page.push_str(&sections::prediction(shown));
    page.push_str(&sections::egress(shown));
    page.push_str(&sections::autopsy(shown));
    page.push_str(&sections::determinism(shown));
    page.push_str(&sections::chaos(shown));
    page.push_str(&sections::metrics(shown));
    page.push_str(
        "</main>\n<footer>Made by <code>ci-intel report</code> from <code>pipeline_run</code> \
         records. A static page: no scripts, nothing loaded from elsewhere.</footer>\n</body>\n</html>\n",
    );
    page
}

/// The title, what the page covers, the skipped-lines warning and the contents bar.
fn header(page: &mut String, title: &str, shown: usize, read: usize, opts: &ReportOptions) {
    let _ = write!(
        page,
        "<header class=\"top\"><div class=\"wrap\">\n<h1>{}</h1>\n<p class=\"meta\">",
        esc(title)
    );
    if !opts.generated_at.is_empty() {
        let _ = write!(
            page,
            "Generated <time datetime=\"{}\">{}</time> · ",
            esc(&opts.generated_at),
            esc(&fmt::when(&opts.generated_at))
        );
    }
    let _ = write!(
        page,
        "<strong id=\"runs-shown\">{shown}</strong> {}",
        plural(shown, "run", "runs")
    );
    if read > shown {
        let _ = write!(page, " shown (the newest of {read} read)");
    } else {
        page.push_str(" shown");
    }
    page.push_str("</p>\n");
    if opts.skipped_lines > 0 {
        let _ = writeln!(
            page,
            "<p class=\"alert\" id=\"skipped-lines\" role=\"alert\"><strong>Warning:</strong> {n} {l} of the run \
             history {v} not a valid record and {v} skipped (a line cut short when a run was \
             killed mid-write, or a record this version cannot read).</p>",
            n = opts.skipped_lines,
            l = plural(opts.skipped_lines, "line", "lines"),
            v = if opts.skipped_lines == 1 {
                "was"
            } else {
                "were"
            },
        );
    }
    page.push_str("<nav class=\"toc\" aria-label=\"Sections\">");
    for (id, text) in SECTIONS {
        let _ = write!(page, "<a href=\"#{id}\">{text}</a>");
    }
    page.push_str("</nav>\n</div></header>\n");
}

/// `one` or `many`, by `n`.
pub(crate) fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The opening of a section: its id and heading.
pub(crate) fn open_section(id: &str, heading: &str) -> String {
    format!("<section id=\"{id}\" aria-labelledby=\"{id}-h\">\n<h2 id=\"{id}-h\">{heading}</h2>\n")
}

/// An empty state: "No … recorded yet." and one line (trusted HTML) on what produces it.
fn empty(what: &str, how: &str) -> String {
    format!("<div class=\"empty\"><p>No {what} recorded yet.</p><p>{how}</p></div>\n")
}

/// A status as a badge whose text says it without colour.
pub(crate) fn badge(status: Status) -> String {
    let (sym, word) = match status {
        Status::Success => ("\u{2713}", "success"),
        Status::Failed => ("\u{2715}", "failed"),
        Status::Canceled => ("\u{2298}", "canceled"),
        Status::Skipped => ("\u{2013}", "skipped"),
    };
    format!("<span class=\"badge s-{word}\">{sym} {word}</span>")
}

/// A figure card: the number (HTML), what it is, and on what it rests.
pub(crate) fn card(figure: &str, label: &str, sub: &str, tone: &str) -> String {
    format!(
        "<div class=\"card {tone}\"><div class=\"figure\">{figure}</div><div class=\"label\">{label}</div>\
         <div class=\"sub\">{sub}</div></div>"
    )
}

/// A link when `uri` is one a page may safely link to (http, https, file), else the text.
fn link(uri: &str, text: &str) -> String {
    let lower = uri.trim_start().to_ascii_lowercase();
    if ["https://", "http://", "file://"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        format!("<a href=\"{}\">{}</a>", esc(uri.trim_start()), esc(text))
    } else {
        esc(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A record from JSON, with the required fields filled in.
    fn rec(extra: Value) -> RunRecord {
        let mut v = json!({
            "schema": "pipeline_run.v1.3", "run_id": "00000000-0000-4000-8000-000000000000",
            "started_at": "2026-05-01T12:00:00.000Z", "ended_at": "2026-05-01T12:01:00.000Z",
            "status": "success", "jobs": [],
            "tests": {"total": 0, "failed": 0, "duration_ms": 0}, "cost": {}, "plan": "ci",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn opts() -> ReportOptions {
        ReportOptions {
            title: "Report".into(),
            runs: 20,
            generated_at: "2026-05-02T08:00:00Z".into(),
            skipped_lines: 0,
        }
    }

    /// The HTML of the section with `id` (sections do not nest).
    fn section<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page
            .find(&format!("<section id=\"{id}\""))
            .unwrap_or_else(|| panic!("no section {id}"));
        let end = page[start..].find("</section>").unwrap() + start;
        &page[start..end]
    }

    const HOSTILE: &str = "<script>alert(1)</script>";

    #[test]
    fn record_strings_are_escaped_everywhere() {
        let h = HOSTILE;
        let r = rec(json!({
            "status": "failed",
            "plan": h, "branch": h, "commit_sha": h,
            "jobs": [
                {"id": h, "name": h, "status": "failed", "duration_ms": 1500, "critical": true,
                 "logs_uri": "javascript:alert(1)"},
            ],
            "cache_events": [{"job": h, "result": "quarantine", "namespace": h, "reason": h}],
            "egress": [{"job": h, "host": h, "port": 443, "allowed": false, "reason": h}],
            "prediction": [{"job": h, "p50_ms": 1000, "actual_ms": 1500, "model": h}],
            "autopsy": {"root_causes": [{"job": h, "tool": h, "pattern": h, "file": h, "line": 3,
                "message": h, "suggestion": h, "docs_uri": "javascript:alert(1)", "repro": h}]},
            "determinism": [{"job": h, "verdict": h, "cause": h, "differing_files": 2}],
            "chaos": [{"fault": h, "target": h, "seed": 1, "outcome": h, "detail": h}],
        }));
        let mut o = opts();
        o.title = h.into();
        o.generated_at = h.into();
        let page = render(&[r], &o);
        assert!(!page.contains("<script"), "an unescaped script tag");
        assert!(!page.contains("href=\"javascript:"), "a javascript: link");
        let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
        for id in [
            "health",
            "slowest",
            "cache",
            "prediction",
            "egress",
            "autopsy",
            "determinism",
            "chaos",
        ] {
            assert!(
                section(&page, id).contains(escaped),
                "{id} shows the id escaped"
            );
        }
    }

    #[test]
    fn zero_records_give_every_section_an_empty_state() {
        let page = render(&[], &opts());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<strong id=\"runs-shown\">0</strong> runs shown"));
        for (id, _) in SECTIONS {
            let s = section(&page, id);
            assert!(s.contains("<h2"), "{id} has a heading");
            if id != "metrics" {
                assert!(
                    s.contains("class=\"empty\"") && s.contains("recorded yet."),
                    "{id} says it is empty: {s}"
                );
            }
        }
        let m = section(&page, "metrics");
        assert!(m.contains("not configured"), "{m}");
        assert!(m.contains("no mutation testing recorded"), "{m}");
        assert_eq!(page.matches("<svg").count(), 0, "no chart of nothing");
    }

    #[test]
    fn records_without_optional_sections_show_their_empty_states() {
        let r = rec(json!({
            "wall_ms": 60_000,
            "jobs": [{"id": "build", "name": "build", "status": "success", "duration_ms": 42_000}],
        }));
        let page = render(&[r], &opts());
        for id in [
            "cache",
            "prediction",
            "egress",
            "autopsy",
            "determinism",
            "chaos",
        ] {
            assert!(
                section(&page, id).contains("class=\"empty\""),
                "{id} is empty"
            );
        }
        for id in ["health", "slowest"] {
            assert!(!section(&page, id).contains("No runs recorded yet"), "{id}");
        }
        assert!(section(&page, "slowest").contains("data-step=\"build\""));
        assert!(
            section(&page, "slowest").contains("No critical path recorded yet."),
            "no job is marked critical"
        );
        assert!(section(&page, "health").contains("<svg"), "the trend chart");
    }

    #[test]
    fn only_the_last_runs_are_shown_and_skipped_lines_warn() {
        let records: Vec<RunRecord> = (0..5)
            .map(|i| rec(json!({"branch": format!("branch-{i}")})))
            .collect();
        let mut o = opts();
        o.runs = 2;
        o.skipped_lines = 3;
        let page = render(&records, &o);
        assert!(
            page.contains("<strong id=\"runs-shown\">2</strong> runs shown (the newest of 5 read)")
        );
        assert!(page.contains("branch-4") && page.contains("branch-3"));
        assert!(!page.contains("branch-2"));
        assert!(page.contains("id=\"skipped-lines\""));
        assert!(page.contains("3 lines of the run history were not a valid record"));
        o.skipped_lines = 0;
        assert!(!render(&records, &o).contains("skipped-lines"));
    }

    #[test]
    fn the_page_is_self_contained_and_balanced() {
        let r = rec(json!({
            "wall_ms": 60_000,
            "jobs": [{"id": "build", "name": "build", "status": "success", "duration_ms": 42_000,
                      "cache": {"hit": false}}],
            "egress": [{"job": "build", "host": "crates.io", "port": 443, "allowed": true}],
            "prediction": [{"job": "build", "p50_ms": 40_000, "p80_ms": 50_000, "actual_ms": 42_000}],
        }));
        let page = render(&[r.clone(), r], &opts());
        for banned in ["<script", "<link", "src=", "@import", "url("] {
            assert!(
                !page.contains(banned),
                "the page must not load anything: {banned}"
            );
        }
        for tag in ["section", "table", "svg", "div", "tr", "td", "figure", "p"] {
            let open = page.matches(&format!("<{tag}>")).count()
                + page.matches(&format!("<{tag} ")).count();
            let close = page.matches(&format!("</{tag}>")).count();
            assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
        }
    }

    #[test]
    fn metrics_show_flake_index_and_mttr() {
        let job = |id: &str, status: &str, attempt: u32| json!({"id": id, "name": id, "status": status, "attempt": attempt, "duration_ms": 1000});
        let records = vec![
            rec(
                json!({"status": "failed", "ended_at": "2026-05-01T10:00:00Z",
                       "jobs": [job("a", "failed", 1), job("b", "success", 1)]}),
            ),
            rec(
                json!({"status": "success", "ended_at": "2026-05-01T10:30:00Z",
                       "jobs": [job("a", "success", 2), job("b", "success", 1)]}),
            ),
            rec(
                json!({"status": "success", "ended_at": "2026-05-01T11:00:00Z",
                       "cost": {"usd": 0.5}, "carbon_g_co2e": 2.0,
                       "tests": {"total": 2, "failed": 0, "duration_ms": 0,
                                 "resilience": {"mutants_total": 10, "killed": 8, "equiv": 0,
                                                "timeout": 0, "score": 0.8}},
                       "jobs": [job("a", "success", 1), job("b", "success", 1)]}),
            ),
        ];
        let page = render(&records, &opts());
        let m = section(&page, "metrics");
        // 1 of 6 jobs passed on a retry.
        assert!(m.contains("16.7%") && m.contains("1 of 6 jobs"), "{m}");
        // Failed at 10:00, green again at 10:30.
        assert!(m.contains("30m00s") && m.contains("1 recovery"), "{m}");
        assert!(
            m.contains("$0.50") && m.contains("1 of 3 runs priced"),
            "{m}"
        );
        assert!(m.contains("2.0 g"), "{m}");
        assert!(m.contains("80%"), "{m}");
    }

    #[test]
    fn links_only_to_safe_schemes() {
        assert_eq!(
            link("https://d.example/a?b=1&c=2", "docs"),
            "<a href=\"https://d.example/a?b=1&amp;c=2\">docs</a>"
        );
        assert_eq!(
            link("file:///tmp/x.log", "log"),
            "<a href=\"file:///tmp/x.log\">log</a>"
        );
        assert_eq!(link(" JavaScript:alert(1)", "<x>"), "&lt;x&gt;");
        assert_eq!(link("data:text/html,hi", "x"), "x");
    }
}
