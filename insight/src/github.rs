//! GitHub-native output: the Markdown step summary (`$GITHUB_STEP_SUMMARY`) and workflow
//! commands (`::error file=…,line=…::`, `::group::`).

use std::fmt::Write as _;

use crate::record::{RunRecord, Status};

/// Rows of the slowest-steps table.
const SLOWEST: usize = 5;

/// The Markdown summary of a run: status table, cache hit ratio, slowest steps,
/// predicted against actual, the chaos trials, and the autopsy's findings.
pub fn summary(record: &RunRecord) -> String {
    let mut md = String::new();
    let icon = |s: Status| match s {
        Status::Success => "✅",
        Status::Failed => "❌",
        Status::Canceled => "⏹️",
        Status::Skipped => "⏭️",
    };
    let _ = writeln!(
        md,
        "## {} ci-intel: `{}` {}\n",
        icon(record.status),
        md_code(record.plan.as_deref().unwrap_or("plan")),
        record.status.as_str()
    );
    let mut facts = vec![format!(
        "{} step{}",
        record.jobs.len(),
        if record.jobs.len() == 1 { "" } else { "s" }
    )];
    if let Some(ms) = record.wall_ms {
        facts.push(format!("wall {}", duration(ms)));
    }
    let cacheable: Vec<&str> = record
        .cache_events
        .iter()
        .filter(|e| e.result == "hit" || e.result == "miss")
        .map(|e| e.result.as_str())
        .collect();
    if !cacheable.is_empty() {
        let hits = cacheable.iter().filter(|r| **r == "hit").count();
        facts.push(format!(
            "cache hit ratio {:.0}% ({hits}/{})",
            100.0 * hits as f64 / cacheable.len() as f64,
            cacheable.len()
        ));
    }
    let quarantined = record
        .cache_events
        .iter()
        .filter(|e| e.result == "quarantine")
        .count();
    if quarantined > 0 {
        facts.push(format!(
            "{quarantined} cache entr{} quarantined",
            if quarantined == 1 { "y" } else { "ies" }
        ));
    }
    let denied = record.egress.iter().filter(|e| !e.allowed).count();
    if denied > 0 {
        facts.push(format!("{denied} egress denied"));
    }
    if let Some(usd) = record.cost.usd {
        facts.push(format!("${usd:.4}"));
    }
    let _ = writeln!(md, "{}\n", facts.join(" · "));

    md.push_str("| step | status | duration | attempts |\n|---|---|--:|--:|\n");
    for j in &record.jobs {
        let state = j.state.as_deref().unwrap_or(j.status.as_str());
        let _ = writeln!(
            md,
            "| `{}` | {} {} | {} | {} |",
            md_code(&j.id),
            icon(j.status),
            md_cell(state),
            duration(j.duration_ms),
            j.attempt.unwrap_or(0)
        );
    }

    let mut ran: Vec<_> = record
        .jobs
        .iter()
        .filter(|j| j.attempt.unwrap_or(0) > 0)
        .collect();
    ran.sort_by_key(|j| std::cmp::Reverse(j.duration_ms));
    if ran.len() > 1 {
        md.push_str("\n### Slowest steps\n\n| step | duration | critical path |\n|---|--:|:-:|\n");
        for j in ran.iter().take(SLOWEST) {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} |",
                md_code(&j.id),
                duration(j.duration_ms),
                if j.critical { "●" } else { "" }
            );
        }
    }

    if !record.prediction.is_empty() {
        md.push_str(
            "\n<details><summary>Predicted vs actual</summary>\n\n| step | p50 | p80 | actual | model |\n|---|--:|--:|--:|---|\n",
        );
        for p in &record.prediction {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} |",
                md_code(&p.job),
                duration(p.p50_ms),
                p.p80_ms.map_or_else(|| "-".into(), duration),
                duration(p.actual_ms),
                md_cell(p.model.as_deref().unwrap_or("-"))
            );
        }
        md.push_str("\n</details>\n");
    }

    if !record.chaos.is_empty() {
        let count = |o: &str| record.chaos.iter().filter(|t| t.outcome == o).count();
        let _ = writeln!(
            md,
            "\n### Chaos\n\n{} fault{} acted: {} recovered, {} degraded, {} failed\n\n\
             | step | fault | attempt | outcome | expected | recovery | replay |\n|---|---|--:|---|---|--:|---|",
            record.chaos.len(),
            if record.chaos.len() == 1 { "" } else { "s" },
            count("recovered"),
            count("degraded"),
            count("failed")
        );
        for t in &record.chaos {
            let _ = writeln!(
                md,
                "| `{}` | `{}` | {} | {} | {} | {} | {} |",
                md_code(&t.target),
                md_code(&t.fault),
                t.attempt.map_or_else(|| "-".into(), |a| a.to_string()),
                md_cell(&t.outcome),
                md_cell(t.expected.as_deref().unwrap_or("-")),
                t.recovery_ms.map_or_else(|| "-".into(), duration),
                t.repro
                    .as_deref()
                    .map_or_else(|| "-".into(), |r| format!("`{}`", md_code(r)))
            );
        }
    }

    // A generic finding ("exit code 3") says nothing the status table does not.
    let causes: Vec<&crate::record::RootCause> = record
        .autopsy
        .iter()
        .flat_map(|a| &a.root_causes)
        .filter(|c| c.rule.as_deref() != Some(crate::autopsy::GENERIC_RULE))
        .collect();
    if !causes.is_empty() {
        md.push_str("\n### Why it failed\n\n");
        for c in causes {
            let place = match (&c.file, c.line) {
                (Some(f), Some(l)) => format!(" at `{}:{l}`", md_code(f)),
                (Some(f), None) => format!(" at `{}`", md_code(f)),
                _ => String::new(),
            };
            let _ = writeln!(
                md,
                "- **`{}`** — {}{place}: {}",
                md_code(c.job.as_deref().unwrap_or("?")),
                md_cell(&c.pattern),
                md_cell(&c.suggestion)
            );
            if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
                let _ = writeln!(
                    md,
                    "  ```text\n  {}\n  ```",
                    m.replace("```", "ˋˋˋ").replace('\n', "\n  ")
                );
            }
            let mut links = Vec::new();
            if let Some(d) = &c.docs_uri {
                links.push(format!("[docs]({d})"));
            }
            if let Some(r) = &c.repro {
                links.push(format!("rerun: `{}`", md_code(r)));
            }
            if !links.is_empty() {
                let _ = writeln!(md, "  {}", links.join(" · "));
            }
        }
    }
    md
}

