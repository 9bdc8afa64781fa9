//! The failure autopsy on arbitrary log bytes: `Rules::classify` with the built-in rules
//! and `redact` must never panic, and what they return keeps its promises.
//!
//! The first byte picks the step's ending (exit code, signal, timeout); the rest, lossily
//! decoded, is the log. A fixed secret is planted in the log when the second byte is odd.
#![no_main]

use ci_intel_insight::autopsy::{MAX_FINDINGS, REDACTED, Rules, StepContext, redact};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-s3cr3t-value";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut log = String::from_utf8_lossy(rest).into_owned();
    if rest.first().is_some_and(|b| b % 2 == 1) {
        let mut at = log.len() / 2;
        while !log.is_char_boundary(at) {
            at -= 1;
        }
        log.insert_str(at, SECRET);
    }
    let cx = StepContext {
        step: "fuzz",
        plan: "plan.toml",
        exit_code: (mode & 1 == 1).then_some(i32::from(mode >> 1)),
        signal: (mode & 3 == 2).then_some(9),
        timed_out: mode == 0xff,
        secrets: &[SECRET],
    };
    let findings = Rules::builtin().classify(&log, &cx);
    assert!(findings.len() <= MAX_FINDINGS, "{} findings", findings.len());
    for f in &findings {
        assert!(!f.message.contains(SECRET), "a secret in {f:?}");
        assert!(!f.suggestion.contains(SECRET), "a secret in {f:?}");
        assert!(f.line.is_none_or(|l| l >= 1), "{f:?}");
        assert!(f.docs_uri.starts_with("https://"), "{f:?}");
    }
    let redacted = redact(&log, &[SECRET]);
    assert!(!redacted.contains(SECRET), "the secret survived redaction");
    if log.contains(SECRET) {
        assert!(redacted.contains(REDACTED));
    }
});
