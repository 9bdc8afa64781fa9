//! The chaos schedule: which attempt gets which fault, decided from a seed.
//!
//! `--chaos "seed=42,rate=0.05,faults=kill_job,drop_net"` is a [`ChaosSpec`]; the plan's
//! `[chaos]` table ([`ChaosPolicy`]) is the allowlist of faults and their default rates, and
//! a step can opt out (`chaos = false`) or narrow its faults (`chaos = ["kill_job"]`).
//! Together they make a [`Chaos`] schedule, whose [`Chaos::decide`] is a pure function of
//! (seed, step id, attempt) and the plan: the same seed gives the same faults with the same
//! parameters on the same attempts, whatever ran before, so a failure found at night
//! replays in the morning. Only `kill_job`'s moment and `cpu_stress`'s period scale with
//! the step's predicted duration (a seeded fraction of it), so they land inside the step on
//! a fast machine and on a slow one.
//!
//! The generator is specified here so that a schedule never changes under a toolchain or
//! dependency update: the 64-bit FNV-1a hash of the step id, mixed with the seed and the
//! attempt, seeds a SplitMix64 sequence; its first draw decides whether a fault is
//! injected (and which, by where the draw falls among the step's eligible faults' rates),
//! the following draws the fault's parameters.
//!
//! It does not inject anything itself: the executor applies the decided
//! [`Injection`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ci_intel_executor::chaos::{
    CONNECT_ATTEMPTS, Fault, FaultParams, Injection, KillSwitch, NetFault,
};

use crate::plan::{Network, Plan, Step};

/// The rate per attempt when neither `--chaos` nor the plan gives one.
pub const DEFAULT_RATE: f64 = 0.05;

/// Seeds are below 2^53, so that every JSON reader keeps them exact in a run record.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// Each private tmpfs of a `disk_fill` attempt (filled to its last byte).
pub const DISK_FILL_TMPFS: u64 = 16 << 20;

/// `--chaos SPEC`: comma-separated `key=value` items.
///
/// - `seed=N`: the seed (a random one, printed, when absent);
/// - `rate=R`: the probability that an attempt gets a fault (0 to 1);
/// - `faults=a,b,...`: the faults to inject (the items after `faults=` up to the next
///   `key=` are its list);
/// - `NAME=R` for a fault name: that fault's own rate per attempt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChaosSpec {
    /// The seed.
    pub seed: Option<u64>,
    /// The rate per attempt.
    pub rate: Option<f64>,
    /// The faults asked for.
    pub faults: Option<Vec<Fault>>,
    /// Per-fault rates.
    pub rates: BTreeMap<Fault, f64>,
}

/// Why a `--chaos` spec is not valid.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// An item has no `=` and follows no `faults=`.
    #[error("`{0}` is not a key=value item")]
    NotKeyValue(String),
    /// An unknown key.
    #[error("unknown key `{key}`{}", suggest(.suggestion))]
    UnknownKey {
        /// The key.
        key: String,
        /// A close known key.
        suggestion: Option<String>,
    },
    /// An unknown fault.
    #[error("unknown fault `{name}`{}", suggest(.suggestion))]
    UnknownFault {
        /// The name.
        name: String,
        /// A close known fault.
        suggestion: Option<String>,
    },
    /// A seed that is not a number from 0 to [`MAX_SEED`].
    #[error("seed `{0}` is not a number from 0 to 9007199254740991")]
    Seed(String),
    /// A rate that is not a number from 0 to 1.
    #[error("{key} `{value}` is not a rate from 0 to 1")]
    Rate {
        /// `rate` or the fault.
        key: String,
        /// What was given.
        value: String,
    },
    /// A key given twice.
    #[error("`{0}` is given twice")]
    Duplicate(String),
    /// Per-fault rates adding up to more than 1.
    #[error("the per-fault rates add up to {0}, more than 1")]
    Sum(f64),
}

