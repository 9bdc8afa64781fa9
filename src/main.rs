//! The `ci-intel` binary: arguments, reporters and exit codes.
//!
//! It wires the crates together and owns no logic of its own: plans are parsed and
//! dispatched by the scheduler, steps are run by the executor, processes are contained by
//! the sandbox, results are found again by the cache.
//!
//! Exit codes: 0 success; 1 a step failed (or timed out, or was cancelled); 2 usage or
//! plan error; 3 the host cannot provide a required isolation layer; 4 ci-intel itself failed;
//! 130 interrupted.

mod cli;
mod exec;
mod otel;
mod report;
mod telemetry;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use ci_intel_executor::{
    CancelLevel, CancelSource, DryRun, FixedEnv, Posture, ProcessExecutor, ProcessExecutorConfig,
    VerifyPolicy, Watchdog,
};
use ci_intel_scheduler::{
    DispatchOptions, DurationEstimator, LoadError, Plan, Selection, SelectionError,
    StaticEstimator, StepState, dispatch, load_plan, priorities_from, render_dot, render_mermaid,
};
use clap::Parser;

use crate::cli::{
    CacheCommand, ChaosCommand, Cli, Command, DeterminismCommand, ExecCli, GraphFormat,
    PlanCommand, PredictCommand, RunArgs,
};
use crate::report::Reporter;

/// Documented exit codes.
mod exit {
    pub(crate) const SUCCESS: u8 = 0;
    pub(crate) const STEP_FAILED: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const ISOLATION: u8 = 3;
    pub(crate) const INTERNAL: u8 = 4;
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// Writes to stdout, ignoring a closed pipe (`ci-intel run … | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Like [`out!`], with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod cache_cmd;
mod chaos_cmd;
mod predict;
mod shard_cmd;

/// An expected failure: what went wrong, how to fix it, and the exit code.
struct Failure {
    code: u8,
    message: String,
    hint: Option<String>,
}

impl Failure {
    fn usage(message: impl Into<String>, hint: Option<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
            hint,
        }
    }
}

fn main() -> ExitCode {
    let command = parse_args();
    raise_nofile_limit();
    // The filter parser only when a filter is given: every `exec` pays for start-up.
    // Colour only on a terminal: a log file or a CI capture gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // A service logs every request (the access log); a run only what goes wrong.
    let default_level = if matches!(command, Command::Cache(CacheCommand::Serve { .. })) {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    match tracing_subscriber::EnvFilter::try_from_env("CI_INTEL_LOG") {
        Ok(filter) => subscriber.with_env_filter(filter).init(),
        Err(_) => subscriber.with_max_level(default_level).init(),
    }
    let result = match command {
        Command::Run(args) => run(args),
        Command::Determinism(DeterminismCommand::Check(mut args)) => {
            args.verify_determinism.get_or_insert_with(|| "fail".into());
            run(args)
        }
        Command::Chaos(ChaosCommand::Night(args)) => chaos_cmd::night(args),
        Command::Plan(PlanCommand::Check { plan }) => plan_check(&plan),
        Command::Plan(PlanCommand::Graph {
            plan,
            format,
            predicted,
            state_dir,
        }) => plan_graph(&plan, format, predicted, state_dir.as_deref()),
        Command::Plan(PlanCommand::Shard {
            plan,
            shards,
            format,
            state_dir,
        }) => shard_cmd::plan_shard(&plan, shards, format, state_dir.as_deref()),
        Command::Exec(args) => exec::exec(args),
        Command::Cache(cmd) => cache_command(cmd),
        Command::Predict(PredictCommand::Report {
            plan,
            runs,
            json,
            state_dir,
        }) => predict::report(&state_dir, plan.as_deref(), runs, json),
        Command::Report {
            out,
            runs,
            state_dir,
        } => html_report(&out, runs, &state_dir),
        Command::Doctor { json } => Ok(doctor(json)),
    };
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(f)) => {
            use std::io::Write as _;
            // A closed stderr must not turn a usage error into a panic.
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{}", f.message);
            if !f.message.ends_with('\n') {
                let _ = writeln!(err);
            }
            if let Some(h) = f.hint {
                let _ = writeln!(err, "hint: {h}");
            }
            ExitCode::from(f.code)
        }
        Err(e) => {
            use std::io::Write as _;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: internal failure: {e:#}");
            let _ = writeln!(
                err,
                "hint: this is a bug or a host problem (disk, permissions); rerun with CI_INTEL_LOG=debug for details"
            );
            ExitCode::from(exit::INTERNAL)
        }
    }
}

