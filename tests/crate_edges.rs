//! The workspace's layering, checked against `cargo metadata`.
//!
//! Allowed internal dependencies: scheduler → executor; executor → sandbox, cache, repro;
//! the binary → any. sandbox, cache, insight and repro are leaves, and nothing depends on
//! the binary. Every member inherits the workspace lints and documents its crate with a
//! `//!` block.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const BINARY: &str = "ci-intel";
const SCHEDULER: &str = "ci-intel-scheduler";
const EXECUTOR: &str = "ci-intel-executor";
const SANDBOX: &str = "ci-intel-sandbox";
const CACHE: &str = "ci-intel-cache";
const INSIGHT: &str = "ci-intel-insight";
const REPRO: &str = "ci-intel-repro";

/// Normal dependencies each library crate must have on other members, exactly.
const LIBRARY_EDGES: &[(&str, &[&str])] = &[
    (SCHEDULER, &[EXECUTOR]),
    (EXECUTOR, &[SANDBOX, CACHE, REPRO]),
    (SANDBOX, &[]),
    (CACHE, &[]),
    (INSIGHT, &[]),
    (REPRO, &[]),
];

struct Package {
    name: String,
    manifest: PathBuf,
    /// (dependency name, kind: "normal" | "dev" | "build").
    deps: Vec<(String, String)>,
    /// Source files of the crate roots: the library's, or the binaries' when there is none.
    roots: Vec<PathBuf>,
}

fn metadata() -> Vec<Package> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running `cargo metadata`");
    assert!(
        out.status.success(),
        "`cargo metadata` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("`cargo metadata` printed JSON");
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap_or_default()))
        .map(|p| {
            let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .map(|d| {
                    let kind = d["kind"].as_str().unwrap_or("normal").to_string();
                    (str_of(&d["name"]), kind)
                })
                .collect();
            let targets = p["targets"].as_array().expect("targets");
            let of_kind = |kind: &str| -> Vec<PathBuf> {
                targets
                    .iter()
                    .filter(|t| {
                        t["kind"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k.as_str() == Some(kind)))
                    })
                    .map(|t| PathBuf::from(str_of(&t["src_path"])))
                    .collect()
            };
            let mut roots = of_kind("lib");
            if roots.is_empty() {
                roots = of_kind("bin");
            }
            Package {
                name: str_of(&p["name"]),
                manifest: PathBuf::from(str_of(&p["manifest_path"])),
                deps,
                roots,
            }
        })
        .collect()
}

/// Every way `packages` break the allowed layering, one message per broken edge.
fn layering_violations(packages: &[Package]) -> Vec<String> {
    let members: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let allowed: BTreeMap<&str, &[&str]> = LIBRARY_EDGES.iter().copied().collect();
    let mut violations = Vec::new();
    let mut normal: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in packages {
        for (dep, kind) in &p.deps {
            if !members.contains(dep.as_str()) {
                continue;
            }
            let ok = if dep == BINARY {
                false
            } else if p.name == BINARY {
                true
            } else {
                allowed
                    .get(p.name.as_str())
                    .is_some_and(|a| a.contains(&dep.as_str()))
            };
            if !ok {
                violations.push(format!(
                    "forbidden internal dependency edge: {} -> {dep} ({kind})",
                    p.name
                ));
            }
            if kind == "normal" {
                normal.entry(&p.name).or_default().insert(dep);
            }
        }
    }
    for (name, deps) in LIBRARY_EDGES {
        if !members.contains(name) {
            continue;
        }
        let have = normal.get(name).cloned().unwrap_or_default();
        for missing in deps.iter().filter(|d| !have.contains(*d)) {
            violations.push(format!(
                "missing internal dependency edge: {name} -> {missing}"
            ));
        }
    }
    violations
}

#[test]
fn internal_dependency_edges_are_exactly_the_allowed_ones() {
    let packages = metadata();
    let members: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let expected: BTreeSet<&str> = LIBRARY_EDGES
        .iter()
        .map(|(n, _)| *n)
        .chain([BINARY])
        .collect();
    assert_eq!(
        members, expected,
        "the workspace members changed: update the allowed edges in this test and in the design"
    );
    let violations = layering_violations(&packages);
    assert!(
        violations.is_empty(),
        "{}\nallowed: scheduler -> executor; executor -> sandbox, cache, repro; the binary -> \
         any; sandbox, cache, insight and repro are leaves; nothing depends on the binary",
        violations.join("\n")
    );
}

#[test]
fn the_layering_check_names_each_forbidden_edge() {
    let pkg = |name: &str, deps: &[(&str, &str)]| Package {
        name: name.into(),
        manifest: PathBuf::new(),
        deps: deps
            .iter()
            .map(|(d, k)| (d.to_string(), k.to_string()))
            .collect(),
        roots: Vec::new(),
    };
    let packages = [
        pkg(BINARY, &[(SCHEDULER, "normal"), (SANDBOX, "normal")]),
        pkg(SCHEDULER, &[(EXECUTOR, "normal"), (SANDBOX, "dev")]),
        pkg(
            EXECUTOR,
            &[(SANDBOX, "normal"), (REPRO, "normal"), ("libc", "normal")],
        ),
        pkg(SANDBOX, &[(BINARY, "dev")]),
        pkg(CACHE, &[]),
        pkg(REPRO, &[]),
    ];
    assert_eq!(
        layering_violations(&packages),
        [
            "forbidden internal dependency edge: ci-intel-scheduler -> ci-intel-sandbox (dev)",
            "forbidden internal dependency edge: ci-intel-sandbox -> ci-intel (dev)",
            "missing internal dependency edge: ci-intel-executor -> ci-intel-cache",
        ]
    );
}

/// Whether a Cargo.toml has `[lints]` with `workspace = true` in it.
fn inherits_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints {
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            if compact == "workspace=true" {
                return true;
            }
        }
    }
    false
}

fn starts_with_doc_block(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().next().is_some_and(|l| l.starts_with("//!"))
}

#[test]
fn every_member_inherits_workspace_lints_and_documents_its_crate() {
    let mut problems = Vec::new();
    for p in metadata() {
        let manifest = std::fs::read_to_string(&p.manifest)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.manifest.display()));
        if !inherits_workspace_lints(&manifest) {
            problems.push(format!(
                "{}: no `[lints] workspace = true` in {}",
                p.name,
                p.manifest.display()
            ));
        }
        assert!(!p.roots.is_empty(), "{} has no lib or bin target", p.name);
        for root in &p.roots {
            if !starts_with_doc_block(root) {
                problems.push(format!(
                    "{}: {} does not start with a `//!` crate documentation block",
                    p.name,
                    root.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_lints_parser_sees_what_cargo_sees() {
    assert!(inherits_workspace_lints(
        "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"
    ));
    assert!(inherits_workspace_lints(
        "[lints]\nworkspace=true # inherited\n"
    ));
    assert!(!inherits_workspace_lints(
        "[lints.rust]\nworkspace = true\n"
    ));
    assert!(!inherits_workspace_lints(
        "[lints]\n[dependencies]\nworkspace = true\n"
    ));
    assert!(!inherits_workspace_lints("[package]\nname = \"x\"\n"));
}
