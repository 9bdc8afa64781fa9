//! The cache around one attempt: the action key from what a sandboxed step sees, a
//! verified restore instead of a run, and a store after a clean run.
//!
//! The key covers the command, the environment the step gets (secret values never, only
//! their names), the sandbox policy, every visible input file (path, mode, BLAKE3) — the
//! outputs of needed steps included, by content — the declared outputs, declared tools
//! (resolved on the step's `PATH`, by content), the platform and `SOURCE_DATE_EPOCH`.
//! The contents of extra `read`/`write` paths (a toolchain, a build cache) are not hashed:
//! declare the programs that matter as `tools`.
//!
//! After a run, the inputs are hashed again: a result is stored only if none changed while
//! the step ran, since an output built from a half-edited tree must not be served as the
//! output of either version.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ci_intel_cache::digest;
pub(crate) use ci_intel_cache::error_chain as chain;
use ci_intel_cache::key::{EnvValue, InputFile, KeyInputs, KeySummary};
use ci_intel_cache::{ActionKey, platform};

use crate::action::{Action, ActionSandbox, InputStats, NetworkAccess};

/// A step's key, and the files it was computed from (to check them again after the run).
#[derive(Debug)]
pub(crate) struct Keyed {
    pub(crate) key: ActionKey,
    pub(crate) summary: KeySummary,
    /// Absolute path and what the key saw there.
    files: Vec<(PathBuf, InputFile)>,
    /// The visible inputs' files and bytes.
    pub(crate) stats: InputStats,
}

