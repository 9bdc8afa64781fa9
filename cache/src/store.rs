//! The local cache: a content-addressed store, signed manifests per namespace, quarantine
//! and an index, under one directory shared by every checkout of the user.
//!
//! ```text
//! ROOT/cas/ab/abcd…            zstd blobs, named by the BLAKE3 of their content
//! ROOT/ac/NAMESPACE/ab/KEY      signed manifests (the action cache)
//! ROOT/quarantine/TIME-NS-KEY/  entries that failed verification: manifest, reason
//! ROOT/keys/local.key           this machine's signing key (0600)
//! ROOT/keys/trusted/*.pub       public keys trusted for the trusted namespace
//! ROOT/tmp/                     temporary files, renamed into place when complete
//! ROOT/index.db                 sizes, last use, counters (SQLite)
//! ```
//!
//! Nothing is restored that was not verified: a lookup checks the manifest's signature
//! against the keys the namespace accepts, that it is the manifest of the key asked for,
//! and that every blob it names is present; a restore then checks every blob's BLAKE3 as
//! it streams out. Whatever fails is moved to `quarantine/` with a reason, and the caller
//! runs the step as a miss.
//!
//! With the `remote` feature, a team cache service can stand behind the cache
//! (`LocalCache::set_remote`): a local miss fetches the entry into this cache and then
//! verifies it exactly as a local one; a store uploads what it stored.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::ActionKey;
#[cfg(feature = "remote")]
use crate::cas::AdoptError;
use crate::cas::{Cas, PutError, ReadError};
use crate::digest::Digest;
use crate::index::{Counter, Index, IndexError};
use crate::key::KeySummary;
use crate::manifest::{Blob, Manifest, ManifestError, Opened, Output, OutputKind};
use crate::namespace::{Namespaces, TRUSTED};
use crate::sign::{KeyError, Keyring, PublicKey, SigningKey};

/// How a cache is opened.
#[derive(Debug)]
pub struct CacheConfig {
    /// The cache directory.
    pub root: PathBuf,
    /// Where this run reads and writes.
    pub namespaces: Namespaces,
    /// The key this run signs with; `None`: the machine's own (`keys/local.key`, made on
    /// first use).
    pub signing_key: Option<SigningKey>,
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Its directories could not be made.
    #[error("could not create the cache directory {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A key could not be read or made.
    #[error("cache keys unusable")]
    Keys(#[from] KeyError),
    /// The index could not be opened.
    #[error("cache index unusable")]
    Index(#[from] IndexError),
}

/// An entry that failed verification, now in quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// Its key.
    pub key: ActionKey,
    /// Its namespace.
    pub namespace: String,
    /// Why, as a message fragment.
    pub reason: String,
    /// Where it went.
    pub path: PathBuf,
}

/// A verified entry, ready to restore.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What it says.
    pub manifest: Manifest,
    /// The namespace it was found in.
    pub namespace: String,
    /// Who signed it.
    pub signer: PublicKey,
}

/// The answer to a lookup.
#[derive(Debug)]
pub struct Lookup {
    /// The entry, when one verified.
    pub entry: Option<Entry>,
    /// Entries found broken on the way (already in quarantine).
    pub quarantined: Vec<Quarantine>,
}

/// Why a restore did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A blob failed verification; the entry is in quarantine.
    #[error("cache entry corrupt: {}", .0.reason)]
    Corrupt(Quarantine),
    /// The destination could not be written.
    #[error("could not restore {}", path.display())]
    Destination {
        /// What could not be written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What the executor hands over to store a step's result.
#[derive(Debug)]
pub struct StoreRequest<'a> {
    /// The action key.
    pub key: ActionKey,
    /// Its parts.
    pub summary: KeySummary,
    /// The plan root the outputs are relative to.
    pub root: &'a Path,
    /// The step's outputs that exist, relative to `root` (directories are walked).
    pub outputs: &'a [String],
    /// The step's exit code.
    pub exit_code: i32,
    /// The file holding the step's recorded output...
    pub log: &'a Path,
    /// ...from this byte on (earlier attempts' output comes before it).
    pub log_offset: u64,
    /// How long it ran.
    pub duration: Duration,
}

