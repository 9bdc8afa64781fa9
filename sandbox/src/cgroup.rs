//! A cgroup per sandbox, where the host lets us make one: today, the cgroup v1 `pids`,
//! `memory` and `cpu` hierarchies when the orchestrator runs as root (CI machines and
//! self-hosted runners without a delegated cgroup v2 subtree).
//!
//! The cgroup bounds the whole step: every process and thread together (`pids.max`), all
//! their memory together (`memory.limit_in_bytes`), and all their CPU time together
//! (`cpu.cfs_quota_us` per `cpu.cfs_period_us`: a step limited to 1.5 CPUs runs for at
//! most 150 ms of every 100 ms period, on however many cores). The `memory` and `cpu`
//! cgroups are made only when the step sets that limit. The `pids` cgroup matters as root,
//! where the kernel does not apply `RLIMIT_NPROC` to processes of the host's uid 0, which
//! the sandbox user maps to, and only where the pid namespace cannot bound the step
//! itself (see `pid_max_for` in `ns.rs`). A delegated cgroup v2 subtree is not used yet; where
//! there is neither, the rlimits are the only bound and a CPU limit is not enforced at
//! all: a warning says so once per process, and the posture says so.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::isolation::Limits;

const V1_ROOT: &str = "/sys/fs/cgroup";

/// The CFS period of a sandbox's `cpu` cgroup, microseconds (the kernel's default).
pub(crate) const CFS_PERIOD_US: u64 = 100_000;

/// The controllers a sandbox may get a cgroup of, in report order.
pub(crate) const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

/// The CFS quota per [`CFS_PERIOD_US`] for a limit of `millicpus` thousandths of a CPU.
pub(crate) fn cfs_quota_us(millicpus: u32) -> u64 {
    u64::from(millicpus) * CFS_PERIOD_US / 1000
}

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
    CONTROLLERS
        .into_iter()
        .filter(|c| v1_parent(c).is_some())
        .collect()
}

/// Writes `value` to a cgroup file; an error names the file, the value and, for an invalid
/// value, what the kernel accepts (`accepts`, may be empty).
fn write(path: &Path, value: u64, accepts: &str) -> io::Result<()> {
    std::fs::write(path, value.to_string()).map_err(|e| {
        let accepts = if e.kind() == io::ErrorKind::InvalidInput {
            accepts
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!("writing {value} to {}{accepts}: {e}", path.display()),
        )
    })
}

impl StepCgroup {
    /// Creates the cgroups for one sandbox with `limits`; `None` where the host has none
    /// for us, or the limits need none.
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
            write(&dir.join("pids.max"), limits.pids, "")?;
        }
        if let Some((parent, memory)) = limits.memory.and_then(|m| Some((v1_parent("memory")?, m)))
        {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir)?;
            cg.dirs.push(dir.clone());
            write(&dir.join("memory.limit_in_bytes"), memory, "")?;
        }
        if let Some(millicpus) = limits.millicpus {
            if let Some(parent) = v1_parent("cpu") {
                let dir = parent.join(&name);
                std::fs::create_dir(&dir)?;
                cg.dirs.push(dir.clone());
                // The period first: the kernel checks the quota against it, and against
                // the quota of every ancestor, which it may not exceed.
                write(&dir.join("cpu.cfs_period_us"), CFS_PERIOD_US, "")?;
                write(
                    &dir.join("cpu.cfs_quota_us"),
                    cfs_quota_us(millicpus),
                    " (at least 1000, and no more CPUs than the cgroup ci-intel runs in allows)",
                )?;
            } else {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "the cpu limit is not enforced: it needs a cgroup v1 cpu hierarchy \
                         ci-intel can write to (/sys/fs/cgroup/cpu, as root)"
                    );
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_is_the_share_of_the_period() {
        assert_eq!(cfs_quota_us(1000), CFS_PERIOD_US);
        assert_eq!(cfs_quota_us(1500), 150_000);
        assert_eq!(cfs_quota_us(500), 50_000);
        // The smallest limit is the kernel's smallest quota, 1 ms.
        assert_eq!(cfs_quota_us(10), 1_000);
        assert_eq!(cfs_quota_us(1_024_000), 102_400_000);
    }
}
