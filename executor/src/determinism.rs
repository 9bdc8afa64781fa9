//! Determinism checks: a checked step's rerun in a second sandbox with variations that
//! must not matter, the comparison of both runs' staged outputs, finding the variation
//! that causes a drift, and the archive normalisers run over staged outputs.
//!
//! docs/determinism.md describes the variations and the drift report.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ci_intel_sandbox::Policy;

use crate::ExecuteError;
use crate::action::{Action, ActionSandbox, DeterminismCheck, Outcome, Status, Variations};
use crate::cancel::Cancel;
use crate::output::OutputProcessor;
use crate::process::{Env, ProcessExecutor};

/// The host value a determinism check's rerun gives a passed-through zone or locale
/// variable: far from UTC and from `C`, so output that depends on them shows.
pub(crate) fn host_variation(name: &str) -> Option<&'static str> {
    match name {
        "TZ" => Some("Pacific/Chatham"),
        "LANG" | "LANGUAGE" => Some("fr_FR.UTF-8"),
        n if n.starts_with("LC_") => Some("fr_FR.UTF-8"),
        _ => None,
    }
}

/// A rerun's variations that live in its environment (`HOME`, `PATH`, the clock), applied
/// over the policy and the environment.
pub(crate) fn vary_env(policy: Policy, env: &mut Env, v: &Variations) -> Policy {
    let mut changes: Vec<(&str, String)> = Vec::new();
    if v.home {
        // Another existing, writable directory.
        changes.push(("HOME", "/tmp".into()));
    }
    if v.path {
        let path = env
            .get("PATH")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        changes.push(("PATH", format!("/rebuilt/bin:{path}")));
    }
    if let (true, Some(lib)) = (
        v.time,
        FAKETIME_LIBS.iter().find(|l| Path::new(l).is_file()),
    ) {
        changes.push(("LD_PRELOAD", (*lib).to_string()));
        // Over a year and a month and a day: a year, month, day or weekday written out
        // differs too, not only the time of day.
        changes.push(("FAKETIME", "+398d".into()));
        // Only the clock moves: the files the step reads keep their times.
        changes.push(("NO_FAKE_STAT", "1".into()));
    }
    for (k, val) in &changes {
        env.insert((*k).to_string(), val.into());
    }
    changes
        .into_iter()
        .fold(policy, |p, (k, val)| p.env(k, val))
}

/// A rerun's variations that wrap its command: one CPU, no address-space randomisation,
/// another kernel release.
pub(crate) fn vary_argv(argv: Vec<OsString>, v: &Variations) -> Vec<OsString> {
    let mut wrapped: Vec<OsString> = Vec::new();
    if v.num_cpus && not_applicable("num_cpus").is_none() {
        wrapped.extend(["taskset", "-c", "0"].map(OsString::from));
    }
    let aslr = v.aslr && not_applicable("aslr").is_none();
    let kernel = v.kernel && not_applicable("kernel").is_none();
    if aslr || kernel {
        wrapped.push("setarch".into());
        if aslr {
            wrapped.push("-R".into());
        }
        if kernel {
            wrapped.push("--uname-2.6".into());
        }
    }
    wrapped.extend(argv);
    wrapped
}

/// Where a determinism check's rerun sees the workspace (`build_path`): another absolute
/// path, ending in the root's own name.
pub(crate) fn moved_root(root: &Path) -> PathBuf {
    // Nothing in it looks like either hostname: a drift hint must not mistake one for
    // the other.
    Path::new("/rebuilt/elsewhere").join(root.file_name().unwrap_or_else(|| "root".as_ref()))
}

/// The workspace seen through disorderfs (directory entries reversed) for a rerun;
/// unmounted on drop.
pub(crate) struct Disorder {
    pub(crate) mount: PathBuf,
}

impl Disorder {
    pub(crate) fn mount(root: &Path, mount: &Path) -> Result<Disorder, String> {
        let err = |e: String| format!("determinism check: mounting disorderfs: {e}");
        std::fs::create_dir_all(mount).map_err(|e| err(e.to_string()))?;
        let status = std::process::Command::new("disorderfs")
            .args(["--reverse-dirents=yes", "--quiet"])
            .arg(root)
            .arg(mount)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| err(e.to_string()))?;
        if !status.status.success() {
            return Err(err(String::from_utf8_lossy(&status.stderr)
                .trim()
                .to_string()));
        }
        Ok(Disorder {
            mount: mount.to_path_buf(),
        })
    }
}