type Outcome = anyhow::Result<Result<u8, Failure>>;

fn cache_command(cmd: CacheCommand) -> Outcome {
    match cmd {
        CacheCommand::Keygen { out } => cache_cmd::keygen(&out),
        CacheCommand::Serve {
            listen,
            dir,
            config,
        } => cache_cmd::serve(listen, &dir, config.as_deref()),
        CacheCommand::TokenHash => cache_cmd::token_hash(),
        CacheCommand::Stats { json, cache_dir } => cache_cmd::stats(cache_dir.as_deref(), json),
        CacheCommand::Verify { cache_dir } => cache_cmd::verify(cache_dir.as_deref()),
        CacheCommand::Gc {
            max_size,
            cache_dir,
        } => cache_cmd::gc(cache_dir.as_deref(), max_size),
        CacheCommand::Hash { threads, paths } => {
            cache_cmd::hash(&paths, threads.map_or(0, |n| n.get()))
        }
    }
}

/// The command line. `exec` is parsed on its own ([`ExecCli`]): it starts once per command,
/// and the whole tree costs more to build than the rest of its argument handling.
fn parse_args() -> Command {
    if std::env::args_os().nth(1).is_some_and(|a| a == "exec") {
        return Command::Exec(ExecCli::parse_from(std::env::args_os().skip(1)).args);
    }
    Cli::parse().command
}

/// The state directory's run history; `None` (with a warning) when it cannot be used. A
/// damaged one is moved aside and a new one started, which is said here.
fn open_history(state_dir: &Path) -> Option<ci_intel_scheduler::history::History> {
    let path = state_dir.join("history.db");
    if let Err(e) = std::fs::create_dir_all(state_dir) {
        tracing::warn!("run history {} unusable: {e}", path.display());
        return None;
    }
    match ci_intel_scheduler::history::History::open(&path) {
        Ok(h) => {
            if let Some(aside) = &h.moved_aside {
                tracing::warn!(
                    "the run history was damaged; it is kept at {} and a new one was started",
                    aside.display()
                );
            }
            Some(h)
        }
        Err(e) => {
            tracing::warn!(
                "run history {} unusable (steps are ordered without it): {}",
                path.display(),
                ci_intel_cache::error_chain(&e)
            );
            None
        }
    }
}

/// Each step's predicted duration (`[i]` for step `i`): the learned model's when the
/// history knows this plan, else one second a step. A run's priorities and its shards
/// (`run --shard`, `plan shard`) all come from here.
fn step_estimates(
    plan: &Plan,
    history: Option<&ci_intel_scheduler::history::History>,
) -> Vec<std::time::Duration> {
    estimates_of(plan, &predict::Learned::load(plan, history))
}

/// [`step_estimates`] from a model already learned.
fn estimates_of(plan: &Plan, learned: &predict::Learned) -> Vec<std::time::Duration> {
    let fallback = StaticEstimator::default();
    let model = learned.model.estimator(&learned.runner_class);
    let estimator: &dyn DurationEstimator = if learned.model.is_empty() {
        &fallback
    } else {
        &model
    };
    plan.steps.iter().map(|s| estimator.estimate(s)).collect()
}

