//! Chaos nights built from hand-made run records: the summary's counts, the changes since
//! the previous night, the Markdown step summary and the HTML page, and the summary's
//! JSON line read back.

use ci_intel_insight::chaos::{
    Change, ChangeKind, Night, NightRun, NightSummary, compare, render_html, render_markdown,
    summarize,
};
use ci_intel_insight::record::RunRecord;
use serde_json::{Value, json};

/// A step id a plan could never validate, but a record file is just text: a pipe, a
/// backquote and markup.
const HOSTILE: &str = "lint|x`y<script>alert(1)</script>";
const PLAN: &str = "plans/ci.toml";

/// A record from JSON, with the required fields filled in: `status`, the plan's steps as
/// jobs (each `success` unless named in `failed_steps`), and `chaos`.
fn record(status: &str, failed_steps: &[&str], chaos: Value) -> RunRecord {
    let jobs: Vec<Value> = ["fetch", "build", "test"]
        .iter()
        .map(|id| {
            let s = if failed_steps.contains(id) {
                "failed"
            } else {
                "success"
            };
            json!({"id": id, "name": id, "status": s, "attempt": 1, "duration_ms": 1000})
        })
        .collect();
    serde_json::from_value(json!({
        "schema": "pipeline_run.v1.3", "run_id": "00000000-0000-4000-8000-000000000000",
        "started_at": "2026-05-01T02:00:00.000Z", "ended_at": "2026-05-01T02:01:00.000Z",
        "status": status, "jobs": jobs, "plan": "ci", "wall_ms": 58_000,
        "tests": {"total": 3, "failed": failed_steps.len(), "duration_ms": 3000},
        "cost": {}, "chaos": chaos,
    }))
    .expect("a valid record")
}

/// The command of chaos run `seed`, as the binary writes it.
fn command(seed: u64) -> String {
    format!(
        "ci-intel run {PLAN} --chaos \"seed={seed},rate=0.3,faults=kill_job,delay_net,corrupt_cache\""
    )
}

/// A trial as the record holds it.
fn trial(fault: &str, step: &str, outcome: &str, seed: u64, recovery_ms: Option<u64>) -> Value {
    let mut t = json!({
        "fault": fault, "target": step, "seed": seed, "rate": 0.3, "outcome": outcome,
        "attempt": 1, "expected": "recovered",
        "recovery": match fault {
            "kill_job" => "retry with backoff",
            "delay_net" => "timeout, then retry",
            "corrupt_cache" => "quarantine and re-execution",
            _ => "proxy retry",
        },
        "repro": format!("ci-intel run {PLAN} --chaos \"seed={seed},rate=0.3,faults={fault}\" --step {step}"),
    });
    if let Some(ms) = recovery_ms {
        t["recovery_ms"] = json!(ms);
    }
    if outcome == "failed" {
        t["detail"] = json!("SIGKILL at 1.2s; the retry failed too: exit code 101");
    }
    t
}

/// The control run, passed or failed.
fn control(ok: bool) -> NightRun {
    NightRun {
        index: 0,
        seed: None,
        command: format!("ci-intel run {PLAN}"),
        exit_code: if ok { 0 } else { 1 },
        record: Some(if ok {
            record("success", &[], json!([]))
        } else {
            record("failed", &["build"], json!([]))
        }),
    }
}

/// Chaos run `index` (seed 42 + index - 1) with `trials`.
fn chaos_run(index: u32, trials: Vec<Value>) -> NightRun {
    let seed = 41 + u64::from(index);
    let failed = trials.iter().any(|t| t["outcome"] == "failed");
    NightRun {
        index,
        seed: Some(seed),
        command: command(seed),
        exit_code: i32::from(failed),
        record: Some(record(
            if failed { "failed" } else { "success" },
            &[],
            Value::Array(trials),
        )),
    }
}

fn night(runs: Vec<NightRun>) -> Night {
    Night {
        plan: "ci".into(),
        plan_path: PLAN.into(),
        seed: 42,
        rate: 0.3,
        faults: vec![
            "kill_job".into(),
            "delay_net".into(),
            "corrupt_cache".into(),
        ],
        started_at: "2026-05-01T02:00:00.000Z".into(),
        wall_ms: 754_000,
        runs,
    }
}

