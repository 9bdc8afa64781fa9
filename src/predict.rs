//! The runtime model in a run: learned from the history before the run, its predictions
//! recorded beside each step after it, and `ci-intel predict report`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ci_intel_executor::InputGlobIndex;
use ci_intel_scheduler::history::{History, RecordedPrediction, RunRecord, StepRecord};
use ci_intel_scheduler::{Features, Observation, Plan, Query, RunReport, RuntimeModel};

/// Runs of a plan the model learns from.
const LEARN_RUNS: usize = 50;
/// The prior of a step nothing is known of, in a plan nothing is known of.
const DEFAULT_PRIOR: Duration = Duration::from_secs(1);

/// What a run knows before it starts: the model as of the last run, and what changed since.
pub(crate) struct Learned {
    /// The model, learned from the plan's past runs.
    pub(crate) model: RuntimeModel,
    /// This machine's runner class.
    pub(crate) runner_class: String,
    /// The commit of each step's latest recorded run, when it ran in a git checkout.
    last_commit: HashMap<String, String>,
    /// The commit the plan's root is at ([`Learned::measure_changes`]).
    commit: Option<String>,
    /// Files each step's inputs match that changed since the step's previous run
    /// ([`Learned::measure_changes`]).
    changed: HashMap<String, u64>,
}

impl Learned {
    /// Learns `plan`'s model from `history` (none: priors only).
    pub(crate) fn load(plan: &Plan, history: Option<&History>) -> Learned {
        let mut model = RuntimeModel::new(DEFAULT_PRIOR);
        // Each step's latest run, and each run's commit.
        let mut latest: HashMap<String, i64> = HashMap::new();
        let mut commits: HashMap<i64, String> = HashMap::new();
        let learned = history.map(|h| {
            h.learn(&plan.name, LEARN_RUNS, |row| {
                if row.succeeded {
                    model.update(&Observation {
                        query: Query {
                            step: row.step,
                            cache_hit: row.cache_hit,
                            runner_class: row.runner_class,
                            features: Features {
                                input_bytes: row.input_bytes,
                                changed_files: row.changed_files,
                            },
                        },
                        duration: row.duration,
                    });
                }
                if let Some(c) = row.git_commit.filter(|c| is_commit_id(c)) {
                    commits.entry(row.run).or_insert_with(|| c.to_string());
                    match latest.get_mut(row.step) {
                        Some(run) => *run = row.run,
                        None => {
                            latest.insert(row.step.to_string(), row.run);
                        }
                    }
                }
            })
        });
        if let Some(Err(e)) = learned {
            tracing::warn!(
                "run history unreadable, steps are ordered by priors: {}",
                ci_intel_cache::error_chain(&e)
            );
            model = RuntimeModel::new(DEFAULT_PRIOR);
            latest.clear();
        }
        let last_commit = latest
            .into_iter()
            .filter_map(|(step, run)| Some((step, commits.get(&run)?.clone())))
            .collect();
        Learned {
            model,
            runner_class: ci_intel_scheduler::history::runner_class(|k| std::env::var(k).ok()),
            last_commit,
            commit: None,
            changed: HashMap::new(),
        }
    }

    /// Before a run: the commit the plan's root is at and, per step with `inputs`, how many
    /// files they match changed since the step's previous run (one `git diff` per distinct
    /// previous commit, one pass over its paths for all steps).
    pub(crate) fn measure_changes(&mut self, plan: &Plan) {
        self.commit = git_head(&plan.root);
        if self.commit.is_none() {
            return;
        }
        let mut by_commit: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, step) in plan.steps.iter().enumerate() {
            if let (false, Some(c)) = (step.inputs.is_empty(), self.last_commit.get(&step.id)) {
                by_commit.entry(c.as_str()).or_default().push(i);
            }
        }
        for (commit, steps) in by_commit {
            let Some(changed) = changed_since(&plan.root, commit) else {
                continue;
            };
            let index = InputGlobIndex::new(steps.iter().map(|&i| plan.steps[i].inputs.as_slice()));
            let counts = index.counts(changed.iter().map(Path::new));
            for (&i, n) in steps.iter().zip(counts) {
                self.changed.insert(plan.steps[i].id.clone(), n);
            }
        }
    }

    /// Each step's predicted p50 and p80 as a run (a cache miss) on this machine.
    pub(crate) fn as_runs(&self, plan: &Plan) -> (Vec<Duration>, Vec<Duration>) {
        plan.steps
            .iter()
            .map(|s| {
                let p = self.model.predict(&Query {
                    step: &s.id,
                    cache_hit: false,
                    runner_class: &self.runner_class,
                    features: Features::default(),
                });
                (p.p50, p.p80)
            })
            .unzip()
    }

    /// The prediction for a step that ran, as it would have been made before it ran: the
    /// model as of the start of the run, the step's cache outcome and its inputs.
    fn prediction(&self, step: &str, hit: bool, features: Features) -> RecordedPrediction {
        let p = self.model.predict(&Query {
            step,
            cache_hit: hit,
            runner_class: &self.runner_class,
            features,
        });
        RecordedPrediction {
            p50: p.p50,
            p80: p.p80,
            p90: p.p90,
            model: p.source.name().to_string(),
        }
    }
}

