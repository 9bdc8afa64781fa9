//! What every end-to-end test starts the binary with.

use std::process::Command;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ci-intel");

/// The binary with none of the caller's CI settings: no `CI`, `GITHUB_*`,
/// `RUNNER_*`, `CI_INTEL_*` or `SOURCE_DATE_EPOCH`. A test means the same on
/// a laptop and on a CI runner; a test that wants one of them sets it.
pub(crate) fn ci_intel() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n == "CI"
            || n == "SOURCE_DATE_EPOCH"
            || n.starts_with("GITHUB_")
            || n.starts_with("RUNNER_")
            || n.starts_with("CI_INTEL_")
        {
            cmd.env_remove(&name);
        }
    }
    cmd
}
