//! The isolated spawn: one `clone3` into new namespaces, a fresh root, and a tiny pid 1.
//!
//! Everything is prepared in the orchestrator ([`Prepared`]): paths as C strings, the mount
//! steps in order, the Landlock rules, the seccomp program. The child is a copy of
//! the orchestrator (fork semantics, no shared memory) whose other threads did not come
//! along, so it must not allocate: it only walks the prepared data and makes system calls.
//! See docs/sandbox.md for the sequence and the reserved exit codes.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::cgroup::StepCgroup;
use crate::isolation::{DEVICES, Entry, Isolation, Layout, NetworkMode, PROXY_PORT, SANDBOX_UID};
use crate::landlock::{self, IOCTL_DEV, READ_DIR, READ_FILE, READ_ONLY, Ruleset, WRITE_FILE};
use crate::seccomp::{self, Filters};

/// Exit code of the sandbox's pid 1 when its setup failed (the parent gets the details
/// through the report socket).
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit code when the command could not be executed (found but not executable).
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code when the command was not found inside the sandbox.
pub const EXIT_NOT_FOUND: i32 = 127;

const FD_REPORT: RawFd = 3;
const FD_STATUS: RawFd = 4;
const FD_PARENT: RawFd = 5;
const FIRST_FREE_FD: libc::c_uint = 6;

const MSG_READY: u32 = 1;
const MSG_SETUP_FAILED: u32 = 2;
const MSG_EXEC_FAILED: u32 = 3;

/// A step of the sandbox's setup, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[expect(
    missing_docs,
    reason = "each variant is described by `Stage::describe`"
)]
pub enum Stage {
    Descriptors = 1,
    IdentityMap,
    PrivateMounts,
    CloneTree,
    ProtectTree,
    NewRoot,
    MakeDir,
    AttachTree,
    Symlink,
    Tmpfs,
    WriteFile,
    Dev,
    Proc,
    PivotRoot,
    ReadOnlyRoot,
    Hostname,
    Network,
    Loopback,
    ProxyListener,
    Limits,
    Chdir,
    Landlock,
    Capabilities,
    NoNewPrivs,
    Seccomp,
    Fork,
    Cgroup,
}

impl Stage {
    const ALL: [Stage; 27] = [
        Stage::Descriptors,
        Stage::IdentityMap,
        Stage::PrivateMounts,
        Stage::CloneTree,
        Stage::ProtectTree,
        Stage::NewRoot,
        Stage::MakeDir,
        Stage::AttachTree,
        Stage::Symlink,
        Stage::Tmpfs,
        Stage::WriteFile,
        Stage::Dev,
        Stage::Proc,
        Stage::PivotRoot,
        Stage::ReadOnlyRoot,
        Stage::Hostname,
        Stage::Network,
        Stage::Loopback,
        Stage::ProxyListener,
        Stage::Limits,
        Stage::Chdir,
        Stage::Landlock,
        Stage::Capabilities,
        Stage::NoNewPrivs,
        Stage::Seccomp,
        Stage::Fork,
        Stage::Cgroup,
    ];

    /// What the stage does, as a message fragment.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Descriptors => "arranging file descriptors",
            Stage::IdentityMap => "writing the user and group id maps",
            Stage::PrivateMounts => "making mounts private",
            Stage::CloneTree => "cloning a host tree to bind",
            Stage::ProtectTree => "setting read-only/nosuid/nodev on a bind",
            Stage::NewRoot => "mounting the new root",
            Stage::MakeDir => "creating a mount point",
            Stage::AttachTree => "attaching a bind",
            Stage::Symlink => "creating a symbolic link",
            Stage::Tmpfs => "mounting a tmpfs",
            Stage::WriteFile => "writing a synthetic file",
            Stage::Dev => "building /dev",
            Stage::Proc => "mounting /proc",
            Stage::PivotRoot => "pivoting into the new root",
            Stage::ReadOnlyRoot => "making the root read-only",
            Stage::Hostname => "setting the hostname",
            Stage::Network => "creating the network namespace",
            Stage::Loopback => "bringing up loopback",
            Stage::ProxyListener => "opening the egress proxy port",
            Stage::Limits => "setting resource limits",
            Stage::Chdir => "entering the working directory",
            Stage::Landlock => "applying Landlock rules",
            Stage::Capabilities => "dropping capabilities",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Fork => "starting the command",
            Stage::Cgroup => "entering the step's cgroup",
        }
    }

    fn from_u32(v: u32) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u32 == v)
    }
}

