//! The plan file: raw TOML → validated [`Plan`].
//!
//! Parsing is strict: unknown keys, malformed ids, unknown `needs`, cycles, empty
//! commands and outputs claimed twice are all errors, each located at `file:line:col` with
//! a hint. Every problem found is reported at once, in file order.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ci_intel_executor::{Layer, Limits as SandboxLimits, Program};
use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use crate::diag::{Diagnostic, LoadError};

/// The only plan format version this build reads.
pub(crate) const VERSION: i64 = 1;

/// The longest `timeout` accepted (a year); longer is surely a typo.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);

/// One mebibyte: the smallest `memory` or `tmpfs` limit accepted.
const MIB: u64 = 1 << 20;
/// The largest `memory` or `tmpfs` limit accepted (1 PiB); larger is surely a typo.
const MAX_SIZE: u64 = 1 << 50;
/// The largest `pids` limit: the kernel's own ceiling on `pid_max`.
const MAX_PIDS: u64 = 1 << 22;
/// The smallest `nofile` limit: below this even a shell cannot work.
const MIN_NOFILE: u64 = 16;
/// The largest `nofile` limit: the kernel's default `fs.nr_open`.
const MAX_NOFILE: u64 = 1 << 20;
/// How sizes are written, for hints.
const SIZE_HINT: &str = "write a size such as \"512MiB\" or \"2GiB\", or a number of bytes (K, M, G, T and KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB powers of 1000)";

/// A validated plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The plan's name (`name`, else the file stem).
    pub name: String,
    /// The plan file.
    pub path: PathBuf,
    /// The directory steps run in and paths are relative to (`root`, else the plan's
    /// directory).
    pub root: PathBuf,
    /// `SOURCE_DATE_EPOCH` when the root is not a git checkout.
    pub source_date_epoch: Option<u64>,
    /// Steps in file order; [`Step::needs`] index into this.
    pub steps: Vec<Step>,
    /// Plan-wide sandbox settings (steps hold their merged copy).
    pub sandbox: SandboxSpec,
    /// What fault injection may do (`[chaos]`).
    pub chaos: crate::chaos::ChaosPolicy,
    /// A topological order of step indices.
    pub topo: Vec<usize>,
    index: HashMap<String, usize>,
}

impl Plan {
    /// The index of the step called `id`.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// One validated step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The step id.
    pub id: String,
    /// What it runs.
    pub program: Program,
    /// Indices of the steps it needs.
    pub needs: Vec<usize>,
    /// Input globs, relative to the root.
    pub inputs: Vec<String>,
    /// Output paths, relative to the root, normalised (a trailing `/` marks a directory).
    pub outputs: Vec<String>,
    /// Environment: the plan's `[env]` overlaid with the step's.
    pub env: IndexMap<String, String>,
    /// Host variables passed through: the plan's and the step's.
    pub pass_env: Vec<String>,
    /// Secret names.
    pub secrets: Vec<String>,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: RetryPolicy,
    /// Slot weight.
    pub cpus: u32,
    /// Whether results may be cached.
    pub cache: CachePolicy,
    /// Whether a failure of this step fails the run.
    pub allow_failure: bool,
    /// Tools whose bytes enter the action key.
    pub tools: Vec<String>,
    /// Whether the step must be bit-for-bit reproducible.
    pub deterministic: bool,
    /// Archive normalisers applied to outputs.
    pub normalize: Vec<String>,
    /// A mutation-testing report the step writes (relative to the root), read into the
    /// run record's `tests.resilience`.
    pub mutation_report: Option<String>,
    /// The merged sandbox settings.
    pub sandbox: SandboxSpec,
    /// The faults that may be injected into this step: `None` for the plan's, empty when
    /// it opts out (`chaos = false`).
    pub chaos: Option<Vec<ci_intel_executor::chaos::Fault>>,
}

/// Network policy of a step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Network {
    /// No network at all.
    #[default]
    Deny,
    /// Loopback only.
    Loopback,
    /// Only these `host:port` destinations, through the egress proxy.
    Allowlist(Vec<String>),
}

/// Sandbox settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Whether the step runs sandboxed at all (`sandbox = false` opts out).
    pub enabled: bool,
    /// Network policy.
    pub network: Network,
    /// Layers the host must enforce fully, or the run fails with exit code 3.
    pub require: Vec<Layer>,
    /// Extra host paths visible read-only, as written: relative to the root, absolute,
    /// `~/...`, `$NAME/...` or
    /// `${NAME}/...`. The leading `~` or variable is expanded at run time from the host
    /// environment, not by the parser.
    pub read: Vec<String>,
    /// Extra host paths visible read-write, with the same rules as [`SandboxSpec::read`].
    pub write: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
    /// What to do when the step's environment holds an undeclared secret-looking value.
    pub secret_scan: SecretScan,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            enabled: true,
            network: Network::default(),
            require: Vec::new(),
            read: Vec::new(),
            write: Vec::new(),
            limits: Limits::default(),
            secret_scan: SecretScan::default(),
        }
    }
}

/// Whether a step's result may be cached (`cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Not set: cached, unless the step has secrets.
    #[default]
    Default,
    /// `cache = true`: cached, even with secrets (their values never enter the key).
    Always,
    /// `cache = false`: always run.
    Never,
}

impl CachePolicy {
    /// Whether a step with (or without) secrets is cached under this policy.
    pub fn allows(self, has_secrets: bool) -> bool {
        match self {
            CachePolicy::Default => !has_secrets,
            CachePolicy::Always => true,
            CachePolicy::Never => false,
        }
    }
}

/// Resource limits of a sandboxed step; `None` leaves the sandbox's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Memory of the whole step, in bytes (at least 1 MiB).
    pub memory: Option<u64>,
    /// Processes and threads of the whole step (1 to 4194304).
    pub pids: Option<u64>,
    /// Open files per process (16 to 1048576).
    pub nofile: Option<u64>,
    /// Size of each of the private `/tmp` and `$HOME`, in bytes (at least 1 MiB).
    pub tmpfs: Option<u64>,
    /// CPU time of the whole step, in thousandths of a CPU (10 to 1024000; the plan's
    /// `cpu = 1.5` is 1500).
    pub millicpus: Option<u32>,
}