/// `::error` (or `::warning`) annotations for the autopsy's findings that name a file.
pub fn annotations(record: &RunRecord) -> Vec<String> {
    record
        .autopsy
        .iter()
        .flat_map(|a| &a.root_causes)
        .filter(|c| c.file.is_some())
        .map(|c| {
            let level = match c.severity.as_deref() {
                Some("info") => "notice",
                Some("warn") => "warning",
                _ => "error",
            };
            let mut props = vec![format!(
                "file={}",
                property(c.file.as_deref().unwrap_or_default())
            )];
            if let Some(l) = c.line {
                props.push(format!("line={l}"));
            }
            props.push(format!(
                "title={}",
                property(&format!(
                    "{}: {}",
                    c.job.as_deref().unwrap_or("step"),
                    c.pattern
                ))
            ));
            let msg = match c.message.as_deref() {
                Some(m) if !m.is_empty() => format!("{m}\n{}", c.suggestion),
                _ => c.suggestion.clone(),
            };
            format!("::{level} {}::{}", props.join(","), data(&msg))
        })
        .collect()
}

/// A workflow command's message, escaped (`%`, CR, LF).
pub fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value, escaped (also `:` and `,`).
pub fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `::group::title`.
pub fn group(title: &str) -> String {
    format!("::group::{}", data(title))
}

/// Text inside backticks in a table cell: backticks and pipes would end it.
pub(crate) fn md_code(s: &str) -> String {
    s.replace('`', "ˋ").replace('|', "\\|").replace('\n', " ")
}

/// Text in a table cell or list item: no line breaks or unescaped pipes, no HTML.
pub(crate) fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\n', " ")
}

/// `850ms`, `4.2s`, `3m04s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(data("50%\r\nnext"), "50%25%0D%0Anext");
        assert_eq!(property("a:b,c"), "a%3Ab%2Cc");
        assert_eq!(group("step x\nmore"), "::group::step x%0Amore");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(4_240), "4.2s");
        assert_eq!(duration(184_000), "3m04s");
    }

    #[test]
    fn chaos_trials_get_a_table_with_their_replay_command() {
        let text = include_str!("../../schema/pipeline_run.v1.3.example.json");
        let mut record: RunRecord = serde_json::from_str(text).unwrap();
        let mut failed = record.chaos[0].clone();
        failed.outcome = "failed".into();
        failed.target = "a|b".into();
        failed.repro = Some("ci-intel run ci.toml --chaos \"seed=42\" --step pytest".into());
        record.chaos.push(failed);
        let md = summary(&record);
        assert!(
            md.contains("### Chaos\n\n2 faults acted: 1 recovered, 0 degraded, 1 failed"),
            "{md}"
        );
        assert!(md.contains("| `a\\|b` | `kill_job` |"), "{md}");
        assert!(
            md.contains("`ci-intel run ci.toml --chaos \"seed=42\" --step pytest`"),
            "{md}"
        );
        record.chaos.clear();
        assert!(!summary(&record).contains("### Chaos"));
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md_code("a|b`c"), "a\\|bˋc");
        assert_eq!(md_cell("<b>x|y</b>"), "&lt;b&gt;x\\|y&lt;/b&gt;");
    }
}
