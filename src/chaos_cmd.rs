//! `ci-intel chaos night`: a campaign of runs, one report.
//!
//! Each run is a `ci-intel run` of its own (this binary, started again), exactly the
//! command a person replays: a control run without faults first, then the chaos runs, run
//! `i` seeded `N + i`. Their run records are read back and summarised by
//! [`ci_intel_insight::chaos`]; the summary is appended to `chaos/nights.ndjson` in the
//! state directory, which is where the previous night comes from.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use ci_intel_insight::chaos::{self as night, Night, NightRun, NightSummary};
use ci_intel_insight::record::RunRecord;
use ci_intel_scheduler::chaos::{MAX_SEED, parse_fault};

use crate::cli::NightArgs;
use crate::{Failure, Outcome, exit};

/// The rate per attempt of a night when neither the command nor the plan gives one: high
/// enough that a plan of a few steps sees a fault in most runs.
const NIGHT_RATE: f64 = 0.25;

/// The nights file, under the state directory.
const NIGHTS_FILE: &str = "chaos/nights.ndjson";

pub(crate) fn night(args: NightArgs) -> Outcome {
    let started_at = SystemTime::now();
    let start = Instant::now();
    let plan = match crate::load(&args.plan) {
        Ok(p) => p,
        Err(f) => return Ok(Err(f)),
    };
    if args.runs == 0 {
        return Ok(Err(Failure::usage(
            "error: --runs must be at least 1",
            Some("a night is a control run and K chaos runs, e.g. --runs 3".into()),
        )));
    }
    // The plan's own rates apply unless --rate is given; without any, a night's default.
    let plan_rates = plan.chaos.rate.is_some() || !plan.chaos.rates.is_empty();
    let rate = match args.rate.or(plan.chaos.rate) {
        Some(r) if !(0.0..=1.0).contains(&r) => {
            return Ok(Err(Failure::usage(
                format!("error: --rate {r} is not from 0 to 1"),
                Some("the rate is the probability per attempt that a fault is injected".into()),
            )));
        }
        r => r.unwrap_or(NIGHT_RATE),
    };
    let faults: Vec<String> = match &args.faults {
        Some(list) => {
            let mut v = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match parse_fault(name) {
                    Ok(f) if plan.chaos.faults.contains(&f) => v.push(f.name().to_string()),
                    Ok(f) => {
                        return Ok(Err(Failure::usage(
                            format!("error: the plan's [chaos] faults do not allow {f}"),
                            Some("add it to the plan's [chaos] faults, or leave it out".into()),
                        )));
                    }
                    Err(e) => return Ok(Err(Failure::usage(format!("error: {e}"), None))),
                }
            }
            v
        }
        None => plan
            .chaos
            .faults
            .iter()
            .map(|f| f.name().to_string())
            .collect(),
    };
    let seed = args
        .seed
        .unwrap_or_else(|| fastrand::u64(..=MAX_SEED - u64::from(args.runs)));
    if seed.saturating_add(u64::from(args.runs)) > MAX_SEED {
        return Ok(Err(Failure::usage(
            format!("error: --seed {seed} plus the runs passes {MAX_SEED}"),
            Some("give a smaller seed".into()),
        )));
    }
    let root = plan
        .root
        .canonicalize()
        .with_context(|| format!("resolving the plan root {}", plan.root.display()))?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| root.join(".ci-intel"));
    let id = crate::run_id();
    let dir = state_dir.join("chaos").join(format!("night-{id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("finding this program to start the runs")?;
    let plan_arg = args.plan.display().to_string();
    let q = ci_intel_insight::autopsy::shell_quote;

    outln!(
        "chaos night on `{}`: seed {seed}, {} run{} at rate {rate}, faults {} (logs: {})",
        plan.name,
        args.runs,
        if args.runs == 1 { "" } else { "s" },
        faults.join(", "),
        dir.display()
    );
    let mut runs = Vec::new();
    let mut interrupted = false;
    let mut signals = Signals::install()?;
    for i in 0..=args.runs {
        if signals.pending() {
            interrupted = true;
            break;
        }
        let spec = (i > 0).then(|| {
            let mut spec = format!("seed={}", seed + u64::from(i));
            if args.rate.is_some() || !plan_rates {
                spec.push_str(&format!(",rate={rate}"));
            }
            spec.push_str(&format!(",faults={}", faults.join(",")));
            spec
        });
        // What a person runs to replay it (the report's command), with every option the
        // night was given ...
        let mut shown = format!("ci-intel run {} --keep-going", q(&plan_arg));
        let mut argv: Vec<String> = vec!["run".into(), plan_arg.clone(), "--keep-going".into()];
        if let Some(spec) = &spec {
            shown.push_str(&format!(" --chaos \"{spec}\""));
            argv.extend(["--chaos".into(), spec.clone()]);
        }
        let mut given: Vec<(&str, String)> =
            args.steps.iter().map(|s| ("--step", s.clone())).collect();
        given.extend(args.jobs.map(|j| ("--jobs", j.to_string())));
        given.extend(
            args.cache_dir
                .as_ref()
                .map(|c| ("--cache-dir", c.display().to_string())),
        );
        given.extend(
            args.state_dir
                .as_ref()
                .map(|d| ("--state-dir", d.display().to_string())),
        );
        for (flag, value) in given {
            shown.push_str(&format!(" {flag} {}", q(&value)));
            argv.extend([flag.to_string(), value]);
        }
        // ... and what the night adds: where the state and the record go.
        let record_file = dir.join(format!("run-{i}.ndjson"));
        let log = dir.join(format!("run-{i}.log"));
        if args.state_dir.is_none() {
            argv.extend(["--state-dir".into(), state_dir.display().to_string()]);
        }
        argv.extend(["--telemetry".into(), record_file.display().to_string()]);
        let label = if i == 0 {
            "control".to_string()
        } else {
            format!("run {i}/{}", args.runs)
        };
        let began = Instant::now();
        let (code, stopped) = signals.run(&exe, &argv, &log)?;
        let record = last_record(&record_file);
        let trials = record.as_ref().map_or(0, |r| r.chaos.len());
        outln!(
            "  {label:<11} exit {code:<3} {:>6.1}s  {trials} fault{} acted  {shown}",
            began.elapsed().as_secs_f64(),
            if trials == 1 { "" } else { "s" }
        );
        runs.push(NightRun {
            index: i,
            seed: spec.as_ref().map(|_| seed + u64::from(i)),
            command: shown,
            exit_code: code,
            record,
        });
        if stopped {
            interrupted = true;
            break;
        }
        if i == 0 && code != 0 {
            outln!(
                "  the control run failed: the plan fails without faults, so no chaos run is made (log: {})",
                log.display()
            );
            break;
        }
    }

    let night = Night {
        plan: plan.name.clone(),
        plan_path: plan_arg.clone(),
        seed,
        rate,
        faults,
        started_at: ci_intel_insight::record::rfc3339_ms(
            started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        ),
        wall_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        runs,
    };
    let summary = night::summarize(&night);
    let nights = state_dir.join(NIGHTS_FILE);
    let previous = previous_night(&nights, &plan.name);
    let changes = previous.as_ref().map(|p| night::compare(&summary, p));
    let html_path = args
        .report
        .clone()
        .unwrap_or_else(|| dir.join("report.html"));
    let md_path = html_path.with_extension("md");
    let markdown = night::render_markdown(&night, &summary, changes.as_deref());
    std::fs::write(
        &html_path,
        night::render_html(&night, &summary, changes.as_deref()),
    )
    .with_context(|| format!("writing {}", html_path.display()))?;
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("writing {}", md_path.display()))?;
    if !interrupted {
        append_night(&nights, &summary);
    }
    if let Some(summary_file) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty()) {
        if let Err(e) = crate::telemetry::append_line(Path::new(&summary_file), &markdown) {
            tracing::warn!("the GitHub step summary was not written: {e}");
        }
    }

    let t = &summary.totals;
    outln!(
        "chaos night: {} trial{}: {} recovered, {} degraded, {} failed{}",
        t.trials,
        if t.trials == 1 { "" } else { "s" },
        t.recovered,
        t.degraded,
        t.failed,
        if summary.control_ok {
            ""
        } else {
            "; the control run failed"
        }
    );
    for f in &summary.failures {
        outln!(
            "  FAILED {} ({}, run {}): {}\n    replay: {}",
            f.step,
            f.fault,
            f.run,
            f.detail.as_deref().unwrap_or(""),
            f.repro
        );
    }
    if let Some(changes) = &changes {
        for c in changes {
            outln!("  since the previous night: {c}");
        }
    }
    outln!(
        "report: {} (Markdown: {})",
        html_path.display(),
        md_path.display()
    );
    Ok(Ok(if interrupted {
        exit::INTERRUPTED
    } else if summary.verdict {
        exit::SUCCESS
    } else {
        exit::STEP_FAILED
    }))
}

