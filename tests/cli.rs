//! What a person sees: the binary's output, errors and exit codes, as snapshots.
//!
//! Every plan lives in its own temporary directory and is named by a relative path, so
//! the output only varies in temporary paths, run ids and durations; those are replaced
//! by `[TMP]`, `[RUN]` and `X.XXs` before a snapshot is compared.
mod support;

use std::path::Path;
use std::process::Command;

use insta::assert_snapshot;

/// A diamond: `a` feeds `b` and `c`, which both feed `d`.
const DIAMOND: &str = r#"version = 1
name = "diamond"

[steps.a]
run = "echo a"

[steps.b]
needs = ["a"]
run = "echo b"

[steps.c]
needs = ["a"]
argv = ["echo", "c"]

[steps.d]
needs = ["b", "c"]
run = "echo d"
"#;

/// A temporary plan directory; commands run with it as their working directory.
struct Workdir {
    dir: tempfile::TempDir,
}

/// How one `ci-intel` invocation ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// The whole invocation, normalised, for snapshots.
    shown: String,
}

impl Workdir {
    fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    fn with_plan(text: &str) -> Workdir {
        let w = Workdir::new();
        w.write("plan.toml", text);
        w
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).expect("writing a test file");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = support::ci_intel();
        // Each test has a cache of its own: one test's results are not another's hits.
        cmd.args(args)
            .current_dir(self.path())
            .env("XDG_CACHE_HOME", self.path().join(".test-cache"))
            .env_remove("CI_INTEL_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_command(self.command(args))
    }

    fn run_command(&self, mut cmd: Command) -> Run {
        let out = cmd.output().expect("starting ci-intel");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let shown = format!(
            "exit code: {}\n--- stdout\n{}--- stderr\n{}",
            out.status
                .code()
                .map_or_else(|| format!("{:?}", out.status), |c| c.to_string()),
            self.normalise(&stdout),
            self.normalise(&stderr)
        );
        Run {
            code: out.status.code(),
            stdout,
            stderr,
            shown,
        }
    }

