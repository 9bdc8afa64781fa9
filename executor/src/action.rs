//! What the scheduler hands over (an [`Action`]) and what comes back (an [`Outcome`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The command of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A shell script, run as `/bin/sh -ec SCRIPT`.
    Shell(String),
    /// An argument vector, run directly (the program is looked up on the step's `PATH`).
    Argv(Vec<String>),
}

impl Program {
    /// The argument vector to execute.
    pub fn argv(&self) -> Vec<std::ffi::OsString> {
        match self {
            Program::Shell(script) => vec!["/bin/sh".into(), "-ec".into(), script.into()],
            Program::Argv(argv) => argv.iter().map(Into::into).collect(),
        }
    }
}

/// One attempt of one step.
#[derive(Clone, Debug)]
pub struct Action {
    /// The step id, used to prefix live output.
    pub step: String,
    /// What to run.
    pub program: Program,
    /// Working directory.
    pub cwd: PathBuf,
    /// Variables the plan declares (plan-wide `[env]` then the step's `env`).
    pub env: BTreeMap<String, String>,
    /// Host variables passed through by name (absent ones are left unset).
    pub pass_env: Vec<String>,
    /// Secret names: passed from the host, redacted from every log line.
    pub secrets: Vec<String>,
    /// Wall-clock limit of this attempt.
    pub timeout: Option<Duration>,
    /// The step's log file; attempts are appended.
    pub log_path: PathBuf,
    /// The step's private `$HOME`.
    pub home: PathBuf,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How many attempts the step may take in all.
    pub max_attempts: u32,
    /// What happens when a declared variable looks like an undeclared secret.
    pub secret_scan: SecretScan,
    /// How the attempt is isolated; `None` runs it without the sandbox (`sandbox = false`
    /// or `--no-sandbox`).
    pub sandbox: Option<ActionSandbox>,
    /// Whether the result may be looked up in and stored to the cache (when the executor
    /// has one). Only sandboxed attempts are: an unsandboxed step's inputs are unknown.
    pub cache: bool,
    /// Programs whose bytes enter the action key, by name on the step's `PATH` or by path.
    pub tools: Vec<String>,
    /// Check that the outputs are reproducible: after a clean run, run the step again in a
    /// separate sandbox with [`Variations::ALL`] applied and compare the outputs (a
    /// sandboxed step with outputs only).
    pub verify: Option<VerifyPolicy>,
    /// Check even a step the cache could restore (`--verify-determinism`); otherwise a
    /// checked step's cached result (which was checked when it was stored) is restored.
    pub verify_cached: bool,
    /// This attempt is a determinism check's rerun: apply these variations, store nothing,
    /// and leave the outputs in the staging directory instead of collecting them.
    pub variations: Option<Variations>,
    /// A fault to inject into this attempt (`--chaos`).
    pub chaos: Option<crate::chaos::Injection>,
}

/// What a drifting step's determinism check does to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyPolicy {
    /// The step fails (`deterministic = true`, `--verify-determinism`).
    Fail,
    /// The step keeps its result; the drift is reported (`--verify-determinism=warn`).
    Warn,
}

/// What a determinism check's second run changes, each something the outputs must not
/// depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Variations {
    /// The workspace is seen at another path.
    pub build_path: bool,
    /// Another hostname.
    pub hostname: bool,
    /// The clock 398 days ahead: another year, month, day and weekday (libfaketime, when
    /// installed).
    pub time: bool,
    /// One CPU (affinity), where the first run had all.
    pub num_cpus: bool,
    /// Address-space randomisation off (personality).
    pub aslr: bool,
    /// Another `$HOME`.
    pub home: bool,
    /// An extra, empty `PATH` entry first.
    pub path: bool,
    /// The host's `TZ`, `LANG` and `LC_*` changed (they reach a step only if it passes
    /// them through: the fixed set should hold).
    pub host_env: bool,
    /// Directories list their entries in reverse order (disorderfs over the workspace,
    /// where FUSE works).
    pub dir_order: bool,
    /// Another kernel release (`setarch --uname-2.6`).
    pub kernel: bool,
}

impl Variations {
    /// The names, in the order they are listed.
    pub const NAMES: [&'static str; 10] = [
        "build_path",
        "hostname",
        "time",
        "num_cpus",
        "aslr",
        "home",
        "path",
        "host_env",
        "dir_order",
        "kernel",
    ];

    /// Every variation.
    pub const ALL: Variations = Variations {
        build_path: true,
        hostname: true,
        time: true,
        num_cpus: true,
        aslr: true,
        home: true,
        path: true,
        host_env: true,
        dir_order: true,
        kernel: true,
    };

    /// Only the one named (for finding which variation causes a drift).
    pub fn only(name: &str) -> Variations {
        let mut v = Variations::default();
        v.set(name, true);
        v
    }

