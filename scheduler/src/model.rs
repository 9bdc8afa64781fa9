//! The online runtime model: predicts each step's p50, p80 and p90 before it runs and
//! learns from every step that finishes.
//!
//! Everything is learned in log space, `x = ln(1 + ms)`, where step durations are close to
//! normal and errors are relative. The layers, most specific first:
//!
//! - **baseline**: a fast and a slow exponentially weighted mean of `x` (whichever
//!   predicted better recently serves) and the variance of its residuals, kept per
//!   (step, cache outcome, runner class), per (step, cache outcome), and used across cache
//!   outcomes when only the other is known. A step never seen gets the plan-wide prior of
//!   its cache outcome (the median of the known steps' means).
//! - **bias correction**: one multiplicative factor for every known step's prediction, the
//!   weighted mean of recent residuals shrunk by its own noise, so that a machine that is
//!   slower today moves the predictions once a few steps show it, and noise does not.
//! - **quantiles**: p50, p80 and p90 are the mean plus a learned multiple of the step's
//!   spread. The multiples start at the normal distribution's and follow the observed
//!   standardised residuals (an online, Robbins–Monro quantile estimate), so a p90 that
//!   covers too little widens by itself.
//! - **regression**: per (step, cache outcome), recursive least squares of `x` on
//!   `ln(1 + input bytes)` and `ln(1 + changed files)`, centred. It serves a step only once
//!   it has predicted that step's last observations better than the baseline did, each
//!   prediction made before the observation it is scored on (held out, prequentially).
//!
//! [`Prediction::source`] says which layer served. docs/scheduling.md has the constants.

use std::collections::HashMap;
use std::time::Duration;

use crate::estimate::DurationEstimator;
use crate::plan::Step;

/// Weight of the newest observation in a step's fast mean and in its variance.
const ALPHA: f64 = 0.3;
/// Weight of the newest observation in a step's slow mean.
const SLOW_ALPHA: f64 = 0.1;
/// Weight of the newest residual in the bias correction.
const BIAS_ALPHA: f64 = 0.2;
/// Step size of the online quantile estimates.
const QUANTILE_RATE: f64 = 0.03;
/// The spread assumed of a step with a single observation (log space: about ±30%).
const PRIOR_SD: f64 = 0.3;
/// Observations a (step, outcome, runner class) key needs before it serves.
const MIN_RUNNER_OBS: u32 = 3;
/// Held-out predictions the regression must have made before it may serve.
const MIN_REGRESSION_SCORED: u32 = 3;
/// How much better than the baseline (relative error) the regression must be to serve.
const REGRESSION_MARGIN: f64 = 0.9;
/// ... and by at least this much (mean absolute log error, about 3%).
const MIN_REGRESSION_GAIN: f64 = 0.03;
/// Largest residual the bias and the quantiles learn from: a step that took ten times
/// longer once says little about the others.
const MAX_RESIDUAL: f64 = 1.0;
/// Forgetting factor of the regression.
const RLS_LAMBDA: f64 = 0.97;

/// The quantiles predicted, in order.
const TAUS: [f64; 3] = [0.5, 0.8, 0.9];
/// Their standard normal z values, where the learned multiples start.
const Z: [f64; 3] = [0.0, 0.841_621, 1.281_552];

/// What is known of a step's inputs before it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Bytes of its input files.
    pub input_bytes: Option<u64>,
    /// Its input files changed since its previous run.
    pub changed_files: Option<u64>,
}

impl Features {
    /// `ln(1 + bytes)`, when known, and `ln(1 + changed files)`, when known.
    fn logs(self) -> Option<(f64, Option<f64>)> {
        Some((
            (self.input_bytes? as f64).ln_1p(),
            self.changed_files.map(|c| (c as f64).ln_1p()),
        ))
    }
}

/// A step to predict.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The step id.
    pub step: &'a str,
    /// Whether the prediction is for a cache hit (a restore) or a miss (a run).
    pub cache_hit: bool,
    /// The machine it will run on ([`crate::history::runner_class`]).
    pub runner_class: &'a str,
    /// What is known of its inputs.
    pub features: Features,
}

/// A finished step to learn from.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// What was predicted (the step, its outcome, runner and features).
    pub query: Query<'a>,
    /// How long it took.
    pub duration: Duration,
}

/// Which layer of the model served a prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Nothing known of the step: the plan-wide prior.
    Prior,
    /// The step's runs with the other cache outcome.
    Step,
    /// The step's runs with this cache outcome, on any runner.
    StepOutcome,
    /// The step's runs with this cache outcome on this runner class.
    StepOutcomeRunner,
    /// The feature regression.
    Regression,
}

