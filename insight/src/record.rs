//! The run record: one JSON object per run, schema `pipeline_run.v1.3` (the project's
//! `schema/pipeline_run.v1.3.json`), and its downgrade to the platform's v1.2.
//!
//! Every field is observed, never invented: what a run does not know is absent, not
//! zero. docs/telemetry.md is the field reference.

use serde::{Deserialize, Serialize};

use crate::autopsy::Finding;

/// The schema name this crate writes.
pub const SCHEMA_V1_3: &str = "pipeline_run.v1.3";
/// The platform's schema name that [`RunRecord::to_v1_2`] targets.
pub const SCHEMA_V1_2: &str = "pipeline_run.v1.2";
/// The JSON Schema of [`SCHEMA_V1_3`], as shipped in `schema/`.
pub const SCHEMA_V1_3_JSON: &str = include_str!("../../schema/pipeline_run.v1.3.json");

/// How a run or a job ended, in the record's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything it ran succeeded (allowed failures included).
    Success,
    /// Something failed or timed out.
    Failed,
    /// Interrupted, or stopped because another step failed.
    Canceled,
    /// Not run (a need failed, or the selection left it out).
    Skipped,
}

impl Status {
    /// The record's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Skipped => "skipped",
        }
    }
}

/// One run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`SCHEMA_V1_3`].
    pub schema: String,
    /// A random (version 4) UUID.
    pub run_id: String,
    /// `owner/name`, from the CI environment or git's `origin` remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The commit the plan's root was at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// The branch (the pull request's head branch in a pull request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The pull request's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<u64>,
    /// RFC 3339, UTC, milliseconds.
    pub started_at: String,
    /// RFC 3339, UTC, milliseconds.
    pub ended_at: String,
    /// How the run ended.
    pub status: Status,
    /// The process's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    /// Time steps spent ready but waiting for a slot, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<u64>,
    /// Bytes of declared outputs the run produced or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_bytes: Option<u64>,
    /// `linux`, `macos` or `windows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_os: Option<String>,
    /// `hosted` or `self-hosted`, when the CI environment says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_type: Option<String>,
    /// Grams of CO2e, from a configured rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon_g_co2e: Option<f64>,
    /// Energy, from a configured rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<Energy>,
    /// The action keys of the run's cacheable jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_keys: Vec<String>,
    /// Share of this run's jobs that failed and then passed on a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flakiness_index: Option<f64>,
    /// One per selected step.
    pub jobs: Vec<Job>,
    /// Steps counted as test cases (as in the JUnit file), and mutation testing when a
    /// step produced it.
    pub tests: Tests,
    /// Chaos trials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chaos: Vec<ChaosTrial>,
    /// What the failed steps' logs say went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autopsy: Option<Autopsy>,
    /// CPU time and, with a configured rate, money.
    pub cost: Cost,
    /// The plan's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The machine's runner class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_class: Option<String>,
    /// Wall-clock time of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
    /// The W3C trace context of the run's span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// One per cacheable job: hit, miss, quarantine, or why it was not cacheable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_events: Vec<CacheEvent>,
    /// Every egress decision the proxy made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressDecision>,
    /// What isolation each job ran under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox: Vec<SandboxPosture>,
    /// Determinism verdicts of checked jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub determinism: Vec<DeterminismVerdict>,
    /// Predicted against actual duration, per job that ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prediction: Vec<Prediction>,
    /// v1.2 fields this executor does not produce (deployments, canaries, provenance),
    /// kept when a record is read and written again.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A job: one step of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The step id.
    pub id: String,
    /// The step's display name (its id).
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// Attempts made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Wall-clock time of all attempts.
    pub duration_ms: u64,
    /// Ready but waiting for a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<u64>,
    /// Whether the cache served it, and its action key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<JobCache>,
    /// The machine it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    /// The log, as a `file://` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_uri: Option<String>,
    /// When its first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The executor's finer state (`succeeded`, `cached`, `timed out`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The last attempt's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// A one-line explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// User plus system CPU time of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Peak resident set of its largest process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rss_kib: Option<u64>,
    /// Bytes of output it printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// The steps it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Whether it is on the run's critical path (the chain of needs that ended last).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
}

/// A job's cache use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCache {
    /// Restored from the cache.
    pub hit: bool,
    /// The action key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The machine a job ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Runner class.
    pub class: String,
    /// CPUs available.
    pub cpu: String,
    /// Memory.
    pub ram_gb: f64,
}

