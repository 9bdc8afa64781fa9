//! The service's storage: entries as files under a SQLite index, a size cap with
//! least-recently-used eviction, and a scrub.
//!
//! ```text
//! DIR/lock                       held (flock) by the one service using DIR
//! DIR/index.sqlite               size and last use of every entry, evictions per space
//! DIR/tmp/                       entries being written; emptied on open
//! DIR/data/SPACE/KIND/KK/KEY     committed entries (KIND `ac` or `cas`, KK: KEY's first two
//!                                characters)
//! DIR/quarantine/TIME-PID-N/     what failed a scrub or did not belong in data/: the file
//!                                (`entry`) and why (`reason`)
//! ```
//!
//! A space is a team's namespace plus a protocol (`team-a/bazel`); a key names an entry in a
//! space. Both are checked ([`NameError`]) before they come near a path.
//!
//! # Crash safety
//!
//! An entry is written to a temporary file in `tmp/`, flushed with `fsync`, renamed to its
//! name in `data/`, its directory is flushed with `fsync`, and only then is its index row
//! written (one SQLite transaction, with any evictions it causes). A reader opens the file
//! under its real name, which only ever holds a complete entry: a concurrent commit of the
//! same key replaces the name, not the content of the file a reader has open. Renames,
//! index writes and removals happen under one lock, so the last commit of a key wins and the
//! index row always describes the file under that name.
//!
//! The files are the truth and the index can be rebuilt from them. On open, after a crash
//! or not, the store reconciles the two:
//! - a file in `tmp/` is a write that never committed: removed;
//! - an index row whose file is missing (a crash while removing, or an outside hand) is
//!   dropped; at run time such a row is a miss and is dropped the same way;
//! - an index row whose file has another size (a crash between replacing an entry's file and
//!   updating its row) takes the file's size: files only ever arrive whole;
//! - a file in `data/` without a row (a crash between the rename and the index write) is
//!   **adopted**, with its modification time as last use. It was complete and flushed
//!   before it got its name, so it is as good as any entry; removing it would throw away
//!   the very entries that the choice of `synchronous` below relies on recovering;
//! - a file in `data/` that names no entry is moved to quarantine.
//!
//! Then the file system is flushed (`syncfs`), so that nothing the previous run left in the
//! page cache (a directory it created, say) can still be lost, and the store evicts to its
//! cap (which may have been lowered).
//!
//! The index runs in WAL mode with `synchronous = NORMAL`. A committed transaction then
//! survives the death of the process at any point (kill -9 included): its WAL frames are in
//! the operating system's hands when `COMMIT` returns. Only an operating-system crash or a
//! power loss can roll back the last transactions (never corrupt the database), and what
//! they held is recovered from the files on the next open, above: an entry's file is
//! `fsync`ed, and so is its directory, before its row is written. `FULL` would add an
//! `fsync` of the WAL to every commit and to every hit's last-use update, for a guarantee
//! the files already give.
//!
//! # Eviction
//!
//! The store holds at most its cap in bytes. A commit that goes over evicts, least recently
//! used first, ordered by `(last use, kind)` with action results before blobs, then by order
//! of use. Last use is kept in whole seconds, so an action result goes no later than the
//! blobs used in the same second. An action result must not outlive the blobs it points at:
//! clients upload a step's blobs and then its action result, and read the action result and
//! then its blobs, and a GET of an action result refreshes nothing else; ordering by last
//! use alone would evict a step's blobs (used a moment earlier) before its action result, and
//! leave results that point at nothing. This holds in the common case (a step's uploads and
//! reads within the same second), not always: the store does not read action results to
//! learn which blobs they point at. [`Store::missing`] counts as a use of the blobs it
//! finds, as remote-execution clients expect: they check blobs, upload the rest, and then
//! upload a result that points at all of them.
//!
//! The entry just committed is never its own victim: an entry larger than the cap is
//! refused ([`StoreError::TooLarge`]), so there is always room for it once the others are
//! gone.
//!
//! # Concurrency
//!
//! [`Store`] is `Send + Sync` and meant to be shared (`Arc`) by threads; every call blocks
//! (file I/O, SQLite), so async code calls it from `spawn_blocking`. One SQLite connection
//! sits behind a mutex, which also serializes renames and removals in `data/`. Writing an
//! entry's bytes and flushing them happen outside the lock; the rename, the `fsync` of its
//! directory and the index transaction inside it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read as _, Write};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

/// Longest space and key, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// Version of the index's schema (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// What an entry is: an action result (small, points at blobs) or a content-addressed blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An action result.
    Ac,
    /// A content-addressed blob.
    Cas,
}

