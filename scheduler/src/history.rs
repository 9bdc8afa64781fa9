//! The run history: one row per step attempt of every run, in SQLite under the state
//! directory, for the runtime model to learn from.
//!
//! The schema is versioned (`PRAGMA user_version`) and migrated forward in order. A history
//! that cannot be opened as a database (corrupt, or not SQLite at all) is moved aside, never
//! deleted, and a new one is started; a locked one is waited for. Durations that a clock jump
//! made negative are not recorded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

/// The schema version this code writes (each migration moves a database up by one).
pub const SCHEMA_VERSION: i64 = 1;

/// Migrations, in order: `MIGRATIONS[v]` moves a database from version `v` to `v + 1`.
const MIGRATIONS: &[&str] = &["CREATE TABLE runs (
         id INTEGER PRIMARY KEY,
         plan TEXT NOT NULL,
         started_unix_ms INTEGER NOT NULL,
         wall_ms INTEGER NOT NULL,
         runner_class TEXT NOT NULL
     );
     CREATE TABLE steps (
         run_id INTEGER NOT NULL REFERENCES runs (id),
         plan TEXT NOT NULL,
         step TEXT NOT NULL,
         action_key TEXT,
         started_unix_ms INTEGER NOT NULL,
         duration_ms INTEGER NOT NULL,
         queue_ms INTEGER NOT NULL,
         exit_code INTEGER,
         state TEXT NOT NULL,
         attempts INTEGER NOT NULL,
         cache_hit INTEGER NOT NULL,
         changed_files INTEGER,
         input_bytes INTEGER,
         input_files INTEGER,
         runner_class TEXT NOT NULL
     );
     CREATE INDEX steps_by_step ON steps (plan, step, started_unix_ms);"];

/// Why the history could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database failed.
    #[error("run history unusable")]
    Db(#[from] rusqlite::Error),
    /// The database is newer than this ci-intel.
    #[error("run history has schema version {found}, newer than this ci-intel's {SCHEMA_VERSION}")]
    TooNew {
        /// Its version.
        found: i64,
    },
    /// A damaged database could not be moved aside.
    #[error("could not move the damaged run history {} aside", path.display())]
    MoveAside {
        /// The database.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One step of a run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// The step id.
    pub step: String,
    /// Its action key, when it had one.
    pub action_key: Option<String>,
    /// When it first started, milliseconds since the epoch.
    pub started_unix_ms: u64,
    /// Wall-clock time of all its attempts.
    pub duration: Duration,
    /// Time between becoming ready and first starting.
    pub queue: Duration,
    /// The last attempt's exit code.
    pub exit_code: Option<i32>,
    /// How it ended (`succeeded`, `failed`, ...).
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Whether it was restored from the cache.
    pub cache_hit: bool,
    /// Files changed since this step's previous run, when known.
    pub changed_files: Option<u64>,
    /// Bytes of its inputs, when known.
    pub input_bytes: Option<u64>,
    /// Number of its input files, when known.
    pub input_files: Option<u64>,
}

/// One run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The plan's name.
    pub plan: String,
    /// When it started, milliseconds since the epoch.
    pub started_unix_ms: u64,
    /// Its wall-clock time.
    pub wall: Duration,
    /// The machine it ran on ([`runner_class`]).
    pub runner_class: String,
    /// Its steps.
    pub steps: Vec<StepRecord>,
}

/// A past step, as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastStep {
    /// Wall-clock time of all its attempts.
    pub duration: Duration,
    /// Whether it was restored from the cache.
    pub cache_hit: bool,
    /// How it ended.
    pub state: String,
    /// The machine it ran on.
    pub runner_class: String,
}