/// Three chaos runs: `kill_job` on `test` recovers twice and fails once (run 3), `delay_net`
/// on `fetch` degrades where recovery was expected, `corrupt_cache` on `build` recovers.
fn mixed_night() -> Night {
    night(vec![
        control(true),
        chaos_run(
            1,
            vec![
                trial("kill_job", "test", "recovered", 42, Some(1_000)),
                trial("corrupt_cache", "build", "recovered", 42, Some(30_000)),
            ],
        ),
        chaos_run(
            2,
            vec![
                trial("kill_job", "test", "recovered", 43, Some(3_000)),
                trial("delay_net", "fetch", "degraded", 43, Some(9_000)),
            ],
        ),
        chaos_run(3, vec![trial("kill_job", "test", "failed", 44, None)]),
    ])
}

#[test]
fn summarize_counts_trials_per_fault_and_step() {
    let s = summarize(&mixed_night());
    assert_eq!(s.plan, "ci");
    assert_eq!(s.id, "ci@2026-05-01T02:00:00.000Z");
    assert!(s.control_ok);
    assert_eq!(s.control_exit_code, Some(0));
    let cells: Vec<(&str, &str, u32, u32, u32, u32)> = s
        .cells
        .iter()
        .map(|c| {
            (
                c.fault.as_str(),
                c.step.as_str(),
                c.trials,
                c.recovered,
                c.degraded,
                c.failed,
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            ("kill_job", "test", 3, 2, 0, 1),
            ("delay_net", "fetch", 1, 0, 1, 0),
            ("corrupt_cache", "build", 1, 1, 0, 0),
        ],
        "cells in fault order"
    );
    let kill = &s.cells[0];
    assert_eq!(kill.expected_recovered, 3);
    assert_eq!(kill.below_expected, 1);
    assert_eq!(kill.median_recovery_ms, Some(2_000));
    assert_eq!(kill.max_recovery_ms, Some(3_000));
    assert_eq!(kill.recovery.as_deref(), Some("retry with backoff"));
    assert_eq!(
        s.cells[1].below_expected, 1,
        "degraded where recovery was expected"
    );
    let t = &s.totals;
    assert_eq!(
        (t.chaos_runs, t.trials, t.recovered, t.degraded, t.failed),
        (3, 5, 3, 1, 1)
    );
    assert_eq!(t.below_expected, 2);
    assert_eq!(s.failures.len(), 1);
    let f = &s.failures[0];
    assert_eq!(
        (f.run, f.seed, f.fault.as_str(), f.step.as_str()),
        (3, Some(44), "kill_job", "test")
    );
    assert_eq!(
        f.repro,
        format!("ci-intel run {PLAN} --chaos \"seed=44,rate=0.3,faults=kill_job\" --step test")
    );
    assert!(f.detail.as_deref().unwrap().contains("exit code 101"));
    assert!(!s.verdict, "a failed trial fails the night");
}

#[test]
fn the_verdict_needs_a_passing_control_and_a_record_of_every_run() {
    let recovered = || vec![trial("kill_job", "test", "recovered", 42, Some(800))];
    let good = night(vec![control(true), chaos_run(1, recovered())]);
    assert!(summarize(&good).verdict);

    let bad_control = night(vec![control(false), chaos_run(1, recovered())]);
    let s = summarize(&bad_control);
    assert!(!s.control_ok && !s.verdict);
    assert_eq!(s.control_exit_code, Some(1));

    let no_control = night(vec![chaos_run(1, recovered())]);
    let s = summarize(&no_control);
    assert!(!s.control_ok && !s.verdict);
    assert_eq!(s.control_exit_code, None);

    let mut lost = chaos_run(2, Vec::new());
    lost.record = None;
    lost.exit_code = 137;
    let s = summarize(&night(vec![control(true), chaos_run(1, recovered()), lost]));
    assert_eq!(s.totals.runs_without_record, 1);
    assert_eq!(s.totals.failed, 0);
    assert!(
        !s.verdict,
        "a chaos run that left no record fails the night"
    );
}

#[test]
fn a_failure_without_its_own_repro_is_replayed_by_its_run() {
    let mut t = trial("drop_net", "fetch", "failed", 42, None);
    t.as_object_mut().unwrap().remove("repro");
    let s = summarize(&night(vec![control(true), chaos_run(1, vec![t])]));
    assert_eq!(s.failures[0].repro, command(42));
}

#[test]
fn an_outcome_the_record_should_not_hold_counts_as_failed() {
    let t = trial("kill_job", "test", "exploded", 42, None);
    let s = summarize(&night(vec![control(true), chaos_run(1, vec![t])]));
    assert_eq!(s.totals.failed, 1);
    assert_eq!(s.failures[0].outcome, "exploded");
    assert!(!s.verdict);
}

#[test]
fn compare_names_what_changed_per_cell() {
    let previous = summarize(&night(vec![
        control(true),
        chaos_run(
            1,
            vec![
                trial("kill_job", "test", "recovered", 42, Some(1_000)),
                trial("delay_net", "fetch", "failed", 42, None),
                trial("corrupt_cache", "build", "recovered", 42, Some(2_000)),
                trial("cpu_stress", "build", "recovered", 42, Some(500)),
            ],
        ),
    ]));
    let now = summarize(&night(vec![
        control(true),
        chaos_run(
            1,
            vec![
                trial("kill_job", "test", "failed", 42, None),
                trial("delay_net", "fetch", "recovered", 42, Some(4_000)),
                trial("corrupt_cache", "build", "recovered", 42, Some(9_000)),
                trial("disk_fill", "test", "recovered", 42, Some(700)),
            ],
        ),
    ]));
    let changes = compare(&now, &previous);
    let got: Vec<(ChangeKind, Option<&str>, Option<&str>)> = changes
        .iter()
        .map(|c| (c.kind, c.fault.as_deref(), c.step.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (ChangeKind::NewlyFailing, Some("kill_job"), Some("test")),
            (ChangeKind::Fixed, Some("delay_net"), Some("fetch")),
            (ChangeKind::Slower, Some("corrupt_cache"), Some("build")),
            (ChangeKind::NewCell, Some("disk_fill"), Some("test")),
            (ChangeKind::Gone, Some("cpu_stress"), Some("build")),
        ]
    );
    assert_eq!(
        changes[0].to_string(),
        "kill_job on test: newly failing: 0/1 recovered, 1 failed (previous night 1/1 recovered)"
    );
    assert!(changes[2].text.contains("2.0s → 9.0s"), "{}", changes[2]);
    assert!(
        compare(&now, &now).is_empty(),
        "a night has not changed from itself"
    );
}

#[test]
fn compare_names_a_failing_control_and_a_different_setup() {
    let previous = summarize(&night(vec![control(true)]));
    let mut n = night(vec![control(false)]);
    n.rate = 0.05;
    let now = summarize(&n);
    let kinds: Vec<ChangeKind> = compare(&now, &previous).iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeKind::Setup, ChangeKind::ControlFailing]);
    let back: Vec<ChangeKind> = compare(&previous, &now).iter().map(|c| c.kind).collect();
    assert_eq!(back, [ChangeKind::Setup, ChangeKind::ControlFixed]);
}

