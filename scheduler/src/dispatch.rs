//! The dispatch loop: ready steps, highest priority first, within weighted slots.

use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ci_intel_executor::{
    Action, ActionSandbox, Cancel, CancelLevel, CancelSource, Exclusions, Execute, ExecuteError,
    NetworkAccess, Outcome, SecretScan, Status,
};
use tokio::task::JoinSet;

use crate::graph::Selection;
use crate::plan::{Network, Plan, Step};

/// How a run is dispatched.
#[derive(Clone, Debug)]
pub struct DispatchOptions {
    /// Job slots; a step occupies `min(cpus, jobs)` of them.
    pub jobs: u32,
    /// Keep running independent steps after a failure instead of stopping.
    pub keep_going: bool,
    /// Where step logs (`<step>.log`) and private homes (`home/<step>`) go.
    pub run_dir: PathBuf,
    /// Seed of the retry jitter.
    pub seed: u64,
    /// Run every step without the sandbox (`--no-sandbox`), whatever the plan says.
    pub no_sandbox: bool,
    /// The state directory, never visible to a step as an input.
    pub state_dir: PathBuf,
    /// Check every cacheable step's outputs for reproducibility (`--verify-determinism`);
    /// steps with `deterministic = true` are checked (and fail on drift) regardless.
    pub verify_determinism: Option<ci_intel_executor::VerifyPolicy>,
    /// The fault-injection schedule (`--chaos`).
    pub chaos: Option<Arc<crate::chaos::Chaos>>,
}

/// How a step ended, for the run as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepState {
    /// Its last attempt succeeded.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// Its last attempt ran past its timeout.
    TimedOut,
    /// It was stopped by cancellation.
    Cancelled,
    /// It failed, but the plan allows it to (`allow_failure = true`).
    AllowedFailure,
    /// It never ran; the reason says why.
    Skipped(String),
}

impl StepState {
    /// Lowercase name for reports.
    pub fn label(&self) -> &'static str {
        match self {
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::TimedOut => "timed out",
            StepState::Cancelled => "cancelled",
            StepState::AllowedFailure => "failed (allowed)",
            StepState::Skipped(_) => "skipped",
        }
    }

    /// Whether the run can count this step as done.
    pub fn is_ok(&self) -> bool {
        matches!(self, StepState::Succeeded | StepState::AllowedFailure)
    }
}

/// The result of one selected step.
#[derive(Clone, Debug)]
pub struct StepResult {
    /// Index in [`Plan::steps`].
    pub index: usize,
    /// The step id.
    pub id: String,
    /// How it ended.
    pub state: StepState,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    /// Wall-clock time of all attempts together.
    pub duration: Duration,
    /// Time between becoming ready and first starting.
    pub queue: Duration,
    /// The last attempt's outcome.
    pub outcome: Option<Outcome>,
    /// The faults injected into its attempts (`--chaos`), in order.
    pub chaos: Vec<AttemptChaos>,
}

/// A fault injected into one attempt, and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptChaos {
    /// The attempt.
    pub attempt: u32,
    /// What was decided.
    pub injection: ci_intel_executor::chaos::Injection,
    /// Whether the plan gives the step a way to recover from it.
    pub expect_recovery: bool,
    /// What it did.
    pub effect: ci_intel_executor::chaos::ChaosEffect,
    /// How the attempt ended.
    pub attempt_status: Status,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// One result per selected step, in plan order.
    pub results: Vec<StepResult>,
    /// Wall-clock time of the whole run.
    pub wall: Duration,
    /// Whether the run was interrupted (Ctrl-C, SIGTERM).
    pub interrupted: bool,
}

impl RunReport {
    /// True when every selected step succeeded or was allowed to fail.
    pub fn success(&self) -> bool {
        !self.interrupted && self.results.iter().all(|r| r.state.is_ok())
    }
}

