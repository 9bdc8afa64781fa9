//! Starting one process in its own session and process group, signalling that group, and
//! reaping it without ever signalling a recycled process id.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

use crate::isolation::Isolation;
use crate::ns;
use crate::watchdog::Watchdog;

/// Exit status a child reports when it finds, between fork and exec, that the orchestrator
/// already died (so nothing would ever reap or stop it).
pub(crate) const EXIT_PARENT_GONE: i32 = 125;

/// What a process may see and how it is contained.
#[derive(Clone, Debug)]
pub struct Policy {
    cwd: PathBuf,
    env: Vec<(OsString, OsString)>,
    umask: libc::mode_t,
    isolation: Option<Isolation>,
}

impl Policy {
    /// A policy that runs in `cwd` with an empty environment and umask 022.
    pub fn new(cwd: impl Into<PathBuf>) -> Policy {
        Policy {
            cwd: cwd.into(),
            env: Vec::new(),
            umask: 0o022,
            isolation: None,
        }
    }

    /// Adds one environment variable; later values of the same name win.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Policy {
        let key = key.as_ref().to_owned();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_owned()));
        self
    }

    /// Sets the umask the process starts with.
    #[must_use]
    pub fn umask(mut self, umask: u32) -> Policy {
        self.umask = umask as libc::mode_t;
        self
    }

    /// Runs the process isolated: new namespaces, a fresh root, Landlock, seccomp, no
    /// capabilities (see [`Isolation`]). Without this, the process only gets its own session
    /// and the policy's environment.
    #[must_use]
    pub fn isolate(mut self, isolation: Isolation) -> Policy {
        self.isolation = Some(isolation);
        self
    }

    /// The isolation, when the process is isolated.
    pub fn isolation(&self) -> Option<&Isolation> {
        self.isolation.as_ref()
    }

    /// The working directory.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The environment, in the order it was set.
    pub fn environment(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program does not exist (on `PATH` or at the given path).
    #[error("command not found: {program}")]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// The program exists but may not be executed.
    #[error("permission denied executing {program}")]
    PermissionDenied {
        /// The program as given.
        program: String,
    },
    /// The working directory is missing.
    #[error("working directory {} does not exist", path.display())]
    MissingCwd {
        /// The directory.
        path: PathBuf,
    },
    /// An empty argument vector.
    #[error("empty command")]
    EmptyCommand,
    /// The sandbox could not be set up.
    #[error("could not isolate {program}")]
    Sandbox {
        /// The program as given.
        program: String,
        /// What failed.
        #[source]
        source: ns::SandboxError,
    },
    /// Any other failure of fork, exec or pidfd_open.
    #[error("could not start {program}")]
    Io {
        /// The program as given.
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// How a reaped process ended, with its resource use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, when it exited normally.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// User CPU time of the process and its reaped descendants.
    pub user_time: Duration,
    /// System CPU time of the process and its reaped descendants.
    pub system_time: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

impl Exit {
    /// True when the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The status a shell would report: the code, or 128 + the signal number.
    pub fn shell_status(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// A running process that leads its own process group.
///
/// The leader is never reaped behind the caller's back, so its pid, which is also the
/// group id, cannot be recycled while this handle exists: [`Child::signal_group`] can never
/// hit an unrelated process. Dropping the handle kills the whole group and reaps the leader.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    watchdog: Option<Watchdog>,
    reaped: bool,
    /// For an isolated process: where its pid 1 reports the command's status.
    status: Option<AsyncFd<std::fs::File>>,
    proxy_listener: Option<OwnedFd>,
    /// Dropped (removed) after the leader is reaped: fields drop after `Drop::drop`.
    _cgroup: Option<crate::cgroup::StepCgroup>,
}

/// Starts `argv` under `policy` with stdout and stderr both on `output`.
///
/// The child gets its own session (so its own process group and no controlling
/// terminal), `SIGKILL` as parent-death signal, and exits at once with
/// exit code 125 (`EXIT_PARENT_GONE`) if the parent died before the signal was armed. When a watchdog is
/// given, the group is registered with it before this returns.
pub fn spawn(
    policy: &Policy,
    argv: &[OsString],
    output: OwnedFd,
    watchdog: Option<&Watchdog>,
) -> Result<Child, SpawnError> {
    let stderr = output.try_clone().map_err(|source| SpawnError::Io {
        program: argv
            .first()
            .map_or_else(String::new, |p| p.to_string_lossy().into_owned()),
        source,
    })?;
    spawn_stdio(policy, argv, output, stderr, watchdog)
}

/// Like [`spawn`], with stdout and stderr on separate descriptors.
pub fn spawn_stdio(
    policy: &Policy,
    argv: &[OsString],
    output: OwnedFd,
    stderr: OwnedFd,
    watchdog: Option<&Watchdog>,
) -> Result<Child, SpawnError> {
    let (program, args) = argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let program_name = program.to_string_lossy().into_owned();
    // An isolated process's working directory is made in its own root when nothing
    // binds it there.
    if policy.isolation.is_none() && !policy.cwd.is_dir() {
        return Err(SpawnError::MissingCwd {
            path: policy.cwd.clone(),
        });
    }
    let io_err = |source: io::Error| SpawnError::Io {
        program: program_name.clone(),
        source,
    };
    let nul = |_| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte in argument",
        ))
    };
    // Everything the child needs is prepared here: between clone and exec it may not
    // allocate (it shares this address space with the orchestrator's other threads).
    // What an exec-time error means, whether found before the clone or after it.
    let exec_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => SpawnError::NotFound {
            program: program_name.clone(),
        },
        io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied {
            program: program_name.clone(),
        },
        _ => io_err(e),
    };
    let path = resolve(program, policy).map_err(exec_err)?;
    let path = CString::new(path.into_os_string().into_vec()).map_err(nul)?;
    let argv_c: Vec<CString> = std::iter::once(program)
        .chain(args)
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(nul)?;
    let env_c: Vec<CString> = policy
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(nul)?;
    let cwd = CString::new(policy.cwd.as_os_str().as_bytes()).map_err(nul)?;
    let mut argv_p: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env_c.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let stdin = std::fs::File::open("/dev/null").map_err(io_err)?;
    if let Some(isolation) = &policy.isolation {
        let prep =
            ns::Prepared::new(isolation, &policy.cwd).map_err(|source| SpawnError::Sandbox {
                program: program_name.clone(),
                source,
            })?;
        let exec = ns::Exec {
            path: &path,
            argv: &argv_p,
            envp: &env_p,
            cwd: &cwd,
            umask: policy.umask,
            stdin: stdin.as_raw_fd(),
            output: output.as_raw_fd(),
            stderr: stderr.as_raw_fd(),
        };
        let started = ns::spawn(prep, &exec).map_err(|e| match e {
            ns::SpawnFailure::Sandbox(source) => SpawnError::Sandbox {
                program: program_name.clone(),
                source,
            },
            ns::SpawnFailure::Exec(source) => exec_err(source),
        })?;
        drop((stdin, output, stderr));
        let pid = Pid::from_raw(started.pid);
        if let Some(w) = watchdog {
            w.register(pid.as_raw());
        }
        // SAFETY: each AsyncFd owns its descriptor for its whole life.
        let registered = unsafe {
            AsyncFd::register_with_interest(started.status, tokio::io::Interest::READABLE)
        }
        .map_err(io::Error::from)
        .and_then(|status| Ok((register_readable(started.pidfd)?, status)));
        let (pidfd, status) = match registered {
            Ok(fds) => fds,
            Err(source) => {
                if let Some(w) = watchdog {
                    w.unregister(pid.as_raw());
                }
                kill_and_reap(pid);
                return Err(io_err(source));
            }
        };
        return Ok(Child {
            pid,
            pidfd,
            watchdog: watchdog.cloned(),
            reaped: false,
            status: Some(status),
            proxy_listener: started.proxy_listener,
            _cgroup: started.cgroup,
        });
    }
    let mut req = ChildRequest {
        path: path.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: env_p.as_ptr(),
        cwd: cwd.as_ptr(),
        stdin: stdin.as_raw_fd(),
        output: output.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        parent: std::process::id() as libc::pid_t,
        umask: policy.umask,
        errno: 0,
    };
    let pid = Pid::from_raw(clone_vfork(&mut req).map_err(io_err)?);
    drop((stdin, output, stderr));
    if req.errno != 0 {
        // The child could not exec and has exited; reap it.
        let _ = wait4(pid);
        return Err(exec_err(io::Error::from_raw_os_error(req.errno)));
    }
    if let Some(w) = watchdog {
        w.register(pid.as_raw());
    }
    let pidfd = match pidfd_open(pid).and_then(register_readable) {
        Ok(fd) => fd,
        Err(source) => {
            if let Some(w) = watchdog {
                w.unregister(pid.as_raw());
            }
            kill_and_reap(pid);
            return Err(io_err(source));
        }
    };
    Ok(Child {
        pid,
        pidfd,
        watchdog: watchdog.cloned(),
        reaped: false,
        status: None,
        proxy_listener: None,
        _cgroup: None,
    })
}

