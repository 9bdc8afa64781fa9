//! The dispatch loop, driven through a scripted fake executor.
//!
//! Every test runs on a paused tokio clock: backoff delays and the simulated work of a
//! step ([`Script::Work`]) cost no real time, and nothing waits on the wall clock. Tests
//! that need to act while steps run wait for the fake's notes (a step started, a step saw
//! a cancellation level) on a channel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ci_intel_executor::{
    Action, Cancel, CancelLevel, CancelSource, Execute, ExecuteError, Outcome, Status,
};
use ci_intel_scheduler::{
    DispatchError, DispatchOptions, DurationEstimator, Event, Observer, Plan, RunReport, Selection,
    SelectionError, StaticEstimator, Step, StepState, dispatch, parse_plan, priorities,
};
use tokio::sync::{Notify, mpsc};

// --- the fake executor -----------------------------------------------------------------

/// What one attempt of a step does.
#[derive(Clone, Debug)]
enum Script {
    /// Ends at once with this status.
    End(Status),
    /// Works for this long (on the paused clock), then succeeds; stops as `Cancelled` when
    /// cancelled.
    Work(Duration),
    /// Runs until the cancellation level reaches this, noting every level it sees, then
    /// ends as `Cancelled`.
    UntilCancelled(CancelLevel),
    /// Waits until the gate is opened, then ends with this status.
    Held(Arc<Notify>, Status),
    /// Cannot be executed at all.
    Fault,
}

/// What the fake tells the test while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Note {
    Started(String),
    Saw(String, CancelLevel),
}

/// One call of [`Execute::execute`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    step: String,
    attempt: u32,
    max_attempts: u32,
    /// The sandbox's limits; `None` for an unsandboxed attempt.
    limits: Option<ci_intel_executor::Limits>,
    /// The injected fault and its parameters (`--chaos`), as text.
    chaos: Option<String>,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    levels: HashMap<String, Vec<CancelLevel>>,
    weight: u32,
    max_weight: u32,
}

/// Runs each attempt by the next entry of its step's script (default: succeed at once).
struct Fake {
    scripts: Mutex<HashMap<String, VecDeque<Script>>>,
    weights: HashMap<String, u32>,
    state: Mutex<FakeState>,
    notes: mpsc::UnboundedSender<Note>,
}

impl Fake {
    /// A fake for `plan` run with `jobs` slots, and the receiver of its notes.
    fn new(plan: &Plan, jobs: u32) -> (Fake, mpsc::UnboundedReceiver<Note>) {
        let (notes, rx) = mpsc::unbounded_channel();
        let weights = plan
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.cpus.min(jobs)))
            .collect();
        let fake = Fake {
            scripts: Mutex::default(),
            weights,
            state: Mutex::default(),
            notes,
        };
        (fake, rx)
    }

    /// Scripts the attempts of `step`, in order.
    fn script(self, step: &str, attempts: impl IntoIterator<Item = Script>) -> Fake {
        self.scripts
            .lock()
            .unwrap()
            .insert(step.into(), attempts.into_iter().collect());
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn called_steps(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.step).collect()
    }

    fn levels(&self, step: &str) -> Vec<CancelLevel> {
        let state = self.state.lock().unwrap();
        state.levels.get(step).cloned().unwrap_or_default()
    }

    fn max_weight(&self) -> u32 {
        self.state.lock().unwrap().max_weight
    }
}

impl Execute for Fake {
    async fn execute(&self, action: Action, mut cancel: Cancel) -> Result<Outcome, ExecuteError> {
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&action.step)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Script::End(Status::Succeeded));
        let weight = self.weights[&action.step];
        {
            let mut state = self.state.lock().unwrap();
            state.calls.push(Call {
                step: action.step.clone(),
                attempt: action.attempt,
                max_attempts: action.max_attempts,
                limits: action.sandbox.as_ref().map(|s| s.limits),
                chaos: action
                    .chaos
                    .as_ref()
                    .map(|i| format!("{} {:?}", i.fault, i.params)),
            });
            state.weight += weight;
            state.max_weight = state.max_weight.max(state.weight);
        }
        let _ = self.notes.send(Note::Started(action.step.clone()));
        let result = match script {
            Script::End(status) => Ok(status),
            Script::Work(time) => tokio::select! {
                () = tokio::time::sleep(time) => Ok(Status::Succeeded),
                level = cancel.raised(CancelLevel::None) => {
                    self.saw(&action.step, level);
                    Ok(Status::Cancelled)
                }
            },
            Script::UntilCancelled(stop_at) => {
                let mut level = CancelLevel::None;
                while level < stop_at {
                    level = cancel.raised(level).await;
                    self.saw(&action.step, level);
                }
                Ok(Status::Cancelled)
            }
            Script::Held(gate, status) => {
                gate.notified().await;
                Ok(status)
            }
            Script::Fault => Err(ExecuteError::Pipe(std::io::Error::other("no pipes left"))),
        };
        self.state.lock().unwrap().weight -= weight;
        result.map(|status| {
            let mut outcome = Outcome::new(status, action.log_path);
            // A fault the fake was given acted at once.
            outcome.chaos = action.chaos.map(|i| ci_intel_executor::chaos::ChaosEffect {
                fault: i.fault,
                fired: true,
                started_at: Some(outcome.started_at),
                ended_at: Some(outcome.started_at),
                detail: i.describe(),
                contained: true,
            });
            outcome
        })
    }
}

