//! The seccomp denylist every sandboxed process runs under.
//!
//! The filters are compiled once, in the orchestrator, with `seccompiler`; the sandbox's
//! first process installs them (a `prctl` per filter, no allocation) after its setup is
//! done, so the system calls it needed for setup (mount, pivot_root) are denied from then
//! on. Filters are stacked because each returns one errno: `EPERM` for what is forbidden,
//! `ENOSYS` for interfaces a program can live without (so libraries fall back), and
//! `EAFNOSUPPORT` for socket families outside the allowed ones; on x86_64 a fourth,
//! hand-written, refuses x32 system call numbers, which seccompiler's filters do not see.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541c;
const IPPROTO_MPTCP: u64 = 262;
const SOCK_TYPE_MASK: u64 = 0xf;

/// Why the filters could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The architecture has no seccomp support in this build.
    #[error("seccomp filters are not supported on {arch}")]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// seccompiler refused a rule (a bug in the rules).
    #[error("seccomp filter does not compile")]
    Compile(#[source] seccompiler::BackendError),
}

/// Compiled filters, ready to install.
pub(crate) struct Filters {
    programs: Vec<BpfProgram>,
}

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filters")
            .field("programs", &self.programs.len())
            .finish()
    }
}

/// The system calls that return `EPERM` unconditionally.
const DENIED: &[(libc::c_long, &str)] = &[
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_vhangup, "vhangup"),
];

/// The system calls that return `ENOSYS`: `clone3` (its flags are out of the filter's
/// reach, so C libraries fall back to `clone`, whose flags are checked) and io_uring.
const UNAVAILABLE: &[libc::c_long] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// Names of the denied system calls, for documentation and reports.
pub fn denied_syscalls() -> impl Iterator<Item = &'static str> {
    DENIED.iter().map(|(_, name)| *name)
}

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<Cond, SeccompError> {
    Cond::new(arg, len, op, value).map_err(SeccompError::Compile)
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(SeccompError::Compile)
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
        .map_err(SeccompError::Compile)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Compile)
}

/// On x86_64, x32 system calls share the architecture value but carry bit 30 in their
/// number, so a filter keyed on x86_64 numbers would not see them: refuse them all.
fn x32_guard() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW), // other architectures: the other filters decide
        op(LD_W_ABS, 0, 0, 0),                    // seccomp_data.nr
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

impl Filters {
    /// The filters for this architecture, compiled once per process.
    pub(crate) fn get() -> Result<&'static Filters, &'static SeccompError> {
        static FILTERS: OnceLock<Result<Filters, SeccompError>> = OnceLock::new();
        FILTERS.get_or_init(Filters::build).as_ref()
    }

    fn build() -> Result<Filters, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
            SeccompError::UnsupportedArch {
                arch: std::env::consts::ARCH,
            }
        })?;
        let newuser = libc::CLONE_NEWUSER as u64;
        let mut eperm: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
        // New user namespaces: the door to every other namespace and to capabilities.
        for nr in [libc::SYS_unshare, libc::SYS_clone] {
            eperm.insert(
                nr,
                vec![rule(vec![cond(
                    0,
                    Len::Qword,
                    Op::MaskedEq(newuser),
                    newuser,
                )?])?],
            );
        }
        // Faking terminal input. The command is compared on its low 32 bits only, as the
        // kernel reads it: a value with high bits set must not slip through.
        eperm.insert(
            libc::SYS_ioctl,
            vec![
                rule(vec![cond(1, Len::Dword, Op::Eq, TIOCSTI)?])?,
                rule(vec![cond(1, Len::Dword, Op::Eq, TIOCLINUX)?])?,
            ],
        );
        // Raw and packet-level IP sockets, ping sockets and MPTCP.
        let mut sockets = Vec::new();
        for family in [libc::AF_INET as u64, libc::AF_INET6 as u64] {
            sockets.push(rule(vec![
                cond(0, Len::Dword, Op::Eq, family)?,
                cond(
                    1,
                    Len::Dword,
                    Op::MaskedEq(SOCK_TYPE_MASK),
                    libc::SOCK_RAW as u64,
                )?,
            ])?);
            sockets.push(rule(vec![
                cond(0, Len::Dword, Op::Eq, family)?,
                cond(2, Len::Dword, Op::Eq, IPPROTO_MPTCP)?,
            ])?);
        }
        sockets.push(rule(vec![
            cond(0, Len::Dword, Op::Eq, libc::AF_INET as u64)?,
            cond(2, Len::Dword, Op::Eq, libc::IPPROTO_ICMP as u64)?,
        ])?);
        sockets.push(rule(vec![
            cond(0, Len::Dword, Op::Eq, libc::AF_INET6 as u64)?,
            cond(2, Len::Dword, Op::Eq, libc::IPPROTO_ICMPV6 as u64)?,
        ])?);
        eperm.insert(libc::SYS_socket, sockets);

        let enosys = UNAVAILABLE.iter().map(|nr| (*nr, Vec::new())).collect();

        // Socket families: unix, IPv4, IPv6, and netlink for routing reads only.
        let mut family_rules = Vec::new();
        let mut other = Vec::new();
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            other.push(cond(0, Len::Dword, Op::Ne, family as u64)?);
        }
        family_rules.push(rule(other)?);
        family_rules.push(rule(vec![
            cond(0, Len::Dword, Op::Eq, libc::AF_NETLINK as u64)?,
            cond(2, Len::Dword, Op::Ne, libc::NETLINK_ROUTE as u64)?,
        ])?);
        let mut families = BTreeMap::new();
        families.insert(libc::SYS_socket, family_rules.clone());
        families.insert(libc::SYS_socketpair, family_rules);

        let mut programs = vec![
            compile(eperm, SeccompAction::Errno(libc::EPERM as u32), arch)?,
            compile(enosys, SeccompAction::Errno(libc::ENOSYS as u32), arch)?,
            compile(
                families,
                SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
                arch,
            )?,
        ];
        if cfg!(target_arch = "x86_64") {
            programs.push(x32_guard());
        }
        Ok(Filters { programs })
    }

    /// The programs in the form `prctl(PR_SET_SECCOMP)` takes. The pointers borrow `self`.
    pub(crate) fn fprogs(&self) -> Vec<libc::sock_fprog> {
        self.programs
            .iter()
            .map(|p| libc::sock_fprog {
                len: p.len() as libc::c_ushort,
                filter: p.as_ptr().cast_mut().cast(),
            })
            .collect()
    }
}

