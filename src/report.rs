//! What a person sees: live lines, a progress bar on a terminal, the summary table.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ci_intel_executor::OutputSink;
use ci_intel_scheduler::{Event, Observer, Plan, RunReport, Selection, StepResult, StepState};
use indicatif::{ProgressBar, ProgressStyle};

/// Prints events and step output; a progress bar when stdout is a terminal.
///
/// Without a terminal, event lines are buffered until the dispatch loop waits
/// ([`Observer::flush`]), so a burst of events costs one write; a step's output line is
/// written at once, with whatever events precede it.
///
/// On GitHub Actions (`replay`), steps' output is not interleaved live: each step's log is
/// replayed when it ends, inside a `::group::` the log viewer folds.
pub(crate) struct Reporter {
    bar: Option<ProgressBar>,
    running: Mutex<Vec<String>>,
    pending: Mutex<Vec<u8>>,
    /// Replay each finished step's log (at most this many bytes of its end) in a group.
    replay: Option<u64>,
    /// The run's chaos log (every decision, a line each) and the run's seed.
    chaos_log: Option<(Mutex<std::fs::File>, u64)>,
}

impl Reporter {
    pub(crate) fn new(total: usize, replay: Option<u64>) -> Reporter {
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
            pending: Mutex::new(Vec::new()),
            replay,
            chaos_log: None,
        }
    }

    /// Logs every chaos decision to `path` (`--chaos`); a log that cannot be created is
    /// said once and the decisions are then only in the step logs and the run record.
    pub(crate) fn with_chaos_log(mut self, path: &Path, seed: u64) -> Reporter {
        match std::fs::File::create(path) {
            Ok(f) => self.chaos_log = Some((Mutex::new(f), seed)),
            Err(e) => tracing::warn!("chaos log {} not written: {e}", path.display()),
        }
        self
    }

    /// A finished step's log inside a workflow-command group.
    fn replay_log(&self, title: &str, log: &Path, limit: u64) {
        let text = crate::telemetry::read_tail(log, limit);
        let len = std::fs::metadata(log).map_or(0, |m| m.len());
        let mut block = ci_intel_insight::github::group(title);
        block.push('\n');
        if len > limit {
            block.push_str(&format!(
                "(the first {} bytes are in {})\n",
                len - limit,
                log.display()
            ));
        }
        block.push_str(&text);
        if !text.is_empty() && !text.ends_with('\n') {
            block.push('\n');
        }
        block.push_str("::endgroup::");
        self.println(&block, true);
    }

    /// Prints one line; `now` writes it (and anything buffered) at once.
    fn println(&self, line: &str, now: bool) {
        if let Some(bar) = &self.bar {
            bar.println(line);
            return;
        }
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        pending.extend_from_slice(line.as_bytes());
        pending.push(b'\n');
        if now || pending.len() >= 64 * 1024 {
            write_out(&mut pending);
        }
    }

    fn println_event(&self, line: &str) {
        self.println(line, false);
    }

    fn set_running(&self, f: impl FnOnce(&mut Vec<String>)) {
        let Some(bar) = &self.bar else {
            return;
        };
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        f(&mut running);
        bar.set_message(running.join(", "));
    }

    pub(crate) fn finish(&self) {
        Observer::flush(self);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Writes and empties `buf`, ignoring a closed stdout.
fn write_out(buf: &mut Vec<u8>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(buf);
    let _ = out.flush();
    buf.clear();
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

impl Observer for Reporter {
    fn flush(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            if !pending.is_empty() {
                write_out(&mut pending);
            }
        }
    }

    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Started { step, attempt } => {
                self.set_running(|r| r.push(step.id.clone()));
                if *attempt == 1 {
                    self.println_event(&format!("     START {}", step.id));
                } else {
                    self.println_event(&format!("     START {} (attempt {attempt})", step.id));
                }
            }
            Event::Retrying {
                step,
                outcome,
                next_attempt,
                delay,
            } => {
                self.set_running(|r| r.retain(|s| *s != step.id));
                self.println_event(&format!(
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
                    StepState::Succeeded if cached(result) => {
                        format!("    CACHED {} ({})", step.id, secs(result.duration))
                    }
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
                match (self.replay, &result.outcome) {
                    (Some(limit), Some(o)) => {
                        self.replay_log(line.trim_start(), &o.log_path, limit)
                    }
                    _ => self.println_event(&line),
                }
            }
            Event::Stopping { reason } => self.println_event(&format!("      STOP {reason}")),
            Event::Chaos { step, decision } => {
                if let Some((log, seed)) = &self.chaos_log {
                    if let Ok(mut f) = log.lock() {
                        let _ = writeln!(f, "{}", decision.line(*seed));
                    }
                }
                if let Some(inj) = &decision.injection {
                    self.println_event(&format!(
                        "     CHAOS {} (attempt {}): {}: {}",
                        step.id,
                        decision.attempt,
                        inj.fault,
                        inj.describe()
                    ));
                }
            }
        }
    }
}

impl OutputSink for Reporter {
    fn line(&self, step: &str, line: &[u8]) {
        if self.replay.is_some() {
            return;
        }
        self.println(&format!("[{step}] {}", String::from_utf8_lossy(line)), true);
    }
}

/// The table printed at the end of a run.
/// Says which steps ran without the sandbox, if any: an opt-out is never silent.
pub(crate) fn unsandboxed(plan: &Plan, selection: &Selection, no_sandbox: bool) -> Option<String> {
    if no_sandbox {
        return Some("sandbox: off for every step (--no-sandbox)\n".into());
    }
    let off: Vec<&str> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(i, s)| selection.contains(*i) && !s.sandbox.enabled)
        .map(|(_, s)| s.id.as_str())
        .collect();
    (!off.is_empty()).then(|| format!("sandbox: off for {} (sandbox = false)\n", off.join(", ")))
}