impl Fake {
    fn saw(&self, step: &str, level: CancelLevel) {
        let mut state = self.state.lock().unwrap();
        state.levels.entry(step.into()).or_default().push(level);
        drop(state);
        let _ = self.notes.send(Note::Saw(step.into(), level));
    }
}

// --- recording observer ----------------------------------------------------------------

/// An [`Event`] with owned data.
#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Started {
        id: String,
        attempt: u32,
    },
    Retrying {
        id: String,
        status: Status,
        next_attempt: u32,
        delay: Duration,
    },
    Finished {
        id: String,
        state: StepState,
        attempts: u32,
    },
    Stopping {
        reason: String,
    },
    Chaos {
        id: String,
        attempt: u32,
        line: String,
    },
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Ev>>,
    tx: Option<mpsc::UnboundedSender<Ev>>,
}

impl Observer for Recorder {
    fn event(&self, event: &Event<'_>) {
        let ev = match event {
            Event::Started { step, attempt } => Ev::Started {
                id: step.id.clone(),
                attempt: *attempt,
            },
            Event::Retrying {
                step,
                outcome,
                next_attempt,
                delay,
            } => Ev::Retrying {
                id: step.id.clone(),
                status: outcome.status,
                next_attempt: *next_attempt,
                delay: *delay,
            },
            Event::Finished { step, result } => Ev::Finished {
                id: step.id.clone(),
                state: result.state.clone(),
                attempts: result.attempts,
            },
            Event::Stopping { reason } => Ev::Stopping {
                reason: reason.clone(),
            },
            Event::Chaos { step, decision } => Ev::Chaos {
                id: step.id.clone(),
                attempt: decision.attempt,
                line: decision.line(0),
            },
        };
        if let Some(tx) = &self.tx {
            let _ = tx.send(ev.clone());
        }
        self.events.lock().unwrap().push(ev);
    }
}

impl Recorder {
    /// A recorder that also sends every event to the returned receiver.
    fn with_events() -> (Recorder, mpsc::UnboundedReceiver<Ev>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = Recorder {
            tx: Some(tx),
            ..Recorder::default()
        };
        (recorder, rx)
    }

    fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    fn started(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Started { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn retries(&self) -> Vec<(u32, Status, Duration)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Retrying {
                    next_attempt,
                    status,
                    delay,
                    ..
                } => Some((next_attempt, status, delay)),
                _ => None,
            })
            .collect()
    }

    fn stopping(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Stopping { reason } => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// The largest total slot weight of running attempts, replayed from the events, and
    /// every set of steps that ran together.
    fn max_running_weight(&self, plan: &Plan, jobs: u32) -> (u32, Vec<HashSet<String>>) {
        let weight = |id: &str| plan.steps[plan.step_index(id).unwrap()].cpus.min(jobs);
        let mut running: HashSet<String> = HashSet::new();
        let mut max = 0;
        let mut together = Vec::new();
        for e in self.events() {
            match e {
                Ev::Started { id, .. } => {
                    running.insert(id);
                    max = max.max(running.iter().map(|r| weight(r)).sum());
                    together.push(running.clone());
                }
                Ev::Retrying { id, .. } | Ev::Finished { id, .. } => {
                    running.remove(&id);
                }
                Ev::Stopping { .. } | Ev::Chaos { .. } => {}
            }
        }
        (max, together)
    }
}

// --- harness ---------------------------------------------------------------------------

fn plan(src: &str) -> Plan {
    match parse_plan(Path::new("plan.toml"), src) {
        Ok(plan) => plan,
        Err(e) => panic!("test plan is invalid:\n{e}"),
    }
}

fn options(jobs: u32, keep_going: bool) -> DispatchOptions {
    DispatchOptions {
        jobs,
        keep_going,
        run_dir: "/nonexistent/run".into(),
        seed: 7,
        no_sandbox: false,
        state_dir: "/nonexistent".into(),
        verify_determinism: None,
        chaos: None,
    }
}

/// Dispatches every step of `plan` with static priorities and no interrupt.
async fn run_all(
    plan: &Plan,
    fake: &Arc<Fake>,
    recorder: &Recorder,
    options: &DispatchOptions,
) -> Result<RunReport, DispatchError> {
    run_driven(plan, fake, recorder, options, Cancel::never(), async {}).await
}

/// Runs the whole plan while `driver` acts on the run (releases gates, interrupts), both
/// under the deadlock guard.
async fn run_driven(
    plan: &Plan,
    fake: &Arc<Fake>,
    recorder: &Recorder,
    options: &DispatchOptions,
    interrupt: Cancel,
    driver: impl std::future::Future<Output = ()>,
) -> Result<RunReport, DispatchError> {
    let prio = priorities(plan, &StaticEstimator::default());
    let selection = Selection::all(plan);
    let run = dispatch(
        plan,
        &selection,
        &prio,
        fake.clone(),
        recorder,
        options,
        interrupt,
    );
    let (report, ()) = guarded(async { tokio::join!(run, driver) }).await;
    report
}

fn state_of(report: &RunReport, id: &str) -> StepState {
    report
        .results
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no result for `{id}`"))
        .state
        .clone()
}

fn attempts_of(report: &RunReport, id: &str) -> u32 {
    report.results.iter().find(|r| r.id == id).unwrap().attempts
}

fn skipped(reason: &str) -> StepState {
    StepState::Skipped(reason.into())
}

/// Awaits `run`, failing the test if it is still stuck after a virtual day: on the paused
/// clock time only moves when every task is idle, so a deadlocked run ends here at once
/// instead of hanging the test.
async fn guarded<T>(run: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(86_400), run)
        .await
        .expect("the run deadlocked")
}