/// Installs one filter on the calling thread; -1 with errno set on failure.
///
/// # Safety
/// `prog` must point to a valid program. Only makes a system call.
pub(crate) unsafe fn install(prog: &libc::sock_fprog) -> libc::c_int {
    // SAFETY: the caller guarantees `prog`; NO_NEW_PRIVS is set before this is called.
    unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            prog as *const libc::sock_fprog,
            0,
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_architecture() {
        let f = Filters::get().expect("seccomp filters build on x86_64 and aarch64");
        assert_eq!(
            f.fprogs().len(),
            if cfg!(target_arch = "x86_64") { 4 } else { 3 }
        );
        assert!(f.fprogs().iter().all(|p| p.len > 4));
    }

    /// Runs `probe` in a forked child after installing the filters; returns its exit code.
    fn in_filtered_child(probe: fn() -> i32) -> i32 {
        let progs = Filters::get().unwrap().fprogs();
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                for p in &progs {
                    if install(p) != 0 {
                        libc::_exit(99);
                    }
                }
                libc::_exit(probe());
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn denied_calls_fail_with_their_errno_and_others_work() {
        let code = in_filtered_child(|| {
            // SAFETY: plain system calls with valid or null arguments.
            unsafe { probe_denied_calls() }
        });
        assert_eq!(code, 0, "probe {code} failed (see the numbered checks)");
    }

    /// # Safety
    /// System calls only.
    unsafe fn probe_denied_calls() -> i32 {
        // SAFETY: plain system calls with valid or null arguments.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) == 0 || errno() != libc::EPERM {
                return 1;
            }
            // The high-bit variant of TIOCSTI is caught too (low 32 bits compared).
            let c = b'x';
            if libc::syscall(libc::SYS_ioctl, 0, 0x1_0000_5412u64, &c) == 0
                || errno() != libc::EPERM
            {
                return 2;
            }
            if libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) >= 0
                || errno() != libc::EAFNOSUPPORT
            {
                return 3;
            }
            if libc::socket(libc::AF_INET, libc::SOCK_STREAM, IPPROTO_MPTCP as i32) >= 0
                || errno() != libc::EPERM
            {
                return 4;
            }
            if libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null::<u8>()) >= 0
                || errno() != libc::ENOSYS
            {
                return 5;
            }
            let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if s < 0 {
                return 6;
            }
            let r = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
            if r < 0 {
                return 7;
            }
            if libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW,
                libc::NETLINK_KOBJECT_UEVENT,
            ) >= 0
            {
                return 8;
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                0,
                std::ptr::null(),
            ) == 0
                || errno() != libc::EPERM
            {
                return 9;
            }
            0
        }
    }
}
