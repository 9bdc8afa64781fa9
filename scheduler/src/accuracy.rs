//! How good the runtime model's predictions were: the figures of `ci-intel predict report`,
//! computed from the predictions recorded beside each step before it ran.
//!
//! - **MAPE**: mean of `|p50 − actual| / actual` over steps that took at least one second
//!   (below that, start-up noise dominates and a relative error means little).
//! - **WAPE**: `Σ|p50 − actual| / Σ actual` over every step: the error weighted by time,
//!   what matters for a makespan.
//! - **p90 coverage**: the share of steps that finished within the predicted p90 (0.9 is
//!   calibrated; lower means the model is overconfident).
//! - **underpredicted**: the share of steps that took longer than their predicted p80.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::PastRun;

/// Steps shorter than this are left out of MAPE.
pub const MAPE_FLOOR: Duration = Duration::from_secs(1);

/// Accuracy over a set of predictions.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Accuracy {
    /// Predictions scored.
    pub samples: usize,
    /// Of them, steps of at least [`MAPE_FLOOR`] (the MAPE's).
    pub mape_samples: usize,
    /// Mean absolute percentage error of the p50 (a fraction), steps ≥ 1 s.
    pub mape: Option<f64>,
    /// Weighted absolute percentage error of the p50 (a fraction).
    pub wape: Option<f64>,
    /// Share of steps within the p90.
    pub p90_coverage: Option<f64>,
    /// Share of steps longer than the p80.
    pub underpredicted: Option<f64>,
}

/// One scored prediction.
#[derive(Clone, Copy, Debug)]
struct Sample {
    actual: f64,
    p50: f64,
    p80: f64,
    p90: f64,
}

impl Accuracy {
    fn of(samples: &[Sample]) -> Accuracy {
        let n = samples.len();
        if n == 0 {
            return Accuracy::default();
        }
        let floor = MAPE_FLOOR.as_secs_f64();
        let long: Vec<&Sample> = samples.iter().filter(|s| s.actual >= floor).collect();
        let share = |f: &dyn Fn(&Sample) -> bool| {
            Some(samples.iter().filter(|s| f(s)).count() as f64 / n as f64)
        };
        let total: f64 = samples.iter().map(|s| s.actual).sum();
        Accuracy {
            samples: n,
            mape_samples: long.len(),
            mape: (!long.is_empty()).then(|| {
                long.iter()
                    .map(|s| (s.p50 - s.actual).abs() / s.actual)
                    .sum::<f64>()
                    / long.len() as f64
            }),
            wape: (total > 0.0).then(|| {
                samples
                    .iter()
                    .map(|s| (s.p50 - s.actual).abs())
                    .sum::<f64>()
                    / total
            }),
            p90_coverage: share(&|s| s.actual <= s.p90),
            underpredicted: share(&|s| s.actual > s.p80),
        }
    }
}

/// One step's accuracy.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StepAccuracy {
    /// The step id.
    pub step: String,
    /// Its figures.
    #[serde(flatten)]
    pub accuracy: Accuracy,
    /// The model layer that served its latest prediction.
    pub model: String,
    /// Its latest duration, seconds.
    pub last_seconds: f64,
    /// Its latest predicted p50, seconds.
    pub last_p50_seconds: f64,
}

/// One run's accuracy, for the trend.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunAccuracy {
    /// The run's id in the history.
    pub run: i64,
    /// When it started, milliseconds since the epoch.
    pub started_unix_ms: u64,
    /// Its figures.
    #[serde(flatten)]
    pub accuracy: Accuracy,
}

/// The report of one plan.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AccuracyReport {
    /// The plan's name.
    pub plan: String,
    /// Runs looked at.
    pub runs: usize,
    /// Over every scored step of those runs.
    pub overall: Accuracy,
    /// Per step, by id.
    pub steps: Vec<StepAccuracy>,
    /// Per run, oldest first.
    pub trend: Vec<RunAccuracy>,
    /// How many predictions each model layer served.
    pub models: BTreeMap<String, usize>,
}

