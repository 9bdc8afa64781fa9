//! The seccomp denylist every sandboxed process runs under.
//!
//! One classic-BPF program, built once per process in the orchestrator and installed by
//! the sandbox's first process (one `prctl`, no allocation) after its setup is done, so the
//! system calls it needed for setup (mount, pivot_root) are denied from then on. It
//! returns `EPERM` for what is forbidden, `ENOSYS` for interfaces a program can live
//! without (so libraries fall back: `clone3`, io_uring) and for x32 system calls on x86_64,
//! and `EAFNOSUPPORT` for socket families outside Unix, IPv4, IPv6 and routing netlink.
//!
//! The program is written out here rather than with `seccompiler`: that crate gives one
//! action per filter, so three stacked filters were needed (and a fourth, hand-written,
//! for x32), and compiling and JIT-ing four programs cost a sandbox about 0.2 ms. A flat
//! list of comparisons, each followed by its return, is short, easy to audit, and has no
//! jump longer than a few instructions.

use std::sync::OnceLock;

const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;
const IPPROTO_MPTCP: u32 = 262;
const SOCK_TYPE_MASK: u32 = 0xf;

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20;
#[cfg(test)]
const BPF_JMP: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;

// Offsets in `struct seccomp_data`; argument words are read as their low 32 bits, which
// is what the kernel uses for `int` and `unsigned int` arguments (flags, ioctl numbers).
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_003e);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_00b7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The architecture has no seccomp filter in this build.
    #[error("seccomp filters are not supported on {arch}")]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
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

/// The system calls that return `ENOSYS`: `clone3` (its flags are out of a filter's
/// reach, so C libraries fall back to `clone`, whose flags are checked) and io_uring.
const UNAVAILABLE: &[libc::c_long] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// Names of the system calls denied outright, for documentation and reports.
pub fn denied_syscalls() -> impl Iterator<Item = &'static str> {
    DENIED.iter().map(|(_, name)| *name)
}

/// The compiled filter, ready to install.
pub(crate) struct Filters {
    program: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filters")
            .field("instructions", &self.program.len())
            .finish()
    }
}

/// A program under construction: straight-line checks, each ending in its own return.
struct Program(Vec<libc::sock_filter>);

impl Program {
    fn op(&mut self, code: u16, jt: u8, jf: u8, k: u32) -> &mut Self {
        self.0.push(libc::sock_filter { code, jt, jf, k });
        self
    }
    fn load(&mut self, offset: u32) -> &mut Self {
        self.op(BPF_LD_W_ABS, 0, 0, offset)
    }
    fn ret(&mut self, action: u32) -> &mut Self {
        self.op(BPF_RET_K, 0, 0, action)
    }
    /// `if A == k { return action }`.
    fn deny_if(&mut self, k: u32, action: u32) -> &mut Self {
        self.op(BPF_JEQ_K, 0, 1, k).ret(action)
    }
    /// Runs `block` only when the system call is `nr`; the block must end in a return.
    fn on_syscall(&mut self, nr: libc::c_long, block: impl FnOnce(&mut Program)) -> &mut Self {
        let mut inner = Program(Vec::new());
        block(&mut inner);
        let skip = u8::try_from(inner.0.len()).expect("a short block");
        self.op(BPF_JEQ_K, 0, skip, nr as u32);
        self.0.extend(inner.0);
        self.load(NR)
    }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

impl Filters {
    /// The filter for this architecture, built once per process.
    pub(crate) fn get() -> Result<&'static Filters, &'static SeccompError> {
        static FILTERS: OnceLock<Result<Filters, SeccompError>> = OnceLock::new();
        FILTERS.get_or_init(Filters::build).as_ref()
    }