/// Why an isolated process could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The policy's paths cannot be laid out.
    #[error("invalid sandbox layout")]
    Layout(#[from] crate::isolation::LayoutError),
    /// The seccomp filter could not be built.
    #[error("seccomp filter unavailable")]
    Seccomp(#[source] &'static seccomp::SeccompError),
    /// A system call of the orchestrator failed (socketpair, clone3...).
    #[error("could not start the sandbox")]
    Start(#[source] io::Error),
    /// The sandbox's setup failed at `stage`.
    #[error("sandbox setup failed {}{}", stage.describe(), path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Setup {
        /// The stage.
        stage: Stage,
        /// The path it was working on, when there is one.
        path: Option<PathBuf>,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The sandbox's cgroup could not be made.
    #[error("could not create the sandbox's cgroup")]
    Cgroup(#[source] io::Error),
    /// The sandbox's first process died before reporting.
    #[error("sandbox exited during setup")]
    Died,
}

/// A report from the child: what happened, where, and errno.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Report {
    kind: u32,
    stage: u32,
    index: u32,
    errno: i32,
}

/// One mount step, with everything as C strings relative to the new root.
#[derive(Debug)]
enum Op {
    Bind {
        /// Absolute host path.
        src: CString,
        /// Relative to the new root.
        dst: CString,
        attr: u64,
        dir: bool,
    },
    Symlink {
        dst: CString,
        target: CString,
    },
    Tmpfs {
        dst: CString,
        data: CString,
        flags: libc::c_ulong,
    },
    File {
        dst: CString,
        contents: Vec<u8>,
    },
    Proc {
        dst: CString,
    },
    Devpts {
        dst: CString,
    },
}

impl Op {
    /// Where the op acts, relative to the new root.
    fn dst(&self) -> &std::ffi::CStr {
        match self {
            Op::Bind { dst, .. }
            | Op::Symlink { dst, .. }
            | Op::Tmpfs { dst, .. }
            | Op::File { dst, .. }
            | Op::Proc { dst }
            | Op::Devpts { dst } => dst,
        }
    }
}

/// Everything the child needs, built before the clone.
pub(crate) struct Prepared {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// Ancestors to create before each op (relative, parents first), per op.
    parents: Vec<Vec<CString>>,
    /// Per op: whether its path lies beneath a writable bind, where every component is
    /// checked not to be a symbolic link before anything is created or mounted there.
    guarded: Vec<bool>,
    ops: Vec<Op>,
    /// Paths (absolute, inside) with their Landlock rights, and whether each is a dir.
    rules: Vec<(CString, u64)>,
    /// Descriptors of cloned trees, filled by the child (one slot per `Op::Bind`).
    tree_fds: Vec<libc::c_int>,
    ruleset: Ruleset,
    seccomp: Vec<libc::sock_fprog>,
    hostname: CString,
    network: NetworkMode,
    rlimits: [(u32, u64); 4],
    cap_last: u32,
    /// The pid namespace's `pid_max`, which bounds the step's tasks, when the kernel
    /// keeps one per namespace.
    pid_max: Option<CString>,
    /// Paths under the new /proc bound read-only onto themselves (relative to the root).
    proc_read_only: Vec<CString>,
    /// The stack the command starts on, until it execs.
    payload_stack: Vec<u8>,
    /// The stack of the orchestrator's helper that makes the network namespace.
    net_stack: Vec<u8>,
    /// Mounts made read-only after the pivot (absolute paths inside).
    read_only_after: Vec<CString>,
    /// The sandbox's cgroups, removed when the sandbox is gone.
    cgroup: Option<StepCgroup>,
    /// Their `tasks` files: pid 1 moves itself in first thing, before anything can fork.
    cgroup_tasks: Vec<CString>,
    /// Paths of ops, for error messages.
    op_paths: Vec<PathBuf>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("ops", &self.ops)
            .field("rules", &self.rules)
            .field("ruleset", &self.ruleset)
            .finish_non_exhaustive()
    }
}

fn cstr(bytes: &[u8]) -> CString {
    // Layout paths come from `Path`s that were checked for NUL bytes.
    CString::new(bytes).unwrap_or_default()
}

fn rel(path: &Path) -> CString {
    let b = path.as_os_str().as_bytes();
    cstr(b.strip_prefix(b"/").unwrap_or(b))
}

/// Highest capability number of this kernel.
fn cap_last() -> u32 {
    static LAST: OnceLock<u32> = OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63)
    })
}

/// Since Linux 6.14 `kernel.pid_max` is per pid namespace and writable by its owner: a
/// sandbox whose `pid_max` is `limit + 1` cannot have more than `limit` tasks, whoever runs
/// it (as root `RLIMIT_NPROC` does not apply). The kernel's minimum is 301, so smaller
/// limits fall back to a `pids` cgroup (as root) or `RLIMIT_NPROC`.
fn pid_max_for(limit: u64) -> Option<u64> {
    static PER_NAMESPACE: OnceLock<bool> = OnceLock::new();
    let per_namespace = *PER_NAMESPACE.get_or_init(|| {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut parts = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (6, 14)
    });
    (per_namespace && limit >= 300).then_some(limit + 1)
}

fn mem_total() -> u64 {
    // SAFETY: sysinfo fills the struct it is given.
    unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut info) == 0 {
            info.totalram.saturating_mul(u64::from(info.mem_unit))
        } else {
            u64::MAX
        }
    }
}

