//! Chaos nights: one plan run once without faults (the control) and then several times
//! with seeded fault injection, and what is made of those runs.
//!
//! This module owns the night's model ([`Night`], one [`NightRun`] per `ci-intel run`,
//! each with the run record it left), its summary ([`NightSummary`]: per fault and step,
//! how the trials ended, and the one JSON line a nights file keeps per night), what
//! changed since the previous night ([`compare`]), and the two renderings: GitHub-flavoured
//! Markdown for a step summary ([`render_markdown`]) and a self-contained HTML page
//! ([`render_html`]). It runs nothing and reads no file: the binary hands it the runs as
//! plain data. The faults themselves and when they fire belong to the executor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::github::{self, md_cell, md_code};
use crate::html::fmt::{self as hf, esc};
use crate::html::{CSS, badge, card, open_section, plural};
use crate::record::{ChaosTrial, RunRecord, Status};

/// The `schema` of a [`NightSummary`] line.
pub const NIGHT_SCHEMA: &str = "chaos_night.v1";

/// Recovery times closer than this are never reported as moved, however large the ratio.
const MIN_RECOVERY_MOVE_MS: u64 = 500;

/// A fault the executor can inject: what it does to a step attempt and the recovery path
/// it exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Its name in `--chaos faults=…` and in the record.
    pub name: &'static str,
    /// What it does.
    pub effect: &'static str,
    /// What should happen next.
    pub recovery: &'static str,
}

/// Every fault, in the order pages list them.
pub const FAULTS: [Fault; 6] = [
    Fault {
        name: "kill_job",
        effect: "SIGKILL to the step's process group at a seeded moment",
        recovery: "retry with backoff",
    },
    Fault {
        name: "delay_net",
        effect: "latency, a bandwidth limit or a hang on the step's connections through the \
                 egress proxy",
        recovery: "timeout handling: a hung attempt ends at its timeout, then a retry",
    },
    Fault {
        name: "drop_net",
        effect: "connection resets through the egress proxy",
        recovery: "proxy retry, or a retry of the step",
    },
    Fault {
        name: "corrupt_cache",
        effect: "bytes flipped in a cache blob about to be restored",
        recovery: "quarantine of the entry and re-execution of the step",
    },
    Fault {
        name: "cpu_stress",
        effect: "busy workers competing for the step's CPUs",
        recovery: "none needed: the step recovers, slower",
    },
    Fault {
        name: "disk_fill",
        effect: "the step's private /tmp and $HOME filled to ENOSPC",
        recovery: "a clean failure with an autopsy, then a retry",
    },
];

/// The fault named `name`, if the executor knows it.
pub fn fault(name: &str) -> Option<&'static Fault> {
    FAULTS.iter().find(|f| f.name == name)
}

/// One `ci-intel run` of the night.
#[derive(Debug, Clone, PartialEq)]
pub struct NightRun {
    /// 0 for the control run, then 1, 2, … for the chaos runs.
    pub index: u32,
    /// The run's chaos seed; `None` for the control run.
    pub seed: Option<u64>,
    /// The command that ran it.
    pub command: String,
    /// Its exit code.
    pub exit_code: i32,
    /// The record it left; `None` when it left none.
    pub record: Option<RunRecord>,
}

impl NightRun {
    /// The trials the run recorded.
    pub fn trials(&self) -> &[ChaosTrial] {
        self.record.as_ref().map_or(&[], |r| r.chaos.as_slice())
    }

    /// Whether this is the control run.
    pub fn is_control(&self) -> bool {
        self.index == 0
    }
}

/// A chaos night: the control run and the chaos runs of one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Night {
    /// The plan's name.
    pub plan: String,
    /// The plan file, as given.
    pub plan_path: String,
    /// The night's seed (`--seed`); each chaos run's own is its [`NightRun::seed`].
    pub seed: u64,
    /// The injection rate.
    pub rate: f64,
    /// The faults the night may inject.
    pub faults: Vec<String>,
    /// When the night started, RFC 3339.
    pub started_at: String,
    /// Wall-clock time of the whole night.
    pub wall_ms: u64,
    /// The control run first, then the chaos runs.
    pub runs: Vec<NightRun>,
}

impl Night {
    /// The control run, if the night made one.
    pub fn control(&self) -> Option<&NightRun> {
        self.runs.iter().find(|r| r.is_control())
    }

    /// The chaos runs, in order.
    pub fn chaos_runs(&self) -> impl Iterator<Item = &NightRun> {
        self.runs.iter().filter(|r| !r.is_control())
    }
}

/// How a fault × step cell ended: its worst trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CellVerdict {
    /// Every trial recovered.
    Recovered,
    /// None failed, some degraded.
    Degraded,
    /// At least one trial failed.
    Failed,
}

impl CellVerdict {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            CellVerdict::Recovered => "recovered",
            CellVerdict::Degraded => "degraded",
            CellVerdict::Failed => "failed",
        }
    }
}

/// The trials of one fault on one step, over the night's chaos runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The fault.
    pub fault: String,
    /// The step id.
    pub step: String,
    /// Trials.
    pub trials: u32,
    /// Trials that recovered.
    pub recovered: u32,
    /// Trials that degraded.
    pub degraded: u32,
    /// Trials that failed (an outcome the record does not name counts as failed).
    pub failed: u32,
    /// Trials whose `expected` outcome was `recovered`.
    pub expected_recovered: u32,
    /// Trials that ended worse than their `expected` outcome.
    pub below_expected: u32,
    /// Median of the trials' recovery times, when any recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_recovery_ms: Option<u64>,
    /// The longest recovery time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recovery_ms: Option<u64>,
    /// The recovery path the trials exercised, as the first trial that named one said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<String>,
}

impl Cell {
    /// Its worst trial.
    pub fn verdict(&self) -> CellVerdict {
        if self.failed > 0 {
            CellVerdict::Failed
        } else if self.degraded > 0 {
            CellVerdict::Degraded
        } else {
            CellVerdict::Recovered
        }
    }