#[test]
fn small_recovery_moves_are_not_changes() {
    let at = |ms| {
        summarize(&night(vec![
            control(true),
            chaos_run(
                1,
                vec![trial("kill_job", "test", "recovered", 42, Some(ms))],
            ),
        ]))
    };
    assert!(compare(&at(300), &at(100)).is_empty(), "3x, but only 200ms");
    assert_eq!(compare(&at(100), &at(3_000))[0].kind, ChangeKind::Faster);
}

#[test]
fn summary_round_trips_through_json() {
    let s = summarize(&mixed_night());
    let line = serde_json::to_string(&s).unwrap();
    assert!(!line.contains('\n'), "one line of a nights file");
    let back: NightSummary = serde_json::from_str(&line).unwrap();
    assert_eq!(back, s);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["schema"], "chaos_night.v1");
    assert_eq!(v["verdict"], false);
    assert_eq!(v["cells"][0]["median_recovery_ms"], 2_000);
    assert_eq!(v["failures"][0]["seed"], 44);
}

/// `md` without its fenced code blocks and inline code spans.
fn outside_code(md: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                out.push_str(part);
            }
        }
        out.push('\n');
    }
    out
}

/// The cell separators of a table row: pipes not escaped.
fn separators(row: &str) -> usize {
    let b = row.as_bytes();
    (0..b.len())
        .filter(|&i| b[i] == b'|' && (i == 0 || b[i - 1] != b'\\'))
        .count()
}

