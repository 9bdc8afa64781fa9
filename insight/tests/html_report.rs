//! The HTML report of a realistic history, loaded in headless Chromium: the browser's DOM
//! has every section, the charts, the step rows, the autopsy's advice, and the hostile step
//! id as text, never as markup.
//!
//! Needs the `chromium` binary (Debian package `chromium`); fails, saying how to install
//! it, when it is missing.

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ci_intel_insight::html::{ReportOptions, read_records, render};
use serde_json::{Value, json};

/// A step id a plan could never validate, but a record file is just text.
const HOSTILE: &str = "<script>alert(1)</script>";
const HOSTILE_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
/// How long one Chromium call may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

const COMPILE_SUGGESTION: &str =
    "Add the missing `use crate::ast::Span;` or qualify the path: the type is not in scope.";
const TEST_SUGGESTION: &str = "Rerun the one test alone (`cargo test -p parser nested_groups -- --exact`) and compare the \
     left and right values it printed.";

/// Twelve runs of a plan `ci` (fetch → build → unit, integration → package, plus lint,
/// docs and the hostile step), oldest first: two failures with autopsy findings, a flaky
/// pass on retry, cache hits, a quarantine, egress decisions and predictions.
fn history() -> Vec<Value> {
    let base_ms: u64 = 1_777_622_400_000; // 2026-05-01T08:00:00Z
    let steps: [(&str, &[&str], u64, bool); 8] = [
        ("fetch", &[], 8_400, true),
        ("build", &["fetch"], 96_000, true),
        ("lint", &["fetch"], 21_000, false),
        ("unit", &["build"], 54_000, true),
        ("integration", &["build"], 41_000, false),
        (HOSTILE, &["fetch"], 3_200, false),
        ("docs", &["build"], 12_500, false),
        ("package", &["unit", "integration"], 15_800, true),
    ];
    let mut runs = Vec::new();
    for i in 0..12_u64 {
        let start = base_ms + i * 3 * 3_600_000 + i * 137_000;
        let failed_step = match i {
            4 => Some("unit"),
            8 => Some("build"),
            _ => None,
        };
        let mut jobs = Vec::new();
        let mut events = Vec::new();
        let mut predictions = Vec::new();
        let mut wall = 0;
        for (k, (id, needs, base, critical)) in steps.iter().enumerate() {
            // Deterministic jitter of ±12%, and the build getting slower over time.
            let jitter = (i * 7 + k as u64 * 13) % 25;
            let mut ms = base * (88 + jitter) / 100;
            if *id == "build" {
                ms += i * 2_500;
            }
            let skipped = failed_step == Some("build") && needs.contains(&"build")
                || failed_step == Some("build") && *id == "package"
                || failed_step == Some("unit") && *id == "package";
            // Unchanged inputs hit: fetch after the first run, lint and docs often, and the
            // build and its tests when the sources did not change (but the quarantine of
            // run 6 makes its build run again).
            let hit = i > 0
                && (*id == "fetch"
                    || *id == "lint" && i % 3 != 0
                    || *id == "docs" && i % 2 == 0
                    || ["build", "unit", "integration"].contains(id)
                        && i % 4 == 2
                        && !(i == 6 && *id == "build"));
            let status = if skipped {
                "skipped"
            } else if failed_step == Some(*id) {
                "failed"
            } else {
                "success"
            };
            if skipped {
                ms = 0;
            } else if hit {
                ms = 180 + k as u64 * 20;
            }
            let attempt = if i == 5 && *id == "unit" { 2 } else { 1 };
            if attempt == 2 {
                ms *= 2;
            }
            if *critical && !skipped {
                wall += ms;
            }
            let mut job = json!({
                "id": id, "name": id, "status": status, "attempt": attempt, "duration_ms": ms,
                "needs": needs, "logs_uri": format!("file:///srv/ci/.ci-intel/logs/run-{i}/{k}.log"),
            });
            if *critical && !skipped && failed_step.is_none() {
                job["critical"] = json!(true);
            }
            if !skipped && *id != "package" {
                job["cache"] = json!({"hit": hit, "key": format!("{:064x}", i * 100 + k as u64)});
                let quarantined = i == 6 && *id == "build";
                events.push(json!({
                    "job": id,
                    "result": if quarantined { "quarantine" } else if hit { "hit" } else { "miss" },
                    "namespace": "trusted",
                    "reason": if quarantined { json!("manifest signature does not verify against the trusted keys") } else { Value::Null },
                }));
            }
            if *id == "package" && !skipped {
                events.push(json!({"job": id, "result": "uncacheable", "reason": "declares secrets (PUBLISH_TOKEN)"}));
            }
            if i >= 2 && !skipped {
                let p50 = base * (95 + (k as u64 * 3) % 10) / 100;
                predictions.push(json!({
                    "job": id, "p50_ms": if hit { 200 } else { p50 }, "p80_ms": if hit { 260 } else { p50 * 115 / 100 },
                    "actual_ms": ms, "model": if i < 5 { "step-median" } else { "step-ewma" }, "cache_hit": hit,
                }));
            }
            jobs.push(job);
        }
        let status = if failed_step.is_some() {
            "failed"
        } else {
            "success"
        };
        let mut egress = vec![
            json!({"job": "integration", "host": "crates.io", "port": 443, "allowed": true,
                   "bytes_up": 18_000, "bytes_down": 2_400_000}),
            json!({"job": "integration", "host": "static.crates.io", "port": 443, "allowed": true,
                   "bytes_up": 9_000, "bytes_down": 11_800_000}),
        ];
        if i % 4 == 1 {
            egress.push(
                json!({"job": "integration", "host": "telemetry.example.com", "port": 443,
                               "allowed": false, "reason": "not in the step's allowlist"}),
            );
        }
        if i == 8 {
            egress.push(
                json!({"job": HOSTILE, "host": "169.254.169.254", "port": 80,
                               "allowed": false, "reason": "link-local address"}),
            );
        }
        let mut r = json!({
            "schema": "pipeline_run.v1.3",
            "run_id": format!("6f1c2e4a-6b54-4e3b-9f1e-{i:012x}"),
            "repo": "example/parser",
            "commit_sha": format!(
                "{:016x}{:016x}{:08x}",
                0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i + 1),
                0xc2b2_ae3d_27d4_eb4f_u64.wrapping_mul(i + 7),
                0x1656_67b1_u32.wrapping_mul(i as u32 + 3)
            ),
            "branch": if i % 5 == 3 { "fix/nested-groups" } else { "main" },
            "started_at": ci_intel_insight::record::rfc3339_ms(start),
            "ended_at": ci_intel_insight::record::rfc3339_ms(start + wall + 4_000),
            "status": status,
            "exit_code": if failed_step.is_some() { 1 } else { 0 },
            "plan": "ci",
            "runner_class": "standard-4",
            "wall_ms": wall + 4_000,
            "jobs": jobs,
            "tests": {"total": 8, "failed": u64::from(failed_step.is_some()), "duration_ms": wall},
            "cost": {"usd": (wall + 4_000) as f64 / 60_000.0 * 0.008, "cpu_seconds": 410.0,
                     "runner_class": "standard-4", "usd_per_minute": 0.008},
            "cache_events": events,
            "egress": egress,
            "prediction": predictions,
        });
        if i == 3 {
            r["pr"] = json!(214);
        }
        if i == 11 {
            r["tests"]["resilience"] = json!({"mutants_total": 412, "killed": 371, "equiv": 9, "timeout": 4, "score": 371.0 / 403.0});
        }
        match failed_step {
            Some("unit") => {
                r["autopsy"] = json!({"root_causes": [{
                    "job": "unit", "rule": "rust-test-assertion", "tool": "cargo test",
                    "pattern": "assertion `left == right` failed",
                    "file": "src/parser.rs", "line": 118,
                    "message": "thread 'parser::tests::nested_groups' panicked at src/parser.rs:118:9:\nassertion `left == right` failed\n  left: [Group(1), Group(2)]\n right: [Group(1)]",
                    "suggestion": TEST_SUGGESTION, "severity": "error",
                    "docs_uri": "https://example.invalid/docs/autopsy#rust-test-assertion",
                    "repro": "ci-intel run plans/ci.toml --step unit",
                }]});
            }
            Some("build") => {
                r["autopsy"] = json!({"root_causes": [{
                    "job": "build", "rule": "rustc-error", "tool": "rustc",
                    "pattern": "error[E0412]: cannot find type",
                    "file": "src/lexer.rs", "line": 42,
                    "message": "error[E0412]: cannot find type `Span` in this scope",
                    "suggestion": COMPILE_SUGGESTION, "severity": "error",
                    "docs_uri": "https://doc.rust-lang.org/error_codes/E0412.html",
                    "repro": "ci-intel run plans/ci.toml --step build",
                }, {
                    "job": "build", "rule": "rustc-warning", "tool": "rustc",
                    "pattern": "warning: unused import",
                    "file": "src/lexer.rs", "line": 3,
                    "message": "warning: unused import: `std::fmt::Write`",
                    "suggestion": "Remove the import, or use it.", "severity": "info",
                    "repro": "ci-intel run plans/ci.toml --step build",
                }]});
            }
            _ => {}
        }
        runs.push(r);
    }
    runs
}