/// The report of `plan` over `runs` (oldest first). Steps that did not succeed, steps a
/// chaos fault acted on, and steps recorded without a prediction (before the model
/// recorded them), are not scored.
pub fn report(plan: &str, runs: &[PastRun]) -> AccuracyReport {
    let mut all = Vec::new();
    let mut by_step: BTreeMap<&str, (Vec<Sample>, String, Sample)> = BTreeMap::new();
    let mut models: BTreeMap<String, usize> = BTreeMap::new();
    let mut trend = Vec::new();
    for run in runs {
        let mut this = Vec::new();
        for s in run
            .steps
            .iter()
            .filter(|s| s.state == "succeeded" && s.chaos.is_none())
        {
            let Some(p) = &s.predicted else { continue };
            let sample = Sample {
                actual: s.duration.as_secs_f64(),
                p50: p.p50.as_secs_f64(),
                p80: p.p80.as_secs_f64(),
                p90: p.p90.as_secs_f64(),
            };
            this.push(sample);
            *models.entry(p.model.clone()).or_default() += 1;
            let entry = by_step
                .entry(&s.step)
                .or_insert_with(|| (Vec::new(), String::new(), sample));
            entry.0.push(sample);
            entry.1.clone_from(&p.model);
            entry.2 = sample;
        }
        if !this.is_empty() {
            trend.push(RunAccuracy {
                run: run.id,
                started_unix_ms: run.started_unix_ms,
                accuracy: Accuracy::of(&this),
            });
        }
        all.extend(this);
    }
    AccuracyReport {
        plan: plan.to_string(),
        runs: runs.len(),
        overall: Accuracy::of(&all),
        steps: by_step
            .into_iter()
            .map(|(step, (samples, model, last))| StepAccuracy {
                step: step.to_string(),
                accuracy: Accuracy::of(&samples),
                model,
                last_seconds: last.actual,
                last_p50_seconds: last.p50,
            })
            .collect(),
        trend,
        models,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{RecordedPrediction, StepRecord};

    fn step(name: &str, actual_ms: u64, p50_ms: u64, state: &str) -> StepRecord {
        StepRecord {
            step: name.into(),
            action_key: None,
            started_unix_ms: 0,
            duration: Duration::from_millis(actual_ms),
            queue: Duration::ZERO,
            exit_code: Some(0),
            state: state.into(),
            attempts: 1,
            cache_hit: false,
            changed_files: None,
            input_bytes: None,
            input_files: None,
            predicted: Some(RecordedPrediction {
                p50: Duration::from_millis(p50_ms),
                p80: Duration::from_millis(p50_ms * 5 / 4),
                p90: Duration::from_millis(p50_ms * 3 / 2),
                model: "step+outcome".into(),
            }),
            chaos: None,
        }
    }

    fn run(id: i64, steps: Vec<StepRecord>) -> PastRun {
        PastRun {
            id,
            started_unix_ms: 0,
            wall: Duration::ZERO,
            runner_class: "r".into(),
            git_commit: None,
            steps,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn the_figures_are_what_their_definitions_say() {
        let runs = [
            run(
                1,
                vec![
                    // 25% over.
                    step("build", 4000, 5000, "succeeded"),
                    // Under a second: in WAPE and coverage, not in MAPE.
                    step("lint", 500, 1000, "succeeded"),
                    // Failed: not scored.
                    step("test", 100, 9000, "failed"),
                ],
            ),
            // Took twice the p50: beyond the p80 and the p90.
            run(2, vec![step("build", 10_000, 5000, "succeeded")]),
        ];
        let r = report("p", &runs);
        assert_eq!(r.runs, 2);
        assert_eq!(r.overall.samples, 3);
        assert_eq!(r.overall.mape_samples, 2);
        assert!(close(r.overall.mape, (0.25 + 0.5) / 2.0), "{r:?}");
        assert!(
            close(r.overall.wape, (1000.0 + 500.0 + 5000.0) / 14_500.0),
            "{r:?}"
        );
        assert!(close(r.overall.p90_coverage, 2.0 / 3.0), "{r:?}");
        assert!(close(r.overall.underpredicted, 1.0 / 3.0), "{r:?}");
        let build = &r.steps[0];
        assert_eq!(build.step, "build");
        assert_eq!(build.accuracy.samples, 2);
        assert!((build.last_seconds - 10.0).abs() < 1e-9);
        assert_eq!(r.steps.len(), 2, "the failed step has no entry");
        assert_eq!(r.trend.len(), 2);
        assert!(close(r.trend[1].accuracy.mape, 0.5));
        assert_eq!(r.models["step+outcome"], 3);
    }

    #[test]
    fn nothing_recorded_is_no_figures_not_zero() {
        let mut unpredicted = step("build", 4000, 1, "succeeded");
        unpredicted.predicted = None;
        let r = report("p", &[run(1, vec![unpredicted])]);
        assert_eq!(r.overall, Accuracy::default());
        assert_eq!(r.overall.mape, None);
        assert!(r.steps.is_empty() && r.trend.is_empty());
    }
}
