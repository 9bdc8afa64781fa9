//! The cache as the binary sees it: where it lives, which namespace and key a run uses,
//! and the `cache` subcommands.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ci_intel_cache::error_chain as chain;
use ci_intel_cache::namespace::Namespaces;
use ci_intel_cache::sign::{Keyring, SigningKey};
use ci_intel_cache::store::{CacheConfig, LocalCache};

use crate::{Failure, Outcome, exit};

/// The default cache directory: `$XDG_CACHE_HOME/ci-intel`, else `~/.cache/ci-intel`.
/// Shared by every checkout of the user.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    xdg.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("ci-intel"))
}

/// The cache directory a command uses.
pub(crate) fn dir(given: Option<&Path>) -> Result<PathBuf, Failure> {
    given
        .map(Path::to_path_buf)
        .or_else(default_dir)
        .ok_or_else(|| {
            Failure::usage(
                "error: no cache directory: neither XDG_CACHE_HOME nor HOME is set",
                Some("pass --cache-dir DIR, or --no-cache".into()),
            )
        })
}

/// The environment variable naming a signing key file for the run (a CI secret, so that
/// only protected branches hold the key the trusted namespace accepts).
pub(crate) const KEY_VAR: &str = "CI_INTEL_CACHE_KEY";

/// The environment variable holding the token of `run --remote-cache` (sent as Bearer).
pub(crate) const REMOTE_TOKEN_VAR: &str = "CI_INTEL_REMOTE_CACHE_TOKEN";

