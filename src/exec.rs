//! `ci-intel exec`: one command under the sandbox policy plan steps get.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use ci_intel_executor::{FixedEnv, Redactor};
use ci_intel_sandbox::{
    Allowlist, EgressProxy, Isolation, Layer, Limits, NetworkMode, Policy, Posture, SandboxError,
    SpawnError, spawn_stdio,
};
use nix::sys::signal::Signal;

use crate::cli::ExecArgs;
use crate::{Failure, Outcome, exit};

/// Exit codes of `exec` beyond the command's own.
const TIMED_OUT: u8 = 124;
const SETUP_FAILED: u8 = 125;
const CANNOT_EXECUTE: u8 = 126;
const NOT_FOUND: u8 = 127;

fn fail(code: u8, message: String, hint: Option<&str>) -> Outcome {
    Ok(Err(Failure {
        code,
        message,
        hint: hint.map(Into::into),
    }))
}

/// The determinism set every command gets, before the sandbox's own and `--env`.
fn fixed_env(cwd: &Path) -> Vec<(String, String)> {
    let sde = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            in_git_checkout(cwd)
                .then(|| FixedEnv::commit_time(cwd))
                .flatten()
        })
        .unwrap_or(0);
    let fixed = FixedEnv {
        source_date_epoch: sde,
        ..FixedEnv::default()
    };
    fixed
        .vars()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Whether `dir` or a parent has `.git` (cheap: a few `stat`s, no process).
fn in_git_checkout(dir: &Path) -> bool {
    dir.ancestors().any(|d| d.join(".git").exists())
}

pub(crate) fn exec(args: ExecArgs) -> Outcome {
    let cwd = match &args.cwd {
        Some(c) if c.is_absolute() => c.clone(),
        Some(c) => std::env::current_dir()
            .context("reading the current directory")?
            .join(c),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let (mode, allow) = match args.net.as_str() {
        "deny" => (NetworkMode::Deny, None),
        "loopback" => (NetworkMode::Loopback, None),
        other => match other.strip_prefix("allow=") {
            Some(list) => match Allowlist::parse(list.split(',').filter(|s| !s.is_empty())) {
                Ok(a) => (NetworkMode::Proxy, Some(a)),
                Err(e) => {
                    return fail(
                        exit::USAGE,
                        format!("error: --net: {e}"),
                        Some("write e.g. --net allow=crates.io:443,*.github.com:443"),
                    );
                }
            },
            None => {
                return fail(
                    exit::USAGE,
                    format!("error: --net: unknown mode `{other}`"),
                    Some("use deny, loopback or allow=HOST:PORT,..."),
                );
            }
        },
    };
    if !args.require.is_empty() {
        let mut required = Vec::new();
        for name in &args.require {
            let name = if name == "cgroup" { "cgroups" } else { name };
            match Layer::from_name(name) {
                Some(l) => required.push(l),
                None => {
                    let names: Vec<&str> = Layer::ALL.iter().map(|l| l.name()).collect();
                    return fail(
                        exit::USAGE,
                        format!("error: --require: unknown layer `{name}`"),
                        Some(&format!("layers: {}", names.join(", "))),
                    );
                }
            }
        }
        let missing = Posture::isolated().missing(&required);
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|l| l.name()).collect();
            return fail(
                exit::ISOLATION,
                format!(
                    "error: this host does not enforce required isolation layers: {}",
                    names.join(", ")
                ),
                Some("run `ci-intel doctor` to see what is missing and how to fix it"),
            );
        }
    }

    let defaults = Limits::default();
    let limits = Limits {
        memory: args.memory,
        pids: args.pids.unwrap_or(defaults.pids),
        nofile: args.nofile.unwrap_or(defaults.nofile),
        tmpfs: args.tmpfs_size.unwrap_or(defaults.tmpfs),
        millicpus: args.millicpus,
    };
    let mut iso = Isolation::builder().limits(limits);
    for p in &args.ro {
        iso = iso.ro(absolute(p, &cwd));
    }
    for p in &args.rw {
        iso = iso.rw(absolute(p, &cwd));
    }
    for p in &args.tmpfs {
        iso = iso.tmpfs(absolute(p, &cwd));
    }
    let isolation = iso.network(mode).build();
    // The determinism set, then what every sandbox gets, then the caller's variables.
    let mut policy = Policy::new(&cwd);
    for (k, v) in fixed_env(&cwd) {
        policy = policy.env(k, v);
    }
    for (k, v) in isolation.env() {
        policy = policy.env(k, v);
    }
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return fail(
                exit::USAGE,
                format!("error: --env `{kv}` is not NAME=VALUE"),
                None,
            );
        };
        policy = policy.env(k, v);
    }
    let mut secret_values = Vec::new();
    for name in &args.secrets {
        let Some(value) = std::env::var_os(name) else {
            return fail(
                exit::USAGE,
                format!("error: --secret {name}: the variable is not set"),
                Some("export it in the environment that runs ci-intel"),
            );
        };
        secret_values.push(value.clone());
        policy = policy.env(name, value);
    }
    let policy = policy.isolate(isolation);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(
        policy,
        args.command,
        allow,
        secret_values,
        args.timeout,
    ))
}

