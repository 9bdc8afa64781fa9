//! Looking after a [`LocalCache`]: what it holds ([`LocalCache::stats`]), a scrub of every
//! entry and blob ([`LocalCache::verify_all`]), and least-recently-used eviction down to a
//! size ([`LocalCache::gc`]).
//!
//! The files are the truth: entries are found by walking `ac/`, blobs by listing `cas/`;
//! the index only adds what the files cannot say (hits, last use, counters).
//!
//! Which signers are accepted is the store's rule ([`LocalCache::lookup`]): the trusted keys
//! for the trusted namespace, those and this run's own key for the others. One exception:
//! an entry of another namespace signed by a key this run does not accept (another
//! machine's or another run's own key) is *foreign*. It could never be served to this run,
//! but it is not broken either, so it is checked for integrity (signature under its own
//! signer, identity, blobs) and kept, not quarantined; only a run that accepts its signer
//! could tell more. An untrusted signer in the trusted namespace is always quarantined.
//!
//! Maintenance runs beside builds that store into the same cache. Blobs are written before
//! the manifest that names them, so a blob no manifest names may belong to a store still
//! under way: [`LocalCache::gc`] removes such a blob only once it is older than
//! [`STALE_AFTER`], or when the manifests that named it were evicted or quarantined by the
//! same collection. A store racing a collection can still lose a blob it shared with an
//! evicted entry; the next lookup then finds the blob missing, quarantines the entry and
//! misses. No manifest this collection leaves in place names a blob it removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::ActionKey;
use crate::cas::Cas;
use crate::digest::Digest;
use crate::error_chain;
use crate::index::{Counter, IndexError, IndexedEntry};
use crate::manifest::{Blob, ManifestError};
use crate::namespace::{TRUSTED, is_valid};
use crate::store::{LocalCache, Quarantine};

/// Temporary files in `tmp/`, and blobs no manifest names, older than this are left over
/// from an interrupted store: [`LocalCache::verify_all`] removes the first,
/// [`LocalCache::gc`] the second.
pub const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

/// Why a maintenance operation failed. Nothing it did before is undone: quarantines and
/// removals already made stand, and are consistent.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// A directory of the cache could not be listed.
    #[error("could not list {}", path.display())]
    Walk {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A manifest could not be read (not a missing file: that one is gone). Collection
    /// stops before removing anything, since the blobs it names are unknown.
    #[error("could not read the cache entry {}", path.display())]
    Unreadable {
        /// The manifest.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An evicted entry or an unreferenced blob could not be removed.
    #[error("could not remove {}", path.display())]
    Remove {
        /// What could not be removed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The index could not be read.
    #[error("could not read the cache index")]
    Index(#[from] IndexError),
}

/// What the cache holds, for `cache stats`. Serialized (`--json`) as:
///
/// ```json
/// {
///   "namespaces": [
///     {
///       "name": "trusted",
///       "entries": 2,
///       "manifest_bytes": 1834,
///       "stored_bytes": 20611,
///       "indexed_entries": 2,
///       "hits": 3,
///       "last_used_unix": 1767225600
///     }
///   ],
///   "entries": 2,
///   "manifest_bytes": 1834,
///   "blobs": 7,
///   "blob_bytes": 19808,
///   "bytes_on_disk": 21642,
///   "counters": { "hits": 3, "misses": 1, "stores": 2, "quarantined": 0 },
///   "hit_ratio": 0.75,
///   "in_quarantine": 0
/// }
/// ```
///
/// Namespaces are sorted by name; `hit_ratio` is `null` before any lookup was counted and
/// `last_used_unix` is `null` for a namespace directory without entries. Fields may be
/// added; none is renamed or removed without a new name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Each namespace with a directory under `ac/`, by name.
    pub namespaces: Vec<NamespaceStats>,
    /// Entries (manifests) in all namespaces.
    pub entries: u64,
    /// Bytes of those manifests on disk.
    pub manifest_bytes: u64,
    /// Blobs in the store.
    pub blobs: u64,
    /// Bytes of those blobs on disk (compressed).
    pub blob_bytes: u64,
    /// `manifest_bytes + blob_bytes`: what [`LocalCache::gc`] bounds.
    pub bytes_on_disk: u64,
    /// Counters kept by the index across runs.
    pub counters: Counters,
    /// `hits / (hits + misses)`; `None` when both are 0.
    pub hit_ratio: Option<f64>,
    /// Entries now in `quarantine/`.
    pub in_quarantine: u64,
}

/// One namespace in [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceStats {
    /// Its name.
    pub name: String,
    /// Its entries (manifests on disk).
    pub entries: u64,
    /// Bytes of its manifests on disk.
    pub manifest_bytes: u64,
    /// Compressed bytes of its entries' blobs, as the index recorded them when they were
    /// stored. A blob shared by several entries counts once per entry; an entry the index
    /// does not know counts 0 (see `indexed_entries`).
    pub stored_bytes: u64,
    /// How many of its entries the index knows.
    pub indexed_entries: u64,
    /// Restores of its entries, as the index counted them.
    pub hits: u64,
    /// The latest use of any of its entries, in seconds since the Unix epoch: the index's
    /// last store or restore, else the manifest's modification time.
    pub last_used_unix: Option<u64>,
}

/// The index's counters, in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Restores of a verified entry.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Entries stored.
    pub stores: u64,
    /// Entries quarantined.
    pub quarantined: u64,
}