fn suggest(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// A fault named `name`, or the error naming the closest.
pub fn parse_fault(name: &str) -> Result<Fault, SpecError> {
    Fault::parse(name).ok_or_else(|| SpecError::UnknownFault {
        name: name.to_string(),
        suggestion: crate::plan::closest(name, Fault::ALL.iter().map(|f| f.name()))
            .map(str::to_string),
    })
}

fn parse_rate(key: &str, value: &str) -> Result<f64, SpecError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| SpecError::Rate {
            key: key.to_string(),
            value: value.to_string(),
        })
}

impl std::str::FromStr for ChaosSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<ChaosSpec, SpecError> {
        let mut spec = ChaosSpec::default();
        let mut in_faults = false;
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                if in_faults {
                    let f = parse_fault(item)?;
                    spec.faults.get_or_insert_with(Vec::new).push(f);
                    continue;
                }
                return Err(SpecError::NotKeyValue(item.to_string()));
            };
            let (key, value) = (key.trim(), value.trim());
            in_faults = false;
            match key {
                "seed" => {
                    if spec.seed.is_some() {
                        return Err(SpecError::Duplicate(key.into()));
                    }
                    spec.seed = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|s| *s <= MAX_SEED)
                            .ok_or_else(|| SpecError::Seed(value.into()))?,
                    );
                }
                "rate" => {
                    if spec.rate.is_some() {
                        return Err(SpecError::Duplicate(key.into()));
                    }
                    spec.rate = Some(parse_rate(key, value)?);
                }
                "faults" => {
                    if spec.faults.is_some() {
                        return Err(SpecError::Duplicate(key.into()));
                    }
                    in_faults = true;
                    let list = spec.faults.insert(Vec::new());
                    if !value.is_empty() {
                        list.push(parse_fault(value)?);
                    }
                }
                _ => match Fault::parse(key) {
                    Some(f) => {
                        if spec.rates.insert(f, parse_rate(key, value)?).is_some() {
                            return Err(SpecError::Duplicate(key.into()));
                        }
                    }
                    None => {
                        let known = ["seed", "rate", "faults"]
                            .into_iter()
                            .chain(Fault::ALL.iter().map(|f| f.name()));
                        return Err(SpecError::UnknownKey {
                            key: key.to_string(),
                            suggestion: crate::plan::closest(key, known).map(str::to_string),
                        });
                    }
                },
            }
        }
        if let Some(list) = &mut spec.faults {
            list.sort();
            list.dedup();
        }
        let sum: f64 = spec.rates.values().sum();
        if sum > 1.0 + 1e-9 {
            return Err(SpecError::Sum(sum));
        }
        Ok(spec)
    }
}

impl ChaosSpec {
    /// The canonical form, with the seed given: what a replay passes to `--chaos`.
    pub fn canonical(&self, seed: u64) -> String {
        let mut s = format!("seed={seed}");
        if let Some(r) = self.rate {
            s.push_str(&format!(",rate={r}"));
        }
        for (f, r) in &self.rates {
            s.push_str(&format!(",{f}={r}"));
        }
        if let Some(list) = &self.faults {
            s.push_str(",faults=");
            let names: Vec<&str> = list.iter().map(|f| f.name()).collect();
            s.push_str(&names.join(","));
        }
        s
    }
}

/// A plan's `[chaos]` table: what fault injection may do to it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosPolicy {
    /// The faults that may be injected (all when the plan does not say).
    pub faults: Vec<Fault>,
    /// The rate per attempt when `--chaos` gives none.
    pub rate: Option<f64>,
    /// Per-fault rates when `--chaos` gives none.
    pub rates: BTreeMap<Fault, f64>,
    /// A file whose existence disables all injection (the plan's `kill_switch`, joined to
    /// the plan's root).
    pub kill_switch: Option<PathBuf>,
}

impl Default for ChaosPolicy {
    fn default() -> Self {
        ChaosPolicy {
            faults: Fault::ALL.to_vec(),
            rate: None,
            rates: BTreeMap::new(),
            kill_switch: None,
        }
    }
}