    /// `3/3 recovered`, `2/3 recovered, 1 degraded`, `0/2 recovered, 2 failed`.
    pub fn outcome_text(&self) -> String {
        let mut s = format!("{}/{} recovered", self.recovered, self.trials);
        if self.degraded > 0 {
            let _ = write!(s, ", {} degraded", self.degraded);
        }
        if self.failed > 0 {
            let _ = write!(s, ", {} failed", self.failed);
        }
        s
    }
}

/// The night's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Chaos runs made (the control run not counted).
    pub chaos_runs: u32,
    /// Chaos runs that left no record.
    pub runs_without_record: u32,
    /// Trials.
    pub trials: u32,
    /// Trials that recovered.
    pub recovered: u32,
    /// Trials that degraded.
    pub degraded: u32,
    /// Trials that failed.
    pub failed: u32,
    /// Trials that ended worse than their `expected` outcome.
    pub below_expected: u32,
}

/// A trial that failed, with what replays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The chaos run's index.
    pub run: u32,
    /// That run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The fault.
    pub fault: String,
    /// The step id.
    pub step: String,
    /// The outcome as recorded (`failed`, or a word the record should not hold).
    pub outcome: String,
    /// The attempt the fault was injected into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What the plan's recovery paths should have achieved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The recovery path the fault exercised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<String>,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The command that replays it: the trial's own, else the run's.
    pub repro: String,
}

/// What a night came to: one JSON line of a nights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NightSummary {
    /// [`NIGHT_SCHEMA`].
    pub schema: String,
    /// `plan@started_at`.
    pub id: String,
    /// When the night started, RFC 3339.
    pub started_at: String,
    /// The plan's name.
    pub plan: String,
    /// The night's seed.
    pub seed: u64,
    /// The injection rate.
    pub rate: f64,
    /// The faults the night could inject.
    pub faults: Vec<String>,
    /// Wall-clock time of the night.
    pub wall_ms: u64,
    /// Whether the control run passed (exit code 0 and a record of success).
    pub control_ok: bool,
    /// The control run's exit code; absent when the night made no control run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_exit_code: Option<i32>,
    /// One per fault and step that had a trial, in [`FAULTS`] order, then by step.
    pub cells: Vec<Cell>,
    /// The counts.
    pub totals: Totals,
    /// Each failed trial.
    pub failures: Vec<Failure>,
    /// The control run passed, no trial failed and every chaos run left a record.
    pub verdict: bool,
}

/// The rank of a fault in page order: known faults first, in [`FAULTS`] order.
fn fault_rank(name: &str) -> usize {
    FAULTS
        .iter()
        .position(|f| f.name == name)
        .unwrap_or(FAULTS.len())
}

/// How bad an outcome is: 0 recovered, 1 degraded, 2 anything else.
fn severity(outcome: &str) -> u8 {
    match outcome {
        "recovered" => 0,
        "degraded" => 1,
        _ => 2,
    }
}

/// The night's counts, cells and failures.
pub fn summarize(night: &Night) -> NightSummary {
    struct Acc {
        cell: Cell,
        times: Vec<u64>,
    }
    let control = night.control();
    let control_ok = control.is_some_and(|c| {
        c.exit_code == 0
            && c.record
                .as_ref()
                .is_some_and(|r| r.status == Status::Success)
    });
    let mut totals = Totals::default();
    let mut cells: BTreeMap<(usize, String, String), Acc> = BTreeMap::new();
    let mut failures = Vec::new();
    for run in night.chaos_runs() {
        totals.chaos_runs += 1;
        if run.record.is_none() {
            totals.runs_without_record += 1;
        }
        for t in run.trials() {
            let key = (fault_rank(&t.fault), t.fault.clone(), t.target.clone());
            let acc = cells.entry(key).or_insert_with(|| Acc {
                cell: Cell {
                    fault: t.fault.clone(),
                    step: t.target.clone(),
                    trials: 0,
                    recovered: 0,
                    degraded: 0,
                    failed: 0,
                    expected_recovered: 0,
                    below_expected: 0,
                    median_recovery_ms: None,
                    max_recovery_ms: None,
                    recovery: None,
                },
                times: Vec::new(),
            });
            let c = &mut acc.cell;
            c.trials += 1;
            totals.trials += 1;
            match severity(&t.outcome) {
                0 => {
                    c.recovered += 1;
                    totals.recovered += 1;
                }
                1 => {
                    c.degraded += 1;
                    totals.degraded += 1;
                }
                _ => {
                    c.failed += 1;
                    totals.failed += 1;
                    failures.push(Failure {
                        run: run.index,
                        seed: run.seed.or_else(|| u64::try_from(t.seed).ok()),
                        fault: t.fault.clone(),
                        step: t.target.clone(),
                        outcome: t.outcome.clone(),
                        attempt: t.attempt,
                        expected: t.expected.clone(),
                        recovery: t.recovery.clone(),
                        detail: t.detail.clone(),
                        repro: t.repro.clone().unwrap_or_else(|| run.command.clone()),
                    });
                }
            }
            if t.expected.as_deref() == Some("recovered") {
                c.expected_recovered += 1;
            }
            if t.expected
                .as_deref()
                .is_some_and(|e| severity(&t.outcome) > severity(e))
            {
                c.below_expected += 1;
                totals.below_expected += 1;
            }
            if c.recovery.is_none() {
                c.recovery.clone_from(&t.recovery);
            }
            if let Some(ms) = t.recovery_ms {
                acc.times.push(ms);
            }
        }
    }
    let cells: Vec<Cell> = cells
        .into_values()
        .map(|mut acc| {
            acc.cell.max_recovery_ms = acc.times.iter().copied().max();
            acc.cell.median_recovery_ms = crate::html::stats::median(&acc.times);
            acc.cell
        })
        .collect();
    let verdict = control_ok && totals.failed == 0 && totals.runs_without_record == 0;
    NightSummary {
        schema: NIGHT_SCHEMA.into(),
        id: format!("{}@{}", night.plan, night.started_at),
        started_at: night.started_at.clone(),
        plan: night.plan.clone(),
        seed: night.seed,
        rate: night.rate,
        faults: night.faults.clone(),
        wall_ms: night.wall_ms,
        control_ok,
        control_exit_code: control.map(|c| c.exit_code),
        cells,
        totals,
        failures,
        verdict,
    }
}