impl Source {
    /// Its name in reports and in the history.
    pub fn name(self) -> &'static str {
        match self {
            Source::Prior => "prior",
            Source::Step => "step",
            Source::StepOutcome => "step+outcome",
            Source::StepOutcomeRunner => "step+outcome+runner",
            Source::Regression => "regression",
        }
    }

    /// The source named `name`.
    pub fn from_name(name: &str) -> Option<Source> {
        [
            Source::Prior,
            Source::Step,
            Source::StepOutcome,
            Source::StepOutcomeRunner,
            Source::Regression,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A predicted duration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// The median.
    pub p50: Duration,
    /// The 80th percentile: what the scheduler orders by.
    pub p80: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The layer that served it.
    pub source: Source,
}

/// Two exponentially weighted means of log-duration, a fast one (the newest observation
/// weighs [`ALPHA`]) that follows drift and a slow one ([`SLOW_ALPHA`]) that averages noise
/// away, each a plain running mean while it has fewer observations than its weight implies.
/// The one whose recent predictions erred less serves; the variance is that of the served
/// mean's prediction residuals, so it includes the mean's own error.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stats {
    fast: f64,
    slow: f64,
    /// Weighted mean absolute residual of each mean's predictions.
    fast_err: f64,
    slow_err: f64,
    var: f64,
    n: u32,
}

impl Stats {
    fn first(x: f64) -> Stats {
        Stats {
            fast: x,
            slow: x,
            fast_err: 0.0,
            slow_err: 0.0,
            var: 0.0,
            n: 1,
        }
    }

    /// The mean that serves.
    fn mean(&self) -> f64 {
        if self.slow_err < self.fast_err {
            self.slow
        } else {
            self.fast
        }
    }

    fn push(&mut self, x: f64) {
        let step = 1.0 / f64::from(self.n + 1);
        let residual = x - self.mean();
        let beta = ALPHA.max(step);
        self.var += beta * (residual * residual - self.var);
        self.fast_err += beta * ((x - self.fast).abs() - self.fast_err);
        self.slow_err += beta * ((x - self.slow).abs() - self.slow_err);
        self.fast += ALPHA.max(step) * (x - self.fast);
        self.slow += SLOW_ALPHA.max(step) * (x - self.slow);
        self.n += 1;
    }

    /// The spread of the next observation: the observed one, widened while few are known.
    fn sd(&self) -> f64 {
        (self.var + PRIOR_SD * PRIOR_SD / f64::from(self.n)).sqrt()
    }
}

/// Recursive least squares with forgetting of `x` on an intercept and the features' logs,
/// centred on the first observation's (uncentred, `ln(bytes)` near 16 would make the
/// intercept and the slope all but collinear).
#[derive(Clone, Debug)]
struct Rls {
    /// The first observation's features: the input bytes', and the changed files' once an
    /// observation had them (a missing count is taken as unchanged from the origin).
    origin: (f64, Option<f64>),
    w: [f64; 3],
    p: [[f64; 3]; 3],
    /// Weighted mean squared residual, for the spread.
    mse: f64,
    n: u32,
    /// Held-out predictions scored, and the weighted mean absolute log error of the
    /// regression and of the baseline on them.
    scored: u32,
    err: f64,
    baseline_err: f64,
}

impl Rls {
    fn new(x0: f64, origin: (f64, Option<f64>)) -> Rls {
        let mut p = [[0.0; 3]; 3];
        for (i, row) in p.iter_mut().enumerate() {
            row[i] = 100.0;
        }
        Rls {
            origin,
            w: [x0, 0.0, 0.0],
            p,
            mse: PRIOR_SD * PRIOR_SD,
            n: 0,
            scored: 0,
            err: 0.0,
            baseline_err: 0.0,
        }
    }

    fn vector(&self, (bytes, changed): (f64, Option<f64>)) -> [f64; 3] {
        let changed = match (changed, self.origin.1) {
            (Some(c), Some(o)) => c - o,
            _ => 0.0,
        };
        [1.0, bytes - self.origin.0, changed]
    }

    fn predict(&self, v: &[f64; 3]) -> f64 {
        (0..3).map(|i| self.w[i] * v[i]).sum()
    }