/// Progress, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// An attempt started.
    Started {
        /// The step.
        step: &'a Step,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// An attempt failed and another will follow after `delay`.
    Retrying {
        /// The step.
        step: &'a Step,
        /// The failed attempt's outcome.
        outcome: &'a Outcome,
        /// The attempt that follows.
        next_attempt: u32,
        /// The backoff before it.
        delay: Duration,
    },
    /// A step reached its final state.
    Finished {
        /// The step.
        step: &'a Step,
        /// Its result.
        result: &'a StepResult,
    },
    /// A chaos decision for an attempt about to start (whether or not it injects).
    Chaos {
        /// The step.
        step: &'a Step,
        /// The decision.
        decision: &'a crate::chaos::Decision,
    },
    /// No more steps will start; running ones are being stopped.
    Stopping {
        /// Why, for a person.
        reason: String,
    },
}

/// Receives [`Event`]s.
pub trait Observer: Send + Sync {
    /// Called from the dispatch loop; keep it quick.
    fn event(&self, event: &Event<'_>);

    /// Called when the dispatch loop is about to wait: a good moment to flush buffered
    /// output, so a burst of events costs one write.
    fn flush(&self) {}
}

/// A fault of the orchestrator that ended the run.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The executor could not run a step at all.
    #[error("could not execute step `{step}`")]
    Executor {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: ExecuteError,
    },
}

#[expect(
    clippy::large_enum_variant,
    reason = "one message per finished attempt, moved once; boxing would only add an allocation"
)]
enum Msg {
    Done(usize, Result<Outcome, ExecuteError>),
    RetryDue(usize),
    RetryAborted(usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Backoff,
    Done,
}

struct Slot {
    phase: Phase,
    missing: usize,
    attempts: u32,
    duration: Duration,
    ready_at: Option<Instant>,
    queue: Duration,
    outcome: Option<Outcome>,
    /// Set once the step reached its final state.
    result: Option<StepResult>,
    /// The running attempt's injection and whether recovery is expected.
    injected: Option<(ci_intel_executor::chaos::Injection, bool)>,
    chaos: Vec<AttemptChaos>,
}

impl Slot {
    fn state(&self) -> Option<&StepState> {
        self.result.as_ref().map(|r| &r.state)
    }
}

/// Runs the selected steps of `plan` to completion, failure or interruption.
///
/// `priorities` come from [`priorities`](crate::priorities). `interrupt` is raised by the
/// caller on Ctrl-C: [`CancelLevel::Graceful`] stops starting steps and terminates running
/// ones after the executor's grace period; [`CancelLevel::Immediate`] kills them now.
pub async fn dispatch<E: Execute>(
    plan: &Plan,
    selection: &Selection,
    priorities: &[Duration],
    executor: Arc<E>,
    observer: &dyn Observer,
    options: &DispatchOptions,
    mut interrupt: Cancel,
) -> Result<RunReport, DispatchError> {
    let started = Instant::now();
    let n = plan.steps.len();
    let jobs = options.jobs.max(1);
    // What no sandboxed step may see as an input: every step's outputs, the state dir.
    // Built once: every attempt's input walk shares it.
    let outputs: Vec<PathBuf> = plan
        .steps
        .iter()
        .flat_map(|s| {
            s.outputs
                .iter()
                .map(|o| plan.root.join(o.trim_end_matches('/')))
        })
        .chain([options.state_dir.clone()])
        .collect();
    let outputs = Arc::new(Exclusions::new(&plan.root, &outputs));
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut slots: Vec<Slot> = Vec::with_capacity(n);
    let mut ready = BinaryHeap::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let missing = if selection.contains(i) {
            step.needs
                .iter()
                .filter(|&&d| selection.contains(d))
                .count()
        } else {
            0
        };
        for &d in &step.needs {
            dependents[d].push(i);
        }
        slots.push(Slot {
            phase: if selection.contains(i) {
                Phase::Pending
            } else {
                Phase::Done
            },
            missing,
            attempts: 0,
            duration: Duration::ZERO,
            ready_at: None,
            queue: Duration::ZERO,
            outcome: None,
            result: None,
            injected: None,
            chaos: Vec::new(),
        });
        if selection.contains(i) && missing == 0 {
            slots[i].ready_at = Some(started);
            ready.push((priorities[i], std::cmp::Reverse(i)));
        }
    }

