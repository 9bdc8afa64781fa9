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
pub const SCHEMA_VERSION: i64 = 4;

/// Runs of each plan kept; older ones are deleted as new ones are recorded.
pub const KEEP_RUNS: i64 = 500;

/// Migrations, in order: `MIGRATIONS[v]` moves a database from version `v` to `v + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE runs (
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
     CREATE INDEX steps_by_step ON steps (plan, step, started_unix_ms);",
    // 2: what the model predicted for each step before it ran, and the commit of each run
    // (for the files changed since a step's previous run).
    "ALTER TABLE steps ADD COLUMN predicted_p50_ms INTEGER;
     ALTER TABLE steps ADD COLUMN predicted_p80_ms INTEGER;
     ALTER TABLE steps ADD COLUMN predicted_p90_ms INTEGER;
     ALTER TABLE steps ADD COLUMN model TEXT;
     ALTER TABLE runs ADD COLUMN git_commit TEXT;
     CREATE INDEX runs_by_plan ON runs (plan, id);",
    // 3: replay reads a plan's last runs without scanning all its steps ever recorded.
    "CREATE INDEX steps_by_run ON steps (plan, run_id);",
    // 4: the faults injected into a step (`--chaos`: its duration teaches the model
    // nothing), and the chaos trials of each run.
    "ALTER TABLE steps ADD COLUMN chaos TEXT;
     CREATE TABLE chaos_trials (
         run_id INTEGER NOT NULL REFERENCES runs (id),
         plan TEXT NOT NULL,
         step TEXT NOT NULL,
         fault TEXT NOT NULL,
         attempt INTEGER NOT NULL,
         seed TEXT NOT NULL,
         rate REAL,
         started_unix_ms INTEGER,
         ended_unix_ms INTEGER,
         outcome TEXT NOT NULL,
         expected TEXT NOT NULL,
         retries INTEGER NOT NULL,
         recovery_ms INTEGER,
         detail TEXT NOT NULL
     );
     CREATE INDEX chaos_by_plan ON chaos_trials (plan, run_id);",
];

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
    /// What the model predicted before it ran.
    pub predicted: Option<RecordedPrediction>,
    /// The faults injected into it that acted (`--chaos`), comma-separated: its duration
    /// is not learned from.
    pub chaos: Option<String>,
}

/// One chaos trial, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    /// The step.
    pub step: String,
    /// The fault.
    pub fault: String,
    /// The attempt it was injected into.
    pub attempt: u32,
    /// The run's seed.
    pub seed: u64,
    /// The rate it was injected at.
    pub rate: Option<f64>,
    /// When the fault started acting, milliseconds since the epoch.
    pub started_unix_ms: Option<u64>,
    /// When it stopped.
    pub ended_unix_ms: Option<u64>,
    /// `recovered`, `degraded` or `failed`.
    pub outcome: String,
    /// What the plan's recovery paths should have achieved.
    pub expected: String,
    /// Attempts after the faulted one.
    pub retries: u32,
    /// From the fault to the step's success.
    pub recovery_ms: Option<u64>,
    /// What happened.
    pub detail: String,
}

/// A prediction as recorded beside the step it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPrediction {
    /// The median.
    pub p50: Duration,
    /// The 80th percentile.
    pub p80: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The model layer that made it (`Source::name`).
    pub model: String,
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
    /// The commit the plan's root was at, when it is a git checkout.
    pub git_commit: Option<String>,
    /// Its steps.
    pub steps: Vec<StepRecord>,
}

/// A past run, as the model and the report read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastRun {
    /// Its id in the history (increasing with time).
    pub id: i64,
    /// When it started, milliseconds since the epoch.
    pub started_unix_ms: u64,
    /// Its wall-clock time.
    pub wall: Duration,
    /// The machine it ran on.
    pub runner_class: String,
    /// The commit it ran at.
    pub git_commit: Option<String>,
    /// Its steps, in the order they finished.
    pub steps: Vec<StepRecord>,
}