#[test]
fn markdown_has_the_verdict_table_failures_and_runs() {
    let n = mixed_night();
    let s = summarize(&n);
    let md = render_markdown(&n, &s, None);
    assert!(
        md.starts_with("## ❌ Chaos night: 5 trials, 3 recovered, 1 degraded, 1 failed\n"),
        "{md}"
    );
    assert!(
        md.contains("Control run (no faults): ✅ passed in 58.0s."),
        "{md}"
    );
    assert!(
        md.contains(
            "| `kill_job` | `test` | ❌ 2/3 recovered, 1 failed (1 below expected) | 2.0s | 3.0s | retry with backoff |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| `corrupt_cache` | `build` | ✅ 1/1 recovered | 30.0s | 30.0s |"),
        "{md}"
    );
    assert!(md.contains("### Failures (1)"), "{md}");
    assert!(
        md.contains("**❌ `kill_job` on `test`** — run 3, seed 44, attempt 1"),
        "{md}"
    );
    for f in &s.failures {
        assert!(
            md.contains(&format!("```sh\n{}\n```", f.repro)),
            "the repro of {} on {} in a code block:\n{md}",
            f.fault,
            f.step
        );
    }
    assert!(md.contains("First night: nothing to compare with yet."));
    assert!(
        md.contains("| control | – | 0 | – | `ci-intel run plans/ci.toml` |"),
        "{md}"
    );
    assert!(md.contains("| 3 | 44 | 1 | 1 | `ci-intel run"), "{md}");
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count()
    );
}

#[test]
fn markdown_escapes_a_hostile_step_id() {
    let mut t = trial("kill_job", HOSTILE, "failed", 42, None);
    t["detail"] = json!("died | badly `here` <img src=x onerror=alert(1)>");
    let n = night(vec![control(true), chaos_run(1, vec![t])]);
    let s = summarize(&n);
    let md = render_markdown(&n, &s, None);
    let row = md
        .lines()
        .find(|l| l.starts_with("| `kill_job` |"))
        .expect("the cell's row");
    assert_eq!(
        separators(row),
        7,
        "six columns, whatever the step id: {row}"
    );
    assert!(row.contains("lint\\|x"), "{row}");
    let prose = outside_code(&md);
    assert!(!prose.contains("<script"), "markup outside code:\n{prose}");
    assert!(!prose.contains("<img"), "markup outside code:\n{prose}");
    assert!(
        md.contains("died \\| badly \\`here\\` &lt;img"),
        "the detail escaped:\n{md}"
    );
    assert!(
        md.contains(&format!("```sh\n{}\n```", s.failures[0].repro)),
        "the repro verbatim:\n{md}"
    );
}

#[test]
fn markdown_puts_a_failed_control_first() {
    let n = night(vec![
        control(false),
        chaos_run(
            1,
            vec![trial("kill_job", "test", "recovered", 42, Some(800))],
        ),
    ]);
    let s = summarize(&n);
    let md = render_markdown(&n, &s, None);
    let caution = md.find("> [!CAUTION]").expect("a caution");
    assert!(caution < md.find("### Faults × steps").unwrap());
    assert!(md.contains("The control run failed (exit code 1)"), "{md}");
    assert!(md.contains("Failed steps: `build`."), "{md}");
    assert!(md.starts_with("## ❌ "), "the night fails: {md}");
}

#[test]
fn a_night_that_injected_nothing_says_so() {
    let n = night(vec![
        control(true),
        chaos_run(1, Vec::new()),
        chaos_run(2, Vec::new()),
    ]);
    let s = summarize(&n);
    assert_eq!(s.totals.trials, 0);
    let md = render_markdown(&n, &s, Some(&[]));
    assert!(
        md.starts_with("## ⚠️ Chaos night: no fault fired in 2 chaos runs"),
        "{md}"
    );
    assert!(
        md.contains("No fault fired: the 2 chaos runs injected nothing"),
        "{md}"
    );
    assert!(md.contains("At rate 0.3"), "{md}");
    assert!(md.contains("No change since the previous night."));
    let page = render_html(&n, &s, Some(&[]));
    assert!(page.contains("No fault fired."), "the matrix's empty state");
    assert!(page.contains("raise the rate"));
}

#[test]
fn markdown_lists_the_changes() {
    let n = mixed_night();
    let s = summarize(&n);
    let changes = vec![Change {
        kind: ChangeKind::NewlyFailing,
        fault: Some("kill_job".into()),
        step: Some("test".into()),
        text: "newly failing: 2/3 recovered, 1 failed (previous night 3/3 recovered)".into(),
    }];
    let md = render_markdown(&n, &s, Some(&changes));
    assert!(
        md.contains("- 🔴 `kill_job` on `test`: newly failing: 2/3 recovered, 1 failed"),
        "{md}"
    );
    let page = render_html(&n, &s, Some(&changes));
    assert!(page.contains("<span class=\"badge s-failed\">worse</span> <code>kill_job</code> on <code>test</code>: newly failing"));
}