/// What kind of change since the previous night, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// The plan, seed, rate or faults differ: the cells compare different trials.
    Setup,
    /// The control run passed last time and fails now.
    ControlFailing,
    /// The control run failed last time and passes now.
    ControlFixed,
    /// A cell with no failed trial last time has one now.
    NewlyFailing,
    /// A cell with a failed trial last time has none now.
    Fixed,
    /// A cell's median recovery time more than doubled.
    Slower,
    /// A cell's median recovery time more than halved.
    Faster,
    /// A cell with trials now and none last time.
    NewCell,
    /// A cell with trials last time and none now.
    Gone,
}

impl ChangeKind {
    /// Whether the change is for the worse.
    pub fn is_worse(self) -> bool {
        matches!(
            self,
            ChangeKind::ControlFailing | ChangeKind::NewlyFailing | ChangeKind::Slower
        )
    }

    /// Whether the change is for the better.
    pub fn is_better(self) -> bool {
        matches!(
            self,
            ChangeKind::ControlFixed | ChangeKind::Fixed | ChangeKind::Faster
        )
    }
}

/// One change since the previous night.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What kind.
    pub kind: ChangeKind,
    /// The cell's fault; `None` for a change of the whole night.
    pub fault: Option<String>,
    /// The cell's step.
    pub step: Option<String>,
    /// What changed, in words (without the cell).
    pub text: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.fault, &self.step) {
            (Some(fault), Some(step)) => write!(f, "{fault} on {step}: {}", self.text),
            _ => f.write_str(&self.text),
        }
    }
}

/// What changed between the `previous` night and `now`: the setup, the control run, and
/// per fault and step newly failing, fixed, new, gone, and recovery times that moved by
/// more than a factor of two.
pub fn compare(now: &NightSummary, previous: &NightSummary) -> Vec<Change> {
    let mut out = Vec::new();
    let night = |kind, text: String| Change {
        kind,
        fault: None,
        step: None,
        text,
    };
    if now.plan != previous.plan {
        out.push(night(
            ChangeKind::Setup,
            format!(
                "the plan changed ({} → {}): the cells compare different plans",
                previous.plan, now.plan
            ),
        ));
    }
    if now.seed != previous.seed {
        out.push(night(
            ChangeKind::Setup,
            format!(
                "seed {} → {}: faults fired at other moments and steps",
                previous.seed, now.seed
            ),
        ));
    }
    if now.rate != previous.rate {
        out.push(night(
            ChangeKind::Setup,
            format!(
                "rate {} → {}: trial counts are not comparable",
                previous.rate, now.rate
            ),
        ));
    }
    let was: BTreeSet<&str> = previous.faults.iter().map(String::as_str).collect();
    let is: BTreeSet<&str> = now.faults.iter().map(String::as_str).collect();
    if was != is {
        let mut parts: Vec<String> = is.difference(&was).map(|f| format!("+{f}")).collect();
        parts.extend(was.difference(&is).map(|f| format!("\u{2212}{f}")));
        out.push(night(
            ChangeKind::Setup,
            format!("faults changed: {}", parts.join(", ")),
        ));
    }
    match (previous.control_ok, now.control_ok) {
        (true, false) => out.push(night(
            ChangeKind::ControlFailing,
            "the control run fails now (it passed the previous night): the plan fails without \
             any fault"
                .into(),
        )),
        (false, true) => out.push(night(
            ChangeKind::ControlFixed,
            "the control run passes again".into(),
        )),
        _ => {}
    }
    let key = |c: &Cell| (fault_rank(&c.fault), c.fault.clone(), c.step.clone());
    let before: BTreeMap<_, &Cell> = previous.cells.iter().map(|c| (key(c), c)).collect();
    let after: BTreeMap<_, &Cell> = now.cells.iter().map(|c| (key(c), c)).collect();
    let cell = |kind, c: &Cell, text: String| Change {
        kind,
        fault: Some(c.fault.clone()),
        step: Some(c.step.clone()),
        text,
    };
    for (k, c) in &after {
        let Some(p) = before.get(k) else {
            out.push(cell(
                ChangeKind::NewCell,
                c,
                format!(
                    "new: {} {}, {} (not injected the previous night)",
                    c.trials,
                    plural(c.trials as usize, "trial", "trials"),
                    c.outcome_text()
                ),
            ));
            continue;
        };
        if p.failed == 0 && c.failed > 0 {
            out.push(cell(
                ChangeKind::NewlyFailing,
                c,
                format!(
                    "newly failing: {} (previous night {})",
                    c.outcome_text(),
                    p.outcome_text()
                ),
            ));
        } else if p.failed > 0 && c.failed == 0 {
            out.push(cell(
                ChangeKind::Fixed,
                c,
                format!(
                    "fixed: {} (previous night {})",
                    c.outcome_text(),
                    p.outcome_text()
                ),
            ));
        }
        if let (Some(a), Some(b)) = (p.median_recovery_ms, c.median_recovery_ms) {
            let moved =
                |lo: u64, hi: u64| hi > lo.saturating_mul(2) && hi - lo >= MIN_RECOVERY_MOVE_MS;
            let ratio = |x: u64, y: u64| x as f64 / (y.max(1)) as f64;
            if moved(a, b) {
                out.push(cell(
                    ChangeKind::Slower,
                    c,
                    format!(
                        "median recovery {} → {} ({:.1}× slower)",
                        github::duration(a),
                        github::duration(b),
                        ratio(b, a)
                    ),
                ));
            } else if moved(b, a) {
                out.push(cell(
                    ChangeKind::Faster,
                    c,
                    format!(
                        "median recovery {} → {} ({:.1}× faster)",
                        github::duration(a),
                        github::duration(b),
                        ratio(a, b)
                    ),
                ));
            }
        }
    }
    for (k, p) in &before {
        if !after.contains_key(k) {
            out.push(cell(
                ChangeKind::Gone,
                p,
                format!(
                    "not injected this night (previous night {} over {} {})",
                    p.outcome_text(),
                    p.trials,
                    plural(p.trials as usize, "trial", "trials")
                ),
            ));
        }
    }
    out.sort_by_key(|c| c.kind);
    out
}

