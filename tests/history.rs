//! Every run is recorded in the state directory's history, which the runtime model learns
//! from; a damaged history never costs a run.
mod support;

use ci_intel_scheduler::history::History;

const PLAN: &str = r#"
version = 1
name = "hist"

[steps.build]
run = "echo built"

[steps.check]
needs = ["build"]
run = "echo checked"
"#;

fn run(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = support::ci_intel()
        .args(["run", "plan.toml"])
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join(".test-cache"))
        .env_remove("CI_INTEL_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn each_run_and_its_steps_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plan.toml"), PLAN).unwrap();
    for _ in 0..2 {
        let (code, out) = run(dir.path());
        assert_eq!(code, Some(0), "{out}");
    }
    let h = History::open(&dir.path().join(".ci-intel/history.db")).unwrap();
    assert_eq!(h.runs("hist").unwrap(), 2);
    let build = h.step_history("hist", "build", 10).unwrap();
    assert_eq!(build.len(), 2);
    assert!(build.iter().all(|s| s.state == "succeeded"));
    // The second run restored it from the cache, and the history says so.
    assert_eq!(
        build.iter().map(|s| s.cache_hit).collect::<Vec<_>>(),
        [false, true]
    );
    assert!(build[0].runner_class.starts_with("cpu"), "{:?}", build[0]);
}

#[test]
fn a_damaged_history_is_kept_aside_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plan.toml"), PLAN).unwrap();
    std::fs::create_dir_all(dir.path().join(".ci-intel")).unwrap();
    let db = dir.path().join(".ci-intel/history.db");
    std::fs::write(&db, b"not sqlite at all; ".repeat(500)).unwrap();
    let (code, out) = run(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the run history was damaged"), "{out}");
    let kept: Vec<_> = std::fs::read_dir(dir.path().join(".ci-intel"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.db.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept");
    assert_eq!(History::open(&db).unwrap().runs("hist").unwrap(), 1);
}

#[test]
fn the_next_run_orders_steps_by_what_the_history_learned() {
    // Two independent steps; with nothing known they start in plan order. The second is
    // much slower, so once learned it goes first (one slot).
    let plan = r#"
version = 1
name = "order"

[steps.quick]
run = "true"
cache = false

[steps.slow]
run = "sleep 0.3"
cache = false
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plan.toml"), plan).unwrap();
    let starts = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("START "))
            .map(str::to_string)
            .collect()
    };
    let first = support::ci_intel()
        .args(["run", "plan.toml", "--jobs", "1"])
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", dir.path().join(".test-cache"))
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(starts(&first), ["quick", "slow"], "{first}");
    let second = support::ci_intel()
        .args(["run", "plan.toml", "--jobs", "1"])
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", dir.path().join(".test-cache"))
        .output()
        .unwrap();
    let second = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(starts(&second), ["slow", "quick"], "{second}");
}