    /// Replaces what varies from run to run: paths, run ids, durations.
    fn normalise(&self, text: &str) -> String {
        let mut text = text.to_string();
        if let Ok(real) = self.path().canonicalize() {
            text = text.replace(real.to_str().expect("UTF-8 temporary path"), "[TMP]");
        }
        text = text.replace(self.path().to_str().expect("UTF-8 temporary path"), "[TMP]");
        // The first run with a fresh cache says it made and trusted a signing key
        // (tests/cache_run.rs checks that notice); each test has a fresh cache.
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("ci-intel: the cache at "))
            .map(|l| format!("{l}\n"))
            .collect();
        durations(&run_ids(&text))
    }

    /// The single run directory under the default state directory.
    fn run_dir(&self) -> std::path::PathBuf {
        let runs: Vec<_> = std::fs::read_dir(self.path().join(".ci-intel/runs"))
            .expect("a run directory under .ci-intel/runs")
            .map(|e| e.expect("reading runs/").path())
            .collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs.into_iter().next().expect("one run")
    }

    fn log(&self, step: &str) -> String {
        let path = self.run_dir().join(format!("{step}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// `/runs/<anything>` becomes `/runs/[RUN]`.
fn run_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/runs/") {
        out.push_str(&rest[..at + "/runs/".len()]);
        rest = &rest[at + "/runs/".len()..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str("[RUN]");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Durations as printed (`0.02s`, `12.34s`) become `X.XXs`.
fn durations(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let starts_token = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        if starts_token && b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let is_duration = b.len() >= j + 4
                && b[j] == b'.'
                && b[j + 1].is_ascii_digit()
                && b[j + 2].is_ascii_digit()
                && b[j + 3] == b's'
                && b.get(j + 4).is_none_or(|c| !c.is_ascii_alphanumeric());
            if is_duration {
                out.push_str(&text[copied..i]);
                out.push_str("X.XXs");
                i = j + 4;
                copied = i;
                continue;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

#[test]
fn the_normalisation_keeps_what_matters() {
    assert_eq!(
        durations("PASS a (0.02s), wall 12.34s; timed out after 0.2s; v1.25s2"),
        "PASS a (X.XXs), wall X.XXs; timed out after 0.2s; v1.25s2"
    );
    assert_eq!(
        run_ids("logs in /x/runs/20260101T000000Z-42\nlog: /x/runs/20260101T000000Z-42/a.log"),
        "logs in /x/runs/[RUN]\nlog: /x/runs/[RUN]/a.log"
    );
}

#[test]
fn plan_check_prints_one_line() {
    let w = Workdir::with_plan(DIAMOND);
    let run = w.run(&["plan", "check", "plan.toml"]);
    assert_eq!(run.code, Some(0), "{}", run.shown);
    assert_snapshot!(run.shown);
}

#[test]
fn a_missing_plan_file_is_a_usage_error_with_a_hint() {
    let w = Workdir::new();
    let run = w.run(&["plan", "check", "no-such-plan.toml"]);
    assert_eq!(run.code, Some(2), "{}", run.shown);
    assert_snapshot!(run.shown);
    let run = w.run(&["run", "no-such-plan.toml"]);
    assert_eq!(run.code, Some(2), "{}", run.shown);
    assert!(
        run.stderr
            .contains("cannot read plan file no-such-plan.toml")
    );
    assert!(run.stderr.contains("hint: "));
}

#[test]
fn invalid_toml_is_a_plan_error() {
    let w = Workdir::with_plan("version = 1\n\n[steps.build\nrun = \"make\"\n");
    let run = w.run(&["plan", "check", "plan.toml"]);
    assert_eq!(run.code, Some(2), "{}", run.shown);
    assert_snapshot!(run.shown);
}

#[test]
fn an_unknown_need_points_at_file_line_and_column() {
    let w = Workdir::with_plan(
        "version = 1\n\n[steps.build]\nrun = \"make\"\n\n[steps.test]\nneeds = [\"biuld\"]\nrun = \"make test\"\n",
    );
    let run = w.run(&["plan", "check", "plan.toml"]);
    assert_eq!(run.code, Some(2), "{}", run.shown);
    assert!(
        run.stderr.starts_with("plan.toml:7:10: error: "),
        "{}",
        run.shown
    );
    assert_snapshot!(run.shown);
    // `run` reports the same error, before running anything.
    let again = w.run(&["run", "plan.toml"]);
    assert_eq!(again.code, Some(2));
    assert_eq!(again.stderr, run.stderr);
    assert!(!w.path().join(".ci-intel").exists());
}

#[test]
fn an_unknown_step_is_a_usage_error_with_a_hint() {
    let w = Workdir::with_plan(DIAMOND);
    let near = w.run(&["run", "plan.toml", "--step", "dd"]);
    assert_eq!(near.code, Some(2), "{}", near.shown);
    let far = w.run(&["run", "plan.toml", "--step", "deploy-to-production"]);
    assert_eq!(far.code, Some(2), "{}", far.shown);
    assert_snapshot!(format!("{}\n{}", near.shown, far.shown));
}

#[test]
fn plan_graph_draws_dot_and_mermaid() {
    let w = Workdir::with_plan(DIAMOND);
    let dot = w.run(&["plan", "graph", "plan.toml"]);
    assert_eq!(dot.code, Some(0), "{}", dot.shown);
    assert_eq!(
        dot.stdout,
        w.run(&["plan", "graph", "plan.toml", "--format", "dot"])
            .stdout,
        "dot is the default format"
    );
    assert_snapshot!("plan_graph_dot", dot.shown);
    let mermaid = w.run(&["plan", "graph", "plan.toml", "--format", "mermaid"]);
    assert_eq!(mermaid.code, Some(0), "{}", mermaid.shown);
    assert_snapshot!("plan_graph_mermaid", mermaid.shown);
}

#[test]
fn plan_graph_predicted_without_history_shows_the_prior_and_the_longest_chain() {
    let w = Workdir::with_plan(DIAMOND);
    let dot = w.run(&["plan", "graph", "plan.toml", "--predicted"]);
    assert_eq!(dot.code, Some(0), "{}", dot.shown);
    assert!(
        !w.path().join(".ci-intel").exists(),
        "reading predictions creates no history"
    );
    assert_snapshot!(dot.shown);
}

#[test]
fn predict_report_without_history_says_how_to_get_one() {
    let w = Workdir::with_plan(DIAMOND);
    let run = w.run(&["predict", "report"]);
    assert_eq!(run.code, Some(2), "{}", run.shown);
    assert_snapshot!(run.shown);
}

#[test]
fn a_required_layer_the_host_lacks_is_exit_3() {
    let w = Workdir::with_plan(
        "version = 1\n\n[sandbox]\nrequire = [\"cgroups\"]\n\n[steps.a]\nrun = \"touch ran\"\n",
    );
    let run = w.run(&["run", "plan.toml"]);
    assert_eq!(run.code, Some(3), "{}", run.shown);
    assert!(!w.path().join("ran").exists(), "the step ran anyway");
    assert_snapshot!(run.shown);
}

#[test]
fn doctor_shows_the_posture() {
    let w = Workdir::new();
    let table = w.run(&["doctor"]);
    assert_eq!(table.code, Some(0), "{}", table.shown);
    // The first section (what this build enforces) is the same on every host; the second
    // (what the host offers) is checked below and by the sandbox's own probe tests.
    let (enforced, host) = table
        .stdout
        .split_once("\n\n")
        .expect("an ENFORCED and a HOST section");
    assert_snapshot!(enforced);
    assert!(host.starts_with("HOST "), "{host}");
    for name in [
        "userns", "mountns", "pidns", "netns", "landlock", "seccomp", "cgroups",
    ] {
        assert!(
            host.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing from {host}"
        );
    }
    let json = w.run(&["doctor", "--json"]);
    assert_eq!(json.code, Some(0), "{}", json.shown);
    let value: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("doctor --json prints JSON");
    let probed = value["host"].as_array().expect("a `host` array");
    assert_eq!(probed.len(), 7);
    for h in probed {
        let available = h["available"].as_bool().expect("available is a bool");
        assert_eq!(
            available,
            h["fix"].is_null(),
            "a missing layer names its fix: {h}"
        );
    }
    let layers = value["layers"].as_array().expect("a `layers` array");
    assert_eq!(layers.len(), enforced.lines().count() - 1);
    for (layer, row) in layers.iter().zip(enforced.lines().skip(1)) {
        let name = layer["layer"].as_str().expect("layer name");
        assert!(row.starts_with(name), "{row} vs {layer}");
        assert!(
            layer["level"].is_string() && layer["detail"].is_string(),
            "{layer}"
        );
    }
}

#[test]
fn a_failing_step_shows_the_summary_an_excerpt_and_how_to_rerun() {
    let w = Workdir::with_plan(
        r#"version = 1
name = "failing"

[steps.compile]
run = "echo compiling"

[steps.unit-tests]
needs = ["compile"]
run = """
echo "running 3 tests"
echo "test parse ... ok"
echo "test render ... FAILED" >&2
exit 101
"""

[steps.package]
needs = ["unit-tests"]
run = "echo packaging"
"#,
    );
    let run = w.run(&["run", "plan.toml", "-j1"]);
    assert_eq!(run.code, Some(1), "{}", run.shown);
    assert_snapshot!(run.shown);
    assert_eq!(
        w.log("unit-tests"),
        "running 3 tests\ntest parse ... ok\ntest render ... FAILED\n"
    );
    assert!(
        !w.run_dir().join("package.log").exists(),
        "a skipped step has no log"
    );
}

#[test]
fn a_missing_command_is_named_and_exits_127() {
    let w = Workdir::with_plan(
        r#"version = 1

[steps.shell]
run = "echo checking; ci-intel-no-such-tool --version"

[steps.direct]
argv = ["ci-intel-no-such-binary", "--version"]
"#,
    );
    let run = w.run(&["run", "plan.toml", "-j1", "--keep-going"]);
    assert_eq!(run.code, Some(1), "{}", run.shown);
    for (step, tool) in [
        ("shell", "ci-intel-no-such-tool"),
        ("direct", "ci-intel-no-such-binary"),
    ] {
        let fail = format!("      FAIL {step} (command not found: {tool}, ");
        assert!(
            run.stdout.contains(&fail),
            "no `{fail}` in:\n{}",
            run.stdout
        );
        let excerpt = format!("--- {step} failed (command not found: {tool}; exit code 127)");
        assert!(
            run.stdout.contains(&excerpt),
            "no `{excerpt}` in:\n{}",
            run.stdout
        );
        assert!(w.log(step).contains(tool), "{step}.log: {}", w.log(step));
    }
    assert_snapshot!(run.shown);
}

#[test]
fn a_timeout_stops_the_step() {
    let w = Workdir::with_plan(
        "version = 1\n\n[steps.hang]\nrun = \"sleep 30\"\ntimeout = \"200ms\"\n",
    );
    let run = w.run(&["run", "plan.toml"]);
    assert_eq!(run.code, Some(1), "{}", run.shown);
    assert!(run.stdout.contains("   TIMEOUT hang (timed out after 0.2s"));
    assert_snapshot!(run.shown);
}

/// `broken` fails at once while `slow` is still running.
const FAIL_FAST: &str = r#"version = 1

[steps.broken]
run = "echo broken; exit 3"

[steps.slow]
run = "sleep 1"

[steps.after-broken]
needs = ["broken"]
run = "echo after broken"

[steps.after-slow]
needs = ["slow"]
run = "echo after slow"
"#;

#[test]
fn fail_fast_cancels_running_steps() {
    let w = Workdir::with_plan(FAIL_FAST);
    let run = w.run(&["run", "plan.toml", "-j2"]);
    assert_eq!(run.code, Some(1), "{}", run.shown);
    assert_snapshot!(run.shown);
}

#[test]
fn keep_going_runs_independent_steps() {
    let w = Workdir::with_plan(FAIL_FAST);
    let run = w.run(&["run", "plan.toml", "-j2", "--keep-going"]);
    assert_eq!(run.code, Some(1), "{}", run.shown);
    assert_snapshot!(run.shown);
}

#[test]
fn a_flaky_step_is_retried() {
    // The first attempt leaves a marker in the plan root; the second finds it and passes.
    let w = Workdir::with_plan(
        r#"version = 1

[steps.flaky]
run = """
if [ -e attempted ]; then echo "second attempt passes"; exit 0; fi
touch attempted
echo "first attempt fails"
exit 1
"""
retries = { count = 2, backoff = "fixed", delay = "10ms" }
# The marker must outlive the attempt: write it to the real root.
sandbox = false
"#,
    );
    let run = w.run(&["run", "plan.toml", "--seed", "7"]);
    assert_eq!(run.code, Some(0), "{}", run.shown);
    assert!(
        run.stdout
            .contains("     RETRY flaky (exit code 1; attempt 2 of 3 in ")
    );
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("flaky "))
        .expect("a summary row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "succeeded", "{row}");
    assert_eq!(cols.last(), Some(&"2"), "attempts column: {row}");
    assert_eq!(
        w.log("flaky"),
        "first attempt fails\n--- ci-intel: attempt 2 of 3 ---\nsecond attempt passes\n"
    );
    assert_snapshot!(run.shown);
}

#[test]
fn secrets_are_passed_and_redacted() {
    const VALUE: &str = "tok-6c1f0e9a2b";
    let w = Workdir::with_plan(
        r#"version = 1

[steps.publish]
run = 'echo "publishing with token $CI_INTEL_E2E_TOKEN"; test "$CI_INTEL_E2E_TOKEN" = tok-6c1f0e9a2b'
secrets = ["CI_INTEL_E2E_TOKEN"]
"#,
    );
    let mut cmd = w.command(&["run", "plan.toml"]);
    cmd.env("CI_INTEL_E2E_TOKEN", VALUE);
    let run = w.run_command(cmd);
    assert_eq!(
        run.code,
        Some(0),
        "the secret did not reach the step:\n{}",
        run.shown
    );
    assert!(
        !run.stdout.contains(VALUE) && !run.stderr.contains(VALUE),
        "{}",
        run.shown
    );
    assert!(
        run.stdout.contains("[publish] publishing with token ***"),
        "{}",
        run.shown
    );
    assert_eq!(w.log("publish"), "publishing with token ***\n");
    assert_snapshot!(run.shown);
}

#[test]
fn a_hundred_thousand_steps_check_and_dry_run() {
    use std::fmt::Write as _;
    let mut plan = String::from("version = 1\nname = \"huge\"\n");
    for i in 0..100_000 {
        // Half independent, half in chains of two.
        let _ = write!(plan, "\n[steps.s{i}]\nargv = [\"true\"]\n");
        if i % 2 == 1 {
            let _ = writeln!(plan, "needs = [\"s{}\"]", i - 1);
        }
    }
    let w = Workdir::with_plan(&plan);
    let check = w.run(&["plan", "check", "plan.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert_eq!(
        check.stdout,
        "plan.toml: plan `huge` is valid: 100000 steps, 50000 dependencies\n"
    );
    let dry = w.run(&["run", "plan.toml", "--dry-run", "--jobs", "2"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("\n100000 steps: 100000 succeeded; wall "),
        "{}",
        &dry.stdout[dry.stdout.len().saturating_sub(500)..]
    );
}

#[test]
fn exec_passes_the_command_status_through_and_reserves_its_own_codes() {
    let w = Workdir::new();
    let code = |args: &[&str]| w.run(args).code;
    assert_eq!(code(&["exec", "--", "sh", "-c", "exit 7"]), Some(7));
    assert_eq!(code(&["exec", "--", "sh", "-c", "kill -9 $$"]), Some(137));
    assert_eq!(
        code(&["exec", "--timeout", "200ms", "--", "sleep", "5"]),
        Some(124)
    );
    assert_eq!(code(&["exec", "--", "no-such-command-ci-intel"]), Some(127));
    assert_eq!(
        code(&["exec", "--ro", "/nonexistent/x", "--", "true"]),
        Some(2)
    );
    assert_eq!(code(&["exec", "--net", "bogus", "--", "true"]), Some(2));
    let missing = w.run(&[
        "exec",
        "--require",
        "userns",
        "--require",
        "cgroups",
        "--",
        "true",
    ]);
    // cgroups are at most partially enforced on every host today.
    assert_eq!(missing.code, Some(3), "{}", missing.shown);
    assert!(missing.stderr.contains("cgroups"), "{}", missing.shown);
    let env = w.run(&[
        "exec",
        "--env",
        "A=1",
        "--",
        "sh",
        "-c",
        "echo $A $HOME $TZ $(hostname)",
    ]);
    assert_eq!(env.stdout, "1 /home/ci UTC ci-intel\n", "{}", env.shown);
}

/// The directory of `pid`'s cgroup in the v1 `cpu` hierarchy, from `/proc/<pid>/cgroup`.
fn cpu_cgroup_of(pid: u32) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("reading cgroups");
    let path = text
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == "cpu").then_some(path)
        })
        .unwrap_or_else(|| panic!("pid {pid} has no cpu cgroup:\n{text}"));
    Path::new("/sys/fs/cgroup/cpu").join(path.trim_start_matches('/'))
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// A child process killed and reaped when dropped, so a failing test leaves nothing behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_cpus_runs_the_command_in_a_cpu_cgroup_with_that_quota() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: `exec --cpus` is enforced with a cgroup v1 cpu cgroup only as root"
    );
    assert!(
        Path::new("/sys/fs/cgroup/cpu/cgroup.procs").exists(),
        "this test needs the cgroup v1 cpu hierarchy mounted at /sys/fs/cgroup/cpu"
    );
    let w = Workdir::new();
    let marker = format!("ci-intel-cpus-{}", std::process::id());
    let script = format!("echo ready; sleep 300; : {marker}");
    let mut cmd = w.command(&["exec", "--cpus", "0.5", "--", "sh", "-c", &script]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut exec = Reaped(cmd.spawn().expect("starting ci-intel exec"));
    let mut stdout = std::io::BufReader::new(exec.0.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("reading the command's output");
    assert_eq!(line, "ready\n");

    // The sandbox's pid 1 is exec's only child by now (the network helper has exited).
    let pid1 = match children_of(exec.0.id())[..] {
        [pid] => pid,
        ref other => panic!("exec should have one child, the sandbox: {other:?}"),
    };
    let dir = cpu_cgroup_of(pid1);
    assert_eq!(
        dir.parent(),
        Some(cpu_cgroup_of(exec.0.id()).as_path()),
        "the sandbox's cpu cgroup is a child of exec's"
    );
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).expect("reading the cgroup");
    assert_eq!(read("cpu.cfs_period_us"), "100000\n");
    assert_eq!(
        read("cpu.cfs_quota_us"),
        "50000\n",
        "--cpus 0.5 is half of each period"
    );
    let tasks = read("tasks");
    let command_inside = tasks.lines().any(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
    });
    assert!(
        command_inside,
        "the command is not in {}: {tasks}",
        dir.display()
    );

    // exec passes SIGTERM to the command and exits with its status once it is gone.
    let exec_pid = nix::unistd::Pid::from_raw(i32::try_from(exec.0.id()).expect("a pid"));
    nix::sys::signal::kill(exec_pid, nix::sys::signal::Signal::SIGTERM).expect("signalling exec");
    let status = exec.0.wait().expect("waiting for exec");
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert!(
        !dir.exists(),
        "{} is left behind after exec ended",
        dir.display()
    );
}

#[test]
fn exec_passes_a_secret_by_name_and_redacts_it_in_every_form() {
    let w = Workdir::new();
    let mut cmd = w.command(&[
        "exec",
        "--secret",
        "CI_INTEL_TEST_SECRET",
        "--",
        "sh",
        "-c",
        "echo plain=$CI_INTEL_TEST_SECRET; printf %s \"$CI_INTEL_TEST_SECRET\" | base64; \
         echo err=$CI_INTEL_TEST_SECRET >&2",
    ]);
    cmd.env("CI_INTEL_TEST_SECRET", "s3cr3t-Value-42");
    let run = w.run_command(cmd);
    assert_eq!(run.code, Some(0), "{}", run.shown);
    assert!(!run.shown.contains("s3cr3t-Value-42"), "{}", run.shown);
    assert!(
        !run.shown.contains("czNjcjN0LVZhbHVlLTQy"),
        "base64 leaked: {}",
        run.shown
    );
    assert_eq!(
        run.stdout.lines().next(),
        Some("plain=***"),
        "{}",
        run.shown
    );
    assert_eq!(run.stderr.trim(), "err=***", "{}", run.shown);
    let unset = w.run(&[
        "exec",
        "--secret",
        "CI_INTEL_TEST_UNSET_SECRET",
        "--",
        "true",
    ]);
    assert_eq!(unset.code, Some(2), "{}", unset.shown);
}

#[test]
fn cache_hash_prints_blake3_digests_as_b3sum_does() {
    let w = Workdir::new();
    std::fs::create_dir_all(w.path().join("tree/sub")).expect("mkdir");
    // BLAKE3's test vectors: the empty input, one zero byte, and 1024 bytes of i % 251.
    w.write("tree/sub/empty", "");
    std::fs::write(w.path().join("tree/one"), [0u8]).expect("writing a test file");
    let counted: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(w.path().join("k1024"), counted).expect("writing a test file");
    // b3sum escapes a backslash in a name, and starts the line with one.
    w.write("tree/back\\slash", "");
    let hashed = w.run(&["cache", "hash", "k1024", "tree", "--threads", "2"]);
    assert_eq!(hashed.code, Some(0), "{}", hashed.shown);
    assert_eq!(
        hashed.stdout,
        "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7  k1024\n\
         \\af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262  tree/back\\\\slash\n\
         2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213  tree/one\n\
         af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262  tree/sub/empty\n",
        "{}",
        hashed.shown
    );
    assert_eq!(hashed.stderr, "");

    // A missing file is named, the others are still hashed, and the status is 1.
    let missing = w.run(&["cache", "hash", "missing", "tree/one"]);
    assert_eq!(missing.code, Some(1), "{}", missing.shown);
    assert_eq!(
        missing.stdout,
        "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213  tree/one\n"
    );
    assert!(
        missing
            .stderr
            .starts_with("ci-intel: cache hash: missing: "),
        "{}",
        missing.shown
    );
}

#[test]
fn report_without_run_records_says_how_to_get_some() {
    let w = Workdir::new();
    let run = w.run(&["report", "--out", "r.html"]);
    assert_eq!(run.code, Some(2), "{}", run.shown);
    assert!(!w.path().join("r.html").exists());
    assert_snapshot!(run.shown);
}

#[test]
fn an_invalid_rates_file_stops_the_run_before_it_starts() {
    let w = Workdir::with_plan(DIAMOND);
    w.write("rates.toml", "[class.\"*\"]\nusd_per_minute = \"cheap\"\n");
    let run = w.run(&["run", "plan.toml", "--rates", "rates.toml"]);
    assert_eq!(run.code, Some(2), "{}", run.shown);
    assert!(!w.path().join(".ci-intel/runs").exists(), "nothing ran");
    assert_snapshot!(run.shown);
}