/// `s` as the page escapes it.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The HTML of the section with `id` (sections do not nest).
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = page[start..].find("</section>").unwrap() + start;
    &page[start..end]
}

#[test]
fn html_is_self_contained_escaped_and_balanced() {
    let mut n = mixed_night();
    n.runs.push(chaos_run(
        4,
        vec![trial("kill_job", HOSTILE, "failed", 45, None)],
    ));
    n.plan = "<b>ci</b>".into();
    let s = summarize(&n);
    let changes = compare(&s, &summarize(&mixed_night()));
    let page = render_html(&n, &s, Some(&changes));
    assert!(page.starts_with("<!DOCTYPE html>"));
    for banned in ["<script", "<link", "src=", "@import", "url("] {
        assert!(
            !page.contains(banned),
            "the page must not load or run anything: {banned}"
        );
    }
    assert!(!page.contains("<b>ci</b>"), "the plan's name escaped");
    assert!(page.contains(&esc(HOSTILE)), "the hostile id escaped");
    for f in &s.failures {
        assert!(
            section(&page, "failures").contains(&format!(
                "<pre class=\"repro\"><code>{}</code></pre>",
                esc(&f.repro)
            )),
            "the repro of {} on {}",
            f.fault,
            f.step
        );
    }
    assert_eq!(s.failures.len(), 2);
    for tag in [
        "section", "table", "div", "tr", "td", "th", "p", "pre", "ul", "li", "dl", "code",
    ] {
        let open =
            page.matches(&format!("<{tag}>")).count() + page.matches(&format!("<{tag} ")).count();
        let close = page.matches(&format!("</{tag}>")).count();
        assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
    }
    for id in ["verdict", "matrix", "failures", "changes", "runs", "legend"] {
        assert!(
            page.contains(&format!("<section id=\"{id}\"")),
            "section {id}"
        );
    }
}

#[test]
fn html_matrix_colours_every_cell() {
    let n = mixed_night();
    let s = summarize(&n);
    let page = render_html(&n, &s, None);
    let m = section(&page, "matrix");
    let row = |step: &str| {
        let start = m
            .find(&format!("<tr data-step=\"{step}\">"))
            .unwrap_or_else(|| panic!("a row for {step}"));
        let end = m[start..].find("</tr>").unwrap() + start;
        &m[start..end]
    };
    let test = row("test");
    assert!(
        test.contains("<td class=\"v v-failed\">✕ 2/3 recovered, 1 failed<span class=\"sub\">median 2.0s</span></td>"),
        "{test}"
    );
    assert_eq!(
        test.matches("v-none").count(),
        2,
        "not injected: delay_net, corrupt_cache"
    );
    assert!(row("fetch").contains("v v-degraded"));
    assert!(row("build").contains("v v-recovered"));
    assert!(section(&page, "changes").contains("First night"));
    let legend = section(&page, "legend");
    for fault in [
        "kill_job",
        "delay_net",
        "drop_net",
        "corrupt_cache",
        "cpu_stress",
        "disk_fill",
    ] {
        assert!(
            legend.contains(&format!("<dt><code>{fault}</code></dt>")),
            "{fault}"
        );
    }
    assert!(legend.contains("SIGKILL to the step&#39;s process group"));
    let verdict = section(&page, "verdict");
    assert!(verdict.contains("banner fail"), "{verdict}");
    assert!(verdict.contains("Failed: Chaos night: 5 trials, 3 recovered, 1 degraded, 1 failed"));
}

#[test]
fn html_shows_a_failed_control_before_the_verdict() {
    let n = night(vec![
        control(false),
        chaos_run(
            1,
            vec![trial("kill_job", "test", "recovered", 42, Some(800))],
        ),
    ]);
    let page = render_html(&n, &summarize(&n), None);
    let control = page.find("id=\"control\"").expect("the control banner");
    assert!(control < page.find("<section id=\"verdict\"").unwrap());
    assert!(page.contains("The control run failed (exit code 1)"));

    let ok = mixed_night();
    assert!(!render_html(&ok, &summarize(&ok), None).contains("id=\"control\""));
}