/// Whether `s` is a full commit id (SHA-1 or SHA-256, lowercase hex): anything else read
/// back from the history file is not handed to git.
fn is_commit_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `git` in `root`, for reading only: no terminal, no prompt, no lazy fetch of missing
/// objects, no optional locks, and no repository or index inherited from the environment
/// (a hook's `GIT_DIR` would point it at another repository).
fn git(root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(root)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_NO_LAZY_FETCH", "1")
        .env("GIT_OPTIONAL_LOCKS", "0");
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `HEAD` of the git checkout `root` is in, if it is in one.
fn git_head(root: &Path) -> Option<String> {
    let out = git(root)
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .output()
        .ok()?;
    let head = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && is_commit_id(&head)).then_some(head)
}

/// Tracked files under `root` (relative to it) that differ between `commit` and the working
/// tree; `None` when git cannot say (not a checkout, the commit is not in a shallow clone).
fn changed_since(root: &Path, commit: &str) -> Option<Vec<String>> {
    if !is_commit_id(commit) {
        return None;
    }
    let out = git(root)
        .args([
            "diff",
            "--name-only",
            "--relative",
            "--no-renames",
            "-z",
            "--end-of-options",
        ])
        .arg(commit)
        .arg("--")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        out.stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
    )
}

/// Records a run's chaos trials in the history, beside run `run_id` that [`record`] wrote.
pub(crate) fn record_trials(
    plan: &Plan,
    run: &ci_intel_insight::record::RunRecord,
    history: Option<&History>,
    run_id: Option<i64>,
) {
    let (Some(h), Some(run_id)) = (history, run_id) else {
        return;
    };
    let unix = |t: &Option<String>| {
        t.as_deref()
            .and_then(ci_intel_insight::record::parse_rfc3339_ms)
    };
    let rows: Vec<ci_intel_scheduler::history::TrialRecord> = run
        .chaos
        .iter()
        .map(|t| ci_intel_scheduler::history::TrialRecord {
            step: t.target.clone(),
            fault: t.fault.clone(),
            attempt: t.attempt.unwrap_or(1),
            seed: u64::try_from(t.seed).unwrap_or(0),
            rate: t.rate,
            started_unix_ms: unix(&t.started_at),
            ended_unix_ms: unix(&t.ended_at),
            outcome: t.outcome.clone(),
            expected: t.expected.clone().unwrap_or_default(),
            retries: t.retries.unwrap_or(0),
            recovery_ms: t.recovery_ms,
            detail: t.detail.clone().unwrap_or_default(),
        })
        .collect();
    if let Err(e) = h.record_trials(&plan.name, run_id, &rows) {
        tracing::warn!(
            "chaos trials not recorded in the run history: {}",
            ci_intel_cache::error_chain(&e)
        );
    }
}

/// Records the run in the history (when there is one), each step with what the model
/// predicted for it, and returns those predictions for the run record, and the run's id in
/// the history. A history that cannot be written costs a warning, never the run.
pub(crate) fn record(
    plan: &Plan,
    report: &RunReport,
    history: Option<&History>,
    learned: &Learned,
    state_dir: &Path,
) -> (Vec<(String, RecordedPrediction)>, Option<i64>) {
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    let steps = report
        .results
        .iter()
        .filter(|r| r.attempts > 0)
        .map(|r| {
            let outcome = r.outcome.as_ref();
            let hit = outcome.is_some_and(|o| o.cached);
            let inputs = outcome.and_then(|o| o.inputs);
            let changed_files = learned.changed.get(&r.id).copied();
            let features = Features {
                input_bytes: inputs.map(|i| i.bytes),
                changed_files,
            };
            StepRecord {
                step: r.id.clone(),
                action_key: outcome.and_then(|o| o.action_key.clone()),
                // The first attempt's start: the last one's end less all attempts' time.
                started_unix_ms: outcome.map_or(0, |o| {
                    (unix_ms(o.started_at) + u64::try_from(o.duration.as_millis()).unwrap_or(0))
                        .saturating_sub(u64::try_from(r.duration.as_millis()).unwrap_or(0))
                }),
                duration: r.duration,
                queue: r.queue,
                exit_code: outcome.and_then(|o| o.exit_code),
                state: r.state.label().to_string(),
                attempts: r.attempts,
                cache_hit: hit,
                changed_files,
                input_bytes: inputs.map(|i| i.bytes),
                input_files: inputs.map(|i| i.files),
                predicted: Some(learned.prediction(&r.id, hit, features)),
                chaos: {
                    let fired: Vec<&str> = r
                        .chaos
                        .iter()
                        .filter(|t| t.effect.fired)
                        .map(|t| t.injection.fault.name())
                        .collect();
                    (!fired.is_empty()).then(|| fired.join(","))
                },
            }
        })
        .collect();
    let run = RunRecord {
        plan: plan.name.clone(),
        started_unix_ms: unix_ms(std::time::SystemTime::now())
            .saturating_sub(u64::try_from(report.wall.as_millis()).unwrap_or(0)),
        wall: report.wall,
        runner_class: learned.runner_class.clone(),
        git_commit: learned.commit.clone(),
        steps,
    };
    let run_id = match history.map(|h| h.record(&run)) {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            tracing::warn!(
                "run history {} not recorded: {}",
                state_dir.join("history.db").display(),
                ci_intel_cache::error_chain(&e)
            );
            None
        }
        None => None,
    };
    let predictions = run
        .steps
        .into_iter()
        .filter_map(|s| Some((s.step, s.predicted?)))
        .collect();
    (predictions, run_id)
}