/// The run's chaos schedule.
#[derive(Clone, Debug)]
pub struct Chaos {
    /// The seed.
    pub seed: u64,
    /// The spec as a replay passes it (`seed=...` first).
    pub spec: String,
    /// Faults asked for and allowed by the plan.
    pub faults: Vec<Fault>,
    /// The rate per attempt for faults without their own.
    pub rate: f64,
    /// Faults' own rates.
    pub rates: BTreeMap<Fault, f64>,
    /// Disables injection at once.
    pub kill_switch: KillSwitch,
    /// Whether the run has a cache (else `corrupt_cache` has nothing to act on). A dry run
    /// counts as having one: it shows the schedule the real run would have.
    pub cache: bool,
    /// Whether the run puts every step outside the sandbox (`--no-sandbox`).
    pub no_sandbox: bool,
    /// Each step's predicted duration (`[i]` for step `i`).
    pub expected: Vec<Duration>,
    /// Faults asked for that the plan does not allow, for a warning.
    pub refused: Vec<Fault>,
}

/// One decision, logged whether or not it injects anything.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The step.
    pub step: String,
    /// The attempt, 1 for the first.
    pub attempt: u32,
    /// The first draw, from 0 to 1.
    pub draw: f64,
    /// The step's total rate: a draw below it injects.
    pub threshold: f64,
    /// The fault, when one is injected.
    pub injection: Option<Injection>,
    /// Why none is, when none is.
    pub why_not: Option<String>,
    /// Whether the step, given this fault on this attempt, is expected to recover (its
    /// recovery path exists: a retry left, or a fault recovered within the attempt).
    pub expect_recovery: bool,
}

impl Decision {
    /// One line for the run's chaos log.
    pub fn line(&self, seed: u64) -> String {
        let head = format!(
            "seed={seed} step={} attempt={} draw={:.6} rate={:.6}",
            self.step, self.attempt, self.draw, self.threshold
        );
        match (&self.injection, &self.why_not) {
            (Some(inj), _) => format!(
                "{head} inject={} expect={} {}",
                inj.fault,
                if self.expect_recovery {
                    "recovered"
                } else {
                    "degraded"
                },
                inj.describe()
            ),
            (None, Some(why)) => format!("{head} inject=none ({why})"),
            (None, None) => format!("{head} inject=none"),
        }
    }
}

/// The attempt's random sequence: SplitMix64 seeded from (seed, step id, attempt).
#[derive(Clone, Debug)]
pub struct AttemptRng(u64);

