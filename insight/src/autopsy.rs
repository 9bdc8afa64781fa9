//! The failure autopsy: which tool failed, why, where, and what to do about it.
//!
//! A failed step's log is classified rule-first. Each rule of a rule file (the built-in
//! one is `insight/rules/autopsy.toml`, embedded in the crate) recognises one kind of
//! failure of one tool by regexes over the log and, for failures a log does not show (a
//! timeout, a process killed by the OOM killer), by the step's exit code, signal or
//! timeout. A match becomes a [`Finding`]: the rule, the tool, the matched lines, the
//! file and line when the log names them, a suggestion, a link to the tool's documentation
//! of that error, and the command that re-runs the step.
//!
//! [`Rules::classify`] redacts the log first (see [`redact`]), then scans at most its last
//! 2 MiB: one [`regex::RegexSet`] over every pattern says which can match at all, and only
//! those are run for their captures. Findings come most useful first (by rule priority,
//! then by position in the log), without repeats, at most ten. A failed step that no rule
//! recognises gets one generic finding (rule [`GENERIC_RULE`]) from its exit code or
//! signal, so that every failure has at least one.
//!
//! The rule file's format, the categories it covers and how it is measured against real
//! logs are described in `docs/autopsy.md`.

mod redact;
mod rules;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

pub use redact::{REDACTED, redact};
pub use rules::{Rules, RulesError};

use rules::Rule;

/// The rule id of the finding a failed step gets when no rule recognises its log.
pub const GENERIC_RULE: &str = "generic.exit";
/// How much of the end of a log is scanned.
pub const MAX_SCAN_BYTES: usize = 2 << 20;
/// The most findings [`Rules::classify`] returns.
pub const MAX_FINDINGS: usize = 10;
/// The longest a finding's message gets, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Matches of one pattern looked at, at most.
const MAX_MATCHES_PER_PATTERN: usize = 32;
/// How far after a match `location` is searched, in bytes.
const LOCATION_WINDOW: usize = 8 << 10;

/// What is known about the failed step besides its log.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepContext<'a> {
    /// The step's id.
    pub step: &'a str,
    /// The plan's path as the user gave it, for the command that re-runs the step.
    pub plan: &'a str,
    /// The exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the process, when one did.
    pub signal: Option<i32>,
    /// Whether the step was stopped by its timeout.
    pub timed_out: bool,
    /// Literal values to redact from everything a finding quotes (may be empty).
    pub secrets: &'a [&'a str],
}

impl StepContext<'_> {
    /// Whether the outcome is a failure: anything but exit code 0 without a timeout.
    pub fn failed(&self) -> bool {
        self.timed_out || self.signal.is_some() || self.exit_code != Some(0)
    }
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Probably a cause, or a likely one.
    Warn,
    /// The failure.
    Error,
}

impl Severity {
    /// The lowercase name, as serialized: `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

/// One thing the autopsy recognised in a failed step's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's id, e.g. `rustc.error` (or [`GENERIC_RULE`]).
    pub rule: String,
    /// The tool that failed, e.g. `rustc`.
    pub tool: String,
    /// A short name of what matched, e.g. `rustc error E0425`.
    pub pattern: String,
    /// The matched line or lines, redacted and trimmed, at most [`MAX_MESSAGE_CHARS`].
    pub message: String,
    /// The file the log says the failure is in, as the log names it.
    pub file: Option<String>,
    /// The line in `file` (1-based).
    pub line: Option<u32>,
    /// What a person can do about it.
    pub suggestion: String,
    /// How serious it is.
    pub severity: Severity,
    /// The tool's documentation of this kind of failure, or this project's (a `docs/`
    /// path in the rule file, made absolute against the project's repository URL): always
    /// an absolute URI.
    pub docs_uri: String,
    /// The command that runs the step again: `ci-intel run <plan> --step <id>`.
    pub repro: String,
}

