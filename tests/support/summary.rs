//! Reading a run's summary table.

/// The STATUS column of `step` in the summary table of a run's stdout.
pub(crate) fn status(stdout: &str, step: &str) -> Option<String> {
    let table = stdout.split_once("\nSTEP ").map_or("", |t| t.1);
    table.lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(step)).then(|| cols.next().unwrap_or("").to_string())
    })
}
