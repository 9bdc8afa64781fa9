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
