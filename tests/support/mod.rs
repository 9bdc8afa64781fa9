//! What every end-to-end test starts the binary with.

use std::process::Command;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ci-intel");

/// Where every run a test starts appends its record (`CI_INTEL_TELEMETRY`), for
/// tests/zz_records.rs to validate against the schema after the others ran.
pub(crate) fn emitted_records() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("emitted-records.ndjson")
}

/// The binary with none of the caller's CI settings: no `CI`, `GITHUB_*`,
/// `RUNNER_*`, `CI_INTEL_*`, `OTEL_*`, `TRACEPARENT` or `SOURCE_DATE_EPOCH`. A test means
/// the same on a laptop and on a CI runner; a test that wants one of them sets it. Run
/// records also go to [`emitted_records`].
pub(crate) fn ci_intel() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n == "CI"
            || n == "SOURCE_DATE_EPOCH"
            || n.starts_with("GITHUB_")
            || n.starts_with("RUNNER_")
            || n.starts_with("CI_INTEL_")
            || n.starts_with("OTEL_")
            || n == "TRACEPARENT"
        {
            cmd.env_remove(&name);
        }
    }
    cmd.env("CI_INTEL_TELEMETRY", emitted_records());
    cmd
}
