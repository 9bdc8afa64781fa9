//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Hermetic, predictive CI plan runner.
#[derive(Debug, Parser)]
#[command(name = "ci-intel", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a plan's steps.
    Run(RunArgs),
    /// Check or draw a plan without running it.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Show which isolation layers this host enforces.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The plan file.
    pub(crate) plan: PathBuf,
    /// Job slots (a step takes `cpus` of them). Default: the number of CPUs.
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<u32>,
    /// Run only this step and what it needs (repeatable).
    #[arg(long = "step", value_name = "ID")]
    pub(crate) steps: Vec<String>,
    /// After a failure, keep running steps that do not depend on it.
    #[arg(short = 'k', long)]
    pub(crate) keep_going: bool,
    /// Schedule the steps and print the order without running anything.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// Where run logs go. Default: `.ci-intel` under the plan's root.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping a step.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime_arg)]
    pub(crate) grace: std::time::Duration,
    /// Bytes of each step's output shown live (the log keeps everything).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub(crate) live_output: u64,
    /// Seed for retry jitter (default: random).
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlanCommand {
    /// Validate a plan; print a one-line summary.
    Check {
        /// The plan file.
        plan: PathBuf,
    },
    /// Print the step graph.
    Graph {
        /// The plan file.
        plan: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn humantime_arg(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}: write e.g. 10s, 500ms, 2m"))
}