/// Energy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    /// Kilowatt-hours.
    pub kwh: f64,
}

/// Steps as test cases, and mutation testing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tests {
    /// Selected steps.
    pub total: u64,
    /// Failed or timed out.
    pub failed: u64,
    /// Skipped.
    #[serde(default)]
    pub skipped: u64,
    /// All jobs' durations, summed.
    pub duration_ms: u64,
    /// Coverage, when a producer recorded it (ci-intel does not measure coverage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    /// Mutation testing, only when a step produced a report of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resilience: Option<Resilience>,
}

/// Test coverage, fractions of 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines_pct: Option<f64>,
    /// Branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches_pct: Option<f64>,
    /// Statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statements_pct: Option<f64>,
}

/// A mutation-testing summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resilience {
    /// Mutants generated.
    pub mutants_total: u64,
    /// Mutants the tests caught.
    pub killed: u64,
    /// Mutants that cannot be caught (equivalent or unviable).
    pub equiv: u64,
    /// Mutants whose tests timed out.
    pub timeout: u64,
    /// (killed + timeout) / (total - equiv).
    pub score: f64,
    /// The score's change against the main branch, when a producer recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_vs_main: Option<f64>,
    /// Whether equivalent mutants were left out of the score, when a producer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalent_mutants_dropped: Option<bool>,
}

/// Why a mutation-testing report cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError {
    /// Not JSON.
    #[error("not a JSON document")]
    Json(#[source] serde_json::Error),
    /// Neither cargo-mutants' `outcomes.json` nor the record's own shape.
    #[error(
        "not a mutation-testing report: expected cargo-mutants' outcomes.json (`total_mutants`, `caught`, `missed`, `timeout`, `unviable`) or `mutants_total`, `killed`, `equiv`, `timeout`"
    )]
    Shape,
}

impl Resilience {
    /// Reads a mutation-testing summary: cargo-mutants' `mutants.out/outcomes.json`, or
    /// a JSON object with this record's own field names.
    ///
    /// cargo-mutants' unviable mutants (they do not build) count as `equiv`: no test can
    /// catch them. The score is detected ÷ (total − equiv), where detected is killed plus
    /// timed out (a mutant that hangs the tests was noticed), as Stryker counts it.
    pub fn from_report(text: &str) -> Result<Resilience, ResilienceError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(ResilienceError::Json)?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let (total, killed, equiv, timeout) = match (
            n("total_mutants"),
            n("caught"),
            n("unviable"),
            n("timeout"),
            n("missed"),
        ) {
            (Some(t), Some(c), Some(u), Some(to), Some(_)) => (t, c, u, to),
            _ => match (n("mutants_total"), n("killed"), n("equiv"), n("timeout")) {
                (Some(t), Some(k), Some(e), Some(to)) => (t, k, e, to),
                _ => return Err(ResilienceError::Shape),
            },
        };
        if killed + equiv + timeout > total {
            return Err(ResilienceError::Shape);
        }
        Ok(Resilience::of(total, killed, equiv, timeout))
    }

    /// A summary from its counts, with its score.
    pub fn of(mutants_total: u64, killed: u64, equiv: u64, timeout: u64) -> Resilience {
        let viable = mutants_total.saturating_sub(equiv);
        Resilience {
            mutants_total,
            killed,
            equiv,
            timeout,
            score: if viable == 0 {
                1.0
            } else {
                ((killed + timeout) as f64 / viable as f64).min(1.0)
            },
            delta_vs_main: None,
            equivalent_mutants_dropped: None,
        }
    }

    /// Two steps' summaries as one.
    pub fn merge(&self, other: &Resilience) -> Resilience {
        Resilience::of(
            self.mutants_total + other.mutants_total,
            self.killed + other.killed,
            self.equiv + other.equiv,
            self.timeout + other.timeout,
        )
    }
}

/// A chaos trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChaosTrial {
    /// `kill_job`, `delay_net`, …
    pub fault: String,
    /// The job it was injected into.
    pub target: String,
    /// The campaign's seed.
    pub seed: i64,
    /// The injection rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// When the fault started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// `recovered`, `degraded` or `failed`.
    pub outcome: String,
    /// Retries it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The attempt it was injected into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// From the fault to the job's success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<u64>,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the plan's recovery paths should achieve for this fault on this step:
    /// `recovered` or `degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The recovery path the fault exercises (`retry with backoff`, `quarantine and
    /// re-execution`, `proxy retry`, `timeout, then retry`, `clean failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<String>,
    /// The command that replays the trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repro: Option<String>,
}