/// A rule file's `docs/…` path as an absolute URI under the project's repository; a URL
/// as it is.
fn project_uri(docs: String) -> String {
    if docs.starts_with("docs/") {
        format!("{}/blob/main/{docs}", env!("CARGO_PKG_REPOSITORY"))
    } else {
        docs
    }
}

impl Finding {
    /// Whether a rule recognised this, rather than the step's exit status alone.
    pub fn is_specific(&self) -> bool {
        self.rule != GENERIC_RULE
    }
}

/// A finding and where it comes from, while findings are ranked.
struct Candidate {
    rule: usize,
    priority: i32,
    position: usize,
    finding: Finding,
}

impl Rules {
    /// Classifies a failed step's log: the findings, most useful first.
    ///
    /// The log is redacted (`cx.secrets` and credentials recognised by their shape)
    /// before anything is matched, and only its last [`MAX_SCAN_BYTES`] are looked at.
    /// When the step failed and no rule matched, the one finding is a generic one, from
    /// the exit code or signal.
    pub fn classify(&self, log: &str, cx: &StepContext<'_>) -> Vec<Finding> {
        let text = redact(&normalize(tail(log, MAX_SCAN_BYTES)), cx.secrets);
        let repro = repro(cx);
        let mut candidates = Vec::new();
        let mut matched_rules = vec![false; self.rules.len()];
        let mut context_ok: Vec<Option<bool>> = vec![None; self.rules.len()];
        let set_matches = if text.is_empty() {
            Vec::new()
        } else {
            self.prefilter.matches(&text).into_iter().collect()
        };
        for index in set_matches {
            let (r, p) = self.owners[index];
            let rule = &self.rules[r];
            let ok = *context_ok[r]
                .get_or_insert_with(|| rule.context.as_ref().is_none_or(|c| c.is_match(&text)));
            if !ok {
                continue;
            }
            let pattern = &rule.patterns[p];
            let starts: Vec<usize> = if rule.location.is_some() {
                pattern
                    .find_iter(&text)
                    .take(MAX_MATCHES_PER_PATTERN + 1)
                    .map(|m| m.start())
                    .collect()
            } else {
                Vec::new()
            };
            for (i, caps) in pattern
                .captures_iter(&text)
                .take(MAX_MATCHES_PER_PATTERN)
                .enumerate()
            {
                let whole = caps.get(0).expect("group 0 is the whole match");
                if rule
                    .unless
                    .as_ref()
                    .is_some_and(|u| u.is_match(whole.as_str()))
                {
                    continue;
                }
                let mut window_end = starts
                    .get(i + 1)
                    .copied()
                    .unwrap_or(text.len())
                    .min(whole.end().saturating_add(LOCATION_WINDOW));
                // The window is cut by bytes; the text is sliced by characters.
                while !text.is_char_boundary(window_end) {
                    window_end -= 1;
                }
                let finding =
                    finding_from_match(rule, pattern, &text, &caps, window_end, cx, &repro);
                matched_rules[r] = true;
                candidates.push(Candidate {
                    rule: r,
                    priority: rule.priority,
                    position: whole.start(),
                    finding,
                });
            }
        }
        for (r, rule) in self.rules.iter().enumerate() {
            if matched_rules[r]
                || !rule
                    .status
                    .iter()
                    .any(|s| s.holds(cx.exit_code, cx.signal, cx.timed_out))
            {
                continue;
            }
            candidates.push(Candidate {
                rule: r,
                priority: rule.priority,
                position: text.len(),
                finding: finding_from_status(rule, &text, cx, &repro),
            });
        }
        let mut findings = rank(candidates);
        if findings.is_empty() && cx.failed() {
            findings.push(generic(&text, cx, repro));
        }
        findings
    }
}

/// The last `max` bytes of `log`, from the start of a line when it had to be cut.
fn tail(log: &str, max: usize) -> &str {
    if log.len() <= max {
        return log;
    }
    let mut start = log.len() - max;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    let cut = &log[start..];
    // A partial first line could hold the end of a secret whose start was cut off.
    match cut.find('\n') {
        Some(nl) => &cut[nl + 1..],
        None => cut,
    }
}

