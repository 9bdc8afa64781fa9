//! Every error the plan validator reports, as the user sees it.
//!
//! Each test feeds a small plan to [`parse_plan`] and snapshots the rendered [`LoadError`]:
//! the `file:line:col` location, the message, the marked snippet and the hint.

use std::path::Path;
use std::time::Duration;

use ci_intel_executor::Layer;
use ci_intel_scheduler::{Backoff, CachePolicy, LoadError, Network, parse_plan};
use insta::assert_snapshot;

/// The rendered error of a plan that must not parse.
fn error(src: &str) -> String {
    match parse_plan(Path::new("plan.toml"), src) {
        Ok(plan) => panic!("plan parsed, but should not have: {plan:?}\n{src}"),
        Err(e @ LoadError::Invalid { .. }) => e.to_string(),
        Err(e) => panic!("expected diagnostics, got {e:?}"),
    }
}

/// The number of diagnostics of a plan that must not parse.
fn count(src: &str) -> usize {
    match parse_plan(Path::new("plan.toml"), src) {
        Err(LoadError::Invalid { diagnostics }) => diagnostics.len(),
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

// --- unknown keys ----------------------------------------------------------------------

#[test]
fn unknown_top_level_key() {
    assert_snapshot!(error(
        r#"version = 1
nmae = "demo"

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn unknown_step_key() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
need = ["fetch"]
"#
    ));
}

#[test]
fn unknown_sandbox_key() {
    assert_snapshot!(error(
        r#"version = 1

[sandbox]
netwrok = "deny"

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn unknown_step_sandbox_key() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
sandbox = { network = "deny", requires = ["userns"] }
"#
    ));
}

#[test]
fn unknown_retries_key() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
retries = { count = 2, delay_ms = 500 }
"#
    ));
}

// --- TOML and types --------------------------------------------------------------------

#[test]
fn invalid_toml() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build
run = "make"
"#
    ));
}

#[test]
fn invalid_toml_unterminated_string() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make
"#
    ));
}

#[test]
fn duplicate_step_table() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"

[steps.build]
run = "make all"
"#
    ));
}

#[test]
fn wrong_type() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = ["make"]
"#
    ));
}

#[test]
fn wrong_retries_type() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
retries = "twice"
"#
    ));
}

#[test]
fn retries_table_without_count() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
retries = { backoff = "fixed" }
"#
    ));
}

// --- version and steps -----------------------------------------------------------------

#[test]
fn missing_version() {
    assert_snapshot!(error(
        r#"name = "demo"

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn unsupported_version() {
    assert_snapshot!(error(
        r#"version = 2

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn no_steps() {
    assert_snapshot!(error(
        r#"version = 1
name = "demo"
"#
    ));
}

#[test]
fn empty_file() {
    assert_eq!(count(""), 2, "missing version and no steps");
    assert_snapshot!(error(""));
}

#[test]
fn bad_step_ids() {
    let long = "a".repeat(129);
    let src = format!(
        r#"version = 1

[steps."-build"]
run = "make"

[steps."unit tests"]
run = "make test"

[steps."façade"]
run = "make docs"

[steps.{long}]
run = "true"
"#
    );
    assert_eq!(count(&src), 4);
    assert_snapshot!(error(&src));
}

#[test]
fn id_of_128_characters_is_fine() {
    let src = format!("version = 1\n[steps.{}]\nrun = \"true\"\n", "a".repeat(128));
    parse_plan(Path::new("plan.toml"), &src).expect("a 128-character id is valid");
}

// --- commands --------------------------------------------------------------------------

#[test]
fn both_run_and_argv() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
argv = ["make"]
"#
    ));
}

#[test]
fn empty_run() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "   "
"#
    ));
}

#[test]
fn empty_argv() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
argv = []
"#
    ));
}

#[test]
fn argv_with_empty_program() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
argv = ["", "all"]
"#
    ));
}

#[test]
fn no_command() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
needs = []
"#
    ));
}

// --- needs and cycles ------------------------------------------------------------------

#[test]
fn unknown_need_with_suggestion() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"