/// One entry of the cache: a key in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryName {
    /// Its namespace.
    pub namespace: String,
    /// Its key.
    pub key: ActionKey,
}

/// What [`LocalCache::verify_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Manifests opened and checked.
    pub entries_checked: usize,
    /// Of those, entries of another namespace signed by a key this run does not accept:
    /// intact, kept.
    pub foreign: usize,
    /// Distinct blobs fully decompressed and hashed (named by a manifest or not).
    pub blobs_checked: usize,
    /// Entries that failed, now in quarantine, with why.
    pub quarantined: Vec<Quarantine>,
    /// Corrupt blobs no manifest names, removed.
    pub stray_blobs_removed: usize,
    /// Temporary files older than [`STALE_AFTER`] removed from `tmp/`.
    pub temp_files_removed: usize,
    /// Manifests that could not be read (not found to be broken: left alone).
    pub unreadable: Vec<PathBuf>,
}

/// What [`LocalCache::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Entries evicted, least recently used first.
    pub evicted: Vec<EntryName>,
    /// Entries found broken on the way, now in quarantine.
    pub quarantined: Vec<Quarantine>,
    /// Blobs removed: no remaining manifest names them.
    pub blobs_removed: usize,
    /// Blobs no manifest names that were kept: younger than [`STALE_AFTER`], they may
    /// belong to a store under way.
    pub young_blobs_kept: usize,
    /// Manifests and blobs on disk before, in bytes.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
}

/// A manifest file under `ac/`.
#[derive(Debug)]
struct Found {
    name: EntryName,
    path: PathBuf,
    bytes: u64,
    mtime: u64,
}

/// A manifest, read and checked.
enum Checked {
    /// It verifies; these are its blobs (each once).
    Good { blobs: Vec<Blob>, foreign: bool },
    /// It does not, for this reason.
    Bad(String),
    /// It disappeared meanwhile.
    Gone,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The directory's entries; `None` when it does not exist (removed meanwhile).
fn list(dir: &Path) -> Result<Option<Vec<fs::DirEntry>>, MaintenanceError> {
    let walk = |e| MaintenanceError::Walk {
        path: dir.to_path_buf(),
        source: e,
    };
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(walk(e)),
    };
    let mut out = rd.collect::<Result<Vec<_>, _>>().map_err(walk)?;
    out.sort_by_key(fs::DirEntry::file_name);
    Ok(Some(out))
}

/// Whether the entry is a directory (not following links).
fn is_dir(e: &fs::DirEntry) -> bool {
    e.file_type().is_ok_and(|t| t.is_dir())
}

/// Removes a file; whether it was there.
fn remove(path: &Path) -> Result<bool, MaintenanceError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MaintenanceError::Remove {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Decompresses and hashes a blob whose size is not known (no manifest names it); the
/// reason it is broken, if it is. `Ok` too when it is gone or cannot be opened: only
/// content that was read and is wrong counts as corrupt.
fn check_unnamed_blob(cas: &Cas, digest: &Digest) -> Result<(), String> {
    let file = match fs::File::open(cas.path(digest)) {
        Ok(f) => f,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("blob {digest} not checked: {e}");
            }
            return Ok(());
        }
    };
    let mut hasher = blake3::Hasher::new();
    zstd::stream::Decoder::new(file)
        .and_then(|mut d| io::copy(&mut d, &mut hasher))
        .map_err(|e| format!("blob {digest} cannot be decompressed: {e}"))?;
    let actual: Digest = hasher.finalize().into();
    if actual == *digest {
        Ok(())
    } else {
        Err(format!(
            "blob {digest} is corrupt: its content hashes to {actual}"
        ))
    }
}

