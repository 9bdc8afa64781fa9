//! How the `sandbox` settings of a plan and of its steps combine.

use std::path::Path;

use ci_intel_executor::Layer;
use ci_intel_scheduler::{Limits, Network, Plan, SandboxSpec, SecretScan, parse_plan};

fn plan(src: &str) -> Plan {
    parse_plan(Path::new("plan.toml"), src).unwrap_or_else(|e| panic!("{e}\n--- plan:\n{src}"))
}

/// The merged sandbox of step `id`.
fn sandbox<'p>(plan: &'p Plan, id: &str) -> &'p SandboxSpec {
    let i = plan.step_index(id).expect("the step exists");
    &plan.steps[i].sandbox
}

#[test]
fn defaults_are_sandboxed_without_network_and_deny_secrets() {
    let p = plan("version = 1\n[steps.a]\nrun = \"true\"\n");
    let s = sandbox(&p, "a");
    assert_eq!(s, &SandboxSpec::default());
    assert!(s.enabled);
    assert_eq!(s.network, Network::Deny);
    assert_eq!(s.secret_scan, SecretScan::Deny);
    assert_eq!(s.limits, Limits::default());
    assert!(s.read.is_empty() && s.write.is_empty() && s.require.is_empty());
}

#[test]
fn a_boolean_turns_a_steps_sandbox_off_or_on_and_keeps_the_rest() {
    let p = plan(
        r#"version = 1

[sandbox]
enabled = false
network = "loopback"
read = ["/opt/sdk"]

[steps.off]
run = "true"

[steps.on]
run = "true"
sandbox = true

[steps.table-on]
run = "true"
sandbox = { enabled = true }

[steps.explicit-off]
run = "true"
sandbox = false
"#,
    );
    assert!(!p.sandbox.enabled);
    assert!(!sandbox(&p, "off").enabled, "inherited from the plan");
    assert!(!sandbox(&p, "explicit-off").enabled);
    for id in ["on", "table-on"] {
        let s = sandbox(&p, id);
        assert!(s.enabled, "{id}");
        assert_eq!(
            s.network,
            Network::Loopback,
            "{id} keeps the plan's network"
        );
        assert_eq!(s.read, ["/opt/sdk"], "{id} keeps the plan's read paths");
    }
}

#[test]
fn the_plan_may_use_the_boolean_too() {
    let p = plan("version = 1\nsandbox = false\n[steps.a]\nrun = \"true\"\n");
    assert!(!p.sandbox.enabled);
    assert!(!sandbox(&p, "a").enabled);
}

#[test]
fn step_keys_replace_the_plans_and_limits_merge_key_by_key() {
    let p = plan(
        r#"version = 1

[sandbox]
read = ["/opt/sdk", "~/.cargo/registry"]
write = ["$CARGO_HOME/git"]
secret_scan = "warn"
limits = { memory = "2GiB", pids = 512, nofile = 1024, tmpfs = "256MiB", cpu = 1.5 }

[steps.inherit]
run = "true"

[steps.override]
run = "true"
sandbox = { read = ["${SDK_ROOT}/lib"], write = [], secret_scan = "deny", limits = { memory = "512MiB", nofile = 4096, cpu = 4 } }
"#,
    );
    let inherit = sandbox(&p, "inherit");
    assert_eq!(inherit, &p.sandbox);
    assert_eq!(inherit.read, ["/opt/sdk", "~/.cargo/registry"]);
    assert_eq!(inherit.write, ["$CARGO_HOME/git"]);
    assert_eq!(inherit.secret_scan, SecretScan::Warn);
    assert_eq!(
        inherit.limits,
        Limits {
            memory: Some(2 << 30),
            pids: Some(512),
            nofile: Some(1024),
            tmpfs: Some(256 << 20),
            millicpus: Some(1500),
        }
    );

    let over = sandbox(&p, "override");
    assert_eq!(
        over.read,
        ["${SDK_ROOT}/lib"],
        "a step's list replaces the plan's"
    );
    assert!(over.write.is_empty(), "an empty list clears the plan's");
    assert_eq!(over.secret_scan, SecretScan::Deny);
    assert_eq!(
        over.limits,
        Limits {
            memory: Some(512 << 20),
            pids: Some(512),
            nofile: Some(4096),
            tmpfs: Some(256 << 20),
            millicpus: Some(4000),
        },
        "limits the step does not set are the plan's"
    );
}

