//! Properties of plan parsing over generated plans.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ci_intel_executor::Program;
use ci_intel_scheduler::{Backoff, Limits, LoadError, Plan, SandboxSpec, SecretScan, parse_plan};
use proptest::prelude::*;
use proptest::sample::subsequence;

/// One generated step, and what the parser must make of it.
#[derive(Clone, Debug)]
struct GenStep {
    id: String,
    needs: Vec<usize>,
    program: Program,
    env: BTreeMap<String, String>,
    timeout: Option<(u64, &'static str, Duration)>,
    retries: Option<GenRetries>,
    cpus: Option<u32>,
    sandbox: Option<GenSandbox>,
}

/// A step's `sandbox`: the boolean shorthand or a table.
#[derive(Clone, Debug)]
enum GenSandbox {
    Enabled(bool),
    Table {
        enabled: Option<bool>,
        read: Vec<String>,
        memory_mib: Option<u64>,
        pids: Option<u64>,
        nofile: Option<u64>,
        secret_scan: Option<&'static str>,
    },
}

impl GenSandbox {
    /// What the parser must make of it (the plan sets no `[sandbox]`).
    fn expected(&self) -> SandboxSpec {
        match self {
            GenSandbox::Enabled(enabled) => SandboxSpec {
                enabled: *enabled,
                ..SandboxSpec::default()
            },
            GenSandbox::Table {
                enabled,
                read,
                memory_mib,
                pids,
                nofile,
                secret_scan,
            } => SandboxSpec {
                enabled: enabled.unwrap_or(true),
                read: read.clone(),
                limits: Limits {
                    memory: memory_mib.map(|m| m << 20),
                    pids: *pids,
                    nofile: *nofile,
                    tmpfs: None,
                    millicpus: None,
                },
                secret_scan: match secret_scan {
                    Some("warn") => SecretScan::Warn,
                    _ => SecretScan::Deny,
                },
                ..SandboxSpec::default()
            },
        }
    }

    fn render(&self) -> String {
        match self {
            GenSandbox::Enabled(b) => format!("sandbox = {b}\n"),
            GenSandbox::Table {
                enabled,
                read,
                memory_mib,
                pids,
                nofile,
                secret_scan,
            } => {
                let mut keys = Vec::new();
                if let Some(e) = enabled {
                    keys.push(format!("enabled = {e}"));
                }
                if !read.is_empty() {
                    let items: Vec<String> = read.iter().map(|r| quoted(r)).collect();
                    keys.push(format!("read = [{}]", items.join(", ")));
                }
                let mut limits = Vec::new();
                if let Some(m) = memory_mib {
                    limits.push(format!("memory = \"{m}MiB\""));
                }
                if let Some(p) = pids {
                    limits.push(format!("pids = {p}"));
                }
                if let Some(n) = nofile {
                    limits.push(format!("nofile = {n}"));
                }
                if !limits.is_empty() {
                    keys.push(format!("limits = {{ {} }}", limits.join(", ")));
                }
                if let Some(p) = secret_scan {
                    keys.push(format!("secret_scan = \"{p}\""));
                }
                format!("sandbox = {{ {} }}\n", keys.join(", "))
            }
        }
    }
}

fn sandbox() -> impl Strategy<Value = GenSandbox> {
    prop_oneof![
        any::<bool>().prop_map(GenSandbox::Enabled),
        (
            prop::option::of(any::<bool>()),
            prop::collection::vec(
                prop_oneof![
                    "/[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,2}",
                    "~/[a-z0-9_-]{1,8}",
                    "\\$[A-Z_][A-Z0-9_]{0,6}/[a-z]{1,6}",
                    "\\$\\{[A-Z_][A-Z0-9_]{0,6}\\}",
                ]
                .prop_filter("no `..` component", |p| !p.split('/').any(|c| c == "..")),
                0..3,
            ),
            prop::option::of(1u64..=1 << 20),
            prop::option::of(1u64..=1 << 22),
            prop::option::of(16u64..=1 << 20),
            prop::option::of(prop::sample::select(&["deny", "warn"][..])),
        )
            .prop_map(|(enabled, read, memory_mib, pids, nofile, secret_scan)| {
                GenSandbox::Table {
                    enabled,
                    read,
                    memory_mib,
                    pids,
                    nofile,
                    secret_scan,
                }
            },),
    ]
}

#[derive(Clone, Debug)]
enum GenRetries {
    Count(u32),
    Table {
        count: u32,
        backoff: &'static str,
        delay_ms: u64,
    },
}

/// A TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn env_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}"
}

