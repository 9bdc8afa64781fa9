//! Fault injection: the fault one attempt is given, and what it did.
//!
//! The scheduler decides, from a seed, which attempt gets which [`Fault`] with which
//! parameters; the decided [`Injection`] rides on the [`Action`](crate::Action). This
//! module holds the mechanisms the executor applies and the [`ChaosEffect`] it reports on
//! the [`Outcome`](crate::Outcome):
//!
//! - `kill_job`: `SIGKILL` to the step's process group `after` its start;
//! - `delay_net` / `drop_net`: a [`NetFault`] handed to the step's egress proxy;
//! - `corrupt_cache`: a byte flipped in a blob of the entry about to be restored, which
//!   the restore's verification must catch (quarantine, then the step runs);
//! - `cpu_stress`: busy threads competing for the CPUs while the step runs;
//! - `disk_fill`: the step's private `/tmp` and `$HOME` (tmpfs, shrunk for the attempt)
//!   filled to `ENOSPC` before its command starts.
//!
//! An attempt given any fault but `corrupt_cache` neither looks its result up in the cache
//! (the fault needs the step to run) nor stores it (whatever a fault did to the outputs is
//! never published). The kill switch ([`KillSwitch`]) is checked again at the moment each
//! fault fires, so engaging it stops injection at once.
//!
//! It does not decide anything: the schedule, the seed and the rates are the scheduler's.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use ci_intel_sandbox::{CONNECT_ATTEMPTS, NetFault};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// `SIGKILL` to the step's process group at a seeded moment.
    KillJob,
    /// Latency, a bandwidth limit or a hang, through the egress proxy.
    DelayNet,
    /// Connection resets, through the egress proxy.
    DropNet,
    /// Bytes flipped in a blob the step is about to restore from the cache.
    CorruptCache,
    /// Busy workers competing for the step's CPUs for a seeded period.
    CpuStress,
    /// The step's writable scratch space filled until `ENOSPC`.
    DiskFill,
}

impl Fault {
    /// Every fault, in the order decisions consider them.
    pub const ALL: [Fault; 6] = [
        Fault::KillJob,
        Fault::DelayNet,
        Fault::DropNet,
        Fault::CorruptCache,
        Fault::CpuStress,
        Fault::DiskFill,
    ];

    /// The name plans, specs and records use.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillJob => "kill_job",
            Fault::DelayNet => "delay_net",
            Fault::DropNet => "drop_net",
            Fault::CorruptCache => "corrupt_cache",
            Fault::CpuStress => "cpu_stress",
            Fault::DiskFill => "disk_fill",
        }
    }

    /// The fault named `name`.
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The recovery path the fault exercises, for reports.
    pub fn recovery(self) -> &'static str {
        match self {
            Fault::KillJob => "retry with backoff",
            Fault::DelayNet => "timeout, then retry",
            Fault::DropNet => "proxy retry, then step retry",
            Fault::CorruptCache => "quarantine and re-execution",
            Fault::CpuStress => "finishes slower",
            Fault::DiskFill => "clean failure with an autopsy, then retry",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What disables all injection at once: `CI_INTEL_CHAOS=off` in the environment, or a file
/// the plan names existing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillSwitch {
    /// The plan's kill-switch file (`[chaos] kill_switch`), absolute.
    pub file: Option<PathBuf>,
}

impl KillSwitch {
    /// The environment variable: `off` (or `0`, `false`, `no`) disables injection.
    pub const ENV: &'static str = "CI_INTEL_CHAOS";

    /// Why injection is off right now, if it is.
    pub fn engaged(&self) -> Option<String> {
        if let Some(v) = std::env::var_os(Self::ENV) {
            let v = v.to_string_lossy().trim().to_ascii_lowercase();
            if matches!(v.as_str(), "off" | "0" | "false" | "no") {
                return Some(format!("{}={v}", Self::ENV));
            }
        }
        self.file
            .as_ref()
            .filter(|f| f.exists())
            .map(|f| format!("kill switch {} exists", f.display()))
    }
}

/// The fault one attempt gets, every parameter decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// The fault.
    pub fault: Fault,
    /// Its rate per attempt in this step (its share of the spec's rate, or its own).
    pub rate: f64,
    /// Its parameters.
    pub params: FaultParams,
    /// Checked again when the fault fires.
    pub kill_switch: KillSwitch,
    /// How the decision was made, for the log (`seed 42, draw 0.013 < 0.05`).
    pub decision: String,
}