/// The autopsy of the run's failed steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Autopsy {
    /// Findings, the most useful first within each job.
    pub root_causes: Vec<RootCause>,
}

/// One autopsy finding, in the record's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    /// The job whose log it is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The rule that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The tool that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// What matched.
    pub pattern: String,
    /// Where, when the log says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line, when the log says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The matched text, secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What to do about it.
    pub suggestion: String,
    /// `info`, `warn` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Where to read more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_uri: Option<String>,
    /// The command that reruns the job alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repro: Option<String>,
}

impl RootCause {
    /// A finding of `job`'s log.
    pub fn of(job: &str, f: &Finding) -> RootCause {
        RootCause {
            job: Some(job.to_string()),
            rule: Some(f.rule.clone()),
            tool: Some(f.tool.clone()),
            pattern: f.pattern.clone(),
            file: f.file.clone(),
            line: f.line,
            message: Some(f.message.clone()),
            suggestion: f.suggestion.clone(),
            severity: Some(f.severity.as_str().to_string()),
            docs_uri: Some(f.docs_uri.clone()),
            repro: Some(f.repro.clone()),
        }
    }
}

/// CPU time and money.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Dollars, from the runner class's configured rate and the run's wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// CPU time of every process the run started (rusage of reaped children) and of the
    /// orchestrator itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// GPU time, when a producer recorded it (ci-intel does not measure it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_seconds: Option<f64>,
    /// The runner class whose rate priced the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_class: Option<String>,
    /// That rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_minute: Option<f64>,
    /// Billed minutes: the run's wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_minutes: Option<f64>,
}

/// A job's cache lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEvent {
    /// The job.
    pub job: String,
    /// `hit`, `miss`, `quarantine` or `uncacheable`.
    pub result: String,
    /// The action key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The namespace a hit came from or a quarantined entry was in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Why (quarantine, uncacheable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An egress decision of the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressDecision {
    /// The job.
    pub job: String,
    /// The host asked for.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Allowed or denied.
    pub allowed: bool,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    /// Bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_down: Option<u64>,
}

/// The isolation a job ran under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPosture {
    /// The job.
    pub job: String,
    /// Whether it ran in the sandbox at all.
    pub sandboxed: bool,
    /// Each layer and how fully it was enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
}

/// One isolation layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Its name.
    pub layer: String,
    /// `fully`, `partially` or `not`.
    pub level: String,
    /// What was enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A determinism check of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeterminismVerdict {
    /// The job.
    pub job: String,
    /// `reproducible`, `drift` or `not_checked`.
    pub verdict: String,
    /// The variations applied to the second run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variations: Vec<String>,
    /// Files that differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differing_files: Option<u64>,
    /// The variation found to cause the drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// BLAKE3 of the drift report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_digest: Option<String>,
    /// The drift report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_path: Option<String>,
}

/// Predicted against actual, for one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The job.
    pub job: String,
    /// Median prediction.
    pub p50_ms: u64,
    /// 80th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p80_ms: Option<u64>,
    /// 90th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_ms: Option<u64>,
    /// What it took.
    pub actual_ms: u64,
    /// The model layer that served the prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether the job was a cache hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<bool>,
}

/// Why a record cannot be written as v1.2.
#[derive(Debug, thiserror::Error)]
#[error("the run lacks what pipeline_run.v1.2 requires: {}", missing.join("; "))]
pub struct DowngradeError {
    /// Each missing piece, with why.
    pub missing: Vec<String>,
}