/// Waits for the fake's next note.
async fn next_note(rx: &mut mpsc::UnboundedReceiver<Note>) -> Note {
    rx.recv().await.expect("the fake executor is gone")
}

// --- ordering --------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn one_job_runs_steps_by_longest_remaining_path_then_plan_order() {
    // Longest remaining path (1s per step): lint 1, build 3, test 2, package 1, docs 1.
    let plan = plan(
        r#"version = 1
[steps.lint]
run = "x"
[steps.build]
run = "x"
[steps.test]
run = "x"
needs = ["build"]
[steps.package]
run = "x"
needs = ["test"]
[steps.docs]
run = "x"
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 1);
    let fake = Arc::new(fake);
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(1, false))
        .await
        .unwrap();
    assert!(report.success());
    // build first (longest path); then test (2) beats lint and docs (1); then the ties at
    // 1 go in plan order: lint, package, docs.
    assert_eq!(
        recorder.started(),
        ["build", "test", "lint", "package", "docs"]
    );
    assert_eq!(fake.called_steps(), recorder.started());
    assert_eq!(fake.max_weight(), 1);
}

#[tokio::test(start_paused = true)]
async fn estimates_decide_the_order_of_independent_steps() {
    struct ByName;
    impl DurationEstimator for ByName {
        fn estimate(&self, step: &Step) -> Duration {
            match step.id.as_str() {
                "slow" => Duration::from_secs(60),
                _ => Duration::from_secs(1),
            }
        }
    }
    let plan = plan(
        r#"version = 1
[steps.quick]
run = "x"
[steps.quick-too]
run = "x"
[steps.slow]
run = "x"
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 1);
    let fake = Arc::new(fake);
    let recorder = Recorder::default();
    let prio = priorities(&plan, &ByName);
    let report = guarded(dispatch(
        &plan,
        &Selection::all(&plan),
        &prio,
        fake.clone(),
        &recorder,
        &options(1, false),
        Cancel::never(),
    ))
    .await
    .unwrap();
    assert!(report.success());
    assert_eq!(recorder.started(), ["slow", "quick", "quick-too"]);
}

