//! Command-line arguments.

use std::path::PathBuf;

use ci_intel_sandbox::Limits;
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
    /// Check, draw or split a plan without running it.
    #[command(subcommand)]
    Plan(PlanCommand),
    #[command(about = EXEC_ABOUT, long_about = EXEC_LONG_ABOUT)]
    Exec(ExecArgs),
    /// Inspect and maintain the local cache, make signing keys, or hash files.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// How good the runtime model's predictions have been.
    #[command(subcommand)]
    Predict(PredictCommand),
    /// Prove steps reproducible: run them twice with variations and compare the outputs.
    #[command(subcommand)]
    Determinism(DeterminismCommand),
    /// Fault-injection campaigns (docs/chaos.md).
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Write a self-contained HTML dashboard of past runs (from the run records).
    Report {
        /// The HTML file to write.
        #[arg(long, value_name = "FILE", default_value = "ci-intel-report.html")]
        out: PathBuf,
        /// The last N runs.
        #[arg(long, value_name = "N", default_value_t = 50)]
        runs: usize,
        /// The state directory holding `runs.ndjson`.
        #[arg(long, value_name = "DIR", default_value = ".ci-intel")]
        state_dir: PathBuf,
    },
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
    /// Run only shard I of N (1-based), split as `plan shard PLAN --shards N` splits it.
    /// Not with --step.
    #[arg(long, value_name = "I/N", value_parser = shard_arg, conflicts_with = "steps")]
    pub(crate) shard: Option<ShardArg>,
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
    /// Run every step without the sandbox (the summary says so).
    #[arg(long)]
    pub(crate) no_sandbox: bool,
    /// Run every step; look nothing up in the cache and store nothing.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// The cache directory. Default: `$XDG_CACHE_HOME/ci-intel` (`~/.cache/ci-intel`).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// The cache namespace to write (`trusted`, or e.g. `pr-42`). Default: from the GitHub
    /// Actions environment (pull requests get their own), else `trusted`.
    #[arg(long, value_name = "NS")]
    pub(crate) cache_namespace: Option<String>,
    /// A team cache service (`ci-intel cache serve`) behind the local cache:
    /// `http://HOST:PORT`. Misses are looked up there, results uploaded; its token comes
    /// from `CI_INTEL_REMOTE_CACHE_TOKEN`. When it is down, the run warns and goes on with
    /// the local cache.
    #[arg(long, value_name = "URL")]
    pub(crate) remote_cache: Option<String>,
    /// Seed for retry jitter (default: random).
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,
    /// Append the run record (one JSON line) to FILE as well as to `runs.ndjson` in the
    /// state directory. Default: `$CI_INTEL_TELEMETRY`.
    #[arg(long, value_name = "FILE", env = "CI_INTEL_TELEMETRY")]
    pub(crate) telemetry: Option<PathBuf>,
    /// The schema of the --telemetry record: `v1.3` (this project's), or `v1.2` (the
    /// platform's, when the run has every field it requires; otherwise the run says why
    /// and writes none).
    #[arg(long, value_name = "VERSION", default_value = "v1.3", value_parser = ["v1.3", "v1.2"])]
    pub(crate) telemetry_schema: String,
    /// Run every cacheable step with outputs twice, the second time in another sandbox with
    /// variations that must not matter (build path, hostname, clock, CPUs, ASLR, HOME,
    /// PATH, host locale and zone, directory order), and compare the outputs; a difference
    /// fails the step (`=warn`: reports it only). Steps are run, not restored from the
    /// cache.
    #[arg(long, value_name = "POLICY", num_args = 0..=1, require_equals = true, default_missing_value = "fail", value_parser = ["fail", "warn"])]
    pub(crate) verify_determinism: Option<String>,
    /// Write a JUnit XML report (a test case per step, with its log) to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) junit: Option<PathBuf>,
    /// Price and carbon rates per runner class (TOML, docs/telemetry.md). Default:
    /// `$CI_INTEL_RATES`, else `rates.toml` in the state directory when it exists.
    #[arg(long, value_name = "FILE", env = "CI_INTEL_RATES")]
    pub(crate) rates: Option<PathBuf>,
    /// Inject faults on purpose, seeded (docs/chaos.md): `seed=N,rate=R,faults=A,B,...`
    /// with faults kill_job, delay_net, drop_net, corrupt_cache, cpu_stress, disk_fill, or
    /// a fault's own rate (`kill_job=0.2`). The plan's `[chaos]` table limits what may be
    /// injected; `CI_INTEL_CHAOS=off` or the plan's kill-switch file turns it all off.
    #[arg(long, value_name = "SPEC", value_parser = chaos_arg)]
    pub(crate) chaos: Option<ci_intel_scheduler::chaos::ChaosSpec>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChaosCommand {
    /// A chaos night: a control run without faults, then K runs with faults (run i seeded
    /// N+i); a report in HTML and Markdown with each fault × step verdict, the recovery
    /// times, a repro command for each failure and the change since the previous night.
    /// Exit 1 when a fault the plan should recover from was not recovered from (or the
    /// control run failed).
    Night(NightArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct NightArgs {
    /// The plan file.
    pub(crate) plan: PathBuf,
    /// The night's seed; run i is seeded N+i. Default: random (printed, and in the report).
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,
    /// Chaos runs after the control run.
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub(crate) runs: u32,
    /// The HTML report; the Markdown one is written beside it (`.md`). Default:
    /// `chaos/night-<id>/report.html` in the state directory.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// The rate per attempt. Default: the plan's `[chaos] rate` and `rates`, else 0.25.
    #[arg(long, value_name = "R")]
    pub(crate) rate: Option<f64>,
    /// The faults, comma-separated. Default: every fault the plan allows.
    #[arg(long, value_name = "LIST")]
    pub(crate) faults: Option<String>,
    /// Only these steps and what they need (repeatable).
    #[arg(long = "step", value_name = "ID")]
    pub(crate) steps: Vec<String>,
    /// Job slots of each run.
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<u32>,
    /// The state directory of the runs (history, records, the nights file). Default:
    /// `.ci-intel` under the plan's root.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The cache directory of the runs.
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
}

const EXEC_ABOUT: &str = "Run one command in the sandbox plan steps get, and exit with its status.";
const EXEC_LONG_ABOUT: &str =
    "Run one command in the sandbox plan steps get, and exit with its status.

Exit status: the command's own (128+N when killed by signal N); 2 usage error; 3 a \
`--require`d layer is missing; 124 timed out; 125 the sandbox could not be set up; 126 the \
command is not executable; 127 it was not found.";

/// `ci-intel exec` parsed on its own, the same as the subcommand of [`Cli`].
///
/// `exec` starts once per command, and building [`Cli`]'s whole tree (every subcommand's
/// arguments) is most of what clap costs at start-up; `main` uses this when the first
/// argument is `exec`.
#[derive(Debug, Parser)]
#[command(name = "exec", bin_name = "ci-intel exec", about = EXEC_ABOUT, long_about = EXEC_LONG_ABOUT)]
pub(crate) struct ExecCli {
    #[command(flatten)]
    pub(crate) args: ExecArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExecArgs {
    /// Make a host path visible read-only at the same path (repeatable).
    #[arg(long = "ro", value_name = "PATH")]
    pub(crate) ro: Vec<PathBuf>,
    /// Make a host path visible read-write at the same path (repeatable).
    #[arg(long = "rw", value_name = "PATH")]
    pub(crate) rw: Vec<PathBuf>,
    /// Mount an empty private tmpfs at PATH (repeatable).
    #[arg(long = "tmpfs", value_name = "PATH")]
    pub(crate) tmpfs: Vec<PathBuf>,
    /// Network: `deny` (no network, no TCP), `loopback`, or `allow=HOST:PORT,...` (through
    /// the egress proxy; `*.domain:PORT` wildcards).
    #[arg(long, value_name = "MODE", default_value = "deny")]
    pub(crate) net: String,
    /// Set a variable for the command (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub(crate) env: Vec<String>,
    /// Pass a host variable by name; its value is redacted from the command's output.
    #[arg(long = "secret", value_name = "NAME")]
    pub(crate) secrets: Vec<String>,
    /// Working directory inside the sandbox (default: the current directory; it is empty
    /// unless also given with --ro or --rw).
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<PathBuf>,
    /// Fail with exit code 3 unless this host enforces LAYER fully (repeatable).
    #[arg(long = "require", value_name = "LAYER")]
    pub(crate) require: Vec<String>,
    /// Memory per process (RLIMIT_DATA), e.g. 512MiB. Default: the host's RAM.
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub(crate) memory: Option<u64>,
    /// Processes and threads in the sandbox.
    #[arg(long, value_name = "N")]
    pub(crate) pids: Option<u64>,
    /// Open files per process.
    #[arg(long, value_name = "N")]
    pub(crate) nofile: Option<u64>,
    /// Size of /tmp, $HOME and /dev/shm, e.g. 256MiB. Default: 1GiB.
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub(crate) tmpfs_size: Option<u64>,
    /// CPU time of the whole sandbox, in CPUs (0.01 to 1024), e.g. 1.5. Enforced with a
    /// cgroup v1 cpu quota as root only; `doctor` says whether it is. Default: no limit.
    #[arg(long = "cpus", value_name = "N", value_parser = cpus_arg)]
    pub(crate) millicpus: Option<u32>,
    /// Stop the command after this long (SIGTERM, then SIGKILL after 2s).
    #[arg(long, value_name = "DURATION", value_parser = humantime_arg)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Write a new signing key pair into DIR (`ci-intel.key`, mode 0600, and `ci-intel.pub`).
    Keygen {
        /// The directory for the key pair.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Entries, bytes, hit ratio and quarantine, by namespace.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The cache directory (default as for `run`).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Check every entry and blob; quarantine what fails (exit code 1 if anything did).
    Verify {
        /// The cache directory (default as for `run`).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Evict the least recently used entries until the cache fits in SIZE.
    Gc {
        /// The size to fit in, e.g. 10GiB.
        #[arg(long, value_name = "SIZE", value_parser = size_arg)]
        max_size: u64,
        /// The cache directory (default as for `run`).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Run the team cache service (Bazel's, ccache's and Turborepo's HTTP protocols) until
    /// SIGTERM or Ctrl-C. See docs/cache-service.md.
    Serve {
        /// The address to listen on, e.g. 0.0.0.0:9090.
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// The store's directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The configuration: tokens (hashed), limits, size cap (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the SHA-256 a service configuration stores for the token read from stdin.
    TokenHash,
    /// Print the BLAKE3 digest of files as the cache computes it, in `b3sum`'s format.
    #[command(long_about = HASH_LONG_ABOUT)]
    Hash {
        /// Files hashed at once (default: one per CPU); a file of 1 MiB or more is also
        /// hashed on every core.
        #[arg(long, value_name = "N")]
        threads: Option<std::num::NonZeroUsize>,
        /// Files, and directories to walk.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

const HASH_LONG_ABOUT: &str =
    "Print the BLAKE3 digest of files as the cache computes it, in `b3sum`'s format.

One `DIGEST  PATH` line per file, as `b3sum PATH...` prints it: 64 lowercase hex digits, two \
spaces, the path as given (a path with a backslash or a newline is escaped and its line \
starts with a backslash). A directory is walked and its regular files are listed in path \
order; symbolic links and other files found in it are skipped, as by `find DIR -type f`. A \
file that cannot be read is named on stderr, and the exit status is 1.";

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
        /// Label steps with their predicted p50 and p80 and mark the critical path.
        #[arg(long)]
        predicted: bool,
        /// Where the run history is read from (with --predicted). Default: `.ci-intel`
        /// under the plan's root.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Split the plan into CI shards by predicted duration, each with what its steps need.
    Shard {
        /// The plan file.
        plan: PathBuf,
        /// How many shards.
        #[arg(long, value_name = "N")]
        shards: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ShardFormat::Text)]
        format: ShardFormat,
        /// Where the run history is read from. Default: `.ci-intel` under the plan's root.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeterminismCommand {
    /// Run the plan's cacheable steps with outputs (or those given with --step, and what
    /// they need) twice, the second time with variations that must not matter, and compare
    /// the outputs: `run PLAN --verify-determinism` (every option of `run` applies).
    Check(RunArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum PredictCommand {
    /// Per step and overall: MAPE (steps of 1 s or more), WAPE, p90 coverage, how often a
    /// step outran its p80, the model that served, and the trend over the last runs.
    Report {
        /// Only this plan (by its name). Default: every plan in the history.
        #[arg(long, value_name = "NAME")]
        plan: Option<String>,
        /// The last N runs of each plan.
        #[arg(long, value_name = "N", default_value_t = 10)]
        runs: usize,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// The state directory holding `history.db`.
        #[arg(long, value_name = "DIR", default_value = ".ci-intel")]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ShardFormat {
    /// One line per shard, then the imbalance.
    Text,
    /// The shards and their predictions.
    Json,
    /// One line for a GitHub Actions `strategy.matrix` (`fromJSON`).
    GithubMatrix,
}

/// `--shard I/N`: shard `index` (1-based) of `total`, as written; the range is checked
/// where it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardArg {
    pub(crate) index: usize,
    pub(crate) total: usize,
}

fn shard_arg(s: &str) -> Result<ShardArg, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not a shard: write I/N, e.g. 1/4"))?;
    let number = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}` is not a shard: write I/N with whole numbers, e.g. 1/4"))
    };
    Ok(ShardArg {
        index: number(i)?,
        total: number(n)?,
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn chaos_arg(s: &str) -> Result<ci_intel_scheduler::chaos::ChaosSpec, String> {
    s.parse()
        .map_err(|e: ci_intel_scheduler::chaos::SpecError| {
            format!("{e}; write e.g. seed=42,rate=0.05,faults=kill_job,drop_net (docs/chaos.md)")
        })
}

fn humantime_arg(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}: write e.g. 10s, 500ms, 2m"))
}

/// Parses a number of CPUs such as `1.5` or `2` into thousandths of a CPU.
fn cpus_arg(s: &str) -> Result<u32, String> {
    let (min, max) = (Limits::MIN_CPUS, Limits::MAX_CPUS);
    let cpus: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of CPUs: write e.g. 1.5 or 2"))?;
    Limits::millicpus_of(cpus).ok_or_else(|| format!("`{s}` is not between {min} and {max}"))
}

/// Parses `512MiB`, `2GiB`, `1G`, `64k` or a plain byte count.
pub(crate) fn size_arg(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: write e.g. 512MiB, 2GiB or 1048576"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit: use KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// The subcommand as the whole tree builds it.
    fn exec_in_tree() -> clap::Command {
        let mut cli = Cli::command();
        cli.build();
        cli.find_subcommand("exec")
            .expect("exec is a subcommand")
            .clone()
    }

    #[test]
    fn exec_parsed_alone_has_the_subcommands_help() {
        let mut alone = ExecCli::command();
        let mut tree = exec_in_tree();
        assert_eq!(
            alone.render_long_help().to_string(),
            tree.render_long_help().to_string()
        );
        assert_eq!(
            alone.render_help().to_string(),
            tree.render_help().to_string()
        );
        assert_eq!(
            alone.render_usage().to_string(),
            tree.render_usage().to_string()
        );
    }

    #[test]
    fn exec_parsed_alone_reads_arguments_like_the_subcommand() {
        let argv = [
            "exec",
            "--ro",
            "/usr",
            "--net",
            "allow=a.test:443",
            "--env",
            "A=1",
            "--pids",
            "64",
            "--memory",
            "1GiB",
            "--cpus",
            "0.5",
            "--",
            "sh",
            "-c",
            "true",
        ];
        let alone = ExecCli::try_parse_from(argv).expect("parses").args;
        let Command::Exec(tree) = Cli::try_parse_from(std::iter::once("ci-intel").chain(argv))
            .expect("parses")
            .command
        else {
            panic!("not exec");
        };
        assert_eq!(format!("{alone:?}"), format!("{tree:?}"));
        assert_eq!(alone.memory, Some(1 << 30));
        assert_eq!(alone.millicpus, Some(500));
        assert_eq!(alone.command, ["sh", "-c", "true"]);
    }

    #[test]
    fn a_shard_is_read_as_i_of_n() {
        assert_eq!(shard_arg("2/4"), Ok(ShardArg { index: 2, total: 4 }));
        // The range is checked where it is used, with a hint.
        assert_eq!(shard_arg("3/2"), Ok(ShardArg { index: 3, total: 2 }));
        assert_eq!(
            shard_arg("2"),
            Err("`2` is not a shard: write I/N, e.g. 1/4".into())
        );
        for text in ["a/2", "1/", "/2", "-1/2", "1.5/2", "1/2/3"] {
            assert!(shard_arg(text).is_err(), "{text}");
        }
    }

    #[test]
    fn cpus_are_read_in_thousandths_within_the_range() {
        for (text, millicpus) in [
            ("1", 1000),
            ("1.5", 1500),
            (" 0.25 ", 250),
            ("0.01", 10),
            ("1024", 1_024_000),
            ("0.0125", 13),
        ] {
            assert_eq!(cpus_arg(text), Ok(millicpus), "{text}");
        }
        assert_eq!(
            cpus_arg("0.009"),
            Err("`0.009` is not between 0.01 and 1024".into())
        );
        for text in ["0", "-1", "1025", "nan", "inf"] {
            assert!(cpus_arg(text).is_err(), "{text}");
        }
        assert_eq!(
            cpus_arg("1.5cpu"),
            Err("`1.5cpu` is not a number of CPUs: write e.g. 1.5 or 2".into())
        );
    }

    #[test]
    fn exec_parsed_alone_rejects_what_the_subcommand_rejects() {
        for argv in [
            &["exec"][..],
            &["exec", "--pids", "x", "--", "true"],
            &["exec", "--cpus", "0", "--", "true"],
            &["exec", "--cpus", "many", "--", "true"],
            &["exec", "--bogus"],
        ] {
            let alone = ExecCli::try_parse_from(argv).expect_err("rejected");
            let tree = Cli::try_parse_from(std::iter::once("ci-intel").chain(argv.iter().copied()))
                .expect_err("rejected");
            assert_eq!(alone.kind(), tree.kind(), "{argv:?}");
            assert_eq!(alone.to_string(), tree.to_string(), "{argv:?}");
        }
    }
}