/// Why a result was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// This run may not write the trusted namespace.
    #[error(
        "this run's signing key ({0}) is not trusted, so it cannot publish to the trusted namespace"
    )]
    NotTrusted(PublicKey),
    /// An output could not be read, or is not something the cache stores.
    #[error("output {path} cannot be stored: {reason}")]
    Output {
        /// The output.
        path: String,
        /// Why.
        reason: String,
    },
    /// A blob could not be stored.
    #[error("could not store a blob")]
    Blob(#[from] PutError),
    /// The manifest could not be made.
    #[error("could not make the manifest")]
    Manifest(#[from] ManifestError),
    /// Writing the entry failed.
    #[error("could not write the cache entry")]
    Io(#[source] io::Error),
}

/// What a store did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The namespace written.
    pub namespace: String,
    /// Blobs referenced, and bytes of them on disk.
    pub blobs: usize,
    /// Compressed bytes.
    pub bytes: u64,
}

/// The local cache.
#[derive(Debug)]
pub struct LocalCache {
    root: PathBuf,
    cas: Cas,
    namespaces: Namespaces,
    signer: SigningKey,
    trusted: Keyring,
    index: Mutex<Index>,
    /// The team cache service behind this one, when the run has one.
    #[cfg(feature = "remote")]
    remote: Option<crate::remote::RemoteCache>,
}

/// Files and directories of the cache.
fn dirs(root: &Path) -> [PathBuf; 5] {
    [
        root.join("cas"),
        root.join("ac"),
        root.join("quarantine"),
        root.join("tmp"),
        root.join("keys").join("trusted"),
    ]
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The machine's signing key, made on first use. The bool says it was just made.
pub fn local_key(root: &Path) -> Result<(SigningKey, bool), KeyError> {
    let path = root.join("keys").join("local.key");
    fs::create_dir_all(root.join("keys")).map_err(|e| KeyError::Io {
        path: root.join("keys"),
        source: e,
    })?;
    match SigningKey::load(&path) {
        Ok(k) => Ok((k, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let k = SigningKey::generate()?;
            match k.save(&path) {
                Ok(()) => Ok((k, true)),
                // Another process made it first: use theirs.
                Err(KeyError::Exists { .. }) => Ok((SigningKey::load(&path)?, false)),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

impl LocalCache {
    /// Opens the cache, creating its directories.
    pub fn open(config: CacheConfig) -> Result<LocalCache, OpenError> {
        let root = config.root;
        for d in dirs(&root) {
            fs::create_dir_all(&d).map_err(|e| OpenError::Dir {
                path: d.clone(),
                source: e,
            })?;
        }
        let signer = match config.signing_key {
            Some(k) => k,
            None => local_key(&root)?.0,
        };
        let trusted = Keyring::load_dir(&root.join("keys").join("trusted"))?;
        let cas = Cas::open(&root.join("cas"), &root.join("tmp")).map_err(|e| OpenError::Dir {
            path: root.join("cas"),
            source: e,
        })?;
        let index = Index::open(&root.join("index.db"))?;
        Ok(LocalCache {
            root,
            cas,
            namespaces: config.namespaces,
            signer,
            trusted,
            index: Mutex::new(index),
            #[cfg(feature = "remote")]
            remote: None,
        })
    }

    /// Puts the team cache service behind this cache: a lookup that misses here asks it
    /// (and verifies what it gets as it would a local entry), a store uploads to it.
    #[cfg(feature = "remote")]
    pub fn set_remote(&mut self, remote: crate::remote::RemoteCache) {
        self.remote = Some(remote);
    }

    /// The team cache service behind this cache, if any.
    #[cfg(feature = "remote")]
    pub fn remote(&self) -> Option<&crate::remote::RemoteCache> {
        self.remote.as_ref()
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run's namespaces.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// The blob store.
    pub fn cas(&self) -> &Cas {
        &self.cas
    }

    /// The keys trusted for the trusted namespace.
    pub fn trusted_keys(&self) -> &Keyring {
        &self.trusted
    }

    /// The key this run signs with.
    pub fn signer(&self) -> PublicKey {
        self.signer.public()
    }

    pub(crate) fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records in the index, warning (not failing) when it cannot: the files are the truth.
    pub(crate) fn note(&self, f: impl FnOnce(&Index) -> Result<(), IndexError>) {
        if let Err(e) = f(&self.index()) {
            tracing::warn!("cache index not updated: {e}");
        }
    }

    /// Where the manifest of `key` in `namespace` lives.
    pub fn manifest_path(&self, namespace: &str, key: &ActionKey) -> PathBuf {
        let hex = key.to_string();
        self.root
            .join("ac")
            .join(namespace)
            .join(&hex[..2])
            .join(hex)
    }

    /// Whether `signer` may vouch for entries of `namespace`: the trusted keys for the
    /// trusted namespace; those and this run's own key for the others.
    pub(crate) fn accepts(&self, namespace: &str, signer: &PublicKey) -> bool {
        self.trusted.contains(signer) || (namespace != TRUSTED && *signer == self.signer.public())
    }

    /// Looks `key` up in the run's namespaces, trusted first; on a miss, in the remote
    /// cache's, when there is one (what it sends is written here and verified like a local
    /// entry). Never returns an entry that did not verify; broken ones are quarantined on
    /// the way.
    pub fn lookup(&self, key: &ActionKey) -> Lookup {
        let mut quarantined = Vec::new();
        let found = self
            .namespaces
            .read
            .iter()
            .find_map(|ns| self.lookup_in(ns, key, &mut quarantined));
        #[cfg(feature = "remote")]
        let found = found.or_else(|| self.lookup_remote(key, &mut quarantined));
        if found.is_none() {
            self.note(|ix| ix.bump(Counter::Misses));
        }
        Lookup {
            entry: found,
            quarantined,
        }
    }

    /// The verified entry of `key` in `ns` here, if any; a broken one goes to quarantine.
    fn lookup_in(
        &self,
        ns: &str,
        key: &ActionKey,
        quarantined: &mut Vec<Quarantine>,
    ) -> Option<Entry> {
        let path = self.manifest_path(ns, key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cache entry {} unreadable: {e}", path.display());
                return None;
            }
        };
        match self.check(ns, key, &bytes) {
            Ok(entry) => Some(entry),
            Err(reason) => {
                if let Some(q) = self.quarantine(ns, key, &reason, None) {
                    quarantined.push(q);
                }
                None
            }
        }
    }

    /// Fetches `key`'s manifest from the remote cache, namespace by namespace (trusted
    /// first), with the blobs it names that are not here, into this cache, then looks it
    /// up here: the signature, the keyring and the namespace are checked exactly as for a
    /// local entry, and blobs were checked against their BLAKE3 on the way in. The blobs of
    /// a manifest whose signer this namespace does not accept are not fetched.
    #[cfg(feature = "remote")]
    fn lookup_remote(&self, key: &ActionKey, quarantined: &mut Vec<Quarantine>) -> Option<Entry> {
        let remote = self.remote.as_ref()?;
        for ns in &self.namespaces.read {
            let sealed = match remote.fetch_manifest(ns, key) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    remote.report(&e);
                    if remote.is_down() {
                        return None;
                    }
                    continue;
                }
            };
            let mut corrupt = None;
            if let Ok(opened) = crate::manifest::open(&sealed, |k| self.accepts(ns, k)) {
                match self.fetch_blobs(remote, &opened.manifest) {
                    Ok(()) => {}
                    Err(FetchFailure::Corrupt(reason)) => corrupt = Some(reason),
                    Err(FetchFailure::Incomplete) => continue,
                }
            }
            if let Err(e) = self.publish(&self.manifest_path(ns, key), &sealed) {
                tracing::warn!("could not write a fetched cache entry: {e}");
                continue;
            }
            if let Some(reason) = corrupt {
                if let Some(q) = self.quarantine(ns, key, &reason, None) {
                    quarantined.push(q);
                }
                continue;
            }
            if let Some(entry) = self.lookup_in(ns, key, quarantined) {
                return Some(entry);
            }
        }
        None
    }

    /// Fetches the blobs `manifest` names that are not here, each verified before it is
    /// stored.
    #[cfg(feature = "remote")]
    fn fetch_blobs(
        &self,
        remote: &crate::remote::RemoteCache,
        manifest: &Manifest,
    ) -> Result<(), FetchFailure> {
        let mut seen = std::collections::HashSet::new();
        for blob in manifest.blobs() {
            if !seen.insert(blob.digest) || self.cas.contains(&blob.digest) {
                continue;
            }
            let reader = match remote.fetch_blob(&blob.digest, max_compressed(blob.size)) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    tracing::debug!(
                        "remote cache entry incomplete: blob {} missing",
                        blob.digest
                    );
                    return Err(FetchFailure::Incomplete);
                }
                Err(e) => {
                    remote.report(&e);
                    return Err(FetchFailure::Incomplete);
                }
            };
            match self
                .cas
                .put_compressed(&blob, reader, max_compressed(blob.size))
            {
                Ok(_) => {}
                Err(e @ (AdoptError::Corrupt(_) | AdoptError::TooLarge(_))) => {
                    return Err(FetchFailure::Corrupt(format!(
                        "blob {} from the remote cache: {}",
                        blob.digest,
                        crate::error_chain(&e)
                    )));
                }
                Err(e) => {
                    tracing::warn!(
                        "could not store blob {} from the remote cache: {}",
                        blob.digest,
                        crate::error_chain(&e)
                    );
                    return Err(FetchFailure::Incomplete);
                }
            }
        }
        Ok(())
    }

    /// Uploads the entry just stored: the blobs the service lacks (one query), then the
    /// manifest, last, so the service never holds a manifest without its blobs. A failure
    /// is reported (once as a warning) and otherwise ignored.
    #[cfg(feature = "remote")]
    fn upload(&self, namespace: &str, manifest: &Manifest, sealed: &[u8]) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut digests: Vec<Digest> = manifest.blobs().map(|b| b.digest).collect();
        digests.sort();
        digests.dedup();
        let result = remote.missing(&digests).and_then(|absent| {
            absent
                .iter()
                .try_for_each(|d| remote.put_blob(d, &self.cas.path(d)))?;
            remote.put_manifest(namespace, &manifest.key, sealed)
        });
        if let Err(e) = result {
            remote.report(&e);
        }
    }

    /// Verifies a manifest found under `namespace` for `key`: signature, identity,
    /// completeness.
    fn check(&self, namespace: &str, key: &ActionKey, bytes: &[u8]) -> Result<Entry, String> {
        let opened = crate::manifest::open(bytes, |k| self.accepts(namespace, k))
            .map_err(|e| crate::error_chain(&e))?;
        self.check_opened(namespace, key, opened)
    }

    /// Checks an opened manifest found under `namespace` for `key`: identity and
    /// completeness (every blob present).
    pub(crate) fn check_opened(
        &self,
        namespace: &str,
        key: &ActionKey,
        opened: Opened,
    ) -> Result<Entry, String> {
        let manifest = opened.manifest;
        if manifest.key != *key {
            return Err(format!(
                "manifest is for key {}, not this one",
                manifest.key
            ));
        }
        if manifest.namespace != namespace {
            return Err(format!(
                "manifest was signed for namespace `{}`, found in `{namespace}`",
                manifest.namespace
            ));
        }
        for blob in manifest.blobs() {
            if !self.cas.contains(&blob.digest) {
                return Err(format!("blob {} is missing", blob.digest));
            }
        }
        Ok(Entry {
            manifest,
            namespace: namespace.to_string(),
            signer: opened.signer,
        })
    }

    /// Moves the manifest of `key` in `namespace` (and a corrupt blob, when named) to
    /// quarantine with `reason`. `None` when another process got there first.
    pub(crate) fn quarantine(
        &self,
        namespace: &str,
        key: &ActionKey,
        reason: &str,
        blob: Option<&Digest>,
    ) -> Option<Quarantine> {
        let dir = self.root.join("quarantine").join(format!(
            "{}-{namespace}-{key}-{}",
            now(),
            std::process::id()
        ));
        if let Err(e) = fs::create_dir_all(&dir) {
            tracing::warn!("could not create {}: {e}", dir.display());
        }
        let moved = fs::rename(self.manifest_path(namespace, key), dir.join("manifest"));
        if let Some(d) = blob {
            // A corrupt blob must not be served to any other entry either.
            let _ = fs::rename(self.cas.path(d), dir.join(format!("blob-{d}")));
        }
        if let Err(e) = &moved {
            if e.kind() == io::ErrorKind::NotFound && blob.is_none() {
                let _ = fs::remove_dir(&dir);
                return None;
            }
        }
        let _ = fs::write(dir.join("reason"), format!("{reason}\n"));
        self.note(|ix| {
            ix.remove(namespace, &key.to_string())?;
            ix.bump(Counter::Quarantined)
        });
        Some(Quarantine {
            key: *key,
            namespace: namespace.to_string(),
            reason: reason.to_string(),
            path: dir,
        })
    }

    /// Restores a verified entry's outputs under `root`, each blob checked as it streams
    /// out; files get `mtime` when given. A file is replaced only by verified content.
    pub fn restore(
        &self,
        entry: &Entry,
        root: &Path,
        mtime: Option<SystemTime>,
    ) -> Result<(), RestoreError> {
        let dest = |path: &str| -> PathBuf { root.join(path) };
        let io_err = |path: PathBuf| move |e| RestoreError::Destination { path, source: e };
        let mut dirs = Vec::new();
        // Directories known to be real (checked or made) on the way down.
        let mut known = std::collections::HashSet::new();
        // Files are restored after the tree is laid out, on several threads.
        let mut files = Vec::new();
        for out in &entry.manifest.outputs {
            let path = dest(&out.path);
            make_parents(root, &out.path, &mut known).map_err(io_err(path.clone()))?;
            match &out.kind {
                OutputKind::Dir { mode } => {
                    match fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => fs::remove_file(&path).map_err(io_err(path.clone()))?,
                        Err(_) => {}
                    }
                    fs::create_dir_all(&path).map_err(io_err(path.clone()))?;
                    known.insert(path.clone());
                    dirs.push((path, *mode));
                }
                OutputKind::File { digest, size, mode } => {
                    remove_dir_in_the_way(&path).map_err(io_err(path.clone()))?;
                    let blob = Blob {
                        digest: *digest,
                        size: *size,
                    };
                    files.push((blob, path, *mode));
                }
                OutputKind::Symlink { target } => {
                    remove_dir_in_the_way(&path).map_err(io_err(path.clone()))?;
                    match fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(io_err(path.clone())(e));
                        }
                        _ => {}
                    }
                    std::os::unix::fs::symlink(target, &path).map_err(io_err(path.clone()))?;
                }
            }
        }
        self.restore_files(entry, &files, mtime)?;
        // Directory modes and times last, deepest first, once their contents are in.
        for (path, mode) in dirs.iter().rev() {
            let dir = fs::File::open(path).map_err(io_err(path.clone()))?;
            dir.set_permissions(fs::Permissions::from_mode(*mode))
                .map_err(io_err(path.clone()))?;
            if let Some(t) = mtime {
                dir.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
                    .map_err(io_err(path.clone()))?;
            }
        }
        self.note(|ix| ix.hit(&entry.namespace, &entry.manifest.key.to_string()));
        Ok(())
    }

    /// Restores `files` (blob, destination, mode) on up to one thread per CPU; the first
    /// failure stops the others and is what is returned (a corrupt blob quarantines the
    /// entry). Each file is replaced only by verified content, whatever happens to others.
    fn restore_files(
        &self,
        entry: &Entry,
        files: &[(Blob, PathBuf, u32)],
        mtime: Option<SystemTime>,
    ) -> Result<(), RestoreError> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let threads = crate::digest::cpus().min(files.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<(Blob, ReadError, PathBuf)>> = Mutex::new(None);
        let work = || {
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((blob, path, mode)) = files.get(i) else {
                    break;
                };
                if let Err(e) = self.cas.restore(blob, path, *mode, mtime) {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some((*blob, e, path.clone()));
                    }
                }
            }
        };
        if threads <= 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(work);
                }
            });
        }
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some((blob, e, path)) => Err(self.restore_failure(entry, &blob, e, &path)),
            None => Ok(()),
        }
    }

    fn restore_failure(
        &self,
        entry: &Entry,
        blob: &Blob,
        e: ReadError,
        path: &Path,
    ) -> RestoreError {
        if !e.is_store_fault() {
            return RestoreError::Destination {
                path: path.to_path_buf(),
                source: io::Error::other(crate::error_chain(&e)),
            };
        }
        let reason = crate::error_chain(&e);
        let q = self
            .quarantine(
                &entry.namespace,
                &entry.manifest.key,
                &reason,
                Some(&blob.digest),
            )
            .unwrap_or_else(|| Quarantine {
                key: entry.manifest.key,
                namespace: entry.namespace.clone(),
                reason: reason.clone(),
                path: PathBuf::new(),
            });
        RestoreError::Corrupt(q)
    }

    /// Writes the entry's recorded output to a new file at `dest`, verified (a log may be
    /// large: it is streamed, never held in memory).
    pub fn restore_log(&self, entry: &Entry, dest: &Path) -> Result<(), RestoreError> {
        let blob = entry.manifest.log;
        self.cas
            .restore(&blob, dest, 0o600, None)
            .map_err(|e| self.restore_failure(entry, &blob, e, dest))
    }

    /// The entry's recorded output, verified, in memory.
    pub fn log(&self, entry: &Entry) -> Result<Vec<u8>, RestoreError> {
        self.cas.read(&entry.manifest.log).map_err(|e| {
            let blob = entry.manifest.log;
            self.restore_failure(entry, &blob, e, Path::new("log"))
        })
    }

    /// Stores a step's result in the run's namespace: blobs first, then the signed
    /// manifest, renamed into place last, so a reader sees the whole entry or none of it.
    pub fn store(&self, req: &StoreRequest<'_>) -> Result<Stored, StoreError> {
        let namespace = self.namespaces.write.clone();
        if namespace == TRUSTED && !self.trusted.contains(&self.signer.public()) {
            return Err(StoreError::NotTrusted(self.signer.public()));
        }
        let mut outputs = Vec::new();
        let mut bytes = 0;
        for out in req.outputs {
            self.collect(req.root, out, &mut outputs, &mut bytes)?;
        }
        outputs.sort_by(|a, b| a.path.cmp(&b.path));
        outputs.dedup_by(|a, b| a.path == b.path);
        let log = self.cas.put_file_from(req.log, req.log_offset)?;
        bytes += log.stored_bytes;
        let manifest = Manifest {
            key: req.key,
            namespace: namespace.clone(),
            outputs,
            exit_code: req.exit_code,
            log: log.blob,
            duration_ms: u64::try_from(req.duration.as_millis()).unwrap_or(u64::MAX),
            inputs: req.summary.clone(),
            created_unix: now(),
        };
        let sealed = manifest.seal(&self.signer)?;
        let blobs = manifest.blobs().count();
        let dest = self.manifest_path(&namespace, &req.key);
        self.publish(&dest, &sealed).map_err(StoreError::Io)?;
        self.note(|ix| ix.stored(&namespace, &req.key.to_string(), bytes));
        #[cfg(feature = "remote")]
        self.upload(&namespace, &manifest, &sealed);
        Ok(Stored {
            namespace,
            blobs,
            bytes,
        })
    }

    /// Writes `bytes` at `dest` atomically and durably.
    fn publish(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self
            .root
            .join("tmp")
            .join(crate::cas::temp_name("manifest"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&tmp, dest).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Adds the output at `rel` (walking a directory) to `outputs`.
    fn collect(
        &self,
        root: &Path,
        rel: &str,
        outputs: &mut Vec<Output>,
        bytes: &mut u64,
    ) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::Output {
            path: rel.to_string(),
            reason,
        };
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(|e| bad(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        let ft = meta.file_type();
        if ft.is_file() {
            let stored = self.cas.put_file(&path)?;
            *bytes += stored.stored_bytes;
            outputs.push(Output {
                path: rel.to_string(),
                kind: OutputKind::File {
                    digest: stored.blob.digest,
                    size: stored.blob.size,
                    mode,
                },
            });
        } else if ft.is_dir() {
            outputs.push(Output {
                path: rel.to_string(),
                kind: OutputKind::Dir { mode },
            });
            let mut names: Vec<String> = Vec::new();
            for e in fs::read_dir(&path).map_err(|e| bad(e.to_string()))? {
                let e = e.map_err(|e| bad(e.to_string()))?;
                let name = e
                    .file_name()
                    .into_string()
                    .map_err(|n| bad(format!("{} is not UTF-8", n.to_string_lossy())))?;
                names.push(name);
            }
            names.sort();
            for name in names {
                self.collect(root, &format!("{rel}/{name}"), outputs, bytes)?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| bad(e.to_string()))?;
            let target = target
                .to_str()
                .ok_or_else(|| bad("its link target is not UTF-8".into()))?;
            if !stays_inside(rel, target) {
                return Err(bad(format!(
                    "its link target `{target}` leaves the root (only relative links within it are stored)"
                )));
            }
            outputs.push(Output {
                path: rel.to_string(),
                kind: OutputKind::Symlink {
                    target: target.to_string(),
                },
            });
        } else {
            return Err(bad("it is not a file, directory or symbolic link".into()));
        }
        Ok(())
    }
}

/// Why the blobs of a fetched manifest are not all here.
#[cfg(feature = "remote")]
enum FetchFailure {
    /// One failed verification (the reason): the entry is quarantined.
    Corrupt(String),
    /// One could not be fetched: the entry is skipped.
    Incomplete,
}

/// The most compressed bytes a blob of `size` may take: zstd's bound for incompressible
/// data, and some.
#[cfg(feature = "remote")]
fn max_compressed(size: u64) -> u64 {
    size.saturating_add(size / 64).saturating_add(1024)
}

/// Whether a relative link at `link` (root-relative) pointing at `target` stays within the
/// root, lexically.
pub(crate) fn stays_inside(link: &str, target: &str) -> bool {
    if target.is_empty() || Path::new(target).is_absolute() {
        return false;
    }
    let mut depth: usize = link.split('/').count().saturating_sub(1);
    for c in Path::new(target).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Makes the directories above `rel` under `root`, refusing to go through a symbolic link:
/// a link left in the workspace must not steer a restore out of it.
fn make_parents(
    root: &Path,
    rel: &str,
    known: &mut std::collections::HashSet<PathBuf>,
) -> io::Result<()> {
    let mut dir = root.to_path_buf();
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    for part in parts {
        dir.push(part);
        if known.contains(&dir) {
            continue;
        }
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link; outputs are not restored through links",
                    dir.display()
                )));
            }
            Ok(_) => fs::remove_file(&dir).and_then(|()| fs::create_dir(&dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            },
            Err(e) => return Err(e),
        }
        known.insert(dir.clone());
    }
    Ok(())
}

/// Removes a directory where a file or link must go (a previous output of another shape).
fn remove_dir_in_the_way(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        _ => Ok(()),
    }
}