impl Learned {
    /// The commit the plan's root is at, once [`Learned::measure_changes`] asked git.
    pub(crate) fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }
}

/// A fraction as a percentage, `-` when there is none.
fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// `ci-intel predict report`.
pub(crate) fn report(
    state_dir: &Path,
    plan: Option<&str>,
    runs: usize,
    json: bool,
) -> Result<Result<u8, crate::Failure>, anyhow::Error> {
    use ci_intel_scheduler::accuracy;
    let path = state_dir.join("history.db");
    if !path.is_file() {
        return Ok(Err(crate::Failure::usage(
            format!("error: no run history at {}", path.display()),
            Some(
                "run a plan first, or point --state-dir at the state directory of the runs \
                 (`.ci-intel` under the plan's root by default)"
                    .into(),
            ),
        )));
    }
    if runs == 0 {
        return Ok(Err(crate::Failure::usage(
            "error: --runs must be at least 1",
            None,
        )));
    }
    let history =
        History::open(&path).map_err(|e| anyhow::anyhow!(ci_intel_cache::error_chain(&e)))?;
    let plans = match plan {
        Some(p) => vec![p.to_string()],
        None => history
            .plans()
            .map_err(|e| anyhow::anyhow!(ci_intel_cache::error_chain(&e)))?,
    };
    let mut reports = Vec::new();
    for name in &plans {
        let past = history
            .replay(name, runs)
            .map_err(|e| anyhow::anyhow!(ci_intel_cache::error_chain(&e)))?;
        if past.is_empty() {
            return Ok(Err(crate::Failure::usage(
                format!(
                    "error: the history at {} has no runs of plan `{name}`",
                    path.display()
                ),
                Some(format!(
                    "plans it has: {}",
                    history
                        .plans()
                        .map_err(|e| anyhow::anyhow!(ci_intel_cache::error_chain(&e)))?
                        .join(", ")
                )),
            )));
        }
        reports.push(accuracy::report(name, &past));
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "plans": reports }))?
        );
        return Ok(Ok(crate::exit::SUCCESS));
    }
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        let o = &r.overall;
        outln!(
            "plan {}: last {} run{}, {} predictions scored",
            r.plan,
            r.runs,
            if r.runs == 1 { "" } else { "s" },
            o.samples
        );
        outln!(
            "overall: MAPE {} ({} steps of 1s or more)  WAPE {}  p90 coverage {}  over p80 {}",
            pct(o.mape),
            o.mape_samples,
            pct(o.wape),
            pct(o.p90_coverage),
            pct(o.underpredicted)
        );
        let models: Vec<String> = r.models.iter().map(|(m, n)| format!("{m} {n}")).collect();
        outln!(
            "models: {}",
            if models.is_empty() {
                "-".into()
            } else {
                models.join(", ")
            }
        );
        if r.steps.is_empty() {
            outln!("no predictions recorded yet: they are recorded from the next run on");
            continue;
        }
        let width = r
            .steps
            .iter()
            .map(|s| s.step.len())
            .max()
            .unwrap_or(4)
            .max(4);
        outln!();
        outln!(
            "{:<width$}  {:<19}  {:>5}  {:>7}  {:>7}  {:>6}  {:>8}  {:>9}",
            "STEP",
            "MODEL",
            "RUNS",
            "MAPE",
            "WAPE",
            "P90",
            "LAST",
            "PREDICTED"
        );
        for s in &r.steps {
            outln!(
                "{:<width$}  {:<19}  {:>5}  {:>7}  {:>7}  {:>6}  {:>7.2}s  {:>8.2}s",
                s.step,
                s.model,
                s.accuracy.samples,
                pct(s.accuracy.mape),
                pct(s.accuracy.wape),
                pct(s.accuracy.p90_coverage),
                s.last_seconds,
                s.last_p50_seconds
            );
        }
        let trend: Vec<String> = r.trend.iter().map(|t| pct(t.accuracy.wape)).collect();
        outln!();
        outln!("trend (WAPE per run, oldest first): {}", trend.join(" "));
    }
    Ok(Ok(crate::exit::SUCCESS))
}