/// What the run's injected faults came to, after the summary table.
pub(crate) fn chaos_summary(
    chaos: &ci_intel_scheduler::chaos::Chaos,
    trials: &[ci_intel_insight::record::ChaosTrial],
    run_dir: &Path,
) -> String {
    let count = |o: &str| trials.iter().filter(|t| t.outcome == o).count();
    let mut out = format!(
        "chaos: seed {}: {} fault{} acted: {} recovered, {} degraded, {} failed (decisions: {})\n",
        chaos.seed,
        trials.len(),
        if trials.len() == 1 { "" } else { "s" },
        count("recovered"),
        count("degraded"),
        count("failed"),
        run_dir.join("chaos.log").display()
    );
    for t in trials.iter().filter(|t| t.outcome != "recovered") {
        out.push_str(&format!(
            "  {} {} (attempt {}): {}: {}\n",
            t.outcome.to_uppercase(),
            t.target,
            t.attempt.unwrap_or(1),
            t.fault,
            t.detail.as_deref().unwrap_or("")
        ));
        if let Some(r) = &t.repro {
            out.push_str(&format!("    replay: {r}\n"));
        }
    }
    out
}

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
        let label = if cached(r) { "cached" } else { r.state.label() };
        s.push_str(&format!(
            "{:<width$}  {:<16}  {:>9}  {:>8}\n",
            r.id,
            label,
            if r.attempts == 0 {
                "-".into()
            } else {
                secs(r.duration)
            },
            r.attempts
        ));
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
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

/// Whether a step succeeded by restoring its result from the cache.
fn cached(r: &StepResult) -> bool {
    r.state == StepState::Succeeded && r.outcome.as_ref().is_some_and(|o| o.cached)
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

/// One autopsy finding under a failed step's excerpt.
pub(crate) fn finding(c: &ci_intel_insight::record::RootCause) -> String {
    let place = match (&c.file, c.line) {
        (Some(f), Some(l)) => format!(" at {f}:{l}"),
        (Some(f), None) => format!(" at {f}"),
        _ => String::new(),
    };
    let mut s = format!("why: {}{place}\n  fix: {}\n", c.pattern, c.suggestion);
    if let Some(d) = &c.docs_uri {
        s.push_str(&format!("  docs: {d}\n"));
    }
    s
}