fn timeout() -> impl Strategy<Value = (u64, &'static str, Duration)> {
    prop_oneof![
        (1u64..100_000).prop_map(|n| (n, "ms", Duration::from_millis(n))),
        (1u64..10_000).prop_map(|n| (n, "s", Duration::from_secs(n))),
        (1u64..1_000).prop_map(|n| (n, "m", Duration::from_secs(60 * n))),
        (1u64..48).prop_map(|n| (n, "h", Duration::from_secs(3600 * n))),
    ]
}

fn retries() -> impl Strategy<Value = GenRetries> {
    prop_oneof![
        (0u32..=100).prop_map(GenRetries::Count),
        (
            0u32..=100,
            prop::sample::select(&["exponential", "fixed", "none"][..]),
            0u64..10_000
        )
            .prop_map(|(count, backoff, delay_ms)| GenRetries::Table {
                count,
                backoff,
                delay_ms
            }),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    prop_oneof![
        "[ -~]{0,20}[!-~]".prop_map(Program::Shell),
        prop::collection::vec("[^\\x00]{0,10}", 0..4).prop_map(|rest| {
            let mut argv = vec!["prog".to_string()];
            argv.extend(rest);
            Program::Argv(argv)
        }),
    ]
}

/// Step `i`: needs only steps before it.
fn step(i: usize) -> impl Strategy<Value = GenStep> {
    (
        "[A-Za-z0-9][A-Za-z0-9_.-]{0,10}",
        subsequence((0..i).collect::<Vec<_>>(), 0..=i.min(4)),
        program(),
        prop::collection::btree_map(env_name(), "[^\\x00]{0,16}", 0..4),
        prop::option::of(timeout()),
        prop::option::of(retries()),
        prop::option::of(1u32..=1024),
        prop::option::of(sandbox()),
    )
        .prop_map(
            move |(prefix, needs, program, env, timeout, retries, cpus, sandbox)| GenStep {
                // The suffix after the last `-` is the index, so ids are unique.
                id: format!("{prefix}-{i}"),
                needs,
                program,
                env,
                timeout,
                retries,
                cpus,
                sandbox,
            },
        )
        // List `needs` in any order: the parser must keep it.
        .prop_flat_map(|s| {
            Just(s.needs.clone())
                .prop_shuffle()
                .prop_map(move |needs| GenStep { needs, ..s.clone() })
        })
}

fn steps(max: usize) -> impl Strategy<Value = Vec<GenStep>> {
    (1..=max).prop_flat_map(|n| (0..n).map(step).collect::<Vec<_>>())
}

fn plan_env() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(env_name(), "[^\\x00]{0,16}", 0..4)
}

/// The plan file for `steps`.
fn render(steps: &[GenStep], env: &BTreeMap<String, String>) -> String {
    let mut s = String::from("version = 1\nname = \"generated\"\n");
    if !env.is_empty() {
        s.push_str("\n[env]\n");
        for (k, v) in env {
            s.push_str(&format!("{k} = {}\n", quoted(v)));
        }
    }
    for st in steps {
        s.push_str(&format!("\n[steps.{}]\n", quoted(&st.id)));
        match &st.program {
            Program::Shell(script) => s.push_str(&format!("run = {}\n", quoted(script))),
            Program::Argv(argv) => {
                let items: Vec<String> = argv.iter().map(|a| quoted(a)).collect();
                s.push_str(&format!("argv = [{}]\n", items.join(", ")));
            }
        }
        if !st.needs.is_empty() {
            let items: Vec<String> = st.needs.iter().map(|&d| quoted(&steps[d].id)).collect();
            s.push_str(&format!("needs = [{}]\n", items.join(", ")));
        }
        if let Some((n, unit, _)) = st.timeout {
            s.push_str(&format!("timeout = \"{n}{unit}\"\n"));
        }
        match &st.retries {
            None => {}
            Some(GenRetries::Count(c)) => s.push_str(&format!("retries = {c}\n")),
            Some(GenRetries::Table {
                count,
                backoff,
                delay_ms,
            }) => s.push_str(&format!(
                "retries = {{ count = {count}, backoff = \"{backoff}\", delay = \"{delay_ms}ms\" }}\n"
            )),
        }
        if let Some(c) = st.cpus {
            s.push_str(&format!("cpus = {c}\n"));
        }
        if let Some(sb) = &st.sandbox {
            s.push_str(&sb.render());
        }
        if !st.env.is_empty() {
            let items: Vec<String> = st
                .env
                .iter()
                .map(|(k, v)| format!("{k} = {}", quoted(v)))
                .collect();
            s.push_str(&format!("env = {{ {} }}\n", items.join(", ")));
        }
    }
    s
}

fn parse(src: &str) -> Result<Plan, LoadError> {
    parse_plan(Path::new("gen/plan.toml"), src)
}