fn absolute(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

async fn run(
    policy: Policy,
    command: Vec<OsString>,
    allow: Option<Allowlist>,
    secrets: Vec<OsString>,
    timeout: Option<Duration>,
) -> Outcome {
    let dup = |fd: i32| -> anyhow::Result<OwnedFd> {
        // SAFETY: 1 and 2 are open for the life of the process; the clone is ours.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        borrowed
            .try_clone_to_owned()
            .context("duplicating stdout/stderr")
    };
    let (out, err, relays) = if secrets.is_empty() {
        (dup(1)?, dup(2)?, Vec::new())
    } else {
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        use std::os::unix::ffi::OsStrExt as _;
        let values: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        let redactor = std::sync::Arc::new(Redactor::new(&values));
        let relays = vec![
            std::thread::spawn({
                let r = redactor.clone();
                move || relay(out_r, std::io::stdout(), &r)
            }),
            std::thread::spawn({
                let r = redactor.clone();
                move || relay(err_r, std::io::stderr(), &r)
            }),
        ];
        (out_w, err_w, relays)
    };
    // Before the command starts: a signal that arrives while it starts is passed on to it
    // once the loop below runs, instead of killing this process, which would leave the
    // sandbox to its parent-death signal and, as root, its cgroup directories behind.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut child = match spawn_stdio(&policy, &command, out, err, None) {
        Ok(c) => c,
        Err(e) => return spawn_failure(&e),
    };
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let _proxy = match (child.take_proxy_listener(), allow) {
        (Some(listener), Some(allow)) => Some(
            EgressProxy::start(listener, "exec".into(), allow, events_tx)
                .context("starting the egress proxy")?,
        ),
        _ => None,
    };
    let printer = tokio::spawn(async move {
        while let Some(ev) = events_rx.recv().await {
            if !ev.allowed {
                eprintln!(
                    "ci-intel: egress denied: {}:{}{}",
                    ev.host,
                    ev.port,
                    ev.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                );
            }
        }
    });
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timed_out = false;
    let mut interrupts = 0;
    let ended;
    loop {
        tokio::select! {
            r = child.ended() => {
                r.context("waiting for the command")?;
                ended = child.command_exit();
                break;
            }
            _ = int.recv() => {
                interrupts += 1;
                let sig = if interrupts > 1 { Signal::SIGKILL } else { Signal::SIGINT };
                let _ = child.signal_group(sig);
            }
            _ = term.recv() => { let _ = child.signal_group(Signal::SIGTERM); }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } }, if !timed_out => {
                timed_out = true;
                let _ = child.signal_group(Signal::SIGTERM);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.exited()).await;
                let _ = child.signal_group(Signal::SIGKILL);
            }
        }
    }
    let status = match ended {
        // The command's status is known; its sandbox is being torn down by the kernel. This
        // process is about to exit, so pid 1's zombie is left to the kernel and init
        // instead of waiting for the teardown.
        Some(exit) if !timed_out && relays.is_empty() && !child.has_cgroup() => {
            std::mem::forget(child);
            exit.shell_status()
        }
        _ => {
            child.exited().await.context("waiting for the sandbox")?;
            child.reap().context("reaping the command")?.shell_status()
        }
    };
    drop(_proxy);
    printer.abort();
    for r in relays {
        let _ = r.join();
    }
    if timed_out {
        return fail(TIMED_OUT, "ci-intel: the command timed out".into(), None);
    }
    Ok(Ok(u8::try_from(status).unwrap_or(255)))
}

fn spawn_failure(e: &SpawnError) -> Outcome {
    let message = format!("error: {}", ci_intel_cache::error_chain(e));
    match e {
        SpawnError::NotFound { .. } => fail(
            NOT_FOUND,
            message,
            Some("give the program's path, or make its directory visible with --ro"),
        ),
        SpawnError::PermissionDenied { .. } => fail(CANNOT_EXECUTE, message, None),
        SpawnError::Sandbox {
            source: SandboxError::Layout(_),
            ..
        } => fail(
            exit::USAGE,
            message,
            Some("--ro/--rw/--tmpfs take existing absolute paths"),
        ),
        _ => fail(
            SETUP_FAILED,
            message,
            Some("run `ci-intel doctor` to see what this host provides"),
        ),
    }
}

/// Copies `from` to `to` line by line with every form of every secret masked.
fn relay(from: OwnedFd, mut to: impl std::io::Write, redactor: &Redactor) {
    use std::io::BufRead as _;
    let mut reader = std::io::BufReader::new(std::fs::File::from(from));
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let _ = to.write_all(&redactor.redact(&line));
        let _ = to.flush();
        line.clear();
    }
}