    fn push(&mut self, v: &[f64; 3], y: f64) {
        let mut pv = [0.0; 3];
        for (i, out) in pv.iter_mut().enumerate() {
            *out = (0..3).map(|j| self.p[i][j] * v[j]).sum();
        }
        let denom = RLS_LAMBDA + (0..3).map(|i| v[i] * pv[i]).sum::<f64>();
        let gain = pv.map(|g| g / denom);
        let residual = y - self.predict(v);
        for (w, g) in self.w.iter_mut().zip(gain) {
            *w += g * residual;
        }
        let mut next = [[0.0; 3]; 3];
        for (i, row) in next.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = (self.p[i][j] - gain[i] * pv[j]) / RLS_LAMBDA;
            }
        }
        self.p = next;
        if self.n > 0 {
            self.mse += ALPHA * (residual * residual - self.mse);
        }
        self.n += 1;
    }

    fn serves(&self) -> bool {
        self.scored >= MIN_REGRESSION_SCORED
            && self.err < REGRESSION_MARGIN * self.baseline_err
            && self.baseline_err - self.err > MIN_REGRESSION_GAIN
    }
}

/// Everything learned of one step. Index 0 of each pair is a miss (a run), 1 a hit.
#[derive(Clone, Debug, Default)]
struct StepState {
    /// Per cache outcome, on any runner.
    outcome: [Option<Stats>; 2],
    /// Per runner class and cache outcome.
    runner: HashMap<String, [Option<Stats>; 2]>,
    /// Per cache outcome, the feature regression.
    regression: [Option<Rls>; 2],
}

/// Pushes `x` into `slot`, starting it when empty.
fn push(slot: &mut Option<Stats>, x: f64) {
    match slot {
        Some(s) => s.push(x),
        None => *slot = Some(Stats::first(x)),
    }
}

/// The learned state for one plan (steps are named by id).
#[derive(Clone, Debug)]
pub struct RuntimeModel {
    steps: HashMap<String, StepState>,
    /// The weighted mean log residual of the baseline.
    bias: f64,
    /// The weighted mean squared residual, for the bias's standard error.
    bias_sq: f64,
    /// Learned multiples of the spread for p50, p80, p90.
    multiples: [f64; 3],
    /// For a plan with no history at all.
    default_prior: Duration,
    /// The plan priors of a miss and a hit, computed when first needed after an update.
    priors: std::cell::OnceCell<[f64; 2]>,
}

fn to_log(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).ln_1p()
}

fn from_log(x: f64) -> Duration {
    let ms = x.exp_m1().max(0.0);
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
}

impl RuntimeModel {
    /// A model that knows nothing: every step is `default_prior` until it has run.
    pub fn new(default_prior: Duration) -> RuntimeModel {
        RuntimeModel {
            steps: HashMap::new(),
            bias: 0.0,
            bias_sq: 0.0,
            multiples: Z,
            default_prior,
            priors: std::cell::OnceCell::new(),
        }
    }

    /// A model that has learned from `runs` (oldest first): every step that succeeded, in
    /// the order steps finished.
    pub fn from_history(runs: &[crate::history::PastRun], default_prior: Duration) -> Self {
        let mut model = RuntimeModel::new(default_prior);
        for run in runs {
            for s in run.steps.iter().filter(|s| s.state == "succeeded") {
                model.update(&Observation {
                    query: Query {
                        step: &s.step,
                        cache_hit: s.cache_hit,
                        runner_class: &run.runner_class,
                        features: Features {
                            input_bytes: s.input_bytes,
                            changed_files: s.changed_files,
                        },
                    },
                    duration: s.duration,
                });
            }
        }
        model
    }

    /// Whether the model has learned anything.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The bias correction as applied: the weighted mean residual shrunk towards zero by
    /// its own noise (James–Stein), so that noise alone does not move the predictions but
    /// a systematic shift does.
    fn applied_bias(&self) -> f64 {
        let var = (self.bias_sq - self.bias * self.bias).max(0.0);
        // Two standard errors: chance alone passes that one time in twenty.
        let se2 = 4.0 * var * BIAS_ALPHA / (2.0 - BIAS_ALPHA);
        let b2 = self.bias * self.bias;
        if b2 <= se2 {
            0.0
        } else {
            self.bias * (1.0 - se2 / b2)
        }
    }

