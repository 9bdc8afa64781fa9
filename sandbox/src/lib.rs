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
//! Two ways to start a process, behind one [`spawn`]:
//! - plain: its own session and process group, a parent-death signal, a cleared
//!   environment built from the policy, a fixed umask and `/dev/null` as stdin;
//! - isolated ([`Policy::isolate`] with an [`Isolation`]): one `clone3` into new user,
//!   mount, pid, UTS, IPC and cgroup namespaces, and a network namespace made in parallel
//!   while the child builds its root; a fresh read-only tmpfs root
//!   with only the system directories and the declared paths; a tiny pid 1 that reaps and
//!   forwards signals; no capabilities, `no_new_privs`, Landlock rules that mirror the
//!   mounts, a seccomp denylist, rlimits, and as root cgroup v1 `pids`, `memory` and `cpu`
//!   limits for the whole step. [`Posture::isolated`] says how much of that this host
//!   enforces; docs/sandbox.md walks through the sequence.
//!
//! The [`EgressProxy`] is the other half of network isolation: it runs outside the
//! sandbox and serves an [`Allowlist`] on the proxy port a sandbox hands out; it can also
//! inject a [`NetFault`] into the connections it carries.
//!
//! Not here: what a step declares (the executor turns a step into an [`Isolation`]), and
//! output collection.

mod cgroup;
mod egress;
mod isolation;
mod landlock;
mod ns;
mod orphans;
mod posture;
mod probe;
mod process;
mod seccomp;
mod watchdog;

pub use egress::{
    Allowlist, AllowlistError, CONNECT_ATTEMPTS, CONNECT_TIMEOUT, EgressEvent, EgressProxy,
    HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES, NetFault,
};
pub use isolation::{
    HOME, HOSTNAME, Isolation, IsolationBuilder, LayoutError, Limits, NetworkMode, NetworkSet,
    NetworkUnset, PROXY_PORT, SANDBOX_UID,
};
pub use ns::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED, SandboxError, Stage};
pub use orphans::{adopt_orphans, kill_orphans};
pub use posture::{Layer, LayerReport, Level, Posture};
pub use probe::{HostLayer, PROBED, probe, probe_host};
pub use process::{Child, Exit, Policy, SpawnError, spawn, spawn_stdio};
pub use seccomp::{SeccompError, denied_syscalls};
pub use watchdog::{Watchdog, WatchdogError};