    let cancel = CancelSource::new();
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut tasks: JoinSet<Msg> = JoinSet::new();
    let mut free = jobs;
    let mut stopping: Option<String> = None;
    let mut interrupted = false;
    let mut ext_level = CancelLevel::None;

    loop {
        if stopping.is_none() {
            while free > 0 {
                // Strict priority: when the most critical ready step does not fit, slots stay
                // free for it rather than going to less critical steps that would delay it.
                let Some(&(_, std::cmp::Reverse(i))) = ready.peek() else {
                    break;
                };
                let weight = plan.steps[i].cpus.min(jobs);
                if weight > free {
                    break;
                }
                ready.pop();
                free -= weight;
                let slot = &mut slots[i];
                slot.attempts += 1;
                if slot.attempts == 1 {
                    slot.queue = slot.ready_at.map_or(Duration::ZERO, |t| t.elapsed());
                }
                slot.phase = Phase::Running;
                let step = &plan.steps[i];
                observer.event(&Event::Started {
                    step,
                    attempt: slot.attempts,
                });
                let injection = options.chaos.as_ref().and_then(|c| {
                    let d = c.decide(plan, i, slot.attempts);
                    observer.event(&Event::Chaos { step, decision: &d });
                    let expect = d.expect_recovery;
                    d.injection.map(|inj| (inj, expect))
                });
                slot.injected = injection.clone();
                let mut action = action_for(plan, step, slot.attempts, options, &outputs);
                action.chaos = injection.map(|(inj, _)| inj);
                let exec = executor.clone();
                let token = cancel.token();
                tasks.spawn(async move { Msg::Done(i, exec.execute(action, token).await) });
            }
        }
        if tasks.is_empty() {
            break;
        }
        observer.flush();
        let msg = tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(msg)) => msg,
                Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Some(Err(_)) | None => continue,
            },
            level = interrupt.raised(ext_level) => {
                ext_level = level;
                interrupted = true;
                let reason = if level == CancelLevel::Immediate {
                    "interrupted again: killing running steps"
                } else {
                    "interrupted: stopping running steps (interrupt again to kill them at once)"
                };
                stopping = Some("run interrupted".into());
                observer.event(&Event::Stopping { reason: reason.into() });
                cancel.cancel(level);
                continue;
            }
        };
        match msg {
            Msg::Done(i, Err(source)) => {
                cancel.cancel(CancelLevel::Immediate);
                while tasks.join_next().await.is_some() {}
                return Err(DispatchError::Executor {
                    step: plan.steps[i].id.clone(),
                    source,
                });
            }
            Msg::Done(i, Ok(outcome)) => {
                let step = &plan.steps[i];
                free += step.cpus.min(jobs);
                let slot = &mut slots[i];
                slot.duration += outcome.duration;
                if let (Some((injection, expect_recovery)), Some(effect)) =
                    (slot.injected.take(), outcome.chaos.clone())
                {
                    slot.chaos.push(AttemptChaos {
                        attempt: slot.attempts,
                        injection,
                        expect_recovery,
                        effect,
                        attempt_status: outcome.status,
                    });
                }
                let max_attempts = step.retries.count + 1;
                let retryable = matches!(outcome.status, Status::Failed | Status::TimedOut);
                if retryable && slot.attempts < max_attempts && stopping.is_none() {
                    let delay = step.retries.delay_before(slot.attempts + 1, &mut rng);
                    observer.event(&Event::Retrying {
                        step,
                        outcome: &outcome,
                        next_attempt: slot.attempts + 1,
                        delay,
                    });
                    slot.outcome = Some(outcome);
                    slot.phase = Phase::Backoff;
                    let mut token = cancel.token();
                    tasks.spawn(async move {
                        tokio::select! {
                            () = tokio::time::sleep(delay) => Msg::RetryDue(i),
                            _ = token.raised(CancelLevel::None) => Msg::RetryAborted(i),
                        }
                    });
                    continue;
                }
                let state = final_state(step, outcome.status);
                slot.outcome = Some(outcome);
                if state.is_ok() {
                    for &d in &dependents[i] {
                        let dep = &mut slots[d];
                        if dep.phase == Phase::Pending && selection.contains(d) {
                            dep.missing -= 1;
                            if dep.missing == 0 {
                                dep.ready_at = Some(Instant::now());
                                ready.push((priorities[d], std::cmp::Reverse(d)));
                            }
                        }
                    }
                }
                let stop = !state.is_ok()
                    && !options.keep_going
                    && stopping.is_none()
                    && state != StepState::Cancelled;
                let label = state.label();
                finish(plan, &mut slots, i, state, observer);
                if stop {
                    let reason = format!("stopped after `{}` {label}", step.id);
                    observer.event(&Event::Stopping {
                        reason: if tasks.is_empty() {
                            format!("{reason} (use --keep-going to continue independent steps)")
                        } else {
                            format!("{reason}; cancelling running steps (use --keep-going to continue independent steps)")
                        },
                    });
                    stopping = Some(reason);
                    cancel.cancel(CancelLevel::Graceful);
                }
            }
            Msg::RetryDue(i) => {
                slots[i].ready_at = Some(Instant::now());
                if stopping.is_none() {
                    slots[i].phase = Phase::Pending;
                    ready.push((priorities[i], std::cmp::Reverse(i)));
                } else {
                    let state = last_state(&plan.steps[i], &slots[i]);
                    finish(plan, &mut slots, i, state, observer);
                }
            }
            Msg::RetryAborted(i) => {
                // The run stopped while the step waited to retry: it ends as its last
                // attempt did.
                let state = last_state(&plan.steps[i], &slots[i]);
                finish(plan, &mut slots, i, state, observer);
            }
        }
    }

    // Whatever never ran was skipped: say why.
    for i in plan.topo.iter().copied().filter(|&i| selection.contains(i)) {
        if slots[i].result.is_some() {
            continue;
        }
        let blocker = plan.steps[i]
            .needs
            .iter()
            .find(|&&d| selection.contains(d) && !slots[d].state().is_some_and(StepState::is_ok));
        let reason = match (blocker, &stopping) {
            (Some(&d), _) => format!("needs `{}`, which did not succeed", plan.steps[d].id),
            (None, Some(r)) => format!("not started: {r}"),
            (None, None) => "not started".into(),
        };
        finish(plan, &mut slots, i, StepState::Skipped(reason), observer);
    }
    observer.flush();
    let results = slots
        .into_iter()
        .enumerate()
        .filter(|(i, _)| selection.contains(*i))
        .map(|(i, s)| s.result.unwrap_or_else(|| unfinished(plan, i)))
        .collect();
    Ok(RunReport {
        results,
        wall: started.elapsed(),
        interrupted,
    })
}