/// The parameters of an [`Injection`].
#[derive(Clone, Debug, PartialEq)]
pub enum FaultParams {
    /// `kill_job`: `SIGKILL` this long after the step's process started.
    Kill {
        /// When.
        after: Duration,
    },
    /// `delay_net` / `drop_net`: what the egress proxy does to every allowed connection.
    Net(NetFault),
    /// `corrupt_cache`: which blob of the entry, and which byte of it (each taken modulo
    /// what there is).
    Corrupt {
        /// Picks the blob.
        blob: u64,
        /// Picks the byte.
        byte: u64,
    },
    /// `cpu_stress`: this many spinning threads for this long (or until the step ends).
    CpuStress {
        /// Threads.
        workers: u32,
        /// For how long.
        period: Duration,
    },
    /// `disk_fill`: each private tmpfs of the attempt is this big, and filled.
    DiskFill {
        /// Bytes of each tmpfs.
        tmpfs: u64,
    },
}

impl Injection {
    /// What it will do, for the log.
    pub fn describe(&self) -> String {
        match &self.params {
            FaultParams::Kill { after } => {
                format!(
                    "SIGKILL to the step's process group {} after it starts",
                    secs(*after)
                )
            }
            FaultParams::Net(n) => match n {
                NetFault::Latency { delay } => {
                    format!("egress latency of {} per chunk", secs(*delay))
                }
                NetFault::Bandwidth { bytes_per_sec } => {
                    format!("egress bandwidth limited to {bytes_per_sec} B/s")
                }
                NetFault::Hang { at_most } => {
                    format!(
                        "egress connections hang (up to {}), then reset",
                        secs(*at_most)
                    )
                }
                NetFault::RefuseConnects { count } => {
                    format!("the first {count} upstream connects of each egress connection reset")
                }
                NetFault::ResetAfter { bytes } => {
                    format!("egress connections reset after {bytes} bytes")
                }
            },
            FaultParams::Corrupt { .. } => {
                "a byte flipped in a blob of the cache entry about to be restored".into()
            }
            FaultParams::CpuStress { workers, period } => format!(
                "{workers} busy worker{} for {}",
                if *workers == 1 { "" } else { "s" },
                secs(*period)
            ),
            FaultParams::DiskFill { tmpfs } => format!(
                "/tmp and $HOME ({} KiB tmpfs each) filled before the command starts",
                tmpfs / 1024
            ),
        }
    }

    /// Whether the attempt may read its result from the cache: only a `corrupt_cache`
    /// attempt does (the fault acts on the restore); the others need the step to run.
    pub fn reads_cache(&self) -> bool {
        self.fault == Fault::CorruptCache
    }
}

/// What an injected fault did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosEffect {
    /// The fault.
    pub fault: Fault,
    /// Whether it acted (a kill whose moment came after the step ended, a corruption with
    /// nothing to restore, a network fault on a step that connected nowhere did not).
    pub fired: bool,
    /// When it started acting.
    pub started_at: Option<SystemTime>,
    /// When it stopped acting (the killed process reaped, the stress stopped, ...).
    pub ended_at: Option<SystemTime>,
    /// What happened, for a person.
    pub detail: String,
    /// Whether its damage stayed contained: `false` only when a corrupted entry was
    /// restored (which verification must make impossible).
    pub contained: bool,
}

impl ChaosEffect {
    /// An effect that has not fired (yet).
    pub(crate) fn pending(fault: Fault, detail: impl Into<String>) -> ChaosEffect {
        ChaosEffect {
            fault,
            fired: false,
            started_at: None,
            ended_at: None,
            detail: detail.into(),
            contained: true,
        }
    }

    /// Marks it fired now.
    pub(crate) fn fire(&mut self, detail: impl Into<String>) {
        self.fired = true;
        self.started_at = Some(SystemTime::now());
        self.detail = detail.into();
    }
}

/// `1.2 s`, `250 ms`.
pub(crate) fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Busy threads competing for the CPUs until `period` has passed or they are stopped.
pub(crate) struct Stress {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
    period: Duration,
}