impl Prepared {
    pub(crate) fn new(isolation: &Isolation, cwd: &Path) -> Result<Prepared, SandboxError> {
        let layout = Layout::new(isolation, cwd)?;
        let filters = Filters::get().map_err(SandboxError::Seccomp)?;
        let limits = isolation.limits;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let tmpfs_data =
            |mode: u32| cstr(format!("mode={mode:o},size={}", limits.tmpfs).as_bytes());
        let abi = landlock::abi();
        let ruleset = Ruleset::for_abi(
            abi,
            isolation.network != NetworkMode::Loopback,
            (isolation.network == NetworkMode::Proxy).then_some(PROXY_PORT),
        );
        let all = u64::MAX;
        let mut ops = Vec::new();
        let mut op_paths = Vec::new();
        let mut rules: Vec<(CString, u64)> = vec![(cstr(b"/"), ruleset.rights(READ_DIR, true))];
        let mut read_only_after = vec![cstr(b"/")];
        // /dev and /proc first: a policy path may live under /dev/shm.
        // /dev: a small tmpfs with host device nodes bound in, links, ptys and /dev/shm.
        op_paths.push("/dev".into());
        ops.push(Op::Tmpfs {
            dst: cstr(b"dev"),
            data: cstr(b"mode=755,size=64k"),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        });
        for dev in DEVICES {
            let host = format!("/dev/{dev}");
            if Path::new(&host).exists() {
                op_paths.push(host.clone().into());
                ops.push(Op::Bind {
                    src: cstr(host.as_bytes()),
                    dst: cstr(format!("dev/{dev}").as_bytes()),
                    attr: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                    dir: false,
                });
            }
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            op_paths.push(format!("/dev/{name}").into());
            ops.push(Op::Symlink {
                dst: cstr(format!("dev/{name}").as_bytes()),
                target: cstr(target.as_bytes()),
            });
        }
        op_paths.push("/dev/pts".into());
        ops.push(Op::Devpts {
            dst: cstr(b"dev/pts"),
        });
        op_paths.push("/dev/shm".into());
        ops.push(Op::Tmpfs {
            dst: cstr(b"dev/shm"),
            data: tmpfs_data(0o1777),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
        });
        rules.push((
            cstr(b"/dev"),
            ruleset.rights(
                READ_FILE | WRITE_FILE | READ_DIR | IOCTL_DEV | (1 << 14),
                true,
            ),
        ));
        rules.push((cstr(b"/dev/shm"), ruleset.rights(all, true)));
        op_paths.push("/proc".into());
        ops.push(Op::Proc { dst: cstr(b"proc") });
        rules.push((cstr(b"/proc"), ruleset.rights(READ_FILE | READ_DIR, true)));
        for entry in &layout.entries {
            let path = entry.path();
            let abs = cstr(path.as_os_str().as_bytes());
            op_paths.push(path.to_path_buf());
            match entry {
                Entry::Bind {
                    source,
                    writable,
                    dir,
                    ..
                } => {
                    let mut attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
                    if !writable {
                        attr |= MOUNT_ATTR_RDONLY;
                    }
                    ops.push(Op::Bind {
                        src: cstr(source.as_os_str().as_bytes()),
                        dst: rel(path),
                        attr,
                        dir: *dir,
                    });
                    let want = if *writable { all } else { READ_ONLY };
                    rules.push((abs, ruleset.rights(want, *dir)));
                }
                Entry::Symlink { target, .. } => ops.push(Op::Symlink {
                    dst: rel(path),
                    target: cstr(target.as_bytes()),
                }),
                Entry::Tmpfs { mode, .. } => {
                    ops.push(Op::Tmpfs {
                        dst: rel(path),
                        data: tmpfs_data(*mode),
                        flags: libc::MS_NOSUID | libc::MS_NODEV,
                    });
                    rules.push((abs, ruleset.rights(all, true)));
                }
                Entry::File { contents, .. } => {
                    ops.push(Op::File {
                        dst: rel(path),
                        contents: contents.clone(),
                    });
                    rules.push((abs, ruleset.rights(READ_FILE, false)));
                }
                Entry::Dir { .. } => {
                    // Its own small tmpfs, made read-only once the binds beneath it are in
                    // place: a directory under /tmp must not be writable either.
                    ops.push(Op::Tmpfs {
                        dst: rel(path),
                        data: cstr(b"mode=755,size=1m"),
                        flags: libc::MS_NOSUID | libc::MS_NODEV,
                    });
                    read_only_after.push(abs.clone());
                    rules.push((abs, ruleset.rights(READ_ONLY, true)));
                }
            }
        }

        // Ancestors each op needs, parents first, each created once.
        let mut made = std::collections::HashSet::new();
        let parents = op_paths
            .iter()
            .map(|p| {
                let mut chain: Vec<&Path> = p.ancestors().skip(1).collect();
                chain.reverse();
                chain
                    .into_iter()
                    .filter(|a| *a != Path::new("/") && made.insert(a.to_path_buf()))
                    .map(rel)
                    .collect()
            })
            .collect();
        // Paths beneath a writable bind may meet symbolic links a step left there: creating
        // or mounting on them is checked to stay inside the new root.
        let writable: Vec<&Path> = layout
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Bind {
                    path,
                    writable: true,
                    ..
                } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        let guarded = op_paths
            .iter()
            .map(|p| writable.iter().any(|w| p != w && p.starts_with(w)))
            .collect();
        let binds = ops.iter().filter(|o| matches!(o, Op::Bind { .. })).count();
        let pid_max = pid_max_for(limits.pids);
        let cgroup =
            StepCgroup::create(&limits, pid_max.is_none()).map_err(SandboxError::Cgroup)?;
        let cgroup_tasks = cgroup
            .as_ref()
            .map(StepCgroup::task_files)
            .unwrap_or_default();
        let memory = limits.memory.unwrap_or_else(mem_total);
        Ok(Prepared {
            uid_map: format!("{SANDBOX_UID} {uid} 1\n").into_bytes(),
            gid_map: format!("{SANDBOX_UID} {gid} 1\n").into_bytes(),
            parents,
            guarded,
            ops,
            rules,
            tree_fds: vec![-1; binds],
            ruleset,
            seccomp: filters.fprogs(),
            hostname: cstr(isolation.hostname.as_bytes()),
            network: isolation.network,
            rlimits: [
                (libc::RLIMIT_NOFILE, limits.nofile),
                (libc::RLIMIT_NPROC, limits.pids),
                (libc::RLIMIT_CORE, 0),
                (libc::RLIMIT_DATA, memory),
            ],
            cap_last: cap_last(),
            cgroup,
            cgroup_tasks,
            payload_stack: vec![0; 64 * 1024],
            net_stack: vec![0; 16 * 1024],
            // Only the host's uid 0 may write these without capabilities; as anyone else the
            // sandbox user cannot, and the binds are skipped.
            proc_read_only: if uid == 0 {
                ["proc/sys", "proc/sysrq-trigger", "proc/irq"]
                    .iter()
                    .map(|p| cstr(p.as_bytes()))
                    .collect()
            } else {
                Vec::new()
            },
            pid_max: pid_max.map(|v| cstr(v.to_string().as_bytes())),
            read_only_after,
            op_paths,
        })
    }

    /// The path an op index refers to, for messages.
    fn op_path(&self, index: u32) -> Option<PathBuf> {
        self.op_paths.get(index as usize).cloned()
    }
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What [`spawn`] hands back: the outer pid of the sandbox's pid 1, its pidfd, the read end
/// of the status pipe, and the proxy listener when the network mode asked for one.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    pub(crate) status: File,
    pub(crate) proxy_listener: Option<OwnedFd>,
    pub(crate) cgroup: Option<StepCgroup>,
}

/// The exec half of the request: program, arguments, environment, directory, umask.
pub(crate) struct Exec<'a> {
    pub(crate) path: &'a CString,
    pub(crate) argv: &'a [*const libc::c_char],
    pub(crate) envp: &'a [*const libc::c_char],
    pub(crate) cwd: &'a CString,
    pub(crate) umask: libc::mode_t,
    pub(crate) stdin: RawFd,
    pub(crate) output: RawFd,
    pub(crate) stderr: RawFd,
}

/// Why exec failed inside the sandbox.
#[derive(Debug)]
pub(crate) enum SpawnFailure {
    Sandbox(SandboxError),
    Exec(io::Error),
}

