//! The real executor: one sandboxed process per attempt.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ci_intel_cache::store::{LocalCache, RestoreError, StoreError, StoreRequest};
use ci_intel_sandbox::{
    Allowlist, Child, EgressEvent, EgressProxy, Isolation, NetworkMode, Policy, SpawnError,
    Watchdog,
};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::time::sleep_until;

use std::path::PathBuf;

use crate::action::{
    Action, ActionSandbox, CacheEvent, FixedEnv, NetworkAccess, Outcome, Phase, SecretScan, Status,
    VerifyPolicy,
};
use crate::cache;
use crate::cancel::{Cancel, CancelLevel};
use crate::chaos::{self, ChaosEffect, FaultParams, Injection, Stress};
use crate::determinism::{
    Disorder, VERIFY_HOSTNAME, host_variation, moved_root, normalize_outputs, not_applicable,
    vary_argv, vary_env,
};
use crate::output::{OutputProcessor, OutputSink, command_not_found};
use crate::workspace::{Exclusions, Staging, visible_inputs_excluding};
use crate::{Execute, ExecuteError};

/// Settings of a [`ProcessExecutor`].
#[derive(Clone, Debug)]
pub struct ProcessExecutorConfig {
    /// Time between `SIGTERM` and `SIGKILL` when a step is stopped.
    pub grace: Duration,
    /// Bytes of each step's output shown live; the log always has everything.
    pub live_output_limit: u64,
    /// The determinism set.
    pub fixed_env: FixedEnv,
    /// How long to keep reading output after the step's group was killed (a process that
    /// escaped the group may still hold the pipe open).
    pub drain_timeout: Duration,
}

impl Default for ProcessExecutorConfig {
    fn default() -> Self {
        ProcessExecutorConfig {
            grace: Duration::from_secs(10),
            live_output_limit: 1024 * 1024,
            fixed_env: FixedEnv::default(),
            drain_timeout: Duration::from_secs(2),
        }
    }
}

/// Runs each action as a process in its own group under the sandbox.
pub struct ProcessExecutor {
    config: ProcessExecutorConfig,
    sink: Arc<dyn OutputSink>,
    watchdog: Option<Watchdog>,
    cache: Option<Arc<LocalCache>>,
    /// Whether the run was told its key cannot publish to the trusted namespace.
    warned_untrusted: AtomicBool,
}

impl std::fmt::Debug for ProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessExecutor")
            .field("config", &self.config)
            .field("watchdog", &self.watchdog)
            .field(
                "cache",
                &self.cache.as_ref().map(|c| c.root().to_path_buf()),
            )
            .finish_non_exhaustive()
    }
}

impl ProcessExecutor {
    /// An executor streaming live output to `sink`. With a `watchdog`, every step group is
    /// killed even if this process dies by `SIGKILL`.
    pub fn new(
        config: ProcessExecutorConfig,
        sink: Arc<dyn OutputSink>,
        watchdog: Option<Watchdog>,
    ) -> ProcessExecutor {
        ProcessExecutor {
            config,
            sink,
            watchdog,
            cache: None,
            warned_untrusted: AtomicBool::new(false),
        }
    }

    /// Looks sandboxed actions up in `cache` before running them, and stores their results.
    pub fn with_cache(mut self, cache: Arc<LocalCache>) -> ProcessExecutor {
        self.cache = Some(cache);
        self
    }

    /// The attempt's environment as a policy, the secret values to redact, and the
    /// environment itself (for the action key).
    fn policy(&self, action: &Action) -> Result<(Policy, Vec<Vec<u8>>, Env), String> {
        use std::os::unix::ffi::OsStrExt as _;
        // Host values need not be UTF-8: they pass through as bytes.
        let mut env: BTreeMap<String, OsString> = self
            .config
            .fixed_env
            .vars()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        env.insert("HOME".into(), action.home.clone().into_os_string());
        for (k, v) in &action.env {
            env.insert(k.clone(), v.into());
        }
        let varied = action.variations.as_ref();
        for name in &action.pass_env {
            // A determinism check's rerun sees another host zone and locale, where the
            // plan passes them through.
            let host = match varied
                .filter(|v| v.host_env)
                .and_then(|_| host_variation(name))
            {
                Some(v) => Some(v.into()),
                None => std::env::var_os(name),
            };
            if let Some(v) = host {
                env.insert(name.clone(), v);
            }
        }
        let mut secrets = Vec::new();
        for name in &action.secrets {
            match std::env::var_os(name) {
                Some(v) => {
                    secrets.push(v.as_bytes().to_vec());
                    env.insert(name.clone(), v);
                }
                None => return Err(format!("secret {name} is not set in the environment")),
            }
        }
        let cwd = match varied {
            Some(v) if v.build_path && action.sandbox.is_some() => moved_root(&action.cwd),
            _ => action.cwd.clone(),
        };
        let policy = env.iter().fold(Policy::new(cwd), |p, (k, v)| p.env(k, v));
        Ok((policy, secrets, env))
    }
}

/// A restored entry.
struct Hit {
    namespace: String,
    exit_code: i32,
}