impl RunRecord {
    /// The record as one NDJSON line (no trailing newline).
    pub fn to_line(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The record in the platform's v1.2 shape: the v1.3-only sections and fields
    /// dropped. Fails, naming each, when the run lacks a field v1.2 requires (a run
    /// outside a git checkout has no commit; a run without a mutation-testing step has
    /// no `tests.resilience`).
    pub fn to_v1_2(&self) -> Result<serde_json::Value, DowngradeError> {
        let mut missing = Vec::new();
        if self.repo.is_none() {
            missing.push(
                "repo: neither GITHUB_REPOSITORY nor git's `origin` remote names an owner/name"
                    .to_string(),
            );
        }
        if self.commit_sha.is_none() {
            missing.push("commit_sha: the plan's root is not in a git checkout".to_string());
        }
        if self.branch.is_none() {
            missing.push("branch: HEAD is detached and the CI environment names none".to_string());
        }
        if self.tests.resilience.is_none() {
            missing.push(
                "tests.resilience: no step produced a mutation-testing report (`mutation_report` in the plan)"
                    .to_string(),
            );
        }
        if !missing.is_empty() {
            return Err(DowngradeError { missing });
        }
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let Some(obj) = v.as_object_mut() else {
            return Err(DowngradeError {
                missing: vec!["the record is not an object".into()],
            });
        };
        obj.insert("schema".into(), SCHEMA_V1_2.into());
        for k in [
            "exit_code",
            "plan",
            "runner_class",
            "wall_ms",
            "traceparent",
            "cache_events",
            "egress",
            "sandbox",
            "determinism",
            "prediction",
            "canary",
        ] {
            obj.remove(k);
        }
        let keep = |o: &mut serde_json::Value, fields: &[&str]| {
            if let Some(m) = o.as_object_mut() {
                m.retain(|k, _| fields.contains(&k.as_str()));
            }
        };
        for item in array_mut(obj, "jobs") {
            keep(
                item,
                &[
                    "id",
                    "name",
                    "status",
                    "attempt",
                    "duration_ms",
                    "queue_ms",
                    "cache",
                    "machine",
                    "matrix",
                    "logs_uri",
                ],
            );
        }
        for item in array_mut(obj, "chaos") {
            keep(
                item,
                &[
                    "fault",
                    "target",
                    "seed",
                    "rate",
                    "started_at",
                    "ended_at",
                    "outcome",
                    "retries",
                ],
            );
        }
        if let Some(rc) = obj
            .get_mut("autopsy")
            .and_then(|a| a.get_mut("root_causes"))
            .and_then(|r| r.as_array_mut())
        {
            for item in rc {
                keep(
                    item,
                    &[
                        "tool",
                        "pattern",
                        "file",
                        "line",
                        "message",
                        "suggestion",
                        "severity",
                        "docs_uri",
                    ],
                );
            }
        }
        if let Some(cost) = obj.get_mut("cost") {
            keep(cost, &["usd", "cpu_seconds", "gpu_seconds"]);
        }
        Ok(v)
    }
}

/// The items of an array field, or none.
fn array_mut<'a>(
    obj: &'a mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut serde_json::Value> {
    obj.get_mut(key)
        .and_then(|v| v.as_array_mut())
        .into_iter()
        .flatten()
}

/// A random version-4 UUID.
///
/// Sixteen bytes from the caller's random source; a dependency for one format string
/// would not pay for itself.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Milliseconds since the epoch of an RFC 3339 time (any offset, any fraction), as the
/// records write them; `None` when it is not one.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    crate::html::stats::parse_rfc3339_ms(s).and_then(|ms| u64::try_from(ms).ok())
}