impl Stress {
    /// Starts `workers` spinning threads.
    pub(crate) fn start(workers: u32, period: Duration) -> Stress {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let threads = (0..workers)
            .filter_map(|i| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("chaos-cpu-{i}"))
                    .spawn(move || spin(&stop, started + period))
                    .ok()
            })
            .collect();
        Stress {
            stop,
            threads,
            started,
            period,
        }
    }

    /// Stops the threads (if still running); returns how long they ran.
    pub(crate) fn stop(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.started.elapsed().min(self.period)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // An attempt that ends early (a fault of the orchestrator) still stops its workers.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Spins until `until` or `stop`.
fn spin(stop: &AtomicBool, until: Instant) {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.rotate_left(7) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
    }
}

/// The name of the file `disk_fill` fills each scratch directory with.
pub(crate) const FILL_FILE: &str = ".ci-intel-chaos-fill";

/// `argv` run after `/tmp` and `$HOME` are filled to `ENOSPC` (inside the sandbox).
pub(crate) fn fill_argv(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let script = format!(
        "for d in /tmp \"$HOME\"; do cat /dev/zero > \"$d/{FILL_FILE}\" 2>/dev/null; done; exec \"$@\""
    );
    let mut v: Vec<std::ffi::OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        "ci-intel-chaos".into(),
    ];
    v.extend(argv);
    v
}

/// Flips one byte of one of `blobs` (paths of compressed blob files), chosen by `blob` and
/// `byte`; returns the file and the offset flipped.
pub(crate) fn corrupt(blobs: &[PathBuf], blob: u64, byte: u64) -> std::io::Result<(PathBuf, u64)> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = blobs.get((blob % blobs.len().max(1) as u64) as usize) else {
        return Err(std::io::Error::other("the entry has no blob"));
    };
    // Blobs are stored read-only: the owner makes one writable for the flip, and its mode
    // is put back after.
    let mode = std::fs::metadata(path)?.permissions().mode();
    let read_only = mode & 0o200 == 0;
    if read_only {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o200))?;
    }
    let flipped = flip(path, byte);
    if read_only {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok((path.clone(), flipped?))
}

/// Flips the byte at `byte` modulo the file's length; returns its offset.
fn flip(path: &std::path::Path, byte: u64) -> std::io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Err(std::io::Error::other("the blob is empty"));
    }
    let at = byte % len;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    b[0] ^= 0x5a;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&b)?;
    f.sync_all()?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.name()), Some(f));
        }
        assert_eq!(Fault::parse("kill"), None);
    }

    #[test]
    fn the_kill_switch_file_engages_it() {
        let dir = std::env::temp_dir().join(format!("ks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ks = KillSwitch {
            file: Some(dir.join("off")),
        };
        // The environment variable is left alone: tests share the process.
        if std::env::var_os(KillSwitch::ENV).is_none() {
            assert_eq!(ks.engaged(), None);
        }
        std::fs::write(dir.join("off"), "").unwrap();
        assert!(ks.engaged().unwrap().contains("exists"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corruption_flips_exactly_one_byte() {
        let dir = std::env::temp_dir().join(format!("corrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::write(&a, b"aaaa").unwrap();
        std::fs::write(&b, b"bbbbbbbb").unwrap();
        // Stored blobs are read-only; the flip works on them and leaves the mode as it was.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o444)).unwrap();
        let (path, at) = corrupt(&[a.clone(), b.clone()], 3, 11).unwrap();
        assert_eq!(
            std::fs::metadata(&b).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert_eq!(path, b);
        assert_eq!(at, 3);
        let after = std::fs::read(&b).unwrap();
        let diff: Vec<usize> = (0..8).filter(|&i| after[i] != b'b').collect();
        assert_eq!(diff, [3]);
        assert_eq!(std::fs::read(&a).unwrap(), b"aaaa");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stress_stops_when_asked() {
        let s = Stress::start(2, Duration::from_secs(3600));
        let ran = s.stop();
        assert!(ran < Duration::from_secs(3600));
    }

    #[test]
    fn the_fill_wrapper_runs_the_command_after_filling() {
        let argv = fill_argv(vec!["echo".into(), "a b".into()]);
        assert_eq!(argv[0], "/bin/sh");
        assert!(argv[2].to_string_lossy().contains("cat /dev/zero"));
        assert_eq!(&argv[4..], ["echo", "a b"]);
    }
}
