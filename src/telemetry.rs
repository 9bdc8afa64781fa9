//! The evidence a run leaves: its record (the state directory's `runs.ndjson` and
//! `--telemetry`), the autopsy of its failures, JUnit XML, the GitHub step summary and
//! annotations, and its OpenTelemetry spans. The shapes are the insight crate's; this
//! module fills them from what the scheduler and executor observed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ci_intel_executor::{CacheEvent, Outcome};
use ci_intel_insight::autopsy::{Rules, StepContext};
use ci_intel_insight::origin::Origin;
use ci_intel_insight::rates::Rates;
use ci_intel_insight::record::{self as rec, RunRecord, Status};
use ci_intel_scheduler::history::RecordedPrediction;
use ci_intel_scheduler::{Plan, RunReport, StepResult, StepState};

/// The record file in the state directory.
pub(crate) const RUNS_FILE: &str = "runs.ndjson";

/// Bytes of a failed step's log the autopsy reads (its end).
const AUTOPSY_BYTES: u64 = 2 * 1024 * 1024;

/// What the record is made of besides the run's report.
pub(crate) struct Context<'a> {
    pub(crate) plan: &'a Plan,
    /// The plan path as the user gave it (for repro commands).
    pub(crate) plan_arg: &'a Path,
    pub(crate) run_id: String,
    pub(crate) started_at: SystemTime,
    pub(crate) exit_code: u8,
    pub(crate) runner_class: &'a str,
    /// HEAD of the plan's root, when the run already asked git.
    pub(crate) commit: Option<&'a str>,
    /// Each step's prediction, as recorded in the history.
    pub(crate) predictions: Vec<(String, RecordedPrediction)>,
    pub(crate) rates: Option<Rates>,
    pub(crate) no_sandbox: bool,
    pub(crate) traceparent: Option<String>,
    /// The run's chaos schedule, when it had one.
    pub(crate) chaos: Option<&'a ci_intel_scheduler::chaos::Chaos>,
}

/// A random version-4 UUID for a run.
pub(crate) fn new_run_id() -> String {
    let mut bytes = [0u8; 16];
    // A clock-and-pid fallback keeps ids distinct even where the kernel's source fails.
    if getrandom::fill(&mut bytes).is_err() {
        let now = unix_ms(SystemTime::now()).to_le_bytes();
        bytes[..8].copy_from_slice(&now);
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    rec::uuid_v4(bytes)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The record's word for a step's state.
fn status_of(state: &StepState) -> Status {
    match state {
        StepState::Succeeded | StepState::AllowedFailure => Status::Success,
        StepState::Failed | StepState::TimedOut => Status::Failed,
        StepState::Cancelled => Status::Canceled,
        StepState::Skipped(_) => Status::Skipped,
    }
}

/// How the run ended, in the record's words.
pub(crate) fn run_status(report: &RunReport) -> Status {
    if report.interrupted {
        Status::Canceled
    } else if report.success() {
        Status::Success
    } else {
        Status::Failed
    }
}

/// Whether a step's log is worth an autopsy.
fn failed(r: &StepResult) -> bool {
    matches!(
        r.state,
        StepState::Failed | StepState::TimedOut | StepState::AllowedFailure
    )
}

/// When the first attempt of `r` started (the last one's end less all attempts' time).
fn first_start(r: &StepResult, o: &Outcome) -> SystemTime {
    (o.started_at + o.duration)
        .checked_sub(r.duration)
        .unwrap_or(o.started_at)
}

/// The steps on the run's critical path: from the step that ended last, back through the
/// need of each that ended last.
fn critical_path(plan: &Plan, report: &RunReport) -> Vec<usize> {
    let end: Vec<Option<SystemTime>> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let r = report.results.iter().find(|r| r.index == i)?;
            let o = r.outcome.as_ref().filter(|_| r.attempts > 0)?;
            Some(o.started_at + o.duration)
        })
        .collect();
    let last = (0..plan.steps.len())
        .filter_map(|i| Some((end[i]?, i)))
        .max()
        .map(|(_, i)| i);
    let mut path = Vec::new();
    let mut at = last;
    while let Some(i) = at {
        path.push(i);
        at = plan.steps[i]
            .needs
            .iter()
            .filter_map(|&n| Some((end[n]?, n)))
            .max()
            .map(|(_, n)| n);
    }
    path
}

