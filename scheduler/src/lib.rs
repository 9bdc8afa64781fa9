//! Plan file → validated DAG → order → dispatch.
//!
//! This crate owns everything about a run that is not one step: parsing and validating the
//! plan file (strict, with `file:line:col` diagnostics and a hint for every error), the
//! step graph, priorities from a [`DurationEstimator`] (longest predicted remaining path),
//! step selection (`--step` plus transitive needs), and the dispatch loop: weighted slots,
//! highest priority first, retries with exponential backoff and jitter, fail-fast or
//! keep-going, and cancellation. It keeps the run [`history`] (SQLite), the online
//! [`RuntimeModel`] that learns each step's duration from it, the [`accuracy`] figures of
//! its recorded predictions, and the critical path. [`split`] divides the selected steps
//! into CI shards by predicted duration, each shard closed under `needs`.
//!
//! It does not run processes: each attempt is handed to an
//! [`Execute`](ci_intel_executor::Execute) implementation, so the loop is tested with fake
//! executors. It prints nothing: progress goes to an [`Observer`].

pub mod accuracy;
pub mod chaos;
mod diag;
mod dispatch;
mod estimate;
mod graph;
pub mod history;
mod model;
mod plan;
mod shard;

pub use diag::{Diagnostic, LoadError};
pub use dispatch::{
    AttemptChaos, DispatchError, DispatchOptions, Event, Observer, RunReport, StepResult,
    StepState, dispatch,
};
pub use estimate::{DurationEstimator, StaticEstimator};
pub use graph::{
    Predicted, Selection, SelectionError, critical_path, priorities, priorities_from, render_dot,
    render_mermaid,
};
pub use model::{Features, ModelEstimator, Observation, Prediction, Query, RuntimeModel, Source};
pub use plan::{
    Backoff, CachePolicy, Limits, Network, Plan, RetryPolicy, SandboxSpec, SecretScan, Step,
    load_plan, parse_plan,
};
pub use shard::{MAX_SHARDS, Shard, ShardError, Sharding, split};