/// The history database.
#[derive(Debug)]
pub struct History {
    db: Connection,
    /// Where a damaged database was moved, if this open found one.
    pub moved_aside: Option<PathBuf>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `e` says the file is not a usable database (corrupt, or not SQLite).
fn damaged(e: &HistoryError) -> bool {
    matches!(
        e,
        HistoryError::Db(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

impl History {
    /// Opens (creating or migrating) the history at `path`. A damaged database is moved
    /// aside to `PATH.damaged-<millis>` and a new one started ([`History::moved_aside`]).
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        match History::try_open(path) {
            Err(e) if damaged(&e) => {
                let aside = PathBuf::from(format!(
                    "{}.damaged-{}",
                    path.display(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                ));
                std::fs::rename(path, &aside).map_err(|source| HistoryError::MoveAside {
                    path: path.to_path_buf(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                let mut h = History::try_open(path)?;
                h.moved_aside = Some(aside);
                Ok(h)
            }
            other => other,
        }
    }

    fn try_open(path: &Path) -> Result<History, HistoryError> {
        let db = Connection::open(path)?;
        db.busy_timeout(Duration::from_secs(5))?;
        let mut attempt = 0;
        loop {
            match History::migrate(&db) {
                Err(HistoryError::Db(rusqlite::Error::SqliteFailure(f, _)))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy && attempt < 200 =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
                Ok(()) => break,
            }
        }
        Ok(History {
            db,
            moved_aside: None,
        })
    }

    /// Brings the schema up to [`SCHEMA_VERSION`], one migration per transaction.
    fn migrate(db: &Connection) -> Result<(), HistoryError> {
        let mode: String = db.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            db.pragma_update(None, "journal_mode", "WAL")?;
        }
        loop {
            let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(HistoryError::TooNew { found: version });
            }
            let Some(step) = usize::try_from(version)
                .ok()
                .and_then(|v| MIGRATIONS.get(v))
            else {
                return Ok(());
            };
            let tx = db.unchecked_transaction()?;
            // Another process may have migrated meanwhile: check again inside.
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now == version {
                tx.execute_batch(step)?;
                tx.pragma_update(None, "user_version", version + 1)?;
            }
            tx.commit()?;
        }
    }

    /// The schema version of the open database.
    pub fn version(&self) -> Result<i64, HistoryError> {
        Ok(self
            .db
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Records a run and its steps in one transaction. Steps with a negative duration (a
    /// clock jump) are left out. Returns how many steps were recorded.
    pub fn record(&self, run: &RunRecord) -> Result<usize, HistoryError> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO runs (plan, started_unix_ms, wall_ms, runner_class) VALUES (?1, ?2, ?3, ?4)",
            params![
                run.plan,
                to_i64(run.started_unix_ms),
                ms(run.wall),
                run.runner_class
            ],
        )?;
        let run_id = tx.last_insert_rowid();
        let mut recorded = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO steps (run_id, plan, step, action_key, started_unix_ms, duration_ms,
                     queue_ms, exit_code, state, attempts, cache_hit, changed_files, input_bytes,
                     input_files, runner_class)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for s in &run.steps {
                insert.execute(params![
                    run_id,
                    run.plan,
                    s.step,
                    s.action_key,
                    to_i64(s.started_unix_ms),
                    ms(s.duration),
                    ms(s.queue),
                    s.exit_code,
                    s.state,
                    s.attempts,
                    s.cache_hit,
                    s.changed_files.map(to_i64),
                    s.input_bytes.map(to_i64),
                    s.input_files.map(to_i64),
                    run.runner_class,
                ])?;
                recorded += 1;
            }
        }
        tx.commit()?;
        Ok(recorded)
    }

    /// The last `limit` runs of `step` in `plan`, oldest first.
    pub fn step_history(
        &self,
        plan: &str,
        step: &str,
        limit: usize,
    ) -> Result<Vec<PastStep>, HistoryError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT duration_ms, cache_hit, state, runner_class FROM steps
             WHERE plan = ?1 AND step = ?2
             ORDER BY started_unix_ms DESC, rowid DESC LIMIT ?3",
        )?;
        let mut rows: Vec<PastStep> = stmt
            .query_map(params![plan, step, to_i64(limit as u64)], |r| {
                Ok(PastStep {
                    duration: Duration::from_millis(
                        u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    ),
                    cache_hit: r.get(1)?,
                    state: r.get(2)?,
                    runner_class: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The last `limit` runs of every step of `plan`, oldest first, in one query.
    pub fn plan_history(
        &self,
        plan: &str,
        limit: usize,
    ) -> Result<std::collections::HashMap<String, Vec<PastStep>>, HistoryError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT step, duration_ms, cache_hit, state, runner_class FROM (
                 SELECT step, duration_ms, cache_hit, state, runner_class, started_unix_ms, rowid AS r,
                        ROW_NUMBER() OVER (PARTITION BY step ORDER BY started_unix_ms DESC, rowid DESC) AS n
                 FROM steps WHERE plan = ?1)
             WHERE n <= ?2
             ORDER BY step, started_unix_ms, r",
        )?;
        let mut out: std::collections::HashMap<String, Vec<PastStep>> =
            std::collections::HashMap::new();
        let rows = stmt.query_map(params![plan, to_i64(limit as u64)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                PastStep {
                    duration: Duration::from_millis(
                        u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    ),
                    cache_hit: r.get(2)?,
                    state: r.get(3)?,
                    runner_class: r.get(4)?,
                },
            ))
        })?;
        for row in rows {
            let (step, past) = row?;
            out.entry(step).or_default().push(past);
        }
        Ok(out)
    }

    /// How many runs of `plan` are recorded.
    pub fn runs(&self, plan: &str) -> Result<u64, HistoryError> {
        let n: Option<i64> = self
            .db
            .query_row(
                "SELECT COUNT(*) FROM runs WHERE plan = ?1",
                params![plan],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }
}

/// The time between two wall-clock readings in milliseconds, or `None` when a clock jump
/// put the end before the start: such a span is not learned from.
pub fn span(started_unix_ms: u64, ended_unix_ms: u64) -> Option<Duration> {
    ended_unix_ms
        .checked_sub(started_unix_ms)
        .map(Duration::from_millis)
}

/// The machine class a run happened on: CPUs, memory, OS, and whether the runner is
/// GitHub-hosted, self-hosted or local, e.g. `cpu2-mem24g-linux-local`.
pub fn runner_class(env: impl Fn(&str) -> Option<String>) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gib = memory_bytes().map_or(0, |b| (b + (1 << 29)) >> 30);
    let kind = match env("RUNNER_ENVIRONMENT").as_deref() {
        Some("github-hosted") => "github-hosted",
        Some("self-hosted") => "self-hosted",
        _ if env("GITHUB_ACTIONS").as_deref() == Some("true") => "github",
        _ => "local",
    };
    format!("cpu{cpus}-mem{mem_gib}g-{}-{kind}", std::env::consts::OS)
}

/// Total memory, from `/proc/meminfo`.
fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, ms: u64, hit: bool) -> StepRecord {
        StepRecord {
            step: name.into(),
            action_key: Some("ab".repeat(32)),
            started_unix_ms: 1_700_000_000_000 + ms,
            duration: Duration::from_millis(ms),
            queue: Duration::from_millis(3),
            exit_code: Some(0),
            state: "succeeded".into(),
            attempts: 1,
            cache_hit: hit,
            changed_files: Some(2),
            input_bytes: Some(1000),
            input_files: Some(4),
        }
    }

    fn run(started: u64, steps: Vec<StepRecord>) -> RunRecord {
        RunRecord {
            plan: "demo".into(),
            started_unix_ms: started,
            wall: Duration::from_secs(1),
            runner_class: "cpu2-mem24g-linux-local".into(),
            steps,
        }
    }

    #[test]
    fn runs_are_recorded_and_read_back_per_step_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            let h = History::open(&path).unwrap();
            assert_eq!(h.version().unwrap(), SCHEMA_VERSION);
            h.record(&run(
                1,
                vec![step("build", 100, false), step("test", 50, false)],
            ))
            .unwrap();
            h.record(&run(2, vec![step("build", 120, true)])).unwrap();
        }
        let h = History::open(&path).unwrap();
        assert_eq!(h.moved_aside, None);
        assert_eq!(h.runs("demo").unwrap(), 2);
        assert_eq!(h.runs("other").unwrap(), 0);
        let build = h.step_history("demo", "build", 10).unwrap();
        assert_eq!(
            build
                .iter()
                .map(|s| (s.duration.as_millis(), s.cache_hit))
                .collect::<Vec<_>>(),
            [(100, false), (120, true)]
        );
        assert_eq!(h.step_history("demo", "build", 1).unwrap().len(), 1);
        assert_eq!(h.step_history("demo", "test", 10).unwrap().len(), 1);
        // The whole plan at once says the same.
        let all = h.plan_history("demo", 10).unwrap();
        assert_eq!(all["build"], build);
        assert_eq!(all["test"], h.step_history("demo", "test", 10).unwrap());
        let last = h.plan_history("demo", 1).unwrap();
        assert_eq!(last["build"], h.step_history("demo", "build", 1).unwrap());
        assert!(h.plan_history("other", 10).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_history_is_moved_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        std::fs::write(
            &path,
            b"this is not a database, but someone's data".repeat(200),
        )
        .unwrap();
        let h = History::open(&path).unwrap();
        let aside = h.moved_aside.clone().expect("moved aside");
        assert!(
            std::fs::read(&aside)
                .unwrap()
                .starts_with(b"this is not a database"),
            "the old file is kept, not deleted"
        );
        h.record(&run(1, vec![step("build", 10, false)])).unwrap();
        assert_eq!(h.runs("demo").unwrap(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            let db = Connection::open(&path).unwrap();
            db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = History::open(&path).unwrap_err();
        assert!(matches!(err, HistoryError::TooNew { .. }), "{err}");
    }

    #[test]
    fn concurrent_first_opens_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        History::open(path)?.record(&run(i, vec![step("build", 10 + i, false)]))
                    })
                })
                .collect();
            for h in hs {
                assert_eq!(h.join().unwrap().unwrap(), 1);
            }
        });
        let h = History::open(&path).unwrap();
        assert_eq!(h.version().unwrap(), SCHEMA_VERSION);
        assert_eq!(h.runs("demo").unwrap(), 6);
    }

    #[test]
    fn a_clock_jump_gives_no_duration() {
        assert_eq!(span(1000, 1500), Some(Duration::from_millis(500)));
        assert_eq!(span(1500, 1000), None);
    }

    #[test]
    fn runner_classes_name_the_machine_and_the_runner_kind() {
        let local = runner_class(|_| None);
        assert!(
            local.starts_with("cpu") && local.ends_with("-local"),
            "{local}"
        );
        let hosted = runner_class(|k| (k == "RUNNER_ENVIRONMENT").then(|| "github-hosted".into()));
        assert!(hosted.ends_with("-linux-github-hosted"), "{hosted}");
    }
}