/// The trials of the faults that acted, each judged against what the plan's recovery
/// paths should achieve (docs/chaos.md#outcomes):
///
/// - `recovered`: the step succeeded in the end, and the fault did no lasting damage;
/// - `degraded`: it did not, but failed cleanly (its outcome or the autopsy names the
///   cause) where the plan left it no way to recover, or a later fault used up its retry;
/// - `failed`: it did not although the plan gave it a way (a retry left, or a fault that is
///   recovered within the attempt), it failed without a diagnosis, or a corrupted cache
///   entry was restored.
fn chaos_trials(
    chaos: &ci_intel_scheduler::chaos::Chaos,
    plan_arg: &str,
    report: &RunReport,
    root_causes: &[rec::RootCause],
) -> Vec<rec::ChaosTrial> {
    let mut trials = Vec::new();
    for r in &report.results {
        let fired: Vec<&ci_intel_scheduler::AttemptChaos> =
            r.chaos.iter().filter(|t| t.effect.fired).collect();
        let ended = r.outcome.as_ref().map(|o| o.started_at + o.duration);
        // What names the failure: the outcome's own words, unless they only give the exit
        // code, else the autopsy's first specific finding.
        let cause = r
            .outcome
            .as_ref()
            .and_then(|o| o.message.clone())
            .filter(|m| !m.is_empty() && !m.starts_with("exit code"))
            .or_else(|| {
                root_causes
                    .iter()
                    .find(|c| {
                        c.job.as_deref() == Some(r.id.as_str())
                            && c.rule.as_deref() != Some(ci_intel_insight::autopsy::GENERIC_RULE)
                    })
                    .map(|c| c.message.clone().unwrap_or_else(|| c.pattern.clone()))
            });
        let diagnosed = cause.is_some();
        for (k, t) in fired.iter().enumerate() {
            let later = fired.get(k + 1).map(|n| n.attempt);
            let succeeded = r.state == StepState::Succeeded;
            let (outcome, why) = if !t.effect.contained {
                (
                    "failed",
                    Some("a corrupted cache entry was restored".to_string()),
                )
            } else if succeeded {
                ("recovered", None)
            } else if r.state == StepState::Cancelled {
                (
                    "degraded",
                    Some("the run stopped before the step could recover".into()),
                )
            } else if let (true, Some(n), true) = (t.expect_recovery, later, diagnosed) {
                (
                    "degraded",
                    Some(format!("a fault in attempt {n} ended the retry too")),
                )
            } else if t.expect_recovery {
                (
                    "failed",
                    Some(format!(
                        "the step {} although its recovery path should have held",
                        r.state.label()
                    )),
                )
            } else if let Some(cause) = &cause {
                ("degraded", Some(format!("clean failure: {cause}")))
            } else {
                ("failed", Some("the failure names no cause".into()))
            };
            let mut detail = t.effect.detail.clone();
            if let Some(why) = why {
                detail.push_str("; ");
                detail.push_str(&why);
            }
            let started = t.effect.started_at;
            trials.push(rec::ChaosTrial {
                fault: t.injection.fault.name().to_string(),
                target: r.id.clone(),
                seed: i64::try_from(chaos.seed).unwrap_or(i64::MAX),
                rate: Some(t.injection.rate),
                started_at: started.map(|s| rec::rfc3339_ms(unix_ms(s))),
                ended_at: t.effect.ended_at.map(|s| rec::rfc3339_ms(unix_ms(s))),
                outcome: outcome.into(),
                retries: Some(r.attempts.saturating_sub(t.attempt)),
                attempt: Some(t.attempt),
                recovery_ms: match (succeeded, started, ended) {
                    (true, Some(s), Some(e)) => e.duration_since(s).ok().map(ms),
                    _ => None,
                },
                detail: Some(detail),
                expected: Some(
                    if t.expect_recovery {
                        "recovered"
                    } else {
                        "degraded"
                    }
                    .into(),
                ),
                recovery: Some(t.injection.fault.recovery().into()),
                repro: Some(format!(
                    "ci-intel run {} --chaos \"{}\" --step {}",
                    ci_intel_insight::autopsy::shell_quote(plan_arg),
                    chaos.spec,
                    ci_intel_insight::autopsy::shell_quote(&r.id)
                )),
            });
        }
    }
    trials
}