[steps.test]
needs = ["biuld"]
run = "make test"
"#
    ));
}

#[test]
fn unknown_need_without_suggestion() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"

[steps.test]
needs = ["fetch-dependencies"]
run = "make test"
"#
    ));
}

#[test]
fn duplicate_need() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"

[steps.test]
needs = ["build", "build"]
run = "make test"
"#
    ));
}

#[test]
fn cycle_of_two() {
    assert_snapshot!(error(
        r#"version = 1

[steps.a]
needs = ["b"]
run = "true"

[steps.b]
needs = ["a"]
run = "true"
"#
    ));
}

#[test]
fn cycle_of_three() {
    assert_snapshot!(error(
        r#"version = 1

[steps.compile]
needs = ["generate"]
run = "true"

[steps.link]
needs = ["compile"]
run = "true"

[steps.generate]
needs = ["link"]
run = "true"
"#
    ));
}

#[test]
fn self_need() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
needs = ["build"]
run = "make"
"#
    ));
}

// --- inputs and outputs ----------------------------------------------------------------

#[test]
fn invalid_input_glob() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
inputs = ["src/**", "include/[a-z.h"]
"#
    ));
}

#[test]
fn input_outside_root() {
    let src = r#"version = 1

[steps.build]
run = "make"
inputs = ["../vendor/**", "/etc/passwd"]
"#;
    assert_eq!(count(src), 2);
    assert_snapshot!(error(src));
}

#[test]
fn output_outside_root() {
    let src = r#"version = 1

[steps.build]
run = "make"
outputs = ["../dist/", "/tmp/out.bin", ".", ""]
"#;
    assert_eq!(count(src), 4);
    assert_snapshot!(error(src));
}

#[test]
fn output_claimed_by_two_steps() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
outputs = ["bin/tool"]

[steps.package]
run = "make pkg"
outputs = ["./bin/tool"]
"#
    ));
}

#[test]
fn output_inside_another_steps_directory() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
outputs = ["dist/"]

[steps.docs]
run = "make docs"
outputs = ["dist/docs/index.html"]
"#
    ));
}

#[test]
fn output_listed_twice_by_one_step() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
outputs = ["dist/", "dist/app"]
"#
    ));
}

// --- timeouts, retries, cpus -----------------------------------------------------------

#[test]
fn invalid_timeout() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
timeout = "ten minutes"
"#
    ));
}

#[test]
fn timeout_without_unit() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
timeout = "90"
"#
    ));
}

#[test]
fn timeout_as_a_number() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
timeout = 90
"#
    ));
}

#[test]
fn zero_timeout() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
timeout = "0s"
"#
    ));
}

#[test]
fn negative_retry_count() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
retries = -1
"#
    ));
}

#[test]
fn too_many_retries() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
retries = { count = 1000, backoff = "fixed" }
"#
    ));
}

#[test]
fn unknown_backoff() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
retries = { count = 2, backoff = "linear" }
"#
    ));
}

#[test]
fn invalid_retry_delay() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
retries = { count = 2, delay = "soon" }
"#
    ));
}

#[test]
fn invalid_retry_max_delay() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"

[steps.build.retries]
count = 3
delay = "1s"
max_delay = "1 fortnight"
"#
    ));
}

#[test]
fn cpus_out_of_range() {
    let src = r#"version = 1

[steps.a]
run = "true"
cpus = 0

[steps.b]
run = "true"
cpus = 1025

[steps.c]
run = "true"
cpus = -2
"#;
    assert_eq!(count(src), 3);
    assert_snapshot!(error(src));
}

// --- tools and normalisers -------------------------------------------------------------

#[test]
fn bad_tool() {
    let src = r#"version = 1

[steps.build]
run = "make"
tools = ["cc", "", "gcc -O2"]
"#;
    assert_eq!(count(src), 2);
    assert_snapshot!(error(src));
}

#[test]
fn unknown_normaliser() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
normalize = ["zip", "rar"]
"#
    ));
}

// --- environment and secrets -----------------------------------------------------------

