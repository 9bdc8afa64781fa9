//! `ci-intel plan shard` and the steps of `ci-intel run --shard I/N`.
//!
//! Both split the whole plan with [`ci_intel_scheduler::split`] over the estimates of
//! [`crate::step_estimates`], so a runner that sees the same history as the job that
//! printed the split runs the same steps.

use std::path::Path;
use std::time::Duration;

use ci_intel_scheduler::{MAX_SHARDS, Plan, Selection, ShardError, Sharding, split};

use crate::cli::{ShardArg, ShardFormat};
use crate::{Failure, Outcome, exit, load, open_history, step_estimates};

/// `ci-intel plan shard PLAN --shards N`.
pub(crate) fn plan_shard(
    path: &Path,
    shards: usize,
    format: ShardFormat,
    state_dir: Option<&Path>,
) -> Outcome {
    let plan = match load(path) {
        Ok(p) => p,
        Err(f) => return Ok(Err(f)),
    };
    let state_dir = state_dir.map_or_else(|| plan.root.join(".ci-intel"), Path::to_path_buf);
    // Only read: without a history the static estimate is used and nothing is created.
    let history = if state_dir.join("history.db").is_file() {
        open_history(&state_dir)
    } else {
        None
    };
    let estimates = step_estimates(&plan, history.as_ref());
    let sharding = match sharded(&plan, &estimates, shards, "--shards")? {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    let ids = |shard: usize| -> Vec<&str> {
        sharding.shards[shard]
            .steps
            .iter()
            .map(|&i| plan.steps[i].id.as_str())
            .collect()
    };
    let n = sharding.shards.len();
    match format {
        ShardFormat::Text => {
            for (k, shard) in sharding.shards.iter().enumerate() {
                let steps = if shard.is_empty() {
                    "none (the plan has less work than shards)".to_string()
                } else {
                    ids(k).join(", ")
                };
                outln!(
                    "shard {}/{n}  predicted {:.1}s  steps: {steps}",
                    k + 1,
                    shard.predicted.as_secs_f64()
                );
            }
            outln!(
                "imbalance {:.1}% (predicted; lower bound: critical path {:.1}s)",
                sharding.imbalance() * 100.0,
                sharding.critical_path.as_secs_f64()
            );
        }
        ShardFormat::Json => {
            let shards: Vec<serde_json::Value> = (0..n)
                .map(|k| {
                    serde_json::json!({
                        "index": k + 1,
                        "total": n,
                        "steps": ids(k),
                        "predicted_seconds": seconds(sharding.shards[k].predicted),
                    })
                })
                .collect();
            outln!(
                "{}",
                serde_json::json!({
                    "shards": shards,
                    "imbalance": (sharding.imbalance() * 10_000.0).round() / 10_000.0,
                    "critical_path_seconds": seconds(sharding.critical_path),
                })
            );
        }
        ShardFormat::GithubMatrix => {
            let include: Vec<serde_json::Value> = (0..n)
                .map(|k| {
                    serde_json::json!({
                        "shard": format!("{}/{n}", k + 1),
                        "index": k + 1,
                        "total": n,
                        "steps": ids(k).join(" "),
                        "predicted_seconds": seconds(sharding.shards[k].predicted),
                    })
                })
                .collect();
            outln!("{}", serde_json::json!({ "include": include }));
        }
    }
    Ok(Ok(exit::SUCCESS))
}

/// Checks `--shard I/N` before anything else is done: `1 ≤ I ≤ N ≤` [`MAX_SHARDS`].
pub(crate) fn check(shard: ShardArg) -> Result<(), Failure> {
    let ShardArg { index, total } = shard;
    if total == 0 || total > MAX_SHARDS {
        return Err(Failure::usage(
            format!(
                "error: --shard {index}/{total}: the number of shards must be between 1 and {MAX_SHARDS}"
            ),
            Some("give --shard I/N, e.g. --shard 1/4 for the first of four shards".into()),
        ));
    }
    if index == 0 || index > total {
        return Err(Failure::usage(
            format!("error: --shard {index}/{total}: there is no shard {index} of {total}"),
            Some(format!(
                "shards are numbered from 1: give --shard 1/{total} to --shard {total}/{total}"
            )),
        ));
    }
    Ok(())
}

/// The steps `run --shard` runs (a [`check`]ed shard), said in one line; empty, and said
/// so, when the shard has nothing to do.
pub(crate) fn run_selection(
    plan: &Plan,
    shard: ShardArg,
    estimates: &[Duration],
) -> anyhow::Result<Result<Selection, Failure>> {
    let sharding = match sharded(plan, estimates, shard.total, "--shard")? {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    let k = shard.index - 1;
    let selection = sharding
        .selection(plan, k)
        .ok_or_else(|| anyhow::anyhow!("shard {} of {} missing", shard.index, shard.total))?;
    let ShardArg { index, total } = shard;
    if selection.is_empty() {
        outln!(
            "shard {index}/{total} has no steps (the plan has less work than {total} shards): nothing to run"
        );
    } else {
        outln!(
            "shard {index}/{total}: {} of {} steps, predicted {:.1}s",
            selection.len(),
            plan.steps.len(),
            sharding.shards[k].predicted.as_secs_f64()
        );
    }
    Ok(Ok(selection))
}

/// The whole plan split into `shards`; a bad number of shards is a usage error about
/// `flag`.
fn sharded(
    plan: &Plan,
    estimates: &[Duration],
    shards: usize,
    flag: &str,
) -> anyhow::Result<Result<Sharding, Failure>> {
    match split(plan, &Selection::all(plan), estimates, shards) {
        Ok(s) => Ok(Ok(s)),
        Err(e @ (ShardError::NoShards | ShardError::TooManyShards { .. })) => {
            Ok(Err(Failure::usage(
                format!("error: {flag} {shards}: {e}"),
                Some(format!("give between 1 and {MAX_SHARDS} shards")),
            )))
        }
        Err(e) => Err(anyhow::Error::new(e).context("splitting the plan into shards")),
    }
}

/// Seconds, to the millisecond.
fn seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}