/// Starts the sandbox. Returns once the command has been executed (or failed to).
pub(crate) fn spawn(mut prep: Prepared, exec: &Exec<'_>) -> Result<Started, SpawnFailure> {
    let start = |e: io::Error| SpawnFailure::Sandbox(SandboxError::Start(e));
    let mut sv = [0; 2];
    // SAFETY: valid out-array for two descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } < 0
    {
        return Err(start(io::Error::last_os_error()));
    }
    // SAFETY: both were just created and are owned here.
    let (report_r, report_w) =
        unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| start(e.into()))?;
    // SAFETY: pidfd_open of our own pid.
    let me = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if me < 0 {
        return Err(start(io::Error::last_os_error()));
    }
    // SAFETY: just returned by the kernel.
    let me = unsafe { OwnedFd::from_raw_fd(me as RawFd) };

    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_PIDFD) as u64,
        pidfd: std::ptr::from_mut(&mut pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    let fds = ChildFds {
        stdin: exec.stdin,
        output: exec.output,
        stderr: exec.stderr,
        report: report_w.as_raw_fd(),
        status: status_w.as_raw_fd(),
        parent: me.as_raw_fd(),
    };
    // Every signal stays blocked in the child (pid 1 waits for them with sigwaitinfo); the
    // parent's mask is restored right after the clone.
    let old = crate::process::block_all_signals();
    // SAFETY: clone3 without CLONE_VM has fork semantics; the child runs `child_main`,
    // which never returns and only makes system calls on data prepared above.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        child_main(&mut prep, exec, &fds);
    }
    let err = io::Error::last_os_error();
    if pid < 0 {
        crate::process::restore_signals(&old);
        return Err(start(err));
    }
    let pid = pid as libc::pid_t;
    // SAFETY: the kernel stored a new descriptor for the child in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The network namespace is made while the child builds its root (see `NetJob`).
    let net = NetJob::run(&pidfd, &mut prep.net_stack);
    crate::process::restore_signals(&old);
    drop((report_w, status_w, me));
    let fail = |e: SpawnFailure| {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        Err(e)
    };
    let setup_failed = |r: &Report| {
        SpawnFailure::Sandbox(SandboxError::Setup {
            stage: Stage::from_u32(r.stage).unwrap_or(Stage::Fork),
            path: if r.index == u32::MAX {
                None
            } else {
                prep.op_path(r.index)
            },
            source: io::Error::from_raw_os_error(r.errno),
        })
    };
    let netns = match net {
        Ok(fd) => fd,
        Err((stage, e)) => {
            // The helper cannot join a child that has already died of a failure of its
            // own (ESRCH); the child's report then says what went wrong, and is the one
            // to give. Once the child is reaped, its report is in the socket or never
            // comes.
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(match recv(&report_r) {
                Ok((Some(r), _)) if r.kind == MSG_SETUP_FAILED => setup_failed(&r),
                _ => SpawnFailure::Sandbox(SandboxError::Setup {
                    stage,
                    path: None,
                    source: e,
                }),
            });
        }
    };
    // If the child has already failed, the send fails too and its report says why.
    // SAFETY: a descriptor we own, sent on our end of the report socket.
    unsafe {
        send_on(
            report_r.as_raw_fd(),
            Report::default(),
            Some(netns.as_raw_fd()),
        )
    };
    drop(netns);
    let (first, fd) = match recv(&report_r) {
        Ok(v) => v,
        Err(e) => return fail(start(e)),
    };
    let Some(first) = first else {
        return fail(SpawnFailure::Sandbox(SandboxError::Died));
    };
    if first.kind == MSG_SETUP_FAILED {
        return fail(setup_failed(&first));
    }
    match recv(&report_r) {
        Ok((None, _)) => {}
        Ok((Some(r), _)) if r.kind == MSG_EXEC_FAILED => {
            return fail(SpawnFailure::Exec(io::Error::from_raw_os_error(r.errno)));
        }
        // Starting the command itself failed (EAGAIN from the task limit, ENOMEM).
        Ok((Some(r), _)) if r.kind == MSG_SETUP_FAILED => {
            return fail(SpawnFailure::Sandbox(SandboxError::Setup {
                stage: Stage::from_u32(r.stage).unwrap_or(Stage::Fork),
                path: None,
                source: io::Error::from_raw_os_error(r.errno),
            }));
        }
        Ok((Some(_), _)) => return fail(SpawnFailure::Sandbox(SandboxError::Died)),
        Err(e) => return fail(start(e)),
    }
    Ok(Started {
        pid,
        pidfd,
        status: File::from(status_r),
        proxy_listener: fd,
        cgroup: prep.cgroup.take(),
    })
}

/// Receives one report (None at end of stream), with a descriptor if one was attached.
fn recv(sock: &OwnedFd) -> io::Result<(Option<Report>, Option<OwnedFd>)> {
    let (report, fd) = recv_raw(sock.as_raw_fd()).map_err(io::Error::from_raw_os_error)?;
    // SAFETY: the kernel just installed the descriptor for us.
    Ok((
        report,
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
    ))
}

/// [`recv`] for pid 1 as well: stack buffers and system calls only. The descriptor is -1
/// when none came; the error is an errno.
fn recv_raw(sock: RawFd) -> Result<(Option<Report>, RawFd), i32> {
    let mut report = Report::default();
    let mut iov = libc::iovec {
        iov_base: std::ptr::from_mut(&mut report).cast(),
        iov_len: std::mem::size_of::<Report>(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain old data, pointing at the buffers above; the kernel fills them.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n;
            }
            if errno() != libc::EINTR {
                return Err(errno());
            }
        };
        if n == 0 {
            return Ok((None, -1));
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        let mut fd = -1;
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        }
        Ok((Some(report), fd))
    }
}

/// Reads the command's wait status that pid 1 left in the status pipe, if it did.
pub(crate) fn payload_status(mut status: &File) -> Option<CommandStatus> {
    let mut buf = [0u8; std::mem::size_of::<CommandStatus>()];
    status.read_exact(&mut buf).ok()?;
    // SAFETY: CommandStatus is plain old data of exactly this size, written by pid 1.
    Some(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<CommandStatus>()) })
}

