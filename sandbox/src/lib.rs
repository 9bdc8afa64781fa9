//! Runs ONE process under a [`Policy`] and says what was enforced.
//!
//! This crate owns process isolation: how a step's process is started, which environment
//! and umask it sees, the process group it lives in, how that group is signalled and
//! reaped, and the [`Watchdog`] that kills every live step group if the orchestrator itself
//! dies (even by `SIGKILL`). It also reports the host's isolation [`Posture`], layer by
//! layer, so a caller can refuse to run when a required layer is missing instead of
//! weakening silently.
//!
//! It knows nothing of plans, steps, retries or caches: the executor decides *what* to run
//! and *when* to stop it; this crate decides *how* it is contained.
//!
//! What is enforced today: every process gets its own session and process group, a parent
//! death signal, a cleared environment built from the policy, a fixed umask and `/dev/null`
//! as stdin. Namespaces, Landlock, seccomp and cgroups are reported as
//! [`Level::NotEnforced`] by [`Posture::current`]; they are the next layers this crate
//! grows, behind the same [`spawn`] seam.

mod orphans;
mod posture;
mod probe;
mod process;
mod watchdog;

pub use orphans::{adopt_orphans, kill_orphans};
pub use posture::{Layer, LayerReport, Level, Posture};
pub use probe::{HostLayer, PROBED, probe, probe_host};
pub use process::{Child, Exit, Policy, SpawnError, spawn};
pub use watchdog::{Watchdog, WatchdogError};