/// The run-level state of a step whose last attempt ended with `status`.
fn final_state(step: &Step, status: Status) -> StepState {
    match status {
        Status::Succeeded => StepState::Succeeded,
        Status::Cancelled => StepState::Cancelled,
        Status::Failed | Status::TimedOut if step.allow_failure => StepState::AllowedFailure,
        Status::Failed => StepState::Failed,
        Status::TimedOut => StepState::TimedOut,
    }
}

/// The state of a step that will not be retried after all.
fn last_state(step: &Step, slot: &Slot) -> StepState {
    slot.outcome
        .as_ref()
        .map_or(StepState::Cancelled, |o| final_state(step, o.status))
}

/// A result for a step that never reached `finish` (cannot happen; kept total).
fn unfinished(plan: &Plan, i: usize) -> StepResult {
    StepResult {
        index: i,
        id: plan.steps[i].id.clone(),
        state: StepState::Skipped("not started".into()),
        attempts: 0,
        duration: Duration::ZERO,
        queue: Duration::ZERO,
        outcome: None,
        chaos: Vec::new(),
    }
}

/// Records the final state of step `i` (its outcome moves into the result) and reports it.
fn finish(plan: &Plan, slots: &mut [Slot], i: usize, state: StepState, observer: &dyn Observer) {
    let slot = &mut slots[i];
    slot.phase = Phase::Done;
    let result = slot.result.insert(StepResult {
        index: i,
        id: plan.steps[i].id.clone(),
        state,
        attempts: slot.attempts,
        duration: slot.duration,
        queue: slot.queue,
        outcome: slot.outcome.take(),
        chaos: std::mem::take(&mut slot.chaos),
    });
    observer.event(&Event::Finished {
        step: &plan.steps[i],
        result,
    });
}