/// Opens the cache for `run`: the namespace from `--cache-namespace` or the GitHub
/// environment, the signing key from `CI_INTEL_CACHE_KEY` or the machine's own, and the
/// team cache service of `--remote-cache` behind it, with the token from
/// `CI_INTEL_REMOTE_CACHE_TOKEN`.
///
/// On a machine outside CI whose cache trusts no key yet, the machine's own key becomes the
/// trusted one, and this says so once.
pub(crate) fn open_for_run(
    dir: &Path,
    namespace: Option<&str>,
    remote: Option<&str>,
) -> anyhow::Result<Result<LocalCache, Failure>> {
    let remote = match remote
        .map(|url| {
            ci_intel_cache::remote::RemoteCache::new(url, std::env::var(REMOTE_TOKEN_VAR).ok())
        })
        .transpose()
    {
        Ok(r) => r,
        Err(e) => {
            return Ok(Err(Failure::usage(
                format!("error: --remote-cache: {}", chain(&e)),
                Some("TLS is not built in: reach the service over plain http".into()),
            )));
        }
    };
    let namespaces = match namespace {
        Some(ns) => match Namespaces::named(ns) {
            Ok(n) => n,
            Err(e) => {
                return Ok(Err(Failure::usage(
                    format!("error: --cache-namespace: {e}"),
                    None,
                )));
            }
        },
        None => Namespaces::from_github(|k| std::env::var(k).ok()),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the cache directory {}", dir.display()))?;
    let signing_key = match std::env::var_os(KEY_VAR) {
        Some(path) => match SigningKey::load(Path::new(&path)) {
            Ok(k) => Some(k),
            Err(e) => {
                return Ok(Err(Failure {
                    code: exit::USAGE,
                    message: format!("error: {KEY_VAR}: {}", chain(&e)),
                    hint: Some(
                        "point it at a key file written by `ci-intel cache keygen` (mode 0600)"
                            .into(),
                    ),
                }));
            }
        },
        None => None,
    };
    let trusted_dir = dir.join("keys").join("trusted");
    let in_ci = std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true")
        || std::env::var_os("CI").is_some_and(|v| v == "true");
    if signing_key.is_none() && !in_ci {
        let trusted = Keyring::load_dir(&trusted_dir).map_err(|e| anyhow::anyhow!(chain(&e)))?;
        if trusted.is_empty() {
            let (key, _) =
                ci_intel_cache::store::local_key(dir).map_err(|e| anyhow::anyhow!(chain(&e)))?;
            std::fs::create_dir_all(&trusted_dir)?;
            let pub_path = trusted_dir.join("local.pub");
            match key.public().save(&pub_path) {
                Ok(()) => eprintln!(
                    "ci-intel: the cache at {} now trusts this machine's signing key {} ({}); \
                     entries it signs are restored in runs on this machine",
                    dir.display(),
                    dir.join("keys").join("local.key").display(),
                    key.public()
                ),
                Err(ci_intel_cache::sign::KeyError::Exists { .. }) => {}
                Err(e) => return Err(anyhow::anyhow!(chain(&e))),
            }
        }
    }
    let mut cache = LocalCache::open(CacheConfig {
        root: dir.to_path_buf(),
        namespaces,
        signing_key,
    })
    .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    if let Some(remote) = remote {
        cache.set_remote(remote);
    }
    Ok(Ok(cache))
}

/// `ci-intel cache keygen --out DIR`.
pub(crate) fn keygen(out: &Path) -> Outcome {
    match ci_intel_cache::sign::keygen(out) {
        Ok((private, public)) => {
            let key = ci_intel_cache::sign::PublicKey::load(&public)
                .map_err(|e| anyhow::anyhow!(chain(&e)))?;
            outln!(
                "private key: {} (mode 0600; keep it secret)",
                private.display()
            );
            outln!("public key:  {} ({key})", public.display());
            outln!(
                "to trust it, copy the public key into a cache's keys/trusted/ directory; \
                 to sign with it, set {KEY_VAR}={}",
                private.display()
            );
            Ok(Ok(exit::SUCCESS))
        }
        Err(e) => Ok(Err(Failure::usage(
            format!("error: cache keygen: {}", chain(&e)),
            Some("choose an empty directory, or remove the old key pair first".into()),
        ))),
    }
}

/// Opens an existing cache for maintenance (no namespace of its own; this machine's key).
fn open_existing(given: Option<&Path>) -> anyhow::Result<Result<LocalCache, Failure>> {
    let dir = match dir(given) {
        Ok(d) => d,
        Err(f) => return Ok(Err(f)),
    };
    if !dir.join("ac").is_dir() && !dir.join("cas").is_dir() {
        return Ok(Err(Failure::usage(
            format!("error: no cache at {}", dir.display()),
            Some("a cache is made by `ci-intel run`; pass --cache-dir to use another".into()),
        )));
    }
    let cache = LocalCache::open(CacheConfig {
        root: dir,
        namespaces: Namespaces::trusted(),
        signing_key: None,
    })
    .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    Ok(Ok(cache))
}

/// Bytes for a person: `12.3 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `ci-intel cache stats [--json]`.
pub(crate) fn stats(given: Option<&Path>, json: bool) -> Outcome {
    let cache = match open_existing(given)? {
        Ok(c) => c,
        Err(f) => return Ok(Err(f)),
    };
    let stats = cache.stats().map_err(|e| anyhow::anyhow!(chain(&e)))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(Ok(exit::SUCCESS));
    }
    outln!("cache: {}", cache.root().display());
    let width = stats
        .namespaces
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    outln!(
        "\n{:<width$}  {:>8}  {:>10}  {:>6}",
        "NAMESPACE",
        "ENTRIES",
        "STORED",
        "HITS"
    );
    for ns in &stats.namespaces {
        outln!(
            "{:<width$}  {:>8}  {:>10}  {:>6}",
            ns.name,
            ns.entries,
            bytes(ns.stored_bytes),
            ns.hits
        );
    }
    let c = stats.counters;
    outln!(
        "\n{} entries; {} blobs, {} on disk",
        stats.entries,
        stats.blobs,
        bytes(stats.bytes_on_disk)
    );
    outln!(
        "lookups: {} hits, {} misses{}; {} stored; {} quarantined ({} in quarantine now)",
        c.hits,
        c.misses,
        stats
            .hit_ratio
            .map(|r| format!(" (hit ratio {:.1} %)", r * 100.0))
            .unwrap_or_default(),
        c.stores,
        c.quarantined,
        stats.in_quarantine
    );
    Ok(Ok(exit::SUCCESS))
}

/// `ci-intel cache verify`: exit 1 if anything was quarantined.
pub(crate) fn verify(given: Option<&Path>) -> Outcome {
    let cache = match open_existing(given)? {
        Ok(c) => c,
        Err(f) => return Ok(Err(f)),
    };
    let report = cache.verify_all().map_err(|e| anyhow::anyhow!(chain(&e)))?;
    for q in &report.quarantined {
        outln!(
            "quarantined: {} entry {}: {} (now in {})",
            q.namespace,
            q.key,
            q.reason,
            q.path.display()
        );
    }
    for p in &report.unreadable {
        outln!("unreadable (left alone): {}", p.display());
    }
    outln!(
        "checked {} entries ({} signed by keys this machine does not accept, kept) and {} blobs; \
         {} quarantined; {} corrupt stray blobs and {} stale temporary files removed",
        report.entries_checked,
        report.foreign,
        report.blobs_checked,
        report.quarantined.len(),
        report.stray_blobs_removed,
        report.temp_files_removed
    );
    Ok(Ok(if report.quarantined.is_empty() {
        exit::SUCCESS
    } else {
        exit::STEP_FAILED
    }))
}

