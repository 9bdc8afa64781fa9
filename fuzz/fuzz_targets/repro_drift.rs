//! The drift report on two arbitrary files (a step's outputs are untrusted): the same file
//! name under two roots, named like an archive the report opens (tar, gzip, zip, jar,
//! wheel, ar, deb) or like nothing, compared with `compare` (without diffoscope).
//!
//! Input: the first byte picks the name, the next two (little-endian) say how many of the
//! remaining bytes are the first file; the rest is the second file.
//!
//! Nothing may panic; the report says the trees are identical exactly when the two files'
//! bytes are equal, names the file otherwise, renders, and survives a JSON round trip.
#![no_main]

use std::fs;

use ci_intel_repro::drift::{CompareOptions, DriftReport, compare};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "out.tar",
    "out.tar.gz",
    "out.tgz",
    "out.gz",
    "out.zip",
    "app.jar",
    "pkg.whl",
    "lib.a",
    "pkg.deb",
    "out.bin",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (len, rest) = match rest {
        [lo, hi, rest @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), rest),
        _ => (0, rest),
    };
    let (a, b) = rest.split_at(len.min(rest.len()));
    let name = NAMES[usize::from(pick) % NAMES.len()];

    let dir = tempfile::tempdir().expect("a temporary directory");
    let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
    for (root, bytes) in [(&root_a, a), (&root_b, b)] {
        fs::create_dir(root).expect("making a root");
        fs::write(root.join(name), bytes).expect("writing a file");
    }
    let (hint_a, hint_b) = (root_a.to_string_lossy(), root_b.to_string_lossy());
    let opts = CompareOptions {
        a_root_hint: &hint_a,
        b_root_hint: &hint_b,
        hostnames: &["fuzz-a", "fuzz-b"],
        use_diffoscope: false,
        run_times: &[1_600_000_000],
        ..CompareOptions::default()
    };
    let report = compare(&root_a, &root_b, &[], &opts).expect("both trees are readable");
    assert_eq!(report.identical, a == b, "{report:?}");
    if !report.identical {
        assert!(report.files.iter().any(|f| f.path == name), "{report:?}");
    }
    let text = report.render_text();
    assert!(!text.is_empty());
    let json = serde_json::to_string(&report).expect("the report as JSON");
    let back: DriftReport = serde_json::from_str(&json).expect("the report's JSON reads back");
    assert!(
        back == report,
        "the JSON round trip changed the report: {json}"
    );
    assert_eq!(back.digest(), report.digest());
});
