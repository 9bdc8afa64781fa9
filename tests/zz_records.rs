//! Every run record the end-to-end tests made validates against `pipeline_run.v1.3`.
//!
//! Named to run after the other test binaries (cargo runs them in name order): each run
//! they start appends its record to one file (`support::emitted_records`), taken away
//! and checked here. Run alone, it makes a record of its own first, so it never passes on
//! an empty file.
#[path = "support/records.rs"]
mod records;
mod support;

#[test]
fn every_record_the_suite_emitted_is_valid() {
    let path = support::emitted_records();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plan.toml"),
        "version = 1\nname = \"zz\"\n[steps.ok]\nrun = \"true\"\n[steps.bad]\nrun = \"exit 3\"\n",
    )
    .unwrap();
    let out = support::ci_intel()
        .args(["run", "plan.toml", "--no-cache"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Taken away before it is checked: a bad record fails this run, not every later one.
    let taken = dir.path().join("emitted.ndjson");
    std::fs::rename(&path, &taken).unwrap();
    let all = records::read_valid(&taken);
    assert!(
        all.iter().any(|r| r["plan"] == "zz"),
        "this test's own run is among the records"
    );
    let plans: std::collections::BTreeSet<&str> =
        all.iter().filter_map(|r| r["plan"].as_str()).collect();
    println!("{} records of {} plans validate", all.len(), plans.len());
}
