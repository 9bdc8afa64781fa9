//! Run records from an NDJSON file (what `ci-intel report` reads, and what other tools may
//! have appended to): arbitrary bytes as the file. Reading must skip what is not a record
//! and never panic; every record read renders as a page, writes back as one line that
//! reads back to itself, and downgrades to v1.2 or says why not.
#![no_main]

use ci_intel_insight::html::{ReportOptions, read_records, render};
use ci_intel_insight::record::RunRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("runs.ndjson");
    std::fs::write(&path, data).expect("writing the input");
    let Ok(read) = read_records(&path, 0) else {
        return;
    };
    let lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert!(read.records.len() + read.skipped_lines <= lines);
    for r in &read.records {
        let line = r.to_line();
        let back: RunRecord = serde_json::from_str(&line).expect("a written record reads back");
        assert_eq!(back.to_line(), line);
        if let Err(e) = r.to_v1_2() {
            assert!(!e.missing.is_empty());
        }
    }
    let page = render(&read.records, &ReportOptions::default());
    assert!(page.starts_with("<!DOCTYPE html>"));
});