impl ProcessExecutor {
    /// Looks the attempt up and restores a verified hit: its outputs, then its recorded
    /// output replayed. `None` is a miss (broken entries found on the way are quarantined
    /// and said so in the log).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the attempt's pieces, and the fault that acts on the restore"
    )]
    fn restore(
        &self,
        cache: &LocalCache,
        keyed: &cache::Keyed,
        sb: &ActionSandbox,
        action: &Action,
        out: &mut OutputProcessor<'_>,
        events: &mut Vec<CacheEvent>,
        mut chaos: Option<(&Injection, &mut ChaosEffect)>,
    ) -> std::io::Result<Option<Hit>> {
        let lookup = cache.lookup(&keyed.key);
        for q in &lookup.quarantined {
            out.note(&quarantine_line(q))?;
            events.push(quarantine_event(q));
        }
        let Some(entry) = lookup.entry else {
            if let Some((_, effect)) = chaos {
                effect.detail = "not fired: no cache entry to corrupt (a miss)".into();
            }
            return Ok(None);
        };
        if let Some((inj, effect)) = chaos.as_mut() {
            corrupt_entry(cache, &entry, inj, effect, out)?;
        }
        // The key covers the declared outputs, so a verified entry names nothing else; a
        // signer's bug must not write elsewhere in the workspace either.
        if let Some(stray) = entry
            .manifest
            .outputs
            .iter()
            .find(|o| !cache::is_declared(&o.path, &sb.outputs))
        {
            out.note(&format!(
                "cache hit not used: the entry has an output `{}` the step does not declare",
                stray.path
            ))?;
            return Ok(None);
        }
        if let Err(e) = cache::clear_outputs(&action.cwd, &sb.outputs) {
            out.note(&format!("cache hit not used: clearing the outputs: {e}"))?;
            return Ok(None);
        }
        let mtime =
            std::time::UNIX_EPOCH + Duration::from_secs(self.config.fixed_env.source_date_epoch);
        // The recorded output goes to a file first, verified, then is replayed from it.
        let replay = action.log_path.with_extension("cached-output");
        match cache
            .restore(&entry, &action.cwd, Some(mtime))
            .and_then(|()| cache.restore_log(&entry, &replay))
        {
            Ok(()) => {
                if let Some((_, effect)) = chaos.filter(|(_, e)| e.fired) {
                    // Verification let a flipped byte through: the one outcome chaos must
                    // never see.
                    effect.contained = false;
                    effect.ended_at = Some(SystemTime::now());
                    effect
                        .detail
                        .push_str("; NOT caught: the corrupted entry was restored");
                }
            }
            Err(RestoreError::Corrupt(q)) => {
                out.note(&quarantine_line(&q))?;
                events.push(quarantine_event(&q));
                if let Some((_, effect)) = chaos.filter(|(_, e)| e.fired) {
                    effect.ended_at = Some(SystemTime::now());
                    effect.detail.push_str(
                        "; caught by verification: the entry was quarantined and the step runs",
                    );
                }
                return Ok(None);
            }
            Err(e) => {
                out.note(&format!("cache hit not used: {}", cache::chain(&e)))?;
                return Ok(None);
            }
        };
        let replayed = std::fs::File::open(&replay).and_then(|mut f| {
            use std::io::Read as _;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match f.read(&mut buf)? {
                    0 => return Ok(()),
                    n => out.feed(&buf[..n])?,
                }
            }
        });
        let _ = std::fs::remove_file(&replay);
        replayed?;
        out.note(&format!(
            "cached: restored from the {} namespace (key {}, signed by {})",
            entry.namespace, keyed.key, entry.signer
        ))?;
        Ok(Some(Hit {
            namespace: entry.namespace,
            exit_code: entry.manifest.exit_code,
        }))
    }

    /// Stores a clean run's result, unless an input changed while it ran.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the attempt's pieces"
    )]
    fn store(
        &self,
        cache: &LocalCache,
        keyed: &cache::Keyed,
        sb: &ActionSandbox,
        action: &Action,
        log_start: u64,
        duration: Duration,
        out: &mut OutputProcessor<'_>,
    ) -> std::io::Result<()> {
        let changed = keyed.changed_inputs();
        if !changed.is_empty() {
            let shown: Vec<&str> = changed.iter().take(5).map(String::as_str).collect();
            out.note(&format!(
                "warning: not cached: input{} changed while the step ran: {}{}",
                if changed.len() == 1 { "" } else { "s" },
                shown.join(", "),
                if changed.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ))?;
            tracing::warn!(
                "{}: not cached: {} changed while the step ran",
                action.step,
                shown.join(", ")
            );
            return Ok(());
        }
        let outputs = cache::existing_outputs(&action.cwd, &sb.outputs);
        let request = StoreRequest {
            key: keyed.key,
            summary: keyed.summary.clone(),
            root: &action.cwd,
            outputs: &outputs,
            exit_code: 0,
            log: &action.log_path,
            log_offset: log_start,
            duration,
        };
        match cache.store(&request) {
            Ok(_) => {}
            Err(e @ StoreError::NotTrusted(_)) => {
                if !self.warned_untrusted.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "results are not cached: {e}; set CI_INTEL_CACHE_KEY to a key the cache \
                         trusts (`ci-intel cache keygen`), see docs/cache.md"
                    );
                }
            }
            Err(e) => {
                out.note(&format!("warning: not cached: {}", cache::chain(&e)))?;
                tracing::warn!("{}: not cached: {}", action.step, cache::chain(&e));
            }
        }
        Ok(())
    }
}

/// `corrupt_cache`: flips a byte in one of `entry`'s blobs (the seeded one), unless the
/// kill switch is engaged.
fn corrupt_entry(
    cache: &LocalCache,
    entry: &ci_intel_cache::store::Entry,
    inj: &Injection,
    effect: &mut ChaosEffect,
    out: &mut OutputProcessor<'_>,
) -> std::io::Result<()> {
    let FaultParams::Corrupt { blob, byte } = inj.params else {
        return Ok(());
    };
    if let Some(why) = inj.kill_switch.engaged() {
        effect.detail = format!("not fired: {why}");
        return out.note(&format!("chaos: corrupt_cache not fired: {why}"));
    }
    let blobs: Vec<_> = entry.manifest.blobs().collect();
    let paths: Vec<PathBuf> = blobs.iter().map(|b| cache.cas().path(&b.digest)).collect();
    match chaos::corrupt(&paths, blob, byte) {
        Ok((path, at)) => {
            let i = paths.iter().position(|p| *p == path).unwrap_or(0);
            let what = entry
                .manifest
                .outputs
                .iter()
                .find(|o| matches!(o.kind, ci_intel_cache::manifest::OutputKind::File { digest, .. } if digest == blobs[i].digest))
                .map_or_else(|| "the recorded log".to_string(), |o| format!("output `{}`", o.path));
            effect.fire(format!(
                "flipped byte {at} of blob {} ({what}) in the {} entry",
                blobs[i].digest, entry.namespace
            ));
            out.note(&format!("chaos: corrupt_cache: {}", effect.detail))
        }
        Err(e) => {
            effect.detail = format!("not fired: could not corrupt the entry: {e}");
            out.note(&format!("chaos: corrupt_cache {}", effect.detail))
        }
    }
}

