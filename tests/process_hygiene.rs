//! No process outlives its step: not on Ctrl-C, not on a second Ctrl-C, not when the
//! runner itself is killed, not on a timeout. And a step that prints hundreds of megabytes
//! does not make the runner's memory grow.
//!
//! Steps record the pids of their processes (including grandchildren that left the
//! shell's job control by double-forking, but not the step's process group) in pid files
//! in the plan root. Each test also snapshots every descendant of `ci-intel` (the watchdog
//! among them) before stopping it, and then polls, bounded, until every recorded process
//! is gone or a zombie. A process is identified by pid and start time, so a recycled pid
//! never counts as a survivor.
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use support::BIN;

/// How long a step may take to write its pid files.
const STARTUP: Duration = Duration::from_secs(20);
/// How long processes may take to die once they were told to.
const DEATH: Duration = Duration::from_secs(10);
/// How long `ci-intel` may take to exit once it should (a hang fails the test, not CI).
const EXIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Processes

/// One process, by pid and start time (clock ticks after boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Proc {
    pid: i32,
    start: u64,
}

struct Stat {
    state: char,
    ppid: i32,
    start: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

impl Proc {
    fn of(pid: i32) -> Option<Proc> {
        stat(pid).map(|s| Proc {
            pid,
            start: s.start,
        })
    }

    /// Still running: it exists, is the same process, and is not a zombie.
    fn running(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && !matches!(s.state, 'Z' | 'X'))
    }

    fn describe(&self) -> String {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        format!("pid {} ({})", self.pid, cmdline.trim())
    }
}

/// Every live descendant of `root`, found by walking `/proc`.
fn descendants(root: i32) -> Vec<Proc> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(s) = stat(pid) {
            children.entry(s.ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if let Some(p) = Proc::of(child) {
                found.push(p);
                todo.push(child);
            }
        }
    }
    found
}

/// Kills whatever a failed test left running, so one failure does not leak `sleep 300`s.
#[derive(Default)]
struct Survivors(Vec<Proc>);

impl Survivors {
    fn watch(&mut self, procs: impl IntoIterator<Item = Proc>) {
        for p in procs {
            if !self.0.contains(&p) {
                self.0.push(p);
            }
        }
    }