/// The log as a terminal would show it: colours and other escape sequences removed,
/// CRLF as LF, and a line rewritten with CR (a progress bar) reduced to its last state.
fn normalize(log: &str) -> String {
    static ESCAPES: OnceLock<Regex> = OnceLock::new();
    let escapes = ESCAPES.get_or_init(|| {
        Regex::new(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
            .expect("the escape pattern compiles")
    });
    let plain = escapes.replace_all(log, "");
    if !plain.contains('\r') {
        return plain.into_owned();
    }
    let mut out = String::with_capacity(plain.len());
    for (i, line) in plain.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        out.push_str(line.rsplit('\r').next().unwrap_or(line));
    }
    out
}

/// `ci-intel run <plan> --step <id>`, quoted for a POSIX shell where needed.
fn repro(cx: &StepContext<'_>) -> String {
    format!(
        "ci-intel run {} --step {}",
        shell_quote(cx.plan),
        shell_quote(cx.step)
    )
}

/// `word` as one POSIX shell word: as it is when that is safe, else single-quoted.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The values a rule's templates can use: the step's facts, then the named groups.
fn values(cx: &StepContext<'_>) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    if let Some(c) = cx.exit_code {
        v.insert("exit_code".to_owned(), c.to_string());
    }
    if let Some(s) = cx.signal {
        v.insert("signal".to_owned(), s.to_string());
    }
    if !cx.step.is_empty() {
        v.insert("step".to_owned(), cx.step.to_owned());
    }
    v
}

fn add_groups(values: &mut BTreeMap<String, String>, re: &Regex, caps: &Captures<'_>) {
    for name in re.capture_names().flatten() {
        if let Some(m) = caps.name(name) {
            let value = m.as_str().trim();
            if !value.is_empty() {
                values.insert(name.to_owned(), value.to_owned());
            }
        }
    }
}

fn finding_from_match(
    rule: &Rule,
    pattern: &Regex,
    text: &str,
    caps: &Captures<'_>,
    window_end: usize,
    cx: &StepContext<'_>,
    repro: &str,
) -> Finding {
    let whole = caps.get(0).expect("group 0 is the whole match");
    let mut vals = values(cx);
    add_groups(&mut vals, pattern, caps);
    let mut file = vals.get("file").map(|f| clean_file(f));
    let mut line = vals.get("line").and_then(|l| parse_line(l));
    let location = rule
        .location
        .as_ref()
        .filter(|_| file.is_none() && line.is_none());
    if let Some(loc) = location {
        let window = &text[whole.end()..window_end.max(whole.end())];
        let found = loc.captures_iter(window).find(|c| {
            let f = c.name("file").map_or("", |m| m.as_str());
            !rule.location_skip.as_ref().is_some_and(|s| s.is_match(f))
        });
        if let Some(c) = found {
            let mut loc_vals = BTreeMap::new();
            add_groups(&mut loc_vals, loc, &c);
            file = loc_vals.get("file").map(|f| clean_file(f));
            line = loc_vals.get("line").and_then(|l| parse_line(l));
            for (k, v) in loc_vals {
                if k != "message" {
                    vals.entry(k).or_insert(v);
                }
            }
        }
    }
    let message = match vals.get("message") {
        Some(m) => clean_message(m),
        None => clean_message(lines_around(text, whole.start(), whole.end())),
    };
    build(rule, &vals, message, file, line, repro)
}

fn finding_from_status(rule: &Rule, text: &str, cx: &StepContext<'_>, repro: &str) -> Finding {
    let vals = values(cx);
    let last = last_line(text);
    let message = match (&rule.status_message, last) {
        (_, Some(l)) => clean_message(l),
        (Some(m), None) => clean_message(&m.render(|k| vals.get(k).map(String::as_str)).0),
        (None, None) => String::new(),
    };
    build(rule, &vals, message, None, None, repro)
}