/// The outcome's record of a quarantined entry.
fn quarantine_event(q: &ci_intel_cache::store::Quarantine) -> CacheEvent {
    CacheEvent::Quarantine {
        namespace: q.namespace.clone(),
        reason: q.reason.clone(),
    }
}

/// The log line of a quarantined entry.
fn quarantine_line(q: &ci_intel_cache::store::Quarantine) -> String {
    format!(
        "cache_quarantine: {} entry {} moved to {}: {}",
        q.namespace,
        q.key,
        q.path.display(),
        q.reason
    )
}

fn open_log(path: &Path) -> Result<std::fs::File, ExecuteError> {
    let err = |source| ExecuteError::Log {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)
}

impl Execute for ProcessExecutor {
    async fn execute(&self, action: Action, cancel: Cancel) -> Result<Outcome, ExecuteError> {
        self.attempt(action, cancel).await
    }
}

/// An attempt in progress, boxed: a determinism check runs attempts from inside one.
type AttemptFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Outcome, ExecuteError>> + Send + 'a>>;

impl ProcessExecutor {
    /// [`Execute::execute`], with a named type a determinism check can call again.
    pub(crate) fn attempt(&self, action: Action, cancel: Cancel) -> AttemptFuture<'_> {
        Box::pin(self.run_attempt(action, cancel))
    }

    async fn run_attempt(
        &self,
        mut action: Action,
        mut cancel: Cancel,
    ) -> Result<Outcome, ExecuteError> {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let log_file = open_log(&action.log_path)?;
        let log_err = |source| ExecuteError::Log {
            path: action.log_path.clone(),
            source,
        };
        let policy = self.policy(&action);
        let secrets = policy
            .as_ref()
            .map(|(_, s, _)| s.clone())
            .unwrap_or_default();
        let mut out = OutputProcessor::new(
            &action.step,
            log_file,
            &*self.sink,
            secrets,
            self.config.live_output_limit,
            action.log_path.display().to_string(),
        );
        if action.attempt > 1 {
            out.note(&format!(
                "attempt {} of {}",
                action.attempt, action.max_attempts
            ))
            .map_err(log_err)?;
        }
        let mut outcome = Outcome::new(Status::Failed, action.log_path.clone());
        outcome.started_at = started_at;
        outcome.exit_code = None;
        // The fault this attempt was given, unless the kill switch is engaged now.
        let injection = match &action.chaos {
            Some(inj) => {
                let mut effect = ChaosEffect::pending(inj.fault, "not fired");
                let injected = match inj.kill_switch.engaged() {
                    Some(why) => {
                        effect.detail = format!("not injected: {why}");
                        out.note(&format!("chaos: {} not injected: {why}", inj.fault))
                            .map_err(log_err)?;
                        None
                    }
                    None => {
                        out.note(&format!(
                            "chaos: {}: {} ({})",
                            inj.fault,
                            inj.describe(),
                            inj.decision
                        ))
                        .map_err(log_err)?;
                        Some(inj.clone())
                    }
                };
                outcome.chaos = Some(effect);
                injected
            }
            None => None,
        };
        let params = injection.as_ref().map(|i| &i.params);
        if let (Some(FaultParams::DiskFill { tmpfs }), Some(sb)) = (params, action.sandbox.as_mut())
        {
            sb.limits.tmpfs = *tmpfs;
        }

        let (policy, mut env) = match policy {
            Ok((p, _, env)) => (p, env),
            Err(message) => {
                return stop_before_start(&mut out, outcome, message, start, log_err);
            }
        };
        let findings = sweep_action(&action);
        if !findings.is_empty() {
            let what: Vec<String> = findings.iter().map(ToString::to_string).collect();
            let what = what.join("; ");
            if action.secret_scan == SecretScan::Deny {
                let message = format!(
                    "secret sweep: {what}; declare it in `secrets` (or set `secret_scan = \"warn\"`)"
                );
                return stop_before_start(&mut out, outcome, message, start, log_err);
            }
            out.note(&format!("warning: secret sweep: {what}"))
                .map_err(log_err)?;
        }
        let setup_start = (SystemTime::now(), Instant::now());
        // A rerun that varies the directory order reads the workspace through disorderfs,
        // unmounted when the attempt ends, however it ends.
        let disorder = match (&action.variations, &action.sandbox) {
            (Some(v), Some(sb)) if v.dir_order && not_applicable("dir_order").is_none() => {
                match Disorder::mount(&action.cwd, &sb.staging.with_extension("dirorder")) {
                    Ok(d) => Some(d),
                    Err(message) => {
                        return stop_before_start(&mut out, outcome, message, start, log_err);
                    }
                }
            }
            _ => None,
        };
        let (policy, staging, allow, visible) = match &action.sandbox {
            None => {
                std::fs::create_dir_all(&action.home).map_err(|source| ExecuteError::Home {
                    path: action.home.clone(),
                    source,
                })?;
                (policy, None, None, Vec::new())
            }
            Some(sb) => match isolate(
                policy,
                &action,
                sb,
                disorder.as_ref().map(|d| d.mount.as_path()),
                &mut out,
                &mut env,
            ) {
                Ok((policy, staging, allow, visible)) => match &action.variations {
                    Some(v) => (vary_env(policy, &mut env, v), staging, allow, visible),
                    None => (policy, staging, allow, visible),
                },
                Err(message) => {
                    return stop_before_start(&mut out, outcome, message, start, log_err);
                }
            },
        };

        let mut setup = setup_start.1.elapsed();
        // The cache: a verified hit is restored instead of running the step.
        let log_start = std::fs::metadata(&action.log_path).map_or(0, |m| m.len());
        let lookup_start = (SystemTime::now(), Instant::now());
        let keyed = match (&self.cache, &action.sandbox) {
            _ if injection.as_ref().is_some_and(|i| !i.reads_cache()) => {
                outcome.cache_events.push(CacheEvent::Uncacheable {
                    reason: format!(
                        "not looked up: chaos {} acts on the running step (its result is not stored)",
                        injection.as_ref().map_or("", |i| i.fault.name())
                    ),
                });
                None
            }
            (Some(_), Some(sb)) if action.cache => {
                let cx = cache::KeyContext {
                    env: &env,
                    inputs: &visible,
                    source_date_epoch: self.config.fixed_env.source_date_epoch,
                };
                match cache::key(&action, sb, &cx) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        out.note(&format!("cache not used: {e}")).map_err(log_err)?;
                        outcome.cache_events.push(CacheEvent::Uncacheable {
                            reason: e.to_string(),
                        });
                        None
                    }
                }
            }
            (None, _) => {
                outcome.cache_events.push(CacheEvent::Uncacheable {
                    reason: "the run has no cache (--no-cache)".into(),
                });
                None
            }
            (Some(_), None) => {
                outcome.cache_events.push(CacheEvent::Uncacheable {
                    reason: "the step runs without the sandbox".into(),
                });
                None
            }
            (Some(_), Some(_)) => {
                outcome.cache_events.push(CacheEvent::Uncacheable {
                    reason: "`cache = false` in the plan".into(),
                });
                None
            }
        };
        match (&keyed, &action.sandbox) {
            (Some(keyed), _) => {
                outcome.action_key = Some(keyed.key.to_string());
                outcome.inputs = Some(keyed.stats);
            }
            (None, Some(sb)) => outcome.inputs = cache::input_stats(&visible, &sb.needs_outputs),
            (None, None) => {}
        }
        // A result in the cache was checked when it was stored; `--verify-determinism`
        // checks again anyway.
        let recheck = action.verify.is_some() && action.verify_cached;
        if keyed.is_some() && recheck {
            outcome.cache_events.push(CacheEvent::Uncacheable {
                reason: "not looked up: a determinism check runs the step (a reproducible result is stored)".into(),
            });
        }
        if let (Some(cache), Some(keyed), Some(sb), false) =
            (&self.cache, &keyed, &action.sandbox, recheck)
        {
            let hit = self
                .restore(
                    cache,
                    keyed,
                    sb,
                    &action,
                    &mut out,
                    &mut outcome.cache_events,
                    injection
                        .as_ref()
                        .filter(|i| i.fault == chaos::Fault::CorruptCache)
                        .zip(outcome.chaos.as_mut()),
                )
                .map_err(log_err)?;
            outcome.cache_events.push(match &hit {
                Some(hit) => CacheEvent::Hit {
                    namespace: hit.namespace.clone(),
                },
                None => CacheEvent::Miss,
            });
            outcome.phases.push(Phase {
                name: "cache.lookup",
                started_at: lookup_start.0,
                duration: lookup_start.1.elapsed(),
            });
            if let Some(hit) = hit {
                if let Some(staging) = &staging {
                    let _ = std::fs::remove_dir_all(staging.staging_dir());
                }
                out.finish().map_err(log_err)?;
                outcome.status = Status::Succeeded;
                outcome.exit_code = Some(hit.exit_code);
                outcome.cached = true;
                outcome.output_bytes = out.total;
                outcome.duration = start.elapsed();
                outcome.message = Some(format!("cached ({})", hit.namespace));
                return Ok(outcome);
            }
        }

        if cancel.level() > CancelLevel::None {
            outcome.status = Status::Cancelled;
            outcome.message = Some("cancelled before it started".into());
            return Ok(outcome);
        }

        let spawn_start = Instant::now();
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ExecuteError::Pipe(e.into()))?;
        let argv = match &action.variations {
            Some(v) => vary_argv(action.program.argv(), v),
            None => action.program.argv(),
        };
        let argv = match (params, &action.sandbox, outcome.chaos.as_mut()) {
            (Some(FaultParams::DiskFill { .. }), Some(_), Some(effect)) => {
                effect.fire(
                    injection
                        .as_ref()
                        .map_or_else(String::new, Injection::describe),
                );
                chaos::fill_argv(argv)
            }
            _ => argv,
        };
        let mut child = match ci_intel_sandbox::spawn(&policy, &argv, tx, self.watchdog.as_ref()) {
            Ok(c) => c,
            Err(SpawnError::NotFound { program }) => {
                let message = format!("command not found: {program}");
                out.feed(format!("{message}\n").as_bytes())
                    .map_err(log_err)?;
                out.finish().map_err(log_err)?;
                outcome.exit_code = Some(127);
                outcome.message = Some(message);
                outcome.duration = start.elapsed();
                return Ok(outcome);
            }
            Err(e @ (SpawnError::PermissionDenied { .. } | SpawnError::MissingCwd { .. })) => {
                let message = e.to_string();
                out.feed(format!("{message}\n").as_bytes())
                    .map_err(log_err)?;
                out.finish().map_err(log_err)?;
                outcome.exit_code = Some(126);
                outcome.message = Some(message);
                outcome.duration = start.elapsed();
                return Ok(outcome);
            }
            Err(e @ SpawnError::Sandbox { .. }) => {
                let mut message = cache::chain(&e);
                message.push_str(
                    " (`ci-intel doctor` says what this host lacks and how to fix it; \
                     `sandbox = false` or --no-sandbox runs a step without the sandbox)",
                );
                outcome.exit_code = Some(ci_intel_sandbox::EXIT_SETUP_FAILED);
                return stop_before_start(&mut out, outcome, message, start, log_err);
            }
            Err(e) => return Err(ExecuteError::Spawn(e)),
        };
        outcome.sandboxed = action.sandbox.is_some();
        setup += spawn_start.elapsed();
        outcome.phases.push(Phase {
            name: "sandbox.setup",
            started_at: setup_start.0,
            duration: setup,
        });
        let exec_start = (SystemTime::now(), Instant::now());
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let proxy = match (child.take_proxy_listener(), allow) {
            (Some(listener), Some(allow)) => Some(
                EgressProxy::start_with_fault(
                    listener,
                    action.step.clone(),
                    allow,
                    events_tx,
                    match params {
                        Some(FaultParams::Net(n)) => Some(n.clone()),
                        _ => None,
                    },
                    injection.as_ref().and_then(|i| i.kill_switch.file.clone()),
                )
                .map_err(ExecuteError::Pipe)?,
            ),
            _ => None,
        };
        let mut reader =
            tokio::net::unix::pipe::Receiver::from_owned_fd(rx).map_err(ExecuteError::Pipe)?;

        let deadline = action.timeout.map(after);
        // `kill_job`'s moment, and `cpu_stress`'s workers.
        let mut chaos_kill_at = match params {
            Some(FaultParams::Kill { after: d }) => Some(after(*d)),
            _ => None,
        };
        let stress = match (params, outcome.chaos.as_mut()) {
            (Some(FaultParams::CpuStress { workers, period }), Some(effect)) => {
                effect.fire(
                    injection
                        .as_ref()
                        .map_or_else(String::new, Injection::describe),
                );
                // Never more than two workers a CPU of this machine, whatever the plan's
                // `cpus` says.
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let cap = u32::try_from(cpus * 2).unwrap_or(u32::MAX);
                Some(Stress::start((*workers).min(cap), *period))
            }
            _ => None,
        };
        // The highest cancel level already acted on, so each level is acted on once.
        let mut seen = CancelLevel::None;
        let mut stopping: Option<Status> = None;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut eof = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                biased;
                r = child.ended() => {
                    r.map_err(ExecuteError::Wait)?;
                    break;
                }
                level = cancel.raised(seen), if seen < CancelLevel::Immediate => {
                    seen = level;
                    if level == CancelLevel::Immediate {
                        stopping.get_or_insert(Status::Cancelled);
                        signal(&child, Signal::SIGKILL);
                        kill_at = None;
                    } else if stopping.is_none() {
                        // A step already being stopped (timed out) keeps its deadline.
                        stopping = Some(Status::Cancelled);
                        signal(&child, Signal::SIGTERM);
                        kill_at = Some(after(self.config.grace));
                    }
                }
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() && stopping.is_none() => {
                    stopping = Some(Status::TimedOut);
                    signal(&child, Signal::SIGTERM);
                    kill_at = Some(after(self.config.grace));
                }
                () = sleep_until(kill_at.unwrap_or_else(far_future)), if kill_at.is_some() => {
                    signal(&child, Signal::SIGKILL);
                    kill_at = None;
                }
                () = sleep_until(chaos_kill_at.unwrap_or_else(far_future)), if chaos_kill_at.is_some() && stopping.is_none() => {
                    chaos_kill_at = None;
                    let inj = injection.as_ref().expect("a kill moment comes from an injection");
                    if let Some(effect) = outcome.chaos.as_mut() {
                        match inj.kill_switch.engaged() {
                            Some(why) => effect.detail = format!("not fired: {why}"),
                            None => {
                                signal(&child, Signal::SIGKILL);
                                effect.fire(format!(
                                    "SIGKILL to the step's process group {} after it started",
                                    chaos::secs(spawn_start.elapsed())
                                ));
                            }
                        }
                        out.note(&format!("chaos: kill_job: {}", effect.detail)).map_err(log_err)?;
                    }
                }
                Some(ev) = events.recv(), if proxy.is_some() => {
                    out.note(&egress_line(&ev)).map_err(log_err)?;
                    outcome.egress.push(ev);
                }
                n = reader.read(&mut buf), if !eof => {
                    match n {
                        Ok(0) => eof = true,
                        Ok(n) => out.feed(&buf[..n]).map_err(log_err)?,
                        Err(e) => return Err(ExecuteError::Pipe(e)),
                    }
                }
            }
        }
        // Outputs are collected only from a sandbox that is gone: until pid 1 has exited,
        // a process the step left behind could still change them under the collection.
        let has_outputs = staging.as_ref().is_some_and(|s| !s.binds().is_empty());
        let ended_alone = if stopping.is_none() && !has_outputs {
            child.command_exit()
        } else {
            None
        };
        let exit = match ended_alone {
            // A sandboxed command that ended on its own, with nothing to collect: its
            // result is in. The kernel is tearing its sandbox down (killing what is left,
            // unmounting); the reap waits for that in the background, off the step's
            // critical path.
            Some(exit) => {
                tokio::spawn(async move {
                    let _ = child.exited().await;
                    if let Err(e) = child.reap() {
                        tracing::warn!("could not reap a finished sandbox: {e}");
                    }
                });
                exit
            }
            // The leader has exited: kill whatever it left in its group, then reap it.
            None => {
                child.exited().await.map_err(ExecuteError::Wait)?;
                child.reap().map_err(ExecuteError::Wait)?
            }
        };
        let drain_deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        while !eof {
            match tokio::time::timeout_at(drain_deadline, reader.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => eof = true,
                Ok(Ok(n)) => out.feed(&buf[..n]).map_err(log_err)?,
                Ok(Err(e)) => return Err(ExecuteError::Pipe(e)),
            }
        }
        if let Some(proxy) = proxy {
            proxy.shutdown().await;
            while let Ok(ev) = events.try_recv() {
                out.note(&egress_line(&ev)).map_err(log_err)?;
                outcome.egress.push(ev);
            }
        }
        if let Some(effect) = outcome.chaos.as_mut() {
            end_effect(
                effect,
                params,
                chaos_kill_at.is_some(),
                stress,
                &outcome.egress,
                exec_start.0,
                spawn_start.elapsed(),
            );
            if params.is_some() {
                out.note(&format!("chaos: {}: {}", effect.fault, effect.detail))
                    .map_err(log_err)?;
            }
        }
        outcome.phases.push(Phase {
            name: "execute",
            started_at: exec_start.0,
            duration: exec_start.1.elapsed(),
        });
        let mut collect_error = None;
        let clean = stopping.is_none() && exit.success();
        // Staged outputs are normalised before anything reads them: the comparison of a
        // determinism check, the collection, the cache.
        if let (Some(sb), Some(staging), true) = (&action.sandbox, &staging, clean) {
            match normalize_outputs(
                staging.staging_dir(),
                sb,
                self.config.fixed_env.source_date_epoch,
            ) {
                Ok(rewritten) => {
                    for (path, kind) in rewritten {
                        out.note(&format!("normalized {path} ({})", kind.name()))
                            .map_err(log_err)?;
                    }
                }
                Err(message) => {
                    out.note(&message).map_err(log_err)?;
                    collect_error = Some(message);
                }
            }
        }
        if let (Some(policy), Some(sb), Some(staging), true, None) = (
            action.verify,
            &action.sandbox,
            &staging,
            clean,
            &collect_error,
        ) {
            let check = self
                .check_determinism(&action, sb, staging.staging_dir(), &cancel, &mut out)
                .await?;
            if !check.reproducible && check.differing_files == 0 && policy == VerifyPolicy::Fail {
                collect_error = Some(format!(
                    "not reproducible: the determinism check's second run did not succeed (log: {})",
                    check
                        .report_path
                        .as_ref()
                        .map_or_else(|| "none".into(), |p| p.display().to_string())
                ));
            } else if !check.reproducible && policy == VerifyPolicy::Fail {
                collect_error = Some(format!(
                    "not reproducible: {} between two runs (drift report: {})",
                    check.summary(),
                    check
                        .report_path
                        .as_ref()
                        .map_or_else(|| "none".into(), |p| p.display().to_string())
                ));
            }
            outcome.determinism = Some(check);
            // Interrupted during the check: the step was cancelled, not found drifting.
            if cancel.level() > CancelLevel::None {
                stopping = Some(Status::Cancelled);
                collect_error = None;
            }
        }
        // A determinism check's rerun leaves its outputs staged, for the comparison.
        if let (Some(staging), true, None, None) = (
            &staging,
            clean && stopping.is_none(),
            &collect_error,
            &action.variations,
        ) {
            if let Err(e) = staging.collect() {
                let message = format!("collecting outputs: {e}");
                out.note(&message).map_err(log_err)?;
                collect_error = Some(message);
            }
        }
        out.finish().map_err(log_err)?;
        if let (Some(cache), Some(keyed), Some(sb), true) = (
            &self.cache,
            &keyed,
            &action.sandbox,
            stopping.is_none() && exit.success() && collect_error.is_none(),
        ) {
            let upload_start = (SystemTime::now(), Instant::now());
            self.store(
                cache,
                keyed,
                sb,
                &action,
                log_start,
                start.elapsed(),
                &mut out,
            )
            .map_err(log_err)?;
            outcome.phases.push(Phase {
                name: "cache.upload",
                started_at: upload_start.0,
                duration: upload_start.1.elapsed(),
            });
        }

        outcome.duration = start.elapsed();
        outcome.exit_code = exit.code;
        outcome.signal = exit.signal;
        outcome.cpu_time = exit.user_time + exit.system_time;
        outcome.max_rss_kib = exit.max_rss_kib;
        outcome.output_bytes = out.total;
        outcome.status = match stopping {
            Some(s) => s,
            None if exit.success() && collect_error.is_none() => Status::Succeeded,
            None => Status::Failed,
        };
        outcome.message = match outcome.status {
            Status::TimedOut => Some(format!(
                "timed out after {}",
                humanize(action.timeout.unwrap_or_default())
            )),
            Status::Cancelled => Some("cancelled".into()),
            Status::Failed if exit.code == Some(127) => {
                Some(command_not_found(&out.tail()).map_or_else(
                    || "exit code 127".into(),
                    |p| format!("command not found: {p}"),
                ))
            }
            Status::Failed if collect_error.is_some() => collect_error,
            Status::Failed
                if outcome
                    .chaos
                    .as_ref()
                    .is_some_and(|e| e.fired && e.fault == chaos::Fault::KillJob) =>
            {
                Some(format!(
                    "killed by chaos kill_job ({})",
                    outcome.chaos.as_ref().map_or("", |e| e.detail.as_str())
                ))
            }
            Status::Failed => Some(match (exit.code, exit.signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "failed".into(),
            }),
            Status::Succeeded => None,
        };
        Ok(outcome)
    }
}