/// SIGINT and SIGTERM, caught for the whole night: each is passed to the run in progress
/// (which stops cleanly; a second one kills its steps at once), and no further run starts.
struct Signals {
    runtime: tokio::runtime::Runtime,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let (int, term) = runtime
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ))
            })
            .context("installing signal handlers")?;
        Ok(Signals { runtime, int, term })
    }

    /// Whether a signal came since the last look (between runs).
    fn pending(&mut self) -> bool {
        let (int, term) = (&mut self.int, &mut self.term);
        self.runtime.block_on(async {
            tokio::select! {
                biased;
                _ = int.recv() => true,
                _ = term.recv() => true,
                () = std::future::ready(()) => false,
            }
        })
    }

    /// Runs `exe argv` with its output in `log`, in a process group of its own (the
    /// terminal's Ctrl-C reaches the night, which passes it on once); returns its exit
    /// code (128+N for signal N) and whether the night was interrupted meanwhile.
    fn run(&mut self, exe: &Path, argv: &[String], log: &Path) -> anyhow::Result<(i32, bool)> {
        use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // The record goes to the night's file only.
            .env_remove("CI_INTEL_TELEMETRY")
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl, which is async-signal-safe: if the night dies, the run is asked to stop
        // (cleanly) instead of running on alone.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let (int, term) = (&mut self.int, &mut self.term);
        let stopped = self.runtime.block_on(async {
            let mut stopped = false;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => return stopped,
                    Ok(None) => {}
                }
                let sig = tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => None,
                    _ = int.recv() => Some(nix::sys::signal::Signal::SIGINT),
                    _ = term.recv() => Some(nix::sys::signal::Signal::SIGTERM),
                };
                if let Some(sig) = sig {
                    stopped = true;
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            }
        });
        let status = child.wait().context("waiting for a run")?;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok((code, stopped))
    }
}

/// The last run record in `path`, if it holds one.
fn last_record(path: &Path) -> Option<RunRecord> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<RunRecord>(l).ok())
}

/// The last night of `plan` in the nights file.
fn previous_night(path: &Path, plan: &str) -> Option<NightSummary> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<NightSummary>(l).ok())
        .find(|n| n.plan == plan)
}

fn append_night(path: &Path, summary: &NightSummary) {
    let written = serde_json::to_string(summary)
        .map_err(std::io::Error::other)
        .and_then(|line| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::telemetry::append_line(path, &line)
        });
    if let Err(e) = written {
        tracing::warn!(
            "the night was not added to {} (the next night cannot compare with it): {e}",
            path.display()
        );
    }
}