fn build(
    rule: &Rule,
    vals: &BTreeMap<String, String>,
    message: String,
    file: Option<String>,
    line: Option<u32>,
    repro: &str,
) -> Finding {
    let value = |k: &str| vals.get(k).map(String::as_str);
    let (docs, missing) = rule.docs.render(value);
    let docs_uri = project_uri(match (&rule.docs_fallback, missing) {
        (Some(fallback), true) => fallback.render(value).0,
        _ => docs,
    });
    Finding {
        rule: rule.id.clone(),
        tool: rule.tool.clone(),
        pattern: tidy(&rule.name.render(value).0),
        message,
        file,
        line,
        suggestion: tidy(&rule.suggestion.render(value).0),
        severity: rule.severity,
        docs_uri,
        repro: repro.to_owned(),
    }
}

/// Collapses the spaces an empty placeholder leaves, and a dangling `:`.
fn tidy(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.trim_end_matches([':', ' ']).to_owned()
}

fn clean_file(file: &str) -> String {
    let f = file.trim().trim_matches(['\'', '"']);
    f.strip_prefix("./").unwrap_or(f).to_owned()
}

fn parse_line(line: &str) -> Option<u32> {
    line.trim().parse::<u32>().ok().filter(|&l| l >= 1)
}

/// The whole lines that `start..end` of `text` touches.
fn lines_around(text: &str, start: usize, end: usize) -> &str {
    let from = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let to = text[end..].find('\n').map_or(text.len(), |i| end + i);
    &text[from..to.max(from)]
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// Trimmed lines, without blank ones at the ends, at most [`MAX_MESSAGE_CHARS`].
fn clean_message(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    let trimmed = joined.trim();
    if trimmed.chars().count() <= MAX_MESSAGE_CHARS {
        return trimmed.to_owned();
    }
    let mut cut: String = trimmed.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Candidates ranked (priority, then position in the log), repeats removed, at most
/// [`MAX_FINDINGS`].
///
/// A rule's finding without a location is dropped when the same rule found a located
/// one (the summary line of what it already points at), and a finding at the same file
/// and line as a better one is dropped (two rules describing one diagnostic).
fn rank(mut candidates: Vec<Candidate>) -> Vec<Finding> {
    candidates.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.position.cmp(&b.position))
            .then(a.rule.cmp(&b.rule))
    });
    let mut located_rules = BTreeMap::<usize, (bool, bool)>::new();
    for c in &candidates {
        let e = located_rules.entry(c.rule).or_default();
        e.0 |= c.finding.file.is_some();
        e.1 |= c.finding.line.is_some();
    }
    let mut out: Vec<Finding> = Vec::new();
    for c in candidates {
        let (has_file, has_line) = located_rules[&c.rule];
        let f = c.finding;
        if (has_file && f.file.is_none()) || (has_line && f.line.is_none()) {
            continue;
        }
        let repeat = out.iter().any(|o| {
            (o.rule == f.rule && o.file == f.file && o.line == f.line)
                || (f.file.is_some() && f.line.is_some() && o.file == f.file && o.line == f.line)
        });
        if repeat {
            continue;
        }
        out.push(f);
        if out.len() == MAX_FINDINGS {
            break;
        }
    }
    out
}

/// The finding of a failed step no rule recognised.
fn generic(text: &str, cx: &StepContext<'_>, repro: String) -> Finding {
    let what = match (cx.timed_out, cx.exit_code, cx.signal) {
        (true, _, _) => "timed out".to_owned(),
        (false, _, Some(s)) => format!("killed by signal {s}"),
        (false, Some(c), None) => format!("exit code {c}"),
        (false, None, None) => "failed".to_owned(),
    };
    Finding {
        rule: GENERIC_RULE.to_owned(),
        tool: "step".to_owned(),
        message: last_line(text).map_or_else(|| what.clone(), clean_message),
        pattern: what,
        file: None,
        line: None,
        suggestion: "no known tool error was recognised in the log: its last lines usually say why the command stopped".to_owned(),
        severity: Severity::Error,
        docs_uri: project_uri("docs/autopsy.md#generic-findings".to_owned()),
        repro,
    }
}

#[cfg(test)]
mod tests;