impl AttemptRng {
    /// The sequence of `attempt` of `step` under `seed`.
    pub fn new(seed: u64, step: &str, attempt: u32) -> AttemptRng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in step.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        AttemptRng(
            seed ^ h.rotate_left(17) ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `[lo, hi]`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Why a `--chaos` run cannot start.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChaosError {
    /// The plan allows no fault at all (`[chaos] faults = []`).
    #[error("the plan's [chaos] faults is empty: nothing may be injected")]
    NothingToInject,
    /// Nothing the spec asks for is allowed by the plan.
    #[error("none of the faults asked for is allowed by the plan's [chaos] faults ({})", .allowed.join(", "))]
    NothingAllowed {
        /// What the plan allows.
        allowed: Vec<&'static str>,
    },
}

impl Chaos {
    /// The schedule of `spec` on `plan`; `expected[i]` is step `i`'s predicted duration.
    /// `cache`: the run has a cache; `no_sandbox`: `--no-sandbox`. Neither changes the
    /// schedule, only whether a fault drawn can act.
    pub fn new(
        spec: &ChaosSpec,
        plan: &Plan,
        expected: Vec<Duration>,
        cache: bool,
        no_sandbox: bool,
        seed: u64,
    ) -> Result<Chaos, ChaosError> {
        let policy = &plan.chaos;
        if policy.faults.is_empty() {
            return Err(ChaosError::NothingToInject);
        }
        let asked: Vec<Fault> = match (&spec.faults, spec.rates.is_empty()) {
            (Some(list), _) => {
                let mut l = list.clone();
                l.extend(spec.rates.keys());
                l.sort();
                l.dedup();
                l
            }
            (None, false) => spec.rates.keys().copied().collect(),
            (None, true) => policy.faults.clone(),
        };
        let (faults, refused): (Vec<Fault>, Vec<Fault>) =
            asked.iter().partition(|f| policy.faults.contains(f));
        if faults.is_empty() && !asked.is_empty() {
            return Err(ChaosError::NothingAllowed {
                allowed: policy.faults.iter().map(|f| f.name()).collect(),
            });
        }
        let rates = if spec.rates.is_empty() && spec.rate.is_none() {
            policy.rates.clone()
        } else {
            spec.rates.clone()
        };
        Ok(Chaos {
            seed,
            spec: spec.canonical(seed),
            faults,
            rate: spec.rate.or(policy.rate).unwrap_or(DEFAULT_RATE),
            rates,
            kill_switch: KillSwitch {
                file: policy.kill_switch.clone(),
            },
            cache,
            no_sandbox,
            expected,
            refused,
        })
    }

    /// The faults `step` can be given: asked for, allowed by the plan and the step, and
    /// able to act on it as the plan declares it (the network faults need an allowlist,
    /// `disk_fill` the sandbox, `corrupt_cache` a cacheable step). Only the plan counts, not
    /// how this run is started, so `--dry-run`, `--no-cache` and a replay see one schedule.
    pub fn eligible(&self, step: &Step) -> Vec<Fault> {
        let sandboxed = step.sandbox.enabled;
        let cacheable = sandboxed && step.cache.allows(!step.secrets.is_empty());
        let proxied = sandboxed && matches!(step.sandbox.network, Network::Allowlist(_));
        self.faults
            .iter()
            .copied()
            .filter(|f| step.chaos.as_ref().is_none_or(|only| only.contains(f)))
            .filter(|f| match f {
                Fault::KillJob | Fault::CpuStress => true,
                Fault::DelayNet | Fault::DropNet => proxied,
                Fault::CorruptCache => cacheable,
                Fault::DiskFill => sandboxed,
            })
            .collect()
    }

    /// Why `fault` cannot act in this run although the plan lets it, if it cannot.
    fn cannot_act(&self, fault: Fault) -> Option<&'static str> {
        match fault {
            Fault::DelayNet | Fault::DropNet | Fault::DiskFill | Fault::CorruptCache
                if self.no_sandbox =>
            {
                Some("--no-sandbox runs the step without the sandbox")
            }
            Fault::CorruptCache if !self.cache => Some("the run has no cache (--no-cache)"),
            _ => None,
        }
    }

    /// The decision for `attempt` of step `index` of `plan`.
    pub fn decide(&self, plan: &Plan, index: usize, attempt: u32) -> Decision {
        let step = &plan.steps[index];
        let mut rng = AttemptRng::new(self.seed, &step.id, attempt);
        let draw = rng.unit();
        let eligible = self.eligible(step);
        let shared = eligible
            .iter()
            .filter(|f| !self.rates.contains_key(f))
            .count();
        let mut intervals: Vec<(Fault, f64)> = eligible
            .iter()
            .map(|&f| {
                let r = self
                    .rates
                    .get(&f)
                    .copied()
                    .unwrap_or(self.rate / shared.max(1) as f64);
                (f, r)
            })
            .collect();
        let total: f64 = intervals.iter().map(|(_, r)| r).sum();
        if total > 1.0 {
            for (_, r) in &mut intervals {
                *r /= total;
            }
        }
        // An empty sum is -0.0: a step with no eligible fault has rate 0.
        let threshold = if total > 0.0 { total.min(1.0) } else { 0.0 };
        let mut decision = Decision {
            step: step.id.clone(),
            attempt,
            draw,
            threshold,
            injection: None,
            why_not: None,
            expect_recovery: false,
        };
        if eligible.is_empty() {
            decision.why_not = Some(match &step.chaos {
                Some(only) if only.is_empty() => "the step opts out (`chaos = false`)".into(),
                _ => "no fault asked for can act on this step".into(),
            });
            return decision;
        }
        if let Some(why) = self.kill_switch.engaged() {
            decision.why_not = Some(why);
            return decision;
        }
        let mut upto = 0.0;
        let Some((fault, rate)) = intervals.iter().find_map(|&(f, r)| {
            upto += r;
            (draw < upto).then_some((f, r))
        }) else {
            decision.why_not = Some("draw above the rate".into());
            return decision;
        };
        if let Some(why) = self.cannot_act(fault) {
            decision.why_not = Some(format!("drew {fault}, which cannot act in this run: {why}"));
            return decision;
        }
        let expected = self
            .expected
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let params = params(fault, &mut rng, step, expected);
        decision.expect_recovery = expects_recovery(&params, step, attempt);
        decision.injection = Some(Injection {
            fault,
            rate,
            params,
            kill_switch: self.kill_switch.clone(),
            decision: format!(
                "seed {}, attempt {attempt}: draw {draw:.4} < rate {threshold:.4}",
                self.seed
            ),
        });
        decision
    }
}

/// A fault's parameters, drawn after the decision.
fn params(fault: Fault, rng: &mut AttemptRng, step: &Step, expected: Duration) -> FaultParams {
    match fault {
        Fault::KillJob => FaultParams::Kill {
            after: expected
                .mul_f64(0.1 + 0.8 * rng.unit())
                .max(Duration::from_millis(10)),
        },
        Fault::DelayNet => FaultParams::Net(match rng.unit() {
            u if u < 0.4 => NetFault::Latency {
                delay: Duration::from_millis(rng.between(50, 500)),
            },
            u if u < 0.8 => NetFault::Bandwidth {
                bytes_per_sec: rng.between(16, 256) * 1024,
            },
            _ => NetFault::Hang {
                at_most: Duration::from_secs(rng.between(5, 30)),
            },
        }),
        Fault::DropNet => FaultParams::Net(match rng.unit() {
            u if u < 0.6 => NetFault::RefuseConnects {
                count: rng.between(1, 2) as u32,
            },
            _ => NetFault::ResetAfter {
                bytes: rng.between(0, 64 * 1024),
            },
        }),
        Fault::CorruptCache => FaultParams::Corrupt {
            blob: rng.next_u64(),
            byte: rng.next_u64(),
        },
        Fault::CpuStress => FaultParams::CpuStress {
            workers: step.cpus.max(1) * rng.between(1, 2) as u32,
            period: expected
                .mul_f64(0.5 + 1.5 * rng.unit())
                .clamp(Duration::from_millis(100), Duration::from_secs(600)),
        },
        Fault::DiskFill => FaultParams::DiskFill {
            tmpfs: DISK_FILL_TMPFS,
        },
    }
}

/// Whether a step given `params` on `attempt` should still succeed: faults recovered
/// within the attempt always; the others when a retry is left.
pub fn expects_recovery(params: &FaultParams, step: &Step, attempt: u32) -> bool {
    let retry_left = attempt <= step.retries.count;
    match params {
        FaultParams::Corrupt { .. } | FaultParams::CpuStress { .. } => true,
        FaultParams::Net(NetFault::Latency { .. } | NetFault::Bandwidth { .. }) => true,
        FaultParams::Net(NetFault::RefuseConnects { count }) => {
            *count < CONNECT_ATTEMPTS || retry_left
        }
        FaultParams::Net(NetFault::Hang { .. } | NetFault::ResetAfter { .. })
        | FaultParams::Kill { .. }
        | FaultParams::DiskFill { .. } => retry_left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_fault_lists_and_per_fault_rates() {
        let s: ChaosSpec = "seed=42,rate=0.05,faults=kill_job,delay_net,drop_net,corrupt_cache,cpu_stress,disk_fill"
            .parse()
            .unwrap();
        assert_eq!(s.seed, Some(42));
        assert_eq!(s.rate, Some(0.05));
        assert_eq!(s.faults.as_deref(), Some(&Fault::ALL[..]));
        let s: ChaosSpec = "kill_job=0.5, seed=7".parse().unwrap();
        assert_eq!(s.rates.get(&Fault::KillJob), Some(&0.5));
        assert_eq!(s.canonical(7), "seed=7,kill_job=0.5");
        let s: ChaosSpec = "faults=cpu_stress,rate=0".parse().unwrap();
        assert_eq!(s.faults.as_deref(), Some(&[Fault::CpuStress][..]));
        assert_eq!(s.rate, Some(0.0));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = |s: &str| s.parse::<ChaosSpec>().unwrap_err().to_string();
        assert_eq!(
            e("seed=x"),
            "seed `x` is not a number from 0 to 9007199254740991"
        );
        assert_eq!(
            e("seed=9007199254740992"),
            "seed `9007199254740992` is not a number from 0 to 9007199254740991"
        );
        assert_eq!(e("rate=2"), "rate `2` is not a rate from 0 to 1");
        assert_eq!(
            e("faults=kill_jobs"),
            "unknown fault `kill_jobs` (did you mean `kill_job`?)"
        );
        assert_eq!(e("sed=1"), "unknown key `sed` (did you mean `seed`?)");
        assert_eq!(e("kill_job"), "`kill_job` is not a key=value item");
        assert_eq!(e("seed=1,seed=2"), "`seed` is given twice");
        assert_eq!(
            e("kill_job=0.6,disk_fill=0.6"),
            "the per-fault rates add up to 1.2, more than 1"
        );
    }

    proptest::proptest! {
        /// A spec's canonical form (what a replay passes) parses back to the same spec, and
        /// no text makes the parser panic.
        #[test]
        fn canonical_specs_round_trip(
            seed in 0..=MAX_SEED,
            rate in proptest::option::of(0u32..=1000),
            faults in proptest::option::of(proptest::sample::subsequence(Fault::ALL.to_vec(), 1..=6)),
            own in proptest::collection::btree_map(0usize..6, 0u32..=160, 0..3),
            junk in ".{0,40}",
        ) {
            let spec = ChaosSpec {
                seed: Some(seed),
                rate: rate.map(|r| f64::from(r) / 1000.0),
                faults,
                rates: own.into_iter().map(|(i, r)| (Fault::ALL[i], f64::from(r) / 1000.0)).collect(),
            };
            let text = spec.canonical(seed);
            let back: ChaosSpec = text.parse().unwrap();
            let mut expected = spec.clone();
            if let Some(l) = &mut expected.faults {
                l.sort();
            }
            proptest::prop_assert_eq!(back, expected, "{}", text);
            let _ = junk.parse::<ChaosSpec>();
        }
    }

    #[test]
    fn an_opted_out_step_draws_against_rate_zero_and_says_why() {
        let plan = crate::parse_plan(
            std::path::Path::new("plan.toml"),
            "version = 1\n[steps.a]\nrun = \"x\"\nchaos = false\n",
        )
        .unwrap();
        let spec: ChaosSpec = "seed=1,rate=1".parse().unwrap();
        let chaos = Chaos::new(&spec, &plan, vec![], true, false, 1).unwrap();
        let d = chaos.decide(&plan, 0, 1);
        assert_eq!(d.injection, None);
        assert!(d.threshold == 0.0 && d.threshold.is_sign_positive());
        assert!(
            d.line(1)
                .contains("rate=0.000000 inject=none (the step opts out"),
            "{}",
            d.line(1)
        );
    }

    #[test]
    fn the_generator_is_fixed() {
        // The schedule of a seed must never change: these values are the specification.
        let mut r = AttemptRng::new(42, "build", 1);
        let first = r.next_u64();
        let mut again = AttemptRng::new(42, "build", 1);
        assert_eq!(again.next_u64(), first);
        assert_ne!(AttemptRng::new(42, "build", 2).next_u64(), first);
        assert_ne!(AttemptRng::new(43, "build", 1).next_u64(), first);
        assert_ne!(AttemptRng::new(42, "buile", 1).next_u64(), first);
        // The documented algorithm, pinned: a change here changes every schedule.
        let mut r = AttemptRng::new(42, "build", 1);
        assert_eq!(r.next_u64(), 0xae25_d4d3_26de_7d16);
        assert_eq!(r.next_u64(), 0x5681_30e3_bb4b_854c);
        assert_eq!(
            AttemptRng::new(42, "build", 2).next_u64(),
            0x8662_822e_b29f_ecd9
        );
        assert_eq!(AttemptRng::new(0, "", 1).next_u64(), 0x6b5a_ea53_2a9c_acd9);
        // SplitMix64's published first output for state 0 after one increment.
        let mut z = AttemptRng(0);
        assert_eq!(z.next_u64(), 0xe220_a839_7b1d_cdaf);
        let u = AttemptRng::new(1, "x", 1).unit();
        assert!((0.0..1.0).contains(&u));
    }
}