/// Completes an injected fault's effect once the step's process is gone: when it stopped
/// acting, or why it never did. `kill_pending`: a kill's moment had not come yet.
fn end_effect(
    effect: &mut ChaosEffect,
    params: Option<&FaultParams>,
    kill_pending: bool,
    stress: Option<Stress>,
    egress: &[EgressEvent],
    exec_started: SystemTime,
    ran: Duration,
) {
    let now = SystemTime::now();
    match params {
        // The moment never came: the step ended first.
        Some(FaultParams::Kill { after }) if kill_pending => {
            effect.detail = format!(
                "not fired: the step ended after {}, before the moment ({})",
                chaos::secs(ran),
                chaos::secs(*after)
            );
        }
        Some(FaultParams::CpuStress { period, .. }) => {
            if let Some(s) = stress {
                let stressed = s.stop();
                effect.detail.push_str(&if stressed < *period {
                    format!(
                        "; stopped when the step ended after {}",
                        chaos::secs(stressed)
                    )
                } else {
                    format!("; the step ran on after {}", chaos::secs(stressed))
                });
            }
        }
        Some(FaultParams::Net(_)) => {
            let hit: Vec<&str> = egress.iter().filter_map(|e| e.fault.as_deref()).collect();
            if hit.is_empty() {
                effect.detail = "not fired: the step made no allowed egress connection".into();
            } else {
                effect.fired = true;
                effect.started_at = Some(exec_started);
                effect.detail = format!(
                    "{} on {} connection{}",
                    hit[0],
                    hit.len(),
                    if hit.len() == 1 { "" } else { "s" }
                );
            }
        }
        _ => {}
    }
    if effect.fired && effect.ended_at.is_none() {
        effect.ended_at = Some(now);
    }
}

