//! A helper process that kills every live step group when the orchestrator dies.
//!
//! A parent-death signal reaches only a step's direct child, and only when the thread that
//! forked it dies. A step's grandchildren would survive a `SIGKILL` of the orchestrator. The
//! watchdog closes that gap: it is forked once, holds the read end of a pipe whose only
//! write end lives in the orchestrator, and shares with it a table of live step groups
//! (anonymous shared memory, mapped before the fork). The orchestrator records each step's
//! process group there as it starts and clears it as it ends, without waking the watchdog,
//! which sleeps in `read` the whole time. When the orchestrator dies for any reason, the
//! kernel closes the write end, the watchdog reads end-of-file, sends `SIGKILL` to every
//! group still in the table and exits.
//!
//! The watchdog never execs: between fork and exit it calls only async-signal-safe
//! functions (read, kill, close, open, dup2, signal, setpgid, prctl, _exit) and touches only
//! memory mapped before the fork, so forking a multi-threaded process is sound.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

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
    /// mmap of the shared group table failed.
    #[error("could not map the watchdog's group table")]
    Map(#[source] io::Error),
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
    table: Table,
    /// Which slot holds which group, and which slots are free.
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    by_pgid: HashMap<i32, usize>,
    free: Vec<usize>,
}

/// `CAPACITY` process group ids (0 = empty) in memory shared with the watchdog process.
#[derive(Debug)]
struct Table(*mut AtomicI32);

// SAFETY: the table is only accessed through atomics; the mapping lives as long as `Table`.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

impl Table {
    fn new() -> io::Result<Table> {
        // SAFETY: a fresh anonymous shared mapping; zero-filled, which is CAPACITY empty
        // AtomicI32 slots.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CAPACITY * size_of::<AtomicI32>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Table(p.cast()))
    }

    fn slots(&self) -> &[AtomicI32] {
        // SAFETY: CAPACITY initialised atomics, mapped until drop.
        unsafe { std::slice::from_raw_parts(self.0, CAPACITY) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped; no reference outlives `self`.
        unsafe { libc::munmap(self.0.cast(), CAPACITY * size_of::<AtomicI32>()) };
    }
}

impl Watchdog {
    /// Forks the watchdog process.
    pub fn start() -> Result<Watchdog, WatchdogError> {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| WatchdogError::Pipe(e.into()))?;
        // Mapped before fork and shared with the child, which may not allocate.
        let table = Table::new().map_err(WatchdogError::Map)?;
        // SAFETY: the child branch below runs only async-signal-safe code and ends in _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(WatchdogError::Fork(io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(tx);
            // SAFETY: we are the freshly forked child; see child_main.
            unsafe { child_main(&rx, table.slots()) }
        }
        drop(rx);
        Ok(Watchdog {
            inner: Arc::new(Inner {
                tx: Some(File::from(tx)),
                pid,
                table,
                slots: Mutex::new(Slots {
                    by_pgid: HashMap::new(),
                    free: (0..CAPACITY).rev().collect(),
                }),
            }),
        })
    }

    /// The watchdog's pid.
    pub fn pid(&self) -> i32 {
        self.inner.pid
    }

    /// Starts watching process group `pgid`.
    pub fn register(&self, pgid: i32) {
        let Ok(mut slots) = self.inner.slots.lock() else {
            return;
        };
        if slots.by_pgid.contains_key(&pgid) {
            return;
        }
        let Some(i) = slots.free.pop() else {
            tracing::warn!("watchdog table full; process group {pgid} is not watched");
            return;
        };
        slots.by_pgid.insert(pgid, i);
        self.inner.table.slots()[i].store(pgid, Ordering::Release);
    }

    /// Stops watching process group `pgid`.
    pub fn unregister(&self, pgid: i32) {
        let Ok(mut slots) = self.inner.slots.lock() else {
            return;
        };
        if let Some(i) = slots.by_pgid.remove(&pgid) {
            self.inner.table.slots()[i].store(0, Ordering::Release);
            slots.free.push(i);
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
unsafe fn child_main(rx: &OwnedFd, table: &[AtomicI32]) -> ! {
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
        // Nothing is ever written to the pipe: read returns only at end-of-file, when the
        // orchestrator's write end is closed (it exited, or dropped its last handle).
        let mut buf = [0u8; 64];
        loop {
            let n = libc::read(3, buf.as_mut_ptr().cast(), buf.len());
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        for slot in table {
            let pgid = slot.load(Ordering::Acquire);
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