    /// Turns the named variation on or off.
    pub fn set(&mut self, name: &str, on: bool) {
        match name {
            "build_path" => self.build_path = on,
            "hostname" => self.hostname = on,
            "time" => self.time = on,
            "num_cpus" => self.num_cpus = on,
            "aslr" => self.aslr = on,
            "home" => self.home = on,
            "path" => self.path = on,
            "host_env" => self.host_env = on,
            "dir_order" => self.dir_order = on,
            "kernel" => self.kernel = on,
            _ => {}
        }
    }

    /// The names of those that are on.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [
            self.build_path,
            self.hostname,
            self.time,
            self.num_cpus,
            self.aslr,
            self.home,
            self.path,
            self.host_env,
            self.dir_order,
            self.kernel,
        ];
        Self::NAMES
            .iter()
            .zip(on)
            .filter_map(|(n, on)| on.then_some(*n))
            .collect()
    }
}

/// The verdict of a determinism check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeterminismCheck {
    /// Whether the two runs' outputs were equal.
    pub reproducible: bool,
    /// The variations the second run had.
    pub variations: Vec<&'static str>,
    /// Variations that could not be applied on this host, with why.
    pub not_applied: Vec<(&'static str, String)>,
    /// Files that differ (or exist on one side only).
    pub differing_files: usize,
    /// The variations found to cause the drift, each rerun alone.
    pub causes: Vec<&'static str>,
    /// What the drift report's hints point at.
    pub hinted: Vec<String>,
    /// The drift report (text), beside the step's log.
    pub report_path: Option<PathBuf>,
    /// BLAKE3 of the drift report.
    pub report_digest: Option<String>,
}

impl DeterminismCheck {
    /// What a person reads first: `2 files differ, caused by hostname`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {}",
            self.differing_files,
            if self.differing_files == 1 {
                "file differs"
            } else {
                "files differ"
            }
        );
        if !self.causes.is_empty() {
            s.push_str(&format!(", caused by {}", self.causes.join(", ")));
        }
        s
    }
}

/// What the runtime secret sweep does with a finding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretScan {
    /// The attempt fails, naming the variable (never the value).
    #[default]
    Deny,
    /// The attempt runs; the log says which variable looked like a secret.
    Warn,
}

/// Network access of a sandboxed attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkAccess {
    /// No network, not even loopback TCP.
    #[default]
    Deny,
    /// Loopback only.
    Loopback,
    /// Only these `host:port` entries, through the egress proxy.
    Allow(Vec<String>),
}

/// What a sandboxed attempt sees, in plan terms; the executor turns it into a sandbox
/// policy at attempt time.
#[derive(Clone, Debug)]
pub struct ActionSandbox {
    /// Input globs, relative to `cwd`.
    pub inputs: Vec<String>,
    /// Declared outputs, relative to `cwd` (`dir/` for a directory).
    pub outputs: Vec<String>,
    /// Absolute paths of the declared outputs of the steps this one needs.
    pub needs_outputs: Vec<PathBuf>,
    /// Paths never visible as inputs: every step's outputs, the state directory (built
    /// once per run, shared by every action).
    pub exclude: std::sync::Arc<crate::Exclusions>,
    /// Extra host paths visible read-only (`/abs`, `~/x` or `$VAR/x`).
    pub read: Vec<String>,
    /// Extra host paths visible read-write.
    pub write: Vec<String>,
    /// Network access.
    pub network: NetworkAccess,
    /// Resource limits.
    pub limits: ci_intel_sandbox::Limits,
    /// Where this attempt's outputs are staged before they are collected.
    pub staging: PathBuf,
    /// Archive normalisers applied to the collected outputs before they are stored
    /// (`zip`, `jar`, `tar`, `gzip`, `ar`).
    pub normalize: Vec<String>,
    /// The plan marks the step `deterministic`: its results are stored only once checked,
    /// so the key tells them from results stored before it was marked.
    pub deterministic: bool,
}

/// The variables every step gets, whatever the plan says, unless the plan overrides them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedEnv {
    /// `PATH`.
    pub path: String,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
}

