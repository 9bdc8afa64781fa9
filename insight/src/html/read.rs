//! Reading the run history: NDJSON, one record a line, oldest first.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::record::RunRecord;

/// The records read, and how many lines were not records.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Oldest first, as in the file.
    pub records: Vec<RunRecord>,
    /// Non-blank lines that were not valid records (a line torn by a crash mid-write, a
    /// record of another schema), skipped.
    pub skipped_lines: usize,
}

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened (it does not exist before the first run).
    #[error("could not open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading failed part way.
    #[error("could not read {} after line {line}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Lines read before the failure.
        line: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ReadError {
    /// Whether the file does not exist: no run has recorded anything there yet.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The last `last` records of the NDJSON file at `path` (all of them when `last` is 0).
///
/// A line that is not a valid record is skipped and counted, so a torn last line after a
/// crash, or a record written by a newer version with a shape this one cannot read, does
/// not stop the report. Blank lines are ignored.
pub fn read_records(path: &Path, last: usize) -> Result<Records, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut kept: VecDeque<RunRecord> = VecDeque::new();
    let mut skipped_lines = 0;
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| ReadError::Read {
                path: path.to_path_buf(),
                line: n,
                source,
            })?;
        if read == 0 {
            break;
        }
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<RunRecord>(&line) {
            Ok(r) => {
                if last > 0 && kept.len() == last {
                    kept.pop_front();
                }
                kept.push_back(r);
            }
            Err(_) => skipped_lines += 1,
        }
    }
    Ok(Records {
        records: kept.into(),
        skipped_lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(run_id: &str) -> String {
        serde_json::json!({
            "schema": "pipeline_run.v1.3", "run_id": run_id,
            "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:01:00.000Z",
            "status": "success", "jobs": [],
            "tests": {"total": 0, "failed": 0, "duration_ms": 0}, "cost": {},
        })
        .to_string()
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.ndjson");
        let a = line("a");
        let b = line("b");
        let torn = &line("c")[..40];
        std::fs::write(
            &path,
            format!("{a}\n\n{b}\n{{\"not\": \"a record\"}}\n{torn}"),
        )
        .unwrap();
        let got = read_records(&path, 0).unwrap();
        let ids: Vec<&str> = got.records.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(got.skipped_lines, 2, "the foreign object and the torn line");
    }

    #[test]
    fn keeps_only_the_last_records_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.ndjson");
        let text: String = ["a", "b", "c", "d"]
            .iter()
            .map(|id| line(id) + "\n")
            .collect();
        std::fs::write(&path, text).unwrap();
        let got = read_records(&path, 2).unwrap();
        let ids: Vec<&str> = got.records.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "d"]);
        assert_eq!(got.skipped_lines, 0);
    }

    #[test]
    fn invalid_utf8_is_a_skipped_line_and_a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.ndjson");
        let mut bytes = line("a").into_bytes();
        bytes.extend_from_slice(b"\n{\"run_id\": \"\xff\xfe\n");
        std::fs::write(&path, bytes).unwrap();
        let got = read_records(&path, 0).unwrap();
        assert_eq!((got.records.len(), got.skipped_lines), (1, 1));

        let err = read_records(&dir.path().join("absent.ndjson"), 0).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert!(err.to_string().starts_with("could not open "), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