#[test]
fn invalid_env_names() {
    let src = r#"version = 1
pass_env = ["HOME", "MY-VAR"]

[env]
1ST = "x"

[steps.build]
run = "make"
env = { "CC FLAGS" = "-O2" }
pass_env = ["="]
"#;
    assert_eq!(count(src), 4);
    assert_snapshot!(error(src));
}

#[test]
fn invalid_secret_names() {
    assert_snapshot!(error(
        r#"version = 1

[steps.publish]
run = "make publish"
secrets = ["NPM_TOKEN", "npm-token"]
"#
    ));
}

// --- sandbox ---------------------------------------------------------------------------

#[test]
fn unknown_network_mode() {
    assert_snapshot!(error(
        r#"version = 1

[sandbox]
network = "none"

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn allow_without_allowlist() {
    assert_snapshot!(error(
        r#"version = 1

[steps.fetch]
run = "make fetch"
sandbox = { network = "loopback", allow = ["crates.io:443"] }
"#
    ));
}

#[test]
fn invalid_allowlist_entries() {
    let src = r#"version = 1

[sandbox]
network = "allowlist"
allow = ["crates.io", "crates.io:0", "crates.io:https", "bad host:443", "*.example.com:443", ":443"]

[steps.build]
run = "make"
"#;
    assert_eq!(count(src), 5);
    assert_snapshot!(error(src));
}

#[test]
fn unknown_isolation_layer() {
    assert_snapshot!(error(
        r#"version = 1

[sandbox]
require = ["userns", "selinux"]

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn step_sandbox_of_the_wrong_type() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
sandbox = "off"
"#
    ));
}

#[test]
fn unknown_sandbox_key_lists_the_new_keys() {
    assert_snapshot!(error(
        r#"version = 1

[sandbox]
mounts = ["/opt"]

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn misspelt_secret_scan_key() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
sandbox = { secretscan = "warn" }
"#
    ));
}

#[test]
fn unknown_limits_key() {
    assert_snapshot!(error(
        r#"version = 1

[sandbox]
limits = { memroy = "2GiB" }

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn limits_of_the_wrong_type() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
sandbox = { limits = { memory = true } }
"#
    ));
}

#[test]
fn relative_sandbox_paths_are_relative_to_the_root() {
    let src = r#"version = 1

[sandbox]
read = ["/opt/sdk", "src", "./vendor", "~/.cargo/registry"]
write = ["target"]

[steps.build]
run = "make"
"#;
    let plan = ci_intel_scheduler::parse_plan(std::path::Path::new("plan.toml"), src).unwrap();
    assert_eq!(plan.steps[0].sandbox.write, ["target"]);
}

#[test]
fn sandbox_paths_with_dot_dot() {
    let src = r#"version = 1

[steps.build]
run = "make"
sandbox = { read = ["/opt/sdk/../etc", "~/../root", "$HOME/.."], write = ["/tmp/cache/./x"] }
"#;
    assert_eq!(count(src), 3, "`.` is fine, `..` is not");
    assert_snapshot!(error(src));
}

#[test]
fn sandbox_paths_with_bad_variables() {
    let src = r#"version = 1

[sandbox]
read = ["${CARGO_HOME", "$1SDK/lib", "${SDK}lib", "$SDK-1/lib", "/opt/$VERSION/bin", "${SDK_ROOT}/lib", "$HOME"]

[steps.build]
run = "make"
"#;
    assert_eq!(count(src), 5, "the last two are fine");
    assert_snapshot!(error(src));
}

#[test]
fn sandbox_paths_of_other_users_or_empty() {
    let src = r#"version = 1

[sandbox]
write = ["~root/.cache", "", " ", "~", "~/"]

[steps.build]
run = "make"
"#;
    assert_eq!(count(src), 3, "`~` and `~/` are fine");
    assert_snapshot!(error(src));
}

#[test]
fn invalid_sizes() {
    let src = r#"version = 1

[sandbox]
limits = { memory = "2 gigs", tmpfs = "MiB" }

[steps.a]
run = "true"
sandbox = { limits = { memory = "1.5.2G", tmpfs = "" } }

[steps.b]
run = "true"
sandbox = { limits = { memory = "99999999999999999999999TiB" } }
"#;
    assert_eq!(count(src), 5);
    assert_snapshot!(error(src));
}

#[test]
fn sizes_out_of_range() {
    let src = r#"version = 1

[sandbox]
limits = { memory = "512KiB", tmpfs = 0 }

[steps.a]
run = "true"
sandbox = { limits = { memory = -1, tmpfs = "1025TiB" } }

[steps.b]
run = "true"
sandbox = { limits = { memory = "2048TiB", tmpfs = "1MiB" } }
"#;
    assert_eq!(count(src), 5, "exactly 1 MiB is fine");
    assert_snapshot!(error(src));
}

#[test]
fn pids_and_nofile_out_of_range() {
    let src = r#"version = 1

[sandbox]
limits = { pids = 0, nofile = 15 }

[steps.a]
run = "true"
sandbox = { limits = { pids = 4194305, nofile = 1048577 } }

[steps.b]
run = "true"
sandbox = { limits = { pids = -3, nofile = 16 } }

[steps.c]
run = "true"
sandbox = { limits = { pids = 4194304, nofile = 1048576 } }
"#;
    assert_eq!(count(src), 5, "the bounds themselves are fine");
    assert_snapshot!(error(src));
}

#[test]
fn cpu_limit_out_of_range() {
    let src = r#"version = 1

[sandbox]
limits = { cpu = 0 }

[steps.a]
run = "true"
sandbox = { limits = { cpu = 0.009 } }

[steps.b]
run = "true"
sandbox = { limits = { cpu = 1024.5 } }

[steps.c]
run = "true"
sandbox = { limits = { cpu = -1 } }

[steps.d]
run = "true"
sandbox = { limits = { cpu = nan } }

[steps.e]
run = "true"
sandbox = { limits = { cpu = inf } }

[steps.f]
run = "true"
sandbox = { limits = { cpu = 0.01 } }

[steps.g]
run = "true"
sandbox = { limits = { cpu = 1024 } }
"#;
    assert_eq!(count(src), 6, "the bounds themselves are fine");
    assert_snapshot!(error(src));
}

#[test]
fn cpu_limit_of_the_wrong_type() {
    let src = r#"version = 1

[steps.a]
run = "true"
sandbox = { limits = { cpu = "1.5" } }
"#;
    assert_eq!(count(src), 1);
    assert_snapshot!(error(src));
}

#[test]
fn misspelt_cpu_limit_key() {
    assert_snapshot!(error(
        r#"version = 1

[sandbox]
limits = { cpus = 2 }

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn unknown_secret_scan_policy() {
    assert_snapshot!(error(
        r#"version = 1

[steps.build]
run = "make"
sandbox = { secret_scan = "ignore" }
"#
    ));
}

// --- top level -------------------------------------------------------------------------

#[test]
fn negative_source_date_epoch() {
    assert_snapshot!(error(
        r#"version = 1
source_date_epoch = -1

[steps.build]
run = "make"
"#
    ));
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let src = r#"version = 3

[steps.build]
run = ""
cpus = 0

[steps.test]
needs = ["biuld"]
run = "make test"
timeout = "0s"
"#;
    assert_eq!(count(src), 5);
    assert_snapshot!(error(src));
}

// --- the example plan ------------------------------------------------------------------

#[test]
fn example_plan_parses() {
    let src = include_str!("fixtures/example.toml");
    let plan = parse_plan(Path::new("examples/plan.toml"), src).expect("the example plan is valid");
    assert_eq!(plan.name, "example");
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["compile-core", "compile-util", "link", "wheel", "test"]
    );
    let deps: usize = plan.steps.iter().map(|s| s.needs.len()).sum();
    assert_eq!(deps, 4);
    assert_eq!(plan.steps[2].needs, [0, 1]);
    assert_eq!(plan.steps[4].needs, [2, 3]);
    assert_eq!(plan.root, Path::new("examples"));

    let [core, _util, link, wheel, test] = &plan.steps[..] else {
        unreachable!()
    };
    assert_eq!(
        core.env.get("CFLAGS").map(String::as_str),
        Some("-O2 -Wall")
    );
    assert_eq!(core.inputs, ["src/core.c", "include/*.h"]);
    assert_eq!(core.outputs, ["obj/core.o"]);
    assert_eq!(core.tools, ["cc"]);
    assert!(link.deterministic);
    assert_eq!(wheel.outputs, ["dist/"]);
    assert_eq!(wheel.normalize, ["zip"]);
    assert_eq!(
        wheel.sandbox.network,
        Network::Allowlist(vec![
            "packages.example.com:443".into(),
            "*.mirror.example.com:443".into()
        ])
    );
    assert_eq!(
        plan.sandbox.require,
        [Layer::UserNs, Layer::NetNs, Layer::Landlock]
    );
    assert_eq!(
        wheel.sandbox.require, plan.sandbox.require,
        "steps inherit `require`"
    );
    assert_eq!(test.sandbox.network, Network::Deny);
    assert_eq!(test.timeout, Some(Duration::from_secs(600)));
    assert_eq!(test.retries.count, 2);
    assert_eq!(test.retries.backoff, Backoff::Exponential);
    assert_eq!(test.cache, CachePolicy::Never);
    assert_eq!(core.cache, CachePolicy::Default);
    assert!(!test.cache.allows(false));
    assert!(core.cache.allows(false) && !core.cache.allows(true));
    assert!(CachePolicy::Always.allows(true));
    assert_eq!(test.secrets, ["CODECOV_TOKEN"]);
    // Dependencies come before their dependents.
    let pos = |i: usize| plan.topo.iter().position(|&t| t == i).unwrap();
    assert!(pos(0) < pos(2) && pos(1) < pos(2) && pos(2) < pos(4) && pos(3) < pos(4));
}

// --- bytes a process cannot receive, absurd limits, escapes inside braces -----------------

#[test]
fn nul_in_command_or_env() {
    let src = "version = 1\n\n[steps.a]\nrun = \"echo a\\u0000b\"\n\n[steps.b]\nargv = [\"echo\", \"x\\u0000\"]\nenv = { A = \"x\\u0000y\" }\n";
    assert_eq!(count(src), 3);
    assert_snapshot!(error(src));
}

#[test]
fn timeout_longer_than_a_year() {
    assert_snapshot!(error(
        r#"version = 1

[steps.a]
run = "true"
timeout = "200000000000000d"
"#
    ));
}

#[test]
fn input_escaping_through_brace_alternatives() {
    let src = r#"version = 1

[steps.a]
run = "true"
inputs = ["{../secret,src}/**", "{/etc/passwd,x}", "{src,include}/**"]
"#;
    assert_eq!(count(src), 2, "only the two escaping globs are errors");
    assert_snapshot!(error(src));
}

// --- mutation_report --------------------------------------------------------------------

#[test]
fn mutation_report_outside_the_outputs() {
    assert_snapshot!(error(
        r#"version = 1

[steps.mutants]
run = "cargo mutants"
outputs = ["report/"]
mutation_report = "mutants.out/outcomes.json"
"#
    ));
}

#[test]
fn mutation_report_outside_the_root() {
    assert_snapshot!(error(
        r#"version = 1

[steps.mutants]
run = "cargo mutants"
sandbox = false
mutation_report = "../outcomes.json"
"#
    ));
}

#[test]
fn mutation_report_of_an_unsandboxed_step_needs_no_output() {
    let plan = parse_plan(
        Path::new("plan.toml"),
        "version = 1\n[steps.m]\nrun = \"x\"\nsandbox = false\nmutation_report = \"m/o.json\"\n",
    )
    .unwrap();
    assert_eq!(plan.steps[0].mutation_report.as_deref(), Some("m/o.json"));
}

// --- deterministic -----------------------------------------------------------------------

#[test]
fn deterministic_without_the_sandbox_or_outputs() {
    assert_snapshot!(error(
        r#"version = 1

[steps.a]
run = "make"
sandbox = false
outputs = ["out/"]
deterministic = true

[steps.b]
run = "make"
deterministic = true
"#
    ));
}