#[test]
fn sizes_in_every_spelling() {
    for (text, bytes) in [
        ("\"1MiB\"", 1u64 << 20),
        ("\"512MiB\"", 512 << 20),
        ("\"512Mi\"", 512 << 20),
        ("\"2GiB\"", 2 << 30),
        ("\"2 GiB\"", 2 << 30),
        ("\"1G\"", 1 << 30),
        ("\"1g\"", 1 << 30),
        ("\"1.5G\"", 3 << 29),
        ("\"1GB\"", 1_000_000_000),
        ("\"1500KB\"", 1_500_000),
        ("\"4096K\"", 4 << 20),
        ("\"1T\"", 1 << 40),
        ("\"1048576\"", 1 << 20),
        ("\"1048576B\"", 1 << 20),
        ("2097152", 2 << 20),
        ("\"1024TiB\"", 1 << 50),
    ] {
        let p = plan(&format!(
            "version = 1\n[sandbox]\nlimits = {{ memory = {text}, tmpfs = {text} }}\n[steps.a]\nrun = \"true\"\n"
        ));
        assert_eq!(p.sandbox.limits.memory, Some(bytes), "{text}");
        assert_eq!(p.sandbox.limits.tmpfs, Some(bytes), "{text}");
    }
}

#[test]
fn cpu_limits_as_integers_or_floats_in_thousandths() {
    for (text, millicpus) in [
        ("1", 1000),
        ("2", 2000),
        ("1.5", 1500),
        ("0.5", 500),
        ("0.01", 10),
        ("0.25", 250),
        ("1e1", 10_000),
        ("1024", 1_024_000),
        ("1024.0", 1_024_000),
        // Finer than a thousandth is rounded to the nearest.
        ("0.0125", 13),
        ("2.0004", 2000),
    ] {
        let p = plan(&format!(
            "version = 1\n[sandbox]\nlimits = {{ cpu = {text} }}\n[steps.a]\nrun = \"true\"\n"
        ));
        assert_eq!(p.sandbox.limits.millicpus, Some(millicpus), "{text}");
        assert_eq!(
            sandbox(&p, "a").limits.millicpus,
            Some(millicpus),
            "{text}: the step inherits it"
        );
    }
}

#[test]
fn cgroup_is_an_alias_of_cgroups() {
    let p = plan(
        "version = 1\n[sandbox]\nrequire = [\"cgroup\", \"cgroups\", \"userns\"]\n[steps.a]\nrun = \"true\"\n",
    );
    assert_eq!(
        p.sandbox.require,
        [Layer::Cgroups, Layer::Cgroups, Layer::UserNs]
    );
}

#[test]
fn host_paths_are_kept_as_written_for_expansion_at_run_time() {
    let paths = [
        "/",
        "/opt/sdk/",
        "/tmp/./cache",
        "~",
        "~/",
        "~/.cache/pip",
        "$HOME",
        "$HOME/.npmrc",
        "${XDG_CACHE_HOME}",
        "${XDG_CACHE_HOME}/ccache",
        "/opt/weird~name",
    ];
    let list: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    let p = plan(&format!(
        "version = 1\n[sandbox]\nread = [{0}]\nwrite = [{0}]\n[steps.a]\nrun = \"true\"\n",
        list.join(", ")
    ));
    assert_eq!(p.sandbox.read, paths);
    assert_eq!(p.sandbox.write, paths);
}
