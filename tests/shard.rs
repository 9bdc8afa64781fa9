//! CI shards: `plan shard` prints the split, `run --shard I/N` runs one part of it, and
//! the parts together run the whole plan.
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use insta::assert_snapshot;

/// Two independent chains and a fan-out: enough independent work for two or three shards.
const PLAN: &str = r#"version = 1
name = "sharded"

[steps.fetch]
run = "echo fetch"

[steps.build]
needs = ["fetch"]
run = "echo build"

[steps.unit]
needs = ["build"]
run = "echo unit"

[steps.lint]
needs = ["fetch"]
run = "echo lint"

[steps.docs]
run = "echo docs"

[steps.site]
needs = ["docs"]
run = "echo site"
"#;

const STEPS: [&str; 6] = ["fetch", "build", "unit", "lint", "docs", "site"];

/// A temporary directory holding `plan.toml`.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    std::fs::write(dir.path().join("plan.toml"), PLAN).expect("writing the plan");
    dir
}

/// `ci-intel ARGS` in `dir`, with a cache of the test's own.
fn ci_intel(dir: &Path, args: &[&str]) -> Output {
    support::ci_intel()
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join(".test-cache"))
        .env_remove("CI_INTEL_LOG")
        .output()
        .expect("starting ci-intel")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shown(out: &Output) -> String {
    format!(
        "exit code: {}\n--- stdout\n{}--- stderr\n{}",
        out.status
            .code()
            .map_or_else(|| format!("{:?}", out.status), |c| c.to_string()),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The steps a run's summary table lists as succeeded or cached.
fn steps_run(summary: &str) -> BTreeSet<String> {
    summary
        .lines()
        .skip_while(|l| !l.starts_with("STEP "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let id = cols.next()?;
            matches!(cols.next()?, "succeeded" | "cached").then(|| id.to_string())
        })
        .collect()
}

fn all_steps() -> BTreeSet<String> {
    STEPS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_text_split_of_a_plan_without_history() {
    let dir = workdir();
    let out = ci_intel(dir.path(), &["plan", "shard", "plan.toml", "--shards", "3"]);
    assert_snapshot!(shown(&out));
    assert!(
        !dir.path().join(".ci-intel").exists(),
        "plan shard only reads the history; it creates none"
    );
}

#[test]
fn the_github_matrix_is_one_line_of_json_covering_the_plan() {
    let dir = workdir();
    let out = ci_intel(
        dir.path(),
        &[
            "plan",
            "shard",
            "plan.toml",
            "--shards",
            "3",
            "--format",
            "github-matrix",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().count(),
        1,
        "one line for $GITHUB_OUTPUT: {text}"
    );
    let matrix: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let include = matrix["include"].as_array().expect("an include list");
    assert_eq!(include.len(), 3);
    let mut covered = BTreeSet::new();
    for (k, entry) in include.iter().enumerate() {
        assert_eq!(entry["shard"], format!("{}/3", k + 1));
        assert_eq!(entry["index"], k + 1);
        assert_eq!(entry["total"], 3);
        assert!(entry["predicted_seconds"].as_f64().is_some(), "{entry}");
        let steps = entry["steps"].as_str().expect("steps as one string");
        assert!(!steps.is_empty(), "shard {} is empty: {text}", k + 1);
        covered.extend(steps.split(' ').map(str::to_string));
    }
    assert_eq!(covered, all_steps());
}

#[test]
fn the_json_split_lists_each_shard_and_the_imbalance() {
    let dir = workdir();
    let out = ci_intel(
        dir.path(),
        &[
            "plan",
            "shard",
            "plan.toml",
            "--shards",
            "2",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let split: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    let shards = split["shards"].as_array().expect("a shard list");
    assert_eq!(shards.len(), 2);
    // One second a step with no history: fetch, build, unit, lint (4 s, fetch shared)
    // cannot be balanced against docs, site (2 s) any better.
    assert_eq!(
        shards[0]["steps"],
        serde_json::json!(["fetch", "build", "unit", "lint"])
    );
    assert_eq!(shards[0]["predicted_seconds"], 4.0);
    assert_eq!(shards[1]["steps"], serde_json::json!(["docs", "site"]));
    assert_eq!(shards[1]["index"], 2);
    assert_eq!(shards[1]["total"], 2);
    let imbalance = split["imbalance"].as_f64().expect("a number");
    assert!((imbalance - 1.0 / 3.0).abs() < 1e-3, "{imbalance}");
    assert_eq!(split["critical_path_seconds"], 3.0);
}

#[test]
fn the_shards_of_a_run_together_run_every_step() {
    let dir = workdir();
    let mut union = BTreeSet::new();
    let mut sizes = Vec::new();
    for (shard, state) in [("1/2", "runner-1"), ("2/2", "runner-2")] {
        // Each shard as on its own runner: its own state directory, both without history.
        let out = ci_intel(
            dir.path(),
            &["run", "plan.toml", "--shard", shard, "--state-dir", state],
        );
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        let text = stdout(&out);
        assert!(text.starts_with(&format!("shard {shard}: ")), "{text}");
        let ran = steps_run(&text);
        sizes.push(ran.len());
        union.extend(ran);
    }
    assert_eq!(union, all_steps());
    assert!(
        sizes.iter().all(|&n| n < STEPS.len()),
        "each shard runs part of the plan: {sizes:?}"
    );
}

#[test]
fn runners_that_see_the_same_history_split_as_plan_shard_does() {
    let dir = workdir();
    // A history that knows the plan: what a CI cache would restore on every runner.
    let seed = ci_intel(dir.path(), &["run", "plan.toml", "--state-dir", "seed"]);
    assert_eq!(seed.status.code(), Some(0), "{}", shown(&seed));
    let printed = ci_intel(
        dir.path(),
        &[
            "plan",
            "shard",
            "plan.toml",
            "--shards",
            "2",
            "--format",
            "json",
            "--state-dir",
            "seed",
        ],
    );
    assert_eq!(printed.status.code(), Some(0), "{}", shown(&printed));
    let split: serde_json::Value = serde_json::from_str(&stdout(&printed)).expect("valid JSON");
    let mut union = BTreeSet::new();
    for index in 1..=2 {
        let state = format!("runner-{index}");
        copy_history(&dir.path().join("seed"), &dir.path().join(&state));
        let out = ci_intel(
            dir.path(),
            &[
                "run",
                "plan.toml",
                "--shard",
                &format!("{index}/2"),
                "--state-dir",
                &state,
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        let ran = steps_run(&stdout(&out));
        let expected: BTreeSet<String> = split["shards"][index - 1]["steps"]
            .as_array()
            .expect("a step list")
            .iter()
            .map(|s| s.as_str().expect("a step id").to_string())
            .collect();
        assert_eq!(ran, expected, "shard {index}: {}", shown(&out));
        union.extend(ran);
    }
    assert_eq!(union, all_steps());
}

/// Copies the history database (and its WAL files, if any) from one state directory to a
/// new one.
fn copy_history(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a state directory");
    for entry in std::fs::read_dir(from).expect("reading the state directory") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("history.db") {
            std::fs::copy(entry.path(), to.join(&name)).expect("copying the history");
        }
    }
}

#[test]
fn a_shard_that_does_not_exist_is_a_usage_error_with_a_hint() {
    let dir = workdir();
    for (shard, message) in [
        ("3/2", "error: --shard 3/2: there is no shard 3 of 2"),
        ("0/2", "error: --shard 0/2: there is no shard 0 of 2"),
        (
            "1/0",
            "error: --shard 1/0: the number of shards must be between 1",
        ),
    ] {
        let out = ci_intel(dir.path(), &["run", "plan.toml", "--shard", shard]);
        assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(message), "{err}");
        assert!(err.contains("\nhint: "), "{err}");
        assert!(stdout(&out).is_empty(), "nothing ran: {}", shown(&out));
    }
    for args in [
        &["run", "plan.toml", "--shard", "two"][..],
        &["run", "plan.toml", "--shard", "1/2", "--step", "unit"],
        &["plan", "shard", "plan.toml", "--shards", "0"],
    ] {
        let out = ci_intel(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", shown(&out));
    }
}

#[test]
fn an_empty_shard_runs_nothing_and_succeeds() {
    let dir = workdir();
    // The plan splits into three pieces at most: the fourth shard has none.
    let out = ci_intel(dir.path(), &["run", "plan.toml", "--shard", "4/4"]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert_eq!(
        stdout(&out),
        "shard 4/4 has no steps (the plan has less work than 4 shards): nothing to run\n"
    );
}