impl Drop for Disorder {
    fn drop(&mut self) {
        let unmounted = ["fusermount3", "fusermount"].iter().any(|tool| {
            // Lazily: a sandbox still being torn down may hold it a moment longer.
            std::process::Command::new(tool)
                .args(["-u", "-z"])
                .arg(&self.mount)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if unmounted {
            let _ = std::fs::remove_dir(&self.mount);
        } else {
            tracing::warn!("could not unmount disorderfs at {}", self.mount.display());
        }
    }
}

/// The hostname of a determinism check's rerun.
pub(crate) const VERIFY_HOSTNAME: &str = "ci-intel-verify";

/// libfaketime's preload library, where Debian's `libfaketime` installs it.
pub(crate) const FAKETIME_LIBS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

/// Why a variation cannot be applied on this host, if it cannot.
pub(crate) fn not_applicable(name: &str) -> Option<String> {
    let tool = |t: &str| {
        ["/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(t).is_file())
    };
    match name {
        "time" if !FAKETIME_LIBS.iter().any(|l| Path::new(l).is_file()) => {
            Some("libfaketime is not installed (apt-get install libfaketime)".into())
        }
        "num_cpus" if !tool("taskset") => Some("taskset (util-linux) is not installed".into()),
        "num_cpus" if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 => {
            Some("the host has one CPU".into())
        }
        "aslr" | "kernel" if !tool("setarch") => {
            Some("setarch (util-linux) is not installed".into())
        }
        "dir_order" if !tool("disorderfs") => {
            Some("disorderfs is not installed (apt-get install disorderfs)".into())
        }
        "dir_order" if !Path::new("/dev/fuse").exists() => {
            Some("FUSE is not available (no /dev/fuse)".into())
        }
        "dir_order" if !tool("fusermount3") && !tool("fusermount") => {
            Some("fusermount is not installed (apt-get install fuse3)".into())
        }
        _ => None,
    }
}

impl ProcessExecutor {
    /// Runs `action` again in a separate sandbox with variations that must not matter,
    /// and compares its outputs with the first run's, still staged in `first`. On drift,
    /// when the step is quick enough, reruns it with one variation at a time to find
    /// which cause it. The drift report goes beside the step's log.
    pub(crate) async fn check_determinism(
        &self,
        action: &Action,
        sb: &ActionSandbox,
        first: &Path,
        cancel: &Cancel,
        out: &mut OutputProcessor<'_>,
    ) -> Result<DeterminismCheck, ExecuteError> {
        let log_err = |source| ExecuteError::Log {
            path: action.log_path.clone(),
            source,
        };
        let mut all = Variations::ALL;
        let mut not_applied = Vec::new();
        for name in Variations::NAMES {
            if let Some(why) = not_applicable(name) {
                all.set(name, false);
                not_applied.push((name, why));
            }
        }
        let started = Instant::now();
        out.note(&format!(
            "determinism check: running again with {}",
            all.names().join(", ")
        ))
        .map_err(log_err)?;
        for (name, why) in &not_applied {
            out.note(&format!("determinism check: {name} not varied: {why}"))
                .map_err(log_err)?;
        }
        let (second, report) = self
            .rerun(action, sb, first, &all, "verify", cancel)
            .await?;
        let Some(report) = report else {
            let message = format!(
                "determinism check: the second run did not succeed ({}); see {}",
                second.message.as_deref().unwrap_or(second.status.as_str()),
                second.log_path.display()
            );
            out.note(&message).map_err(log_err)?;
            return Ok(DeterminismCheck {
                reproducible: false,
                variations: all.names(),
                not_applied,
                differing_files: 0,
                causes: Vec::new(),
                hinted: vec!["the second run failed".into()],
                report_path: Some(second.log_path),
                report_digest: None,
            });
        };
        let mut check = DeterminismCheck {
            reproducible: report.identical,
            variations: all.names(),
            not_applied,
            // A file can differ in several ways (mode and content): count it once.
            differing_files: report
                .files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            causes: Vec::new(),
            hinted: report.causes().iter().map(|c| (*c).to_string()).collect(),
            report_path: None,
            report_digest: None,
        };
        if report.identical {
            out.note("determinism check: the outputs are identical")
                .map_err(log_err)?;
            return Ok(check);
        }
        // One variation at a time, when the step is quick enough to run that often; first
        // none at all: output that differs from run to run (random bytes, the time, a race)
        // is no single variation's doing.
        if started.elapsed() <= ISOLATE_CAUSES_WITHIN {
            let (_, control) = self
                .rerun(action, sb, first, &Variations::default(), "control", cancel)
                .await?;
            if control.is_some_and(|r| !r.identical) {
                check.causes.push(RUN_TO_RUN);
            }
        }
        if started.elapsed() <= ISOLATE_CAUSES_WITHIN && check.causes.is_empty() {
            let tried = all.names();
            for &name in &tried {
                let (_, alone) = self
                    .rerun(action, sb, first, &Variations::only(name), name, cancel)
                    .await?;
                if alone.is_some_and(|r| !r.identical) {
                    check.causes.push(name);
                }
            }
            // Every variation alone drifting is no variation's doing: output that changes
            // by itself (the time in seconds, which the control run happened not to cross).
            if tried.len() > 1 && check.causes.len() == tried.len() {
                check.causes = vec![RUN_TO_RUN];
            }
        }
        let text = report.render_text();
        let path = action.log_path.with_extension("drift.txt");
        std::fs::write(&path, &text).map_err(|source| ExecuteError::Log {
            path: path.clone(),
            source,
        })?;
        check.report_digest = Some(report.digest());
        check.report_path = Some(path.clone());
        out.note(&format!(
            "determinism check: {}; drift report: {}",
            check.summary(),
            path.display()
        ))
        .map_err(log_err)?;
        for line in text.lines().take(DRIFT_LINES_IN_LOG) {
            out.note(line).map_err(log_err)?;
        }
        Ok(check)
    }

    /// One rerun of `action` with `variations`; its outputs compared with `first`'s.
    /// `None` when the rerun did not succeed.
    async fn rerun(
        &self,
        action: &Action,
        sb: &ActionSandbox,
        first: &Path,
        variations: &Variations,
        label: &str,
        cancel: &Cancel,
    ) -> Result<(Outcome, Option<ci_intel_repro::drift::DriftReport>), ExecuteError> {
        let mut again = action.clone();
        again.step = format!("{} ({label})", action.step);
        again.verify = None;
        again.cache = false;
        again.variations = Some(variations.clone());
        again.chaos = None;
        again.log_path = action.log_path.with_extension(format!("{label}.log"));
        let mut sandbox = sb.clone();
        sandbox.staging = sb.staging.with_extension(label);
        let staged = sandbox.staging.clone();
        again.sandbox = Some(sandbox);
        let second = self.attempt(again, cancel.clone()).await?;
        if second.status != Status::Succeeded {
            return Ok((second, None));
        }
        let inside = if variations.build_path {
            moved_root(&action.cwd)
        } else {
            action.cwd.clone()
        };
        let (a_hint, b_hint) = (
            action.cwd.display().to_string(),
            inside.display().to_string(),
        );
        let hosts = [ci_intel_sandbox::HOSTNAME, VERIFY_HOSTNAME];
        let opts = ci_intel_repro::drift::CompareOptions {
            a_root_hint: &a_hint,
            b_root_hint: &b_hint,
            hostnames: &hosts,
            ..ci_intel_repro::drift::CompareOptions::default()
        };
        let report = ci_intel_repro::drift::compare(first, &staged, &sb.outputs, &opts);
        let _ = std::fs::remove_dir_all(&staged);
        match report {
            Ok(r) => Ok((second, Some(r))),
            Err(e) => {
                tracing::warn!(
                    "{}: determinism check: comparing outputs: {}",
                    action.step,
                    ci_intel_cache::error_chain(&e)
                );
                Ok((second, None))
            }
        }
    }
}

/// The cause named when the outputs differ with no variation at all.
const RUN_TO_RUN: &str = "run_to_run";

/// A step whose first check took longer than this is not rerun once per variation.
const ISOLATE_CAUSES_WITHIN: Duration = Duration::from_secs(30);

/// Lines of the drift report copied into the step's log.
const DRIFT_LINES_IN_LOG: usize = 40;

/// Runs the step's declared normalisers over its collected outputs, so what is stored (and
/// what its dependents read) does not depend on when or in which order it was written.
/// Returns what was rewritten.
pub(crate) fn normalize_outputs(
    root: &Path,
    sb: &ActionSandbox,
    source_date_epoch: u64,
) -> Result<Vec<(String, ci_intel_repro::normalize::Kind)>, String> {
    use ci_intel_repro::normalize::{Kind, normalize_any, normalize_tree};
    let kinds: Vec<Kind> = sb.normalize.iter().filter_map(|n| Kind::parse(n)).collect();
    let mut rewritten = Vec::new();
    if kinds.is_empty() {
        return Ok(rewritten);
    }
    let err = |e: &dyn std::error::Error| {
        format!("normalizing outputs: {}", ci_intel_cache::error_chain(e))
    };
    for output in &sb.outputs {
        let rel = output.trim_end_matches('/');
        let path = root.join(rel);
        if path.is_dir() {
            for (file, kind) in
                normalize_tree(&path, &kinds, source_date_epoch).map_err(|e| err(&e))?
            {
                rewritten.push((format!("{rel}/{file}"), kind));
            }
        } else if path.is_file() {
            // A `.tar.gz` is normalised inside and out when both kinds are declared.
            if let Some(kind) =
                normalize_any(&path, &kinds, source_date_epoch).map_err(|e| err(&e))?
            {
                rewritten.push((rel.to_string(), kind));
            }
        }
    }
    Ok(rewritten)
}