/// Ends an attempt that never started: the reason in the log and in the outcome.
fn stop_before_start(
    out: &mut OutputProcessor<'_>,
    mut outcome: Outcome,
    message: String,
    start: Instant,
    log_err: impl Fn(std::io::Error) -> ExecuteError,
) -> Result<Outcome, ExecuteError> {
    out.note(&message).map_err(&log_err)?;
    out.finish().map_err(&log_err)?;
    outcome.message = Some(message);
    outcome.duration = start.elapsed();
    Ok(outcome)
}

/// The runtime secret sweep over what the step declares: its env and passed variables.
fn sweep_action(action: &Action) -> Vec<crate::Finding> {
    let passed: Vec<(String, String)> = action
        .pass_env
        .iter()
        .filter_map(|n| Some((n.clone(), std::env::var(n).ok()?)))
        .collect();
    crate::sweep(
        action
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(passed.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        &action.secrets,
    )
}

fn egress_line(ev: &EgressEvent) -> String {
    if ev.allowed {
        format!(
            "egress allowed: {}:{} ({} bytes up, {} down){}",
            ev.host,
            ev.port,
            ev.bytes_up,
            ev.bytes_down,
            ev.reason
                .as_ref()
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "egress_denied: {}:{} ({})",
            ev.host,
            ev.port,
            ev.reason.as_deref().unwrap_or("not on the allowlist")
        )
    }
}

/// Expands `~`/`~/x` (the runner's home) and `$NAME`/`${NAME}` at the start of a plan path;
/// a relative path is relative to `root`.
fn expand(path: &str, root: &Path) -> Result<PathBuf, String> {
    let var = |name: &str| {
        std::env::var_os(name).ok_or_else(|| format!("sandbox path `{path}`: ${name} is not set"))
    };
    if path == "~" || path.starts_with("~/") {
        return Ok(
            PathBuf::from(var("HOME")?).join(path.trim_start_matches('~').trim_start_matches('/'))
        );
    }
    if let Some(rest) = path.strip_prefix('$') {
        let (name, tail) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}').unwrap_or((r, "")),
            None => rest
                .split_once('/')
                .map_or((rest, ""), |(n, _)| (n, &rest[n.len()..])),
        };
        return Ok(PathBuf::from(var(name)?).join(tail.trim_start_matches('/')));
    }
    Ok(root.join(path))
}