/// `ci-intel cache gc --max-size SIZE`.
pub(crate) fn gc(given: Option<&Path>, max_bytes: u64) -> Outcome {
    let cache = match open_existing(given)? {
        Ok(c) => c,
        Err(f) => return Ok(Err(f)),
    };
    let report = cache
        .gc(max_bytes)
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    for q in &report.quarantined {
        outln!("quarantined: {} entry {}: {}", q.namespace, q.key, q.reason);
    }
    outln!(
        "evicted {} entries and {} blobs: {} -> {} (limit {})",
        report.evicted.len(),
        report.blobs_removed,
        bytes(report.bytes_before),
        bytes(report.bytes_after),
        bytes(max_bytes)
    );
    if report.young_blobs_kept > 0 {
        outln!(
            "kept {} unreferenced blobs younger than an hour (a store may be under way)",
            report.young_blobs_kept
        );
    }
    Ok(Ok(exit::SUCCESS))
}

/// `ci-intel cache hash [--threads N] PATH...`: the digests the cache computes
/// ([`ci_intel_cache::digest::of_files`] on `threads` threads, 0: one per CPU), printed as
/// `b3sum PATH...` prints them.
pub(crate) fn hash(paths: &[PathBuf], threads: usize) -> Outcome {
    use std::io::Write as _;
    let mut failed = false;
    let mut complain = |path: &Path, e: &std::io::Error| {
        failed = true;
        let _ = writeln!(
            std::io::stderr().lock(),
            "ci-intel: cache hash: {}: {e}",
            path.display()
        );
    };
    let mut files = Vec::new();
    for path in paths {
        if !std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            files.push(path.clone());
            continue;
        }
        let (mut found, mut dirs) = (Vec::new(), vec![path.clone()]);
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    complain(&dir, &e);
                    continue;
                }
            };
            for entry in entries {
                match entry.and_then(|e| Ok((e.file_type()?, e.path()))) {
                    Ok((kind, p)) if kind.is_dir() => dirs.push(p),
                    Ok((kind, p)) if kind.is_file() => found.push(p),
                    Ok(_) => {}
                    Err(e) => complain(&dir, &e),
                }
            }
        }
        found.sort();
        files.append(&mut found);
    }
    let digests = ci_intel_cache::digest::of_files(&files, threads);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (path, digest) in files.iter().zip(digests) {
        match digest {
            Ok((digest, _)) => {
                let _ = writeln!(out, "{}", b3sum_line(&digest.to_hex(), path));
            }
            Err(e) => {
                let _ = out.flush();
                complain(path, &e);
            }
        }
    }
    let _ = out.flush();
    Ok(Ok(if failed {
        exit::STEP_FAILED
    } else {
        exit::SUCCESS
    }))
}

/// One line of `b3sum`'s output: a path with a backslash or a newline is escaped, and its
/// line starts with a backslash; a path that is not UTF-8 is shown lossily.
fn b3sum_line(hex: &str, path: &Path) -> String {
    let name = path.to_string_lossy();
    if name.contains(['\\', '\n']) {
        let name = name.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{hex}  {name}")
    } else {
        format!("{hex}  {name}")
    }
}

/// `ci-intel cache serve`: runs until SIGTERM or Ctrl-C.
pub(crate) fn serve(listen: std::net::SocketAddr, dir: &Path, config: Option<&Path>) -> Outcome {
    use ci_intel_cache::service::{auth::Config, server};
    let config = match config.map(Config::load).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            return Ok(Err(Failure::usage(
                format!("error: {}", chain(&e)),
                Some("see docs/cache-service.md for the configuration's keys".into()),
            )));
        }
    };
    if config.tokens.is_empty() && !config.anonymous_read {
        eprintln!(
            "ci-intel: the cache service has no tokens: every request will be refused (401); \
             add tokens with --config (docs/cache-service.md)"
        );
    }
    let running = match server::start(listen, dir, &config, true) {
        Ok(r) => r,
        Err(e @ server::ServeError::Bind { .. }) => {
            return Ok(Err(Failure::usage(
                format!("error: {}", chain(&e)),
                Some("choose a free address and port, e.g. --listen 127.0.0.1:9090".into()),
            )));
        }
        Err(e) => return Err(anyhow::anyhow!(chain(&e))),
    };
    eprintln!(
        "ci-intel: cache service listening on http://{} (store {})",
        running.addr,
        dir.display()
    );
    running.wait();
    Ok(Ok(exit::SUCCESS))
}

/// `ci-intel cache token-hash`: the hash of the token on stdin.
pub(crate) fn token_hash() -> Outcome {
    let mut token = String::new();
    std::io::stdin()
        .read_line(&mut token)
        .context("reading the token from stdin")?;
    let token = token.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Ok(Err(Failure::usage(
            "error: no token on stdin",
            Some("pipe it in: `printf %s \"$TOKEN\" | ci-intel cache token-hash`".into()),
        )));
    }
    outln!("{}", ci_intel_cache::service::auth::token_hash(token));
    Ok(Ok(exit::SUCCESS))
}