/// Raises the soft open-file limit to the hard one: a sandbox holds one descriptor per
/// bind while it builds its root, and a step may have thousands of input files. Steps get
/// their own limit (`nofile`), whatever this one is.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn load(path: &Path) -> Result<Plan, Failure> {
    load_plan(path).map_err(|e| match e {
        LoadError::Read { path, source } => Failure::usage(
            format!("error: cannot read plan file {}: {source}", path.display()),
            Some("pass the path of a plan TOML file, e.g. `ci-intel run plans/demo.toml`".into()),
        ),
        invalid @ LoadError::Invalid { .. } => Failure::usage(invalid.to_string(), None),
    })
}

fn plan_check(path: &Path) -> Outcome {
    let plan = match load(path) {
        Ok(p) => p,
        Err(f) => return Ok(Err(f)),
    };
    let edges: usize = plan.steps.iter().map(|s| s.needs.len()).sum();
    outln!(
        "{}: plan `{}` is valid: {} step{}, {edges} dependenc{}",
        path.display(),
        plan.name,
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" },
        if edges == 1 { "y" } else { "ies" },
    );
    Ok(Ok(exit::SUCCESS))
}

fn plan_graph(
    path: &Path,
    format: GraphFormat,
    predicted: bool,
    state_dir: Option<&Path>,
) -> Outcome {
    let plan = match load(path) {
        Ok(p) => p,
        Err(f) => return Ok(Err(f)),
    };
    let (p50, p80, order) = if predicted {
        let state_dir = state_dir.map_or_else(|| plan.root.join(".ci-intel"), Path::to_path_buf);
        // Only read: without a history every step is the prior and nothing is created.
        let history = if state_dir.join("history.db").is_file() {
            open_history(&state_dir)
        } else {
            None
        };
        let learned = predict::Learned::load(&plan, history.as_ref());
        let (p50, p80) = learned.as_runs(&plan);
        (p50, p80, estimates_of(&plan, &learned))
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let shown = ci_intel_scheduler::Predicted {
        p50: &p50,
        p80: &p80,
        order: &order,
    };
    let shown = predicted.then_some(&shown);
    out!(
        "{}",
        match format {
            GraphFormat::Dot => render_dot(&plan, shown),
            GraphFormat::Mermaid => render_mermaid(&plan, shown),
        }
    );
    Ok(Ok(exit::SUCCESS))
}

/// `ci-intel report`: the HTML dashboard of the last `runs` records.
fn html_report(out: &Path, runs: usize, state_dir: &Path) -> Outcome {
    use ci_intel_insight::html;
    let path = state_dir.join(telemetry::RUNS_FILE);
    if !path.is_file() {
        return Ok(Err(Failure::usage(
            format!("error: no run records at {}", path.display()),
            Some(
                "run a plan first (`ci-intel run PLAN`), or point --state-dir at the state directory it used (`.ci-intel` under the plan's root)"
                    .into(),
            ),
        )));
    }
    let records =
        html::read_records(&path, runs).with_context(|| format!("reading {}", path.display()))?;
    if records.skipped_lines > 0 {
        tracing::warn!(
            "{} line(s) of {} are not run records and were left out",
            records.skipped_lines,
            path.display()
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let page = html::render(
        &records.records,
        &html::ReportOptions {
            title: "ci-intel report".into(),
            runs,
            generated_at: ci_intel_insight::record::rfc3339_ms(now),
            skipped_lines: records.skipped_lines,
        },
    );
    std::fs::write(out, page).with_context(|| format!("writing {}", out.display()))?;
    outln!(
        "wrote {} ({} run{})",
        out.display(),
        records.records.len(),
        if records.records.len() == 1 { "" } else { "s" }
    );
    Ok(Ok(exit::SUCCESS))
}

fn doctor(json: bool) -> Result<u8, Failure> {
    let posture = Posture::isolated();
    let host = ci_intel_sandbox::probe_host();
    if json {
        let layers: Vec<serde_json::Value> = posture
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "layer": l.layer.name(),
                    "level": l.level.to_string(),
                    "detail": l.detail,
                })
            })
            .collect();
        let host: Vec<serde_json::Value> = host
            .iter()
            .map(|h| {
                serde_json::json!({
                    "layer": h.layer.name(),
                    "available": h.available,
                    "version": h.version,
                    "detail": h.detail,
                    "fix": h.fix,
                })
            })
            .collect();
        outln!("{}", serde_json::json!({ "layers": layers, "host": host }));
    } else {
        outln!("{:<14} {:<13} DETAIL", "LAYER", "ENFORCED");
        for l in &posture.layers {
            outln!(
                "{:<14} {:<13} {}",
                l.layer.name(),
                l.level.to_string(),
                l.detail
            );
        }
        outln!();
        outln!("{:<14} {:<13} DETAIL", "HOST", "AVAILABLE");
        for h in &host {
            outln!(
                "{:<14} {:<13} {}",
                h.layer.name(),
                if h.available { "yes" } else { "no" },
                h.detail
            );
            if let Some(fix) = h.fix {
                outln!("{:<28} fix: {fix}", "");
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = ci_intel_insight::record::civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        std::process::id()
    )
}

fn run(args: RunArgs) -> Outcome {
    let started_at = std::time::SystemTime::now();
    if let Some(Err(f)) = args.shard.map(shard_cmd::check) {
        return Ok(Err(f));
    }
    let mut plan = match load(&args.plan) {
        Ok(p) => p,
        Err(f) => return Ok(Err(f)),
    };
    let mut selection = match Selection::of(&plan, &args.steps) {
        Ok(s) => s,
        Err(SelectionError::UnknownStep {
            id,
            plan: name,
            suggestion,
        }) => {
            let known: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).take(20).collect();
            let hint = match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("steps in this plan: {}", known.join(", ")),
            };
            return Ok(Err(Failure::usage(
                format!("error: no step `{id}` in plan `{name}`"),
                Some(hint),
            )));
        }
    };
    if !plan.root.is_dir() {
        return Ok(Err(Failure::usage(
            format!(
                "error: the plan's root directory {} does not exist",
                plan.root.display()
            ),
            Some("`root` is relative to the plan file; fix it or create the directory".into()),
        )));
    }
    // Sandboxed steps see the root at its real, absolute path.
    plan.root = plan
        .root
        .canonicalize()
        .with_context(|| format!("resolving the plan root {}", plan.root.display()))?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    if jobs == 0 {
        return Ok(Err(Failure::usage(
            "error: --jobs must be at least 1",
            None,
        )));
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| plan.root.join(".ci-intel"));
    // One history for the run: read for the estimates (when it knows this plan), written
    // after.
    let history = open_history(&state_dir);
    let mut learned = predict::Learned::load(&plan, history.as_ref());
    let estimates = estimates_of(&plan, &learned);
    if let Some(shard) = args.shard {
        selection = match shard_cmd::run_selection(&plan, shard, &estimates)? {
            Ok(s) => s,
            Err(f) => return Ok(Err(f)),
        };
        if selection.is_empty() {
            return Ok(Ok(exit::SUCCESS));
        }
    }
    if !args.dry_run {
        let mut unset: Vec<&str> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(i, _)| selection.contains(*i))
            .flat_map(|(_, s)| s.secrets.iter().map(String::as_str))
            .filter(|name| std::env::var_os(name).is_none())
            .collect();
        unset.sort_unstable();
        unset.dedup();
        if !unset.is_empty() {
            return Ok(Err(Failure::usage(
                format!(
                    "error: secrets the plan declares are not set: {}",
                    unset.join(", ")
                ),
                Some("export them in the environment that runs ci-intel (in GitHub Actions: `env: NAME: ${{ secrets.NAME }}`)".into()),
            )));
        }
    }
    // Each step is held to the posture it will actually run under.
    // Probing forks short-lived children: only when some step requires a layer.
    let isolated = std::cell::OnceCell::new();
    let process = Posture::process();
    let mut missing: Vec<String> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if !selection.contains(i) || step.sandbox.require.is_empty() {
            continue;
        }
        let sandboxed = step.sandbox.enabled && !args.no_sandbox;
        let posture = if sandboxed {
            isolated.get_or_init(Posture::isolated)
        } else {
            &process
        };
        for layer in posture.missing(&step.sandbox.require) {
            let what = if sandboxed {
                layer.name().to_string()
            } else {
                format!("{layer} (step `{}` runs without the sandbox)", step.id)
            };
            if !missing.contains(&what) {
                missing.push(what);
            }
        }
    }
    if !missing.is_empty() && !args.dry_run {
        return Ok(Err(Failure {
            code: exit::ISOLATION,
            message: format!(
                "error: the plan requires isolation layers this host does not enforce: {}",
                missing.join(", ")
            ),
            hint: Some("run `ci-intel doctor` to see what this host enforces, or remove them from `require`".into()),
        }));
    }

    let rates = match load_rates(args.rates.as_deref(), &state_dir) {
        Ok(r) => r,
        Err(f) => return Ok(Err(f)),
    };
    let run_dir = state_dir.join("runs").join(run_id());
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    let run_dir = run_dir.canonicalize().unwrap_or(run_dir);
    if !args.dry_run {
        learned.measure_changes(&plan);
    }
    let prio = priorities_from(&plan, &estimates);
    let options = DispatchOptions {
        jobs,
        keep_going: args.keep_going,
        run_dir: run_dir.clone(),
        seed: args.seed.unwrap_or_else(|| fastrand::u64(..)),
        // A dry run starts nothing: no sandbox to describe.
        no_sandbox: args.no_sandbox || args.dry_run,
        state_dir: state_dir
            .canonicalize()
            .unwrap_or_else(|_| state_dir.clone()),
        verify_determinism: args.verify_determinism.as_deref().map(|p| match p {
            "warn" => VerifyPolicy::Warn,
            _ => VerifyPolicy::Fail,
        }),
        chaos: None,
    };

    // The fault schedule, fixed before anything runs.
    let chaos = match &args.chaos {
        None => None,
        Some(spec) => {
            let seed = spec
                .seed
                .unwrap_or_else(|| fastrand::u64(..=ci_intel_scheduler::chaos::MAX_SEED));
            // A kill lands at a fraction of the step's median run (not of the p80 that
            // orders the steps).
            let medians = if learned.model.is_empty() {
                estimates.clone()
            } else {
                learned.as_runs(&plan).0
            };
            match ci_intel_scheduler::chaos::Chaos::new(
                spec,
                &plan,
                medians,
                !args.no_cache,
                args.no_sandbox,
                seed,
            ) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    return Ok(Err(Failure::usage(
                        format!("error: --chaos: {e}"),
                        Some(
                            "ask for faults the plan's [chaos] table allows (docs/chaos.md)".into(),
                        ),
                    )));
                }
            }
        }
    };
    if let Some(c) = &chaos {
        let rates: Vec<String> = c
            .faults
            .iter()
            .map(|f| match c.rates.get(f) {
                Some(r) => format!("{f} {r}"),
                None => f.name().to_string(),
            })
            .collect();
        let shared = c.faults.iter().any(|f| !c.rates.contains_key(f));
        outln!(
            "chaos: seed {}{}, faults {} (replay: --chaos \"{}\"; decisions in {})",
            c.seed,
            if shared {
                format!(", rate {} per attempt", c.rate)
            } else {
                String::new()
            },
            rates.join(", "),
            c.spec,
            run_dir.join("chaos.log").display()
        );
        for f in &c.refused {
            tracing::warn!("chaos: {f} is not among the plan's [chaos] faults; it is not injected");
        }
        if let Some(why) = c.kill_switch.engaged() {
            outln!("chaos: off ({why}): nothing is injected");
        }
    }
    let options = DispatchOptions {
        chaos: chaos.clone(),
        ..options
    };

    let cache = if args.dry_run || args.no_cache {
        None
    } else {
        let dir = match cache_cmd::dir(args.cache_dir.as_deref()) {
            Ok(d) => d,
            Err(f) => return Ok(Err(f)),
        };
        match cache_cmd::open_for_run(
            &dir,
            args.cache_namespace.as_deref(),
            args.remote_cache.as_deref(),
        )? {
            Ok(c) => Some(Arc::new(c)),
            Err(f) => return Ok(Err(f)),
        }
    };

    // Processes that leave their step's group (setsid) come back to us and are killed when
    // the run ends.
    if let Err(e) = ci_intel_sandbox::adopt_orphans() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    // The watchdog is forked before any runtime thread exists.
    let watchdog = if args.dry_run {
        None
    } else {
        Some(Watchdog::start().context("starting the step watchdog")?)
    };
    // One thread: the dispatch loop, the step tasks and the reactor never hand work to each
    // other across threads (two context switches a step otherwise), and every step is
    // spawned from this thread, the one its parent-death signal is tied to.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let github = telemetry::github_actions();
    let mut reporter = Reporter::new(selection.len(), github.then_some(args.live_output));
    if let Some(c) = &chaos {
        reporter = reporter.with_chaos_log(&run_dir.join("chaos.log"), c.seed);
    }
    let reporter = Arc::new(reporter);
    let interrupt = CancelSource::new();
    let report = runtime.block_on(async {
        // Handlers are in place before the first step starts.
        let signals = tokio::spawn(watch_signals(install_signal_handlers(), interrupt.clone()));
        let token = interrupt.token();
        let result = if args.dry_run {
            dispatch(
                &plan,
                &selection,
                &prio,
                Arc::new(DryRun),
                &*reporter,
                &options,
                token,
            )
            .await
        } else {
            // The environment's value first (the reproducible-builds convention), then the
            // commit time, then the plan's.
            let sde = std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .or_else(|| FixedEnv::commit_time(&plan.root))
                .or(plan.source_date_epoch)
                .unwrap_or(0);
            let config = ProcessExecutorConfig {
                grace: args.grace,
                live_output_limit: args.live_output,
                fixed_env: FixedEnv {
                    source_date_epoch: sde,
                    ..FixedEnv::default()
                },
                ..ProcessExecutorConfig::default()
            };
            let mut exec = ProcessExecutor::new(config, reporter.clone(), watchdog.clone());
            if let Some(cache) = &cache {
                exec = exec.with_cache(cache.clone());
            }
            dispatch(
                &plan,
                &selection,
                &prio,
                Arc::new(exec),
                &*reporter,
                &options,
                token,
            )
            .await
        };
        signals.abort();
        result
    });
    reporter.finish();
    drop(runtime);
    let keep: Vec<i32> = watchdog.iter().map(Watchdog::pid).collect();
    let swept = ci_intel_sandbox::kill_orphans(&keep);
    if swept > 0 {
        tracing::info!("killed {swept} leftover process(es) that had left their step's group");
    }
    let report = report.context("running the plan")?;
    let code = if report.interrupted {
        exit::INTERRUPTED
    } else if report.success() {
        exit::SUCCESS
    } else {
        exit::STEP_FAILED
    };
    let record = (!args.dry_run).then(|| {
        let (predictions, history_run) =
            predict::record(&plan, &report, history.as_ref(), &learned, &state_dir);
        let run_id = telemetry::new_run_id();
        let status = telemetry::run_status(&report).as_str();
        let traceparent = if otel::enabled() {
            let span = otel::RunSpan {
                plan: &plan.name,
                run_id: &run_id,
                started_at,
                status,
            };
            otel::export(&span, &report)
        } else {
            otel::incoming_traceparent()
        };
        let cx = telemetry::Context {
            plan: &plan,
            plan_arg: &args.plan,
            run_id,
            started_at,
            exit_code: code,
            runner_class: &learned.runner_class,
            commit: learned.commit(),
            predictions,
            rates,
            no_sandbox: args.no_sandbox,
            traceparent,
            chaos: chaos.as_deref(),
        };
        let record = telemetry::build(&cx, &report);
        if !record.chaos.is_empty() {
            predict::record_trials(&plan, &record, history.as_ref(), history_run);
        }
        telemetry::write(
            &record,
            &report,
            &telemetry::Outputs {
                state_dir: &state_dir,
                telemetry: args.telemetry.as_deref(),
                v1_2: args.telemetry_schema == "v1.2",
                junit: args.junit.as_deref(),
            },
        );
        record
    });

    out!("{}", report::summary(&report, &run_dir));
    if let (Some(c), Some(rec)) = (&chaos, &record) {
        out!("{}", report::chaos_summary(c, &rec.chaos, &run_dir));
    }
    if let Some(off) = report::unsandboxed(&plan, &selection, args.no_sandbox) {
        out!("{off}");
    }
    for r in &report.results {
        if matches!(r.state, StepState::Failed | StepState::TimedOut) {
            if let Some(o) = &r.outcome {
                let mut tail = report::tail(&o.log_path, 30);
                if tail.trim().is_empty() {
                    tail = "(the step printed nothing)".into();
                }
                // A message that names the failure (e.g. "command not found: X") still
                // gets the exit code the step ended with.
                let mut what = o.message.clone().unwrap_or_default();
                if let Some(code) = o.exit_code.filter(|_| !what.contains("exit code")) {
                    what = if what.is_empty() {
                        format!("exit code {code}")
                    } else {
                        format!("{what}; exit code {code}")
                    };
                }
                outln!(
                    "\n--- {} {} ({what}); last lines of {}:\n{}",
                    r.id,
                    r.state.label(),
                    o.log_path.display(),
                    tail
                );
                for c in record
                    .iter()
                    .filter_map(|rec| rec.autopsy.as_ref())
                    .flat_map(|a| &a.root_causes)
                    .filter(|c| c.job.as_deref() == Some(r.id.as_str()))
                    // "It exited 3" says nothing the excerpt did not.
                    .filter(|c| c.rule.as_deref() != Some(ci_intel_insight::autopsy::GENERIC_RULE))
                {
                    out!("{}", report::finding(c));
                }
                outln!(
                    "rerun it alone: ci-intel run {} --step {}",
                    args.plan.display(),
                    r.id
                );
            }
        }
    }
    if github {
        for line in record
            .iter()
            .flat_map(ci_intel_insight::github::annotations)
        {
            outln!("{line}");
        }
    }
    drop(watchdog);
    Ok(Ok(code))
}

