//! Running `diffoscope --text - a b` when it is installed: bounded in time and output.

use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Bytes of `diffoscope`'s output kept.
const MAX_OUTPUT_BYTES: usize = 64 << 10;

/// `diffoscope` in `PATH`.
pub(super) fn locate() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("diffoscope"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[derive(Debug)]
struct Output {
    stdout: Vec<u8>,
    stdout_cut: bool,
    stderr: Vec<u8>,
    /// `None`: stopped at the timeout.
    status: Option<ExitStatus>,
}

fn read_bounded(r: Option<impl Read>, max: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (kept, cut)
}

/// Runs `cmd` in its own process group, stopping the group at `timeout`; keeps the first
/// `max` bytes of its output (and drains the rest).
fn run_bounded(cmd: &mut Command, timeout: Duration, max: usize) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // ETXTBSY: the program was just written and a process forked meanwhile still holds
    // it open for writing until its exec; that passes.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            res => break res?,
        }
    };
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let reader = std::thread::spawn(move || read_bounded(out, max));
    let err_reader = std::thread::spawn(move || read_bounded(err, 8192));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) with a negative pid signals the process group the child
                // leads (it was spawned with process_group(0)); no memory is involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stdout_cut) = reader.join().unwrap_or_default();
    let (stderr, _) = err_reader.join().unwrap_or_default();
    Ok(Output {
        stdout,
        stdout_cut,
        stderr,
        status,
    })
}

/// `diffoscope --version`'s first line.
pub(super) fn version(program: &Path) -> String {
    match run_bounded(
        Command::new(program).arg("--version"),
        Duration::from_secs(20),
        4096,
    ) {
        Ok(o) if o.status.is_some_and(|s| s.success()) => {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines()
                .next()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .unwrap_or("diffoscope (version unknown)")
                .to_owned()
        }
        _ => "diffoscope (version unknown)".to_owned(),
    }
}

/// `diffoscope --text - a b`: its text, at most `max_lines` lines, or what went wrong.
pub(super) fn run(
    program: &Path,
    a: &Path,
    b: &Path,
    timeout: Duration,
    max_lines: usize,
) -> String {
    let mut cmd = Command::new(program);
    cmd.args(["--text", "-"]).arg(a).arg(b);
    let o = match run_bounded(&mut cmd, timeout, MAX_OUTPUT_BYTES) {
        Ok(o) => o,
        Err(e) => return format!("could not run diffoscope: {e}"),
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let mut body = lines[..lines.len().min(max_lines)].join("\n");
    if lines.len() > max_lines || o.stdout_cut {
        body.push_str(&format!(
            "\n(diffoscope's output cut at {} lines / {} KiB)",
            max_lines.min(lines.len()),
            MAX_OUTPUT_BYTES >> 10
        ));
    }
    match o.status.map(|s| s.code()) {
        None => format!(
            "diffoscope did not finish within {} s and was stopped; its output until then:\n{body}",
            timeout.as_secs_f64()
        ),
        Some(Some(0)) => "diffoscope found no differences".to_owned(),
        Some(Some(1)) => body,
        Some(code) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let err: Vec<&str> = err.lines().take(5).collect();
            format!(
                "diffoscope failed (exit {}): {}",
                code.map_or_else(|| "by a signal".to_owned(), |c| c.to_string()),
                err.join(" / ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("diffoscope");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn output_is_bounded_and_exit_codes_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            r#"[ "$1" = --version ] && { echo "diffoscope 999"; exit 0; }
[ "$1 $2" = "--text -" ] || exit 3
i=0; while [ $i -lt 50 ]; do echo "line $i of $3 $4"; i=$((i+1)); done; exit 1"#,
        );
        assert_eq!(version(&p), "diffoscope 999");
        let t = run(
            &p,
            Path::new("/x/a"),
            Path::new("/x/b"),
            Duration::from_secs(30),
            10,
        );
        assert!(t.starts_with("line 0 of /x/a /x/b\n"), "{t}");
        assert!(
            t.ends_with("line 9 of /x/a /x/b\n(diffoscope's output cut at 10 lines / 64 KiB)"),
            "{t}"
        );
        let p = script(dir.path(), "exit 0");
        assert_eq!(
            run(
                &p,
                Path::new("a"),
                Path::new("b"),
                Duration::from_secs(30),
                10
            ),
            "diffoscope found no differences"
        );
        let p = script(dir.path(), "echo boom >&2; exit 2");
        assert_eq!(
            run(
                &p,
                Path::new("a"),
                Path::new("b"),
                Duration::from_secs(30),
                10
            ),
            "diffoscope failed (exit 2): boom"
        );
    }

    #[test]
    fn a_hanging_diffoscope_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        // The child's child holds the pipe too: the whole group must go.
        let p = script(dir.path(), "echo started; sleep 300 & wait; exit 1");
        let t = run(
            &p,
            Path::new("a"),
            Path::new("b"),
            Duration::from_millis(300),
            10,
        );
        assert!(
            t.starts_with("diffoscope did not finish within 0.3 s and was stopped"),
            "{t}"
        );
        assert!(t.ends_with("\nstarted"), "{t}");
    }
}