/// One step of a past run, as [`History::learn`] streams it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnRow<'a> {
    /// The run's id.
    pub run: i64,
    /// The step id.
    pub step: &'a str,
    /// Wall-clock time of all its attempts.
    pub duration: Duration,
    /// Whether it was restored from the cache.
    pub cache_hit: bool,
    /// Whether it succeeded (only those teach the model).
    pub succeeded: bool,
    /// Bytes of its inputs, when known.
    pub input_bytes: Option<u64>,
    /// Files changed since its previous run, when known.
    pub changed_files: Option<u64>,
    /// The run's runner class.
    pub runner_class: &'a str,
    /// The run's commit.
    pub git_commit: Option<&'a str>,
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

/// A stored count or duration; a negative one (never written, but the file is not ours
/// alone) reads as zero.
fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
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
    /// clock jump) are left out. Returns the run's id (for [`History::record_trials`]).
    pub fn record(&self, run: &RunRecord) -> Result<i64, HistoryError> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO runs (plan, started_unix_ms, wall_ms, runner_class, git_commit)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                run.plan,
                to_i64(run.started_unix_ms),
                ms(run.wall),
                run.runner_class,
                run.git_commit,
            ],
        )?;
        let run_id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO steps (run_id, plan, step, action_key, started_unix_ms, duration_ms,
                     queue_ms, exit_code, state, attempts, cache_hit, changed_files, input_bytes,
                     input_files, runner_class, predicted_p50_ms, predicted_p80_ms,
                     predicted_p90_ms, model, chaos)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19, ?20)",
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
                    s.predicted.as_ref().map(|p| ms(p.p50)),
                    s.predicted.as_ref().map(|p| ms(p.p80)),
                    s.predicted.as_ref().map(|p| ms(p.p90)),
                    s.predicted.as_ref().map(|p| p.model.as_str()),
                    s.chaos,
                ])?;
            }
        }
        // Retention: the plan's oldest runs beyond the last KEEP_RUNS go.
        tx.execute(
            "DELETE FROM chaos_trials WHERE plan = ?1 AND run_id <= (
                 SELECT id FROM runs WHERE plan = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![run.plan, KEEP_RUNS],
        )?;
        tx.execute(
            "DELETE FROM steps WHERE plan = ?1 AND run_id <= (
                 SELECT id FROM runs WHERE plan = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![run.plan, KEEP_RUNS],
        )?;
        tx.execute(
            "DELETE FROM runs WHERE plan = ?1 AND id <= (
                 SELECT id FROM runs WHERE plan = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![run.plan, KEEP_RUNS],
        )?;
        tx.commit()?;
        Ok(run_id)
    }

    /// Records the chaos trials of run `run_id` of `plan` (the id [`History::record`]
    /// returned).
    pub fn record_trials(
        &self,
        plan: &str,
        run_id: i64,
        trials: &[TrialRecord],
    ) -> Result<(), HistoryError> {
        let tx = self.db.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chaos_trials (run_id, plan, step, fault, attempt, seed, rate,
                     started_unix_ms, ended_unix_ms, outcome, expected, retries, recovery_ms,
                     detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for t in trials {
                insert.execute(params![
                    run_id,
                    plan,
                    t.step,
                    t.fault,
                    t.attempt,
                    t.seed.to_string(),
                    t.rate,
                    t.started_unix_ms.map(to_i64),
                    t.ended_unix_ms.map(to_i64),
                    t.outcome,
                    t.expected,
                    t.retries,
                    t.recovery_ms.map(to_i64),
                    t.detail,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The id of the last run of `plan` recorded.
    pub fn last_run(&self, plan: &str) -> Result<Option<i64>, HistoryError> {
        Ok(self
            .db
            .query_row(
                "SELECT MAX(id) FROM runs WHERE plan = ?1",
                params![plan],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The chaos trials of the last `limit` runs of `plan`, oldest first, with their run's
    /// id.
    pub fn trials(
        &self,
        plan: &str,
        limit: usize,
    ) -> Result<Vec<(i64, TrialRecord)>, HistoryError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = self.db.prepare_cached(
            "SELECT run_id, step, fault, attempt, seed, rate, started_unix_ms, ended_unix_ms,
                    outcome, expected, retries, recovery_ms, detail
             FROM chaos_trials WHERE plan = ?1 AND run_id >= COALESCE((
                 SELECT MIN(id) FROM (SELECT id FROM runs WHERE plan = ?1
                                      ORDER BY id DESC LIMIT ?2)), 0)
             ORDER BY run_id, rowid",
        )?;
        let rows = stmt.query_map(params![plan, to_i64(limit as u64)], |r| {
            let opt = |i| -> rusqlite::Result<Option<u64>> {
                Ok(r.get::<_, Option<i64>>(i)?.map(from_i64))
            };
            Ok((
                r.get(0)?,
                TrialRecord {
                    step: r.get(1)?,
                    fault: r.get(2)?,
                    attempt: r.get(3)?,
                    seed: r.get::<_, String>(4)?.parse().unwrap_or(0),
                    rate: r.get(5)?,
                    started_unix_ms: opt(6)?,
                    ended_unix_ms: opt(7)?,
                    outcome: r.get(8)?,
                    expected: r.get(9)?,
                    retries: r.get(10)?,
                    recovery_ms: opt(11)?,
                    detail: r.get(12)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last `limit` runs of `plan`, oldest first, each with its steps in the order
    /// they finished. Two queries, whatever the number of runs.
    pub fn replay(&self, plan: &str, limit: usize) -> Result<Vec<PastRun>, HistoryError> {
        let mut runs_stmt = self.db.prepare_cached(
            "SELECT id, started_unix_ms, wall_ms, runner_class, git_commit FROM runs
             WHERE plan = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let mut runs: Vec<PastRun> = runs_stmt
            .query_map(params![plan, to_i64(limit as u64)], |r| {
                Ok(PastRun {
                    id: r.get(0)?,
                    started_unix_ms: from_i64(r.get(1)?),
                    wall: Duration::from_millis(from_i64(r.get(2)?)),
                    runner_class: r.get(3)?,
                    git_commit: r.get(4)?,
                    steps: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        runs.reverse();
        let Some(first) = runs.first().map(|r| r.id) else {
            return Ok(runs);
        };
        let mut steps_stmt = self.db.prepare_cached(
            "SELECT run_id, step, action_key, started_unix_ms, duration_ms, queue_ms, exit_code,
                    state, attempts, cache_hit, changed_files, input_bytes, input_files,
                    predicted_p50_ms, predicted_p80_ms, predicted_p90_ms, model, chaos
             FROM steps WHERE plan = ?1 AND run_id >= ?2
             ORDER BY run_id, started_unix_ms + duration_ms, rowid",
        )?;
        let index: std::collections::HashMap<i64, usize> =
            runs.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        let rows = steps_stmt.query_map(params![plan, first], |r| {
            let opt = |i| -> rusqlite::Result<Option<u64>> {
                Ok(r.get::<_, Option<i64>>(i)?.map(from_i64))
            };
            let predicted = match (
                opt(13)?,
                opt(14)?,
                opt(15)?,
                r.get::<_, Option<String>>(16)?,
            ) {
                (Some(p50), Some(p80), Some(p90), Some(model)) => Some(RecordedPrediction {
                    p50: Duration::from_millis(p50),
                    p80: Duration::from_millis(p80),
                    p90: Duration::from_millis(p90),
                    model,
                }),
                _ => None,
            };
            Ok((
                r.get::<_, i64>(0)?,
                StepRecord {
                    step: r.get(1)?,
                    action_key: r.get(2)?,
                    started_unix_ms: from_i64(r.get(3)?),
                    duration: Duration::from_millis(from_i64(r.get(4)?)),
                    queue: Duration::from_millis(from_i64(r.get(5)?)),
                    exit_code: r.get(6)?,
                    state: r.get(7)?,
                    attempts: r.get(8)?,
                    cache_hit: r.get(9)?,
                    changed_files: opt(10)?,
                    input_bytes: opt(11)?,
                    input_files: opt(12)?,
                    predicted,
                    chaos: r.get(17)?,
                },
            ))
        })?;
        for row in rows {
            let (run_id, step) = row?;
            if let Some(&i) = index.get(&run_id) {
                runs[i].steps.push(step);
            }
        }
        Ok(runs)
    }

    /// Streams the steps of the last `limit` runs of `plan` to `f`, oldest run first and
    /// each run's steps in the order they finished, borrowed from the database: what the
    /// model learns from before every run, without building a [`PastRun`] per run.
    pub fn learn(
        &self,
        plan: &str,
        limit: usize,
        mut f: impl FnMut(LearnRow<'_>),
    ) -> Result<(), HistoryError> {
        let mut runs_stmt = self.db.prepare_cached(
            "SELECT id, runner_class, git_commit FROM runs
             WHERE plan = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let runs: Vec<(i64, String, Option<String>)> = runs_stmt
            .query_map(params![plan, to_i64(limit as u64)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let Some(first) = runs.iter().map(|r| r.0).min() else {
            return Ok(());
        };
        let by_id: std::collections::HashMap<i64, usize> =
            runs.iter().enumerate().map(|(i, r)| (r.0, i)).collect();
        let mut stmt = self.db.prepare_cached(
            "SELECT run_id, step, duration_ms, cache_hit, state, input_bytes, changed_files,
                    chaos IS NOT NULL
             FROM steps WHERE plan = ?1 AND run_id >= ?2
             ORDER BY run_id, started_unix_ms + duration_ms, rowid",
        )?;
        let mut rows = stmt.query(params![plan, first])?;
        while let Some(r) = rows.next()? {
            let Some(&i) = by_id.get(&r.get::<_, i64>(0)?) else {
                continue;
            };
            let (id, runner_class, git_commit) = &runs[i];
            let opt = |i| -> rusqlite::Result<Option<u64>> {
                Ok(r.get::<_, Option<i64>>(i)?.map(from_i64))
            };
            f(LearnRow {
                run: *id,
                step: r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?,
                duration: Duration::from_millis(from_i64(r.get(2)?)),
                cache_hit: r.get(3)?,
                // A step a fault acted on teaches the model nothing about its duration.
                succeeded: r.get_ref(4)?.as_str().map_err(rusqlite::Error::from)? == "succeeded"
                    && !r.get::<_, bool>(7)?,
                input_bytes: opt(5)?,
                changed_files: opt(6)?,
                runner_class,
                git_commit: git_commit.as_deref(),
            });
        }
        Ok(())
    }

    /// The plans the history has runs of, by name.
    pub fn plans(&self) -> Result<Vec<String>, HistoryError> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT DISTINCT plan FROM runs ORDER BY plan")?;
        let plans = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(plans)
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
            predicted: None,
            chaos: None,
        }
    }

    fn run(started: u64, steps: Vec<StepRecord>) -> RunRecord {
        RunRecord {
            plan: "demo".into(),
            started_unix_ms: started,
            wall: Duration::from_secs(1),
            runner_class: "cpu2-mem24g-linux-local".into(),
            git_commit: None,
            steps,
        }
    }

    #[test]
    fn chaos_trials_are_kept_beside_their_run_and_faulted_steps_teach_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("history.db")).unwrap();
        assert_eq!(h.last_run("demo").unwrap(), None);
        let mut killed = step("build", 900, false);
        killed.chaos = Some("kill_job".into());
        let id = h
            .record(&run(1, vec![killed, step("test", 50, false)]))
            .unwrap();
        assert_eq!(h.last_run("demo").unwrap(), Some(id));
        let trial = TrialRecord {
            step: "build".into(),
            fault: "kill_job".into(),
            attempt: 1,
            seed: (1 << 53) - 1,
            rate: Some(0.25),
            started_unix_ms: Some(1_700_000_000_100),
            ended_unix_ms: Some(1_700_000_000_200),
            outcome: "recovered".into(),
            expected: "recovered".into(),
            retries: 1,
            recovery_ms: Some(800),
            detail: "SIGKILL to the step's process group 100 ms after it started".into(),
        };
        h.record_trials("demo", id, std::slice::from_ref(&trial))
            .unwrap();
        assert_eq!(h.trials("demo", 10).unwrap(), [(id, trial.clone())]);
        assert_eq!(h.trials("other", 10).unwrap(), []);
        let chaos: Vec<(String, Option<String>)> = h.replay("demo", 1).unwrap()[0]
            .steps
            .iter()
            .map(|s| (s.step.clone(), s.chaos.clone()))
            .collect();
        assert_eq!(
            chaos,
            [
                ("test".to_string(), None),
                ("build".to_string(), Some("kill_job".to_string()))
            ]
        );
        // The killed step's duration is not learned from; the other one is.
        let mut learned = Vec::new();
        h.learn("demo", 10, |row| {
            learned.push((row.step.to_string(), row.succeeded))
        })
        .unwrap();
        assert_eq!(
            learned,
            [("test".to_string(), true), ("build".to_string(), false)]
        );
        assert_eq!(h.trials("demo", 0).unwrap(), []);
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
        let predicted = RecordedPrediction {
            p50: Duration::from_millis(90),
            p80: Duration::from_millis(110),
            p90: Duration::from_millis(130),
            model: "step+outcome".into(),
        };
        let mut third = run(3, vec![step("test", 70, false), step("build", 10, false)]);
        third.git_commit = Some("c0ffee".into());
        third.steps[1].predicted = Some(predicted.clone());
        h.record(&third).unwrap();
        let runs = h.replay("demo", 10).unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(
            runs.iter().map(|r| r.started_unix_ms).collect::<Vec<_>>(),
            [1, 2, 3],
            "oldest first"
        );
        let summary = |r: &PastRun| {
            r.steps
                .iter()
                .map(|s| (s.step.clone(), s.duration.as_millis(), s.cache_hit))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            summary(&runs[0]),
            [("test".into(), 50, false), ("build".into(), 100, false)],
            "steps in the order they finished"
        );
        assert_eq!(summary(&runs[1]), [("build".into(), 120, true)]);
        // Steps in the order they finished: build (10 ms) before test (70 ms).
        assert_eq!(runs[2].steps[0].step, "build");
        assert_eq!(runs[2].steps[0].predicted, Some(predicted));
        assert_eq!(runs[2].git_commit.as_deref(), Some("c0ffee"));
        assert_eq!(runs[2].steps[1], third.steps[0]);
        let last = h.replay("demo", 1).unwrap();
        assert_eq!(last, runs[2..]);
        assert!(h.replay("other", 10).unwrap().is_empty());
        assert_eq!(h.plans().unwrap(), ["demo"]);
        // The stream the model learns from says what replay says.
        for limit in [1, 2, 10] {
            let mut streamed = Vec::new();
            h.learn("demo", limit, |r| {
                streamed.push((r.run, r.step.to_string(), r.duration, r.cache_hit));
                assert_eq!(r.runner_class, "cpu2-mem24g-linux-local");
            })
            .unwrap();
            let replayed: Vec<_> = h
                .replay("demo", limit)
                .unwrap()
                .into_iter()
                .flat_map(|run| {
                    run.steps
                        .into_iter()
                        .map(move |s| (run.id, s.step, s.duration, s.cache_hit))
                })
                .collect();
            assert_eq!(streamed, replayed, "limit {limit}");
        }
    }

    #[test]
    fn only_the_last_runs_of_a_plan_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("history.db")).unwrap();
        let keep = usize::try_from(KEEP_RUNS).unwrap();
        for i in 0..keep + 3 {
            h.record(&run(i as u64, vec![step("build", 10, false)]))
                .unwrap();
        }
        let mut other = run(0, vec![step("build", 10, false)]);
        other.plan = "other".into();
        h.record(&other).unwrap();
        assert_eq!(h.runs("demo").unwrap(), KEEP_RUNS as u64);
        assert_eq!(h.runs("other").unwrap(), 1, "other plans are left alone");
        let all = h.replay("demo", keep + 10).unwrap();
        assert_eq!(all.len(), keep);
        assert_eq!(all[0].started_unix_ms, 3, "the oldest three went");
        let rows: i64 =
            h.db.query_row("SELECT COUNT(*) FROM steps WHERE plan = 'demo'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, KEEP_RUNS, "and their steps with them");
    }

    #[test]
    fn a_version_1_history_is_migrated_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(MIGRATIONS[0]).unwrap();
            db.pragma_update(None, "user_version", 1).unwrap();
            db.execute_batch(
                "INSERT INTO runs VALUES (1, 'demo', 5, 1000, 'r');
                 INSERT INTO steps VALUES (1, 'demo', 'build', NULL, 5, 700, 0, 0, 'succeeded',
                     1, 0, NULL, NULL, NULL, 'r');",
            )
            .unwrap();
        }
        let h = History::open(&path).unwrap();
        assert_eq!(h.version().unwrap(), SCHEMA_VERSION);
        let runs = h.replay("demo", 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].steps[0].duration, Duration::from_millis(700));
        assert_eq!(runs[0].steps[0].predicted, None);
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
            let mut ids: Vec<i64> = hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
            ids.sort_unstable();
            assert_eq!(ids, [1, 2, 3, 4, 5, 6], "each run gets its own id");
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
