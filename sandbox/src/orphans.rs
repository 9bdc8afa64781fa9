//! Catching processes that leave their step's process group.
//!
//! A step's process can call `setsid` (a daemon does) and so leave the group that
//! [`Child::signal_group`](crate::Child::signal_group) and the watchdog kill. When the
//! orchestrator is a child subreaper, such a process is re-parented to it instead of to
//! init once its parent exits, and [`kill_orphans`] kills and reaps it when the run ends.
//! A process that escapes this way still survives a `SIGKILL` of the orchestrator itself;
//! only a pid namespace closes that, and [`Posture`](crate::Posture) says so.

use std::io;

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub fn adopt_orphans() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pids of this process's children, from `/proc/self/task/*/children`.
fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Kills (`SIGKILL`) and reaps every child of this process whose pid is not in `keep`,
/// repeating while killed processes hand their own children over. Returns how many were
/// reaped. Call it when no step is running: every other child is then a leftover.
pub fn kill_orphans(keep: &[i32]) -> usize {
    let mut reaped = 0;
    // Each pass reaps one generation; a bound keeps a fork bomb from holding us forever.
    for _ in 0..64 {
        let victims: Vec<i32> = children()
            .into_iter()
            .filter(|p| !keep.contains(p))
            .collect();
        if victims.is_empty() {
            break;
        }
        for pid in victims {
            // SAFETY: plain syscalls on a pid that is our unreaped child, so it cannot have
            // been recycled.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                let mut status = 0;
                if libc::waitpid(pid, &mut status, 0) == pid {
                    reaped += 1;
                }
            }
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const BODY: &str = "CI_INTEL_ORPHANS_TEST_BODY";

    /// Becoming a subreaper changes a process for good, so the test re-runs itself in a
    /// child process and checks what that child reports.
    #[test]
    fn a_setsid_escapee_is_adopted_and_killed() {
        if std::env::var_os(BODY).is_some() {
            return body();
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "orphans::tests::a_setsid_escapee_is_adopted_and_killed",
            ])
            .args(["--nocapture", "--test-threads", "1"])
            .env(BODY, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}{err}");
        assert!(
            text.contains("reaped escapee"),
            "the body did not run: {text}{err}"
        );
    }

    fn body() {
        adopt_orphans().unwrap();
        // The shell starts a daemon in its own session, prints its pid and exits: the
        // daemon is an orphan outside every process group we know of.
        let out = Command::new("/bin/sh")
            .args(["-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !children().contains(&pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(children().contains(&pid), "escapee {pid} was not adopted");
        assert!(kill_orphans(&[]) >= 1);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        println!("reaped escapee {pid}");
    }
}