/// `1 trial`, `14 trials`.
fn n_of(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", plural(n as usize, one, many))
}

/// The headline: `Chaos night: 14 trials, 12 recovered, 1 degraded, 1 failed`.
fn headline(s: &NightSummary) -> String {
    let t = &s.totals;
    let mut h = if t.trials == 0 {
        format!(
            "Chaos night: no fault fired in {}",
            n_of(t.chaos_runs, "chaos run", "chaos runs")
        )
    } else {
        format!(
            "Chaos night: {}, {} recovered, {} degraded, {} failed",
            n_of(t.trials, "trial", "trials"),
            t.recovered,
            t.degraded,
            t.failed
        )
    };
    if t.runs_without_record > 0 {
        let _ = write!(
            h,
            ", {} left no record",
            n_of(t.runs_without_record, "run", "runs")
        );
    }
    h
}

/// The chaos runs' seeds: `seed 42`, `seeds 42–46`, or `no seed`.
fn seeds(night: &Night) -> String {
    let s: Vec<u64> = night.chaos_runs().filter_map(|r| r.seed).collect();
    match (s.iter().min(), s.iter().max()) {
        (Some(a), Some(b)) if a == b => format!("seed {a}"),
        (Some(a), Some(b)) => format!("seeds {a}\u{2013}{b}"),
        _ => "no seed".into(),
    }
}

/// The failed steps of a run's record.
fn failed_steps(run: &NightRun) -> Vec<&str> {
    run.record
        .iter()
        .flat_map(|r| &r.jobs)
        .filter(|j| j.status == Status::Failed)
        .map(|j| j.id.as_str())
        .collect()
}

/// Why the control run does not count as passed, in words (plain text).
fn control_problem(night: &Night) -> String {
    match night.control() {
        None => "the night made no control run".into(),
        Some(c) if c.record.is_none() => {
            format!("the control run left no record (exit code {})", c.exit_code)
        }
        Some(c) => format!("the control run failed (exit code {})", c.exit_code),
    }
}

/// Text set as inline code outside a table (where a pipe needs no escape): backquotes
/// would end it, line breaks would end the line.
fn md_inline(s: &str) -> String {
    s.replace('`', "ˋ").replace('\n', " ")
}

/// Text in Markdown prose: [`md_cell`] with backquotes escaped too.
fn md_text(s: &str) -> String {
    md_cell(&s.replace('`', "\\`"))
}

/// A fenced code block holding `body` verbatim: the fence is longer than any run of
/// backquotes in it.
fn md_fence(lang: &str, body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{lang}\n{body}\n{fence}\n")
}

/// The icon of a cell verdict.
fn md_icon(v: CellVerdict) -> &'static str {
    match v {
        CellVerdict::Recovered => "✅",
        CellVerdict::Degraded => "⚠️",
        CellVerdict::Failed => "❌",
    }
}