/// What pid 1 reports when the command ends: its wait status and resource use (its own and
/// that of the descendants it reaped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CommandStatus {
    pub(crate) status: i32,
    pub(crate) max_rss_kib: i32,
    pub(crate) user_us: u64,
    pub(crate) system_us: u64,
}

struct ChildFds {
    stdin: RawFd,
    output: RawFd,
    stderr: RawFd,
    report: RawFd,
    status: RawFd,
    parent: RawFd,
}

/// Sends a report, optionally with a descriptor. Async-signal-safe.
///
/// # Safety
/// System calls only.
unsafe fn send(report: Report, fd: Option<RawFd>) {
    // SAFETY: as the caller's.
    unsafe { send_on(FD_REPORT, report, fd) }
}

/// [`send`] on any socket.
///
/// # Safety
/// System calls only.
unsafe fn send_on(sock: RawFd, report: Report, fd: Option<RawFd>) {
    let mut report = report;
    let mut iov = libc::iovec {
        iov_base: std::ptr::from_mut(&mut report).cast(),
        iov_len: std::mem::size_of::<Report>(),
    };
    let mut cbuf = [0u64; 4];
    // SAFETY: plain old data, filled below; CMSG macros compute offsets within `cbuf`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
    }
}

/// The sandbox's network namespace, made in parallel with its root.
///
/// Creating a network namespace is the costliest part of a sandbox's start (the kernel
/// registers loopback and every protocol's sysctls: about half a millisecond here), and
/// building the root is the next: so the child is cloned without `CLONE_NEWNET` and starts
/// on its mounts at once, while a helper made by the orchestrator joins the child's user
/// namespace (through its pidfd), unshares a network namespace there, brings loopback up
/// and hands back a descriptor for it. The child receives that descriptor on its report
/// socket and `setns`es into it before anything in it can reach a network. The namespace
/// is owned by the child's user namespace, exactly as with `CLONE_NEWNET`.
///
/// The helper shares the orchestrator's memory and descriptor table (`CLONE_VM |
/// CLONE_FILES | CLONE_VFORK`: the orchestrator sleeps until it is done) and makes system
/// calls only; it is a process of its own, so joining a user namespace is allowed even when
/// the orchestrator has threads.
#[repr(C)]
struct NetJob {
    pidfd: libc::c_int,
    netns: libc::c_int,
    stage: u32,
    errno: i32,
}

impl NetJob {
    /// Makes the namespace for the child behind `pidfd`. Every signal must be blocked.
    fn run(pidfd: &OwnedFd, stack: &mut [u8]) -> Result<OwnedFd, (Stage, io::Error)> {
        let mut job = NetJob {
            pidfd: pidfd.as_raw_fd(),
            netns: -1,
            stage: Stage::Network as u32,
            errno: 0,
        };
        // SAFETY: the helper runs `net_entry` on `stack`, which outlives it (CLONE_VFORK),
        // writes only `job`, and exits; it is reaped right after.
        unsafe {
            let top = stack.as_mut_ptr().add(stack.len());
            let top = (top as usize & !15) as *mut libc::c_void;
            let helper = libc::clone(
                net_entry,
                top,
                libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_mut(&mut job).cast(),
            );
            if helper < 0 {
                return Err((Stage::Network, io::Error::last_os_error()));
            }
            let mut status = 0;
            while libc::waitpid(helper, &mut status, 0) < 0 && errno() == libc::EINTR {}
            if job.netns >= 0 {
                return Ok(OwnedFd::from_raw_fd(job.netns));
            }
        }
        let stage = Stage::from_u32(job.stage).unwrap_or(Stage::Network);
        Err((stage, io::Error::from_raw_os_error(job.errno)))
    }
}

extern "C" fn net_entry(job: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `job` is the orchestrator's `NetJob`, alive while it is suspended.
    let job = unsafe { &mut *job.cast::<NetJob>() };
    let fail = |job: &mut NetJob, stage: Stage| {
        job.stage = stage as u32;
        job.errno = errno();
        // SAFETY: exiting the helper.
        unsafe { libc::_exit(1) }
    };
    // SAFETY: system calls only, on the job and the stack.
    unsafe {
        if libc::setns(job.pidfd, libc::CLONE_NEWUSER) < 0 || libc::unshare(libc::CLONE_NEWNET) < 0
        {
            fail(job, Stage::Network);
        }
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if s < 0 || libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) < 0 {
            fail(job, Stage::Loopback);
        }
        // The socket's namespace as a descriptor, in the shared table.
        const SIOCGSKNS: libc::c_ulong = 0x894C;
        let ns = libc::ioctl(s, SIOCGSKNS);
        if ns < 0 {
            fail(job, Stage::Network);
        }
        job.netns = ns;
        libc::_exit(0)
    }
}

/// Remounts the mount at `path` read-only, nosuid, nodev, plus `extra` flags.
///
/// # Safety
/// A system call only.
unsafe fn remount_read_only(path: &std::ffi::CStr, extra: libc::c_ulong) -> libc::c_int {
    // SAFETY: valid C strings and null pointers where the call allows them.
    unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | extra,
            std::ptr::null(),
        )
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// True when `path` (relative to `root`) does not exist yet, or resolves beneath `root`
/// without a symbolic link in any component. Errno is set when false.
///
/// # Safety
/// System calls only.
unsafe fn beneath(root: libc::c_int, path: &std::ffi::CStr) -> bool {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid pointers; the descriptor, if any, is closed at once.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        );
        if fd >= 0 {
            libc::close(fd as libc::c_int);
            return true;
        }
        errno() == libc::ENOENT
    }
}