/// RFC 3339 in UTC with milliseconds, from milliseconds since the Unix epoch.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant() {
        let u = uuid_v4([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = uuid_v4([0; 16]);
        assert_eq!(u, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_corrected_example_reads_back_unchanged() {
        let text = include_str!("../../schema/pipeline_run.v1.3.example.json");
        let want: serde_json::Value = serde_json::from_str(text).unwrap();
        let record: RunRecord = serde_json::from_value(want.clone()).unwrap();
        assert_eq!(record.schema, SCHEMA_V1_3);
        assert!(record.other.contains_key("canary"), "canary is kept");
        let got = serde_json::to_value(&record).unwrap();
        assert!(same(&got, &want), "{got}\n{want}");
    }

    /// Equal as JSON values, numbers compared by value (`420` is `420.0`).
    fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (a, b) {
            (V::Number(x), V::Number(y)) => x.as_f64() == y.as_f64(),
            (V::Array(x), V::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (V::Object(x), V::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    #[test]
    fn mutation_reports() {
        let cargo_mutants = r#"{"outcomes": [], "total_mutants": 14, "missed": 2, "caught": 8,
            "timeout": 1, "unviable": 3, "success": 0, "cargo_mutants_version": "25.0.0"}"#;
        let r = Resilience::from_report(cargo_mutants).unwrap();
        assert_eq!(
            (r.mutants_total, r.killed, r.equiv, r.timeout),
            (14, 8, 3, 1)
        );
        assert!((r.score - 9.0 / 11.0).abs() < 1e-12);
        let own = r#"{"mutants_total": 10, "killed": 10, "equiv": 0, "timeout": 0}"#;
        assert_eq!(Resilience::from_report(own).unwrap().score, 1.0);
        let both = r.merge(&Resilience::from_report(own).unwrap());
        assert_eq!(both.mutants_total, 24);
        assert!(matches!(
            Resilience::from_report(r#"{"total_mutants": 1}"#),
            Err(ResilienceError::Shape)
        ));
        assert!(matches!(
            Resilience::from_report(
                r#"{"mutants_total": 1, "killed": 5, "equiv": 0, "timeout": 0}"#
            ),
            Err(ResilienceError::Shape)
        ));
        assert!(matches!(
            Resilience::from_report("{"),
            Err(ResilienceError::Json(_))
        ));
    }

    /// A chaos trial with every field set.
    fn full_trial() -> ChaosTrial {
        ChaosTrial {
            fault: "kill_job".into(),
            target: "test".into(),
            seed: 43,
            rate: Some(0.3),
            started_at: Some("2026-05-01T02:00:01.000Z".into()),
            ended_at: Some("2026-05-01T02:00:03.000Z".into()),
            outcome: "recovered".into(),
            retries: Some(1),
            attempt: Some(1),
            recovery_ms: Some(2_000),
            detail: Some("SIGKILL at 1.2s; attempt 2 succeeded".into()),
            expected: Some("recovered".into()),
            recovery: Some("retry with backoff".into()),
            repro: Some(
                "ci-intel run plans/ci.toml --chaos \"seed=43,rate=0.3,faults=kill_job\" --step test"
                    .into(),
            ),
        }
    }

    #[test]
    fn the_schema_names_every_field_of_a_chaos_trial() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA_V1_3_JSON).unwrap();
        let item = &schema["properties"]["chaos"]["items"];
        assert_eq!(item["additionalProperties"], false);
        let props = item["properties"].as_object().unwrap();
        let trial = serde_json::to_value(full_trial()).unwrap();
        for k in trial.as_object().unwrap().keys() {
            assert!(props.contains_key(k), "the schema lacks chaos[].{k}");
        }
        assert_eq!(
            props["expected"]["enum"],
            serde_json::json!(["recovered", "degraded"])
        );
        let back: ChaosTrial = serde_json::from_value(trial).unwrap();
        assert_eq!(back, full_trial());
        let bare: ChaosTrial = serde_json::from_str(
            r#"{"fault": "kill_job", "target": "t", "seed": 1, "outcome": "failed"}"#,
        )
        .unwrap();
        assert_eq!(
            (bare.expected, bare.recovery, bare.repro),
            (None, None, None)
        );
    }

    #[test]
    fn downgrade_keeps_only_the_chaos_fields_of_v1_2() {
        let text = include_str!("../../schema/pipeline_run.v1.3.example.json");
        let mut record: RunRecord = serde_json::from_str(text).unwrap();
        record.chaos = vec![full_trial()];
        let v = record.to_v1_2().unwrap();
        let trial = v["chaos"][0].as_object().unwrap();
        let mut keys: Vec<&str> = trial.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "ended_at",
                "fault",
                "outcome",
                "rate",
                "retries",
                "seed",
                "started_at",
                "target"
            ]
        );
        let v12: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/pipeline_run.v1.2.json")).unwrap();
        let allowed = v12["properties"]["chaos"]["items"]["properties"]
            .as_object()
            .expect("v1.2 describes chaos items");
        for k in keys {
            assert!(allowed.contains_key(k), "v1.2 has no chaos[].{k}");
        }
    }

    #[test]
    fn downgrade_names_every_missing_field() {
        let text = include_str!("../../schema/pipeline_run.v1.3.example.json");
        let mut record: RunRecord = serde_json::from_str(text).unwrap();
        record.commit_sha = None;
        record.tests.resilience = None;
        let err = record.to_v1_2().unwrap_err();
        assert_eq!(err.missing.len(), 2, "{err}");
        assert!(err.to_string().contains("commit_sha"), "{err}");
        assert!(err.to_string().contains("tests.resilience"), "{err}");
    }
}