/// The executor's view of one attempt of `step`.
fn action_for(
    plan: &Plan,
    step: &Step,
    attempt: u32,
    options: &DispatchOptions,
    outputs: &Arc<Exclusions>,
) -> Action {
    let run_dir = &options.run_dir;
    let output_path = |o: &String| plan.root.join(o.trim_end_matches('/'));
    let sandbox = (step.sandbox.enabled && !options.no_sandbox).then(|| {
        let spec = &step.sandbox;
        let limits = ci_intel_executor::Limits::default();
        ActionSandbox {
            inputs: step.inputs.clone(),
            outputs: step.outputs.clone(),
            needs_outputs: step
                .needs
                .iter()
                .flat_map(|&n| plan.steps[n].outputs.iter().map(output_path))
                .collect(),
            exclude: outputs.clone(),
            read: spec.read.clone(),
            write: spec.write.clone(),
            network: match &spec.network {
                Network::Deny => NetworkAccess::Deny,
                Network::Loopback => NetworkAccess::Loopback,
                Network::Allowlist(list) => NetworkAccess::Allow(list.clone()),
            },
            limits: ci_intel_executor::Limits {
                memory: spec.limits.memory,
                pids: spec.limits.pids.unwrap_or(limits.pids),
                nofile: spec.limits.nofile.unwrap_or(limits.nofile),
                tmpfs: spec.limits.tmpfs.unwrap_or(limits.tmpfs),
                millicpus: spec.limits.millicpus,
            },
            staging: run_dir
                .join("staging")
                .join(format!("{}.{attempt}", step.id)),
            normalize: step.normalize.clone(),
            deterministic: step.deterministic,
        }
    });
    Action {
        step: step.id.clone(),
        program: step.program.clone(),
        cwd: plan.root.clone(),
        env: step
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        pass_env: step.pass_env.clone(),
        secrets: step.secrets.clone(),
        timeout: step.timeout,
        log_path: run_dir.join(format!("{}.log", step.id)),
        home: run_dir.join("home").join(&step.id),
        attempt,
        max_attempts: step.retries.count + 1,
        secret_scan: match step.sandbox.secret_scan {
            crate::plan::SecretScan::Deny => SecretScan::Deny,
            crate::plan::SecretScan::Warn => SecretScan::Warn,
        },
        cache: sandbox.is_some() && step.cache.allows(!step.secrets.is_empty()),
        tools: step.tools.clone(),
        // Only what runs sandboxed, with outputs to compare, is checked.
        verify: if sandbox.as_ref().is_some_and(|s| !s.outputs.is_empty()) {
            if step.deterministic {
                Some(ci_intel_executor::VerifyPolicy::Fail)
            } else {
                options.verify_determinism
            }
        } else {
            None
        },
        verify_cached: options.verify_determinism.is_some(),
        variations: None,
        chaos: None,
        sandbox,
    }
}
