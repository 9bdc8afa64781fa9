//! A cgroup per sandbox, where the host lets us make one: today, the cgroup v1 `pids` and
//! `memory` hierarchies when the orchestrator runs as root (CI machines and self-hosted
//! runners without a delegated cgroup v2 subtree).
//!
//! The cgroup bounds the whole step: every process and thread together (`pids.max`), and
//! all their memory together (`memory.limit_in_bytes`). That matters most as root, where
//! the kernel does not apply `RLIMIT_NPROC` to processes of the host's uid 0, which the
//! sandbox user maps to. A delegated cgroup v2 subtree is not used yet; where there is
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
    pub(crate) fn create(limits: &Limits) -> io::Result<Option<StepCgroup>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "ci-intel-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = StepCgroup { dirs: Vec::new() };
        if let Some(parent) = v1_parent("pids") {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir)?;
            cg.dirs.push(dir.clone());
            std::fs::write(dir.join("pids.max"), limits.pids.to_string())?;
        }
        if let (Some(parent), Some(memory)) = (v1_parent("memory"), limits.memory) {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir)?;
            cg.dirs.push(dir.clone());
            std::fs::write(dir.join("memory.limit_in_bytes"), memory.to_string())?;
        }
        Ok((!cg.dirs.is_empty()).then_some(cg))
    }

    /// Moves `pid` (the sandbox's pid 1, before it starts the command) into the cgroups.
    pub(crate) fn add(&self, pid: libc::pid_t) -> io::Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
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