impl Kind {
    /// Its name in paths: `ac` or `cas`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ac => "ac",
            Kind::Cas => "cas",
        }
    }

    /// The kind named `name` (`ac` or `cas`).
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "ac" => Some(Kind::Ac),
            "cas" => Some(Kind::Cas),
            _ => None,
        }
    }

    /// Its code in the index. Action results sort first: they are evicted first.
    fn code(self) -> i64 {
        match self {
            Kind::Ac => 0,
            Kind::Cas => 1,
        }
    }

    fn from_code(code: i64) -> Option<Kind> {
        match code {
            0 => Some(Kind::Ac),
            1 => Some(Kind::Cas),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A space or key that cannot name an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {name:?} {reason}")]
pub struct NameError {
    /// `space` or `key`.
    pub what: &'static str,
    /// The name (its first 64 characters).
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A file or directory of the store could not be made, read or changed.
    #[error("cannot use {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process serves the same directory.
    #[error("{} is in use by another cache service", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The index could not be opened, made or reconciled.
    #[error("cannot use the index {}", path.display())]
    Db {
        /// The index.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The index was written by a newer version.
    #[error("the index {} has schema version {found}; this version reads {SCHEMA_VERSION}", path.display())]
    Version {
        /// The index.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
}

/// Why an operation on the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The space or key cannot name an entry (a client's mistake).
    #[error("bad entry name")]
    BadName(#[source] NameError),
    /// The entry is larger than the whole store may hold.
    #[error("an entry of {size} bytes does not fit in a store of {cap} bytes")]
    TooLarge {
        /// The entry's size (so far, when refused while being written).
        size: u64,
        /// The store's cap.
        cap: u64,
    },
    /// A file of the store could not be read or written.
    #[error("cannot use {}", path.display())]
    Io {
        /// The file, directory or entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The index failed.
    #[error("the cache index failed")]
    Db(#[from] rusqlite::Error),
}

impl StoreError {
    /// An I/O failure about `what` (a path, or the space an entry was read from).
    pub fn from_io(what: impl AsRef<Path>, source: io::Error) -> StoreError {
        StoreError::Io {
            path: what.as_ref().to_path_buf(),
            source,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::from_io(path, source)
}

fn open_io(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The entry's size in bytes.
    pub size: u64,
    /// Whether it replaced an entry of the same key.
    pub replaced: bool,
    /// Entries evicted to make room.
    pub evicted: u64,
}

/// Entries, bytes and evictions of one space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// The space.
    pub space: String,
    /// Entries of both kinds.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Action results.
    pub ac_entries: u64,
    /// Their bytes.
    pub ac_bytes: u64,
    /// Blobs.
    pub cas_entries: u64,
    /// Their bytes.
    pub cas_bytes: u64,
    /// Entries evicted from the space, over the store's life.
    pub evictions: u64,
}

/// What a scrub found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Entries read and verified.
    pub checked: u64,
    /// Entries that failed (or had the wrong size), now in quarantine.
    pub quarantined: u64,
    /// Entries whose file was missing, dropped from the index.
    pub missing: u64,
    /// Entries replaced or removed while they were being checked (left alone).
    pub changed: u64,
}

/// What the last open found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temporary files of writes that never committed, removed.
    pub temp_files: u64,
    /// Entry files without an index row, adopted.
    pub adopted: u64,
    /// Index rows whose file was missing, dropped.
    pub dropped: u64,
    /// Index rows whose size was not their file's, corrected.
    pub resized: u64,
    /// Files in `data/` that name no entry, moved to quarantine.
    pub strays: u64,
    /// Entries evicted to bring the store under its cap.
    pub evicted: u64,
}

/// Checks a space: 1–128 characters of `A-Z a-z 0-9 . _ - /`, `/`-separated components
/// that are not empty, `.`, `..`, `ac` or `cas` (those name the kind directories below a
/// space: `a/ac/ab` could otherwise be both a space and a directory of space `a`).
pub fn check_space(space: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError {
            what: "space",
            name: space.chars().take(64).collect(),
            reason,
        })
    };
    if space.is_empty() {
        return bad("is empty");
    }
    if !space
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return bad("may hold only letters, digits, `.`, `_`, `-` and `/`");
    }
    if space.len() > MAX_NAME_LEN {
        return bad("is longer than 128 characters");
    }
    if space.starts_with('/') {
        return bad("starts with `/`");
    }
    for part in space.split('/') {
        match part {
            "" => return bad("has an empty component"),
            "." | ".." => return bad("has a `.` or `..` component"),
            "ac" | "cas" => return bad("has a component `ac` or `cas`, which name entry kinds"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a key: 1–128 characters of `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub fn check_key(key: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError {
            what: "key",
            name: key.chars().take(64).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("is empty");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("may hold only letters, digits, `.`, `_` and `-`");
    }
    if key.len() > MAX_NAME_LEN {
        return bad("is longer than 128 characters");
    }
    if key.starts_with('.') {
        return bad("starts with `.`");
    }
    Ok(())
}

fn check(space: &str, key: &str) -> Result<(), StoreError> {
    check_space(space).map_err(StoreError::BadName)?;
    check_key(key).map_err(StoreError::BadName)
}

/// The directory of a key's entries within its kind: its first two characters.
fn shard(key: &str) -> &str {
    key.get(..2).unwrap_or(key)
}

/// An entry's path below `data/`.
fn rel_path(space: &str, kind: Kind, key: &str) -> PathBuf {
    let mut p = PathBuf::from(space);
    p.push(kind.name());
    p.push(shard(key));
    p.push(key);
    p
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Flushes a directory's entries to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `rel` (and its parents) below `base`, flushing the parent of every directory it
/// creates, so that an entry renamed into it is reachable after a power loss.
fn create_dirs(base: &Path, rel: &Path) -> io::Result<()> {
    let mut dir = base.to_path_buf();
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens an entry's file for reading, not following a symbolic link.
fn open_entry(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The index and what is kept beside it, behind the store's lock.
#[derive(Debug)]
struct Inner {
    db: Connection,
    /// Bytes of all indexed entries.
    total: u64,
    /// The last order-of-use number handed out.
    seq: i64,
    /// Uses by hits not yet written to the index: (space, kind code, key, time, seq).
    /// A hit is the hot path; its last use is written with others, in one transaction,
    /// at most [`USE_FLUSH_EVERY`] later, and before anything reads the order (eviction,
    /// a commit). A crash loses at most that much of the LRU order, never an entry.
    uses: Vec<(String, i64, String, i64, i64)>,
    /// When `uses` was last written.
    flushed_at: std::time::Instant,
}

/// How long hits' last uses wait before they are written to the index.
const USE_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How many hits' last uses wait at most before they are written.
const USE_FLUSH_AT: usize = 4096;

impl Inner {
    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    /// Writes the pending last uses in one transaction.
    fn flush_uses(&mut self) -> Result<(), rusqlite::Error> {
        if self.uses.is_empty() {
            return Ok(());
        }
        let tx = self.db.transaction()?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE entries SET last_use = max(last_use, ?4), seq = max(seq, ?5)
                 WHERE space = ?1 AND kind = ?2 AND key = ?3",
            )?;
            for (space, kind, key, now, seq) in &self.uses {
                update.execute(params![space, kind, key, now, seq])?;
            }
        }
        tx.commit()?;
        self.uses.clear();
        self.flushed_at = std::time::Instant::now();
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A clean stop keeps the order of use of the last hits.
        if let Ok(mut inner) = self.inner.lock() {
            let _ = inner.flush_uses();
        }
    }
}

/// The entries of the team cache service under one directory.
pub struct Store {
    dir: PathBuf,
    data: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    cap: u64,
    inner: Mutex<Inner>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    recovery: Recovery,
    /// Holds the directory's lock while the store is open.
    _lock: File,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

// What the service relies on: one store shared by threads, writers handed between them.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    const fn sent<T: Send>() {}
    shared::<Store>();
    sent::<EntryWriter<'static>>();
};

/// A quarantine directory's unique suffix within this process.
static QUARANTINED: AtomicU64 = AtomicU64::new(0);

/// One row of the index, as the reconciliation and the scrub walk them.
struct Row {
    space: String,
    kind: i64,
    key: String,
    size: u64,
}

impl Store {
    /// Opens (creating) a store in `dir` holding at most `cap_bytes` of entries.
    pub fn open(dir: &Path, cap_bytes: u64) -> Result<Store, OpenError> {
        Store::open_with_clock(dir, cap_bytes, system_now)
    }

    /// [`Store::open`] with the clock of last use (seconds): for tests and simulations.
    pub fn open_with_clock(
        dir: &Path,
        cap_bytes: u64,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<Store, OpenError> {
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        let quarantine = dir.join("quarantine");
        for d in [dir, &data, &tmp, &quarantine] {
            fs::create_dir_all(d).map_err(open_io(d))?;
        }
        let lock = take_lock(dir)?;
        let mut recovery = Recovery {
            temp_files: clear_dir(&tmp).map_err(open_io(&tmp))?,
            ..Recovery::default()
        };
        let db_path = dir.join("index.sqlite");
        let db_err = |source| OpenError::Db {
            path: db_path.clone(),
            source,
        };
        let mut db = open_db(&db_path)?;
        let tx = db.transaction().map_err(db_err)?;
        reconcile(&tx, &data, &quarantine, &db_path, clock(), &mut recovery)?;
        let (total, seq): (i64, i64) = tx
            .query_row(
                "SELECT COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db_err)?;
        let mut total = to_u64(total);
        recovery.evicted = evict(&tx, &data, &mut total, cap_bytes, None).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        sync_fs(dir).map_err(open_io(dir))?;
        if recovery != Recovery::default() {
            tracing::info!(
                dir = %dir.display(),
                temp_files = recovery.temp_files,
                adopted = recovery.adopted,
                dropped = recovery.dropped,
                resized = recovery.resized,
                strays = recovery.strays,
                evicted = recovery.evicted,
                "cache store recovered"
            );
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            data,
            tmp,
            quarantine,
            cap: cap_bytes,
            inner: Mutex::new(Inner {
                db,
                total,
                seq,
                uses: Vec::new(),
                flushed_at: std::time::Instant::now(),
            }),
            clock: Box::new(clock),
            recovery,
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The most bytes of entries it holds.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes of all entries now.
    pub fn used_bytes(&self) -> u64 {
        self.lock().total
    }

    /// What opening the store found and repaired.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The entry's file and size, or None; a hit updates its last use.
    pub fn get(
        &self,
        space: &str,
        kind: Kind,
        key: &str,
    ) -> Result<Option<(File, u64)>, StoreError> {
        check(space, key)?;
        let path = self.data.join(rel_path(space, kind, key));
        let mut inner = self.lock();
        let Some(size) = row_size(&inner.db, space, kind, key)? else {
            return Ok(None);
        };
        let file = match open_entry(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                forget(&mut inner, space, kind, key, size)?;
                return Ok(None);
            }
            Err(e) => return Err(StoreError::from_io(&path, e)),
        };
        let meta = file.metadata().map_err(io_at(&path))?;
        if !meta.is_file() || meta.len() != size {
            self.quarantine_locked(
                &mut inner,
                space,
                kind,
                key,
                size,
                "its size is not the indexed size",
            )?;
            return Ok(None);
        }
        let now = to_i64((self.clock)());
        let seq = inner.next_seq();
        inner
            .uses
            .push((space.to_string(), kind.code(), key.to_string(), now, seq));
        if inner.uses.len() >= USE_FLUSH_AT || inner.flushed_at.elapsed() >= USE_FLUSH_EVERY {
            inner.flush_uses()?;
        }
        Ok(Some((file, size)))
    }

    /// Whether the entry exists, and its size (its last use is left alone).
    pub fn head(&self, space: &str, kind: Kind, key: &str) -> Result<Option<u64>, StoreError> {
        check(space, key)?;
        let path = self.data.join(rel_path(space, kind, key));
        let mut inner = self.lock();
        let Some(size) = row_size(&inner.db, space, kind, key)? else {
            return Ok(None);
        };
        self.confirm(&mut inner, space, kind, key, size, &path)
            .map(|ok| ok.then_some(size))
    }

    /// Which of `keys` are missing, in their order (one index query). The ones present count
    /// as used: a client that checks blobs and then uploads an action result pointing at them
    /// must not see them evicted before the result.
    pub fn missing(
        &self,
        space: &str,
        kind: Kind,
        keys: &[String],
    ) -> Result<Vec<String>, StoreError> {
        check_space(space).map_err(StoreError::BadName)?;
        for key in keys {
            check_key(key).map_err(StoreError::BadName)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // A JSON array for `json_each`: checked keys hold no character JSON would escape.
        let list = format!("[\"{}\"]", keys.join("\",\""));
        let mut inner = self.lock();
        let found: Vec<(String, i64)> = inner
            .db
            .prepare_cached(
                "SELECT key, size FROM entries
                 WHERE space = ?1 AND kind = ?2 AND key IN (SELECT value FROM json_each(?3))",
            )?
            .query_map(params![space, kind.code(), list], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut present = HashMap::with_capacity(found.len());
        for (key, size) in found {
            let size = to_u64(size);
            let path = self.data.join(rel_path(space, kind, &key));
            if self.confirm(&mut inner, space, kind, &key, size, &path)? {
                present.insert(key, size);
            }
        }
        if !present.is_empty() {
            let now = to_i64((self.clock)());
            let seq = inner.next_seq();
            inner
                .db
                .prepare_cached(
                    "UPDATE entries SET last_use = max(last_use, ?4), seq = ?5
                     WHERE space = ?1 AND kind = ?2 AND key IN (SELECT value FROM json_each(?3))",
                )?
                .execute(params![space, kind.code(), list, now, seq])?;
        }
        Ok(keys
            .iter()
            .filter(|k| !present.contains_key(k.as_str()))
            .cloned()
            .collect())
    }

    /// A writer for a new entry: bytes go to a temporary file in the store's directory;
    /// [`EntryWriter::commit`] flushes it, renames it into place and indexes it (replacing
    /// an existing entry), then evicts to the cap; dropping it without a commit removes the
    /// temporary file.
    pub fn writer(
        &self,
        space: &str,
        kind: Kind,
        key: &str,
    ) -> Result<EntryWriter<'_>, StoreError> {
        self.new_writer(StoreRef::Borrowed(self), space, kind, key)
    }

    /// [`Store::writer`] holding a reference count of the store, to be moved between tasks.
    pub fn shared_writer(
        self: &Arc<Store>,
        space: &str,
        kind: Kind,
        key: &str,
    ) -> Result<EntryWriter<'static>, StoreError> {
        self.new_writer(StoreRef::Shared(Arc::clone(self)), space, kind, key)
    }

    fn new_writer<'a>(
        &self,
        store: StoreRef<'a>,
        space: &str,
        kind: Kind,
        key: &str,
    ) -> Result<EntryWriter<'a>, StoreError> {
        check(space, key)?;
        let tmp = self.tmp.join(crate::cas::temp_name("entry"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        Ok(EntryWriter {
            store,
            space: space.to_string(),
            kind,
            key: key.to_string(),
            file: BufWriter::with_capacity(64 * 1024, file),
            tmp,
            armed: true,
            written: 0,
        })
    }

    /// Puts the flushed temporary file `tmp` of `size` bytes in place and indexes it.
    fn install(
        &self,
        space: &str,
        kind: Kind,
        key: &str,
        tmp: &Path,
        size: u64,
    ) -> Result<CommitInfo, StoreError> {
        let rel = rel_path(space, kind, key);
        let dest = self.data.join(&rel);
        let parent = dest.parent().unwrap_or(&self.data).to_path_buf();
        let mut inner = self.lock();
        // Under the lock: a directory that exists was flushed into its parent by whoever
        // made it, before this commit can rely on it.
        create_dirs(&self.data, rel.parent().unwrap_or(Path::new(""))).map_err(io_at(&parent))?;
        fs::rename(tmp, &dest).map_err(io_at(&dest))?;
        let indexed = sync_dir(&parent)
            .map_err(io_at(&parent))
            .and_then(|()| self.index_new(&mut inner, space, kind, key, size));
        if indexed.is_err() {
            // A file without a (matching) row would be adopted or quarantined later; an
            // absent file is a plain miss.
            let _ = fs::remove_file(&dest);
        }
        indexed
    }

    /// The index transaction of a commit: the row, then evictions.
    fn index_new(
        &self,
        inner: &mut Inner,
        space: &str,
        kind: Kind,
        key: &str,
        size: u64,
    ) -> Result<CommitInfo, StoreError> {
        // Eviction reads the order of use: what hits did must be in it.
        inner.flush_uses()?;
        let now = to_i64((self.clock)());
        let seq = inner.next_seq();
        let tx = inner.db.transaction()?;
        let old = row_size(&tx, space, kind, key)?;
        tx.prepare_cached(
            "INSERT INTO entries (space, kind, key, size, last_use, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (space, kind, key) DO UPDATE SET size = ?4, last_use = ?5, seq = ?6",
        )?
        .execute(params![space, kind.code(), key, to_i64(size), now, seq])?;
        let mut total = (inner.total - old.unwrap_or(0).min(inner.total)).saturating_add(size);
        let evicted = evict(
            &tx,
            &self.data,
            &mut total,
            self.cap,
            Some((space, kind, key)),
        )?;
        tx.commit()?;
        inner.total = total;
        Ok(CommitInfo {
            size,
            replaced: old.is_some(),
            evicted,
        })
    }

    /// Removes an entry; whether there was one.
    pub fn delete(&self, space: &str, kind: Kind, key: &str) -> Result<bool, StoreError> {
        check(space, key)?;
        let path = self.data.join(rel_path(space, kind, key));
        let mut inner = self.lock();
        let size = row_size(&inner.db, space, kind, key)?;
        // The file first: a crash in between leaves a row without a file, which is a miss.
        let had_file = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::from_io(&path, e)),
        };
        if let Some(size) = size {
            forget(&mut inner, space, kind, key, size)?;
        }
        Ok(size.is_some() || had_file)
    }

    /// Entries, bytes and evictions per space, by space.
    pub fn stats(&self) -> Result<Vec<SpaceStats>, StoreError> {
        let inner = self.lock();
        let mut by_space: BTreeMap<String, SpaceStats> = BTreeMap::new();
        let mut stmt = inner.db.prepare_cached(
            "SELECT space, kind, COUNT(*), COALESCE(SUM(size), 0) FROM entries
             GROUP BY space, kind",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (space, kind, entries, bytes) = row?;
            let (entries, bytes) = (to_u64(entries), to_u64(bytes));
            let s = by_space.entry(space.clone()).or_insert_with(|| SpaceStats {
                space,
                ..SpaceStats::default()
            });
            s.entries += entries;
            s.bytes += bytes;
            match Kind::from_code(kind) {
                Some(Kind::Ac) => (s.ac_entries, s.ac_bytes) = (entries, bytes),
                Some(Kind::Cas) => (s.cas_entries, s.cas_bytes) = (entries, bytes),
                None => {}
            }
        }
        drop(stmt);
        let mut stmt = inner
            .db
            .prepare_cached("SELECT space, evictions FROM spaces")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (space, evictions) = row?;
            by_space
                .entry(space.clone())
                .or_insert_with(|| SpaceStats {
                    space,
                    ..SpaceStats::default()
                })
                .evictions = to_u64(evictions);
        }
        Ok(by_space.into_values().collect())
    }

    /// Re-verifies every entry with `verify(space, kind, key, bytes)`. Entries that fail, or
    /// whose file has the wrong size, are moved to quarantine and dropped from the index;
    /// rows whose file is missing are dropped. Entries are read one at a time, outside the
    /// lock: the service keeps serving meanwhile, and an entry replaced while it was being
    /// checked is left alone.
    pub fn scrub(
        &self,
        verify: impl Fn(&str, Kind, &str, &[u8]) -> bool,
    ) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let mut after: Option<(String, i64, String)> = None;
        loop {
            let page = {
                let inner = self.lock();
                rows_after(&inner.db, after.as_ref(), 256)?
            };
            let Some(last) = page.last() else { break };
            after = Some((last.space.clone(), last.kind, last.key.clone()));
            for row in page {
                let Some(kind) = Kind::from_code(row.kind) else {
                    continue;
                };
                self.scrub_one(&row.space, kind, &row.key, &verify, &mut report)?;
            }
        }
        Ok(report)
    }

    fn scrub_one(
        &self,
        space: &str,
        kind: Kind,
        key: &str,
        verify: &impl Fn(&str, Kind, &str, &[u8]) -> bool,
        report: &mut ScrubReport,
    ) -> Result<(), StoreError> {
        let path = self.data.join(rel_path(space, kind, key));
        // Read and verify without the lock, then judge under it.
        let read = match open_entry(&path) {
            Ok(mut file) => {
                let meta = file.metadata().map_err(io_at(&path))?;
                let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
                file.read_to_end(&mut bytes).map_err(io_at(&path))?;
                let ok = verify(space, kind, key, &bytes);
                Some(((meta.dev(), meta.ino()), bytes.len() as u64, ok))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::from_io(&path, e)),
        };
        let mut inner = self.lock();
        let Some(size) = row_size(&inner.db, space, kind, key)? else {
            report.changed += 1;
            return Ok(());
        };
        let now_at = match fs::symlink_metadata(&path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::from_io(&path, e)),
        };
        match (read, now_at) {
            (None, None) => {
                forget(&mut inner, space, kind, key, size)?;
                report.missing += 1;
            }
            (Some((id, len, ok)), Some(now_id)) if id == now_id => {
                report.checked += 1;
                if !ok || len != size {
                    let reason = if ok {
                        "its size is not the indexed size"
                    } else {
                        "it failed verification"
                    };
                    self.quarantine_locked(&mut inner, space, kind, key, size, reason)?;
                    report.quarantined += 1;
                }
            }
            _ => report.changed += 1,
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held rolled back its open transaction (rusqlite's
        // `Transaction` does so on drop); what is left is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an indexed entry's file is there with its size; drops the row (missing file)
    /// or quarantines the file (wrong size) when not.
    fn confirm(
        &self,
        inner: &mut Inner,
        space: &str,
        kind: Kind,
        key: &str,
        size: u64,
        path: &Path,
    ) -> Result<bool, StoreError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.len() == size => Ok(true),
            Ok(_) => {
                self.quarantine_locked(
                    inner,
                    space,
                    kind,
                    key,
                    size,
                    "its size is not the indexed size",
                )?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                forget(inner, space, kind, key, size)?;
                Ok(false)
            }
            Err(e) => Err(StoreError::from_io(path, e)),
        }
    }

    /// Moves an entry's file to quarantine with `reason` and drops its row.
    fn quarantine_locked(
        &self,
        inner: &mut Inner,
        space: &str,
        kind: Kind,
        key: &str,
        size: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let src = self.data.join(rel_path(space, kind, key));
        let note = format!("space {space}\nkind {kind}\nkey {key}\nreason {reason}\n");
        quarantine_file(&self.quarantine, &src, &note)
            .map_err(|(path, source)| StoreError::Io { path, source })?;
        tracing::warn!(
            space,
            kind = kind.name(),
            key,
            reason,
            "cache entry quarantined"
        );
        forget(inner, space, kind, key, size)
    }
}

/// Brings index and files into agreement (see the module's documentation).
fn reconcile(
    tx: &Transaction<'_>,
    data: &Path,
    quarantine: &Path,
    db_path: &Path,
    now: u64,
    recovery: &mut Recovery,
) -> Result<(), OpenError> {
    let db_err = |source| OpenError::Db {
        path: db_path.to_path_buf(),
        source,
    };
    // Rows against files.
    let mut after: Option<(String, i64, String)> = None;
    loop {
        let page = rows_after(tx, after.as_ref(), 512).map_err(db_err)?;
        let Some(last) = page.last() else { break };
        after = Some((last.space.clone(), last.kind, last.key.clone()));
        for row in page {
            let on_disk = Kind::from_code(row.kind)
                .filter(|_| check(&row.space, &row.key).is_ok())
                .map(|kind| data.join(rel_path(&row.space, kind, &row.key)));
            let meta = match &on_disk {
                None => None,
                Some(path) => match fs::symlink_metadata(path) {
                    Ok(m) if m.is_file() => Some(m),
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(open_io(path)(e)),
                },
            };
            match meta {
                None => {
                    tx.execute(
                        "DELETE FROM entries WHERE space = ?1 AND kind = ?2 AND key = ?3",
                        params![row.space, row.kind, row.key],
                    )
                    .map_err(db_err)?;
                    recovery.dropped += 1;
                }
                Some(m) if m.len() != row.size => {
                    tx.execute(
                        "UPDATE entries SET size = ?4 WHERE space = ?1 AND kind = ?2 AND key = ?3",
                        params![row.space, row.kind, row.key, to_i64(m.len())],
                    )
                    .map_err(db_err)?;
                    recovery.resized += 1;
                }
                Some(_) => {}
            }
        }
    }
    // Files against rows.
    let mut seq: i64 = tx
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM entries", [], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    let mut stack = vec![(data.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, parts)) = stack.pop() {
        let listing = fs::read_dir(&dir).map_err(open_io(&dir))?;
        for item in listing {
            let item = item.map_err(open_io(&dir))?;
            let path = item.path();
            let ft = item.file_type().map_err(open_io(&path))?;
            let name = item.file_name().into_string().ok();
            let mut rel = parts.clone();
            if let Some(n) = &name {
                rel.push(n.clone());
            }
            if ft.is_dir() && name.is_some() {
                stack.push((path, rel));
                continue;
            }
            let entry = if ft.is_file() && name.is_some() {
                parse_rel(&rel)
            } else {
                None
            };
            let Some((space, kind, key)) = entry else {
                let note = format!(
                    "stray file {} found in the data directory\n",
                    path.display()
                );
                quarantine_file(quarantine, &path, &note)
                    .map_err(|(path, source)| OpenError::Io { path, source })?;
                tracing::warn!(path = %path.display(), "stray file in the cache store quarantined");
                recovery.strays += 1;
                continue;
            };
            if row_size(tx, &space, kind, &key).map_err(db_err)?.is_some() {
                continue;
            }
            let meta = item.metadata().map_err(open_io(&path))?;
            let last_use = to_u64(meta.mtime()).min(now);
            seq += 1;
            tx.execute(
                "INSERT INTO entries (space, kind, key, size, last_use, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    space,
                    kind.code(),
                    key,
                    to_i64(meta.len()),
                    to_i64(last_use),
                    seq
                ],
            )
            .map_err(db_err)?;
            recovery.adopted += 1;
        }
    }
    Ok(())
}

/// Moves `src` to a new quarantine directory as `entry`, with `note` as `reason`.
fn quarantine_file(quarantine: &Path, src: &Path, note: &str) -> Result<(), (PathBuf, io::Error)> {
    let dir = quarantine.join(format!(
        "{}-{}-{}",
        system_now(),
        std::process::id(),
        QUARANTINED.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
    match fs::rename(src, dir.join("entry")) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err((src.to_path_buf(), e)),
    }
    fs::write(dir.join("reason"), note).map_err(|e| (dir, e))
}

/// An entry's `(space, kind, key)` from its path components below `data/`.
fn parse_rel(parts: &[String]) -> Option<(String, Kind, String)> {
    let [space @ .., kind, shard_dir, key] = parts else {
        return None;
    };
    let kind = Kind::from_name(kind)?;
    let space = space.join("/");
    if check(&space, key).is_err() || shard(key) != shard_dir {
        return None;
    }
    Some((space, kind, key.clone()))
}

/// The size an entry's row records.
fn row_size(
    db: &Connection,
    space: &str,
    kind: Kind,
    key: &str,
) -> Result<Option<u64>, rusqlite::Error> {
    db.prepare_cached("SELECT size FROM entries WHERE space = ?1 AND kind = ?2 AND key = ?3")?
        .query_row(params![space, kind.code(), key], |r| r.get::<_, i64>(0))
        .optional()
        .map(|s| s.map(to_u64))
}

/// Up to `limit` rows after `after`, in key order.
fn rows_after(
    db: &Connection,
    after: Option<&(String, i64, String)>,
    limit: i64,
) -> Result<Vec<Row>, rusqlite::Error> {
    let (space, kind, key) = after.map_or(("", i64::MIN, ""), |(s, k, key)| (s, *k, key));
    db.prepare_cached(
        "SELECT space, kind, key, size FROM entries WHERE (space, kind, key) > (?1, ?2, ?3)
         ORDER BY space, kind, key LIMIT ?4",
    )?
    .query_map(params![space, kind, key, limit], |r| {
        Ok(Row {
            space: r.get(0)?,
            kind: r.get(1)?,
            key: r.get(2)?,
            size: to_u64(r.get(3)?),
        })
    })?
    .collect()
}

/// Drops an entry's row (its file is gone or moved).
fn forget(
    inner: &mut Inner,
    space: &str,
    kind: Kind,
    key: &str,
    size: u64,
) -> Result<(), StoreError> {
    let n = inner
        .db
        .prepare_cached("DELETE FROM entries WHERE space = ?1 AND kind = ?2 AND key = ?3")?
        .execute(params![space, kind.code(), key])?;
    if n > 0 {
        inner.total = inner.total.saturating_sub(size);
    }
    Ok(())
}

/// Evicts entries, least recently used first and action results before blobs of the same
/// second, until `total` is within `cap`; never `keep`. Files are removed before the
/// transaction commits: a crash in between leaves rows without files, which are misses.
fn evict(
    tx: &Transaction<'_>,
    data: &Path,
    total: &mut u64,
    cap: u64,
    keep: Option<(&str, Kind, &str)>,
) -> Result<u64, rusqlite::Error> {
    let (keep_space, keep_kind, keep_key) =
        keep.map_or(("", -1, ""), |(s, k, key)| (s, k.code(), key));
    let mut evicted = 0;
    while *total > cap {
        let victims: Vec<Row> = tx
            .prepare_cached(
                "SELECT space, kind, key, size FROM entries
                 WHERE NOT (space = ?1 AND kind = ?2 AND key = ?3)
                 ORDER BY last_use, kind, seq LIMIT 64",
            )?
            .query_map(params![keep_space, keep_kind, keep_key], |r| {
                Ok(Row {
                    space: r.get(0)?,
                    kind: r.get(1)?,
                    key: r.get(2)?,
                    size: to_u64(r.get(3)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        if victims.is_empty() {
            break;
        }
        for v in victims {
            if *total <= cap {
                break;
            }
            if let Some(kind) = Kind::from_code(v.kind) {
                let path = data.join(rel_path(&v.space, kind, &v.key));
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Left behind, it is adopted (and counted) again on the next open.
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove an evicted cache entry")
                    }
                }
            }
            tx.prepare_cached("DELETE FROM entries WHERE space = ?1 AND kind = ?2 AND key = ?3")?
                .execute(params![v.space, v.kind, v.key])?;
            tx.prepare_cached(
                "INSERT INTO spaces (space, evictions) VALUES (?1, 1)
                 ON CONFLICT (space) DO UPDATE SET evictions = evictions + 1",
            )?
            .execute(params![v.space])?;
            *total = total.saturating_sub(v.size);
            evicted += 1;
        }
    }
    Ok(evicted)
}

/// Takes the store directory's lock: one service per directory, so that what `tmp/` holds
/// at open is only ever left over.
fn take_lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(open_io(&path))?;
    // SAFETY: `flock` only acts on the descriptor, which `file` owns and keeps open for the
    // duration of the call; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            OpenError::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            OpenError::Io { path, source: e }
        });
    }
    Ok(file)
}

/// Flushes the file system holding `dir`.
fn sync_fs(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    // SAFETY: `syncfs` only acts on the descriptor, which `d` owns and keeps open for the
    // duration of the call; no memory is passed.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes everything in `dir`; how many entries it held.
fn clear_dir(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for item in fs::read_dir(dir)? {
        let item = item?;
        if item.file_type()?.is_dir() {
            fs::remove_dir_all(item.path())?;
        } else {
            fs::remove_file(item.path())?;
        }
        n += 1;
    }
    Ok(n)
}

/// Opens the index, creating its schema.
fn open_db(path: &Path) -> Result<Connection, OpenError> {
    let db_err = |source| OpenError::Db {
        path: path.to_path_buf(),
        source,
    };
    let db = Connection::open(path).map_err(db_err)?;
    db.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
    db.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    // See the module's documentation for why NORMAL.
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS entries (
             space TEXT NOT NULL,
             kind INTEGER NOT NULL,      -- 0: action result, 1: blob
             key TEXT NOT NULL,
             size INTEGER NOT NULL,
             last_use INTEGER NOT NULL,  -- seconds since the epoch
             seq INTEGER NOT NULL,       -- order of use within a second
             PRIMARY KEY (space, kind, key)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS entries_lru ON entries (last_use, kind, seq);
         CREATE TABLE IF NOT EXISTS spaces (
             space TEXT PRIMARY KEY,
             evictions INTEGER NOT NULL DEFAULT 0
         ) WITHOUT ROWID;
         PRAGMA user_version = 1;",
    )
    .map_err(db_err)?;
    Ok(db)
}

/// The store a writer commits to.
#[derive(Debug)]
enum StoreRef<'a> {
    Borrowed(&'a Store),
    Shared(Arc<Store>),
}

impl StoreRef<'_> {
    fn get(&self) -> &Store {
        match self {
            StoreRef::Borrowed(s) => s,
            StoreRef::Shared(s) => s,
        }
    }
}

/// A new entry being written; see [`Store::writer`].
#[derive(Debug)]
pub struct EntryWriter<'a> {
    store: StoreRef<'a>,
    space: String,
    kind: Kind,
    key: String,
    file: BufWriter<File>,
    tmp: PathBuf,
    /// Whether dropping it removes the temporary file.
    armed: bool,
    written: u64,
}

impl EntryWriter<'_> {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the entry to disk, renames it into place and indexes it (replacing an
    /// existing entry of the key), then evicts to the cap.
    pub fn commit(mut self) -> Result<CommitInfo, StoreError> {
        let store = self.store.get();
        let size = self.written;
        if size > store.cap {
            return Err(StoreError::TooLarge {
                size,
                cap: store.cap,
            });
        }
        self.file.flush().map_err(io_at(&self.tmp))?;
        self.file.get_ref().sync_all().map_err(io_at(&self.tmp))?;
        let info = store.install(&self.space, self.kind, &self.key, &self.tmp, size)?;
        self.armed = false;
        Ok(info)
    }
}

impl Write for EntryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let cap = self.store.get().cap;
        if self.written.saturating_add(buf.len() as u64) > cap {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                StoreError::TooLarge {
                    size: self.written.saturating_add(buf.len() as u64),
                    cap,
                },
            ));
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for EntryWriter<'_> {
    fn drop(&mut self) {
        if self.armed {
            match fs::remove_file(&self.tmp) {
                Ok(()) => {}
                // A failed commit got as far as renaming it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    path = %self.tmp.display(),
                    error = %e,
                    "cannot remove an uncommitted cache entry"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use std::sync::atomic::AtomicU64;

    const SPACE: &str = "team-a/bazel";

    /// A store whose clock the test sets.
    fn open(dir: &Path, cap: u64) -> (Store, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(1_000));
        let c = Arc::clone(&t);
        let store = Store::open_with_clock(dir, cap, move || c.load(Ordering::SeqCst)).unwrap();
        (store, t)
    }

    fn put(store: &Store, space: &str, kind: Kind, key: &str, bytes: &[u8]) -> CommitInfo {
        let mut w = store.writer(space, kind, key).unwrap();
        // Several writes, so that a torn entry would be visible.
        for chunk in bytes.chunks(1000) {
            w.write_all(chunk).unwrap();
        }
        w.commit().unwrap()
    }

    fn read(store: &Store, space: &str, kind: Kind, key: &str) -> Option<Vec<u8>> {
        store.get(space, kind, key).unwrap().map(|(mut f, size)| {
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            assert_eq!(v.len() as u64, size, "{key}: size as returned");
            v
        })
    }

    fn entry_file(dir: &Path, space: &str, kind: Kind, key: &str) -> PathBuf {
        dir.join("data").join(rel_path(space, kind, key))
    }

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn put_get_head_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let info = put(&store, SPACE, Kind::Cas, "abcdef", b"blob bytes");
        assert_eq!(
            info,
            CommitInfo {
                size: 10,
                replaced: false,
                evicted: 0
            }
        );
        assert!(entry_file(dir.path(), SPACE, Kind::Cas, "abcdef").is_file());
        assert_eq!(
            read(&store, SPACE, Kind::Cas, "abcdef").unwrap(),
            b"blob bytes"
        );
        assert_eq!(store.head(SPACE, Kind::Cas, "abcdef").unwrap(), Some(10));
        // Kinds and spaces are apart.
        assert!(read(&store, SPACE, Kind::Ac, "abcdef").is_none());
        assert!(
            store
                .head("team-b/bazel", Kind::Cas, "abcdef")
                .unwrap()
                .is_none()
        );
        // Replacing.
        let info = put(&store, SPACE, Kind::Cas, "abcdef", b"new");
        assert!(info.replaced);
        assert_eq!(read(&store, SPACE, Kind::Cas, "abcdef").unwrap(), b"new");
        assert_eq!(store.used_bytes(), 3);
        // A one-character key.
        put(&store, SPACE, Kind::Ac, "x", b"result");
        assert_eq!(read(&store, SPACE, Kind::Ac, "x").unwrap(), b"result");

        assert!(store.delete(SPACE, Kind::Cas, "abcdef").unwrap());
        assert!(!store.delete(SPACE, Kind::Cas, "abcdef").unwrap());
        assert!(read(&store, SPACE, Kind::Cas, "abcdef").is_none());
        assert!(store.head(SPACE, Kind::Cas, "abcdef").unwrap().is_none());
        assert!(!entry_file(dir.path(), SPACE, Kind::Cas, "abcdef").exists());
        let stats = store.stats().unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (
                stats[0].entries,
                stats[0].bytes,
                stats[0].ac_entries,
                stats[0].cas_entries
            ),
            (1, 6, 1, 0)
        );
        assert_eq!(count(&dir.path().join("tmp")), 0, "no temporary file left");
    }

    #[test]
    fn a_writer_dropped_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let mut w = store.writer(SPACE, Kind::Cas, "abc").unwrap();
        w.write_all(b"half").unwrap();
        assert_eq!(count(&dir.path().join("tmp")), 1);
        drop(w);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert!(store.head(SPACE, Kind::Cas, "abc").unwrap().is_none());
    }

    #[test]
    fn bad_names_are_rejected_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let long = "a".repeat(200);
        let bad_spaces = [
            "../x", "/abs", "a/../b", "", &long, "a//b", "a/", "./a", "a/./b", "team/ac", "cas/x",
            "a b", "a\\b", "é",
        ];
        let bad_keys = ["a/b", "", &long, ".hidden", "..", "a b", "a\0b", "ключ"];
        let is_bad = |r: Result<(), StoreError>| matches!(r, Err(StoreError::BadName(_)));
        for s in bad_spaces {
            assert!(
                is_bad(store.get(s, Kind::Cas, "abc").map(drop)),
                "get {s:?}"
            );
            assert!(
                is_bad(store.head(s, Kind::Cas, "abc").map(drop)),
                "head {s:?}"
            );
            assert!(
                is_bad(store.writer(s, Kind::Cas, "abc").map(drop)),
                "writer {s:?}"
            );
            assert!(
                is_bad(store.delete(s, Kind::Cas, "abc").map(drop)),
                "delete {s:?}"
            );
            assert!(
                is_bad(store.missing(s, Kind::Cas, &["abc".into()]).map(drop)),
                "missing {s:?}"
            );
        }
        for k in bad_keys {
            assert!(is_bad(store.get(SPACE, Kind::Ac, k).map(drop)), "get {k:?}");
            assert!(
                is_bad(store.head(SPACE, Kind::Ac, k).map(drop)),
                "head {k:?}"
            );
            assert!(
                is_bad(store.writer(SPACE, Kind::Ac, k).map(drop)),
                "writer {k:?}"
            );
            assert!(
                is_bad(store.delete(SPACE, Kind::Ac, k).map(drop)),
                "delete {k:?}"
            );
            assert!(
                is_bad(
                    store
                        .missing(SPACE, Kind::Ac, &["ok".into(), k.into()])
                        .map(drop)
                ),
                "missing {k:?}"
            );
        }
        // Nothing was created for them.
        assert_eq!(count(&dir.path().join("data")), 0);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        // The limits themselves are fine.
        let max = "k".repeat(128);
        let space = format!("{}/x", "s".repeat(126));
        put(&store, &space, Kind::Ac, &max, b"1");
        put(&store, "a.b_c-d/E9", Kind::Ac, "k.v_1-2", b"1");
        let err = store.get("../x", Kind::Ac, "abc").unwrap_err();
        assert_eq!(
            crate::error_chain(&err),
            "bad entry name: space \"../x\" has a `.` or `..` component"
        );
    }

    #[test]
    fn eviction_keeps_the_cap_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = open(dir.path(), 300);
        let hundred = [7u8; 100];
        for (t, key) in [(1, "aa"), (2, "bb"), (3, "cc")] {
            clock.store(t, Ordering::SeqCst);
            assert_eq!(put(&store, SPACE, Kind::Cas, key, &hundred).evicted, 0);
        }
        clock.store(4, Ordering::SeqCst);
        assert!(
            read(&store, SPACE, Kind::Cas, "aa").is_some(),
            "aa used again"
        );
        clock.store(5, Ordering::SeqCst);
        let info = put(&store, SPACE, Kind::Cas, "dd", &hundred);
        assert_eq!(info.evicted, 1);
        assert!(
            store.head(SPACE, Kind::Cas, "bb").unwrap().is_none(),
            "bb was least recently used"
        );
        assert!(!entry_file(dir.path(), SPACE, Kind::Cas, "bb").exists());
        for key in ["aa", "cc", "dd"] {
            assert_eq!(
                store.head(SPACE, Kind::Cas, key).unwrap(),
                Some(100),
                "{key}"
            );
        }
        assert_eq!(store.used_bytes(), 300);
        // Within one second, by order of use.
        clock.store(6, Ordering::SeqCst);
        put(&store, SPACE, Kind::Cas, "ee", &hundred);
        put(&store, SPACE, Kind::Cas, "ff", &hundred);
        assert!(store.head(SPACE, Kind::Cas, "cc").unwrap().is_none());
        assert!(store.head(SPACE, Kind::Cas, "aa").unwrap().is_none());
        assert_eq!(store.head(SPACE, Kind::Cas, "dd").unwrap(), Some(100));
        let stats = store.stats().unwrap();
        assert_eq!(
            (stats[0].entries, stats[0].bytes, stats[0].evictions),
            (3, 300, 3)
        );
    }

    #[test]
    fn action_results_go_before_blobs_used_in_the_same_second() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = open(dir.path(), 200);
        clock.store(10, Ordering::SeqCst);
        // A step's blob, then its action result, in the same second.
        put(&store, SPACE, Kind::Cas, "blob1", &[1u8; 100]);
        put(&store, SPACE, Kind::Ac, "result1", &[2u8; 100]);
        clock.store(11, Ordering::SeqCst);
        let info = put(&store, SPACE, Kind::Cas, "blob2", &[3u8; 100]);
        assert_eq!(info.evicted, 1);
        assert!(
            store.head(SPACE, Kind::Ac, "result1").unwrap().is_none(),
            "the action result goes first although written later"
        );
        assert_eq!(store.head(SPACE, Kind::Cas, "blob1").unwrap(), Some(100));
        // An older blob still goes before a newer action result.
        clock.store(12, Ordering::SeqCst);
        put(&store, SPACE, Kind::Ac, "result2", &[4u8; 100]);
        assert!(store.head(SPACE, Kind::Cas, "blob1").unwrap().is_none());
        assert_eq!(store.head(SPACE, Kind::Ac, "result2").unwrap(), Some(100));
        assert_eq!(store.head(SPACE, Kind::Cas, "blob2").unwrap(), Some(100));
    }

    #[test]
    fn an_entry_larger_than_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 10);
        let mut w = store.writer(SPACE, Kind::Cas, "big").unwrap();
        w.write_all(b"0123456789").unwrap();
        let err = w.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        drop(w);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert!(store.head(SPACE, Kind::Cas, "big").unwrap().is_none());
    }

    #[test]
    fn a_reopened_store_keeps_committed_entries_and_counters() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, clock) = open(dir.path(), 150);
            put(&store, SPACE, Kind::Ac, "aa", &[1u8; 50]);
            put(&store, "team-b/ccache", Kind::Cas, "bb", &[2u8; 50]);
            clock.store(2_000, Ordering::SeqCst);
            put(&store, SPACE, Kind::Cas, "cc", &[3u8; 50]);
            put(&store, SPACE, Kind::Cas, "dd", &[4u8; 50]);
            assert!(store.head(SPACE, Kind::Ac, "aa").unwrap().is_none());
        }
        let (store, _) = open(dir.path(), 150);
        assert_eq!(store.recovery(), Recovery::default(), "nothing to repair");
        assert_eq!(
            read(&store, "team-b/ccache", Kind::Cas, "bb").unwrap(),
            [2u8; 50]
        );
        assert_eq!(read(&store, SPACE, Kind::Cas, "cc").unwrap(), [3u8; 50]);
        assert_eq!(read(&store, SPACE, Kind::Cas, "dd").unwrap(), [4u8; 50]);
        assert_eq!(store.used_bytes(), 150);
        let stats = store.stats().unwrap();
        let a = stats.iter().find(|s| s.space == SPACE).unwrap();
        assert_eq!((a.entries, a.evictions), (2, 1));
        drop(store);
        // A lower cap evicts on open, least recently used first.
        let (store, _) = open(dir.path(), 100);
        assert_eq!(store.recovery().evicted, 1);
        assert!(
            store
                .head("team-b/ccache", Kind::Cas, "bb")
                .unwrap()
                .is_none()
        );
        assert_eq!(store.used_bytes(), 100);
    }

    #[test]
    fn a_second_service_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _) = open(dir.path(), 100);
        let err = Store::open(dir.path(), 100).unwrap_err();
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    }

    #[test]
    fn an_index_row_whose_file_is_gone_is_a_miss_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        for key in ["gone1", "gone2", "gone3"] {
            put(&store, SPACE, Kind::Cas, key, b"bytes");
            fs::remove_file(entry_file(dir.path(), SPACE, Kind::Cas, key)).unwrap();
        }
        assert!(store.get(SPACE, Kind::Cas, "gone1").unwrap().is_none());
        assert!(store.head(SPACE, Kind::Cas, "gone2").unwrap().is_none());
        assert_eq!(
            store.missing(SPACE, Kind::Cas, &["gone3".into()]).unwrap(),
            ["gone3"]
        );
        assert!(
            store.stats().unwrap().iter().all(|s| s.entries == 0),
            "rows dropped"
        );
        assert_eq!(store.used_bytes(), 0);
        // And on open.
        put(&store, SPACE, Kind::Cas, "gone4", b"bytes");
        drop(store);
        fs::remove_file(entry_file(dir.path(), SPACE, Kind::Cas, "gone4")).unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        assert_eq!(store.recovery().dropped, 1);
        assert_eq!(store.used_bytes(), 0);
    }

    #[test]
    fn a_torn_temporary_file_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(dir.path(), 1 << 20);
            let mut w = store.writer(SPACE, Kind::Cas, "torn").unwrap();
            w.write_all(&[9u8; 5000]).unwrap();
            w.flush().unwrap();
            // The process dies here: no commit, no clean-up.
            std::mem::forget(w);
        }
        assert_eq!(count(&dir.path().join("tmp")), 1);
        let (store, _) = open(dir.path(), 1 << 20);
        assert_eq!(store.recovery().temp_files, 1);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert!(store.head(SPACE, Kind::Cas, "torn").unwrap().is_none());
    }

    #[test]
    fn files_left_by_a_crash_before_indexing_are_adopted_and_strays_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(dir.path(), 1 << 20);
            put(&store, SPACE, Kind::Ac, "replaced", b"old");
        }
        // Renamed into place, then the crash: no row, or the old row of a replaced entry.
        let orphan = entry_file(dir.path(), SPACE, Kind::Cas, "orphan");
        fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        fs::write(&orphan, b"orphan bytes").unwrap();
        fs::write(
            entry_file(dir.path(), SPACE, Kind::Ac, "replaced"),
            b"newer",
        )
        .unwrap();
        // Files that name no entry.
        fs::write(dir.path().join("data/team-a/notes.txt"), b"?").unwrap();
        let misplaced = dir.path().join("data/team-a/bazel/cas/zz/abc");
        fs::create_dir_all(misplaced.parent().unwrap()).unwrap();
        fs::write(&misplaced, b"?").unwrap();

        let (store, _) = open(dir.path(), 1 << 20);
        let r = store.recovery();
        assert_eq!((r.adopted, r.resized, r.strays), (1, 1, 2), "{r:?}");
        assert_eq!(
            read(&store, SPACE, Kind::Cas, "orphan").unwrap(),
            b"orphan bytes"
        );
        assert_eq!(read(&store, SPACE, Kind::Ac, "replaced").unwrap(), b"newer");
        assert_eq!(store.used_bytes(), 12 + 5);
        assert!(!misplaced.exists());
        assert_eq!(count(&dir.path().join("quarantine")), 2);
    }

    #[test]
    fn scrub_quarantines_what_fails_and_drops_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let blobs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let keys: Vec<String> = blobs.iter().map(|b| Digest::of(b).to_hex()).collect();
        for (key, blob) in keys.iter().zip(&blobs) {
            put(&store, SPACE, Kind::Cas, key, blob);
        }
        put(&store, SPACE, Kind::Ac, "result", b"an action result");
        // Flipped byte, truncated, deleted; the fourth blob stays intact.
        let path = |i: usize| entry_file(dir.path(), SPACE, Kind::Cas, &keys[i]);
        let mut flipped = blobs[0].clone();
        flipped[500] ^= 1;
        fs::write(path(0), &flipped).unwrap();
        fs::write(path(1), &blobs[1][..10]).unwrap();
        fs::remove_file(path(2)).unwrap();

        let verify = |_: &str, kind: Kind, key: &str, bytes: &[u8]| {
            kind == Kind::Ac || Digest::of(bytes).to_hex() == key
        };
        let report = store.scrub(verify).unwrap();
        assert_eq!(
            report,
            ScrubReport {
                checked: 4,
                quarantined: 2,
                missing: 1,
                changed: 0
            }
        );
        for key in &keys[..3] {
            assert!(store.head(SPACE, Kind::Cas, key).unwrap().is_none());
        }
        assert_eq!(read(&store, SPACE, Kind::Cas, &keys[3]).unwrap(), blobs[3]);
        assert!(read(&store, SPACE, Kind::Ac, "result").is_some());
        // The corrupt file is kept, with why.
        let mut found = Vec::new();
        for d in fs::read_dir(dir.path().join("quarantine")).unwrap() {
            let d = d.unwrap().path();
            found.push((
                fs::read(d.join("entry")).unwrap(),
                fs::read_to_string(d.join("reason")).unwrap(),
            ));
        }
        found.sort();
        assert_eq!(found.len(), 2);
        assert!(found.iter().any(|(bytes, why)| *bytes == flipped
            && why.contains(&keys[0])
            && why.contains("failed verification")));
        assert_eq!(
            store.scrub(verify).unwrap().quarantined,
            0,
            "a second scrub finds nothing"
        );
    }

    #[test]
    fn missing_names_exactly_the_absent_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = open(dir.path(), 200);
        put(&store, SPACE, Kind::Cas, "k1", &[1u8; 50]);
        put(&store, SPACE, Kind::Cas, "k3", &[3u8; 50]);
        put(&store, SPACE, Kind::Ac, "k2", &[2u8; 50]);
        put(&store, "team-b/bazel", Kind::Cas, "k4", &[4u8; 50]);
        let keys: Vec<String> = ["k1", "k2", "k3", "k4", "k5"].map(String::from).to_vec();
        assert_eq!(
            store.missing(SPACE, Kind::Cas, &keys).unwrap(),
            ["k2", "k4", "k5"]
        );
        assert_eq!(
            store.missing(SPACE, Kind::Ac, &keys).unwrap(),
            ["k1", "k3", "k4", "k5"]
        );
        assert!(store.missing(SPACE, Kind::Cas, &[]).unwrap().is_empty());
        // Found blobs count as used: k1 and k3 outlive team-b's k4 and the action result.
        clock.store(2_000, Ordering::SeqCst);
        assert_eq!(store.missing(SPACE, Kind::Cas, &keys[..3]).unwrap(), ["k2"]);
        put(&store, SPACE, Kind::Cas, "k6", &[6u8; 100]);
        assert_eq!(store.missing(SPACE, Kind::Cas, &keys[..3]).unwrap(), ["k2"]);
        assert!(store.head(SPACE, Kind::Ac, "k2").unwrap().is_none());
        assert!(
            store
                .head("team-b/bazel", Kind::Cas, "k4")
                .unwrap()
                .is_none()
        );
    }

    /// The bytes of version `tag` of an entry: self-describing, so a torn or mixed file
    /// shows.
    fn version(tag: u32) -> Vec<u8> {
        let len = 2_000 + (tag as usize % 17) * 1_013;
        let mut v = tag.to_le_bytes().to_vec();
        v.extend((0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(tag) as u8));
        v
    }

    fn assert_whole(key: &str, bytes: &[u8]) {
        assert!(bytes.len() >= 4, "{key}: {} bytes", bytes.len());
        let tag = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        assert!(
            bytes == version(tag),
            "{key}: not a whole version ({} bytes, tag {tag})",
            bytes.len()
        );
    }

    #[test]
    fn concurrent_writers_and_readers_of_the_same_keys_see_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 30);
        let keys = ["key0", "key1", "key2", "key3"];
        std::thread::scope(|s| {
            for t in 0..16u32 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..24u32 {
                        let key = keys[((t + i / 2) % 4) as usize];
                        if i % 2 == 0 {
                            put(store, SPACE, Kind::Cas, key, &version(t * 1000 + i));
                        } else if let Some(bytes) = read(store, SPACE, Kind::Cas, key) {
                            assert_whole(key, &bytes);
                        }
                    }
                });
            }
        });
        let mut total = 0;
        for key in keys {
            let bytes = read(&store, SPACE, Kind::Cas, key).expect(key);
            assert_whole(key, &bytes);
            total += bytes.len() as u64;
        }
        assert_eq!(store.used_bytes(), total);
        let stats = store.stats().unwrap();
        assert_eq!((stats[0].entries, stats[0].bytes), (4, total));
        assert_eq!(count(&dir.path().join("tmp")), 0);
        // What the index says is what a fresh open finds on disk.
        drop(store);
        let (store, _) = open(dir.path(), 1 << 30);
        assert_eq!(store.recovery(), Recovery::default());
    }

    #[test]
    fn a_shared_writer_commits_from_another_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path(), 1 << 20).0);
        let mut w = store.shared_writer(SPACE, Kind::Ac, "moved").unwrap();
        w.write_all(b"part one, ").unwrap();
        let info = std::thread::spawn(move || {
            w.write_all(b"part two").unwrap();
            w.commit()
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(info.size, 18);
        assert_eq!(
            read(&store, SPACE, Kind::Ac, "moved").unwrap(),
            b"part one, part two"
        );
    }
}
