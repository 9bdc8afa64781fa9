//! The autopsy measured against real failure logs.
//!
//! `tests/fixtures/autopsy/` holds logs of failing builds really run (pytest, cargo, go,
//! jest, npm, pnpm, maven, gradle, gcc, clang, ld, docker, terraform, and failures of the
//! environment: out of memory, timeouts, a full disk, the network), written by
//! `scripts/autopsy-corpus`, and `labels.toml`, what each should be classified as.
//!
//! The prediction for a log is the rule of its top finding; the generic finding counts
//! as no prediction. Precision is the share of predictions that are right, recall the
//! share of labelled logs (label other than "none") predicted right. A log labelled
//! "none" and predicted generic is a true negative, and counts in neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ci_intel_insight::autopsy::{Finding, GENERIC_RULE, Rules, StepContext};
use serde::Deserialize;

const MIN_PRECISION: f64 = 0.9;
const MIN_RECALL: f64 = 0.8;
const MIN_LOCATION_ACCURACY: f64 = 0.9;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Labels {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    log: String,
    expect: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    file: Option<String>,
    line: Option<u32>,
    note: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/autopsy")
}

fn labels() -> Vec<Case> {
    let path = corpus_dir().join("labels.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    toml::from_str::<Labels>(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
        .case
}

/// Every case with its findings.
fn classified() -> Vec<(Case, Vec<Finding>)> {
    labels()
        .into_iter()
        .map(|case| {
            let path = corpus_dir().join(&case.log);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let log = String::from_utf8_lossy(&bytes);
            let cx = StepContext {
                step: "corpus",
                plan: "plan.toml",
                exit_code: case.exit_code,
                signal: case.signal,
                timed_out: case.timed_out,
                secrets: &[],
            };
            let findings = Rules::builtin().classify(&log, &cx);
            (case, findings)
        })
        .collect()
}

/// The predicted rule: the top finding's, unless it is the generic one.
fn prediction(findings: &[Finding]) -> &str {
    match findings.first() {
        Some(f) if f.rule != GENERIC_RULE => &f.rule,
        _ => "none",
    }
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 1.0 } else { n as f64 / d as f64 }
}

/// Whether `found` names `expected`: the same path, or one ending in it (logs often give
/// absolute paths).
fn same_file(found: &str, expected: &str) -> bool {
    found == expected || found.ends_with(&format!("/{expected}"))
}

#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

#[test]
fn the_autopsy_is_precise_and_finds_most_failures_in_the_corpus() {
    let results = classified();
    assert!(results.len() >= 50, "only {} labelled logs", results.len());
    let mut per_rule: BTreeMap<String, Counts> = BTreeMap::new();
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for (case, findings) in &results {
        let predicted = prediction(findings);
        let expected = case.expect.as_str();
        match (expected, predicted) {
            ("none", "none") => tn += 1,
            (e, p) if e == p => {
                tp += 1;
                per_rule.entry(e.to_owned()).or_default().tp += 1;
            }
            (e, p) => {
                if p != "none" {
                    fp += 1;
                    per_rule.entry(p.to_owned()).or_default().fp += 1;
                }
                if e != "none" {
                    fn_ += 1;
                    per_rule.entry(e.to_owned()).or_default().fn_ += 1;
                }
                let top = findings
                    .first()
                    .map_or(String::new(), |f| f.message.clone());
                wrong.push(format!(
                    "{}: expected {e}, predicted {p} ({:.80})",
                    case.log, top
                ));
            }
        }
    }
    println!(
        "{:<26} {:>3} {:>3} {:>3} {:>9} {:>7}",
        "rule", "tp", "fp", "fn", "precision", "recall"
    );
    for (rule, c) in &per_rule {
        println!(
            "{rule:<26} {:>3} {:>3} {:>3} {:>9.2} {:>7.2}",
            c.tp,
            c.fp,
            c.fn_,
            ratio(c.tp, c.tp + c.fp),
            ratio(c.tp, c.tp + c.fn_)
        );
    }
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    println!(
        "{:<26} {tp:>3} {fp:>3} {fn_:>3} {precision:>9.2} {recall:>7.2}   ({} logs, {tn} true negatives)",
        "overall",
        results.len()
    );
    for w in &wrong {
        println!("  miss: {w}");
    }
    assert!(
        precision >= MIN_PRECISION,
        "precision {precision:.2} is below {MIN_PRECISION}: {tp} right, {fp} wrong predictions\n{}",
        wrong.join("\n")
    );
    assert!(
        recall >= MIN_RECALL,
        "recall {recall:.2} is below {MIN_RECALL}: {tp} of {} labelled failures classified\n{}",
        tp + fn_,
        wrong.join("\n")
    );
}

#[test]
fn the_top_finding_points_at_the_labelled_location() {
    let mut checked = 0;
    let mut misses = Vec::new();
    for (case, findings) in classified() {
        let Some(expected_file) = &case.file else {
            continue;
        };
        if prediction(&findings) != case.expect {
            // Counted by the precision and recall test.
            continue;
        }
        checked += 1;
        let top = &findings[0];
        let file_ok = top
            .file
            .as_deref()
            .is_some_and(|f| same_file(f, expected_file));
        let line_ok = case.line.is_none() || top.line == case.line;
        if !(file_ok && line_ok) {
            misses.push(format!(
                "{}: expected {expected_file}:{:?}, found {:?}:{:?}",
                case.log, case.line, top.file, top.line
            ));
        }
    }
    let accuracy = ratio(checked - misses.len(), checked);
    println!(
        "locations: {}/{checked} right ({accuracy:.2})",
        checked - misses.len()
    );
    for m in &misses {
        println!("  miss: {m}");
    }
    assert!(checked >= 20, "only {checked} labelled locations");
    assert!(
        accuracy >= MIN_LOCATION_ACCURACY,
        "location accuracy {accuracy:.2} is below {MIN_LOCATION_ACCURACY}:\n{}",
        misses.join("\n")
    );
}

#[test]
fn every_failed_step_in_the_corpus_gets_a_finding_with_docs_and_a_suggestion() {
    for (case, findings) in classified() {
        assert!(!findings.is_empty(), "{}: no finding", case.log);
        for f in &findings {
            assert!(f.docs_uri.starts_with("https://"), "{}: {f:?}", case.log);
            assert!(!f.suggestion.is_empty(), "{}: {f:?}", case.log);
            assert!(f.message.chars().count() <= 500, "{}: {f:?}", case.log);
            assert_eq!(f.repro, "ci-intel run plan.toml --step corpus");
        }
        assert!(!case.note.is_empty(), "{}: the label has no note", case.log);
    }
}

#[test]
fn the_labels_and_the_logs_match_one_to_one() {
    let labelled: Vec<String> = labels().into_iter().map(|c| c.log).collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory exists")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".log"))
        .collect();
    on_disk.sort();
    let mut sorted = labelled.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), labelled.len(), "a log is labelled twice");
    assert_eq!(sorted, on_disk, "labelled logs and logs on disk differ");
    let rules: Vec<&str> = Rules::builtin().ids().collect();
    for case in labels() {
        assert!(
            case.expect == "none" || rules.contains(&case.expect.as_str()),
            "{}: label {} is not a rule",
            case.log,
            case.expect
        );
        assert!(
            case.exit_code.is_some() || case.signal.is_some() || case.timed_out,
            "{}: the label does not say how the step failed",
            case.log
        );
    }
}
