//! What the host can provide, layer by layer, and how to fix what it cannot.
//!
//! [`Posture`](crate::Posture) says what [`spawn`](crate::spawn) enforces today; this module
//! asks the kernel what it *allows*: whether unprivileged namespaces can be created, which
//! Landlock ABI it offers, whether seccomp filters can be installed, and whether a cgroup v2
//! subtree is delegated to us. Each probe runs in a short-lived forked child (or is a
//! read-only query), so probing never changes this process.

use std::io;

use crate::posture::Layer;

/// What the host offers for one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLayer {
    /// The layer.
    pub layer: Layer,
    /// Whether the host lets us use it.
    pub available: bool,
    /// A version, where the layer has one (the Landlock ABI).
    pub version: Option<u32>,
    /// What was found, in a few words.
    pub detail: String,
    /// How to make it available, when it is not.
    pub fix: Option<&'static str>,
}

/// The layers the kernel can provide: every [`Layer`] but the first two (process group and
/// environment), which need nothing of the host.
pub const PROBED: &[Layer] = Layer::ALL.split_at(2).1;

const USERNS_FIX: &str = "allow unprivileged user namespaces: sysctl user.max_user_namespaces=15000 \
     (and kernel.unprivileged_userns_clone=1 on Debian kernels, \
     kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04+); in a container, run it \
     with a seccomp profile that allows unshare/clone (Docker: --security-opt seccomp=unconfined)";

/// Probes every layer in [`PROBED`].
pub fn probe_host() -> Vec<HostLayer> {
    PROBED.iter().copied().map(probe).collect()
}

/// Probes one layer.
pub fn probe(layer: Layer) -> HostLayer {
    let (available, version, detail, fix) = match layer {
        Layer::UserNs => ns_probe(0, "user namespace"),
        Layer::MountNs => ns_probe(libc::CLONE_NEWNS, "mount namespace"),
        Layer::PidNs => ns_probe(libc::CLONE_NEWPID, "pid namespace"),
        Layer::NetNs => ns_probe(libc::CLONE_NEWNET, "network namespace"),
        Layer::Landlock => landlock_probe(),
        Layer::Seccomp => seccomp_probe(),
        Layer::Cgroups => cgroup_probe(),
        Layer::ProcessGroup | Layer::Env => (true, None, "needs nothing of the host".into(), None),
    };
    HostLayer {
        layer,
        available,
        version,
        detail,
        fix,
    }
}

type Found = (bool, Option<u32>, String, Option<&'static str>);

/// In a forked child: a new user namespace, then (when `extra` is set) the namespace
/// `extra` names inside it. The child reports success by its exit code, or the errno.
fn ns_probe(extra: libc::c_int, what: &str) -> Found {
    // SAFETY: the child calls only unshare and _exit (async-signal-safe); the parent waits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        return (false, None, format!("could not fork to probe: {e}"), None);
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) < 0 {
                libc::_exit(100 + *libc::__errno_location() % 100);
            }
            if extra != 0 && libc::unshare(extra) < 0 {
                libc::_exit(200 + *libc::__errno_location() % 50);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    match code {
        0 => (
            true,
            None,
            format!("a {what} can be created in a new user namespace"),
            None,
        ),
        100..=199 => (
            false,
            None,
            format!(
                "creating a user namespace fails: {}",
                io::Error::from_raw_os_error(code - 100)
            ),
            Some(USERNS_FIX),
        ),
        200..=249 => (
            false,
            None,
            format!(
                "creating a {what} inside a user namespace fails: {}",
                io::Error::from_raw_os_error(code - 200)
            ),
            Some(
                "the kernel or a security module forbids this namespace; see its sysctl or LSM policy",
            ),
        ),
        _ => (
            false,
            None,
            format!("the probe child ended abnormally (status {status})"),
            None,
        ),
    }
}

fn landlock_probe() -> Found {
    let e = match crate::landlock::query_abi() {
        Ok(abi) if abi > 0 => {
            return (true, Some(abi), format!("Landlock ABI {abi}"), None);
        }
        Ok(_) => io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        Err(e) => e,
    };
    let (detail, fix) = match e.raw_os_error() {
        Some(libc::ENOSYS) => (
            "the kernel has no Landlock (before 5.13, or built without it)",
            "use a kernel 5.13 or later built with CONFIG_SECURITY_LANDLOCK=y",
        ),
        Some(libc::EOPNOTSUPP) => (
            "Landlock is built in but not enabled",
            "add landlock to the kernel's lsm= boot parameter",
        ),
        _ => ("the Landlock query failed", "check the kernel log"),
    };
    (false, None, format!("{detail} ({e})"), Some(fix))
}

fn seccomp_probe() -> Found {
    // SAFETY: PR_GET_SECCOMP only reads this thread's seccomp mode.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    match mode {
        0 => (true, None, "seccomp filters can be installed".into(), None),
        2 => (
            true,
            None,
            "seccomp filters can be installed (this process is already filtered; filters stack)"
                .into(),
            None,
        ),
        _ => (
            false,
            None,
            format!("seccomp is unavailable ({})", io::Error::last_os_error()),
            Some("use a kernel built with CONFIG_SECCOMP_FILTER=y"),
        ),
    }
}

fn cgroup_probe() -> Found {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return (
            false,
            None,
            "no /proc/self/cgroup".into(),
            Some("mount /proc"),
        );
    };
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return (
            false,
            None,
            "this process is not in a cgroup v2 hierarchy".into(),
            Some("boot with the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1)"),
        );
    };
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: a valid NUL-terminated path; access only checks permissions.
    let writable = unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0;
    let wanted = ["memory", "pids", "cpu"];
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|w| !controllers.split_whitespace().any(|c| c == *w))
        .collect();
    if writable && missing.is_empty() {
        (
            true,
            None,
            format!(
                "cgroup v2 subtree {} is delegated (memory, pids, cpu)",
                dir.display()
            ),
            None,
        )
    } else if !writable {
        (
            false,
            None,
            format!("cgroup v2 subtree {} is not writable", dir.display()),
            Some(
                "run under a delegated cgroup (systemd: Delegate=yes, or systemd-run --user --scope -p Delegate=yes)",
            ),
        )
    } else {
        (
            false,
            None,
            format!(
                "cgroup v2 subtree {} lacks controllers: {}",
                dir.display(),
                missing.join(", ")
            ),
            Some("enable them in the parent's cgroup.subtree_control"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machines this project is built and tested on provide these; a failure here means
    /// the host changed, and the message says how.
    #[test]
    fn this_host_provides_namespaces_landlock_and_seccomp() {
        // Every probed layer but cgroups, which hosts commonly do not delegate.
        for &layer in PROBED.iter().filter(|l| **l != Layer::Cgroups) {
            let found = probe(layer);
            assert!(
                found.available,
                "this host is expected to provide {layer}: {} (fix: {})",
                found.detail,
                found.fix.unwrap_or("-")
            );
        }
        assert!(probe(Layer::Landlock).version.is_some_and(|v| v >= 1));
    }

    #[test]
    fn every_probed_layer_is_reported_once_with_a_fix_when_missing() {
        let report = probe_host();
        let layers: Vec<Layer> = report.iter().map(|l| l.layer).collect();
        assert_eq!(layers, PROBED);
        for l in &report {
            assert!(!l.detail.is_empty());
            assert_eq!(l.available, l.fix.is_none(), "{l:?}");
        }
    }
}
