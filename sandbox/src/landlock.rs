//! Landlock, called directly: the rules mirror the sandbox's mounts, so they are added in
//! the sandbox's first process after it has built its root, where nothing may allocate.
//! The access masks for the kernel's ABI are computed beforehand, here.
//!
//! The `landlock` crate is not used: its rule and path types allocate and it opens paths
//! itself, which the forked first process of a sandbox may not do.

use std::sync::OnceLock;

pub(crate) const EXECUTE: u64 = 1 << 0;
pub(crate) const WRITE_FILE: u64 = 1 << 1;
pub(crate) const READ_FILE: u64 = 1 << 2;
pub(crate) const READ_DIR: u64 = 1 << 3;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
pub(crate) const IOCTL_DEV: u64 = 1 << 15;

/// Rights that apply to files (not only directories): a rule on a file may grant only these.
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

const RULE_PATH_BENEATH: libc::c_int = 1;
const RULE_NET_PORT: libc::c_int = 2;
const CREATE_RULESET_VERSION: u32 = 1 << 0;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// Asks the kernel for its Landlock ABI version; the error says why there is none
/// (`ENOSYS`: not built in; `EOPNOTSUPP`: built in but not enabled).
pub(crate) fn query_abi() -> std::io::Result<u32> {
    // SAFETY: the VERSION query takes no attribute and returns a number or -1; it creates
    // nothing.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).map_err(|_| std::io::Error::last_os_error())
}

/// The kernel's Landlock ABI version, 0 when Landlock is unavailable (queried once).
pub(crate) fn abi() -> u32 {
    static ABI: OnceLock<u32> = OnceLock::new();
    *ABI.get_or_init(|| query_abi().unwrap_or(0))
}

/// Every file-system right the ABI knows.
pub(crate) fn fs_rights(abi: u32) -> u64 {
    let mut all = (1 << 13) - 1;
    if abi >= 2 {
        all |= REFER;
    }
    if abi >= 3 {
        all |= TRUNCATE;
    }
    if abi >= 5 {
        all |= IOCTL_DEV;
    }
    all
}

/// Rights for a read-only tree: read, list, execute.
pub(crate) const READ_ONLY: u64 = READ_FILE | READ_DIR | EXECUTE;

/// What the sandbox hands to the kernel, computed before the sandbox starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ruleset {
    pub(crate) abi: u32,
    pub(crate) handled_fs: u64,
    /// 0 when TCP is not restricted (loopback mode, or an ABI without network rules).
    pub(crate) handled_net: u64,
    /// Port TCP may connect to, when any.
    pub(crate) connect_port: Option<u16>,
    pub(crate) scoped: u64,
}

impl Ruleset {
    /// The ruleset for this kernel: `restrict_tcp` handles TCP bind and connect (allowing
    /// only `connect_port`); signals and abstract unix sockets are scoped to the sandbox.
    pub(crate) fn for_abi(abi: u32, restrict_tcp: bool, connect_port: Option<u16>) -> Ruleset {
        Ruleset {
            abi,
            handled_fs: if abi >= 1 { fs_rights(abi) } else { 0 },
            handled_net: if abi >= 4 && restrict_tcp {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            connect_port,
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        }
    }

    /// Rights of a rule, limited to what this ruleset handles (and to file rights when the
    /// rule is on a file).
    pub(crate) fn rights(&self, wanted: u64, dir: bool) -> u64 {
        let wanted = if wanted == u64::MAX {
            self.handled_fs
        } else {
            wanted
        };
        let r = wanted & self.handled_fs;
        if dir { r } else { r & FILE_RIGHTS }
    }

    /// Creates the ruleset; returns the descriptor or -1 with errno set.
    ///
    /// # Safety
    /// Only makes system calls; safe to call between fork and exec.
    pub(crate) unsafe fn create(&self) -> libc::c_int {
        let attr = RulesetAttr {
            handled_access_fs: self.handled_fs,
            handled_access_net: self.handled_net,
            scoped: self.scoped,
        };
        // Older ABIs reject attribute bytes they do not know, even when zero.
        let size = match self.abi {
            0..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: `attr` is valid for `size` bytes.
        unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            ) as libc::c_int
        }
    }

    /// Adds the network rule, if any; returns -1 with errno set on failure.
    ///
    /// # Safety
    /// Only makes system calls.
    pub(crate) unsafe fn add_net_rule(&self, ruleset: libc::c_int) -> libc::c_int {
        let Some(port) = self.connect_port.filter(|_| self.handled_net != 0) else {
            return 0;
        };
        let attr = NetPortAttr {
            allowed_access: NET_CONNECT_TCP,
            port: u64::from(port),
        };
        // SAFETY: `attr` is a valid net-port attribute.
        unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                RULE_NET_PORT,
                &attr as *const NetPortAttr,
                0u32,
            ) as libc::c_int
        }
    }
}

/// Allows `access` beneath the open path `fd`; returns -1 with errno set on failure.
///
/// # Safety
/// Only makes system calls.
pub(crate) unsafe fn add_path_rule(
    ruleset: libc::c_int,
    fd: libc::c_int,
    access: u64,
) -> libc::c_int {
    if access == 0 {
        return 0;
    }
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: fd,
    };
    // SAFETY: `attr` is a valid path-beneath attribute.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        ) as libc::c_int
    }
}

/// Enforces `ruleset` on the calling thread and its future children.
///
/// # Safety
/// Only makes system calls.
pub(crate) unsafe fn restrict_self(ruleset: libc::c_int) -> libc::c_int {
    // SAFETY: plain system call.
    unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) as libc::c_int }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_grow_with_the_abi() {
        assert_eq!(fs_rights(1), 0x1fff);
        assert_eq!(fs_rights(2), 0x3fff);
        assert_eq!(fs_rights(3), 0x7fff);
        assert_eq!(fs_rights(4), 0x7fff);
        assert_eq!(fs_rights(5), 0xffff);
        assert_eq!(fs_rights(7), 0xffff);
    }

    #[test]
    fn network_and_scopes_need_their_abi() {
        let r = Ruleset::for_abi(3, true, Some(3128));
        assert_eq!((r.handled_net, r.scoped), (0, 0));
        let r = Ruleset::for_abi(4, true, Some(3128));
        assert_eq!(r.handled_net, NET_BIND_TCP | NET_CONNECT_TCP);
        assert_eq!(Ruleset::for_abi(4, false, None).handled_net, 0);
        assert_eq!(Ruleset::for_abi(6, true, None).scoped, 3);
    }

    #[test]
    fn file_rules_get_only_file_rights() {
        let r = Ruleset::for_abi(5, false, None);
        assert_eq!(r.rights(u64::MAX, true), fs_rights(5));
        assert_eq!(r.rights(u64::MAX, false), FILE_RIGHTS);
        assert_eq!(r.rights(READ_ONLY, false), READ_FILE | EXECUTE);
        assert_eq!(
            Ruleset::for_abi(1, false, None).rights(IOCTL_DEV | READ_FILE, false),
            READ_FILE
        );
    }

    #[test]
    fn this_kernel_enforces_a_ruleset() {
        assert!(
            abi() >= 1,
            "Landlock is expected on this host (`ci-intel doctor` tells why not)"
        );
        let r = Ruleset::for_abi(abi(), true, Some(3128));
        // SAFETY: system calls only; the descriptor is closed below.
        let fd = unsafe { r.create() };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let added = unsafe { r.add_net_rule(fd) };
        assert_eq!(added, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(fd) };
    }
}