/// What the runtime secret sweep does when it finds a secret-looking value in a variable
/// the step did not declare in `secrets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SecretScan {
    /// The attempt fails, with a message naming the variable (never the value).
    #[default]
    Deny,
    /// The step runs; a message names the variable.
    Warn,
}

/// Backoff between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// `delay`, `2·delay`, `4·delay`, … capped at `max_delay`, with jitter.
    Exponential,
    /// `delay` every time, with jitter.
    Fixed,
    /// Retry at once.
    None,
}

/// How often and how soon a failed step is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub count: u32,
    /// Backoff shape.
    pub backoff: Backoff,
    /// Base delay.
    pub delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            count: 0,
            backoff: Backoff::Exponential,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next` (2 for the first retry), with "equal jitter": a
    /// uniform draw in `[d/2, d]` of the nominal delay `d`, so retries of many steps that
    /// failed together spread out but never come sooner than half the nominal delay.
    pub fn delay_before(&self, next: u32, rng: &mut fastrand::Rng) -> Duration {
        let nominal = match self.backoff {
            Backoff::None => return Duration::ZERO,
            Backoff::Fixed => self.delay,
            Backoff::Exponential => {
                let exp = next.saturating_sub(2).min(30);
                self.delay.saturating_mul(1u32 << exp)
            }
        }
        .min(self.max_delay);
        let half = nominal / 2;
        half + half.mul_f64(rng.f64())
    }
}

// ---------------------------------------------------------------------------------------
// Raw TOML

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    version: Option<Spanned<i64>>,
    name: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
    source_date_epoch: Option<Spanned<i64>>,
    #[serde(default)]
    env: IndexMap<Spanned<String>, String>,
    #[serde(default)]
    pass_env: Vec<Spanned<String>>,
    sandbox: Option<RawSandboxValue>,
    chaos: Option<Spanned<RawChaos>>,
    // Boxed: a step table is large, and moving 100k of them while the map grows costs
    // more than the allocations.
    #[serde(default)]
    steps: IndexMap<Spanned<String>, Box<RawStep>>,
}

/// `[chaos]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChaos {
    faults: Option<Vec<Spanned<String>>>,
    rate: Option<Spanned<f64>>,
    #[serde(default)]
    rates: IndexMap<Spanned<String>, Spanned<f64>>,
    kill_switch: Option<Spanned<String>>,
}

/// A step's `chaos = false` or `chaos = ["kill_job", ...]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawStepChaos {
    On(bool),
    Only(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    enabled: Option<bool>,
    network: Option<Spanned<String>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    require: Option<Vec<Spanned<String>>>,
    read: Option<Vec<Spanned<String>>>,
    write: Option<Vec<Spanned<String>>>,
    limits: Option<RawLimits>,
    secret_scan: Option<Spanned<String>>,
}

/// `sandbox = true`, `sandbox = false` or a sandbox table.
enum RawSandboxValue {
    Enabled(bool),
    Table(Box<RawSandbox>),
}