/// The isolated policy, its output staging, the egress allowlist, and the visible input
/// paths.
type Isolated = (Policy, Option<Staging>, Option<Allowlist>, Vec<PathBuf>);

/// The environment of an attempt.
pub(crate) type Env = BTreeMap<String, OsString>;

/// The sandbox policy of a sandboxed attempt: what it sees, its network, its limits.
fn isolate(
    policy: Policy,
    action: &Action,
    sb: &ActionSandbox,
    disorder: Option<&Path>,
    out: &mut OutputProcessor<'_>,
    env: &mut Env,
) -> Result<Isolated, String> {
    let read = sb
        .read
        .iter()
        .map(|p| expand(p, &action.cwd))
        .collect::<Result<Vec<_>, _>>()?;
    let write = sb
        .write
        .iter()
        .map(|p| expand(p, &action.cwd))
        .collect::<Result<Vec<_>, _>>()?;
    // What the step gets whole (a build cache under the root) is not walked for inputs.
    let whole = Exclusions::new(&action.cwd, &[read.as_slice(), write.as_slice()].concat());
    let inputs = visible_inputs_excluding(&action.cwd, &sb.inputs, &[&sb.exclude, &whole])
        .map_err(|e| format!("finding inputs: {e}"))?;
    for link in &inputs.skipped_symlinks {
        let _ = out.note(&format!(
            "input {} is a symbolic link out of the workspace; it is not visible",
            link.display()
        ));
    }
    let staging = Staging::prepare(&action.cwd, &sb.staging, &sb.outputs)
        .map_err(|e| format!("preparing outputs: {e}"))?;
    let varied = action.variations.as_ref();
    // A determinism check's rerun may see the workspace elsewhere (`build_path`): every
    // path under the root is bound at the same place under the moved root.
    let moved = varied
        .filter(|v| v.build_path)
        .map(|_| moved_root(&action.cwd));
    let inside = |p: &Path| -> PathBuf {
        match (&moved, p.strip_prefix(&action.cwd)) {
            (Some(m), Ok(rel)) => m.join(rel),
            _ => p.to_path_buf(),
        }
    };
    let mut iso = Isolation::builder().limits(sb.limits);
    if varied.is_some_and(|v| v.hostname) {
        iso = iso.hostname(VERIFY_HOSTNAME);
    }
    // What the step reads of the workspace comes through disorderfs when the directory
    // order is varied.
    let source = |p: &Path| -> PathBuf {
        match (disorder, p.strip_prefix(&action.cwd)) {
            (Some(d), Ok(rel)) => d.join(rel),
            _ => p.to_path_buf(),
        }
    };
    for p in &inputs.paths {
        iso = iso.ro_at(source(p), inside(p));
    }
    for p in sb.needs_outputs.iter().filter(|p| p.exists()) {
        iso = iso.ro_at(source(p), inside(p));
    }
    for p in read {
        iso = iso.ro_at(&p, inside(&p));
    }
    for p in write {
        iso = iso.rw_at(&p, inside(&p));
    }
    for (source, target) in staging.binds() {
        iso = iso.rw_at(source, inside(target));
    }
    let (mode, allow) = match &sb.network {
        NetworkAccess::Deny => (NetworkMode::Deny, None),
        NetworkAccess::Loopback => (NetworkMode::Loopback, None),
        NetworkAccess::Allow(list) => (
            NetworkMode::Proxy,
            Some(Allowlist::parse(list).map_err(|e| format!("network allowlist: {e}"))?),
        ),
    };
    let isolation = iso.network(mode).build();
    // The private home, unless the plan asks for the host's by name.
    let declared =
        |name: &str| action.env.contains_key(name) || action.pass_env.iter().any(|n| n == name);
    let extra: Vec<(&str, String)> = isolation
        .env()
        .into_iter()
        .filter(|(name, _)| !matches!(*name, "HOME" | "USER" | "LOGNAME") || !declared(name))
        .collect();
    for (k, v) in &extra {
        env.insert((*k).to_string(), v.into());
    }
    let policy = extra.into_iter().fold(policy, |p, (k, v)| p.env(k, v));
    Ok((
        policy.isolate(isolation),
        Some(staging),
        allow,
        inputs.paths,
    ))
}