/// The night as GitHub-flavoured Markdown for a step summary: the verdict, the control
/// run, the fault × step table, the failures with the commands that replay them, the
/// changes since the previous night (`None`: this is the first night) and the runs.
pub fn render_markdown(
    night: &Night,
    summary: &NightSummary,
    changes: Option<&[Change]>,
) -> String {
    let mut md = String::new();
    let t = &summary.totals;
    let icon = if !summary.verdict {
        "❌"
    } else if t.trials == 0 {
        "⚠️"
    } else {
        "✅"
    };
    let _ = writeln!(md, "## {icon} {}\n", headline(summary));
    let mut facts = vec![
        format!(
            "plan `{}` (`{}`)",
            md_inline(&night.plan),
            md_inline(&night.plan_path)
        ),
        format!(
            "{}, {}",
            n_of(t.chaos_runs, "chaos run", "chaos runs"),
            seeds(night)
        ),
        format!("rate {}", night.rate),
    ];
    if !night.faults.is_empty() {
        let f: Vec<String> = night
            .faults
            .iter()
            .map(|f| format!("`{}`", md_inline(f)))
            .collect();
        facts.push(format!("faults {}", f.join(", ")));
    }
    facts.push(format!("started {}", md_text(&hf::when(&night.started_at))));
    facts.push(format!("took {}", github::duration(night.wall_ms)));
    let _ = writeln!(md, "{}\n", facts.join(" · "));

    // The control run: first and loud when it failed.
    if summary.control_ok {
        let took = night
            .control()
            .and_then(|c| c.record.as_ref())
            .and_then(|r| r.wall_ms)
            .map_or_else(String::new, |ms| format!(" in {}", github::duration(ms)));
        let _ = writeln!(md, "Control run (no faults): ✅ passed{took}.\n");
    } else {
        let _ = writeln!(
            md,
            "> [!CAUTION]\n> **{}.** The plan fails without any fault injected, so the chaos \
             verdicts below say nothing about recovery: fix the plan first.",
            md_text(&capitalise(&control_problem(night)))
        );
        if let Some(c) = night.control() {
            let failed = failed_steps(c);
            if !failed.is_empty() {
                let f: Vec<String> = failed
                    .iter()
                    .map(|s| format!("`{}`", md_inline(s)))
                    .collect();
                let _ = writeln!(md, ">\n> Failed steps: {}.", f.join(", "));
            }
            let _ = writeln!(md, ">\n> `{}`", md_inline(&c.command));
        }
        md.push('\n');
    }
    if t.runs_without_record > 0 {
        let _ = writeln!(
            md,
            "> [!WARNING]\n> {} left no record: what it injected and how it ended is unknown \
             (see the runs below).\n",
            capitalise(&n_of(t.runs_without_record, "chaos run", "chaos runs"))
        );
    }

    md.push_str("### Faults × steps\n\n");
    if summary.cells.is_empty() {
        let text = no_trials_text(night, summary, |s| format!("`{}`", md_inline(s)));
        let _ = writeln!(md, "No fault fired: {text}\n");
    } else {
        md.push_str(
            "| fault | step | outcome | median recovery | max recovery | recovery path |\n\
             |---|---|---|--:|--:|---|\n",
        );
        for c in &summary.cells {
            let mut outcome = format!("{} {}", md_icon(c.verdict()), c.outcome_text());
            if c.below_expected > 0 {
                let _ = write!(outcome, " ({} below expected)", c.below_expected);
            }
            let _ = writeln!(
                md,
                "| `{}` | `{}` | {outcome} | {} | {} | {} |",
                md_code(&c.fault),
                md_code(&c.step),
                c.median_recovery_ms
                    .map_or_else(|| "–".into(), github::duration),
                c.max_recovery_ms
                    .map_or_else(|| "–".into(), github::duration),
                c.recovery.as_deref().map_or_else(|| "–".into(), md_text),
            );
        }
        md.push('\n');
    }

    if !summary.failures.is_empty() {
        let _ = writeln!(md, "### Failures ({})\n", summary.failures.len());
        for f in &summary.failures {
            let mut head = format!(
                "**❌ `{}` on `{}`** — run {}",
                md_inline(&f.fault),
                md_inline(&f.step),
                f.run
            );
            if let Some(seed) = f.seed {
                let _ = write!(head, ", seed {seed}");
            }
            if let Some(a) = f.attempt {
                let _ = write!(head, ", attempt {a}");
            }
            if f.outcome != "failed" {
                let _ = write!(head, ", outcome `{}`", md_inline(&f.outcome));
            }
            let _ = writeln!(md, "{head}\n");
            let expected = match (&f.expected, &f.recovery) {
                (Some(e), Some(r)) => Some(format!("expected {} via {}", md_text(e), md_text(r))),
                (Some(e), None) => Some(format!("expected {}", md_text(e))),
                (None, Some(r)) => Some(format!("recovery path: {}", md_text(r))),
                (None, None) => None,
            };
            let detail = f.detail.as_deref().filter(|d| !d.is_empty()).map(md_text);
            let line: Vec<String> = [expected, detail].into_iter().flatten().collect();
            if !line.is_empty() {
                let text = capitalise(&line.join(". "));
                let _ = writeln!(md, "{}.\n", text.trim_end_matches('.'));
            }
            md.push_str("Replay:\n\n");
            md.push_str(&md_fence("sh", &f.repro));
            md.push('\n');
        }
    }

    md.push_str("### Since the previous night\n\n");
    match changes {
        None => md.push_str("First night: nothing to compare with yet.\n\n"),
        Some([]) => md.push_str("No change since the previous night.\n\n"),
        Some(list) => {
            for c in list {
                let icon = if c.kind.is_worse() {
                    "🔴"
                } else if c.kind.is_better() {
                    "🟢"
                } else {
                    "⚪"
                };
                match (&c.fault, &c.step) {
                    (Some(fault), Some(step)) => {
                        let _ = writeln!(
                            md,
                            "- {icon} `{}` on `{}`: {}",
                            md_inline(fault),
                            md_inline(step),
                            md_text(&c.text)
                        );
                    }
                    _ => {
                        let _ = writeln!(md, "- {icon} {}", md_text(&capitalise(&c.text)));
                    }
                }
            }
            md.push('\n');
        }
    }

    let _ = writeln!(
        md,
        "<details><summary>Runs ({})</summary>\n\n| run | seed | exit code | trials | command |\n|---|--:|--:|--:|---|",
        night.runs.len()
    );
    for r in &night.runs {
        let trials = match &r.record {
            None => "no record".to_string(),
            Some(_) if r.is_control() => "–".to_string(),
            Some(rec) => rec.chaos.len().to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {trials} | `{}` |",
            if r.is_control() {
                "control".to_string()
            } else {
                r.index.to_string()
            },
            r.seed.map_or_else(|| "–".into(), |s| s.to_string()),
            r.exit_code,
            md_code(&r.command)
        );
    }
    md.push_str("\n</details>\n");
    md
}

/// `s` with its first letter upper-case.
fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// Why the fault × step table is empty and what to do, as a sentence that follows
/// "No fault fired:" (`code` sets a value as code).
fn no_trials_text(night: &Night, summary: &NightSummary, code: impl Fn(&str) -> String) -> String {
    let runs = summary.totals.chaos_runs;
    if runs == 0 {
        return format!(
            "no chaos run was made: only the control run ran. Give the night some runs ({}).",
            code("--runs K")
        );
    }
    format!(
        "the {} injected nothing, so this night tested no recovery path. \
         At rate {} the seeded draws can miss every step attempt: raise the rate (the {} \
         of {}) or make more runs ({}).",
        n_of(runs, "chaos run", "chaos runs"),
        night.rate,
        code("rate="),
        code("--chaos"),
        code("--runs K")
    )
}

