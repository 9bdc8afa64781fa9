//! A cgroup per sandbox, where the host lets us make one: today, the cgroup v1 `pids` and
//! `memory` hierarchies when the orchestrator runs as root (CI machines and self-hosted
//! runners without a delegated cgroup v2 subtree).
//!
//! The cgroup bounds the whole step: every process and thread together (`pids.max`), and
//! all their memory together (`memory.limit_in_bytes`). The `pids` cgroup matters as root,
//! where the kernel does not apply `RLIMIT_NPROC` to processes of the host's uid 0, which
//! the sandbox user maps to, and only where the pid namespace cannot bound the step
//! itself (see `PidMax` in `ns.rs`). A delegated cgroup v2 subtree is not used yet; where there is
//! neither, the rlimits are the only bound and the posture says so.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::isolation::Limits;

const V1_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directories of one sandbox; removed when dropped.
#[derive(Debug)]
pub(crate) struct StepCgroup {
    dirs: Vec<PathBuf>,
}

/// This process's path in a v1 hierarchy, from `/proc/self/cgroup`.
fn own_path(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

/// The parent directory for sandbox cgroups in the v1 hierarchy of `controller`, if it is
/// mounted and writable by us.
fn v1_parent(controller: &str) -> Option<PathBuf> {
    let mount = Path::new(V1_ROOT).join(controller);
    if !mount.join("cgroup.procs").exists() {
        return None;
    }
    let dir = mount.join(own_path(controller)?);
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid path; access only reads.
    (unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0).then_some(dir)
}

/// Whether sandboxes get a cgroup on this host, and which controllers.
pub(crate) fn available() -> Vec<&'static str> {
    ["pids", "memory"]
        .into_iter()
        .filter(|c| v1_parent(c).is_some())
        .collect()
}

impl StepCgroup {
    /// Creates the cgroups for one sandbox with `limits`; `None` where the host has none
    /// for us.
    /// `pids` is false when the pid namespace bounds the step's tasks itself.
    pub(crate) fn create(limits: &Limits, pids: bool) -> io::Result<Option<StepCgroup>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Unique even when this pid is reused while an old directory lingers.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "ci-intel-{}-{}-{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = StepCgroup { dirs: Vec::new() };
        if let Some(parent) = pids.then(|| v1_parent("pids")).flatten() {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir)?;
            cg.dirs.push(dir.clone());
            std::fs::write(dir.join("pids.max"), limits.pids.to_string())?;
        }
        if let Some((parent, memory)) = limits.memory.and_then(|m| Some((v1_parent("memory")?, m)))
        {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir)?;
            cg.dirs.push(dir.clone());
            std::fs::write(dir.join("memory.limit_in_bytes"), memory.to_string())?;
        }
        Ok((!cg.dirs.is_empty()).then_some(cg))
    }

    /// The `tasks` files the sandbox's pid 1 writes `0` to, moving itself in.
    ///
    /// A process moving itself through `tasks` skips the global threadgroup lock, whose
    /// write side waits for an RCU grace period (milliseconds); writing another process's
    /// pid to `cgroup.procs` takes it.
    pub(crate) fn task_files(&self) -> Vec<std::ffi::CString> {
        self.dirs
            .iter()
            .filter_map(|d| {
                std::ffi::CString::new(d.join("tasks").into_os_string().into_encoded_bytes()).ok()
            })
            .collect()
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        // Called once the sandbox's pid 1 has been reaped: the kernel has killed and
        // reaped everything in its pid namespace by then, so the cgroups are empty.
        for dir in &self.dirs {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!("could not remove cgroup {}: {e}", dir.display());
            }
        }
    }
}
