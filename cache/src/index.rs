//! The cache's index (SQLite): entry sizes and last use for eviction, and the counters
//! behind `cache stats`.
//!
//! The index is advisory. The files are the truth: an entry the index does not know is
//! still served (and recorded when it is), and a row whose manifest is gone is dropped by
//! the next garbage collection. Several processes share it; writes wait up to five seconds
//! for each other.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cache index unusable")]
pub struct IndexError(#[from] rusqlite::Error);

/// One entry as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedEntry {
    /// Its namespace.
    pub namespace: String,
    /// Its key, hex.
    pub key: String,
    /// Bytes of its blobs on disk (compressed), counted for this entry alone.
    pub bytes: u64,
    /// When it was stored, seconds since the epoch.
    pub created: u64,
    /// When it was last stored or restored.
    pub last_used: u64,
    /// How many times it was restored.
    pub hits: u64,
}

/// Counters kept across runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Lookups answered with a verified entry.
    Hits,
    /// Lookups that found nothing usable.
    Misses,
    /// Entries quarantined.
    Quarantined,
    /// Entries stored.
    Stores,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Hits => "hits",
            Counter::Misses => "misses",
            Counter::Quarantined => "quarantined",
            Counter::Stores => "stores",
        }
    }
}

/// The index database.
#[derive(Debug)]
pub struct Index {
    db: Connection,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Index {
    /// Opens (creating if needed) the index at `path`.
    ///
    /// Several processes may open a new index at once: switching it to WAL can fail with
    /// `SQLITE_BUSY` without waiting (SQLite does not wait there, to avoid deadlocks), so
    /// the set-up is retried for a while.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let mut attempt = 0;
        loop {
            match Index::try_open(path) {
                Err(IndexError(rusqlite::Error::SqliteFailure(e, _)))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < 200 =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    fn try_open(path: &Path) -> Result<Index, IndexError> {
        let db = Connection::open(path)?;
        db.busy_timeout(Duration::from_secs(5))?;
        let mode: String = db.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            db.pragma_update(None, "journal_mode", "WAL")?;
        }
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS entries (
                 namespace TEXT NOT NULL,
                 key TEXT NOT NULL,
                 bytes INTEGER NOT NULL,
                 created INTEGER NOT NULL,
                 last_used INTEGER NOT NULL,
                 hits INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (namespace, key)
             );
             CREATE INDEX IF NOT EXISTS entries_last_used ON entries (last_used);
             CREATE TABLE IF NOT EXISTS counters (
                 name TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             );",
        )?;
        Ok(Index { db })
    }

    /// Records a stored entry (replacing an older row for the same key).
    pub fn stored(&self, namespace: &str, key: &str, bytes: u64) -> Result<(), IndexError> {
        let t = to_i64(now());
        // One write transaction for the row and the counter.
        let tx = self.db.unchecked_transaction()?;
        tx.prepare_cached(
            "INSERT INTO entries (namespace, key, bytes, created, last_used, hits)
             VALUES (?1, ?2, ?3, ?4, ?4, 0)
             ON CONFLICT (namespace, key) DO UPDATE SET bytes = ?3, created = ?4, last_used = ?4",
        )?
        .execute(params![namespace, key, to_i64(bytes), t])?;
        self.bump(Counter::Stores)?;
        Ok(tx.commit()?)
    }

    /// Records a restore of an entry.
    pub fn hit(&self, namespace: &str, key: &str) -> Result<(), IndexError> {
        let t = to_i64(now());
        let tx = self.db.unchecked_transaction()?;
        tx.prepare_cached(
            "INSERT INTO entries (namespace, key, bytes, created, last_used, hits)
             VALUES (?1, ?2, 0, ?3, ?3, 1)
             ON CONFLICT (namespace, key) DO UPDATE SET last_used = ?3, hits = hits + 1",
        )?
        .execute(params![namespace, key, t])?;
        self.bump(Counter::Hits)?;
        Ok(tx.commit()?)
    }

    /// Forgets an entry (evicted or quarantined).
    pub fn remove(&self, namespace: &str, key: &str) -> Result<(), IndexError> {
        self.db.execute(
            "DELETE FROM entries WHERE namespace = ?1 AND key = ?2",
            params![namespace, key],
        )?;
        Ok(())
    }

    /// Adds one to a counter.
    pub fn bump(&self, counter: Counter) -> Result<(), IndexError> {
        self.db
            .prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1",
            )?
            .execute(params![counter.name()])?;
        Ok(())
    }

    /// A counter's value.
    pub fn counter(&self, counter: Counter) -> Result<u64, IndexError> {
        let v: Option<i64> = self
            .db
            .query_row(
                "SELECT value FROM counters WHERE name = ?1",
                params![counter.name()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map_or(0, to_u64))
    }

    /// A known entry.
    pub fn entry(&self, namespace: &str, key: &str) -> Result<Option<IndexedEntry>, IndexError> {
        Ok(self
            .db
            .query_row(
                "SELECT namespace, key, bytes, created, last_used, hits FROM entries
                 WHERE namespace = ?1 AND key = ?2",
                params![namespace, key],
                row,
            )
            .optional()?)
    }

    /// Every known entry, least recently used first.
    pub fn entries(&self) -> Result<Vec<IndexedEntry>, IndexError> {
        let mut stmt = self.db.prepare(
            "SELECT namespace, key, bytes, created, last_used, hits FROM entries
             ORDER BY last_used, created, namespace, key",
        )?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IndexedEntry> {
    Ok(IndexedEntry {
        namespace: r.get(0)?,
        key: r.get(1)?,
        bytes: to_u64(r.get(2)?),
        created: to_u64(r.get(3)?),
        last_used: to_u64(r.get(4)?),
        hits: to_u64(r.get(5)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_counters_persist_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        {
            let ix = Index::open(&path).unwrap();
            ix.stored("trusted", "aa", 100).unwrap();
            ix.stored("pr-1", "bb", 50).unwrap();
            ix.hit("trusted", "aa").unwrap();
            ix.bump(Counter::Misses).unwrap();
        }
        let ix = Index::open(&path).unwrap();
        let aa = ix.entry("trusted", "aa").unwrap().unwrap();
        assert_eq!((aa.bytes, aa.hits), (100, 1));
        assert!(
            ix.entry("trusted", "bb").unwrap().is_none(),
            "namespaces are apart"
        );
        assert_eq!(ix.counter(Counter::Hits).unwrap(), 1);
        assert_eq!(ix.counter(Counter::Misses).unwrap(), 1);
        assert_eq!(ix.counter(Counter::Stores).unwrap(), 2);
        assert_eq!(ix.counter(Counter::Quarantined).unwrap(), 0);
        ix.remove("pr-1", "bb").unwrap();
        assert_eq!(ix.entries().unwrap().len(), 1);
    }

    #[test]
    fn many_openers_of_a_new_index_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        let ix = Index::open(path)?;
                        ix.stored("trusted", &format!("{i:02x}"), 1)
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        assert_eq!(Index::open(&path).unwrap().entries().unwrap().len(), 8);
    }
}
