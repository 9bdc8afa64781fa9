//! A run of the binary and its summary table.

use std::process::Output;

/// One run's result.
pub(crate) struct Ran {
    pub(crate) out: Output,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Ran {
        Ran {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            out,
        }
    }
}

impl Ran {
    /// Asserts the run exited 0.
    pub(crate) fn ok(&self) -> &Self {
        assert_eq!(self.out.status.code(), Some(0), "{}", self.show());
        self
    }

    /// Stdout and stderr, for assertion messages.
    pub(crate) fn show(&self) -> String {
        format!("{}\n--- stderr\n{}", self.stdout, self.stderr)
    }

    /// The STATUS column of `step` in the summary table.
    pub(crate) fn status(&self, step: &str) -> String {
        let table = self.stdout.split_once("\nSTEP ").map_or("", |t| t.1);
        table
            .lines()
            .find_map(|l| {
                let mut cols = l.split_whitespace();
                (cols.next() == Some(step)).then(|| cols.next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no row for {step}:\n{}", self.show()))
    }
}