/// Checks that every diagnostic points inside `src` and quotes the line it points at.
fn assert_located(src: &str, err: &LoadError) -> Result<(), TestCaseError> {
    let LoadError::Invalid { diagnostics } = err else {
        return Err(TestCaseError::fail(format!("unexpected error {err:?}")));
    };
    prop_assert!(!diagnostics.is_empty());
    let lines: Vec<&str> = src.split('\n').collect();
    for d in diagnostics {
        prop_assert!(
            d.line >= 1 && d.line <= lines.len(),
            "line {} of {}: {d}",
            d.line,
            lines.len()
        );
        let text = lines[d.line - 1].trim_end_matches('\r');
        prop_assert!(
            d.col >= 1 && d.col <= text.chars().count() + 1,
            "col {} on {text:?}: {d}",
            d.col
        );
        prop_assert!(!d.message.is_empty());
        if let Some((snippet, len)) = &d.snippet {
            prop_assert_eq!(snippet.as_str(), text);
            prop_assert!(*len >= 1);
        }
        // Rendering never panics either.
        let _ = d.to_string();
    }
    let _ = err.to_string();
    Ok(())
}

proptest! {
    /// (a) Generated valid plans parse, keep file order, resolve `needs`, and `topo` is a
    /// topological order.
    #[test]
    fn valid_plans_parse(steps in steps(40), env in plan_env()) {
        let src = render(&steps, &env);
        let plan = match parse(&src) {
            Ok(plan) => plan,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n--- plan:\n{src}"))),
        };
        prop_assert_eq!(plan.name.as_str(), "generated");
        prop_assert_eq!(plan.steps.len(), steps.len());
        for (i, (got, want)) in plan.steps.iter().zip(&steps).enumerate() {
            prop_assert_eq!(&got.id, &want.id);
            prop_assert_eq!(plan.step_index(&want.id), Some(i));
            prop_assert_eq!(&got.needs, &want.needs);
            prop_assert_eq!(&got.program, &want.program);
            let mut expected_env: Vec<(String, String)> =
                env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (k, v) in &want.env {
                match expected_env.iter_mut().find(|(ek, _)| ek == k) {
                    Some(slot) => slot.1 = v.clone(),
                    None => expected_env.push((k.clone(), v.clone())),
                }
            }
            let got_env: Vec<(String, String)> =
                got.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(got_env, expected_env);
            prop_assert_eq!(got.timeout, want.timeout.map(|t| t.2));
            prop_assert_eq!(got.cpus, want.cpus.unwrap_or(1));
            let sandbox = want.sandbox.as_ref().map_or_else(SandboxSpec::default, GenSandbox::expected);
            prop_assert_eq!(&got.sandbox, &sandbox);
            match &want.retries {
                None => prop_assert_eq!(got.retries.count, 0),
                Some(GenRetries::Count(c)) => prop_assert_eq!(got.retries.count, *c),
                Some(GenRetries::Table { count, backoff, delay_ms }) => {
                    prop_assert_eq!(got.retries.count, *count);
                    let b = match *backoff {
                        "exponential" => Backoff::Exponential,
                        "fixed" => Backoff::Fixed,
                        _ => Backoff::None,
                    };
                    prop_assert_eq!(got.retries.backoff, b);
                    prop_assert_eq!(got.retries.delay, Duration::from_millis(*delay_ms));
                }
            }
        }
        // `topo` is a permutation in which every step comes after what it needs.
        let mut position = vec![usize::MAX; steps.len()];
        for (k, &i) in plan.topo.iter().enumerate() {
            prop_assert_eq!(position[i], usize::MAX, "step {} twice in topo", i);
            position[i] = k;
        }
        prop_assert!(position.iter().all(|&p| p != usize::MAX));
        for (i, s) in plan.steps.iter().enumerate() {
            for &d in &s.needs {
                prop_assert!(position[d] < position[i]);
            }
        }
    }

    /// (b) Arbitrary text never panics the parser; errors point inside the source.
    #[test]
    fn arbitrary_text_never_panics(src in "(?s).{0,400}") {
        if let Err(e) = parse(&src) {
            assert_located(&src, &e)?;
        }
    }

    /// (b) Text built from TOML-ish pieces never panics the parser either.
    #[test]
    fn tomlish_text_never_panics(pieces in prop::collection::vec(prop_oneof![
        Just("version = 1\n".to_string()),
        Just("[steps.a]\n".to_string()),
        Just("[steps.\"b c\"]\n".to_string()),
        Just("run = \"x\"\n".to_string()),
        Just("needs = [\"a\"]\n".to_string()),
        Just("outputs = [\"o/\"]\n".to_string()),
        Just("retries = { count = 1 }\n".to_string()),
        Just("timeout = \"1s\"\n".to_string()),
        Just("[sandbox]\nnetwork = \"allowlist\"\n".to_string()),
        Just("sandbox = false\n".to_string()),
        Just("sandbox = { limits = { memory = \"1GiB\", pids = 0 } }\n".to_string()),
        Just("read = [\"~/x\", \"$A/..\", \"rel\"]\n".to_string()),
        Just("limits = { tmpfs = \"9 zz\" }\n".to_string()),
        "[\\[\\]{}=,\"'\\n é.a-z0-9]{0,8}",
    ], 0..24)) {
        let src: String = pieces.concat();
        if let Err(e) = parse(&src) {
            assert_located(&src, &e)?;
        }
    }

    /// (b) Random edits of a valid plan never panic the parser; errors point inside it.
    #[test]
    fn mutated_plans_never_panic(
        steps in steps(8),
        env in plan_env(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0usize..3, prop_oneof![
                Just(String::new()),
                "[\\[\\]{}=,\"'\\n\\\\ é#.a-z0-9-]{1,6}",
                Just("needs = [\"nope\"]\n".to_string()),
                Just("\n[steps.x]\n".to_string()),
                Just("cpus = 0\n".to_string()),
                Just("timeout = \"0s\"\n".to_string()),
                Just("sandbox = { read = [\"rel/../x\"], limits = { nofile = 1 } }\n".to_string()),
            ]),
            1..6,
        ),
    ) {
        let mut src = render(&steps, &env);
        for (at, delete, insert) in edits {
            let bounds: Vec<usize> = src.char_indices().map(|(i, _)| i).chain([src.len()]).collect();
            let k = at.index(bounds.len());
            let start = bounds[k];
            let end = bounds[(k + delete).min(bounds.len() - 1)];
            src.replace_range(start..end, &insert);
        }
        match parse(&src) {
            Ok(plan) => {
                // Whatever parsed is still consistent.
                prop_assert_eq!(plan.topo.len(), plan.steps.len());
            }
            Err(e) => assert_located(&src, &e)?,
        }
    }

    /// (c) A back edge added to a chain always gives a cycle naming every step on it.
    #[test]
    fn back_edge_makes_a_cycle(n in 1usize..30, ends in (any::<prop::sample::Index>(), any::<prop::sample::Index>())) {
        // s0 <- s1 <- ... <- s(n-1): each step needs the one before. Then `from` also
        // needs `to`, with to >= from, closing the cycle from, to, to-1, ..., from.
        let a = ends.0.index(n);
        let b = ends.1.index(n);
        let (from, to) = (a.min(b), a.max(b));
        let mut src = String::from("version = 1\n");
        for i in 0..n {
            src.push_str(&format!("\n[steps.s{i}]\nrun = \"true\"\n"));
            let mut needs = Vec::new();
            if i > 0 {
                needs.push(format!("\"s{}\"", i - 1));
            }
            if i == from {
                needs.push(format!("\"s{to}\""));
            }
            if !needs.is_empty() {
                src.push_str(&format!("needs = [{}]\n", needs.join(", ")));
            }
        }
        let err = match parse(&src) {
            Ok(_) => return Err(TestCaseError::fail(format!("cycle not detected:\n{src}"))),
            Err(e) => e,
        };
        assert_located(&src, &err)?;
        let LoadError::Invalid { diagnostics } = &err else { unreachable!() };
        let cycles: Vec<_> = diagnostics.iter().filter(|d| d.message.starts_with("dependency cycle: ")).collect();
        prop_assert_eq!(cycles.len(), 1, "{}", err);
        let path: Vec<&str> = cycles[0].message["dependency cycle: ".len()..].split(" -> ").collect();
        prop_assert_eq!(path.first(), path.last());
        let mut named: Vec<&str> = path[1..].to_vec();
        named.sort_unstable();
        let mut expected: Vec<String> = (from..=to).map(|i| format!("s{i}")).collect();
        expected.sort_unstable();
        prop_assert_eq!(named, expected.iter().map(String::as_str).collect::<Vec<_>>());
        // Each step on the path needs the next one.
        let needs_of = |id: &str| -> Vec<String> {
            let i: usize = id[1..].parse().unwrap_or(usize::MAX);
            let mut v = Vec::new();
            if i > 0 { v.push(format!("s{}", i - 1)); }
            if i == from { v.push(format!("s{to}")); }
            v
        };
        for w in path.windows(2) {
            prop_assert!(needs_of(w[0]).iter().any(|x| x == w[1]), "{} does not need {}", w[0], w[1]);
        }
    }
}