impl LocalCache {
    /// Every manifest file under `ac/`, by namespace and key. Files whose names are not a
    /// namespace, a shard and a key (lowercase, in the right shard) are not entries, and
    /// are skipped.
    fn walk_entries(&self) -> Result<Vec<Found>, MaintenanceError> {
        let mut out = Vec::new();
        let ac = self.root().join("ac");
        for ns in list(&ac)?.unwrap_or_default() {
            let Some(namespace) = ns.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_dir(&ns) || !is_valid(&namespace) {
                continue;
            }
            for shard in list(&ns.path())?.unwrap_or_default() {
                let Some(shard_name) = shard.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !is_dir(&shard) {
                    continue;
                }
                for file in list(&shard.path())?.unwrap_or_default() {
                    let Some(name) = file.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    let Ok(key) = name.parse::<ActionKey>() else {
                        continue;
                    };
                    if key.to_string() != name || !name.starts_with(&shard_name) || is_dir(&file) {
                        continue;
                    }
                    // Gone meanwhile: not an entry any more.
                    let Ok(meta) = file.metadata() else { continue };
                    out.push(Found {
                        name: EntryName {
                            namespace: namespace.clone(),
                            key,
                        },
                        path: file.path(),
                        bytes: meta.len(),
                        mtime: meta.modified().map_or(0, unix),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every blob in the store, with its size on disk.
    fn walk_blobs(&self) -> Result<BTreeMap<Digest, u64>, MaintenanceError> {
        self.cas()
            .list()
            .map(|v| v.into_iter().collect())
            .map_err(|e| MaintenanceError::Walk {
                path: self.root().join("cas"),
                source: e,
            })
    }

    /// Reads and checks one manifest as [`LocalCache::lookup`] would (signer, identity,
    /// completeness), except that a foreign signer in a namespace other than the trusted
    /// one is accepted as intact if its signature holds. An I/O error is returned as such.
    fn check_entry(&self, found: &Found) -> io::Result<Checked> {
        let bytes = match fs::read(&found.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checked::Gone),
            Err(e) => return Err(e),
        };
        let ns = found.name.namespace.as_str();
        let mut foreign = false;
        let opened = match crate::manifest::open(&bytes, |k| self.accepts(ns, k)) {
            Ok(o) => o,
            Err(ManifestError::UntrustedSigner(_)) if ns != TRUSTED => {
                foreign = true;
                match crate::manifest::open(&bytes, |_| true) {
                    Ok(o) => o,
                    Err(e) => return Ok(Checked::Bad(error_chain(&e))),
                }
            }
            Err(e) => return Ok(Checked::Bad(error_chain(&e))),
        };
        Ok(match self.check_opened(ns, &found.name.key, opened) {
            Ok(entry) => {
                let mut blobs: Vec<Blob> = entry.manifest.blobs().collect();
                blobs.sort();
                blobs.dedup();
                Checked::Good { blobs, foreign }
            }
            Err(reason) => Checked::Bad(reason),
        })
    }

    /// What the cache holds: entries and bytes per namespace, blobs, counters and the hit
    /// ratio, entries in quarantine. Reads files and the index; changes nothing.
    pub fn stats(&self) -> Result<Stats, MaintenanceError> {
        let found = self.walk_entries()?;
        let blobs = self.walk_blobs()?;
        let (indexed, counters) = {
            let ix = self.index();
            let indexed: HashMap<(String, String), IndexedEntry> = ix
                .entries()?
                .into_iter()
                .map(|e| ((e.namespace.clone(), e.key.clone()), e))
                .collect();
            let counters = Counters {
                hits: ix.counter(Counter::Hits)?,
                misses: ix.counter(Counter::Misses)?,
                stores: ix.counter(Counter::Stores)?,
                quarantined: ix.counter(Counter::Quarantined)?,
            };
            (indexed, counters)
        };

        let mut namespaces: BTreeMap<String, NamespaceStats> = BTreeMap::new();
        // Namespace directories without entries are listed too.
        for ns in list(&self.root().join("ac"))?.unwrap_or_default() {
            if let Some(name) = ns.file_name().to_str() {
                if is_dir(&ns) && is_valid(name) {
                    namespaces.insert(name.to_owned(), NamespaceStats::new(name));
                }
            }
        }
        for f in &found {
            let ns = namespaces
                .entry(f.name.namespace.clone())
                .or_insert_with(|| NamespaceStats::new(&f.name.namespace));
            ns.entries += 1;
            ns.manifest_bytes += f.bytes;
            let mut last_used = f.mtime;
            if let Some(ix) = indexed.get(&(f.name.namespace.clone(), f.name.key.to_string())) {
                ns.indexed_entries += 1;
                ns.stored_bytes += ix.bytes;
                ns.hits += ix.hits;
                last_used = ix.last_used;
            }
            ns.last_used_unix = ns.last_used_unix.max(Some(last_used));
        }

        let in_quarantine = list(&self.root().join("quarantine"))?
            .unwrap_or_default()
            .iter()
            .filter(|e| is_dir(e))
            .count() as u64;
        let manifest_bytes = found.iter().map(|f| f.bytes).sum();
        let blob_bytes = blobs.values().sum();
        let lookups = counters.hits + counters.misses;
        Ok(Stats {
            namespaces: namespaces.into_values().collect(),
            entries: found.len() as u64,
            manifest_bytes,
            blobs: blobs.len() as u64,
            blob_bytes,
            bytes_on_disk: manifest_bytes + blob_bytes,
            counters,
            hit_ratio: (lookups > 0).then(|| counters.hits as f64 / lookups as f64),
            in_quarantine,
        })
    }

    /// Scrubs the whole cache: every manifest of every namespace is opened with the keys
    /// its namespace accepts (see the [module](self) on foreign signers) and checked for
    /// identity and completeness, and every blob it names is decompressed and hashed in
    /// full. What fails is quarantined with its reason, and a corrupt blob goes with it (so
    /// every other entry naming it is quarantined too: it is missing now). Blobs no
    /// manifest names are checked as well; corrupt ones are removed. Temporary files older
    /// than [`STALE_AFTER`] are removed from `tmp/`.
    ///
    /// A manifest that cannot be read (an I/O error, not a missing file) is listed in the
    /// report and left alone.
    pub fn verify_all(&self) -> Result<VerifyReport, MaintenanceError> {
        let mut report = VerifyReport::default();
        // Blobs checked: `None` intact, `Some(reason)` broken.
        let mut checked: HashMap<Digest, Option<String>> = HashMap::new();
        for found in self.walk_entries()? {
            let checked_entry = match self.check_entry(&found) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("cache entry {} unreadable: {e}", found.path.display());
                    report.unreadable.push(found.path);
                    continue;
                }
            };
            let (blobs, foreign) = match checked_entry {
                Checked::Gone => continue,
                Checked::Bad(reason) => {
                    report.entries_checked += 1;
                    report.quarantined.extend(self.quarantine(
                        &found.name.namespace,
                        &found.name.key,
                        &reason,
                        None,
                    ));
                    continue;
                }
                Checked::Good { blobs, foreign } => (blobs, foreign),
            };
            report.entries_checked += 1;
            let mut broken = None;
            for blob in &blobs {
                let verdict = checked.entry(blob.digest).or_insert_with(|| {
                    report.blobs_checked += 1;
                    self.cas().verify(blob).err().map(|e| error_chain(&e))
                });
                if let Some(reason) = verdict {
                    broken = Some((reason.clone(), blob.digest));
                    break;
                }
            }
            match broken {
                Some((reason, digest)) => {
                    report.quarantined.extend(self.quarantine(
                        &found.name.namespace,
                        &found.name.key,
                        &reason,
                        self.cas().contains(&digest).then_some(&digest),
                    ));
                }
                None => report.foreign += usize::from(foreign),
            }
        }

        for digest in self.walk_blobs()?.into_keys() {
            if checked.contains_key(&digest) {
                continue;
            }
            report.blobs_checked += 1;
            if let Err(reason) = check_unnamed_blob(self.cas(), &digest) {
                tracing::warn!("removing a corrupt blob no entry names: {reason}");
                if remove(&self.cas().path(&digest))? {
                    report.stray_blobs_removed += 1;
                }
            }
        }

        let cutoff = SystemTime::now()
            .checked_sub(STALE_AFTER)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for tmp in list(&self.root().join("tmp"))?.unwrap_or_default() {
            let Ok(meta) = tmp.metadata() else { continue };
            if meta.is_file() && meta.modified().is_ok_and(|t| t < cutoff) && remove(&tmp.path())? {
                report.temp_files_removed += 1;
            }
        }
        Ok(report)
    }

    /// Evicts least recently used entries until the manifests and blobs on disk take at
    /// most `max_bytes`, then removes every blob no remaining manifest names.
    ///
    /// Last use is the index's (last store or restore), else the manifest's modification
    /// time. Every manifest is checked first as [`LocalCache::lookup`] would (without
    /// hashing blobs: see [`LocalCache::verify_all`]); a broken one is quarantined and its
    /// blobs are not kept for it. If a manifest cannot be read, nothing is evicted or
    /// removed: the blobs it names are unknown. An entry is evicted by removing its
    /// manifest, then its index row; blobs are removed only after that, so a manifest that
    /// remains never names a removed blob. A blob no manifest named to begin with is
    /// removed only once older than [`STALE_AFTER`] (it may belong to a store under way).
    pub fn gc(&self, max_bytes: u64) -> Result<GcReport, MaintenanceError> {
        let found = self.walk_entries()?;
        let blobs = self.walk_blobs()?;
        let mut report = GcReport {
            bytes_before: found.iter().map(|f| f.bytes).sum::<u64>() + blobs.values().sum::<u64>(),
            ..GcReport::default()
        };

        // Mark: read everything before changing anything.
        let mut live = Vec::new();
        let mut broken = Vec::new();
        for f in found {
            match self.check_entry(&f) {
                Ok(Checked::Good { blobs, .. }) => live.push((f, blobs)),
                Ok(Checked::Bad(reason)) => broken.push((f, reason)),
                Ok(Checked::Gone) => {}
                Err(source) => {
                    return Err(MaintenanceError::Unreadable {
                        path: f.path,
                        source,
                    });
                }
            }
        }
        // A broken manifest keeps nothing alive: what it named is unnamed now, removed
        // once stale like any other unnamed blob.
        for (f, reason) in broken {
            report.quarantined.extend(self.quarantine(
                &f.name.namespace,
                &f.name.key,
                &reason,
                None,
            ));
        }
        let mut refs: HashMap<Digest, usize> = HashMap::new();
        for (_, bs) in &live {
            for b in bs {
                *refs.entry(b.digest).or_default() += 1;
            }
        }

        // Order: least recently used first.
        let last_used: HashMap<(String, String), u64> = match self.index().entries() {
            Ok(rows) => rows
                .into_iter()
                .map(|e| ((e.namespace, e.key), e.last_used))
                .collect(),
            Err(e) => {
                tracing::warn!("cache index unreadable, using manifest times: {e}");
                HashMap::new()
            }
        };
        let used = |f: &Found| {
            last_used
                .get(&(f.name.namespace.clone(), f.name.key.to_string()))
                .copied()
                .unwrap_or(f.mtime)
        };
        live.sort_by(|(a, _), (b, _)| (used(a), &a.name).cmp(&(used(b), &b.name)));

        // Plan: the bytes left once unnamed blobs are gone (young ones stay).
        let cutoff = unix(
            SystemTime::now()
                .checked_sub(STALE_AFTER)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let young = |d: &Digest| {
            fs::metadata(self.cas().path(d))
                .and_then(|m| m.modified())
                .is_ok_and(|t| unix(t) >= cutoff)
        };
        let size = |d: &Digest| blobs.get(d).copied().unwrap_or(0);
        let mut projected: u64 = live.iter().map(|(f, _)| f.bytes).sum::<u64>()
            + blobs
                .keys()
                .filter(|d| refs.contains_key(d) || young(d))
                .map(size)
                .sum::<u64>();
        // Blobs named only by entries evicted now: removable at once, however young.
        let mut released: HashSet<Digest> = HashSet::new();
        let mut evict = 0;
        while projected > max_bytes && evict < live.len() {
            let (f, bs) = &live[evict];
            projected -= f.bytes;
            for b in bs {
                let n = refs.get_mut(&b.digest).expect("counted above");
                *n -= 1;
                if *n == 0 {
                    projected -= size(&b.digest);
                    released.insert(b.digest);
                }
            }
            evict += 1;
        }

        // Evict: manifest first, then its index row.
        for (f, _) in live.drain(..evict) {
            remove(&f.path)?;
            self.note(|ix| ix.remove(&f.name.namespace, &f.name.key.to_string()));
            report.evicted.push(f.name);
        }

        // Sweep: blobs no remaining manifest names.
        for d in blobs.keys() {
            if refs.get(d).is_some_and(|n| *n > 0) {
                continue;
            }
            if !released.contains(d) && young(d) {
                report.young_blobs_kept += 1;
                continue;
            }
            if remove(&self.cas().path(d))? {
                report.blobs_removed += 1;
            }
        }

        report.bytes_after = self.walk_entries()?.iter().map(|f| f.bytes).sum::<u64>()
            + self.walk_blobs()?.values().sum::<u64>();
        Ok(report)
    }
}

impl NamespaceStats {
    fn new(name: &str) -> NamespaceStats {
        NamespaceStats {
            name: name.to_owned(),
            entries: 0,
            manifest_bytes: 0,
            stored_bytes: 0,
            indexed_entries: 0,
            hits: 0,
            last_used_unix: None,
        }
    }
}