/// The run's record.
pub(crate) fn build(cx: &Context<'_>, report: &RunReport) -> RunRecord {
    let plan = cx.plan;
    let origin = Origin::detect(&plan.root, |k| std::env::var(k).ok(), cx.commit);
    let critical = critical_path(plan, report);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = rec::Machine {
        class: cx.runner_class.to_string(),
        cpu: cpus.to_string(),
        ram_gb: memory_gib(),
    };
    let secrets: Vec<String> = plan
        .steps
        .iter()
        .flat_map(|s| &s.secrets)
        .filter_map(|n| std::env::var(n).ok())
        .filter(|v| !v.is_empty())
        .collect();
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let plan_arg = cx.plan_arg.display().to_string();

    let mut jobs = Vec::new();
    let mut cache_events = Vec::new();
    let mut egress = Vec::new();
    let mut sandbox = Vec::new();
    let mut root_causes = Vec::new();
    let mut isolated_posture = None;
    let mut determinism = Vec::new();
    for r in &report.results {
        let step = &plan.steps[r.index];
        let o = r.outcome.as_ref().filter(|_| r.attempts > 0);
        let hit = o.is_some_and(|o| o.cached);
        jobs.push(rec::Job {
            id: r.id.clone(),
            name: r.id.clone(),
            status: status_of(&r.state),
            attempt: (r.attempts > 0).then_some(r.attempts),
            duration_ms: ms(r.duration),
            queue_ms: (r.attempts > 0).then(|| ms(r.queue)),
            cache: o.and_then(|o| {
                o.action_key.as_ref().map(|k| rec::JobCache {
                    hit,
                    key: Some(k.clone()),
                })
            }),
            machine: o.map(|_| machine.clone()),
            logs_uri: o.map(|o| file_uri(&o.log_path)),
            started_at: o.map(|o| rec::rfc3339_ms(unix_ms(first_start(r, o)))),
            state: Some(if hit { "cached" } else { r.state.label() }.to_string()),
            exit_code: o.and_then(|o| o.exit_code),
            signal: o.and_then(|o| o.signal),
            reason: match &r.state {
                StepState::Skipped(why) => Some(why.clone()),
                _ => o.and_then(|o| o.message.clone()),
            },
            cpu_seconds: o.map(|o| o.cpu_time.as_secs_f64()),
            max_rss_kib: o.map(|o| o.max_rss_kib).filter(|k| *k > 0),
            output_bytes: o.map(|o| o.output_bytes),
            needs: step
                .needs
                .iter()
                .map(|&n| plan.steps[n].id.clone())
                .collect(),
            critical: critical.contains(&r.index),
        });
        let Some(o) = o else { continue };
        for ev in &o.cache_events {
            let (result, namespace, reason) = match ev {
                CacheEvent::Hit { namespace } => ("hit", Some(namespace.clone()), None),
                CacheEvent::Miss => ("miss", None, None),
                CacheEvent::Quarantine { namespace, reason } => {
                    ("quarantine", Some(namespace.clone()), Some(reason.clone()))
                }
                CacheEvent::Uncacheable { reason } => ("uncacheable", None, Some(reason.clone())),
            };
            cache_events.push(rec::CacheEvent {
                job: r.id.clone(),
                result: result.into(),
                key: o.action_key.clone().filter(|_| result != "uncacheable"),
                namespace,
                reason,
            });
        }
        if let Some(d) = &o.determinism {
            determinism.push(rec::DeterminismVerdict {
                job: r.id.clone(),
                verdict: if d.reproducible {
                    "reproducible"
                } else {
                    "drift"
                }
                .into(),
                variations: d.variations.iter().map(|v| (*v).to_string()).collect(),
                differing_files: (!d.reproducible).then_some(d.differing_files as u64),
                cause: (!d.causes.is_empty()).then(|| d.causes.join(", ")),
                report_digest: d.report_digest.clone(),
                report_path: d.report_path.as_ref().map(|p| p.display().to_string()),
            });
        }
        egress.extend(o.egress.iter().map(|e| rec::EgressDecision {
            job: r.id.clone(),
            host: e.host.clone(),
            port: e.port,
            allowed: e.allowed,
            reason: e.reason.clone(),
            bytes_up: Some(e.bytes_up),
            bytes_down: Some(e.bytes_down),
        }));
        if !hit {
            let sandboxed = step.sandbox.enabled && !cx.no_sandbox;
            let posture = if sandboxed {
                isolated_posture
                    .get_or_insert_with(ci_intel_executor::Posture::isolated)
                    .clone()
            } else {
                ci_intel_executor::Posture::process()
            };
            sandbox.push(rec::SandboxPosture {
                job: r.id.clone(),
                sandboxed,
                layers: posture
                    .layers
                    .iter()
                    .map(|l| rec::Layer {
                        layer: l.layer.name().to_string(),
                        level: l.level.to_string().replace("not enforced", "not"),
                        detail: Some(l.detail.clone()),
                    })
                    .collect(),
            });
        }
        if failed(r) {
            let log = read_tail(&o.log_path, AUTOPSY_BYTES);
            let step_cx = StepContext {
                step: &r.id,
                plan: &plan_arg,
                exit_code: o.exit_code,
                signal: o.signal,
                timed_out: r.state == StepState::TimedOut,
                secrets: &secret_refs,
            };
            for f in Rules::builtin().classify(&log, &step_cx) {
                root_causes.push(rec::RootCause::of(&r.id, &f));
            }
        }
    }

    let prediction = cx
        .predictions
        .iter()
        .filter_map(|(id, p)| {
            let r = report.results.iter().find(|r| &r.id == id)?;
            Some(rec::Prediction {
                job: id.clone(),
                p50_ms: ms(p.p50),
                p80_ms: Some(ms(p.p80)),
                p90_ms: Some(ms(p.p90)),
                actual_ms: ms(r.duration),
                model: Some(p.model.clone()),
                cache_hit: Some(r.outcome.as_ref().is_some_and(|o| o.cached)),
            })
        })
        .collect();

    let ran = jobs.iter().filter(|j| j.attempt.is_some()).count();
    let flaky = jobs
        .iter()
        .filter(|j| j.status == Status::Success && j.attempt.unwrap_or(0) > 1)
        .count();
    let status = run_status(report);
    let wall_s = report.wall.as_secs_f64();
    let priced = cx
        .rates
        .as_ref()
        .map(|r| r.price(cx.runner_class, wall_s))
        .unwrap_or_default();
    let count = |s: Status| jobs.iter().filter(|j| j.status == s).count() as u64;
    let mut cache_keys: Vec<String> = jobs
        .iter()
        .filter_map(|j| j.cache.as_ref()?.key.clone())
        .collect();
    cache_keys.sort_unstable();
    cache_keys.dedup();
    RunRecord {
        schema: rec::SCHEMA_V1_3.into(),
        run_id: cx.run_id.clone(),
        repo: origin.repo,
        commit_sha: origin.commit_sha,
        branch: origin.branch,
        pr: origin.pr,
        started_at: rec::rfc3339_ms(unix_ms(cx.started_at)),
        ended_at: rec::rfc3339_ms(unix_ms(cx.started_at) + ms(report.wall)),
        status,
        exit_code: Some(cx.exit_code),
        queue_ms: Some(jobs.iter().filter_map(|j| j.queue_ms).sum()),
        artifact_bytes: None,
        runner_os: Some(
            match std::env::consts::OS {
                "macos" => "macos",
                "windows" => "windows",
                _ => "linux",
            }
            .into(),
        ),
        runner_type: origin.runner_type,
        carbon_g_co2e: priced.g_co2e,
        energy: priced.kwh.map(|kwh| rec::Energy { kwh }),
        cache_keys,
        flakiness_index: (ran > 0).then(|| flaky as f64 / ran as f64),
        tests: rec::Tests {
            total: jobs.len() as u64,
            failed: count(Status::Failed),
            skipped: count(Status::Skipped) + count(Status::Canceled),
            duration_ms: jobs.iter().map(|j| j.duration_ms).sum(),
            coverage: None,
            resilience: mutation_testing(plan, report),
        },
        chaos: cx
            .chaos
            .map(|c| chaos_trials(c, &plan_arg, report, &root_causes))
            .unwrap_or_default(),
        jobs,
        autopsy: (!root_causes.is_empty()).then_some(rec::Autopsy { root_causes }),
        cost: rec::Cost {
            usd: priced.usd,
            cpu_seconds: Some(cpu_seconds()),
            gpu_seconds: None,
            runner_class: Some(cx.runner_class.to_string()),
            usd_per_minute: priced.usd_per_minute,
            wall_minutes: Some(wall_s / 60.0),
        },
        plan: Some(plan.name.clone()),
        runner_class: Some(cx.runner_class.to_string()),
        wall_ms: Some(ms(report.wall)),
        traceparent: cx.traceparent.clone(),
        cache_events,
        egress,
        sandbox,
        determinism,
        prediction,
        other: serde_json::Map::new(),
    }
}

