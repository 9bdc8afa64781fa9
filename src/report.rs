//! What a person sees: live lines, a progress bar on a terminal, the summary table.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ci_intel_executor::OutputSink;
use ci_intel_scheduler::{Event, Observer, RunReport, StepState};
use indicatif::{ProgressBar, ProgressStyle};

/// Prints events and step output; a progress bar when stdout is a terminal.
pub(crate) struct Reporter {
    bar: Option<ProgressBar>,
    running: Mutex<Vec<String>>,
}

impl Reporter {
    pub(crate) fn new(total: usize) -> Reporter {
        let bar = std::io::stdout().is_terminal().then(|| {
            // Draw where the live lines go: stdout is the terminal we checked.
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                indicatif::ProgressDrawTarget::stdout(),
            );
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Reporter {
            bar,
            running: Mutex::new(Vec::new()),
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        }
    }

    fn set_running(&self, f: impl FnOnce(&mut Vec<String>)) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        f(&mut running);
        if let Some(bar) = &self.bar {
            bar.set_message(running.join(", "));
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

impl Observer for Reporter {
    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Started { step, attempt } => {
                self.set_running(|r| r.push(step.id.clone()));
                if *attempt == 1 {
                    self.println(&format!("     START {}", step.id));
                } else {
                    self.println(&format!("     START {} (attempt {attempt})", step.id));
                }
            }
            Event::Retrying {
                step,
                outcome,
                next_attempt,
                delay,
            } => {
                self.set_running(|r| r.retain(|s| *s != step.id));
                self.println(&format!(
                    "     RETRY {} ({}; attempt {next_attempt} of {} in {})",
                    step.id,
                    outcome
                        .message
                        .as_deref()
                        .unwrap_or(outcome.status.as_str()),
                    step.retries.count + 1,
                    secs(*delay)
                ));
            }
            Event::Finished { step, result } => {
                self.set_running(|r| r.retain(|s| *s != step.id));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
                let detail = result
                    .outcome
                    .as_ref()
                    .and_then(|o| o.message.clone())
                    .unwrap_or_default();
                let line = match &result.state {
                    StepState::Succeeded => {
                        format!("      PASS {} ({})", step.id, secs(result.duration))
                    }
                    StepState::Skipped(reason) => format!("      SKIP {}: {reason}", step.id),
                    state => {
                        let tag = match state {
                            StepState::TimedOut => "   TIMEOUT",
                            StepState::Cancelled => "    CANCEL",
                            StepState::AllowedFailure => "  FAIL(ok)",
                            _ => "      FAIL",
                        };
                        let log = result
                            .outcome
                            .as_ref()
                            .map(|o| format!("; log: {}", o.log_path.display()))
                            .unwrap_or_default();
                        format!(
                            "{tag} {} ({detail}, {}{log})",
                            step.id,
                            secs(result.duration)
                        )
                    }
                };
                self.println(&line);
            }
            Event::Stopping { reason } => self.println(&format!("      STOP {reason}")),
        }
    }
}

impl OutputSink for Reporter {
    fn line(&self, step: &str, line: &[u8]) {
        self.println(&format!("[{step}] {}", String::from_utf8_lossy(line)));
    }
}

/// The table printed at the end of a run.
pub(crate) fn summary(report: &RunReport, run_dir: &Path) -> String {
    let width = report
        .results
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "\n{:<width$}  {:<16}  {:>9}  {:>8}\n",
        "STEP", "STATUS", "DURATION", "ATTEMPTS"
    );
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in &report.results {
        s.push_str(&format!(
            "{:<width$}  {:<16}  {:>9}  {:>8}\n",
            r.id,
            r.state.label(),
            if r.attempts == 0 {
                "-".into()
            } else {
                secs(r.duration)
            },
            r.attempts
        ));
        match counts.iter_mut().find(|(l, _)| *l == r.state.label()) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.state.label(), 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
    s.push_str(&format!(
        "\n{} step{}: {}; wall {}; logs in {}\n",
        report.results.len(),
        if report.results.len() == 1 { "" } else { "s" },
        counts.join(", "),
        secs(report.wall),
        run_dir.display()
    ));
    s
}

/// The last `n` lines of a file, for failure excerpts.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(8192);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
