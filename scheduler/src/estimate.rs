//! Duration estimates that drive priorities.

use std::time::Duration;

use crate::plan::Step;

/// Predicts how long a step will take. The dispatch loop orders ready steps by the
/// longest estimated remaining path through the DAG.
pub trait DurationEstimator {
    /// The estimated wall-clock time of one attempt of `step`.
    fn estimate(&self, step: &Step) -> Duration;
}

/// The same estimate for every step: priorities become "longest chain of steps below".
#[derive(Clone, Copy, Debug)]
pub struct StaticEstimator {
    /// The estimate for every step.
    pub per_step: Duration,
}

impl Default for StaticEstimator {
    fn default() -> Self {
        StaticEstimator {
            per_step: Duration::from_secs(1),
        }
    }
}

impl DurationEstimator for StaticEstimator {
    fn estimate(&self, _step: &Step) -> Duration {
        self.per_step
    }
}

/// Estimates learned from the run history: for each step, an exponentially weighted mean
/// and variance of its log-duration over its past runs that ran (not cache hits) on this
/// runner class, else on any runner; a step never seen gets the plan-wide prior (the median
/// of the others' estimates, or `prior` when nothing is known).
///
/// The estimate is the predicted 80th percentile, `exp(mean + 0.84·sd)`: the dispatch loop
/// orders by remaining path, and a step that is often slow should count as slow.
#[derive(Clone, Debug, Default)]
pub struct HistoryEstimator {
    by_step: std::collections::HashMap<String, LogStats>,
    prior: Duration,
}

/// An exponentially weighted mean and variance of log-milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogStats {
    /// The weighted mean of `ln(1 + ms)`.
    pub mean: f64,
    /// The weighted variance.
    pub var: f64,
    /// Observations.
    pub n: u32,
}

/// Weight of the newest observation.
const ALPHA: f64 = 0.3;

impl LogStats {
    /// The statistics of `durations`, oldest first.
    pub fn of(durations: impl IntoIterator<Item = Duration>) -> Option<LogStats> {
        let mut s: Option<LogStats> = None;
        for d in durations {
            let x = (1.0 + d.as_secs_f64() * 1000.0).ln();
            s = Some(match s {
                None => LogStats {
                    mean: x,
                    var: 0.0,
                    n: 1,
                },
                Some(p) => {
                    let diff = x - p.mean;
                    let mean = p.mean + ALPHA * diff;
                    LogStats {
                        mean,
                        var: (1.0 - ALPHA) * (p.var + ALPHA * diff * diff),
                        n: p.n + 1,
                    }
                }
            });
        }
        s
    }

    /// The predicted quantile `z` standard deviations above the median.
    pub fn quantile(&self, z: f64) -> Duration {
        let ms = (self.mean + z * self.var.sqrt()).exp() - 1.0;
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

/// z of the 80th percentile of a normal distribution.
const Z80: f64 = 0.8416;

impl HistoryEstimator {
    /// An estimator from each step's past durations (oldest first, runs only, cache hits
    /// left out), with `prior` for steps nothing is known of.
    pub fn new(
        history: impl IntoIterator<Item = (String, Vec<Duration>)>,
        prior: Duration,
    ) -> Self {
        let by_step: std::collections::HashMap<String, LogStats> = history
            .into_iter()
            .filter_map(|(step, ds)| Some((step, LogStats::of(ds)?)))
            .collect();
        let mut known: Vec<Duration> = by_step.values().map(|s| s.quantile(Z80)).collect();
        known.sort();
        let prior = known.get(known.len() / 2).copied().unwrap_or(prior);
        HistoryEstimator { by_step, prior }
    }

    /// What is known of `step`.
    pub fn stats(&self, step: &str) -> Option<&LogStats> {
        self.by_step.get(step)
    }
}

impl DurationEstimator for HistoryEstimator {
    fn estimate(&self, step: &Step) -> Duration {
        self.by_step
            .get(&step.id)
            .map_or(self.prior, |s| s.quantile(Z80))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_steady_step_is_estimated_near_its_duration() {
        let s = LogStats::of([ms(1000); 5]).unwrap();
        let p80 = s.quantile(Z80).as_secs_f64();
        assert!((p80 - 1.0).abs() < 0.01, "{p80}");
        assert_eq!(s.n, 5);
    }

    #[test]
    fn recent_runs_weigh_more_and_noise_widens_the_estimate() {
        let drifted =
            LogStats::of([ms(100), ms(100), ms(100), ms(1000), ms(1000), ms(1000)]).unwrap();
        // Three runs at the new level move the median past the geometric midpoint (316 ms).
        let median = drifted.quantile(0.0).as_millis();
        assert!(median > 316 && median < 1000, "{median}");
        let one_new = LogStats::of([ms(100), ms(100), ms(100), ms(1000)]).unwrap();
        assert!(one_new.quantile(0.0) < drifted.quantile(0.0));
        let noisy =
            LogStats::of([ms(500), ms(2000), ms(500), ms(2000), ms(500), ms(2000)]).unwrap();
        assert!(noisy.quantile(Z80) > noisy.quantile(0.0));
        let steady = LogStats::of([ms(1000); 6]).unwrap();
        assert!(noisy.var > steady.var);
    }

    #[test]
    fn unknown_steps_get_the_median_of_the_known_ones() {
        let e = HistoryEstimator::new(
            [
                ("a".to_string(), vec![ms(100)]),
                ("b".to_string(), vec![ms(10_000)]),
                ("c".to_string(), vec![ms(1000)]),
            ],
            Duration::from_secs(7),
        );
        let prior = e.prior.as_millis();
        assert!((990..=1010).contains(&prior), "{prior}");
        let empty = HistoryEstimator::new(std::iter::empty(), Duration::from_secs(7));
        assert_eq!(empty.prior, Duration::from_secs(7));
    }
}