/// `tests.resilience` from the reports of the steps that declare one (`mutation_report`)
/// and produced it (a step restored from the cache restored it too).
fn mutation_testing(plan: &Plan, report: &RunReport) -> Option<rec::Resilience> {
    let mut total: Option<rec::Resilience> = None;
    for r in report.results.iter().filter(|r| r.attempts > 0) {
        let Some(rel) = &plan.steps[r.index].mutation_report else {
            continue;
        };
        let path = plan.root.join(rel);
        let read = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                rec::Resilience::from_report(&t).map_err(|e| ci_intel_cache::error_chain(&e))
            });
        match read {
            Ok(m) => total = Some(total.map_or_else(|| m.clone(), |t| t.merge(&m))),
            Err(e) => tracing::warn!("{}: mutation report {} not read: {e}", r.id, path.display()),
        }
    }
    total
}

/// CPU time of this process and every child it reaped (sandboxes count their steps').
fn cpu_seconds() -> f64 {
    let of = |who| {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid `who` and a valid pointer.
        if unsafe { libc::getrusage(who, &mut u) } != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

fn memory_gib() -> f64 {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    (kib as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

/// A `file://` URI of an absolute path, percent-encoding what a URI cannot carry.
pub(crate) fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut s = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The last `limit` bytes of a file, as text.
pub(crate) fn read_tail(path: &Path, limit: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(limit)));
    let mut buf = Vec::new();
    let _ = f.take(limit).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Appends one line to `path` in a single write (records from concurrent runs never
/// interleave), creating it and its directory.
pub(crate) fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    f.write_all(&buf)
}

/// Where the outputs go.
pub(crate) struct Outputs<'a> {
    pub(crate) state_dir: &'a Path,
    pub(crate) telemetry: Option<&'a Path>,
    pub(crate) v1_2: bool,
    pub(crate) junit: Option<&'a Path>,
}

/// Writes the record and what is made from it; each failure is a warning, never the
/// run's.
pub(crate) fn write(record: &RunRecord, report: &RunReport, out: &Outputs<'_>) {
    let line = record.to_line();
    let runs = out.state_dir.join(RUNS_FILE);
    if let Err(e) = append_line(&runs, &line) {
        tracing::warn!("run record not written to {}: {e}", runs.display());
    }
    if let Some(path) = out.telemetry {
        let line = if out.v1_2 {
            match record.to_v1_2() {
                Ok(v) => Some(v.to_string()),
                Err(e) => {
                    tracing::warn!(
                        "no pipeline_run.v1.2 record written to {}: {e}; `--telemetry-schema v1.3` records this run",
                        path.display()
                    );
                    None
                }
            }
        } else {
            Some(line)
        };
        if let Some(line) = line {
            if let Err(e) = append_line(path, &line) {
                tracing::warn!("run record not written to {}: {e}", path.display());
            }
        }
    }
    if let Some(path) = out.junit {
        let logs: Vec<(String, PathBuf)> = report
            .results
            .iter()
            .filter_map(|r| Some((r.id.clone(), r.outcome.as_ref()?.log_path.clone())))
            .collect();
        let xml = ci_intel_insight::junit::render(record, |id| {
            let (_, p) = logs.iter().find(|(j, _)| j == id)?;
            Some(read_tail(p, ci_intel_insight::junit::LOG_LIMIT as u64))
        });
        if let Err(e) = std::fs::write(path, xml) {
            tracing::warn!("JUnit report not written to {}: {e}", path.display());
        }
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        let md = ci_intel_insight::github::summary(record);
        let path = PathBuf::from(path);
        if let Err(e) = append_line(&path, &md) {
            tracing::warn!("step summary not written to {}: {e}", path.display());
        }
    }
}

/// Whether output is for GitHub Actions' log (workflow commands are understood).
pub(crate) fn github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_encode_what_uris_cannot_carry() {
        assert_eq!(
            file_uri(Path::new("/tmp/a b/log#1.log")),
            "file:///tmp/a%20b/log%231.log"
        );
    }

    #[test]
    fn run_ids_are_distinct_v4_uuids() {
        let a = new_run_id();
        assert_ne!(a, new_run_id());
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    /// One step's result with the given faults (attempt, fired, contained, expected
    /// recovery), its final state and message.
    fn step(
        id: &str,
        state: StepState,
        message: Option<&str>,
        attempts: u32,
        faults: &[(u32, bool, bool, bool)],
    ) -> StepResult {
        use ci_intel_executor::chaos::{ChaosEffect, Fault, FaultParams, Injection, KillSwitch};
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut outcome = Outcome::new(
            match state {
                StepState::Succeeded => ci_intel_executor::Status::Succeeded,
                StepState::Cancelled => ci_intel_executor::Status::Cancelled,
                _ => ci_intel_executor::Status::Failed,
            },
            "/nonexistent/log".into(),
        );
        outcome.started_at = t0 + Duration::from_secs(10);
        outcome.duration = Duration::from_secs(2);
        outcome.message = message.map(str::to_string);
        StepResult {
            index: 0,
            id: id.into(),
            state,
            attempts,
            duration: Duration::from_secs(12),
            queue: Duration::ZERO,
            outcome: Some(outcome),
            chaos: faults
                .iter()
                .map(
                    |&(attempt, fired, contained, expect)| ci_intel_scheduler::AttemptChaos {
                        attempt,
                        injection: Injection {
                            fault: Fault::KillJob,
                            rate: 0.5,
                            params: FaultParams::Kill {
                                after: Duration::from_secs(1),
                            },
                            kill_switch: KillSwitch::default(),
                            decision: String::new(),
                        },
                        expect_recovery: expect,
                        effect: ChaosEffect {
                            fault: Fault::KillJob,
                            fired,
                            started_at: Some(t0 + Duration::from_secs(1)),
                            ended_at: Some(t0 + Duration::from_secs(2)),
                            detail: "SIGKILL".into(),
                            contained,
                        },
                        attempt_status: ci_intel_executor::Status::Failed,
                    },
                )
                .collect(),
        }
    }

    #[test]
    fn trials_are_judged_against_the_recovery_paths_the_plan_gives() {
        let plan = ci_intel_scheduler::parse_plan(
            Path::new("plan.toml"),
            "version = 1\n[steps.a]\nrun = \"true\"\n",
        )
        .unwrap();
        let spec: ci_intel_scheduler::chaos::ChaosSpec = "seed=7,kill_job=0.5".parse().unwrap();
        let chaos =
            ci_intel_scheduler::chaos::Chaos::new(&spec, &plan, vec![], true, false, 7).unwrap();
        let report = RunReport {
            results: vec![
                step(
                    "ok",
                    StepState::Succeeded,
                    None,
                    2,
                    &[(1, true, true, true)],
                ),
                step(
                    "served",
                    StepState::Succeeded,
                    None,
                    1,
                    &[(1, true, false, true)],
                ),
                step(
                    "stopped",
                    StepState::Cancelled,
                    Some("cancelled"),
                    1,
                    &[(1, true, true, true)],
                ),
                step(
                    "twice",
                    StepState::Failed,
                    Some("killed by chaos kill_job (SIGKILL)"),
                    2,
                    &[(1, true, true, true), (2, true, true, false)],
                ),
                step(
                    "unheld",
                    StepState::Failed,
                    Some("exit code 3"),
                    2,
                    &[(1, true, true, true)],
                ),
                step(
                    "clean",
                    StepState::TimedOut,
                    Some("timed out after 1s"),
                    1,
                    &[(1, true, true, false)],
                ),
                step(
                    "mute",
                    StepState::Failed,
                    Some("exit code 1"),
                    1,
                    &[(1, true, true, false)],
                ),
                step(
                    "missed",
                    StepState::Succeeded,
                    None,
                    1,
                    &[(1, false, true, true)],
                ),
            ],
            wall: Duration::from_secs(20),
            interrupted: false,
        };
        let trials = chaos_trials(&chaos, "plan.toml", &report, &[]);
        let got: Vec<(&str, u32, &str)> = trials
            .iter()
            .map(|t| (t.target.as_str(), t.attempt.unwrap(), t.outcome.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("ok", 1, "recovered"),
                ("served", 1, "failed"),
                ("stopped", 1, "degraded"),
                ("twice", 1, "degraded"),
                ("twice", 2, "degraded"),
                ("unheld", 1, "failed"),
                ("clean", 1, "degraded"),
                ("mute", 1, "failed"),
            ],
            "a fault that did not act is no trial"
        );
        // From the fault to the end of the step's last attempt; retries after the faulted one.
        assert_eq!(trials[0].recovery_ms, Some(11_000));
        assert_eq!(trials[0].retries, Some(1));
        assert_eq!(trials[0].rate, Some(0.5));
        assert_eq!(trials[0].expected.as_deref(), Some("recovered"));
        assert_eq!(
            trials[0].repro.as_deref(),
            Some("ci-intel run plan.toml --chaos \"seed=7,kill_job=0.5\" --step ok")
        );
        assert!(
            trials[1]
                .detail
                .as_deref()
                .unwrap()
                .contains("a corrupted cache entry was restored")
        );
        assert!(
            trials[5]
                .detail
                .as_deref()
                .unwrap()
                .contains("recovery path should have held")
        );
        // The autopsy can name the cause where the outcome's message does not.
        let finding = rec::RootCause {
            job: Some("mute".into()),
            rule: Some("disk.full".into()),
            tool: None,
            pattern: "No space left on device".into(),
            file: None,
            line: None,
            message: Some("No space left on device".into()),
            suggestion: String::new(),
            severity: None,
            docs_uri: None,
            repro: None,
        };
        let trials = chaos_trials(&chaos, "plan.toml", &report, &[finding]);
        let mute = trials.iter().find(|t| t.target == "mute").unwrap();
        assert_eq!(mute.outcome, "degraded");
        assert!(
            mute.detail
                .as_deref()
                .unwrap()
                .contains("No space left on device")
        );
    }
}
