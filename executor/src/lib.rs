//! Runs ONE action and returns its outcome as data.
//!
//! This crate owns a single step attempt from the moment the scheduler hands it over: the
//! environment it gets (the fixed determinism set plus what the plan declares), the
//! sandboxed process, streaming its output to a log file and to a live
//! [`OutputSink`] (redacting secrets, bounded in memory whatever the step prints), the
//! timeout and cancellation protocol (`SIGTERM` to the step's process group, a grace
//! period, then `SIGKILL`), and the [`Outcome`]: succeeded, failed, timed out or cancelled,
//! with timings, resource use and the log path. It also decides what the cache sees of an
//! attempt (`cache.rs`): the action key of a sandboxed step, a verified restore instead of
//! a run, and a store after a clean run whose inputs did not change meanwhile, through
//! [`ci_intel_cache::store::LocalCache`].
//!
//! A step that fails is not an error: [`Execute::execute`] returns `Err` only for faults of
//! the orchestrator itself (a log file that cannot be written, a pipe that cannot be made).
//!
//! It does not order steps, retry them or decide what to cancel: that is the scheduler's.
//! It does not isolate processes itself: that is the sandbox crate's, reached through
//! [`ci_intel_sandbox::spawn`]. The [`Execute`] trait is the seam the scheduler is tested
//! through with fake executors.

mod action;
mod cache;
mod cancel;
pub mod chaos;
mod determinism;
mod output;
mod process;
mod secrets;
mod workspace;

pub use action::{
    Action, ActionSandbox, CacheEvent, DeterminismCheck, FixedEnv, InputStats, NetworkAccess,
    Outcome, Phase, Program, SecretScan, Status, Variations, VerifyPolicy,
};
pub use cancel::{Cancel, CancelLevel, CancelSource};
pub use output::{OutputSink, Redactor};
pub use process::{DryRun, ProcessExecutor, ProcessExecutorConfig};
pub use secrets::{
    AWS_ACCESS_KEY, AWS_SECRET_KEY, Finding, GITHUB_TOKEN, HIGH_ENTROPY, PRIVATE_KEY, SLACK_TOKEN,
    sweep,
};
pub use workspace::{
    CollectError, Exclusions, InputGlobIndex, InputGlobs, InputsError, Staging, StagingError,
    VisibleInputs, visible_inputs, visible_inputs_excluding,
};

use std::future::Future;

/// Why an action could not be executed at all (a fault of the orchestrator, not the step).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The log file or its directory could not be created or written.
    #[error("could not write log file {}", path.display())]
    Log {
        /// The log file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The output pipe could not be created or read.
    #[error("could not set up the output pipe")]
    Pipe(#[source] std::io::Error),
    /// The private home directory could not be created.
    #[error("could not create the step's home directory {}", path.display())]
    Home {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started for a reason other than a missing program.
    #[error("could not start the step")]
    Spawn(#[source] ci_intel_sandbox::SpawnError),
    /// Waiting for the process failed.
    #[error("could not wait for the step's process")]
    Wait(#[source] std::io::Error),
}

/// Runs one action. Implemented by [`ProcessExecutor`], [`DryRun`] and by fakes in tests.
pub trait Execute: Send + Sync + 'static {
    /// Runs `action` until it ends or `cancel` asks it to stop.
    fn execute(
        &self,
        action: Action,
        cancel: Cancel,
    ) -> impl Future<Output = Result<Outcome, ExecuteError>> + Send;
}

pub use ci_intel_sandbox::{Layer, Level, Limits, Posture, Watchdog};