/// Runs Chromium headless with `args`, killing it (and its helpers) after
/// [`CHROMIUM_TIMEOUT`]; fails the test, saying how to install it, when it is missing.
fn chromium(profile: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so that a hung browser is killed with its helpers.
    .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "chromium is not installed, and this test loads the report in headless Chromium: \
             install it with `apt-get install chromium` (Debian package `chromium`)"
        ),
        Err(e) => panic!("could not start chromium: {e}"),
    };
    let pgid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CHROMIUM_TIMEOUT) {
        Ok(out) => {
            let out = out.expect("waiting for chromium");
            assert!(
                out.status.success(),
                "chromium {args:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            panic!(
                "chromium {args:?} did not finish within {}s and was killed",
                CHROMIUM_TIMEOUT.as_secs()
            );
        }
    }
}

/// The DOM with attribute values removed, so that a search for a tag cannot match text
/// inside an attribute.
fn without_attribute_values(dom: &str) -> String {
    let mut out = String::with_capacity(dom.len());
    let (mut in_tag, mut quote) = (false, None);
    for c in dom.chars() {
        match (in_tag, quote, c) {
            (true, Some(q), c) if c == q => quote = None,
            (true, Some(_), _) => continue,
            (true, None, '"' | '\'') => quote = Some(c),
            (true, None, '>') => in_tag = false,
            (false, _, '<') => in_tag = true,
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The part of the DOM from the element with `id` to the end of its `<section>` (or of the
/// page for the last one).
fn part<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element with id {id} in the rendered DOM"));
    let end = dom[at..].find("</section>").map_or(dom.len(), |e| at + e);
    &dom[at..end]
}

#[test]
fn chromium_renders_every_section_of_a_realistic_history() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();

    // The history as `ci-intel run` leaves it, with a last line torn by a crash.
    let mut ndjson: String = history().iter().map(|r| format!("{r}\n")).collect();
    ndjson.push_str(r#"{"schema":"pipeline_run.v1.3","run_id":"torn","started_at":"2026-05-0"#);
    let history_file = state.join("runs.ndjson");
    std::fs::write(&history_file, ndjson).unwrap();

    let read = read_records(&history_file, 50).unwrap();
    assert_eq!(read.records.len(), 12);
    assert_eq!(read.skipped_lines, 1, "the torn line");
    let page = render(
        &read.records,
        &ReportOptions {
            title: "example/parser CI".into(),
            runs: 50,
            generated_at: "2026-05-03T09:30:00Z".into(),
            skipped_lines: read.skipped_lines,
        },
    );
    let html = dir.path().join("report.html");
    std::fs::write(&html, &page).unwrap();
    let url = format!("file://{}", html.display());
    let profile = dir.path().join("profile");

    let out = chromium(&profile, &["--dump-dom", &url]);
    let dom = String::from_utf8(out.stdout).expect("the DOM is UTF-8");
    assert!(
        dom.contains("<h1>example/parser CI</h1>"),
        "chromium did not render the page:\n{dom}"
    );

    for id in [
        "health",
        "trend",
        "slowest",
        "critical-path",
        "cache",
        "prediction",
        "egress",
        "autopsy",
        "determinism",
        "chaos",
        "metrics",
    ] {
        let p = part(&dom, id);
        assert!(
            p.contains("<h2") || p.contains("<h3"),
            "#{id} has a heading"
        );
    }
    assert!(dom.contains("<strong id=\"runs-shown\">12</strong> runs shown"));
    assert!(
        part(&dom, "skipped-lines").contains("1 line of the run history was not a valid record")
    );

    // The charts: the duration trend, the critical path, cache and prediction per run.
    for id in ["trend", "critical-path", "cache-chart", "prediction-chart"] {
        let p = part(&dom, id);
        assert!(p.contains("<svg"), "#{id} has an SVG chart");
        assert!(p.contains("<rect"), "#{id} draws bars");
    }
    // One bar per run in the trend, two of them marked as failures.
    let trend = part(&dom, "trend");
    assert_eq!(trend.matches("<rect").count(), 12, "{trend}");
    assert_eq!(trend.matches("class=\"mark\"").count(), 2);

    // A row for every step that ran, the hostile one escaped.
    let slowest = part(&dom, "slowest");
    for step in [
        "fetch",
        "build",
        "lint",
        "unit",
        "integration",
        "docs",
        "package",
    ] {
        assert!(
            slowest.contains(&format!("<code>{step}</code>")),
            "a row for {step}"
        );
    }
    assert!(slowest.contains(&format!("<code>{HOSTILE_ESCAPED}</code>")));
    let steps_rows = slowest.matches("<tr data-step=").count();
    assert_eq!(steps_rows, 8, "one row per step");
    // The critical path of the newest run, in the order of its needs.
    let critical = part(&dom, "critical-path");
    let order: Vec<usize> = ["fetch", "build", "unit", "package"]
        .iter()
        .map(|s| {
            critical
                .find(&format!("<code>{s}</code>"))
                .unwrap_or_else(|| panic!("{s} on the critical path"))
        })
        .collect();
    assert!(
        order.is_sorted(),
        "fetch → build → unit → package: {order:?}"
    );

    let cache = part(&dom, "cache");
    assert!(cache.contains("manifest signature does not verify against the trusted keys"));
    assert!(cache.contains("declares secrets (PUBLISH_TOKEN)"));

    let egress = part(&dom, "egress");
    assert!(egress.contains("telemetry.example.com:443"));
    assert!(egress.contains("169.254.169.254:80"));
    assert!(egress.contains(HOSTILE_ESCAPED));

    let autopsy = part(&dom, "autopsy");
    // Serialised text escapes `&`, `<` and `>` only.
    // Suggestions as written, with their `backquoted` parts set as code.
    assert!(
        autopsy.contains(
            "Add the missing <code>use crate::ast::Span;</code> or qualify the path: the type is not in scope."
        ),
        "{autopsy}"
    );
    assert!(
        autopsy.contains(
            "Rerun the one test alone (<code>cargo test -p parser nested_groups -- --exact</code>) and compare"
        ),
        "{autopsy}"
    );
    assert!(autopsy.contains("<code>src/lexer.rs:42</code>"));
    assert!(
        autopsy.contains("<code class=\"repro\">ci-intel run plans/ci.toml --step build</code>")
    );
    assert!(autopsy.contains("href=\"https://doc.rust-lang.org/error_codes/E0412.html\""));

    let prediction = part(&dom, "prediction");
    assert!(prediction.contains("WAPE, latest run"));
    assert!(prediction.contains("step-ewma"));

    assert!(part(&dom, "determinism").contains("No determinism verdicts recorded yet."));
    assert!(part(&dom, "chaos").contains("No chaos trials recorded yet."));

    let metrics = part(&dom, "metrics");
    // 91 jobs ran (12 × 8, less 5 skipped); one passed on its second attempt.
    assert!(metrics.contains("1 of 91 jobs"), "{metrics}");
    assert!(metrics.contains("2 recoveries"), "{metrics}");
    assert!(metrics.contains("12 of 12 runs priced"), "{metrics}");
    assert!(part(&dom, "metric-carbon").contains("not configured"));
    assert!(part(&dom, "metric-resilience").contains("92.1%"));

    // The hostile id is text everywhere: no script element, nothing loaded.
    let tags = without_attribute_values(&dom);
    assert!(!tags.contains("<script"), "a script element in the DOM");
    assert!(!tags.contains("<img") && !tags.contains("<link") && !tags.contains("<iframe"));

    // And it draws: a screenshot of the whole page.
    let png = dir.path().join("report.png");
    chromium(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2400",
            "--hide-scrollbars",
            &url,
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 10_000,
        "a drawn page, not a blank one: {} bytes",
        bytes.len()
    );
}
