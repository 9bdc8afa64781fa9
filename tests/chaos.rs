//! Fault injection end to end: each fault really fires in a real sandboxed run and the step
//! recovers (or fails cleanly where the plan leaves it no way to), the same seed gives the
//! same schedule, rate 0 and the kill switches inject nothing, a corrupted cache entry is
//! quarantined and never served, and a chaos night reports and compares.
//!
//! Seeds are not guessed: each test asks the scheduler's own schedule for a seed whose
//! decisions are the ones it needs, so a test fails if the schedule stops being what the
//! run does.
#[path = "support/origin.rs"]
mod origin;
#[path = "support/records.rs"]
mod records;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ci_intel_executor::chaos::{FaultParams, Injection, NetFault};
use ci_intel_scheduler::chaos::{Chaos, ChaosSpec};
use serde_json::Value;

struct Workspace {
    dir: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    /// Every step log of every run so far.
    logs: String,
    /// The run's record.
    record: Value,
}

impl Run {
    fn show(&self) -> String {
        format!("{}\n--- logs\n{}", self.stdout, self.logs)
    }

    fn trials(&self) -> Vec<Value> {
        self.record["chaos"].as_array().cloned().unwrap_or_default()
    }

    /// The chaos log of the run (every decision), from the path the run printed.
    fn chaos_log(&self) -> String {
        let path = self
            .stdout
            .split("decisions in ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("no chaos log named:\n{}", self.show()));
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }
}

impl Workspace {
    fn new(plan: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.toml"), plan).unwrap();
        Workspace { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self) -> std::process::Command {
        let mut cmd = support::ci_intel();
        cmd.current_dir(self.path())
            .env("XDG_CACHE_HOME", self.path().join(".test-cache"))
            .env_remove("CI_INTEL_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let records = self.path().join("records.ndjson");
        let _ = std::fs::remove_file(&records);
        let mut cmd = self.command();
        cmd.args(["run", "plan.toml"])
            .args(args)
            .arg("--telemetry")
            .arg(&records);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let mut logs = String::new();
        let runs = self.path().join(".ci-intel/runs");
        for run in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(run.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "log") {
                    logs.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
                }
            }
        }
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned()
            + "\n--- stderr\n"
            + &String::from_utf8_lossy(&out.stderr);
        let record = if records.exists() {
            // Every record a chaos run writes is valid against the schema the project ships.
            records::read_valid(&records).pop().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        Run {
            code: out.status.code(),
            stdout,
            logs,
            record,
        }
    }
}

/// The first seed whose decisions for `step`'s attempts `1..=wants.len()` each satisfy
/// the matching predicate (`None` for an attempt that must get no fault).
fn seed_for(plan_src: &str, spec: &str, step: &str, wants: &[Option<Want>]) -> u64 {
    let plan = ci_intel_scheduler::parse_plan(Path::new("plan.toml"), plan_src).unwrap();
    let spec: ChaosSpec = spec.parse().unwrap();
    let index = plan.step_index(step).unwrap();
    // From 1: a night's run i is seeded N+i, so N = seed-1 must exist.
    for seed in 1..200_000 {
        let chaos = Chaos::new(
            &spec,
            &plan,
            vec![Duration::from_secs(1); plan.steps.len()],
            true,
            false,
            seed,
        )
        .unwrap();
        let fits = wants.iter().enumerate().all(|(a, want)| {
            let d = chaos.decide(&plan, index, a as u32 + 1);
            match (want, &d.injection) {
                (None, None) => true,
                (Some(p), Some(inj)) => p(inj),
                _ => false,
            }
        });
        if fits {
            return seed;
        }
    }
    panic!("no seed gives {step} the wanted faults under {spec:?}");
}

/// What an attempt's injection must be.
type Want = fn(&Injection) -> bool;

fn any(_: &Injection) -> bool {
    true
}

fn connects_reset(i: &Injection) -> bool {
    matches!(&i.params, FaultParams::Net(NetFault::RefuseConnects { count }) if *count < 3)
}

fn reset_mid_body(i: &Injection) -> bool {
    matches!(&i.params, FaultParams::Net(NetFault::ResetAfter { .. }))
}

fn latency(i: &Injection) -> bool {
    matches!(&i.params, FaultParams::Net(NetFault::Latency { .. }))
}

fn hang(i: &Injection) -> bool {
    matches!(&i.params, FaultParams::Net(NetFault::Hang { .. }))
}

fn single_trial(r: &Run) -> Value {
    let trials = r.trials();
    assert_eq!(
        trials.len(),
        1,
        "one fault acted: {trials:#?}\n{}",
        r.show()
    );
    trials.into_iter().next().unwrap()
}

#[test]
fn kill_job_kills_the_step_and_a_retry_recovers() {
    let plan = r#"version = 1
[steps.work]
run = "sleep 3; mkdir -p out; echo done > out/result.txt"
outputs = ["out/"]
retries = { count = 1, delay = "100ms" }
"#;
    let seed = seed_for(plan, "seed=0,kill_job=0.5", "work", &[Some(any), None]);
    let ws = Workspace::new(plan);
    let r = ws.run(&["--chaos", &format!("seed={seed},kill_job=0.5")]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(
        r.stdout.contains("CHAOS work (attempt 1): kill_job"),
        "{}",
        r.show()
    );
    assert!(
        r.logs
            .contains("chaos: kill_job: SIGKILL to the step's process group"),
        "{}",
        r.show()
    );
    let t = single_trial(&r);
    assert_eq!(t["fault"], "kill_job");
    assert_eq!(t["target"], "work");
    assert_eq!(t["outcome"], "recovered");
    assert_eq!(t["expected"], "recovered");
    assert_eq!(t["attempt"], 1);
    assert_eq!(t["retries"], 1);
    assert_eq!(t["seed"], seed);
    assert!(t["recovery_ms"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(
        t["repro"],
        format!("ci-intel run plan.toml --chaos \"seed={seed},kill_job=0.5\" --step work")
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/result.txt")).unwrap(),
        "done\n"
    );
    // A result made under a fault is never stored; the retry's clean one is.
    let again = ws.run(&[]);
    assert!(again.stdout.contains("CACHED work"), "{}", again.show());
}

#[test]
fn disk_fill_fails_cleanly_with_an_autopsy_and_a_retry_recovers() {
    let step = |retries: u32| {
        format!(
            r#"version = 1
[steps.scratch]
run = "seq 1 1000 > /tmp/scratch.txt && mkdir -p out && cp /tmp/scratch.txt out/"
outputs = ["out/"]
retries = {{ count = {retries}, delay = "100ms" }}
"#
        )
    };
    // Without a retry: a clean failure, diagnosed.
    let ws = Workspace::new(&step(0));
    let r = ws.run(&["--chaos", "seed=1,disk_fill=1"]);
    assert_eq!(r.code, Some(1), "{}", r.show());
    assert!(r.logs.contains("No space left on device"), "{}", r.show());
    assert!(r.stdout.contains("why: disk full"), "{}", r.show());
    let t = single_trial(&r);
    assert_eq!(
        (t["fault"].as_str(), t["outcome"].as_str()),
        (Some("disk_fill"), Some("degraded"))
    );
    assert_eq!(t["expected"], "degraded");
    assert!(
        t["detail"].as_str().unwrap().contains("clean failure"),
        "{t}"
    );
    // The host's /tmp was never touched: the fill was the sandbox's own tmpfs.
    assert!(!Path::new("/tmp/.ci-intel-chaos-fill").exists());

    // With one: the second attempt has a fresh scratch space.
    let plan = step(1);
    let seed = seed_for(&plan, "seed=0,disk_fill=0.5", "scratch", &[Some(any), None]);
    let ws = Workspace::new(&plan);
    let r = ws.run(&["--chaos", &format!("seed={seed},disk_fill=0.5")]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let t = single_trial(&r);
    assert_eq!(t["outcome"], "recovered", "{t}");
    assert_eq!(t["retries"], 1);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/scratch.txt")).unwrap(),
        (1..=1000).map(|i| format!("{i}\n")).collect::<String>()
    );
}

#[test]
fn cpu_stress_competes_and_the_step_still_succeeds() {
    let ws = Workspace::new("version = 1\n[steps.busy]\nrun = \"sleep 0.5; echo ok\"\n");
    let r = ws.run(&["--chaos", "seed=3,cpu_stress=1"]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let t = single_trial(&r);
    assert_eq!(t["fault"], "cpu_stress");
    assert_eq!(t["outcome"], "recovered");
    assert!(t["detail"].as_str().unwrap().contains("busy worker"), "{t}");
    assert!(
        t["started_at"].is_string() && t["ended_at"].is_string(),
        "{t}"
    );
    // What ran under a fault was not stored: the next run runs the step, and stores it.
    let r = ws.run(&[]);
    assert!(r.stdout.contains("PASS busy"), "{}", r.show());
    let r = ws.run(&[]);
    assert!(r.stdout.contains("CACHED busy"), "{}", r.show());
}

#[test]
fn a_corrupted_cache_entry_is_quarantined_rerun_and_never_served() {
    let plan = r#"version = 1
[steps.make]
run = "mkdir -p out && seq 1 2000 > out/numbers.txt"
outputs = ["out/"]
"#;
    let ws = Workspace::new(plan);
    let cache = ws.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    ws.run(&["--cache-dir", cache_arg]);
    let expected = std::fs::read_to_string(ws.path().join("out/numbers.txt")).unwrap();
    let r = ws.run(&[
        "--cache-dir",
        cache_arg,
        "--chaos",
        "seed=9,corrupt_cache=1",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let t = single_trial(&r);
    assert_eq!(t["fault"], "corrupt_cache");
    assert_eq!(t["outcome"], "recovered", "{t}");
    let detail = t["detail"].as_str().unwrap();
    assert!(detail.contains("flipped byte"), "{detail}");
    assert!(detail.contains("caught by verification"), "{detail}");
    let events = r.record["cache_events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["result"] == "quarantine"),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["result"] == "hit"),
        "a corrupted entry was served: {events:#?}"
    );
    assert!(r.stdout.contains("PASS make"), "the step ran: {}", r.show());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/numbers.txt")).unwrap(),
        expected
    );
    // The cache holds only what verifies, and the rerun's result was stored again.
    let verify = ws
        .command()
        .args(["cache", "verify", "--cache-dir", cache_arg])
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(std::fs::read_dir(cache.join("quarantine")).unwrap().count() >= 1);
    std::fs::remove_dir_all(ws.path().join("out")).unwrap();
    let r = ws.run(&["--cache-dir", cache_arg]);
    assert!(r.stdout.contains("CACHED make"), "{}", r.show());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/numbers.txt")).unwrap(),
        expected
    );
}

#[test]
fn network_faults_act_through_the_egress_proxy_and_are_recovered() {
    static BODY: [u8; 128 * 1024] = [b'x'; 128 * 1024];
    let port = origin::start(&BODY);
    let plan = format!(
        r#"version = 1
[steps.fetch]
run = "mkdir -p out && curl -sS --fail --max-time 3 --noproxy '' http://127.0.0.1:{port}/ -o out/body && test $(wc -c < out/body) -eq 131072"
outputs = ["out/"]
retries = {{ count = 1, delay = "100ms" }}
timeout = "30s"
sandbox = {{ network = "allowlist", allow = ["127.0.0.1:{port}"] }}
"#
    );
    // (fault, case, what each attempt gets, what the trial says, retries it took)
    type Case<'a> = (&'a str, &'a str, &'a [Option<Want>], &'a str, u32);
    let cases: [Case<'_>; 4] = [
        // Connects reset: the proxy's retry recovers within the attempt.
        (
            "drop_net",
            "connects",
            &[Some(connects_reset)],
            "recovered by the proxy's retry",
            0,
        ),
        // A reset mid-body: curl fails, the retry recovers.
        (
            "drop_net",
            "reset",
            &[Some(reset_mid_body), None],
            "reset after",
            1,
        ),
        // Latency: slower, still whole.
        ("delay_net", "latency", &[Some(latency)], "per chunk", 0),
        // A hang: curl's own timeout ends it, the retry recovers.
        ("delay_net", "hang", &[Some(hang), None], "held", 1),
    ];
    for (fault, what, wants, says, retries) in cases {
        let spec = format!("seed=0,{fault}=0.5");
        let seed = seed_for(&plan, &spec, "fetch", wants);
        let ws = Workspace::new(&plan);
        let r = ws.run(&["--chaos", &format!("seed={seed},{fault}=0.5")]);
        assert_eq!(r.code, Some(0), "{what}: {}", r.show());
        let t = single_trial(&r);
        assert_eq!(t["fault"], fault, "{what}: {t}");
        assert_eq!(t["outcome"], "recovered", "{what}: {t}");
        assert_eq!(t["retries"], retries, "{what}: {t}");
        assert!(t["detail"].as_str().unwrap().contains(says), "{what}: {t}");
        assert!(
            r.logs.contains(&format!("chaos {fault}")),
            "{what}: {}",
            r.show()
        );
    }
}

/// A plan of eight quick sandboxed steps.
const MANY: &str = r#"version = 1
[steps.a]
run = "true"
[steps.b]
run = "true"
[steps.c]
run = "true"
[steps.d]
run = "true"
[steps.e]
run = "true"
[steps.f]
run = "true"
[steps.g]
run = "true"
[steps.h]
run = "true"
"#;

#[test]
fn the_same_seed_gives_the_same_schedule() {
    let ws = Workspace::new(MANY);
    let dry = |seed: u64| {
        let r = ws.run(&["--dry-run", "--chaos", &format!("seed={seed},rate=0.5")]);
        assert_eq!(r.code, Some(0), "{}", r.show());
        let mut lines: Vec<String> = r.chaos_log().lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let first = dry(11);
    assert_eq!(first.len(), 8, "a decision per attempt: {first:#?}");
    assert!(
        first.iter().any(|l| !l.contains("inject=none")),
        "{first:#?}"
    );
    assert_eq!(dry(11), first);
    assert_ne!(dry(12), first);
    // A real run (with its cache and sandbox) decides exactly what the dry run showed (with
    // the same history: the durations a kill moment and a stress period scale with).
    let r = ws.run(&["--chaos", "seed=11,rate=0.5"]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let mut real_lines: Vec<String> = r.chaos_log().lines().map(str::to_string).collect();
    real_lines.sort();
    assert_eq!(real_lines, first);
    // Real runs too: the same faults on the same steps and attempts.
    let real = || {
        let r = ws.run(&[
            "--no-cache",
            "--chaos",
            "seed=11,rate=0.5,faults=cpu_stress",
        ]);
        assert_eq!(r.code, Some(0), "{}", r.show());
        let mut given: Vec<(String, String, u64)> = r
            .trials()
            .iter()
            .map(|t| {
                (
                    t["target"].as_str().unwrap().to_string(),
                    t["fault"].as_str().unwrap().to_string(),
                    t["attempt"].as_u64().unwrap(),
                )
            })
            .collect();
        given.sort();
        given
    };
    let once = real();
    assert!(
        !once.is_empty(),
        "rate 0.5 over eight steps injects something"
    );
    assert_eq!(real(), once);
}

#[test]
fn rate_zero_and_the_kill_switches_inject_nothing() {
    let off = "chaos-off";
    let plan = format!("{MANY}\n[chaos]\nkill_switch = \"{off}\"\n");
    let ws = Workspace::new(&plan);
    let none = |r: &Run| {
        assert_eq!(r.code, Some(0), "{}", r.show());
        assert!(r.trials().is_empty(), "{:#?}", r.trials());
        assert!(!r.stdout.contains("CHAOS "), "{}", r.show());
        let log = r.chaos_log();
        assert_eq!(log.lines().count(), 8, "{log}");
        assert!(log.lines().all(|l| l.contains("inject=none")), "{log}");
        log
    };
    let log = none(&ws.run(&["--no-cache", "--chaos", "seed=4,rate=0"]));
    assert!(log.contains("draw above the rate"), "{log}");

    let r = ws.run_with(
        &["--no-cache", "--chaos", "seed=4,rate=1"],
        &[("CI_INTEL_CHAOS", "off")],
    );
    assert!(
        r.stdout.contains("chaos: off (CI_INTEL_CHAOS=off)"),
        "{}",
        r.show()
    );
    assert!(none(&r).contains("CI_INTEL_CHAOS=off"));

    std::fs::write(ws.path().join(off), "").unwrap();
    let r = ws.run(&["--no-cache", "--chaos", "seed=4,rate=1"]);
    assert!(none(&r).contains("chaos-off exists"));
    // Created while a step runs, it stops a kill that has not fired yet.
    let mid = Workspace::new(&format!(
        "version = 1\n[chaos]\nkill_switch = \"switch/{off}\"\n\
         [steps.s]\nrun = \"touch switch/{off}; sleep 2\"\nsandbox = {{ write = [\"switch\"] }}\n"
    ));
    std::fs::create_dir(mid.path().join("switch")).unwrap();
    let r = mid.run(&["--no-cache", "--chaos", "seed=4,kill_job=1"]);
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert!(
        r.stdout.contains("CHAOS s (attempt 1): kill_job"),
        "{}",
        r.show()
    );
    assert!(r.trials().is_empty(), "{:#?}", r.trials());
    assert!(
        r.logs.contains("chaos: kill_job: not fired: kill switch"),
        "{}",
        r.show()
    );
    // Without the switch the same spec injects everywhere.
    std::fs::remove_file(ws.path().join(off)).unwrap();
    let r = ws.run(&["--no-cache", "--chaos", "seed=4,rate=1,faults=cpu_stress"]);
    assert_eq!(r.trials().len(), 8, "{}", r.show());
}

#[test]
fn chaos_specs_and_tables_that_make_no_sense_are_usage_errors() {
    let ws = Workspace::new(
        "version = 1\n[chaos]\nfaults = [\"kill_job\"]\n[steps.a]\nrun = \"true\"\n",
    );
    let r = ws.run(&["--chaos", "seed=1,faults=kill_jb"]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(
        r.stdout
            .contains("unknown fault `kill_jb` (did you mean `kill_job`?)"),
        "{}",
        r.show()
    );
    let r = ws.run(&["--chaos", "seed=1,faults=disk_fill"]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(
        r.stdout.contains(
            "none of the faults asked for is allowed by the plan's [chaos] faults (kill_job)"
        ),
        "{}",
        r.show()
    );
    let bad = Workspace::new(
        "version = 1\n[chaos]\nrate = 2\n[steps.a]\nrun = \"true\"\nchaos = [\"nope\"]\n",
    );
    let r = bad.run(&[]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(
        r.stdout.contains("chaos rate 2 is not from 0 to 1"),
        "{}",
        r.show()
    );
    assert!(r.stdout.contains("unknown fault `nope`"), "{}", r.show());
    let outside = Workspace::new(
        "version = 1\n[chaos]\nfaults = [\"kill_job\"]\n[steps.a]\nrun = \"true\"\nchaos = [\"disk_fill\"]\n",
    );
    let r = outside.run(&[]);
    assert_eq!(r.code, Some(2), "{}", r.show());
    assert!(
        r.stdout.contains(
            "step `a` names chaos fault `disk_fill`, which the plan's [chaos] faults does not allow"
        ),
        "{}",
        r.show()
    );
}

fn night(ws: &Workspace, args: &[&str]) -> (Option<i32>, String) {
    let out = ws
        .command()
        .args(["chaos", "night", "plan.toml"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The night's run records, each valid against the schema.
fn night_records(ws: &Workspace) -> Vec<Value> {
    let chaos = ws.path().join(".ci-intel/chaos");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&chaos)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .map(|f| f.path())
        })
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| records::read_valid(f)).collect()
}

#[test]
fn a_chaos_night_reports_each_fault_and_step_and_compares_with_the_last_night() {
    let ws = Workspace::new(
        r#"version = 1
[steps.build]
run = "sleep 1; mkdir -p out && echo built > out/a"
outputs = ["out/"]
retries = { count = 2, delay = "100ms" }
[steps.check]
needs = ["build"]
run = "sleep 1; cat out/a"
retries = { count = 2, delay = "100ms" }
"#,
    );
    let report = ws.path().join("night.html");
    let args = [
        "--seed",
        "100",
        "--runs",
        "3",
        "--rate",
        "0.6",
        "--faults",
        "kill_job,cpu_stress",
        "--report",
        report.to_str().unwrap(),
    ];
    let (code, out) = night(&ws, &args);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("control"), "{out}");
    assert!(out.contains("run 3/3"), "{out}");
    let html = std::fs::read_to_string(&report).unwrap();
    let md = std::fs::read_to_string(report.with_extension("md")).unwrap();
    let records = night_records(&ws);
    assert_eq!(records.len(), 4, "a record per run");
    assert!(
        records[0]["chaos"].as_array().is_none_or(Vec::is_empty),
        "the control run injects nothing"
    );
    let trials: Vec<&Value> = records
        .iter()
        .flat_map(|r| r["chaos"].as_array().into_iter().flatten())
        .collect();
    assert!(!trials.is_empty(), "{out}");
    for t in &trials {
        // Each trial is in the report's matrix, named by fault and step.
        let (fault, step) = (t["fault"].as_str().unwrap(), t["target"].as_str().unwrap());
        assert!(
            md.contains(fault) && md.contains(step),
            "{fault} {step} missing:\n{md}"
        );
        assert!(html.contains(fault) && html.contains(step));
    }
    assert!(md.contains("First night"), "{md}");
    let nights = ws.path().join(".ci-intel/chaos/nights.ndjson");
    assert_eq!(std::fs::read_to_string(&nights).unwrap().lines().count(), 1);
    // The next night compares with this one.
    let (code, out) = night(&ws, &args);
    assert_eq!(code, Some(0), "{out}");
    let md = std::fs::read_to_string(report.with_extension("md")).unwrap();
    assert!(!md.contains("First night"), "{md}");
    assert_eq!(std::fs::read_to_string(&nights).unwrap().lines().count(), 2);
}

#[test]
fn a_chaos_night_fails_when_a_recovery_path_does_not_hold() {
    // The step cannot be retried after a kill: its retry finds the marker the killed attempt
    // left and fails. The control run (never killed) removes its marker and passes.
    let plan = r#"version = 1
[steps.fragile]
run = "if [ -e state/started ]; then rm state/started; echo 'left over from a killed attempt'; exit 3; fi; touch state/started; sleep 3; rm state/started"
retries = { count = 1, delay = "100ms" }
cache = false
sandbox = { write = ["state"] }
"#;
    // Run 1 of the night (seed N+1) kills the first attempt early: before half of the
    // predicted median (which the control run makes about 3 s), well inside the step.
    fn early(i: &Injection) -> bool {
        matches!(i.params, FaultParams::Kill { after } if after < Duration::from_millis(500))
    }
    let run1 = seed_for(
        plan,
        "seed=0,rate=1,faults=kill_job",
        "fragile",
        &[Some(early)],
    );
    let ws = Workspace::new(plan);
    std::fs::create_dir(ws.path().join("state")).unwrap();
    let night_seed = (run1 - 1).to_string();
    let (code, out) = night(
        &ws,
        &[
            "--seed",
            &night_seed,
            "--runs",
            "1",
            "--rate",
            "1",
            "--faults",
            "kill_job",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED fragile (kill_job, run 1)"), "{out}");
    assert!(
        out.contains(&format!(
            "replay: ci-intel run plan.toml --chaos \"seed={run1},rate=1,faults=kill_job\" --step fragile"
        )),
        "{out}"
    );
    let records = night_records(&ws);
    let t = &records[1]["chaos"][0];
    assert_eq!(t["outcome"], "failed", "{t}");
    assert_eq!(t["expected"], "recovered", "{t}");
}
