//! The project's real plan files: every one is valid, and the demo plan runs green and
//! leaves its evidence: a valid run record, JUnit XML, and a report.
#[path = "support/records.rs"]
mod records;
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

fn plans_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plans")
}

fn ci_intel(args: &[&std::ffi::OsStr]) -> Output {
    support::ci_intel()
        .args(args)
        .env_remove("CI_INTEL_LOG")
        .output()
        .expect("starting ci-intel")
}

fn show(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_plan_file_passes_plan_check() {
    let mut plans: Vec<PathBuf> = std::fs::read_dir(plans_dir())
        .expect("reading plans/")
        .map(|e| e.expect("reading plans/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    plans.sort();
    assert!(
        plans.iter().any(|p| p.ends_with("demo.toml")),
        "plans/demo.toml is missing: {plans:?}"
    );
    for plan in &plans {
        // Only checked, never run: plans/ci.toml runs cargo on this very workspace.
        let out = ci_intel(&["plan".as_ref(), "check".as_ref(), plan.as_os_str()]);
        assert!(
            out.status.success(),
            "{} is not valid:\n{}",
            plan.display(),
            show(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let expected = format!("{}: plan `", plan.display());
        assert!(
            stdout.starts_with(&expected) && stdout.contains("` is valid: "),
            "unexpected summary for {}:\n{}",
            plan.display(),
            show(&out)
        );
    }
}

/// The step ids of a plan, in file order, as `plan graph --format mermaid` labels them.
fn step_ids(plan: &Path) -> Vec<String> {
    let out = ci_intel(&[
        "plan".as_ref(),
        "graph".as_ref(),
        plan.as_os_str(),
        "--format".as_ref(),
        "mermaid".as_ref(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let label = l.trim().split_once("[\"")?.1;
            Some(label.strip_suffix("\"]")?.to_string())
        })
        .collect()
}

#[test]
fn the_demo_plan_runs_green() {
    let plan = plans_dir().join("demo.toml");
    let state = tempfile::tempdir().expect("creating a temporary directory");
    let out = ci_intel(&[
        "run".as_ref(),
        plan.as_os_str(),
        "--state-dir".as_ref(),
        state.path().as_os_str(),
        "--cache-dir".as_ref(),
        state.path().join("cache").as_os_str(),
        "--junit".as_ref(),
        state.path().join("junit.xml").as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the demo failed:\n{}",
        show(&out)
    );
    let recorded = records::read_valid(&state.path().join("runs.ndjson"));
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["status"], "success");
    let junit = std::fs::read_to_string(state.path().join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(cases, step_ids(&plan).len(), "{junit}");
    let page = state.path().join("report.html");
    let report = ci_intel(&[
        "report".as_ref(),
        "--state-dir".as_ref(),
        state.path().as_os_str(),
        "--out".as_ref(),
        page.as_os_str(),
    ]);
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("id=\"health\"") && html.contains("demo"),
        "{html}"
    );

    let runs: Vec<PathBuf> = std::fs::read_dir(state.path().join("runs"))
        .expect("the run directory was created under --state-dir")
        .map(|e| e.expect("reading runs/").path())
        .collect();
    assert_eq!(runs.len(), 1, "one run directory expected: {runs:?}");
    let run_dir = &runs[0].canonicalize().expect("canonical run directory");

    let steps = step_ids(&plan);
    assert!(steps.len() >= 6, "the demo's steps: {steps:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .split_once("\nSTEP ")
        .map(|(_, table)| table)
        .unwrap_or_else(|| panic!("no summary table:\n{}", show(&out)));
    for step in &steps {
        let row = summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(step.as_str()))
            .unwrap_or_else(|| panic!("step `{step}` missing from the summary:\n{summary}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.get(1), Some(&"succeeded"), "step `{step}`: {row}");
        assert_eq!(cols.last(), Some(&"1"), "step `{step}` attempts: {row}");
        let log = run_dir.join(format!("{step}.log"));
        assert!(log.is_file(), "no log file {}", log.display());
    }
    let total = format!("{n} steps: {n} succeeded;", n = steps.len());
    assert!(stdout.contains(&total), "expected `{total}` in:\n{stdout}");
    assert!(
        stdout.contains(&format!("logs in {}", run_dir.display())),
        "the summary names the run directory:\n{stdout}"
    );
    let test_log = std::fs::read_to_string(run_dir.join("test.log")).expect("reading test.log");
    assert!(test_log.contains("as expected"), "test.log:\n{test_log}");
}

/// The first TOML block after `heading` in `text`.
fn toml_after<'t>(text: &'t str, heading: &str) -> &'t str {
    text.split(heading)
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("\n```").next())
        .unwrap_or_else(|| panic!("no TOML block after {heading}"))
}

/// The plans the docs show as TOML (plan-format.md's complete example, the `[chaos]`
/// examples) are plans this build accepts: every key they use is real.
#[test]
fn the_documented_example_plans_are_valid() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let check = |toml: &str| {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("ci").join("plan.toml");
        std::fs::create_dir_all(plan.parent().unwrap()).unwrap();
        std::fs::write(&plan, toml).unwrap();
        let out = ci_intel(&["plan".as_ref(), "check".as_ref(), plan.as_os_str()]);
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = std::fs::read_to_string(docs.join("plan-format.md")).unwrap();
    let out = check(toml_after(&text, "## Complete example"));
    assert!(out.contains("plan `libdemo` is valid: 5 steps"), "{out}");
    // The [chaos] tables with the steps they show, in docs/chaos.md and plan-format.md.
    let chaos = std::fs::read_to_string(docs.join("chaos.md")).unwrap();
    check(&format!(
        "version = 1\n{}\n",
        toml_after(&chaos, "## The plan's `[chaos]` table")
    ));
    check(&format!(
        "version = 1\n{}\n",
        toml_after(&text, "## `[chaos]`")
    ));
}