    /// The baseline's mean and spread for `q` from what is known of its step, and the key
    /// that served; `None` for a step never seen.
    fn known(&self, q: &Query<'_>) -> Option<(f64, f64, Source)> {
        let state = self.steps.get(q.step)?;
        let o = usize::from(q.cache_hit);
        let (stats, source) = if let Some(s) = state
            .runner
            .get(q.runner_class)
            .and_then(|r| r[o].as_ref())
            .filter(|s| s.n >= MIN_RUNNER_OBS)
        {
            (s, Source::StepOutcomeRunner)
        } else if let Some(s) = &state.outcome[o] {
            (s, Source::StepOutcome)
        } else {
            (state.outcome[1 - o].as_ref()?, Source::Step)
        };
        Some((stats.mean() + self.applied_bias(), stats.sd(), source))
    }

    /// The baseline's mean and spread for `q`, and the key that served.
    fn baseline(&self, q: &Query<'_>) -> (f64, f64, Source) {
        self.known(q).unwrap_or_else(|| {
            let prior = self.priors.get_or_init(|| self.priors());
            // A guess for a step never seen is wide: a factor of about three either way.
            (prior[usize::from(q.cache_hit)], 1.0, Source::Prior)
        })
    }

    /// The plan-wide priors of a miss and of a hit: the median of the steps' means with
    /// that outcome, else with the other, else the default.
    fn priors(&self) -> [f64; 2] {
        let median = |o: usize| {
            let mut v: Vec<f64> = self
                .steps
                .values()
                .filter_map(|s| s.outcome[o].as_ref().map(Stats::mean))
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let (miss, hit) = (median(0), median(1));
        let default = to_log(self.default_prior);
        [
            miss.or(hit).unwrap_or(default),
            hit.or(miss).unwrap_or(default),
        ]
    }

    /// The prediction for `q`.
    pub fn predict(&self, q: &Query<'_>) -> Prediction {
        let (mean, sd, source) = match self.regression_for(q) {
            Some((rls, v)) => (rls.predict(&v), rls.mse.sqrt(), Source::Regression),
            None => self.baseline(q),
        };
        let [p50, p80, p90] = self.multiples.map(|m| from_log(mean + m * sd));
        Prediction {
            p50,
            p80: p80.max(p50),
            p90: p90.max(p80).max(p50),
            source,
        }
    }

    fn regression_for(&self, q: &Query<'_>) -> Option<(&Rls, [f64; 3])> {
        let logs = q.features.logs()?;
        let rls = self.steps.get(q.step)?.regression[usize::from(q.cache_hit)].as_ref()?;
        rls.serves().then(|| (rls, rls.vector(logs)))
    }

    /// Learns from one finished step. Call it in the order steps finished.
    pub fn update(&mut self, o: &Observation<'_>) {
        let q = &o.query;
        let x = to_log(o.duration);
        // Score the prediction made before this observation, then learn from it. A step
        // (or cache outcome) never seen has nothing to score: its prediction was the prior.
        let known = self.known(q);
        // The quantiles learn from the prediction that served, standardised by its spread;
        // the bias only from the baseline's own (step, outcome, runner) key where it
        // served: a hit predicted from misses, or one runner from another, is the wrong
        // key, not a slow machine, and a step the regression served moved because its
        // inputs did.
        let served = match self.regression_for(q) {
            Some((rls, v)) => Some((rls.predict(&v), rls.mse.sqrt(), Source::Regression)),
            None => known.filter(|k| k.2 == Source::StepOutcomeRunner),
        };
        if let Some((mean, sd, source)) = served {
            let z = ((x - mean) / sd).clamp(-4.0, 4.0);
            for (m, tau) in self.multiples.iter_mut().zip(TAUS) {
                let below = if z <= *m { 1.0 } else { 0.0 };
                *m += QUANTILE_RATE * (tau - below);
            }
            if source == Source::StepOutcomeRunner {
                // The bias is the residual of the unbiased mean.
                let residual =
                    (x - (mean - self.applied_bias())).clamp(-MAX_RESIDUAL, MAX_RESIDUAL);
                self.bias += BIAS_ALPHA * (residual - self.bias);
                self.bias_sq += BIAS_ALPHA * (residual * residual - self.bias_sq);
            }
        }
        let outcome = usize::from(q.cache_hit);
        if !self.steps.contains_key(q.step) {
            self.steps.insert(q.step.to_string(), StepState::default());
        }
        let Some(state) = self.steps.get_mut(q.step) else {
            return;
        };
        if let Some(logs) = q.features.logs() {
            let rls = state.regression[outcome].get_or_insert_with(|| Rls::new(x, logs));
            if rls.origin.1.is_none() {
                rls.origin.1 = logs.1;
            }
            let v = rls.vector(logs);
            if let (true, Some((mean, _, _))) = (rls.n >= 2, known) {
                let err = (rls.predict(&v) - x).abs();
                let base = (mean - x).abs();
                if rls.scored == 0 {
                    rls.err = err;
                    rls.baseline_err = base;
                } else {
                    rls.err += ALPHA * (err - rls.err);
                    rls.baseline_err += ALPHA * (base - rls.baseline_err);
                }
                rls.scored += 1;
            }
            rls.push(&v, x);
        }
        if !state.runner.contains_key(q.runner_class) {
            state
                .runner
                .insert(q.runner_class.to_string(), [None, None]);
        }
        if let Some(r) = state.runner.get_mut(q.runner_class) {
            push(&mut r[outcome], x);
        }
        push(&mut state.outcome[outcome], x);
        self.priors = std::cell::OnceCell::new();
    }

    /// How often `step` was a cache hit recently (0 when never seen).
    fn hit_share(&self, step: &str) -> f64 {
        let Some(state) = self.steps.get(step) else {
            return 0.0;
        };
        let n = |o: usize| state.outcome[o].as_ref().map_or(0.0, |s| f64::from(s.n));
        let (hits, misses) = (n(1), n(0));
        if hits + misses == 0.0 {
            0.0
        } else {
            hits / (hits + misses)
        }
    }

    /// The estimator the scheduler orders by on `runner_class`: each step's p80 as a run
    /// (a miss), or, for a step that was ever restored, the p80s of a hit and a miss
    /// weighted by how often each happened.
    pub fn estimator<'a>(&'a self, runner_class: &'a str) -> ModelEstimator<'a> {
        ModelEstimator {
            model: self,
            runner_class,
        }
    }
}

/// [`RuntimeModel`] as a [`DurationEstimator`]: see [`RuntimeModel::estimator`].
#[derive(Clone, Copy, Debug)]
pub struct ModelEstimator<'a> {
    model: &'a RuntimeModel,
    runner_class: &'a str,
}

