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

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git must be installed for this test");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[test]
fn each_run_and_its_steps_are_recorded_with_features_and_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let plan = PLAN.replace(
        "run = \"echo built\"",
        "run = \"echo built\"\ninputs = [\"src/**\"]",
    );
    std::fs::write(dir.path().join("plan.toml"), plan).unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.txt"), "0123456789").unwrap();
    std::fs::write(dir.path().join("src/b.txt"), "abc").unwrap();
    std::fs::write(dir.path().join(".gitignore"), ".ci-intel/\n.test-cache/\n").unwrap();
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "one"]);
    let (code, out) = run(dir.path());
    assert_eq!(code, Some(0), "{out}");
    // One input changes (not committed): the second run sees one changed file.
    std::fs::write(dir.path().join("src/b.txt"), "abcd").unwrap();
    let (code, out) = run(dir.path());
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(dir.path());
    assert_eq!(code, Some(0), "{out}");

    // Without the cache there is no key, and the inputs are still measured.
    let out = support::ci_intel()
        .args(["run", "plan.toml", "--no-cache"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let h = History::open(&dir.path().join(".ci-intel/history.db")).unwrap();
    assert_eq!(h.runs("hist").unwrap(), 4);
    let runs = h.replay("hist", 10).unwrap();
    assert!(runs[0].runner_class.starts_with("cpu"), "{:?}", runs[0]);
    assert_eq!(runs[0].git_commit.as_deref().map(str::len), Some(40));
    let build: Vec<_> = runs
        .iter()
        .map(|r| r.steps.iter().find(|s| s.step == "build").unwrap())
        .collect();
    assert!(build.iter().all(|s| s.state == "succeeded"));
    // Runs, a run after the change, a hit: the history says which.
    assert_eq!(
        build.iter().map(|s| s.cache_hit).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    assert_eq!(build[3].action_key, None);
    assert_eq!(build[3].input_bytes, Some(14));
    assert_eq!(build[3].input_files, Some(2));
    assert_eq!(build[0].input_files, Some(2));
    assert_eq!(build[0].input_bytes, Some(13));
    assert_eq!(build[1].input_bytes, Some(14));
    assert_eq!(build[0].changed_files, None, "no previous run");
    assert_eq!(build[1].changed_files, Some(1));
    assert_eq!(build[0].action_key.as_deref().map(str::len), Some(64));
    assert_ne!(build[0].action_key, build[1].action_key);
    // Each step carries what the model predicted before it ran: the first from the prior,
    // later ones from what the earlier runs taught it.
    let first = build[0].predicted.as_ref().unwrap();
    assert_eq!(first.model, "prior");
    assert!(
        first.p50 <= first.p80 && first.p80 <= first.p90,
        "{first:?}"
    );
    assert_ne!(build[1].predicted.as_ref().unwrap().model, "prior");
}

#[test]
fn changed_files_count_under_a_plan_in_a_subdirectory_and_a_forged_commit_is_not_used() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path().join("sub");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(repo.path().join("other")).unwrap();
    let plan = PLAN.replace(
        "run = \"echo built\"",
        "run = \"echo built\"\ninputs = [\"src/**\"]",
    );
    std::fs::write(root.join("plan.toml"), plan).unwrap();
    std::fs::write(root.join("src/a.txt"), "a").unwrap();
    std::fs::write(repo.path().join("other/src.txt"), "x").unwrap();
    std::fs::write(repo.path().join(".gitignore"), ".ci-intel/\n.test-cache/\n").unwrap();
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "one"]);
    let (code, out) = run(&root);
    assert_eq!(code, Some(0), "{out}");
    // One input of the plan changes, and a file outside its root that its glob would
    // match if paths were taken from the repository's top.
    std::fs::write(root.join("src/a.txt"), "b").unwrap();
    std::fs::write(repo.path().join("other/src.txt"), "y").unwrap();
    git(repo.path(), &["commit", "-q", "-am", "two"]);
    let (code, out) = run(&root);
    assert_eq!(code, Some(0), "{out}");
    let db = root.join(".ci-intel/history.db");
    let changed = |h: &History| -> Vec<Option<u64>> {
        h.replay("hist", 10)
            .unwrap()
            .iter()
            .map(|r| {
                r.steps
                    .iter()
                    .find(|s| s.step == "build")
                    .unwrap()
                    .changed_files
            })
            .collect()
    };
    assert_eq!(changed(&History::open(&db).unwrap()), [None, Some(1)]);

    // A history whose commit reads as an option is never handed to git.
    let victim = repo.path().join("overwritten");
    {
        let h = History::open(&db).unwrap();
        let mut forged = h.replay("hist", 1).unwrap().remove(0);
        let run = ci_intel_scheduler::history::RunRecord {
            plan: "hist".into(),
            started_unix_ms: forged.started_unix_ms + 1,
            wall: forged.wall,
            runner_class: forged.runner_class.clone(),
            git_commit: Some(format!("--output={}", victim.display())),
            steps: std::mem::take(&mut forged.steps),
        };
        h.record(&run).unwrap();
    }
    let (code, out) = run(&root);
    assert_eq!(code, Some(0), "{out}");
    assert!(!victim.exists(), "git wrote {}", victim.display());
    // The forged run is passed over: nothing changed since the run before it.
    assert_eq!(
        changed(&History::open(&db).unwrap()),
        [None, Some(1), Some(1), Some(0)]
    );
}

#[test]
fn predict_report_scores_the_recorded_predictions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plan.toml"), PLAN).unwrap();
    for _ in 0..3 {
        let (code, out) = run(dir.path());
        assert_eq!(code, Some(0), "{out}");
    }
    let report = |args: &[&str]| {
        let out = support::ci_intel()
            .args(["predict", "report"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = report(&[]);
    assert!(
        text.starts_with("plan hist: last 3 runs, 6 predictions scored\n"),
        "{text}"
    );
    for needle in [
        "overall: MAPE",
        "WAPE",
        "p90 coverage",
        "STEP",
        "build",
        "check",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&report(&["--json", "--runs", "2"])).unwrap();
    let plan = &json["plans"][0];
    assert_eq!(plan["plan"], "hist");
    assert_eq!(plan["runs"], 2);
    assert_eq!(plan["overall"]["samples"], 4);
    assert_eq!(plan["trend"].as_array().unwrap().len(), 2);
    // Two runs back the model had seen one run: nothing served from the prior.
    assert!(plan["models"].get("prior").is_none(), "{plan}");
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["build", "check"]);
    // All three runs: the first was predicted from the prior.
    let all: serde_json::Value = serde_json::from_str(&report(&["--json"])).unwrap();
    assert_eq!(all["plans"][0]["models"]["prior"], 2, "{all}");
    // A plan the history does not know is a usage error.
    let out = support::ci_intel()
        .args(["predict", "report", "--plan", "nope"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("plans it has: hist"));
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
