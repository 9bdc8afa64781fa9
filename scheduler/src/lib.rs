//! Plan file → validated DAG → order → dispatch.
//!
//! This crate owns everything about a run that is not one step: parsing and validating the
//! plan file (strict, with `file:line:col` diagnostics and a hint for every error), the
//! step graph, priorities from a [`DurationEstimator`] (longest predicted remaining path),
//! step selection (`--step` plus transitive needs), and the dispatch loop: weighted slots,
//! highest priority first, retries with exponential backoff and jitter, fail-fast or
//! keep-going, and cancellation. It keeps the run [`history`] (SQLite) that the runtime
//! model will learn from.
//!
//! It does not run processes: each attempt is handed to an
//! [`Execute`](ci_intel_executor::Execute) implementation, so the loop is tested with fake
//! executors. It prints nothing: progress goes to an [`Observer`].

mod diag;
mod dispatch;
mod estimate;
mod graph;
pub mod history;
mod plan;

pub use diag::{Diagnostic, LoadError};
pub use dispatch::{
    DispatchError, DispatchOptions, Event, Observer, RunReport, StepResult, StepState, dispatch,
};
pub use estimate::{DurationEstimator, HistoryEstimator, LogStats, StaticEstimator};
pub use graph::{Selection, SelectionError, priorities, render_dot, render_mermaid};
pub use plan::{
    Backoff, CachePolicy, Limits, Network, Plan, RetryPolicy, SandboxSpec, SecretScan, Step,
    load_plan, parse_plan,
};