impl DurationEstimator for ModelEstimator<'_> {
    fn estimate(&self, step: &Step) -> Duration {
        let query = |cache_hit| Query {
            step: &step.id,
            cache_hit,
            runner_class: self.runner_class,
            features: Features::default(),
        };
        let miss = self.model.predict(&query(false)).p80;
        let share = self.model.hit_share(&step.id);
        if share == 0.0 {
            return miss;
        }
        let hit = self.model.predict(&query(true)).p80;
        hit.mul_f64(share) + miss.mul_f64(1.0 - share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q<'a>(step: &'a str, hit: bool) -> Query<'a> {
        Query {
            step,
            cache_hit: hit,
            runner_class: "r",
            features: Features::default(),
        }
    }

    fn learn(m: &mut RuntimeModel, step: &str, hit: bool, ms: u64) {
        m.update(&Observation {
            query: q(step, hit),
            duration: Duration::from_millis(ms),
        });
    }

    fn ape(p: Duration, actual_ms: u64) -> f64 {
        (p.as_secs_f64() * 1000.0 - actual_ms as f64).abs() / actual_ms as f64
    }

    #[test]
    fn a_new_step_gets_the_prior_and_a_steady_one_its_duration() {
        let mut m = RuntimeModel::new(Duration::from_secs(7));
        let p = m.predict(&q("a", false));
        assert_eq!(p.source, Source::Prior);
        assert!(ape(p.p50, 7000) < 0.01, "{p:?}");
        for _ in 0..5 {
            learn(&mut m, "a", false, 2000);
        }
        let p = m.predict(&q("a", false));
        assert_eq!(p.source, Source::StepOutcomeRunner);
        assert!(ape(p.p50, 2000) < 0.05, "{p:?}");
        assert!(p.p50 <= p.p80 && p.p80 <= p.p90, "{p:?}");
        // A new step now gets the median of the known ones, not the default.
        let new = m.predict(&q("b", false));
        assert_eq!(new.source, Source::Prior);
        assert!(ape(new.p50, 2000) < 0.05, "{new:?}");
    }

    #[test]
    fn hits_and_misses_are_learned_apart() {
        let mut m = RuntimeModel::new(Duration::from_secs(1));
        for i in 0..10 {
            learn(
                &mut m,
                "build",
                i % 2 == 0,
                if i % 2 == 0 { 50 } else { 20_000 },
            );
        }
        let hit = m.predict(&q("build", true));
        let miss = m.predict(&q("build", false));
        assert!(ape(hit.p50, 50) < 0.1, "{hit:?}");
        assert!(ape(miss.p50, 20_000) < 0.1, "{miss:?}");
        // Scheduling weighs the two by how often each happened.
        let plan = crate::parse_plan(
            std::path::Path::new("p.toml"),
            "version = 1\n[steps.build]\nrun = \"true\"\n",
        )
        .unwrap();
        let e = m.estimator("r").estimate(&plan.steps[0]);
        assert!(e > hit.p80 && e < miss.p80, "{e:?}");
    }

    #[test]
    fn another_runner_class_is_used_only_once_it_has_enough_runs() {
        let mut m = RuntimeModel::new(Duration::from_secs(1));
        for _ in 0..5 {
            learn(&mut m, "a", false, 1000);
        }
        let fast = |m: &mut RuntimeModel| {
            m.update(&Observation {
                query: Query {
                    runner_class: "fast",
                    ..q("a", false)
                },
                duration: Duration::from_millis(100),
            });
        };
        fast(&mut m);
        let on_fast = Query {
            runner_class: "fast",
            ..q("a", false)
        };
        assert_eq!(m.predict(&on_fast).source, Source::StepOutcome);
        fast(&mut m);
        fast(&mut m);
        let p = m.predict(&on_fast);
        assert_eq!(p.source, Source::StepOutcomeRunner);
        assert!(ape(p.p50, 100) < 0.1, "{p:?}");
    }

    #[test]
    fn the_p90_covers_about_nine_in_ten_of_noisy_runs() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut m = RuntimeModel::new(Duration::from_secs(1));
        let (mut covered, mut scored) = (0, 0);
        for i in 0..2000 {
            let step = format!("s{}", i % 20);
            // Log-normal noise, sd 0.4 around a per-step level.
            let z: f64 = (0..12).map(|_| rng.f64()).sum::<f64>() - 6.0;
            let ms = (1000.0 * (1.0 + (i % 20) as f64) * (0.4 * z).exp()) as u64;
            if i >= 400 {
                let p = m.predict(&q(&step, false));
                scored += 1;
                if p.p90 >= Duration::from_millis(ms) {
                    covered += 1;
                }
            }
            learn(&mut m, &step, false, ms);
        }
        let coverage = f64::from(covered) / f64::from(scored);
        assert!((0.85..=0.95).contains(&coverage), "{coverage}");
    }

    #[test]
    fn a_slower_day_moves_every_step() {
        let mut m = RuntimeModel::new(Duration::from_secs(1));
        for _ in 0..10 {
            for s in ["a", "b", "c", "d"] {
                learn(&mut m, s, false, 1000);
            }
        }
        // Today the machine is half as fast: a, b and c have shown it, d has not run yet.
        for s in ["a", "b", "c"] {
            learn(&mut m, s, false, 2000);
        }
        let d = m.predict(&q("d", false)).p50.as_millis();
        assert!(d > 1150, "{d}");
    }

    #[test]
    fn the_regression_serves_only_where_it_predicts_better() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut m = RuntimeModel::new(Duration::from_secs(1));
        let with = |bytes: u64| Query {
            features: Features {
                input_bytes: Some(bytes),
                changed_files: Some(1),
            },
            ..q("compile", false)
        };
        // Duration proportional to input bytes, which vary tenfold from run to run.
        for _ in 0..30 {
            let bytes = rng.u64(1_000_000..10_000_000);
            m.update(&Observation {
                query: with(bytes),
                duration: Duration::from_millis(bytes / 1000),
            });
        }
        let p = m.predict(&with(8_000_000));
        assert_eq!(p.source, Source::Regression);
        assert!(ape(p.p50, 8000) < 0.1, "{p:?}");
        // A step whose duration has nothing to do with its inputs keeps the baseline.
        let other = |bytes: u64| Query {
            step: "lint",
            ..with(bytes)
        };
        for _ in 0..30 {
            let bytes = rng.u64(1_000_000..10_000_000);
            m.update(&Observation {
                query: other(bytes),
                duration: Duration::from_millis(3000),
            });
        }
        assert_ne!(m.predict(&other(5_000_000)).source, Source::Regression);
    }

    #[test]
    fn source_names_round_trip() {
        for s in [
            Source::Prior,
            Source::Step,
            Source::StepOutcome,
            Source::StepOutcomeRunner,
            Source::Regression,
        ] {
            assert_eq!(Source::from_name(s.name()), Some(s));
        }
        assert_eq!(Source::from_name("nope"), None);
    }
}