/// The page's own styles, on top of the report's stylesheet.
const NIGHT_CSS: &str = "\
.banner { margin: 20px 0 0; padding: 14px 20px; border: 1px solid var(--line); border-left: 6px solid var(--skip); border-radius: 10px; background: var(--panel); }
.banner.pass { border-left-color: var(--ok); }
.banner.fail { border-left-color: var(--bad); background: var(--bad-bg); }
.banner.warn { border-left-color: var(--warn); background: var(--warn-bg); }
.banner .headline { font-size: 20px; font-weight: 650; margin: 0 0 4px; }
table.matrix td.step, table.cells td.step { min-width: 9em; overflow-wrap: anywhere; }
table.cells td.fault, table.cells td.outcome { white-space: nowrap; }
table.cells .below { display: block; color: var(--muted); font-size: 12.5px; }
table.matrix td.v { white-space: nowrap; font-weight: 600; }
td.v .sub { display: block; font-size: 12px; font-weight: 400; color: var(--muted); }
td.v-recovered { background: var(--ok-bg); color: var(--ok); }
td.v-degraded { background: var(--warn-bg); color: var(--warn); }
td.v-failed { background: var(--bad-bg); color: var(--bad); }
table.matrix td.v-none { color: var(--skip); font-weight: 400; }
pre.repro { margin: 6px 0 2px; padding: 8px 10px; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
ul.changes { padding-left: 0; list-style: none; }
ul.changes li { margin: 4px 0; }
dl.faults dt { font-weight: 600; margin-top: 8px; }
dl.faults dd { margin: 0 0 0 16px; color: var(--muted); }
";

/// The sections of the night's page: id and the link text of the contents bar.
const NIGHT_SECTIONS: [(&str, &str); 6] = [
    ("verdict", "Verdict"),
    ("matrix", "Faults × steps"),
    ("failures", "Failures"),
    ("changes", "Changes"),
    ("runs", "Runs"),
    ("legend", "What the faults mean"),
];

/// A cell verdict's badge class and symbol.
fn verdict_look(v: CellVerdict) -> (&'static str, &'static str) {
    match v {
        CellVerdict::Recovered => ("s-success", "✓"),
        CellVerdict::Degraded => ("s-canceled", "~"),
        CellVerdict::Failed => ("s-failed", "✕"),
    }
}

/// The night as one self-contained HTML page (no scripts, inline CSS, every string from
/// a record escaped) with the same content as [`render_markdown`], plus a legend of the
/// faults.
pub fn render_html(night: &Night, summary: &NightSummary, changes: Option<&[Change]>) -> String {
    let mut page = String::with_capacity(32 * 1024);
    let title = format!("Chaos night · {}", night.plan);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"ci-intel\">\n<title>{}</title>\n<style>\n{CSS}{NIGHT_CSS}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let t = &summary.totals;
    let _ = write!(
        page,
        "<header class=\"top\"><div class=\"wrap\">\n<h1>Chaos night: <code>{}</code></h1>\n<p class=\"meta\">\
         Started <time datetime=\"{}\">{}</time> · took {} · plan file <code>{}</code> · \
         <strong>{}</strong>, {} · rate {} · faults {}</p>\n",
        esc(&night.plan),
        esc(&night.started_at),
        esc(&hf::when(&night.started_at)),
        hf::duration(night.wall_ms),
        esc(&night.plan_path),
        n_of(t.chaos_runs, "chaos run", "chaos runs"),
        seeds(night),
        night.rate,
        if night.faults.is_empty() {
            "none".to_string()
        } else {
            night
                .faults
                .iter()
                .map(|f| format!("<code>{}</code>", esc(f)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    page.push_str("<nav class=\"toc\" aria-label=\"Sections\">");
    for (id, text) in NIGHT_SECTIONS {
        let _ = write!(page, "<a href=\"#{id}\">{text}</a>");
    }
    page.push_str("</nav>\n</div></header>\n<main class=\"wrap\">\n");

    control_banner(&mut page, night, summary);
    verdict_banner(&mut page, summary);
    matrix(&mut page, night, summary);
    failures(&mut page, summary);
    changes_section(&mut page, changes);
    runs_table(&mut page, night);
    legend(&mut page);
    page.push_str(
        "</main>\n<footer>Made by <code>ci-intel chaos night</code> from the runs' \
         <code>pipeline_run</code> records. A static page: no scripts, nothing loaded from \
         elsewhere.</footer>\n</body>\n</html>\n",
    );
    page
}

/// The control run, first: loud when it failed, one line when it passed.
fn control_banner(page: &mut String, night: &Night, summary: &NightSummary) {
    if summary.control_ok {
        return;
    }
    let _ = write!(
        page,
        "<div class=\"banner fail\" id=\"control\" role=\"alert\"><p class=\"headline\">{}</p>\
         <p>The plan fails without any fault injected, so the chaos verdicts below say \
         nothing about recovery: fix the plan first.</p>",
        esc(&capitalise(&control_problem(night)))
    );
    if let Some(c) = night.control() {
        let failed = failed_steps(c);
        if !failed.is_empty() {
            let f: Vec<String> = failed
                .iter()
                .map(|s| format!("<code>{}</code>", esc(s)))
                .collect();
            let _ = write!(page, "<p>Failed steps: {}.</p>", f.join(", "));
        }
        let _ = write!(
            page,
            "<pre class=\"repro\"><code>{}</code></pre>",
            esc(&c.command)
        );
    }
    page.push_str("</div>\n");
}

/// The verdict banner and the counts.
fn verdict_banner(page: &mut String, summary: &NightSummary) {
    let t = &summary.totals;
    let (class, word) = if !summary.verdict {
        ("fail", "Failed")
    } else if t.trials == 0 {
        ("warn", "Nothing tested")
    } else {
        ("pass", "Passed")
    };
    let _ = write!(
        page,
        "<section id=\"verdict\" aria-labelledby=\"verdict-h\" class=\"banner {class}\">\n\
         <h2 id=\"verdict-h\" class=\"headline\">{word}: {}</h2>\n<p>",
        esc(&headline(summary))
    );
    if summary.control_ok {
        page.push_str("The control run (no faults) passed. ");
    } else {
        page.push_str("The control run did not pass (above). ");
    }
    page.push_str(
        "The night passes when the control run passes, no trial fails and every chaos run \
         leaves a record.</p>\n<div class=\"cards\">",
    );
    page.push_str(&card(
        &t.recovered.to_string(),
        "recovered",
        "the step succeeded after the fault",
        "",
    ));
    page.push_str(&card(
        &t.degraded.to_string(),
        "degraded",
        "failed cleanly where the plan left no way to recover",
        "",
    ));
    page.push_str(&card(
        &t.failed.to_string(),
        "failed",
        "a recovery path that should have held did not",
        if t.failed > 0 { "bad" } else { "good" },
    ));
    page.push_str(&card(
        &t.below_expected.to_string(),
        "below expected",
        "ended worse than the plan's recovery paths should achieve",
        if t.below_expected > 0 { "bad" } else { "good" },
    ));
    page.push_str("</div>\n</section>\n");
}

/// The fault × step matrix and the per-cell table.
fn matrix(page: &mut String, night: &Night, summary: &NightSummary) {
    page.push_str(&open_section("matrix", "Faults × steps"));
    if summary.cells.is_empty() {
        let _ = write!(
            page,
            "<div class=\"empty\"><p>No fault fired.</p><p>{}</p></div>\n</section>\n",
            capitalise(&no_trials_text(night, summary, |s| {
                format!("<code>{}</code>", esc(s))
            }))
        );
        return;
    }
    // Columns: the night's faults, then any other fault a record names.
    let mut faults: Vec<&str> = night.faults.iter().map(String::as_str).collect();
    for c in &summary.cells {
        if !faults.contains(&c.fault.as_str()) {
            faults.push(&c.fault);
        }
    }
    // Rows: every step a record names (control run first), then any other target.
    let mut steps: Vec<&str> = Vec::new();
    let control_first = night.control().into_iter().chain(night.chaos_runs());
    for r in control_first {
        for j in r.record.iter().flat_map(|rec| &rec.jobs) {
            if !steps.contains(&j.id.as_str()) {
                steps.push(&j.id);
            }
        }
    }
    for c in &summary.cells {
        if !steps.contains(&c.step.as_str()) {
            steps.push(&c.step);
        }
    }
    let cell_of: BTreeMap<(&str, &str), &Cell> = summary
        .cells
        .iter()
        .map(|c| ((c.fault.as_str(), c.step.as_str()), c))
        .collect();
    let mut step_times: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for t in night.chaos_runs().flat_map(NightRun::trials) {
        if let Some(ms) = t.recovery_ms {
            step_times.entry(&t.target).or_default().push(ms);
        }
    }
    page.push_str(
        "<p class=\"note\">Each cell: how the trials of a fault on a step ended, and their median \
         recovery time. A step no fault hit reads <em>not injected</em>.</p>\n\
         <div class=\"tablewrap\"><table class=\"matrix\"><thead><tr><th class=\"step\">Step</th>",
    );
    for f in &faults {
        let _ = write!(page, "<th><code>{}</code></th>", esc(f));
    }
    page.push_str("<th class=\"num\">Median recovery</th></tr></thead><tbody>\n");
    for s in &steps {
        let _ = write!(
            page,
            "<tr data-step=\"{e}\"><td class=\"step\"><code>{e}</code></td>",
            e = esc(s)
        );
        for f in &faults {
            match cell_of.get(&(*f, *s)) {
                None => page.push_str("<td class=\"v v-none\">– not injected</td>"),
                Some(c) => {
                    let v = c.verdict();
                    let (_, sym) = verdict_look(v);
                    let _ = write!(
                        page,
                        "<td class=\"v v-{}\">{sym} {}",
                        v.as_str(),
                        esc(&c.outcome_text())
                    );
                    if let Some(ms) = c.median_recovery_ms {
                        let _ = write!(
                            page,
                            "<span class=\"sub\">median {}</span>",
                            hf::duration(ms)
                        );
                    }
                    page.push_str("</td>");
                }
            }
        }
        let med = step_times
            .get(s)
            .and_then(|v| crate::html::stats::median(v))
            .map_or_else(|| "–".into(), hf::duration);
        let _ = writeln!(page, "<td class=\"num\">{med}</td></tr>");
    }
    page.push_str("</tbody></table></div>\n<h3>Per fault and step</h3>\n<p class=\"note\">Recovery times run from the fault to the step's success; <em>should recover</em> counts the trials the plan's recovery paths are expected to recover.</p>\n");
    page.push_str(
        "<div class=\"tablewrap\"><table class=\"cells\"><thead><tr><th>Fault</th><th>Step</th>\
         <th>Outcome</th><th class=\"num\">Trials</th><th class=\"num\">Should recover</th>\
         <th class=\"num\">Median</th><th class=\"num\">Max</th>\
         <th>Recovery path</th></tr></thead><tbody>\n",
    );
    for c in &summary.cells {
        let (class, sym) = verdict_look(c.verdict());
        let mut outcome = format!(
            "<span class=\"badge {class}\">{sym} {}</span>",
            esc(&c.outcome_text())
        );
        if c.below_expected > 0 {
            let _ = write!(
                outcome,
                "<span class=\"below\">{} below expected</span>",
                c.below_expected
            );
        }
        let _ = writeln!(
            page,
            "<tr><td class=\"fault\"><code>{}</code></td><td class=\"step\"><code>{}</code></td><td class=\"outcome\">{outcome}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&c.fault),
            esc(&c.step),
            c.trials,
            c.expected_recovered,
            c.median_recovery_ms
                .map_or_else(|| "–".into(), hf::duration),
            c.max_recovery_ms.map_or_else(|| "–".into(), hf::duration),
            c.recovery.as_deref().map_or_else(|| "–".into(), esc),
        );
    }
    page.push_str("</tbody></table></div>\n</section>\n");
}

/// Each failed trial with what replays it.
fn failures(page: &mut String, summary: &NightSummary) {
    page.push_str(&open_section("failures", "Failures"));
    if summary.failures.is_empty() {
        let text = if summary.totals.trials == 0 {
            "No trial, so no failure."
        } else {
            "No trial failed: every fault was recovered from or degraded the step."
        };
        let _ = writeln!(page, "<p class=\"note\">{text}</p>");
    }
    for f in &summary.failures {
        let _ = write!(
            page,
            "<div class=\"finding sev-error\"><div class=\"fhead\"><span class=\"sev\">{}</span>\
             <strong><code>{}</code></strong> on <strong><code>{}</code></strong> · run {}",
            esc(&f.outcome),
            esc(&f.fault),
            esc(&f.step),
            f.run
        );
        if let Some(seed) = f.seed {
            let _ = write!(page, " · seed {seed}");
        }
        if let Some(a) = f.attempt {
            let _ = write!(page, " · attempt {a}");
        }
        page.push_str("</div>\n");
        match (&f.expected, &f.recovery) {
            (Some(e), Some(r)) => {
                let _ = write!(page, "<p>Expected {} via {}.</p>", esc(e), esc(r));
            }
            (Some(e), None) => {
                let _ = write!(page, "<p>Expected {}.</p>", esc(e));
            }
            (None, Some(r)) => {
                let _ = write!(page, "<p>Recovery path: {}.</p>", esc(r));
            }
            (None, None) => {}
        }
        if let Some(d) = f.detail.as_deref().filter(|d| !d.is_empty()) {
            let _ = write!(page, "<pre class=\"msg\">{}</pre>", esc(d));
        }
        let _ = writeln!(
            page,
            "<p class=\"links\">Replay:</p><pre class=\"repro\"><code>{}</code></pre></div>",
            esc(&f.repro)
        );
    }
    page.push_str("</section>\n");
}

/// What changed since the previous night.
fn changes_section(page: &mut String, changes: Option<&[Change]>) {
    page.push_str(&open_section("changes", "Since the previous night"));
    match changes {
        None => page.push_str("<p class=\"note\">First night: nothing to compare with yet.</p>\n"),
        Some([]) => page.push_str("<p class=\"note\">No change since the previous night.</p>\n"),
        Some(list) => {
            page.push_str("<ul class=\"changes\">\n");
            for c in list {
                let tag = if c.kind.is_worse() {
                    "<span class=\"badge s-failed\">worse</span>"
                } else if c.kind.is_better() {
                    "<span class=\"badge s-success\">better</span>"
                } else {
                    "<span class=\"badge s-neutral\">note</span>"
                };
                match (&c.fault, &c.step) {
                    (Some(fault), Some(step)) => {
                        let _ = writeln!(
                            page,
                            "<li>{tag} <code>{}</code> on <code>{}</code>: {}</li>",
                            esc(fault),
                            esc(step),
                            esc(&c.text)
                        );
                    }
                    _ => {
                        let _ = writeln!(page, "<li>{tag} {}</li>", esc(&capitalise(&c.text)));
                    }
                }
            }
            page.push_str("</ul>\n");
        }
    }
    page.push_str("</section>\n");
}

/// A row per run.
fn runs_table(page: &mut String, night: &Night) {
    page.push_str(&open_section("runs", "Runs"));
    page.push_str(
        "<div class=\"tablewrap\"><table class=\"runs\"><thead><tr><th>Run</th><th class=\"num\">Seed</th>\
         <th class=\"num\">Exit code</th><th>Status</th><th class=\"num\">Trials</th><th>Command</th>\
         </tr></thead><tbody>\n",
    );
    for r in &night.runs {
        let (status, trials) = match &r.record {
            None => (
                "<span class=\"badge s-failed\">no record</span>".to_string(),
                "–".to_string(),
            ),
            Some(rec) => (
                badge(rec.status),
                if r.is_control() {
                    "–".to_string()
                } else {
                    rec.chaos.len().to_string()
                },
            ),
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{status}</td>\
             <td class=\"num\">{trials}</td><td class=\"brk\"><code>{}</code></td></tr>",
            if r.is_control() {
                "control".to_string()
            } else {
                r.index.to_string()
            },
            r.seed.map_or_else(|| "–".into(), |s| s.to_string()),
            r.exit_code,
            esc(&r.command)
        );
    }
    page.push_str("</tbody></table></div>\n</section>\n");
}

/// What the faults mean.
fn legend(page: &mut String) {
    page.push_str(&open_section("legend", "What the faults mean"));
    page.push_str(
        "<p class=\"note\">Each fault fires into a step attempt when the seeded draw says so, \
         at the night's rate; the same seed replays the same faults.</p>\n<dl class=\"faults\">\n",
    );
    for f in FAULTS {
        let _ = writeln!(
            page,
            "<dt><code>{}</code></dt><dd>{} → {}</dd>",
            f.name,
            esc(f.effect),
            esc(f.recovery)
        );
    }
    page.push_str("</dl>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outlast_the_backquotes_inside() {
        assert_eq!(md_fence("sh", "a"), "```sh\na\n```\n");
        assert_eq!(md_fence("", "x ```` y"), "`````\nx ```` y\n`````\n");
    }

    #[test]
    fn prose_cannot_open_code_or_cells() {
        assert_eq!(md_text("a|`b`<i>"), "a\\|\\`b\\`&lt;i&gt;");
    }

    #[test]
    fn every_fault_has_a_legend_entry() {
        for name in [
            "kill_job",
            "delay_net",
            "drop_net",
            "corrupt_cache",
            "cpu_stress",
            "disk_fill",
        ] {
            assert!(fault(name).is_some(), "{name}");
        }
        assert!(fault("unplug_power").is_none());
        assert!(fault_rank("kill_job") < fault_rank("disk_fill"));
        assert_eq!(fault_rank("unplug_power"), FAULTS.len());
    }

    #[test]
    fn cell_text_and_verdict() {
        let mut c = Cell {
            fault: "kill_job".into(),
            step: "test".into(),
            trials: 3,
            recovered: 3,
            degraded: 0,
            failed: 0,
            expected_recovered: 3,
            below_expected: 0,
            median_recovery_ms: None,
            max_recovery_ms: None,
            recovery: None,
        };
        assert_eq!(
            (c.verdict(), c.outcome_text().as_str()),
            (CellVerdict::Recovered, "3/3 recovered")
        );
        c.recovered = 1;
        c.degraded = 1;
        c.failed = 1;
        assert_eq!(
            (c.verdict(), c.outcome_text().as_str()),
            (CellVerdict::Failed, "1/3 recovered, 1 degraded, 1 failed")
        );
        c.failed = 0;
        c.recovered = 2;
        assert_eq!(c.verdict(), CellVerdict::Degraded);
    }

    #[test]
    fn capitalises_the_first_letter_only() {
        assert_eq!(capitalise("the control run"), "The control run");
        assert_eq!(capitalise(""), "");
    }
}