fn signal(child: &Child, sig: Signal) {
    if let Err(e) = child.signal_group(sig) {
        tracing::warn!("could not send {sig} to process group {}: {e}", child.pid());
    }
}

/// `now + d`, saturating far in the future instead of overflowing.
fn after(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now()
        .checked_add(d)
        .unwrap_or_else(far_future)
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// An executor that runs nothing and reports every action as succeeded at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct DryRun;

impl Execute for DryRun {
    async fn execute(&self, action: Action, _cancel: Cancel) -> Result<Outcome, ExecuteError> {
        Ok(Outcome::new(Status::Succeeded, action.log_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Program;
    use crate::output::Collect;

    fn action(dir: &Path, program: Program) -> Action {
        Action {
            step: "s".into(),
            program,
            cwd: dir.to_owned(),
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            pass_env: vec![],
            secrets: vec![],
            timeout: None,
            log_path: dir.join("logs/s.log"),
            home: dir.join("home/s"),
            attempt: 1,
            max_attempts: 1,
            secret_scan: SecretScan::Deny,
            sandbox: None,
            cache: false,
            tools: vec![],
            verify: None,
            verify_cached: false,
            variations: None,
            chaos: None,
        }
    }

    fn executor(sink: Arc<Collect>) -> ProcessExecutor {
        ProcessExecutor::new(
            ProcessExecutorConfig {
                grace: Duration::from_millis(200),
                ..Default::default()
            },
            sink,
            None,
        )
    }

    #[tokio::test]
    async fn success_streams_output_to_log_and_sink() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        let out = executor(sink.clone())
            .execute(
                action(
                    dir.path(),
                    Program::Shell("echo $GREETING; echo err >&2".into()),
                ),
                Cancel::never(),
            )
            .await
            .unwrap();
        assert_eq!(out.status, Status::Succeeded);
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(std::fs::read_to_string(&out.log_path).unwrap(), "hi\nerr\n");
        assert_eq!(*sink.0.lock().unwrap(), ["[s] hi", "[s] err"]);
        assert!(dir.path().join("home/s").is_dir());
    }

    #[tokio::test]
    async fn failure_is_data_not_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = executor(Arc::default())
            .execute(
                action(dir.path(), Program::Shell("exit 3".into())),
                Cancel::never(),
            )
            .await
            .unwrap();
        assert_eq!(out.status, Status::Failed);
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.message.as_deref(), Some("exit code 3"));
    }

    #[tokio::test]
    async fn missing_commands_exit_127_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(Arc::default());
        let argv = Program::Argv(vec!["ci-intel-no-such-tool".into()]);
        let out = exec
            .execute(action(dir.path(), argv), Cancel::never())
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(127));
        assert_eq!(
            out.message.as_deref(),
            Some("command not found: ci-intel-no-such-tool")
        );
        let shell = Program::Shell("ci-intel-no-such-tool --flag".into());
        let out = exec
            .execute(action(dir.path(), shell), Cancel::never())
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(127));
        assert_eq!(
            out.message.as_deref(),
            Some("command not found: ci-intel-no-such-tool")
        );
    }

    #[tokio::test]
    async fn timeout_terminates_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = action(dir.path(), Program::Shell("sleep 30".into()));
        a.timeout = Some(Duration::from_millis(100));
        let out = executor(Arc::default())
            .execute(a, Cancel::never())
            .await
            .unwrap();
        assert_eq!(out.status, Status::TimedOut);
        assert_eq!(out.signal, Some(libc::SIGTERM));
        assert_eq!(out.message.as_deref(), Some("timed out after 0.1s"));
    }

    #[tokio::test]
    async fn sigterm_ignored_means_sigkill_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = action(dir.path(), Program::Shell("trap '' TERM; sleep 30".into()));
        a.timeout = Some(Duration::from_millis(50));
        let out = executor(Arc::default())
            .execute(a, Cancel::never())
            .await
            .unwrap();
        assert_eq!(out.status, Status::TimedOut);
        assert_eq!(out.signal, Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn immediate_cancel_kills_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let src = crate::CancelSource::new();
        let exec = ProcessExecutor::new(
            ProcessExecutorConfig {
                grace: Duration::from_secs(3600),
                ..Default::default()
            },
            Arc::new(Collect::default()),
            None,
        );
        let a = action(
            dir.path(),
            Program::Shell("trap '' TERM; echo ready; sleep 30".into()),
        );
        let token = src.token();
        let run = tokio::spawn(async move { exec.execute(a, token).await });
        // Wait until the step is running (its log says so), then escalate.
        let log = dir.path().join("logs/s.log");
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
        {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(2));
        }
        src.cancel(CancelLevel::Graceful);
        src.cancel(CancelLevel::Immediate);
        let out = run.await.unwrap().unwrap();
        assert_eq!(out.status, Status::Cancelled);
        assert_eq!(out.signal, Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn secrets_are_passed_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: the variable name is unique to this test; no other thread reads it.
        unsafe { std::env::set_var("CI_INTEL_TEST_SECRET_X", "s3cr3t-value") };
        let sink = Arc::new(Collect::default());
        let mut a = action(
            dir.path(),
            Program::Shell("echo \"key=$CI_INTEL_TEST_SECRET_X\"".into()),
        );
        a.secrets = vec!["CI_INTEL_TEST_SECRET_X".into()];
        let out = executor(sink.clone())
            .execute(a, Cancel::never())
            .await
            .unwrap();
        assert_eq!(out.status, Status::Succeeded);
        assert_eq!(std::fs::read_to_string(&out.log_path).unwrap(), "key=***\n");
        assert_eq!(*sink.0.lock().unwrap(), ["[s] key=***"]);

        let mut a = action(dir.path(), Program::Shell("true".into()));
        a.secrets = vec!["CI_INTEL_TEST_SECRET_MISSING".into()];
        let out = executor(sink).execute(a, Cancel::never()).await.unwrap();
        assert_eq!(out.status, Status::Failed);
        assert_eq!(
            out.message.as_deref(),
            Some("secret CI_INTEL_TEST_SECRET_MISSING is not set in the environment")
        );
    }

    #[tokio::test]
    async fn attempts_append_to_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(Arc::default());
        let mut a = action(dir.path(), Program::Shell("echo run".into()));
        exec.execute(a.clone(), Cancel::never()).await.unwrap();
        a.attempt = 2;
        a.max_attempts = 2;
        exec.execute(a, Cancel::never()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("logs/s.log")).unwrap(),
            "run\n--- ci-intel: attempt 2 of 2 ---\nrun\n"
        );
    }
}