impl<'de> Deserialize<'de> for RawSandboxValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSandboxValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a sandbox table")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawSandboxValue, E> {
                Ok(RawSandboxValue::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSandboxValue, A::Error> {
                RawSandbox::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| RawSandboxValue::Table(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Spanned<RawSize>>,
    pids: Option<Spanned<i64>>,
    nofile: Option<Spanned<i64>>,
    tmpfs: Option<Spanned<RawSize>>,
    cpu: Option<Spanned<RawCpu>>,
}

/// A number of CPUs, integer or float.
struct RawCpu(f64);

impl<'de> Deserialize<'de> for RawCpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawCpu;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of CPUs such as 1.5 or 2")
            }
            // `as` rounds integers beyond 2^53, which are out of range either way.
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawCpu, E> {
                Ok(RawCpu(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawCpu, E> {
                Ok(RawCpu(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawCpu, E> {
                Ok(RawCpu(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size: a number of bytes, or a string such as `"512MiB"`.
enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawSize, E> {
                Ok(RawSize::Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    run: Option<Spanned<String>>,
    argv: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    needs: Vec<Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    #[serde(default)]
    outputs: Vec<Spanned<String>>,
    #[serde(default)]
    env: IndexMap<Spanned<String>, String>,
    #[serde(default)]
    pass_env: Vec<Spanned<String>>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<RawRetries>>,
    cpus: Option<Spanned<i64>>,
    cache: Option<bool>,
    allow_failure: Option<bool>,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    deterministic: Option<Spanned<bool>>,
    #[serde(default)]
    normalize: Vec<Spanned<String>>,
    mutation_report: Option<Spanned<String>>,
    sandbox: Option<RawSandboxValue>,
    chaos: Option<Spanned<RawStepChaos>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryTable {
    count: Spanned<i64>,
    backoff: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    max_delay: Option<Spanned<String>>,
}

enum RawRetries {
    Count(i64),
    Table(RawRetryTable),
}

impl<'de> Deserialize<'de> for RawRetries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRetries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a retry count or a table { count, backoff, delay, max_delay }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRetries, E> {
                Ok(RawRetries::Count(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRetries, E> {
                Ok(RawRetries::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRetries, A::Error> {
                RawRetryTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawRetries::Table)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// Loading and validation

/// Reads and validates the plan at `path`.
pub fn load_plan(path: &Path) -> Result<Plan, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_plan(path, &source)
}

/// Validates plan text as if read from `path` (used for `root` and messages).
pub fn parse_plan(path: &Path, source: &str) -> Result<Plan, LoadError> {
    let raw: RawPlan = toml::from_str(source).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let marked = source.get(span.clone()).unwrap_or("");
        let (message, hint) = describe_toml_error(e.message(), marked);
        LoadError::Invalid {
            diagnostics: vec![Diagnostic::at(path, source, span, message, hint)],
        }
    })?;
    let mut v = Validator {
        path,
        source,
        diags: Vec::new(),
        chaos_faults: ci_intel_executor::chaos::Fault::ALL.to_vec(),
    };
    let plan = v.plan(raw);
    if v.diags.is_empty() {
        Ok(plan)
    } else {
        v.diags.sort_by_key(|d| (d.line, d.col));
        Err(LoadError::Invalid {
            diagnostics: v.diags,
        })
    }
}

/// Turns the TOML parser's message into a lowercase fragment and a hint; `marked` is the
/// source text the error points at.
fn describe_toml_error(msg: &str, marked: &str) -> (String, Option<String>) {
    let msg = msg.trim().trim_end_matches('.').to_string();
    let first = msg.lines().next().unwrap_or("").to_string();
    if let Some(rest) = first.strip_prefix("unknown field ") {
        let (field, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let expected = expected.trim_start_matches("one of ");
        let known = expected.split(", ").map(|k| k.trim_matches('`'));
        let hint = match closest(field.trim_matches('`'), known) {
            Some(k) => Some(format!("did you mean `{k}`?")),
            None if expected.is_empty() => None,
            None => Some(format!("known keys here: {expected}")),
        };
        return (format!("unknown key {field}"), hint);
    }
    if let Some(field) = first.strip_prefix("missing field ") {
        return (
            format!("missing key {field}"),
            Some(format!(
                "add {} = ... to this table",
                field.trim_matches('`')
            )),
        );
    }
    if first == "duplicate key" && !marked.is_empty() && !marked.contains('\n') {
        return (
            format!("invalid TOML: duplicate key `{}`", marked.trim_matches('"')),
            Some("a key or [table] may appear only once; merge the two".into()),
        );
    }
    if first.starts_with("invalid type") {
        return (
            first,
            Some("see docs/plan-format.md for each key's type".into()),
        );
    }
    let mut lower = first;
    if let Some(c) = lower.get(..1) {
        if c.chars().all(|c| c.is_ascii_uppercase()) && !lower.starts_with("TOML") {
            lower = c.to_ascii_lowercase() + &lower[1..];
        }
    }
    (
        format!("invalid TOML: {lower}"),
        Some("the plan must be a valid TOML document".into()),
    )
}

struct Validator<'a> {
    path: &'a Path,
    source: &'a str,
    diags: Vec<Diagnostic>,
    /// The plan's `[chaos] faults`, which a step's `chaos` list must stay within.
    chaos_faults: Vec<ci_intel_executor::chaos::Fault>,
}

fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The known name closest to `wanted`, if it is close enough to be a typo.
pub(crate) fn closest<'k>(wanted: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|k| (edit_distance(wanted, k), k))
        .filter(|(d, k)| *d <= (wanted.len().max(k.len()) / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
/// two adjacent characters each cost 1, so `biuld` is one typo away from `build`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            cur[j] = (prev[j - 1] + usize::from(a[i - 1] != b[j - 1]))
                .min(prev[j] + 1)
                .min(cur[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// Parses a duration such as `90s` or `1h 30m`; the error is a lowercase fragment.
fn parse_duration(s: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    let s = s.trim();
    humantime::parse_duration(s).map_err(|e| match e {
        E::Empty => "it is empty".into(),
        E::InvalidCharacter(at) => match s.get(at..).and_then(|r| r.chars().next()) {
            Some(c) => format!("unexpected character `{c}`"),
            None => "unexpected character".into(),
        },
        E::NumberExpected(_) => "expected a number before each unit".into(),
        E::UnknownUnit { unit, .. } if unit.is_empty() => "the number has no unit".into(),
        E::UnknownUnit { unit, .. } => format!("unknown unit `{unit}`"),
        E::NumberOverflow => "the number is too large".into(),
    })
}

/// Normalises an output path; `None` if it is absolute, empty or escapes the root.
fn normalize_output(p: &str) -> Option<String> {
    let dir = p.ends_with('/');
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    let mut s = parts.join("/");
    if dir {
        s.push('/');
    }
    Some(s)
}

/// True when one output path contains (or is) the other.
fn overlaps(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

impl Validator<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        self.diags
            .push(Diagnostic::at(self.path, self.source, span, message, hint));
    }

    fn env_names(&mut self, names: &[Spanned<String>], what: &str) -> Vec<String> {
        let mut out = Vec::new();
        for n in names {
            if is_env_name(n.get_ref()) {
                out.push(n.get_ref().clone());
            } else {
                self.err(
                    n.span(),
                    format!("invalid {what} name `{}`", n.get_ref()),
                    Some("use letters, digits and '_', not starting with a digit".into()),
                );
            }
        }
        out
    }

    fn env_table(&mut self, table: IndexMap<Spanned<String>, String>) -> IndexMap<String, String> {
        let mut out = IndexMap::new();
        for (k, v) in table {
            if v.contains('\0') {
                self.err(
                    k.span(),
                    format!(
                        "environment variable `{}` has a NUL character in its value",
                        k.get_ref()
                    ),
                    Some("a NUL byte cannot be passed to a process; remove it".into()),
                );
            } else if is_env_name(k.get_ref()) {
                out.insert(k.into_inner(), v);
            } else {
                self.err(
                    k.span(),
                    format!("invalid environment variable name `{}`", k.get_ref()),
                    Some("use letters, digits and '_', not starting with a digit".into()),
                );
            }
        }
        out
    }

    fn sandbox(&mut self, raw: Option<RawSandboxValue>, base: &SandboxSpec) -> SandboxSpec {
        let raw = match raw {
            None => return base.clone(),
            Some(RawSandboxValue::Enabled(enabled)) => {
                return SandboxSpec {
                    enabled,
                    ..base.clone()
                };
            }
            Some(RawSandboxValue::Table(raw)) => *raw,
        };
        let mut spec = base.clone();
        if let Some(enabled) = raw.enabled {
            spec.enabled = enabled;
        }
        if let Some(req) = raw.require {
            spec.require.clear();
            for r in req {
                // `cgroup` is how the layer is often spelled elsewhere; accept it too.
                let name = match r.get_ref().as_str() {
                    "cgroup" => "cgroups",
                    other => other,
                };
                match Layer::from_name(name) {
                    Some(l) => spec.require.push(l),
                    None => {
                        let names: Vec<&str> = Layer::ALL.iter().map(|l| l.name()).collect();
                        self.err(
                            r.span(),
                            format!("unknown isolation layer `{}`", r.get_ref()),
                            Some(format!("known layers: {}", names.join(", "))),
                        );
                    }
                }
            }
        }
        if let Some(paths) = raw.read {
            spec.read = self.host_paths(paths, "read");
        }
        if let Some(paths) = raw.write {
            spec.write = self.host_paths(paths, "write");
        }
        if let Some(limits) = raw.limits {
            self.limits(limits, &mut spec.limits);
        }
        if let Some(scan) = raw.secret_scan {
            match scan.get_ref().as_str() {
                "deny" => spec.secret_scan = SecretScan::Deny,
                "warn" => spec.secret_scan = SecretScan::Warn,
                other => self.err(
                    scan.span(),
                    format!("unknown secret_scan policy `{other}`"),
                    Some("use \"deny\" (the step fails) or \"warn\" (a message only)".into()),
                ),
            }
        }
        let allow: Option<(Range<usize>, Vec<String>)> = raw.allow.map(|a| {
            let span = a.span();
            let mut list = Vec::new();
            for entry in a.into_inner() {
                if valid_host_port(entry.get_ref()) {
                    list.push(entry.into_inner());
                } else {
                    self.err(
                        entry.span(),
                        format!("invalid allowlist entry `{}`", entry.get_ref()),
                        Some(
                            "write host:port, e.g. \"crates.io:443\" or \"*.example.com:443\""
                                .into(),
                        ),
                    );
                }
            }
            (span, list)
        });
        if let Some(net) = raw.network {
            spec.network = match net.get_ref().as_str() {
                "deny" => Network::Deny,
                "loopback" => Network::Loopback,
                "allowlist" => Network::Allowlist(Vec::new()),
                other => {
                    self.err(
                        net.span(),
                        format!("unknown network mode `{other}`"),
                        Some("use \"deny\", \"loopback\" or \"allowlist\"".into()),
                    );
                    spec.network
                }
            };
        }
        match (&mut spec.network, allow) {
            (Network::Allowlist(list), Some((_, entries))) => *list = entries,
            (Network::Allowlist(_), None) => {}
            (_, Some((span, _))) => self.err(
                span,
                "`allow` needs `network = \"allowlist\"`",
                Some("add network = \"allowlist\" to the same table".into()),
            ),
            (_, None) => {}
        }
        spec
    }

    /// The valid entries of a `read` or `write` list; `key` names the list in messages.
    fn host_paths(&mut self, paths: Vec<Spanned<String>>, key: &str) -> Vec<String> {
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            match check_host_path(p.get_ref()) {
                Ok(()) => out.push(p.into_inner()),
                Err((problem, hint)) => {
                    let message = if p.get_ref().is_empty() {
                        format!("empty `{key}` path")
                    } else {
                        format!("`{key}` path `{}` {problem}", p.get_ref())
                    };
                    self.err(p.span(), message, Some(hint.into()));
                }
            }
        }
        out
    }

    /// Overlays the limits the table sets on `limits`, key by key.
    fn limits(&mut self, raw: RawLimits, limits: &mut Limits) {
        if let Some(m) = raw.memory {
            if let Some(v) = self.size(m, "memory") {
                limits.memory = Some(v);
            }
        }
        if let Some(t) = raw.tmpfs {
            if let Some(v) = self.size(t, "tmpfs") {
                limits.tmpfs = Some(v);
            }
        }
        if let Some(c) = raw.cpu {
            match SandboxLimits::millicpus_of(c.get_ref().0) {
                Some(m) => limits.millicpus = Some(m),
                None => {
                    // As written: `nan`, not `NaN`.
                    let written = self.source.get(c.span()).unwrap_or_default().trim();
                    self.err(
                        c.span(),
                        format!(
                            "cpu limit must be between {} and {}, not {written}",
                            SandboxLimits::MIN_CPUS,
                            SandboxLimits::MAX_CPUS
                        ),
                        Some(
                            "the most CPUs' worth of time the whole step may use, e.g. 1.5 \
                             (unlike the step's `cpus`, which are job slots)"
                                .into(),
                        ),
                    );
                }
            }
        }
        for (value, slot, key, range, hint) in [
            (
                raw.pids,
                &mut limits.pids,
                "pids",
                1..=MAX_PIDS,
                "the most processes and threads the step may have at once",
            ),
            (
                raw.nofile,
                &mut limits.nofile,
                "nofile",
                MIN_NOFILE..=MAX_NOFILE,
                "the most files each process of the step may have open at once",
            ),
        ] {
            let Some(v) = value else { continue };
            match u64::try_from(*v.get_ref()) {
                Ok(n) if range.contains(&n) => *slot = Some(n),
                _ => self.err(
                    v.span(),
                    format!(
                        "{key} limit must be between {} and {}, not {}",
                        range.start(),
                        range.end(),
                        v.get_ref()
                    ),
                    Some(hint.into()),
                ),
            }
        }
    }

    /// A `memory` or `tmpfs` size in bytes, if valid.
    fn size(&mut self, raw: Spanned<RawSize>, key: &str) -> Option<u64> {
        let span = raw.span();
        let (text, bytes) = match raw.into_inner() {
            RawSize::Bytes(n) => (n.to_string(), u64::try_from(n).unwrap_or(0)),
            RawSize::Text(t) => match parse_size(&t) {
                Ok(n) => (format!("\"{t}\""), n),
                Err(e) => {
                    self.err(
                        span,
                        format!("invalid {key} size `{t}`: {e}"),
                        Some(SIZE_HINT.into()),
                    );
                    return None;
                }
            },
        };
        if bytes < MIB {
            self.err(
                span,
                format!("{key} limit {text} is below 1 MiB"),
                Some(format!(
                    "write at least \"1MiB\", or omit `{key}` to keep the default; a bare number is bytes"
                )),
            );
            None
        } else if bytes > MAX_SIZE {
            self.err(
                span,
                format!("{key} limit {text} is larger than 1 PiB"),
                Some("check the unit: K, M, G and T are powers of 1024, KB, MB, GB and TB powers of 1000".into()),
            );
            None
        } else {
            Some(bytes)
        }
    }

    fn plan(&mut self, raw: RawPlan) -> Plan {
        match &raw.version {
            None => self.err(
                0..0,
                "missing key `version`",
                Some(format!("start the plan with `version = {VERSION}`")),
            ),
            Some(v) if *v.get_ref() != VERSION => self.err(
                v.span(),
                format!("unsupported plan version {}", v.get_ref()),
                Some(format!("this ci-intel reads plan version {VERSION}")),
            ),
            Some(_) => {}
        }
        let name = raw.name.map(Spanned::into_inner).unwrap_or_else(|| {
            self.path
                .file_stem()
                .map_or_else(|| "plan".into(), |s| s.to_string_lossy().into_owned())
        });
        let plan_dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let root = match raw.root {
            Some(r) => plan_dir.join(r.get_ref()),
            None => plan_dir,
        };
        let source_date_epoch = raw.source_date_epoch.and_then(|s| {
            u64::try_from(*s.get_ref()).ok().or_else(|| {
                self.err(
                    s.span(),
                    "`source_date_epoch` must not be negative",
                    Some(
                        "give seconds since 1970-01-01 UTC, e.g. source_date_epoch = 1700000000"
                            .into(),
                    ),
                );
                None
            })
        });
        let env = self.env_table(raw.env);
        let pass_env = self.env_names(&raw.pass_env, "environment variable");
        let sandbox = self.sandbox(raw.sandbox, &SandboxSpec::default());
        let chaos = self.chaos(raw.chaos, &root);
        self.chaos_faults = chaos.faults.clone();

        if raw.steps.is_empty() {
            self.err(
                0..0,
                "the plan has no steps",
                Some("add a step: [steps.build] run = \"make\"".into()),
            );
        }
        let mut index = HashMap::with_capacity(raw.steps.len());
        let mut id_spans = Vec::with_capacity(raw.steps.len());
        for (i, id) in raw.steps.keys().enumerate() {
            index.insert(id.get_ref().clone(), i);
            id_spans.push(id.span());
            if !is_valid_id(id.get_ref()) {
                self.err(
                    id.span(),
                    format!("invalid step id `{}`", id.get_ref()),
                    Some("step ids use letters, digits, '-', '_' and '.', start with a letter or digit, and are at most 128 characters".into()),
                );
            }
        }
        let mut steps = Vec::with_capacity(raw.steps.len());
        let mut need_spans: Vec<Vec<Range<usize>>> = Vec::with_capacity(raw.steps.len());
        let mut claimed: Vec<(String, usize)> = Vec::new();
        for (id, rs) in raw.steps {
            let rs = *rs;
            let (step, spans) = self.step(
                id,
                rs,
                &index,
                &env,
                &pass_env,
                &sandbox,
                &mut claimed,
                &steps,
            );
            steps.push(step);
            need_spans.push(spans);
        }
        let topo = self.order(&steps, &need_spans, &id_spans);
        Plan {
            name,
            path: self.path.to_owned(),
            root,
            source_date_epoch,
            steps,
            sandbox,
            chaos,
            topo,
            index,
        }
    }

    /// The plan's `[chaos]` table.
    fn chaos(&mut self, raw: Option<Spanned<RawChaos>>, root: &Path) -> crate::chaos::ChaosPolicy {
        let mut policy = crate::chaos::ChaosPolicy::default();
        let Some(raw) = raw else {
            return policy;
        };
        let table = raw.span();
        let raw = raw.into_inner();
        if let Some(list) = raw.faults {
            policy.faults = list
                .iter()
                .filter_map(|f| self.fault(f.get_ref(), f.span()))
                .collect();
            policy.faults.sort();
            policy.faults.dedup();
        }
        let rate_hint = || {
            Some("a rate is the probability per attempt, from 0 to 1, e.g. rate = 0.05".to_string())
        };
        if let Some(r) = raw.rate {
            if (0.0..=1.0).contains(r.get_ref()) {
                policy.rate = Some(*r.get_ref());
            } else {
                self.err(
                    r.span(),
                    format!("chaos rate {} is not from 0 to 1", r.get_ref()),
                    rate_hint(),
                );
            }
        }
        for (name, r) in raw.rates {
            let Some(f) = self.fault(name.get_ref(), name.span()) else {
                continue;
            };
            if !(0.0..=1.0).contains(r.get_ref()) {
                self.err(
                    r.span(),
                    format!("chaos rate {} is not from 0 to 1", r.get_ref()),
                    rate_hint(),
                );
            } else if !policy.faults.contains(&f) {
                self.err(
                    name.span(),
                    format!("chaos rate for `{f}`, which `faults` does not allow"),
                    Some("add it to `faults`, or remove its rate".into()),
                );
            } else {
                policy.rates.insert(f, *r.get_ref());
            }
        }
        let sum: f64 = policy.rates.values().sum();
        if sum > 1.0 + 1e-9 {
            self.err(
                table.clone(),
                format!("the [chaos] rates add up to {sum}, more than 1"),
                rate_hint(),
            );
        }
        if let Some(k) = raw.kill_switch {
            if k.get_ref().trim().is_empty() {
                self.err(k.span(), "`kill_switch` is empty", Some("name a file, e.g. kill_switch = \".ci-intel/chaos-off\"; while it exists, nothing is injected".into()));
            } else {
                policy.kill_switch = Some(root.join(k.get_ref()));
            }
        }
        policy
    }

    /// A fault name, or an error at `span`.
    fn fault(&mut self, name: &str, span: Range<usize>) -> Option<ci_intel_executor::chaos::Fault> {
        match crate::chaos::parse_fault(name) {
            Ok(f) => Some(f),
            Err(e) => {
                self.err(
                    span,
                    e.to_string(),
                    Some(format!(
                        "the faults are {}",
                        ci_intel_executor::chaos::Fault::ALL
                            .map(|f| f.name())
                            .join(", ")
                    )),
                );
                None
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the plan-wide defaults a step inherits"
    )]
    fn step(
        &mut self,
        id: Spanned<String>,
        rs: RawStep,
        index: &HashMap<String, usize>,
        plan_env: &IndexMap<String, String>,
        plan_pass: &[String],
        plan_sandbox: &SandboxSpec,
        claimed: &mut Vec<(String, usize)>,
        earlier: &[Step],
    ) -> (Step, Vec<Range<usize>>) {
        let id_span = id.span();
        let id = id.into_inner();
        let command_span = rs
            .run
            .as_ref()
            .map(Spanned::span)
            .or_else(|| rs.argv.as_ref().map(Spanned::span))
            .unwrap_or_else(|| id_span.clone());
        let program = match (rs.run, rs.argv) {
            (Some(run), Some(argv)) => {
                self.err(
                    argv.span(),
                    format!("step `{id}` has both `run` and `argv`"),
                    Some(
                        "keep one: `run` is a shell script, `argv` runs a program directly".into(),
                    ),
                );
                Program::Shell(run.into_inner())
            }
            (Some(run), None) => {
                if run.get_ref().trim().is_empty() {
                    self.err(
                        run.span(),
                        format!("step `{id}` has an empty command"),
                        Some("give `run` a shell command, e.g. run = \"make test\"".into()),
                    );
                }
                Program::Shell(run.into_inner())
            }
            (None, Some(argv)) => {
                if argv.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
                    self.err(
                        argv.span(),
                        format!("step `{id}` has an empty command"),
                        Some(
                            "`argv` needs at least a program, e.g. argv = [\"make\", \"test\"]"
                                .into(),
                        ),
                    );
                }
                Program::Argv(argv.into_inner())
            }
            (None, None) => {
                self.err(
                    id_span.clone(),
                    format!("step `{id}` has no command"),
                    Some("add `run = \"...\"` (a shell script) or `argv = [...]`".into()),
                );
                Program::Argv(Vec::new())
            }
        };
        let has_nul = match &program {
            Program::Shell(script) => script.contains('\0'),
            Program::Argv(argv) => argv.iter().any(|a| a.contains('\0')),
        };
        if has_nul {
            self.err(
                command_span,
                format!("step `{id}` has a NUL character in its command"),
                Some("a NUL byte cannot be passed to a process; remove it".into()),
            );
        }

        let mut needs = Vec::with_capacity(rs.needs.len());
        let mut spans = Vec::with_capacity(rs.needs.len());
        for n in &rs.needs {
            match index.get(n.get_ref()) {
                Some(&j) if needs.contains(&j) => self.err(
                    n.span(),
                    format!("step `{id}` needs `{}` twice", n.get_ref()),
                    Some("remove the repeated entry".into()),
                ),
                Some(&j) => {
                    needs.push(j);
                    spans.push(n.span());
                }
                None => {
                    let hint = match closest(n.get_ref(), index.keys().map(String::as_str)) {
                        Some(k) => format!("did you mean `{k}`?"),
                        // Few enough other steps to list them all, in file order.
                        None if (2..=10).contains(&index.len()) => {
                            let mut ids: Vec<(&usize, &str)> = index
                                .iter()
                                .filter(|(k, _)| **k != id)
                                .map(|(k, v)| (v, k.as_str()))
                                .collect();
                            ids.sort_unstable();
                            let ids: Vec<String> =
                                ids.iter().map(|(_, k)| format!("`{k}`")).collect();
                            format!(
                                "`needs` takes ids of other steps in this plan: {}",
                                ids.join(", ")
                            )
                        }
                        None => "`needs` lists ids of steps defined in this plan".into(),
                    };
                    self.err(
                        n.span(),
                        format!("step `{id}` needs unknown step `{}`", n.get_ref()),
                        Some(hint),
                    );
                }
            }
        }

        let mut inputs = Vec::with_capacity(rs.inputs.len());
        for g in rs.inputs {
            match globset::Glob::new(g.get_ref()) {
                Ok(_) if escapes_root(g.get_ref()) => {
                    self.err(
                        g.span(),
                        format!("input `{}` is outside the plan root", g.get_ref()),
                        Some("inputs are globs relative to the plan root".into()),
                    );
                }
                Ok(_) => inputs.push(g.into_inner()),
                Err(e) => {
                    let kind = e.kind().to_string();
                    self.err(
                        g.span(),
                        format!("invalid input glob `{}`: {kind}", g.get_ref()),
                        Some("globs use *, ** and {a,b}; see docs/plan-format.md".into()),
                    );
                }
            }
        }

        let mut outputs = Vec::with_capacity(rs.outputs.len());
        let me = earlier.len();
        for o in rs.outputs {
            let Some(norm) = normalize_output(o.get_ref()) else {
                let message = if o.get_ref().trim().is_empty() {
                    format!("step `{id}` has an empty output path")
                } else {
                    format!(
                        "output `{}` is not a path inside the plan root",
                        o.get_ref()
                    )
                };
                self.err(
                    o.span(),
                    message,
                    Some(
                        "outputs are relative paths without `..`; end a directory with `/`".into(),
                    ),
                );
                continue;
            };
            if let Some((other, owner)) = claimed.iter().find(|(c, _)| overlaps(c, &norm)) {
                if *owner == me {
                    self.err(
                        o.span(),
                        format!(
                            "output `{}` of step `{id}` overlaps its output `{other}`",
                            o.get_ref()
                        ),
                        Some("list a directory or paths inside it, not both".into()),
                    );
                } else {
                    let owner_id = &earlier[*owner].id;
                    self.err(
                        o.span(),
                        format!("output `{}` of step `{id}` is also claimed by step `{owner_id}` (`{other}`)", o.get_ref()),
                        Some(format!("each output path belongs to one step; to use it, make `{id}` need `{owner_id}` instead of declaring it again")),
                    );
                }
                continue;
            }
            claimed.push((norm.clone(), me));
            outputs.push(norm);
        }

        let mut env = plan_env.clone();
        env.extend(self.env_table(rs.env));
        let mut pass_env = plan_pass.to_vec();
        for n in self.env_names(&rs.pass_env, "environment variable") {
            if !pass_env.contains(&n) {
                pass_env.push(n);
            }
        }
        let secrets = self.env_names(&rs.secrets, "secret");

        let timeout = rs.timeout.and_then(|t| match parse_duration(t.get_ref()) {
            Ok(d) if d > MAX_TIMEOUT => {
                self.err(
                    t.span(),
                    format!("timeout `{}` is longer than a year", t.get_ref()),
                    Some("omit `timeout` for no limit".into()),
                );
                None
            }
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.err(t.span(), "timeout must be longer than zero", Some("omit `timeout` for no limit".into()));
                None
            }
            Err(e) => {
                self.err(
                    t.span(),
                    format!("invalid timeout `{}`: {e}", t.get_ref()),
                    Some("write a duration such as \"90s\", \"10m\" or \"1h 30m\" (units: ms, s, m, h, d)".into()),
                );
                None
            }
        });

        let retries = rs
            .retries
            .map_or_else(RetryPolicy::default, |r| self.retries(r));

        let cpus = match rs.cpus {
            None => 1,
            Some(c) => match u32::try_from(*c.get_ref()) {
                Ok(n) if (1..=1024).contains(&n) => n,
                _ => {
                    self.err(
                        c.span(),
                        format!("cpus must be between 1 and 1024, not {}", c.get_ref()),
                        Some("cpus is the number of job slots the step occupies".into()),
                    );
                    1
                }
            },
        };

        let mut tools = Vec::new();
        for t in rs.tools {
            if t.get_ref().trim().is_empty() {
                self.err(
                    t.span(),
                    format!("step `{id}` has an empty tool name"),
                    Some("name a program on PATH (\"cc\") or give its path".into()),
                );
            } else if t.get_ref().contains(char::is_whitespace) {
                self.err(
                    t.span(),
                    format!("invalid tool `{}`", t.get_ref()),
                    Some(
                        "name a program on PATH (\"cc\") or give its path, without arguments"
                            .into(),
                    ),
                );
            } else {
                tools.push(t.into_inner());
            }
        }
        let mut normalize = Vec::new();
        for n in rs.normalize {
            const KNOWN: [&str; 5] = ["zip", "tar", "gzip", "ar", "jar"];
            if KNOWN.contains(&n.get_ref().as_str()) {
                normalize.push(n.into_inner());
            } else {
                self.err(
                    n.span(),
                    format!("unknown normaliser `{}`", n.get_ref()),
                    Some(format!("known normalisers: {}", KNOWN.join(", "))),
                );
            }
        }
        let sandbox = self.sandbox(rs.sandbox, plan_sandbox);
        let deterministic = match rs.deterministic {
            Some(d) if *d.get_ref() && !sandbox.enabled => {
                self.err(
                    d.span(),
                    format!("step `{id}` is `deterministic` but runs without the sandbox"),
                    Some("a determinism check reruns the step in a second sandbox: remove `sandbox = false`, or `deterministic`".into()),
                );
                false
            }
            Some(d) if *d.get_ref() && outputs.is_empty() => {
                self.err(
                    d.span(),
                    format!("step `{id}` is `deterministic` but declares no outputs"),
                    Some("a determinism check compares the step's `outputs` between two runs: declare them".into()),
                );
                false
            }
            Some(d) => d.into_inner(),
            None => false,
        };
        let chaos = rs.chaos.and_then(|c| {
            let span = c.span();
            match c.into_inner() {
                RawStepChaos::On(true) => None,
                RawStepChaos::On(false) => Some(Vec::new()),
                RawStepChaos::Only(list) => {
                    let mut faults = Vec::new();
                    for name in &list {
                        let Some(f) = self.fault(name, span.clone()) else {
                            continue;
                        };
                        if self.chaos_faults.contains(&f) {
                            faults.push(f);
                        } else {
                            self.err(
                                span.clone(),
                                format!("step `{id}` names chaos fault `{f}`, which the plan's [chaos] faults does not allow"),
                                Some("add it to [chaos] faults, or leave it out of the step's list".into()),
                            );
                        }
                    }
                    Some(faults)
                }
            }
        });
        let mutation_report = rs.mutation_report.and_then(|m| {
            let Some(path) = normalize_output(m.get_ref()).filter(|p| !p.ends_with('/')) else {
                self.err(
                    m.span(),
                    format!("mutation report `{}` is not a file path inside the plan root", m.get_ref()),
                    Some("give the report's path relative to the root, e.g. \"mutants.out/outcomes.json\"".into()),
                );
                return None;
            };
            let declared = outputs
                .iter()
                .any(|o: &String| *o == path || (o.ends_with('/') && path.starts_with(o.as_str())));
            if sandbox.enabled && !declared {
                self.err(
                    m.span(),
                    format!("mutation report `{path}` is not among step `{id}`'s outputs"),
                    Some("a sandboxed step's files reach the workspace only through `outputs`: add the report (or its directory, ending in `/`) there".into()),
                );
                return None;
            }
            Some(path)
        });
        let step = Step {
            id,
            program,
            needs,
            inputs,
            outputs,
            env,
            pass_env,
            secrets,
            timeout,
            retries,
            cpus,
            cache: match rs.cache {
                None => CachePolicy::Default,
                Some(true) => CachePolicy::Always,
                Some(false) => CachePolicy::Never,
            },
            allow_failure: rs.allow_failure.unwrap_or(false),
            tools,
            deterministic,
            normalize,
            mutation_report,
            sandbox,
            chaos,
        };
        (step, spans)
    }

    fn retries(&mut self, r: Spanned<RawRetries>) -> RetryPolicy {
        let span = r.span();
        let mut policy = RetryPolicy::default();
        let (count, backoff, delay, max_delay) = match r.into_inner() {
            RawRetries::Count(c) => (Spanned::new(span, c), None, None, None),
            RawRetries::Table(t) => (t.count, t.backoff, t.delay, t.max_delay),
        };
        match u32::try_from(*count.get_ref()) {
            Ok(c) if c <= 100 => policy.count = c,
            _ => self.err(
                count.span(),
                format!(
                    "retry count must be between 0 and 100, not {}",
                    count.get_ref()
                ),
                Some("the count is how many times a failed step is tried again".into()),
            ),
        }
        if let Some(b) = backoff {
            policy.backoff = match b.get_ref().as_str() {
                "exponential" => Backoff::Exponential,
                "fixed" => Backoff::Fixed,
                "none" => Backoff::None,
                other => {
                    self.err(
                        b.span(),
                        format!("unknown backoff `{other}`"),
                        Some("use \"exponential\", \"fixed\" or \"none\"".into()),
                    );
                    Backoff::Exponential
                }
            };
        }
        for (value, slot, key) in [
            (delay, &mut policy.delay, "delay"),
            (max_delay, &mut policy.max_delay, "max_delay"),
        ] {
            if let Some(v) = value {
                match parse_duration(v.get_ref()) {
                    Ok(d) => *slot = d,
                    Err(e) => self.err(
                        v.span(),
                        format!("invalid retry {key} `{}`: {e}", v.get_ref()),
                        Some("write a duration such as \"500ms\", \"2s\" or \"1m\"".into()),
                    ),
                }
            }
        }
        policy
    }

    /// Topological order; reports every cycle's path.
    fn order(
        &mut self,
        steps: &[Step],
        need_spans: &[Vec<Range<usize>>],
        id_spans: &[Range<usize>],
    ) -> Vec<usize> {
        // Kahn's algorithm over plain vectors, O(steps + needs); among steps that are ready
        // together, plan order wins.
        let n = steps.len();
        let mut missing: Vec<usize> = steps.iter().map(|s| s.needs.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, s) in steps.iter().enumerate() {
            for &d in &s.needs {
                dependents[d].push(i);
            }
        }
        let mut order: Vec<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
        let mut next = 0;
        while let Some(&i) = order.get(next) {
            next += 1;
            for &j in &dependents[i] {
                missing[j] -= 1;
                if missing[j] == 0 {
                    order.push(j);
                }
            }
        }
        // A step left unordered needs, directly or not, a step on a cycle.
        match (0..n).find(|&i| missing[i] > 0) {
            None => order,
            Some(start) => {
                let path = find_cycle(steps, start);
                // Point at the `needs` entry that closes the cycle in its first step.
                let (a, b) = (path[0], path[1]);
                let span = steps[a]
                    .needs
                    .iter()
                    .position(|&x| x == b)
                    .map_or_else(|| id_spans[a].clone(), |k| need_spans[a][k].clone());
                let names: Vec<&str> = path.iter().map(|&i| steps[i].id.as_str()).collect();
                self.err(
                    span,
                    format!("dependency cycle: {}", names.join(" -> ")),
                    Some("`a -> b` means a needs b; a step cannot need itself, directly or through other steps, so remove one of these `needs`".into()),
                );
                Vec::new()
            }
        }
    }
}

/// A cycle through `start`, as step indices following `needs` edges, first == last.
fn find_cycle(steps: &[Step], start: usize) -> Vec<usize> {
    // Depth-first along `needs`, iteratively, until we come back to a node on the stack.
    let mut on_stack = vec![false; steps.len()];
    let mut visited = vec![false; steps.len()];
    let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
    on_stack[start] = true;
    visited[start] = true;
    while let Some(&mut (node, ref mut next)) = stack.last_mut() {
        if let Some(&dep) = steps[node].needs.get(*next) {
            *next += 1;
            if on_stack[dep] {
                let pos = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                let mut path: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                path.push(dep);
                return path;
            }
            if !visited[dep] {
                visited[dep] = true;
                on_stack[dep] = true;
                stack.push((dep, 0));
            }
        } else {
            on_stack[node] = false;
            stack.pop();
        }
    }
    // Unreachable: every step `order` leaves unordered leads to a cycle.
    vec![start, start]
}

/// True when a glob is absolute or climbs out of the root, in any brace alternative.
fn escapes_root(glob: &str) -> bool {
    glob.starts_with('/')
        || glob.contains("{/")
        || glob.contains(",/")
        || glob.split(['/', '{', '}', ',']).any(|c| c == "..")
}

fn valid_host_port(entry: &str) -> bool {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return false;
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    port.parse::<u16>().is_ok_and(|p| p > 0)
        && !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// Parses a size such as `512MiB`, `2 GiB`, `1G`, `1.5GB` or `1048576` into bytes; the
/// error is a lowercase fragment.
///
/// `K`, `M`, `G`, `T` (alone, or with `i` or `iB`) are powers of 1024, as in `ulimit`,
/// systemd and Docker; `KB`, `MB`, `GB`, `TB` are powers of 1000. Units are
/// case-insensitive; a bare number is bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("it is empty".into());
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim_start());
    if number.is_empty() {
        return Err("expected a number before the unit".into());
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && frac.is_empty()) || frac.contains('.') {
        return Err(format!("invalid number `{number}`"));
    }
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("unknown unit `{unit}`")),
    };
    let too_large = || "the number is too large".to_string();
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
    if !frac.is_empty() {
        // Only as many fraction digits as can matter; the rest is rounded down.
        let digits = &frac[..frac.len().min(18)];
        let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
        let f: u128 = digits.parse().map_err(|_| too_large())?;
        bytes += f * multiplier / scale;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Checks a `read`/`write` host path: absolute, `~`, `~/...`, `$NAME`, `$NAME/...`,
/// `${NAME}` or `${NAME}/...`, or relative to the plan root, without a `..` component. The error is what is wrong (a
/// fragment that follows the path) and a hint.
fn check_host_path(p: &str) -> Result<(), (String, &'static str)> {
    if p.trim().is_empty() {
        return Err((
            "is blank".into(),
            "remove the empty entry, or give a host path such as \"/opt/sdk\"",
        ));
    }
    if p.contains('\0') {
        return Err((
            "has a NUL character".into(),
            "a NUL byte cannot be part of a path; remove it",
        ));
    }
    let rest = if p.starts_with('/') {
        p
    } else if let Some(rest) = p.strip_prefix('~') {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err((
                "names another user's home".into(),
                "only `~` and `~/...` (the home of the user running ci-intel) are expanded",
            ));
        }
        rest
    } else if let Some(after) = p.strip_prefix('$') {
        const VAR_HINT: &str = "start the path with `$NAME/...` or `${NAME}/...`, NAME made of letters, digits and '_', not starting with a digit";
        let (name, rest) = match after.strip_prefix('{') {
            Some(braced) => match braced.split_once('}') {
                Some(parts) => parts,
                None => return Err(("has an unterminated `${`".into(), VAR_HINT)),
            },
            None => after.split_at(after.find('/').unwrap_or(after.len())),
        };
        if !is_env_name(name) {
            return Err((
                format!("starts with an invalid variable `{name}`"),
                VAR_HINT,
            ));
        }
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(("has text right after its variable".into(), VAR_HINT));
        }
        rest
    } else {
        // Relative to the plan root: a cache the step keeps between runs (`target`).
        p
    };
    if rest.contains('$') {
        return Err((
            "has a `$` after its start".into(),
            "only a leading `$NAME` or `${NAME}` is expanded; other `$` would be taken literally",
        ));
    }
    if rest.split('/').any(|c| c == "..") {
        return Err((
            "has a `..` component".into(),
            "write the path without `..`; it is resolved on the host, not inside the plan root",
        ));
    }
    Ok(())
}