/// Every file under `paths` (files, and directories walked), absolute and sorted. A
/// visible symbolic link resolves to a file inside the root (the bind follows it): what
/// the step reads, and what is hashed, is that file.
fn files_under(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if meta.is_file() || std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            out.push(p);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The files and bytes a step can read as inputs (`paths` and its needs' outputs), by
/// their metadata alone: for steps whose key is not computed.
pub(crate) fn input_stats(paths: &[PathBuf], needs_outputs: &[PathBuf]) -> Option<InputStats> {
    let mut visible = paths.to_vec();
    visible.extend(needs_outputs.iter().filter(|p| p.exists()).cloned());
    let files = files_under(&visible).ok()?;
    let mut stats = InputStats::default();
    for f in files {
        stats.files += 1;
        stats.bytes += std::fs::metadata(&f).ok()?.len();
    }
    Some(stats)
}

/// Hashes `files` (under `root`) on every core.
fn hash_files(
    root: &Path,
    paths: Vec<PathBuf>,
) -> Result<(Vec<(PathBuf, InputFile)>, InputStats), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let digests = digest::of_files(&paths, 0);
    let mut out = Vec::with_capacity(paths.len());
    let mut stats = InputStats::default();
    for (path, d) in paths.into_iter().zip(digests) {
        let (digest, size) = d.map_err(|e| format!("hashing input {}: {e}", path.display()))?;
        stats.files += 1;
        stats.bytes += size;
        let mode = std::fs::metadata(&path)
            .map_err(|e| format!("reading input {}: {e}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        let rel = path
            .strip_prefix(root)
            .map_err(|_| format!("input {} is outside the root", path.display()))?
            .to_string_lossy()
            .into_owned();
        out.push((
            path,
            InputFile {
                path: rel,
                mode,
                digest,
                symlink: false,
            },
        ));
    }
    Ok((out, stats))
}

/// What the executor knows of an attempt that the key needs beyond the [`Action`].
pub(crate) struct KeyContext<'a> {
    /// The environment the step gets, in full.
    pub(crate) env: &'a BTreeMap<String, OsString>,
    /// Visible input paths (files or whole directories), absolute.
    pub(crate) inputs: &'a [PathBuf],
    /// `SOURCE_DATE_EPOCH` of the run.
    pub(crate) source_date_epoch: u64,
}

/// The action key of a sandboxed attempt.
pub(crate) fn key(
    action: &Action,
    sb: &ActionSandbox,
    cx: &KeyContext<'_>,
) -> Result<Keyed, String> {
    let root = &action.cwd;
    let mut visible: Vec<PathBuf> = cx.inputs.to_vec();
    visible.extend(sb.needs_outputs.iter().filter(|p| p.exists()).cloned());
    let listed = files_under(&visible).map_err(|e| format!("listing inputs: {e}"))?;
    let (files, stats) = hash_files(root, listed)?;

    let env = cx
        .env
        .iter()
        .map(|(k, v)| {
            let value = if action.secrets.contains(k) {
                EnvValue::Secret
            } else {
                EnvValue::Plain(v.to_string_lossy().into_owned())
            };
            (k.clone(), value)
        })
        .collect();

    let mut policy = vec![
        ("sandbox".to_string(), "isolated".to_string()),
        (
            "network".into(),
            match &sb.network {
                NetworkAccess::Deny => "deny".into(),
                NetworkAccess::Loopback => "loopback".into(),
                NetworkAccess::Allow(list) => {
                    let mut l = list.clone();
                    l.sort();
                    format!("allow {}", l.join(","))
                }
            },
        ),
        ("limits.pids".into(), sb.limits.pids.to_string()),
        ("limits.nofile".into(), sb.limits.nofile.to_string()),
        ("limits.tmpfs".into(), sb.limits.tmpfs.to_string()),
        (
            "limits.memory".into(),
            sb.limits.memory.map_or("host".into(), |m| m.to_string()),
        ),
        (
            "limits.millicpus".into(),
            sb.limits.millicpus.map_or("none".into(), |m| m.to_string()),
        ),
    ];
    policy.extend(sb.read.iter().map(|p| ("read".to_string(), p.clone())));
    policy.extend(sb.write.iter().map(|p| ("write".to_string(), p.clone())));
    // What is stored depends on the normalisers too (none: the key is as before), and a
    // deterministic step's results are the checked ones.
    policy.extend(
        sb.normalize
            .iter()
            .map(|n| ("normalize".to_string(), n.clone())),
    );
    if sb.deterministic {
        policy.push(("deterministic".into(), "checked".into()));
    }

    let path_var = cx.env.get("PATH").cloned().unwrap_or_default();
    let mut tools = BTreeMap::new();
    for name in &action.tools {
        let tool = ci_intel_cache::tools::resolve(name, &path_var)
            .map_err(|e| format!("tool `{name}`: {}", chain(&e)))?;
        tools.insert(name.clone(), tool.digest);
    }

    let inputs = KeyInputs {
        argv: action
            .program
            .argv()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        cwd: String::new(),
        env,
        policy,
        inputs: files.iter().map(|(_, f)| f.clone()).collect(),
        outputs: sb.outputs.clone(),
        needs: BTreeMap::new(),
        tools,
        platform: platform::fingerprint(),
        source_date_epoch: cx.source_date_epoch,
    };
    Ok(Keyed {
        key: inputs.key(),
        summary: inputs.summary(),
        files,
        stats,
    })
}

impl Keyed {
    /// Input files whose content or mode is not what the key saw.
    pub(crate) fn changed_inputs(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt as _;
        let paths: Vec<PathBuf> = self.files.iter().map(|(p, _)| p.clone()).collect();
        let now = digest::of_files(&paths, 0);
        self.files
            .iter()
            .zip(now)
            .filter(|((path, was), now)| {
                let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
                !matches!(now, Ok((d, _)) if *d == was.digest) || mode.ok() != Some(was.mode)
            })
            .map(|((_, was), _)| was.path.clone())
            .collect()
    }
}

/// The declared outputs that exist under `root`, as the cache names them.
pub(crate) fn existing_outputs(root: &Path, outputs: &[String]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| o.trim_end_matches('/').to_string())
        .filter(|o| std::fs::symlink_metadata(root.join(o)).is_ok())
        .collect()
}

/// Whether `path` (root-relative, `/`-separated) is a declared output or beneath one.
pub(crate) fn is_declared(path: &str, outputs: &[String]) -> bool {
    outputs.iter().any(|o| {
        let o = o.trim_end_matches('/');
        path == o
            || path
                .strip_prefix(o)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Removes the declared outputs under `root` before a restore, so nothing stale is left
/// beside what the entry holds. Links are removed, never followed.
pub(crate) fn clear_outputs(root: &Path, outputs: &[String]) -> std::io::Result<()> {
    for o in outputs {
        let path = root.join(o.trim_end_matches('/'));
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path)?,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_outputs_cover_their_own_paths_and_what_is_beneath_them() {
        let outputs = ["build/obj/".to_string(), "a.o".to_string()];
        assert!(is_declared("build/obj", &outputs));
        assert!(is_declared("build/obj/x.o", &outputs));
        assert!(is_declared("a.o", &outputs));
        assert!(!is_declared("build/objects/x.o", &outputs));
        assert!(!is_declared("build", &outputs));
        assert!(!is_declared("a.o.bak", &outputs));
        assert!(!is_declared("src/main.c", &outputs));
    }
}