// --- slots -----------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn running_weight_never_exceeds_jobs() {
    let mut src = String::from("version = 1\n");
    for i in 0..8 {
        src.push_str(&format!("[steps.s{i}]\nrun = \"x\"\n"));
    }
    let plan = plan(&src);
    let (fake, _notes) = Fake::new(&plan, 3);
    let fake = (0..8).fold(fake, |f, i| {
        f.script(
            &format!("s{i}"),
            [Script::Work(Duration::from_secs(10 + i))],
        )
    });
    let fake = Arc::new(fake);
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(3, false))
        .await
        .unwrap();
    assert!(report.success());
    let (max, _) = recorder.max_running_weight(&plan, 3);
    assert_eq!(max, 3, "three slots are used, and no more");
    assert_eq!(fake.max_weight(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_step_as_wide_as_all_slots_runs_alone() {
    let plan = plan(
        r#"version = 1
[steps.a]
run = "x"
[steps.b]
run = "x"
[steps.wide]
run = "x"
cpus = 2
[steps.c]
run = "x"
[steps.d]
run = "x"
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    let work = |f: Fake, id: &str| f.script(id, [Script::Work(Duration::from_secs(5))]);
    let fake = ["a", "b", "wide", "c", "d"].into_iter().fold(fake, work);
    let fake = Arc::new(fake);
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(2, false))
        .await
        .unwrap();
    assert!(report.success());
    let (max, together) = recorder.max_running_weight(&plan, 2);
    assert_eq!(max, 2);
    assert_eq!(fake.max_weight(), 2);
    for set in together {
        assert!(
            !set.contains("wide") || set.len() == 1,
            "`wide` ran together with {set:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cpus_above_jobs_is_clamped_and_still_runs() {
    let plan = plan(
        r#"version = 1
[steps.huge]
run = "x"
cpus = 64
[steps.small]
run = "x"
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = fake
        .script("huge", [Script::Work(Duration::from_secs(5))])
        .script("small", [Script::Work(Duration::from_secs(5))]);
    let fake = Arc::new(fake);
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(2, false))
        .await
        .unwrap();
    assert_eq!(state_of(&report, "huge"), StepState::Succeeded);
    assert_eq!(state_of(&report, "small"), StepState::Succeeded);
    let (max, together) = recorder.max_running_weight(&plan, 2);
    assert_eq!(max, 2);
    assert!(together.iter().all(|s| s.len() == 1), "{together:?}");
}

// --- retries ---------------------------------------------------------------------------

/// Checks `delay` is within equal jitter of `nominal`: `[nominal / 2, nominal]`.
fn assert_jittered(delay: Duration, nominal: Duration) {
    assert!(
        delay >= nominal / 2 && delay <= nominal,
        "delay {delay:?} outside [{:?}, {nominal:?}]",
        nominal / 2
    );
}

#[tokio::test(start_paused = true)]
async fn fails_twice_then_succeeds_within_two_retries() {
    let plan = plan(
        r#"version = 1
[steps.flaky]
run = "x"
retries = { count = 2, backoff = "exponential", delay = "1s" }
[steps.after]
run = "x"
needs = ["flaky"]
"#,
    );
    for seed in 0..16 {
        let (fake, _notes) = Fake::new(&plan, 1);
        let fake = Arc::new(fake.script(
            "flaky",
            [
                Script::End(Status::Failed),
                Script::End(Status::Failed),
                Script::End(Status::Succeeded),
            ],
        ));
        let recorder = Recorder::default();
        let before = tokio::time::Instant::now();
        let opts = DispatchOptions {
            seed,
            ..options(1, false)
        };
        let report = run_all(&plan, &fake, &recorder, &opts).await.unwrap();
        assert!(report.success());
        assert_eq!(state_of(&report, "flaky"), StepState::Succeeded);
        assert_eq!(attempts_of(&report, "flaky"), 3);
        assert_eq!(state_of(&report, "after"), StepState::Succeeded);
        let attempts: Vec<(u32, u32)> = fake
            .calls()
            .iter()
            .filter(|c| c.step == "flaky")
            .map(|c| (c.attempt, c.max_attempts))
            .collect();
        assert_eq!(attempts, [(1, 3), (2, 3), (3, 3)]);
        let retries = recorder.retries();
        assert_eq!(retries.len(), 2);
        assert_eq!((retries[0].0, retries[0].1), (2, Status::Failed));
        assert_eq!((retries[1].0, retries[1].1), (3, Status::Failed));
        assert_jittered(retries[0].2, Duration::from_secs(1));
        assert_jittered(retries[1].2, Duration::from_secs(2));
        // The backoff was waited out (on the paused clock) before the next attempt.
        assert!(before.elapsed() >= retries[0].2 + retries[1].2);
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_shapes_follow_the_policy() {
    let plan = plan(
        r#"version = 1
[steps.exp]
run = "x"
retries = { count = 5, backoff = "exponential", delay = "1s", max_delay = "3s" }
[steps.fixed]
run = "x"
retries = { count = 3, backoff = "fixed", delay = "500ms" }
[steps.none]
run = "x"
retries = { count = 2, backoff = "none", delay = "10s" }
[steps.default]
run = "x"
retries = 2
"#,
    );
    let failing = |n: usize| vec![Script::End(Status::Failed); n];
    let (fake, _notes) = Fake::new(&plan, 4);
    let fake = Arc::new(
        fake.script("exp", failing(6))
            .script("fixed", failing(4))
            .script("none", failing(3))
            .script("default", failing(3)),
    );
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(4, true))
        .await
        .unwrap();
    for (id, attempts) in [("exp", 6), ("fixed", 4), ("none", 3), ("default", 3)] {
        assert_eq!(state_of(&report, id), StepState::Failed, "{id}");
        assert_eq!(attempts_of(&report, id), attempts, "{id}");
    }
    let delays = |step: &str| -> Vec<Duration> {
        recorder
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Retrying { id, delay, .. } if id == step => Some(delay),
                _ => None,
            })
            .collect()
    };
    let secs = Duration::from_secs;
    let exp = delays("exp");
    assert_eq!(exp.len(), 5);
    for (d, nominal) in exp
        .iter()
        .zip([secs(1), secs(2), secs(3), secs(3), secs(3)])
    {
        assert_jittered(*d, nominal);
    }
    let fixed = delays("fixed");
    assert_eq!(fixed.len(), 3);
    for d in fixed {
        assert_jittered(d, Duration::from_millis(500));
    }
    assert_eq!(delays("none"), [Duration::ZERO, Duration::ZERO]);
    // The default policy: exponential from 1s.
    let default = delays("default");
    assert_eq!(default.len(), 2);
    assert_jittered(default[0], secs(1));
    assert_jittered(default[1], secs(2));
}

#[tokio::test(start_paused = true)]
async fn timed_out_attempts_are_retried_too() {
    let plan = plan(
        r#"version = 1
[steps.recovers]
run = "x"
timeout = "1s"
retries = 1
[steps.stuck]
run = "x"
timeout = "1s"
retries = 1
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = Arc::new(
        fake.script(
            "recovers",
            [
                Script::End(Status::TimedOut),
                Script::End(Status::Succeeded),
            ],
        )
        .script(
            "stuck",
            [Script::End(Status::TimedOut), Script::End(Status::TimedOut)],
        ),
    );
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(2, true))
        .await
        .unwrap();
    assert_eq!(state_of(&report, "recovers"), StepState::Succeeded);
    assert_eq!(attempts_of(&report, "recovers"), 2);
    assert_eq!(state_of(&report, "stuck"), StepState::TimedOut);
    assert_eq!(attempts_of(&report, "stuck"), 2);
    let statuses: Vec<Status> = recorder.retries().into_iter().map(|r| r.1).collect();
    assert_eq!(statuses, [Status::TimedOut, Status::TimedOut]);
}

#[tokio::test(start_paused = true)]
async fn cancelled_attempts_are_not_retried() {
    let plan = plan(
        r#"version = 1
[steps.a]
run = "x"
retries = 3
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 1);
    let fake = Arc::new(fake.script("a", [Script::End(Status::Cancelled)]));
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(1, false))
        .await
        .unwrap();
    assert_eq!(state_of(&report, "a"), StepState::Cancelled);
    assert_eq!(attempts_of(&report, "a"), 1);
    assert!(recorder.retries().is_empty());
    assert!(!report.success());
}

// --- failure handling ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn allowed_failures_let_dependents_run_and_the_run_succeed() {
    let plan = plan(
        r#"version = 1
[steps.lint]
run = "x"
allow_failure = true
retries = 1
[steps.build]
run = "x"
needs = ["lint"]
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 1);
    let fake = Arc::new(fake.script(
        "lint",
        [Script::End(Status::Failed), Script::End(Status::Failed)],
    ));
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(1, false))
        .await
        .unwrap();
    assert!(report.success());
    assert_eq!(state_of(&report, "lint"), StepState::AllowedFailure);
    assert_eq!(
        attempts_of(&report, "lint"),
        2,
        "allowed failures are still retried"
    );
    assert_eq!(state_of(&report, "build"), StepState::Succeeded);
    assert!(recorder.stopping().is_empty());
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_running_steps_and_skips_the_rest() {
    // Priorities: slow 2 (it has a dependent), bad 1, later 1: slow and bad take the two
    // slots; later waits.
    let plan = plan(
        r#"version = 1
[steps.slow]
run = "x"
[steps.bad]
run = "x"
[steps.later]
run = "x"
[steps.after-slow]
run = "x"
needs = ["slow"]
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = Arc::new(
        fake.script("slow", [Script::UntilCancelled(CancelLevel::Graceful)])
            .script("bad", [Script::End(Status::Failed)]),
    );
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(2, false))
        .await
        .unwrap();
    assert!(!report.success());
    assert!(!report.interrupted);
    assert_eq!(recorder.started(), ["slow", "bad"], "nothing new starts");
    assert_eq!(fake.levels("slow"), [CancelLevel::Graceful]);
    assert_eq!(state_of(&report, "slow"), StepState::Cancelled);
    assert_eq!(state_of(&report, "bad"), StepState::Failed);
    assert_eq!(
        state_of(&report, "later"),
        skipped("not started: stopped after `bad` failed")
    );
    assert_eq!(
        state_of(&report, "after-slow"),
        skipped("needs `slow`, which did not succeed")
    );
    assert_eq!(attempts_of(&report, "later"), 0);
    let stopping = recorder.stopping();
    assert_eq!(stopping.len(), 1);
    assert!(
        stopping[0].starts_with("stopped after `bad` failed"),
        "{stopping:?}"
    );
    // Results come in plan order, one per step.
    let ids: Vec<&str> = report.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["slow", "bad", "later", "after-slow"]);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_pending_retries() {
    let plan = plan(
        r#"version = 1
[steps.flaky]
run = "x"
retries = { count = 3, delay = "1h" }
[steps.bad]
run = "x"
"#,
    );
    // `bad` is held until `flaky` is waiting out its backoff, then fails.
    let gate = Arc::new(Notify::new());
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = Arc::new(
        fake.script("flaky", [Script::End(Status::Failed)])
            .script("bad", [Script::Held(gate.clone(), Status::Failed)]),
    );
    let (recorder, mut events) = Recorder::with_events();
    let driver = async {
        while !matches!(events.recv().await, Some(Ev::Retrying { .. })) {}
        gate.notify_one();
    };
    let report = run_driven(
        &plan,
        &fake,
        &recorder,
        &options(2, false),
        Cancel::never(),
        driver,
    )
    .await
    .unwrap();
    assert_eq!(state_of(&report, "bad"), StepState::Failed);
    assert_eq!(state_of(&report, "flaky"), StepState::Failed);
    assert_eq!(attempts_of(&report, "flaky"), 1, "the retry never starts");
    assert_eq!(fake.called_steps(), ["flaky", "bad"]);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_retried_once_the_run_stops() {
    let plan = plan(
        r#"version = 1
[steps.late]
run = "x"
retries = 2
[steps.bad]
run = "x"
"#,
    );
    // `late` ignores the cancellation and fails only after the run has begun to stop.
    let gate = Arc::new(Notify::new());
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = Arc::new(
        fake.script("late", [Script::Held(gate.clone(), Status::Failed)])
            .script("bad", [Script::End(Status::Failed)]),
    );
    let (recorder, mut events) = Recorder::with_events();
    let driver = async {
        while !matches!(events.recv().await, Some(Ev::Stopping { .. })) {}
        gate.notify_one();
    };
    let report = run_driven(
        &plan,
        &fake,
        &recorder,
        &options(2, false),
        Cancel::never(),
        driver,
    )
    .await
    .unwrap();
    assert_eq!(state_of(&report, "late"), StepState::Failed);
    assert_eq!(attempts_of(&report, "late"), 1);
    assert!(recorder.retries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn keep_going_finishes_independent_branches() {
    // a (prio 3) fails at once; c works for a while in the other slot and is not
    // cancelled; b and e, which need a, are skipped.
    let plan = plan(
        r#"version = 1
[steps.a]
run = "x"
[steps.b]
run = "x"
needs = ["a"]
[steps.e]
run = "x"
needs = ["b"]
[steps.c]
run = "x"
[steps.d]
run = "x"
needs = ["c"]
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = Arc::new(
        fake.script("a", [Script::End(Status::Failed)])
            .script("c", [Script::Work(Duration::from_secs(30))]),
    );
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(2, true))
        .await
        .unwrap();
    assert!(!report.success());
    assert_eq!(recorder.started(), ["a", "c", "d"]);
    assert!(fake.levels("c").is_empty(), "keep-going cancels nothing");
    assert!(recorder.stopping().is_empty());
    assert_eq!(state_of(&report, "a"), StepState::Failed);
    assert_eq!(
        state_of(&report, "b"),
        skipped("needs `a`, which did not succeed")
    );
    assert_eq!(
        state_of(&report, "e"),
        skipped("needs `b`, which did not succeed")
    );
    assert_eq!(state_of(&report, "c"), StepState::Succeeded);
    assert_eq!(state_of(&report, "d"), StepState::Succeeded);
}

// --- interruption ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn interrupt_stops_gracefully_then_immediately() {
    let plan = plan(
        r#"version = 1
[steps.one]
run = "x"
[steps.two]
run = "x"
[steps.three]
run = "x"
"#,
    );
    let (fake, mut notes) = Fake::new(&plan, 2);
    let fake = Arc::new(
        fake.script("one", [Script::UntilCancelled(CancelLevel::Immediate)])
            .script("two", [Script::UntilCancelled(CancelLevel::Immediate)]),
    );
    let recorder = Recorder::default();
    let prio = priorities(&plan, &StaticEstimator::default());
    let selection = Selection::all(&plan);
    let opts = options(2, false);
    let interrupt = CancelSource::new();
    let run = dispatch(
        &plan,
        &selection,
        &prio,
        fake.clone(),
        &recorder,
        &opts,
        interrupt.token(),
    );
    let driver = async {
        let mut started = vec![];
        while started.len() < 2 {
            if let Note::Started(id) = next_note(&mut notes).await {
                started.push(id);
            }
        }
        interrupt.cancel(CancelLevel::Graceful);
        let mut graceful = HashSet::new();
        while graceful.len() < 2 {
            match next_note(&mut notes).await {
                Note::Saw(id, CancelLevel::Graceful) => {
                    graceful.insert(id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        interrupt.cancel(CancelLevel::Immediate);
        started
    };
    let (report, started) = guarded(async { tokio::join!(run, driver) }).await;
    let report = report.unwrap();
    assert_eq!(started, ["one", "two"]);
    assert!(report.interrupted);
    assert!(!report.success());
    for id in ["one", "two"] {
        assert_eq!(
            fake.levels(id),
            [CancelLevel::Graceful, CancelLevel::Immediate],
            "{id}"
        );
        assert_eq!(state_of(&report, id), StepState::Cancelled);
    }
    assert_eq!(
        state_of(&report, "three"),
        skipped("not started: run interrupted")
    );
    assert_eq!(recorder.started(), ["one", "two"]);
    let stopping = recorder.stopping();
    assert_eq!(stopping.len(), 2, "{stopping:?}");
    assert!(stopping[0].starts_with("interrupted: "), "{stopping:?}");
    assert!(
        stopping[1].starts_with("interrupted again: "),
        "{stopping:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn interrupt_during_backoff_cancels_the_retry() {
    let plan = plan(
        r#"version = 1
[steps.flaky]
run = "x"
retries = { count = 3, delay = "1h" }
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 1);
    let fake = Arc::new(fake.script("flaky", [Script::End(Status::Failed)]));
    let (recorder, mut events) = Recorder::with_events();
    let interrupt = CancelSource::new();
    let driver = async {
        loop {
            if let Some(Ev::Retrying { .. }) = events.recv().await {
                break;
            }
        }
        interrupt.cancel(CancelLevel::Graceful);
    };
    let report = run_driven(
        &plan,
        &fake,
        &recorder,
        &options(1, false),
        interrupt.token(),
        driver,
    )
    .await
    .unwrap();
    assert!(report.interrupted);
    assert_eq!(state_of(&report, "flaky"), StepState::Failed);
    assert_eq!(attempts_of(&report, "flaky"), 1);
    assert_eq!(fake.calls().len(), 1);
}

// --- selection and faults --------------------------------------------------------------

const CHAIN_AND_ONE: &str = r#"version = 1
name = "sel"
[steps.fetch]
run = "x"
[steps.build]
run = "x"
needs = ["fetch"]
[steps.test]
run = "x"
needs = ["build"]
[steps.docs]
run = "x"
"#;

#[tokio::test(start_paused = true)]
async fn step_selection_runs_only_the_closure() {
    let plan = plan(CHAIN_AND_ONE);
    let selection = Selection::of(&plan, &["build".into()]).unwrap();
    assert_eq!(selection.len(), 2);
    assert!(selection.contains(0) && selection.contains(1));
    assert!(!selection.contains(2) && !selection.contains(3));
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = Arc::new(fake);
    let recorder = Recorder::default();
    let prio = priorities(&plan, &StaticEstimator::default());
    let report = guarded(dispatch(
        &plan,
        &selection,
        &prio,
        fake.clone(),
        &recorder,
        &options(2, false),
        Cancel::never(),
    ))
    .await
    .unwrap();
    assert!(report.success());
    assert_eq!(fake.called_steps(), ["fetch", "build"]);
    let ids: Vec<&str> = report.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["fetch", "build"]);
}

#[tokio::test(start_paused = true)]
async fn plan_limits_reach_the_sandbox_and_defaults_fill_the_rest() {
    let plan = plan(
        r#"version = 1

[sandbox]
limits = { cpu = 2, memory = "1GiB" }

[steps.inherit]
run = "x"

[steps.quarter]
run = "x"
sandbox = { limits = { cpu = 0.25, pids = 64 } }

[steps.plain]
run = "x"
sandbox = false
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 1);
    let fake = Arc::new(fake);
    let report = run_all(&plan, &fake, &Recorder::default(), &options(1, false))
        .await
        .unwrap();
    assert!(report.success());
    let limits: HashMap<String, Option<ci_intel_executor::Limits>> = fake
        .calls()
        .into_iter()
        .map(|c| (c.step, c.limits))
        .collect();
    let defaults = ci_intel_executor::Limits::default();
    assert_eq!(
        limits["inherit"],
        Some(ci_intel_executor::Limits {
            millicpus: Some(2000),
            memory: Some(1 << 30),
            ..defaults
        })
    );
    assert_eq!(
        limits["quarter"],
        Some(ci_intel_executor::Limits {
            millicpus: Some(250),
            memory: Some(1 << 30),
            pids: 64,
            ..defaults
        })
    );
    assert_eq!(limits["plain"], None);
}

#[test]
fn selection_of_names() {
    let plan = plan(CHAIN_AND_ONE);
    assert_eq!(Selection::of(&plan, &[]).unwrap(), Selection::all(&plan));
    let both = Selection::of(&plan, &["test".into(), "docs".into()]).unwrap();
    assert_eq!(both.len(), 4);

    let err = Selection::of(&plan, &["deploy".into()]).unwrap_err();
    let SelectionError::UnknownStep {
        id,
        plan: name,
        suggestion,
    } = &err;
    assert_eq!((id.as_str(), name.as_str()), ("deploy", "sel"));
    assert_eq!(suggestion, &None);
    assert_eq!(err.to_string(), "no step `deploy` in plan `sel`");

    let SelectionError::UnknownStep { suggestion, .. } =
        Selection::of(&plan, &["biuld".into()]).unwrap_err();
    assert_eq!(suggestion.as_deref(), Some("build"));
    // An unknown id fails the selection even next to known ones.
    assert!(Selection::of(&plan, &["build".into(), "tset".into()]).is_err());
}

#[tokio::test(start_paused = true)]
async fn an_executor_fault_aborts_the_run() {
    let plan = plan(
        r#"version = 1
[steps.slow]
run = "x"
[steps.broken]
run = "x"
[steps.later]
run = "x"
needs = ["slow"]
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = Arc::new(
        fake.script("slow", [Script::UntilCancelled(CancelLevel::Immediate)])
            .script("broken", [Script::Fault]),
    );
    let recorder = Recorder::default();
    let err = run_all(&plan, &fake, &recorder, &options(2, false))
        .await
        .unwrap_err();
    let DispatchError::Executor { step, source } = &err;
    assert_eq!(step, "broken");
    assert!(matches!(source, ExecuteError::Pipe(_)), "{source:?}");
    assert_eq!(err.to_string(), "could not execute step `broken`");
    // The running step was killed, and nothing else started.
    assert_eq!(fake.levels("slow"), [CancelLevel::Immediate]);
    assert_eq!(fake.called_steps(), ["slow", "broken"]);
}

// --- priorities ------------------------------------------------------------------------

const DIAMOND: &str = r#"version = 1
[steps.top]
run = "x"
[steps.left]
run = "x"
needs = ["top"]
[steps.right]
run = "x"
needs = ["top"]
[steps.bottom]
run = "x"
needs = ["left", "right"]
"#;

#[test]
fn priorities_of_a_diamond() {
    let plan = plan(DIAMOND);
    let secs = Duration::from_secs;
    let uniform = priorities(&plan, &StaticEstimator::default());
    assert_eq!(uniform, [secs(3), secs(2), secs(2), secs(1)]);

    struct Table;
    impl DurationEstimator for Table {
        fn estimate(&self, step: &Step) -> Duration {
            Duration::from_secs(match step.id.as_str() {
                "top" => 1,
                "left" => 5,
                "right" => 2,
                _ => 1,
            })
        }
    }
    // bottom 1; left 5+1; right 2+1; top 1+max(6, 3).
    let weighted = priorities(&plan, &Table);
    assert_eq!(weighted, [secs(7), secs(6), secs(3), secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn slots_wait_for_a_wide_critical_step_instead_of_backfilling() {
    // `first` ends while `n1` still runs; `wide` (cpus = 2, on the longest path) is then the
    // most critical ready step but does not fit. The free slot must wait for it rather than
    // go to `n2`/`n3`, which would push `wide` back until both of them are done.
    let plan = plan(
        r#"version = 1
[steps.first]
run = "x"
[steps.wide]
run = "x"
needs = ["first"]
cpus = 2
[steps.last]
run = "x"
needs = ["wide"]
[steps.n1]
run = "x"
[steps.n2]
run = "x"
[steps.n3]
run = "x"
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    let fake = fake
        .script("first", [Script::Work(Duration::from_secs(2))])
        .script("wide", [Script::Work(Duration::from_secs(5))])
        .script("last", [Script::Work(Duration::from_secs(1))]);
    let work = |f: Fake, id: &str| f.script(id, [Script::Work(Duration::from_secs(5))]);
    let fake = Arc::new(["n1", "n2", "n3"].into_iter().fold(fake, work));
    let recorder = Recorder::default();
    let report = run_all(&plan, &fake, &recorder, &options(2, false))
        .await
        .unwrap();
    assert!(report.success());
    assert_eq!(
        recorder.started(),
        ["first", "n1", "wide", "last", "n2", "n3"],
        "`wide` must start as soon as two slots are free"
    );
}

// --- chaos -----------------------------------------------------------------------------

/// A plan of `n` independent sandboxed steps with one retry each, some on the network.
fn chaos_plan(extra: &str) -> Plan {
    let mut src = String::from("version = 1\n");
    src.push_str(extra);
    for i in 0..24 {
        src.push_str(&format!(
            "[steps.s{i}]\nrun = \"x\"\nretries = 1\n{}",
            if i % 3 == 0 {
                "sandbox = { network = \"allowlist\", allow = [\"example.com:443\"] }\n"
            } else {
                ""
            }
        ));
    }
    plan(&src)
}

fn chaos_options(plan: &Plan, spec: &str) -> DispatchOptions {
    let spec: ci_intel_scheduler::chaos::ChaosSpec = spec.parse().unwrap();
    let seed = spec.seed.unwrap();
    let chaos = ci_intel_scheduler::chaos::Chaos::new(
        &spec,
        plan,
        vec![Duration::from_secs(2); plan.steps.len()],
        true,
        false,
        seed,
    )
    .unwrap();
    DispatchOptions {
        chaos: Some(Arc::new(chaos)),
        ..options(4, true)
    }
}

/// The faults the fake was given, by (step, attempt), in a stable order.
async fn schedule_of(plan: &Plan, spec: &str) -> Vec<(String, u32, String)> {
    let (fake, _notes) = Fake::new(plan, 4);
    let fake = Arc::new(fake);
    let recorder = Recorder::default();
    run_all(plan, &fake, &recorder, &chaos_options(plan, spec))
        .await
        .unwrap();
    let mut given: Vec<(String, u32, String)> = fake
        .calls()
        .into_iter()
        .filter_map(|c| Some((c.step, c.attempt, c.chaos?)))
        .collect();
    given.sort();
    given
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
    let plan = chaos_plan("");
    let a = schedule_of(&plan, "seed=42,rate=0.5").await;
    let b = schedule_of(&plan, "seed=42,rate=0.5").await;
    assert!(
        a.len() >= 4,
        "a rate of 0.5 over 24 steps injects faults: {a:?}"
    );
    assert_eq!(a, b);
    let c = schedule_of(&plan, "seed=43,rate=0.5").await;
    assert_ne!(a, c);
    // Network faults only where the step reaches the network through the proxy; and every
    // fault the spec allows shows up somewhere over a few seeds.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..8 {
        for (step, _, what) in schedule_of(&plan, &format!("seed={seed},rate=0.9")).await {
            let fault = what.split(' ').next().unwrap().to_string();
            let n: usize = step[1..].parse().unwrap();
            if fault.ends_with("_net") {
                assert_eq!(n % 3, 0, "{fault} given to {step}, which has no network");
            }
            seen.insert(fault);
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "corrupt_cache",
            "cpu_stress",
            "delay_net",
            "disk_fill",
            "drop_net",
            "kill_job"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn rate_zero_and_the_kill_switch_inject_nothing() {
    let plan = chaos_plan("");
    assert_eq!(schedule_of(&plan, "seed=1,rate=0").await, []);
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("chaos-off");
    let plan = chaos_plan(&format!("[chaos]\nkill_switch = \"{}\"\n", off.display()));
    assert!(!schedule_of(&plan, "seed=1,rate=1").await.is_empty());
    std::fs::write(&off, "").unwrap();
    assert_eq!(schedule_of(&plan, "seed=1,rate=1").await, []);
}

#[tokio::test(start_paused = true)]
async fn the_plan_allowlist_and_step_opt_outs_limit_the_faults() {
    let plan = plan(
        r#"version = 1
[chaos]
faults = ["kill_job", "cpu_stress"]
[steps.a]
run = "x"
[steps.b]
run = "x"
chaos = false
[steps.c]
run = "x"
chaos = ["cpu_stress"]
"#,
    );
    for seed in 0..20 {
        for (step, _, what) in schedule_of(&plan, &format!("seed={seed},rate=1")).await {
            assert_ne!(step, "b", "an opted-out step got {what}");
            assert!(
                what.starts_with("kill_job") || what.starts_with("cpu_stress"),
                "{what}"
            );
            if step == "c" {
                assert!(what.starts_with("cpu_stress"), "{what}");
            }
        }
    }
    // Asking only for what the plan forbids is an error before anything runs.
    let spec: ci_intel_scheduler::chaos::ChaosSpec = "seed=1,faults=disk_fill".parse().unwrap();
    let err =
        ci_intel_scheduler::chaos::Chaos::new(&spec, &plan, vec![], true, false, 1).unwrap_err();
    assert!(err.to_string().contains("kill_job, cpu_stress"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_faulted_attempt_is_retried_and_its_trial_kept_with_the_result() {
    let plan = plan(
        r#"version = 1
[steps.flaky]
run = "x"
retries = 1
[steps.once]
run = "x"
"#,
    );
    let (fake, _notes) = Fake::new(&plan, 2);
    // The fault makes the first attempt of each fail; the retry succeeds.
    let fake = Arc::new(
        fake.script(
            "flaky",
            [Script::End(Status::Failed), Script::End(Status::Succeeded)],
        )
        .script("once", [Script::End(Status::Failed)]),
    );
    let recorder = Recorder::default();
    // kill_job at rate 1 for first attempts: seed chosen so that both first attempts get it
    // (every attempt draws below a rate of 1).
    let opts = chaos_options(&plan, "seed=5,kill_job=1");
    let report = run_all(&plan, &fake, &recorder, &opts).await.unwrap();
    let flaky = report.results.iter().find(|r| r.id == "flaky").unwrap();
    assert_eq!(flaky.state, StepState::Succeeded);
    assert_eq!(
        flaky.chaos.len(),
        2,
        "both attempts drew a fault: {:?}",
        flaky.chaos
    );
    assert_eq!(flaky.chaos[0].attempt, 1);
    assert!(
        flaky.chaos[0].expect_recovery,
        "a retry is left after attempt 1"
    );
    assert!(
        !flaky.chaos[1].expect_recovery,
        "no retry is left after attempt 2"
    );
    assert_eq!(flaky.chaos[0].attempt_status, Status::Failed);
    let once = report.results.iter().find(|r| r.id == "once").unwrap();
    assert_eq!(once.chaos.len(), 1);
    assert!(
        !once.chaos[0].expect_recovery,
        "no retries: a clean failure is expected"
    );
    // Every decision reached the observer, with the fault in its line.
    let lines: Vec<String> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Chaos { line, .. } => Some(line),
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains("inject=kill_job")),
        "{lines:?}"
    );
}