    fn build() -> Result<Filters, SeccompError> {
        let arch = AUDIT_ARCH.ok_or(SeccompError::UnsupportedArch {
            arch: std::env::consts::ARCH,
        })?;
        let (eperm, enosys, eafnosupport) = (
            errno(libc::EPERM),
            errno(libc::ENOSYS),
            errno(libc::EAFNOSUPPORT),
        );
        let allow = libc::SECCOMP_RET_ALLOW;
        let newuser = libc::CLONE_NEWUSER as u32;
        let mut p = Program(Vec::new());
        // Another architecture's system call numbers mean something else: kill.
        p.load(ARCH)
            .op(BPF_JEQ_K, 1, 0, arch)
            .ret(libc::SECCOMP_RET_KILL_PROCESS)
            .load(NR);
        if cfg!(target_arch = "x86_64") {
            // x32 calls share the architecture value but carry bit 30 in their number.
            p.op(BPF_JGE_K, 0, 1, 0x4000_0000).ret(enosys);
        }
        for (nr, _) in DENIED {
            p.deny_if(*nr as u32, eperm);
        }
        for nr in UNAVAILABLE {
            p.deny_if(*nr as u32, enosys);
        }
        // New user namespaces: the door to every other namespace and to capabilities.
        for nr in [libc::SYS_unshare, libc::SYS_clone] {
            p.on_syscall(nr, |b| {
                b.load(arg(0))
                    .op(BPF_JSET_K, 0, 1, newuser)
                    .ret(eperm)
                    .ret(allow);
            });
        }
        // Faking terminal input; the command is compared on its low 32 bits, as the kernel
        // reads it, so a value with high bits set does not slip through.
        p.on_syscall(libc::SYS_ioctl, |b| {
            b.load(arg(1))
                .deny_if(TIOCSTI, eperm)
                .deny_if(TIOCLINUX, eperm)
                .ret(allow);
        });
        // Socket families: Unix, IPv4, IPv6 (no raw, ping or MPTCP sockets), and netlink
        // for routing only. Jump offsets count instructions: `deny_if` is two.
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            p.on_syscall(nr, |b| {
                b.load(arg(0))
                    .op(BPF_JEQ_K, 0, 1, libc::AF_UNIX as u32)
                    .ret(allow)
                    .op(BPF_JEQ_K, 0, 4, libc::AF_NETLINK as u32)
                    .load(arg(2))
                    .op(BPF_JEQ_K, 1, 0, libc::NETLINK_ROUTE as u32)
                    .ret(eafnosupport)
                    .ret(allow)
                    .op(BPF_JEQ_K, 1, 0, libc::AF_INET as u32)
                    .op(BPF_JEQ_K, 0, 12, libc::AF_INET6 as u32)
                    .load(arg(1))
                    .op(BPF_AND_K, 0, 0, SOCK_TYPE_MASK)
                    .deny_if(libc::SOCK_RAW as u32, eperm)
                    .load(arg(2))
                    .deny_if(IPPROTO_MPTCP, eperm)
                    .deny_if(libc::IPPROTO_ICMP as u32, eperm)
                    .deny_if(libc::IPPROTO_ICMPV6 as u32, eperm)
                    .ret(allow)
                    .ret(eafnosupport);
            });
        }
        p.ret(allow);
        Ok(Filters { program: p.0 })
    }

    /// The program in the form `prctl(PR_SET_SECCOMP)` takes. The pointer borrows `self`.
    pub(crate) fn fprogs(&self) -> Vec<libc::sock_fprog> {
        vec![libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        }]
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
    fn the_filter_builds_for_this_architecture_and_fits_bpf_limits() {
        let f = Filters::get().expect("seccomp filters build on x86_64 and aarch64");
        assert_eq!(f.fprogs().len(), 1);
        let len = f.fprogs()[0].len;
        assert!(len > 60 && len < 4096, "{len} instructions");
        // Every jump stays inside the program.
        for (i, ins) in f.program.iter().enumerate() {
            if ins.code & 0x07 == BPF_JMP {
                assert!(
                    i + 1 + usize::from(ins.jt.max(ins.jf)) < f.program.len(),
                    "jump at {i}"
                );
            }
        }
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