/// The program's path: as given when it names a path, else the first executable match on
/// the policy's `PATH` (the step's own, not the orchestrator's).
fn resolve(program: &OsStr, policy: &Policy) -> io::Result<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = policy
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or_else(|| OsStr::new("/usr/bin:/bin"), |(_, v)| v.as_os_str());
    let mut denied = false;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        let Ok(meta) = candidate.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let c = CString::new(candidate.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(io::Error::from(if denied {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::NotFound
    }))
}

/// What the child of [`clone_vfork`] does, prepared by the parent. `errno` is written by
/// the child when it cannot exec.
struct ChildRequest {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: libc::c_int,
    output: libc::c_int,
    stderr: libc::c_int,
    parent: libc::pid_t,
    umask: libc::mode_t,
    errno: libc::c_int,
}

/// Size of the child's stack: it only makes a handful of system calls.
const CHILD_STACK: usize = 64 * 1024;

/// Starts the child with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does: the page
/// tables are shared, not copied, and this thread resumes once the child has called
/// `execve` or exited. Other threads keep running; the child touches only `req` and its
/// own stack.
fn clone_vfork(req: &mut ChildRequest) -> io::Result<libc::pid_t> {
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: one past the end of the allocation; the child's stack grows down from there.
    let top = unsafe { stack.as_mut_ptr().add(CHILD_STACK) };
    let top = (top as usize & !15) as *mut libc::c_void;
    // Blocking every signal keeps the orchestrator's handlers from running on the child's
    // stack; the child resets them before unblocking.
    let old = block_all_signals();
    // SAFETY: `child_main` only reads `req`, writes `req.errno`, and calls
    // async-signal-safe functions; `stack` and `req` outlive the child's use of them
    // because CLONE_VFORK suspends this thread until the child execs or exits.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_mut(req).cast(),
        )
    };
    let err = io::Error::last_os_error();
    restore_signals(&old);
    drop(stack);
    if pid < 0 { Err(err) } else { Ok(pid) }
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildRequest`, alive until we exec or exit; every call
    // below is an async-signal-safe system call.
    unsafe {
        let req = &mut *arg.cast::<ChildRequest>();
        let fail = |req: &mut ChildRequest| -> ! {
            req.errno = *libc::__errno_location();
            libc::_exit(127)
        };
        // Handlers of the orchestrator must not run here.
        reset_signal_handlers();
        if libc::setsid() < 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
            fail(req);
        }
        // The parent may have died before PR_SET_PDEATHSIG was armed.
        if libc::getppid() != req.parent {
            libc::_exit(EXIT_PARENT_GONE);
        }
        libc::umask(req.umask);
        for (fd, target) in [(req.stdin, 0), (req.output, 1), (req.stderr, 2)] {
            let r = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if r < 0 {
                fail(req);
            }
        }
        if libc::chdir(req.cwd) < 0 {
            fail(req);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(req.path, req.argv, req.envp);
        fail(req)
    }
}

/// Puts every signal's disposition back to the default: the orchestrator's handlers must
/// not run in a child, and ignored signals (SIGPIPE) get their default back, as for any
/// freshly started program. Async-signal-safe.
///
/// # Safety
/// System calls only; for a child between clone and exec.
pub(crate) unsafe fn reset_signal_handlers() {
    // SAFETY: sigaction with valid pointers.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
                && sa.sa_sigaction != libc::SIG_DFL
            {
                sa.sa_sigaction = libc::SIG_DFL;
                sa.sa_flags = 0;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    }
}

/// Blocks every signal on this thread; returns the mask to restore.
pub(crate) fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; the pointers are valid.
    unsafe {
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Restores a mask saved by [`block_all_signals`].
pub(crate) fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: a valid mask saved earlier.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn register_readable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and unchanged for
    // the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

fn kill_and_reap(pid: Pid) {
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = wait4(pid);
}

fn wait4(pid: Pid) -> io::Result<Exit> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to a local int and rusage.
        let r = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut usage) };
        if r >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(Exit {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        user_time: tv(usage.ru_utime),
        system_time: tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss.max(0) as u64,
    })
}

impl Child {
    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The listening socket of the egress proxy port inside the sandbox, for a process
    /// isolated with [`NetworkMode::Proxy`](crate::NetworkMode::Proxy). Connections a
    /// sandboxed process makes to `127.0.0.1:`[`PROXY_PORT`](crate::PROXY_PORT) are accepted
    /// on it, outside the sandbox.
    pub fn take_proxy_listener(&mut self) -> Option<std::net::TcpListener> {
        self.proxy_listener.take().map(std::net::TcpListener::from)
    }

    /// Waits until the leader has exited, without reaping it.
    pub async fn exited(&self) -> io::Result<()> {
        let guard = self.pidfd.readable().await?;
        // A pidfd stays readable once the process has exited; keep the readiness.
        drop(guard);
        Ok(())
    }

    /// Waits until the command has ended: for an isolated process, as soon as its pid 1
    /// has reported the command's status, before the sandbox is torn down (the kernel
    /// killing what is left, unmounting), which takes a few hundred microseconds more;
    /// otherwise when the process exits. Then [`Child::command_exit`] has the result.
    pub async fn ended(&self) -> io::Result<()> {
        match &self.status {
            Some(status) => tokio::select! {
                r = status.readable() => { drop(r?); Ok(()) }
                r = self.exited() => r,
            },
            None => self.exited().await,
        }
    }

    /// How an isolated command ended, once its pid 1 has reported it (see
    /// [`Child::ended`]): its exit code or signal and its resource use. `None` for a process
    /// that is not isolated, or when pid 1 died without a report; then reap it.
    ///
    /// The handle must still be reaped or dropped; since pid 1 is already exiting, a caller
    /// may do that in the background.
    pub fn command_exit(&mut self) -> Option<Exit> {
        let report = ns::payload_status(self.status.take()?.get_ref())?;
        let s = report.status;
        Some(Exit {
            code: libc::WIFEXITED(s).then(|| libc::WEXITSTATUS(s)),
            signal: libc::WIFSIGNALED(s).then(|| libc::WTERMSIG(s)),
            user_time: Duration::from_micros(report.user_us),
            system_time: Duration::from_micros(report.system_us),
            max_rss_kib: report.max_rss_kib.max(0) as u64,
        })
    }

    /// Whether the sandbox has cgroups, which are removed only when the handle is reaped
    /// or dropped.
    pub fn has_cgroup(&self) -> bool {
        self._cgroup.is_some()
    }

    /// Sends `signal` to every process in the group.
    pub fn signal_group(&self, signal: Signal) -> io::Result<()> {
        match killpg(self.pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Kills whatever is left of the group and reaps the leader.
    ///
    /// Call after [`Child::exited`]: processes the step left running in its group (daemons,
    /// background jobs) are killed, never orphaned.
    pub fn reap(mut self) -> io::Result<Exit> {
        let _ = self.signal_group(Signal::SIGKILL);
        // Unregister while the pid is still ours: after wait4 it may be reused, and a
        // watchdog firing in between must not kill someone else's group.
        if let Some(w) = &self.watchdog {
            w.unregister(self.pid.as_raw());
        }
        let exit = wait4(self.pid);
        self.reaped = true;
        let mut exit = exit?;
        // An isolated command's own status, as its pid 1 saw it; when pid 1 was killed
        // before the command ended, pid 1's death is the answer.
        if let Some(report) = self
            .status
            .as_ref()
            .and_then(|s| ns::payload_status(s.get_ref()))
        {
            let status = report.status;
            exit.code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            exit.signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
        }
        Ok(exit)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = killpg(self.pid, Signal::SIGKILL);
            if let Some(w) = &self.watchdog {
                w.unregister(self.pid.as_raw());
            }
            let _ = wait4(self.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (std::fs::File, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (std::fs::File::from(r), w)
    }

    fn sh(script: &str) -> Vec<OsString> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn environment_is_exactly_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::new(dir.path())
            .env("A", "1")
            .env("A", "2")
            .env("B", "x");
        let (mut r, w) = pipe();
        let child = spawn(&policy, &sh("env | sort; umask; pwd"), w, None).unwrap();
        child.exited().await.unwrap();
        let exit = child.reap().unwrap();
        assert!(exit.success());
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        // dash adds PWD (and nothing else) to the environment it prints.
        let env: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains('=') && !l.starts_with("PWD="))
            .collect();
        assert_eq!(env, ["A=2", "B=x"]);
        assert!(lines.contains(&"0022"), "umask in {lines:?}");
        let cwd = dir.path().canonicalize().unwrap();
        assert!(lines.contains(&cwd.to_str().unwrap()), "{lines:?}");
    }

    #[tokio::test]
    async fn child_leads_its_own_session_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, w) = pipe();
        let child = spawn(
            &Policy::new(dir.path()),
            &sh("cut -d' ' -f5,6 /proc/$$/stat"),
            w,
            None,
        )
        .unwrap();
        let pid = child.pid();
        child.exited().await.unwrap();
        child.reap().unwrap();
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), format!("{pid} {pid}"), "pgid and sid equal pid");
    }

    #[tokio::test]
    async fn missing_program_and_cwd_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (_r, w) = pipe();
        let err = spawn(
            &Policy::new(dir.path()),
            &["/nonexistent/ci-intel-nope".into()],
            w.try_clone().unwrap(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "command not found: /nonexistent/ci-intel-nope"
        );
        let err = spawn(&Policy::new(dir.path().join("gone")), &sh("true"), w, None).unwrap_err();
        assert!(matches!(err, SpawnError::MissingCwd { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn reap_kills_what_the_step_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, w) = pipe();
        let child = spawn(
            &Policy::new(dir.path()),
            &sh("sleep 300 >/dev/null 2>&1 & echo $!"),
            w,
            None,
        )
        .unwrap();
        child.exited().await.unwrap();
        let exit = child.reap().unwrap();
        assert!(exit.success());
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        let bg: i32 = out.trim().parse().unwrap();
        // SIGKILL is delivered asynchronously: poll (bounded) until it is a zombie or gone.
        let running = || {
            let state = std::fs::read_to_string(format!("/proc/{bg}/stat")).unwrap_or_default();
            state
                .rsplit(')')
                .next()
                .is_some_and(|s| matches!(s.trim_start().chars().next(), Some('S' | 'R' | 'D')))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!running(), "background process {bg} survived");
    }

    #[tokio::test]
    async fn signal_exit_is_reported_as_128_plus_signal() {
        let dir = tempfile::tempdir().unwrap();
        let (_r, w) = pipe();
        let child = spawn(&Policy::new(dir.path()), &sh("kill -TERM $$"), w, None).unwrap();
        child.exited().await.unwrap();
        let exit = child.reap().unwrap();
        assert_eq!(exit.signal, Some(libc::SIGTERM));
        assert_eq!(exit.shell_status(), 128 + libc::SIGTERM);
    }
}