fn errno() -> i32 {
    // SAFETY: reading this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Reports a failed stage and exits. Async-signal-safe.
fn die(stage: Stage, index: u32) -> ! {
    let errno = errno();
    // SAFETY: system calls only.
    unsafe {
        send(
            Report {
                kind: MSG_SETUP_FAILED,
                stage: stage as u32,
                index,
                errno,
            },
            None,
        );
        libc::_exit(EXIT_SETUP_FAILED)
    }
}

fn check(r: libc::c_long, stage: Stage, index: u32) {
    if r < 0 {
        die(stage, index);
    }
}

/// The sandbox's pid 1. Never returns; never allocates.
fn child_main(prep: &mut Prepared, exec: &Exec<'_>, fds: &ChildFds) -> ! {
    const NONE: u32 = u32::MAX;
    // SAFETY: everything below is a system call on prepared data, in a single-threaded copy
    // of the orchestrator; no allocation, no locks.
    unsafe {
        // Descriptors: move what we keep out of the way, then onto fixed numbers, then close
        // everything else this copy inherited (other steps' pipes included).
        let keep = [
            (fds.stdin, 0),
            (fds.output, 1),
            (fds.stderr, 2),
            (fds.report, FD_REPORT),
            (fds.status, FD_STATUS),
            (fds.parent, FD_PARENT),
        ];
        let mut high = [0; 6];
        for (i, (fd, _)) in keep.iter().enumerate() {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
            if high[i] < 0 {
                libc::_exit(EXIT_SETUP_FAILED);
            }
        }
        for (i, (_, target)) in keep.iter().enumerate() {
            if libc::dup3(high[i], *target, 0) < 0 {
                libc::_exit(EXIT_SETUP_FAILED);
            }
        }
        for fd in [FD_REPORT, FD_STATUS, FD_PARENT] {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        libc::syscall(libc::SYS_close_range, FIRST_FREE_FD, libc::c_uint::MAX, 0);

        // Into the step's cgroups, before anything can fork.
        for tasks in &prep.cgroup_tasks {
            let fd = libc::open(tasks.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                die(Stage::Cgroup, NONE);
            }
            libc::close(fd);
        }

        // The orchestrator's handlers must not run here.
        crate::process::reset_signal_handlers();
        if libc::setsid() < 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
            die(Stage::Descriptors, NONE);
        }
        // The orchestrator may have died before the death signal was armed.
        let mut pfd = libc::pollfd {
            fd: FD_PARENT,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) != 0 {
            libc::_exit(crate::process::EXIT_PARENT_GONE);
        }
        libc::close(FD_PARENT);

        // Identity: one uid and gid, never root inside.
        for (file, data) in [
            (c"/proc/self/setgroups", b"deny".as_slice()),
            (c"/proc/self/uid_map", prep.uid_map.as_slice()),
            (c"/proc/self/gid_map", prep.gid_map.as_slice()),
        ] {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, data.as_ptr().cast(), data.len()) < 0 {
                die(Stage::IdentityMap, NONE);
            }
            libc::close(fd);
        }

        // Mounts: nothing propagates back to the host.
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) as libc::c_long,
            Stage::PrivateMounts,
            NONE,
        );
        // Clone every host tree first: the new root is mounted over /tmp next, and a
        // policy path may live there.
        let mut slot = 0;
        for (i, op) in prep.ops.iter().enumerate() {
            if let Op::Bind { src, attr, .. } = op {
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    src.as_ptr(),
                    OPEN_TREE_CLONE
                        | libc::O_CLOEXEC as libc::c_uint
                        | libc::AT_RECURSIVE as libc::c_uint,
                );
                check(fd, Stage::CloneTree, i as u32);
                let ma = MountAttr {
                    attr_set: *attr,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                check(
                    libc::syscall(
                        libc::SYS_mount_setattr,
                        fd,
                        c"".as_ptr(),
                        (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                        &ma as *const MountAttr,
                        std::mem::size_of::<MountAttr>(),
                    ),
                    Stage::ProtectTree,
                    i as u32,
                );
                prep.tree_fds[slot] = fd as libc::c_int;
                slot += 1;
            }
        }
        check(
            libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=755,size=4m".as_ptr().cast(),
            ) as libc::c_long,
            Stage::NewRoot,
            NONE,
        );
        check(
            libc::chdir(c"/tmp".as_ptr()) as libc::c_long,
            Stage::NewRoot,
            NONE,
        );
        let root = libc::open(
            c".".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        check(root as libc::c_long, Stage::NewRoot, NONE);

        let mut slot = 0;
        for (i, op) in prep.ops.iter().enumerate() {
            let idx = i as u32;
            let guarded = prep.guarded[i];
            for dir in &prep.parents[i] {
                if guarded && !beneath(root, dir) {
                    die(Stage::MakeDir, idx);
                }
                if libc::mkdir(dir.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                    die(Stage::MakeDir, idx);
                }
            }
            if guarded && !beneath(root, op.dst()) {
                die(Stage::MakeDir, idx);
            }
            match op {
                Op::Bind { dst, dir, .. } => {
                    let made = if *dir {
                        libc::mkdir(dst.as_ptr(), 0o755)
                    } else {
                        let fd = libc::open(
                            dst.as_ptr(),
                            libc::O_RDONLY | libc::O_CREAT | libc::O_CLOEXEC,
                            0o644,
                        );
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        fd
                    };
                    if made < 0 && errno() != libc::EEXIST {
                        die(Stage::MakeDir, idx);
                    }
                    if guarded && !beneath(root, dst) {
                        die(Stage::AttachTree, idx);
                    }
                    let fd = prep.tree_fds[slot];
                    slot += 1;
                    check(
                        libc::syscall(
                            libc::SYS_move_mount,
                            fd,
                            c"".as_ptr(),
                            libc::AT_FDCWD,
                            dst.as_ptr(),
                            MOVE_MOUNT_F_EMPTY_PATH,
                        ),
                        Stage::AttachTree,
                        idx,
                    );
                    libc::close(fd);
                }
                Op::Symlink { dst, target } => {
                    if libc::symlink(target.as_ptr(), dst.as_ptr()) < 0 && errno() != libc::EEXIST {
                        die(Stage::Symlink, idx);
                    }
                }
                Op::Tmpfs { dst, data, flags } => {
                    if libc::mkdir(dst.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                        die(Stage::MakeDir, idx);
                    }
                    check(
                        libc::mount(
                            c"tmpfs".as_ptr(),
                            dst.as_ptr(),
                            c"tmpfs".as_ptr(),
                            *flags,
                            data.as_ptr().cast(),
                        ) as libc::c_long,
                        Stage::Tmpfs,
                        idx,
                    );
                }
                Op::File { dst, contents } => {
                    let fd = libc::open(
                        dst.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd < 0 || libc::write(fd, contents.as_ptr().cast(), contents.len()) < 0 {
                        die(Stage::WriteFile, idx);
                    }
                    libc::close(fd);
                }
                Op::Proc { dst } => {
                    if libc::mkdir(dst.as_ptr(), 0o555) < 0 && errno() != libc::EEXIST {
                        die(Stage::MakeDir, idx);
                    }
                    check(
                        libc::mount(
                            c"proc".as_ptr(),
                            dst.as_ptr(),
                            c"proc".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
                            std::ptr::null(),
                        ) as libc::c_long,
                        Stage::Proc,
                        idx,
                    );
                    // The step's task limit, in its own pid namespace (this /proc is its).
                    if let Some(value) = &prep.pid_max {
                        let fd = libc::open(
                            c"proc/sys/kernel/pid_max".as_ptr(),
                            libc::O_WRONLY | libc::O_CLOEXEC,
                        );
                        let len = value.as_bytes().len();
                        if fd < 0 || libc::write(fd, value.as_ptr().cast(), len) != len as isize {
                            die(Stage::Limits, NONE);
                        }
                        libc::close(fd);
                    }
                    // Host-wide knobs under /proc stay read-only: the sandbox user is the
                    // host's uid 0 when root runs ci-intel, and /proc/sys checks only the
                    // uid. (Landlock refuses writes there too, where the kernel has it.)
                    for path in &prep.proc_read_only {
                        if libc::mount(
                            path.as_ptr(),
                            path.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ) < 0
                        {
                            if errno() == libc::ENOENT {
                                continue;
                            }
                            die(Stage::Proc, idx);
                        }
                        check(
                            remount_read_only(path, libc::MS_NOEXEC) as libc::c_long,
                            Stage::Proc,
                            idx,
                        );
                    }
                }
                Op::Devpts { dst } => {
                    if libc::mkdir(dst.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                        die(Stage::MakeDir, idx);
                    }
                    check(
                        libc::mount(
                            c"devpts".as_ptr(),
                            dst.as_ptr(),
                            c"devpts".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NOEXEC,
                            c"newinstance,ptmxmode=0666,mode=620".as_ptr().cast(),
                        ) as libc::c_long,
                        Stage::Dev,
                        idx,
                    );
                }
            }
        }

        libc::close(root);

        // Into the new root; the old one is detached and gone.
        check(
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()),
            Stage::PivotRoot,
            NONE,
        );
        check(
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH) as libc::c_long,
            Stage::PivotRoot,
            NONE,
        );
        check(
            libc::chdir(c"/".as_ptr()) as libc::c_long,
            Stage::PivotRoot,
            NONE,
        );
        // The root, then each directory made of its own tmpfs.
        for path in &prep.read_only_after {
            check(
                remount_read_only(path, 0) as libc::c_long,
                Stage::ReadOnlyRoot,
                NONE,
            );
        }
        check(
            libc::sethostname(prep.hostname.as_ptr(), prep.hostname.as_bytes().len())
                as libc::c_long,
            Stage::Hostname,
            NONE,
        );

        // The network namespace the orchestrator made meanwhile (loopback already up); in
        // proxy mode, the proxy's port in it, handed out to the orchestrator.
        let netns = match recv_raw(FD_REPORT) {
            Ok((Some(_), fd)) if fd >= 0 => fd,
            _ => die(Stage::Network, NONE),
        };
        check(
            libc::setns(netns, libc::CLONE_NEWNET) as libc::c_long,
            Stage::Network,
            NONE,
        );
        libc::close(netns);
        let mut listener = -1;
        if prep.network == NetworkMode::Proxy {
            listener = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: PROXY_PORT.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            if listener < 0
                || libc::bind(
                    listener,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ) < 0
                || libc::listen(listener, 128) < 0
            {
                die(Stage::ProxyListener, NONE);
            }
        }

        for (resource, value) in prep.rlimits {
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource as _, &lim) < 0 {
                die(Stage::Limits, NONE);
            }
        }
        libc::umask(exec.umask);
        check(
            libc::chdir(exec.cwd.as_ptr()) as libc::c_long,
            Stage::Chdir,
            NONE,
        );

        // Landlock rules, mirroring the mounts, opened in the new root.
        let mut ruleset = -1;
        if prep.ruleset.abi >= 1 {
            ruleset = prep.ruleset.create();
            check(ruleset as libc::c_long, Stage::Landlock, NONE);
            for (path, access) in &prep.rules {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    continue;
                }
                check(
                    landlock::add_path_rule(ruleset, fd, *access) as libc::c_long,
                    Stage::Landlock,
                    NONE,
                );
                libc::close(fd);
            }
            check(
                prep.ruleset.add_net_rule(ruleset) as libc::c_long,
                Stage::Landlock,
                NONE,
            );
        }

        // Capabilities: none, in any set, and no way back.
        const SECURE_BITS: libc::c_ulong = 0xef;
        check(
            libc::prctl(libc::PR_SET_SECUREBITS, SECURE_BITS, 0, 0, 0) as libc::c_long,
            Stage::Capabilities,
            NONE,
        );
        for cap in 0..=prep.cap_last {
            check(
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) as libc::c_long,
                Stage::Capabilities,
                NONE,
            );
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        check(
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()),
            Stage::Capabilities,
            NONE,
        );
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long,
            Stage::NoNewPrivs,
            NONE,
        );
        if ruleset >= 0 {
            check(
                landlock::restrict_self(ruleset) as libc::c_long,
                Stage::Landlock,
                NONE,
            );
            libc::close(ruleset);
        }
        // Nothing in the sandbox may trace or read the memory of pid 1.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        for prog in &prep.seccomp {
            check(seccomp::install(prog) as libc::c_long, Stage::Seccomp, NONE);
        }

        send(
            Report {
                kind: MSG_READY,
                ..Report::default()
            },
            (listener >= 0).then_some(listener),
        );
        if listener >= 0 {
            libc::close(listener);
        }

        // The command shares pid 1's memory until it execs (as posix_spawn does): no copy
        // of the page tables, and pid 1 waits until the exec.
        let stack = prep
            .payload_stack
            .as_mut_ptr()
            .add(prep.payload_stack.len());
        let stack = (stack as usize & !15) as *mut libc::c_void;
        let child = libc::clone(
            payload_entry,
            stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(exec).cast_mut().cast(),
        );
        check(child as libc::c_long, Stage::Fork, NONE);
        // pid 1 writes nothing: the step's output ends when the command's processes close
        // it, not when the sandbox is torn down.
        for fd in 0..3 {
            libc::close(fd);
        }
        libc::close(FD_REPORT);
        init_loop(child)
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