    /// Polls until every watched process is dead; panics naming those that are not.
    fn assert_all_die(&self, what: &str) {
        let deadline = Instant::now() + DEATH;
        loop {
            let alive: Vec<&Proc> = self.0.iter().filter(|p| p.running()).collect();
            if alive.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let list: Vec<String> = alive.iter().map(|p| p.describe()).collect();
                panic!(
                    "{what}: {} process(es) survived {DEATH:?}:\n  {}",
                    list.len(),
                    list.join("\n  ")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Survivors {
    fn drop(&mut self) {
        for p in self.0.iter().filter(|p| p.running()) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running ci-intel

/// A running `ci-intel run`, its output read by background threads.
struct Runner {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<String>,
}

impl Runner {
    /// Runs the plan in `dir` without the sandbox: these tests watch step processes by their
    /// host pids, which the steps write into the plan root.
    fn start(dir: &Path, args: &[&str]) -> Runner {
        let mut child = support::ci_intel()
            .arg("run")
            .arg(dir.join("plan.toml"))
            .env("XDG_CACHE_HOME", dir.join(".test-cache"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--no-sandbox")
            .args(args)
            .env_remove("CI_INTEL_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ci-intel");
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let copy = stdout.clone();
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                copy.lock()
                    .expect("stdout lock")
                    .push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let copy = stderr.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            copy.lock().expect("stderr lock").push_str(&text);
        });
        Runner {
            child,
            lines,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signalling ci-intel");
    }

    /// What it printed so far, for failure messages.
    fn output(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout.lock().expect("stdout lock"),
            self.stderr.lock().expect("stderr lock")
        )
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    fn wait_for_line(&mut self, needle: &str) {
        let deadline = Instant::now() + EXIT;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line containing `{needle}`:\n{}", self.output()),
            }
        }
    }

    /// Waits (bounded) for the pid files `names` in `dir`; fails if ci-intel exits first.
    fn wait_for_pids(&mut self, dir: &Path, names: &[&str]) -> Vec<Proc> {
        let deadline = Instant::now() + STARTUP;
        loop {
            let pids: Vec<Option<i32>> = names.iter().map(|n| read_pid(&dir.join(n))).collect();
            if pids.iter().all(Option::is_some) {
                // A process that already died needs no watching.
                return pids.into_iter().flatten().filter_map(Proc::of).collect();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ci-intel exited ({status}) before the steps wrote {names:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the steps did not write {names:?} within {STARTUP:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for ci-intel to exit; kills it and fails if it does not.
    fn wait_exit(&mut self, why: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + EXIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for ci-intel") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "ci-intel did not exit within {EXIT:?} {why}:\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn plan_dir(plan: &str) -> tempfile::TempDir {
    require_host();
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    std::fs::write(dir.path().join("plan.toml"), plan).expect("writing the plan");
    dir
}

/// Fails every test with one clear message when this host cannot run steps at all (the
/// sandbox needs /proc and pidfd_open, Linux 5.3 or later).
fn require_host() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECK.get_or_init(|| {
        if stat(std::process::id() as i32).is_none() {
            return Err("/proc/<pid>/stat is not readable; these tests need procfs".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let plan = dir.path().join("plan.toml");
        std::fs::write(&plan, "version = 1\n[steps.probe]\nargv = [\"true\"]\n")
            .map_err(|e| e.to_string())?;
        let out = support::ci_intel()
            .arg("run")
            .arg(&plan)
            .env("XDG_CACHE_HOME", dir.path().join(".test-cache"))
            .env_remove("CI_INTEL_LOG")
            .output()
            .map_err(|e| format!("cannot start {BIN}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            Err(format!(
                "`ci-intel run` of a one-step plan failed ({}); this host cannot run steps. \
                 The process sandbox needs pidfd_open (Linux >= 5.3; this kernel: {}).\n\
                 --- stdout\n{}--- stderr\n{}",
                out.status,
                release.trim(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(message) = result {
        panic!("host check failed: {message}");
    }
}

// ---------------------------------------------------------------------------------------
// The tests

/// Two steps, each a shell with a sleeping child and a grandchild outside job control:
/// `a` backgrounds it from a subshell, `b` double-forks it.
const GRANDCHILDREN: &str = r#"version = 1

[steps.a]
run = "(sleep 300 & echo $! > a-grandchild.pid) ; echo $$ > a-shell.pid; sleep 300"

[steps.b]
run = "( ( sleep 300 & echo $! > b-grandchild.pid ) & ) ; echo $$ > b-shell.pid; sleep 300"
"#;
const GRANDCHILD_PIDS: &[&str] = &[
    "a-grandchild.pid",
    "a-shell.pid",
    "b-grandchild.pid",
    "b-shell.pid",
];

#[test]
fn sigint_stops_every_step_process_and_exits_130() {
    let dir = plan_dir(GRANDCHILDREN);
    let mut survivors = Survivors::default();
    let mut run = Runner::start(dir.path(), &["--jobs", "2", "--grace", "2s"]);
    survivors.watch(run.wait_for_pids(dir.path(), GRANDCHILD_PIDS));
    survivors.watch(descendants(run.pid().as_raw()));

    run.signal(Signal::SIGINT);
    let status = run.wait_exit("after SIGINT");
    assert_eq!(status.code(), Some(130), "{}", run.output());
    survivors.assert_all_die("after SIGINT");
    let out = run.output();
    assert!(
        out.contains("      STOP interrupted: stopping running steps"),
        "{out}"
    );
    assert!(out.contains("2 steps: 2 cancelled;"), "{out}");
}

#[test]
fn a_second_sigint_kills_steps_that_ignore_sigterm() {
    let dir = plan_dir(
        r#"version = 1

[steps.stubborn]
run = "trap '' TERM; (sleep 300 & echo $! > grandchild.pid) ; echo $$ > shell.pid; sleep 300"
"#,
    );
    let mut survivors = Survivors::default();
    // A grace period far longer than the test waits: only the second SIGINT can end it.
    let mut run = Runner::start(dir.path(), &["--grace", "1h"]);
    let step = run.wait_for_pids(dir.path(), &["grandchild.pid", "shell.pid"]);
    survivors.watch(step.iter().copied());
    survivors.watch(descendants(run.pid().as_raw()));

    run.signal(Signal::SIGINT);
    run.wait_for_line("STOP interrupted: stopping running steps");
    assert!(
        step.iter().all(Proc::running),
        "the step ignores SIGTERM: it should still run during the grace period"
    );
    run.signal(Signal::SIGINT);
    let status = run.wait_exit("after the second SIGINT");
    assert_eq!(status.code(), Some(130), "{}", run.output());
    survivors.assert_all_die("after the second SIGINT");
    assert!(
        run.output()
            .contains("STOP interrupted again: killing running steps")
    );
}

#[test]
fn sigkill_of_ci_intel_kills_every_step_process() {
    let dir = plan_dir(GRANDCHILDREN);
    let mut survivors = Survivors::default();
    let mut run = Runner::start(dir.path(), &["--jobs", "2"]);
    survivors.watch(run.wait_for_pids(dir.path(), GRANDCHILD_PIDS));
    let tree = descendants(run.pid().as_raw());
    assert!(
        tree.iter()
            .any(|p| std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                .is_ok_and(|c| c.trim() == "ci-intel-watch")),
        "no watchdog among ci-intel's children: {tree:?}"
    );
    survivors.watch(tree);

    run.signal(Signal::SIGKILL);
    let status = run.wait_exit("after SIGKILL");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    survivors.assert_all_die("after SIGKILL of ci-intel");
}

#[test]
fn a_timeout_kills_the_whole_group() {
    let dir = plan_dir(
        r#"version = 1

[steps.hang]
run = "( ( sleep 300 & echo $! > grandchild.pid ) & ) ; echo $$ > shell.pid; sleep 300"
timeout = "3s"
"#,
    );
    let mut survivors = Survivors::default();
    let mut run = Runner::start(dir.path(), &["--grace", "1s"]);
    survivors.watch(run.wait_for_pids(dir.path(), &["grandchild.pid", "shell.pid"]));
    survivors.watch(descendants(run.pid().as_raw()));

    let status = run.wait_exit("after the step's timeout");
    assert_eq!(status.code(), Some(1), "{}", run.output());
    assert!(
        run.output().contains("   TIMEOUT hang (timed out after 3s"),
        "{}",
        run.output()
    );
    survivors.assert_all_die("after a timeout");
}

#[test]
fn hundreds_of_megabytes_of_output_keep_memory_bounded() {
    const BYTES: u64 = 300_000_000;
    const WIDTH: u64 = 100;
    const LIVE_LIMIT: u64 = 1024 * 1024;
    let dir = plan_dir(
        r#"version = 1

[steps.spew]
run = "head -c 300000000 /dev/zero | tr '\\0' 'x' | fold -w 100"
"#,
    );
    let mut child = support::ci_intel()
        .arg("run")
        .arg(dir.path().join("plan.toml"))
        .env("XDG_CACHE_HOME", dir.path().join(".test-cache"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("CI_INTEL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ci-intel");
    let pid = child.id() as libc::pid_t;

    #[derive(Debug, Default)]
    struct Counts {
        bytes: u64,
        live_lines: u64,
        live_payload: u64,
        notices: u64,
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        // Line by line into one reused buffer: the test itself must not hold 300 MB.
        let mut counts = Counts::default();
        let mut out = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match out.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => counts.bytes += n as u64,
            }
            if let Some(payload) = line.strip_prefix(b"[spew] ") {
                if payload.starts_with(b"[ci-intel] live output truncated") {
                    counts.notices += 1;
                } else {
                    counts.live_lines += 1;
                    counts.live_payload += payload.len() as u64;
                }
            }
        }
        counts
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut status = 0;
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child (std's `Child` never reaps on its own, and
    // is not waited on below); the pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let counts = reader.join().expect("the stdout reader");
    let stderr = errors.join().expect("the stderr reader");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ci-intel failed (wait status {status}): {counts:?}\n{stderr}"
    );

    let max_rss_mib = usage.ru_maxrss as f64 / 1024.0;
    assert!(
        max_rss_mib < 100.0,
        "ci-intel's peak RSS was {max_rss_mib:.1} MiB for {BYTES} bytes of step output"
    );

    let runs: Vec<_> = std::fs::read_dir(dir.path().join("state/runs"))
        .expect("the run directory")
        .map(|e| e.expect("reading runs/").path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let log = runs[0].join("spew.log");
    let size = std::fs::metadata(&log).expect("the step's log").len();
    assert_eq!(
        size,
        BYTES + BYTES / WIDTH,
        "{} should hold every byte and every line's newline",
        log.display()
    );

    // Live output stops at the limit (each line counts with its newline) and says so once.
    assert_eq!(counts.notices, 1, "{counts:?}");
    assert!(counts.live_lines > 0, "{counts:?}");
    assert!(
        counts.live_payload <= LIVE_LIMIT,
        "more than {LIVE_LIMIT} bytes shown live: {counts:?}"
    );
    assert!(
        LIVE_LIMIT - counts.live_payload <= WIDTH + 1,
        "live output stopped early: {counts:?}"
    );
    // Prefixes, the notice and the summary add little on top.
    assert!(
        counts.bytes < LIVE_LIMIT * 3 / 2,
        "stdout carried {counts:?}"
    );
}

/// True while a host process whose command line contains `marker` exists (zombies aside).
fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(marker)
        })
}

#[test]
fn sigkill_of_ci_intel_kills_every_sandboxed_step_process() {
    let marker = format!("ci-intel-hygiene-{}", std::process::id());
    let dir = plan_dir(&format!(
        r#"version = 1

[steps.boxed]
run = """
setsid sh -c 'sleep 300; : {marker}-daemon' >/dev/null 2>&1 &
sh -c 'sleep 300; : {marker}-child' &
echo started
wait
"""
"#
    ));
    let mut child = support::ci_intel()
        .arg("run")
        .arg(dir.path().join("plan.toml"))
        .env("XDG_CACHE_HOME", dir.path().join(".test-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ci-intel");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let started = lines.any(|l| l.is_ok_and(|l| l.contains("[boxed] started")));
    assert!(started, "the step did not start");
    let deadline = Instant::now() + STARTUP;
    while !running_with(&format!("{marker}-daemon")) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        running_with(&format!("{marker}-daemon")),
        "the daemon never ran"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("killing ci-intel");
    let _ = child.wait();
    let deadline = Instant::now() + EXIT;
    while running_with(&marker) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !running_with(&marker),
        "a sandboxed step process outlived ci-intel's SIGKILL"
    );
}