/// The rates file: `--rates`/`$CI_INTEL_RATES`, else the state directory's `rates.toml`
/// when there is one. One that is given but unusable is a usage error before anything runs.
fn load_rates(
    given: Option<&Path>,
    state_dir: &Path,
) -> Result<Option<ci_intel_insight::rates::Rates>, Failure> {
    let default = state_dir.join("rates.toml");
    let path = match given {
        Some(p) => p.to_path_buf(),
        None if default.is_file() => default,
        None => return Ok(None),
    };
    ci_intel_insight::rates::Rates::load(&path)
        .map(Some)
        .map_err(|e| {
            Failure::usage(
                format!("error: {}", ci_intel_cache::error_chain(&e)),
                Some("see docs/telemetry.md#cost-and-carbon for the rates file's format".into()),
            )
        })
}

type SignalStreams = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;

fn install_signal_handlers() -> SignalStreams {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => Some((int, term)),
        _ => {
            tracing::warn!("cannot install signal handlers; Ctrl-C will not stop steps cleanly");
            None
        }
    }
}

/// First SIGINT/SIGTERM: stop gracefully. Second: kill at once.
async fn watch_signals(streams: SignalStreams, interrupt: CancelSource) {
    let Some((mut int, mut term)) = streams else {
        return;
    };
    let mut level = CancelLevel::Graceful;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        interrupt.cancel(level);
        level = CancelLevel::Immediate;
    }
}