extern "C" fn payload_entry(exec: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `exec` is pid 1's `Exec`, alive while pid 1 is suspended by CLONE_VFORK.
    unsafe { payload(&*exec.cast::<Exec<'_>>()) }
}

/// The command: its own session, clean descriptors, exec. Never returns.
///
/// # Safety
/// System calls only.
unsafe fn payload(exec: &Exec<'_>) -> ! {
    // SAFETY: system calls on prepared data.
    unsafe {
        libc::close(FD_STATUS);
        libc::setsid();
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
        let e = errno();
        send(
            Report {
                kind: MSG_EXEC_FAILED,
                errno: e,
                ..Report::default()
            },
            None,
        );
        libc::_exit(if e == libc::ENOENT {
            EXIT_NOT_FOUND
        } else {
            EXIT_CANNOT_EXECUTE
        })
    }
}

/// Signals pid 1 passes on to the command's process group.
const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// pid 1: reap every zombie, forward signals, exit as the command did.
fn init_loop(child: libc::pid_t) -> ! {
    // SAFETY: system calls only; every signal is blocked since the clone.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let mut usage: libc::rusage = std::mem::zeroed();
                    let r = libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage);
                    if r <= 0 {
                        break;
                    }
                    if r == child {
                        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
                        let report = CommandStatus {
                            status,
                            max_rss_kib: usage.ru_maxrss as i32,
                            user_us: us(usage.ru_utime),
                            system_us: us(usage.ru_stime),
                        };
                        libc::write(
                            FD_STATUS,
                            std::ptr::from_ref(&report).cast(),
                            std::mem::size_of::<CommandStatus>(),
                        );
                        let code = if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else {
                            128 + libc::WTERMSIG(status)
                        };
                        // Whatever else still runs in the namespace dies with us.
                        libc::_exit(code);
                    }
                }
            } else if FORWARDED.contains(&sig) {
                libc::kill(-child, sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_u32(s as u32), Some(s));
            assert!(!s.describe().is_empty());
        }
        assert_eq!(Stage::from_u32(0), None);
    }

    fn pidfd_of(pid: libc::pid_t) -> OwnedFd {
        // SAFETY: pidfd_open of a live process; the descriptor is owned here.
        unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
            assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
            OwnedFd::from_raw_fd(fd as RawFd)
        }
    }

    fn inode(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn network_helper_makes_a_namespace_owned_by_the_childs_user_namespace() {
        use std::os::unix::process::CommandExt as _;
        // A child in a user namespace of its own, as the sandbox's pid 1 is.
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: unshare is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWUSER) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .expect("a process in a new user namespace (userns)");
        let pid = child.id() as libc::pid_t;
        let mut stack = vec![0u8; 16 * 1024];
        let old = crate::process::block_all_signals();
        let made = NetJob::run(&pidfd_of(pid), &mut stack);
        crate::process::restore_signals(&old);
        let netns = made
            .map_err(|(stage, e)| format!("{stage:?}: {e}"))
            .unwrap();
        // A new network namespace, whose owner is the child's user namespace.
        let fd = netns.as_raw_fd();
        assert_ne!(
            inode(&format!("/proc/self/fd/{fd}")),
            inode("/proc/self/ns/net")
        );
        const NS_GET_USERNS: libc::c_ulong = 0xb701;
        // SAFETY: an ioctl on a namespace descriptor we own; the result is ours.
        let owner = unsafe { OwnedFd::from_raw_fd(libc::ioctl(fd, NS_GET_USERNS)) };
        assert_eq!(
            inode(&format!("/proc/self/fd/{}", owner.as_raw_fd())),
            inode(&format!("/proc/{pid}/ns/user"))
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn network_helper_reports_the_stage_and_errno_it_failed_with() {
        // Joining the user namespace one is already in is EINVAL.
        let mut stack = vec![0u8; 16 * 1024];
        // SAFETY: getpid cannot fail.
        let me = pidfd_of(unsafe { libc::getpid() });
        let old = crate::process::block_all_signals();
        let made = NetJob::run(&me, &mut stack);
        crate::process::restore_signals(&old);
        let (stage, e) = made.expect_err("setns into our own user namespace fails");
        assert_eq!(stage, Stage::Network);
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn prepared_mounts_dev_and_proc_before_the_layout_and_creates_each_parent_once() {
        let iso = Isolation::builder().network(NetworkMode::Proxy).build();
        let p = Prepared::new(&iso, Path::new("/work/a/b")).unwrap();
        let made: Vec<&CString> = p.parents.iter().flatten().collect();
        let unique: std::collections::HashSet<_> = made.iter().collect();
        assert_eq!(made.len(), unique.len(), "{made:?}");
        assert!(made.contains(&&c"work/a".to_owned()));
        assert!(matches!(p.ops[0], Op::Tmpfs { .. }), "/dev comes first");
        assert!(p.ops.iter().any(|o| matches!(o, Op::Proc { .. })));
        assert_eq!(
            p.tree_fds.len(),
            p.ops
                .iter()
                .filter(|o| matches!(o, Op::Bind { .. }))
                .count()
        );
        assert_eq!(p.ruleset.connect_port, Some(PROXY_PORT));
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(p.uid_map, format!("1000 {uid} 1\n").into_bytes());
    }
}