impl FixedEnv {
    /// The `PATH` steps get unless the plan passes the host's.
    pub const DEFAULT_PATH: &'static str =
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// The fixed set as name/value pairs, in a stable order. `HOME` is per step.
    pub fn vars(&self) -> [(&'static str, String); 6] {
        [
            ("PATH", self.path.clone()),
            ("TZ", "UTC".into()),
            ("LC_ALL", "C".into()),
            ("LANG", "C".into()),
            ("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string()),
            ("PYTHONHASHSEED", "0".into()),
        ]
    }

    /// `SOURCE_DATE_EPOCH` from the commit time of `HEAD` in `dir`, if it is a git
    /// checkout with at least one commit.
    pub fn commit_time(dir: &std::path::Path) -> Option<u64> {
        let out = std::process::Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        std::str::from_utf8(&out.stdout).ok()?.trim().parse().ok()
    }
}

impl Default for FixedEnv {
    fn default() -> Self {
        FixedEnv {
            path: FixedEnv::DEFAULT_PATH.into(),
            source_date_epoch: 0,
        }
    }
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Exit code 0.
    Succeeded,
    /// A non-zero exit, a signal, or a command that could not start.
    Failed,
    /// Stopped because it ran past its timeout.
    TimedOut,
    /// Stopped because the run was cancelled.
    Cancelled,
}

impl Status {
    /// Lowercase name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed out",
            Status::Cancelled => "cancelled",
        }
    }
}

/// The result of one attempt, as data.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// The exit code, when the process exited (127 when the command was not found).
    pub exit_code: Option<i32>,
    /// The signal that ended the process, when one did.
    pub signal: Option<i32>,
    /// When the attempt started.
    pub started_at: SystemTime,
    /// Wall-clock time of the attempt.
    pub duration: Duration,
    /// User plus system CPU time of the step's processes that were reaped.
    pub cpu_time: Duration,
    /// Peak resident set of the largest reaped process, KiB.
    pub max_rss_kib: u64,
    /// Bytes of output the step wrote.
    pub output_bytes: u64,
    /// The log file.
    pub log_path: PathBuf,
    /// A one-line explanation for a person (`command not found: x`, `timed out after 5s`).
    pub message: Option<String>,
    /// Whether the result was restored from the cache instead of run.
    pub cached: bool,
    /// The action key, when the attempt had one (a cacheable sandboxed step).
    pub action_key: Option<String>,
    /// What the step could read as inputs, when the key was computed.
    pub inputs: Option<InputStats>,
    /// What the cache did for this attempt: entries quarantined on the way, then the hit,
    /// the miss, or why the attempt was not looked up.
    pub cache_events: Vec<CacheEvent>,
    /// Every decision of the step's egress proxy, in order.
    pub egress: Vec<ci_intel_sandbox::EgressEvent>,
    /// The attempt's phases, in order, for tracing: `cache.lookup`, `sandbox.setup`,
    /// `execute`, `cache.upload`.
    pub phases: Vec<Phase>,
    /// Whether the attempt ran in the sandbox (a cache hit ran nothing).
    pub sandboxed: bool,
    /// The determinism check, when one was asked for and the step ran.
    pub determinism: Option<DeterminismCheck>,
    /// What an injected fault did, when the attempt had one.
    pub chaos: Option<crate::chaos::ChaosEffect>,
}

/// What the cache did for an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheEvent {
    /// A verified entry was restored.
    Hit {
        /// The namespace it came from.
        namespace: String,
    },
    /// No usable entry.
    Miss,
    /// A broken entry was moved aside (and never served).
    Quarantine {
        /// Its namespace.
        namespace: String,
        /// What was wrong.
        reason: String,
    },
    /// The attempt was not looked up.
    Uncacheable {
        /// Why.
        reason: String,
    },
}

/// One timed phase of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// `cache.lookup`, `sandbox.setup`, `execute` or `cache.upload`.
    pub name: &'static str,
    /// When it started.
    pub started_at: SystemTime,
    /// How long it took.
    pub duration: Duration,
}

/// How much a step's visible inputs hold, measured when its key is computed (before it
/// runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Outcome {
    /// An outcome with the given status and nothing else known, for fakes and dry runs.
    pub fn new(status: Status, log_path: PathBuf) -> Outcome {
        Outcome {
            status,
            exit_code: match status {
                Status::Succeeded => Some(0),
                _ => None,
            },
            signal: None,
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            cpu_time: Duration::ZERO,
            max_rss_kib: 0,
            output_bytes: 0,
            log_path,
            message: None,
            cached: false,
            action_key: None,
            inputs: None,
            cache_events: Vec::new(),
            egress: Vec::new(),
            phases: Vec::new(),
            sandboxed: false,
            determinism: None,
            chaos: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_programs_run_under_sh_with_errexit() {
        let argv = Program::Shell("a && b".into()).argv();
        assert_eq!(argv, ["/bin/sh", "-ec", "a && b"]);
        let argv = Program::Argv(vec!["echo".into(), "x y".into()]).argv();
        assert_eq!(argv, ["echo", "x y"]);
    }

    #[test]
    fn fixed_env_has_the_determinism_set() {
        let vars = FixedEnv::default().vars();
        let names: Vec<_> = vars.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "TZ",
                "LC_ALL",
                "LANG",
                "SOURCE_DATE_EPOCH",
                "PYTHONHASHSEED"
            ]
        );
        assert_eq!(vars[1].1, "UTC");
        assert_eq!(vars[4].1, "0");
    }
}
