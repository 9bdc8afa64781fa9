//! A helper process that kills every live step group when the orchestrator dies.
//!
//! A parent-death signal reaches only a step's direct child, and only when the thread that
//! forked it dies. A step's grandchildren would survive a `SIGKILL` of the orchestrator. The
//! watchdog closes that gap: it is forked once, holds the read end of a pipe whose only
//! write end lives in the orchestrator, and learns each step's process group as it starts
//! and ends. When the orchestrator dies for any reason, the kernel closes the write end,
//! the watchdog reads end-of-file, sends `SIGKILL` to every group still registered and
//! exits.
//!
//! The watchdog never execs: between fork and exit it calls only async-signal-safe
//! functions (read, kill, close, open, dup2, signal, setpgid, prctl, _exit) and writes only
//! into memory allocated before the fork, so forking a multi-threaded process is sound.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Most step groups one watchdog tracks at once; more are still parent-death-signalled
/// but not watched.
pub(crate) const CAPACITY: usize = 16_384;

/// Why the watchdog could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// pipe2 failed.
    #[error("could not create the watchdog pipe")]
    Pipe(#[source] io::Error),
    /// fork failed.
    #[error("could not fork the watchdog process")]
    Fork(#[source] io::Error),
}

/// Handle to the watchdog process. Cheap to clone; the process exits when the last clone
/// is dropped (or the orchestrator dies), after killing every group still registered.
#[derive(Clone, Debug)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: Option<File>,
    pid: libc::pid_t,
}

const REGISTER: u8 = b'+';
const UNREGISTER: u8 = b'-';

impl Watchdog {
    /// Forks the watchdog process.
    pub fn start() -> Result<Watchdog, WatchdogError> {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| WatchdogError::Pipe(e.into()))?;
        // Allocated before fork: the child may not allocate.
        let mut table = vec![0 as libc::pid_t; CAPACITY].into_boxed_slice();
        // SAFETY: the child branch below runs only async-signal-safe code and ends in _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(WatchdogError::Fork(io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(tx);
            // SAFETY: we are the freshly forked child; see child_main.
            unsafe { child_main(&rx, &mut table) }
        }
        drop(rx);
        Ok(Watchdog {
            inner: Arc::new(Inner {
                tx: Some(File::from(tx)),
                pid,
            }),
        })
    }

    /// The watchdog's pid.
    pub fn pid(&self) -> i32 {
        self.inner.pid
    }

    /// Starts watching process group `pgid`.
    pub fn register(&self, pgid: i32) {
        self.send(REGISTER, pgid);
    }

    /// Stops watching process group `pgid`.
    pub fn unregister(&self, pgid: i32) {
        self.send(UNREGISTER, pgid);
    }

    fn send(&self, op: u8, pgid: i32) {
        let mut rec = [0u8; 5];
        rec[0] = op;
        rec[1..].copy_from_slice(&pgid.to_le_bytes());
        // Five bytes is below PIPE_BUF, so concurrent writes never interleave.
        let Some(tx) = &self.inner.tx else { return };
        if let Err(e) = (&*tx).write_all(&rec) {
            tracing::warn!("watchdog pipe write failed: {e}");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the only write end makes the child read EOF, kill what is registered
        // and exit, so the wait below ends.
        drop(self.tx.take());
        let mut status = 0;
        // SAFETY: waiting on our own child.
        unsafe {
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// The watchdog's whole life. Never returns.
///
/// # Safety
/// Must be called only in the child right after fork.
unsafe fn child_main(rx: &OwnedFd, table: &mut [libc::pid_t]) -> ! {
    // SAFETY: all calls below are async-signal-safe syscalls on valid arguments.
    unsafe {
        libc::setpgid(0, 0);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_NAME, c"ci-intel-watch".as_ptr());
        // Keep only the pipe, as fd 3, so the watchdog holds no other pipe open (a test
        // harness reading our stdout must see EOF when we die).
        let fd = rx.as_raw_fd();
        if fd != 3 {
            libc::dup2(fd, 3);
        }
        libc::close_range(4, u32::MAX, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
        let mut len = 0usize;
        let mut buf = [0u8; 4096];
        let mut have = 0usize;
        loop {
            let n = libc::read(3, buf.as_mut_ptr().add(have).cast(), buf.len() - have);
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            if n == 0 {
                break;
            }
            have += n as usize;
            let whole = have - have % 5;
            let mut i = 0;
            while i < whole {
                let pgid = i32::from_le_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]);
                if buf[i] == REGISTER {
                    if len < table.len() {
                        table[len] = pgid;
                        len += 1;
                    }
                } else if let Some(pos) = table[..len].iter().position(|&p| p == pgid) {
                    table[pos] = table[len - 1];
                    len -= 1;
                }
                i += 5;
            }
            buf.copy_within(whole..have, 0);
            have -= whole;
        }
        for &pgid in &table[..len] {
            if pgid > 1 {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn alive(pid: i32) -> bool {
        // A zombie counts as dead: it no longer runs.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => !s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
            Err(_) => false,
        }
    }

    fn wait_dead(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn dropping_the_last_handle_kills_registered_groups_only() {
        let mut watched = Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut spared = Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let dog = Watchdog::start().unwrap();
        let clone = dog.clone();
        dog.register(watched.id() as i32);
        dog.register(spared.id() as i32);
        dog.unregister(spared.id() as i32);
        drop(dog);
        // A clone keeps the watchdog alive.
        assert!(alive(watched.id() as i32));
        drop(clone);
        assert!(wait_dead(watched.id() as i32), "registered group survived");
        watched.wait().unwrap();
        assert!(alive(spared.id() as i32), "unregistered group was killed");
        spared.kill().unwrap();
        spared.wait().unwrap();
    }

    use std::os::unix::process::CommandExt;
}
