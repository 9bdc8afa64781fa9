//! Determinism checks end to end: a step with `deterministic = true` (or every cacheable
//! step under `--verify-determinism`) runs twice, the second time in another sandbox with
//! variations; equal outputs pass, different ones fail the step with a drift report naming
//! the variation that caused them, and the verdict goes into the run record.
#[path = "support/records.rs"]
mod records;
mod support;

use std::path::Path;
use std::process::Output;

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(plan: &str) -> Workspace {
        let w = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(w.path().join("plan.toml"), plan).unwrap();
        w
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, extra: &[&str]) -> Output {
        support::ci_intel()
            .args(["run", "plan.toml", "-k", "--cache-dir"])
            .arg(self.path().join(".cache"))
            .args(extra)
            .current_dir(self.path())
            .output()
            .unwrap()
    }

    fn record(&self) -> serde_json::Value {
        records::read_valid(&self.path().join(".ci-intel/runs.ndjson"))
            .pop()
            .expect("a run record")
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn verdict<'a>(record: &'a serde_json::Value, job: &str) -> &'a serde_json::Value {
    record["determinism"]
        .as_array()
        .unwrap_or_else(|| panic!("no determinism section: {record}"))
        .iter()
        .find(|d| d["job"] == job)
        .unwrap_or_else(|| panic!("no verdict for {job}: {record}"))
}

const PLAN: &str = r#"version = 1
name = "determinism"

[steps.pure]
run = "mkdir -p out && printf 'same bytes\n' > out/pure.txt"
outputs = ["out/pure.txt"]
deterministic = true

[steps.host]
run = "mkdir -p gen && uname -n > gen/host.txt"
outputs = ["gen/host.txt"]
deterministic = true

[steps.path]
run = "mkdir -p where && pwd > where/pwd.txt"
outputs = ["where/pwd.txt"]
deterministic = true

[steps.noise]
run = "mkdir -p rnd && head -c 16 /dev/urandom | od -An -tx1 > rnd/noise.txt"
outputs = ["rnd/noise.txt"]
deterministic = true

[steps.kernel]
run = "mkdir -p k && uname -r > k/release.txt"
outputs = ["k/release.txt"]
deterministic = true

[steps.after]
needs = ["host"]
run = "true"
"#;

#[test]
fn drift_fails_the_step_and_names_its_cause() {
    let w = Workspace::new(PLAN);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PASS pure"), "{}", text(&out));
    assert!(
        stdout.contains("FAIL host (not reproducible"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("SKIP after"), "{}", text(&out));

    let r = w.record();
    assert_eq!(verdict(&r, "pure")["verdict"], "reproducible");
    let host = verdict(&r, "host");
    assert_eq!(host["verdict"], "drift", "{host}");
    assert_eq!(host["differing_files"], 1, "{host}");
    assert_eq!(host["cause"], "hostname", "{host}");
    let report = host["report_path"].as_str().unwrap();
    let text = std::fs::read_to_string(report).unwrap();
    assert!(text.contains("gen/host.txt"), "{text}");
    assert!(
        text.contains("ci-intel-verify"),
        "the report shows the differing bytes: {text}"
    );
    assert_eq!(host["report_digest"].as_str().unwrap().len(), 64);
    assert_eq!(verdict(&r, "path")["cause"], "build_path");
    assert_eq!(verdict(&r, "noise")["cause"], "run_to_run");
    assert_eq!(verdict(&r, "kernel")["cause"], "kernel");
    // A failed check publishes nothing: the drifting output is not collected.
    assert!(!w.path().join("gen/host.txt").exists());
    assert!(w.path().join("out/pure.txt").exists());
}

#[test]
fn warn_keeps_the_result_and_reports_the_drift() {
    let plan = PLAN.replace("deterministic = true\n", "");
    let w = Workspace::new(&plan);
    let out = w.run(&["--verify-determinism=warn"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(w.path().join("gen/host.txt")).unwrap(),
        "ci-intel\n",
        "the first run's output is the one kept"
    );
    let r = w.record();
    assert_eq!(verdict(&r, "host")["verdict"], "drift");
    assert_eq!(verdict(&r, "pure")["verdict"], "reproducible");
    // Without the flag nothing is checked.
    let quiet = w.run(&[]);
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet));
    assert!(w.record().get("determinism").is_none());
}

#[test]
fn normalisers_make_archives_reproducible() {
    for tool in ["tar", "gzip"] {
        assert!(
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "this test needs {tool} (apt-get install {tool})"
        );
    }
    // Each run stamps the files with another time: only a normaliser makes them equal.
    let step = |normalize: &str| {
        format!(
            r#"version = 1
[steps.pack]
run = """
mkdir -p dist/src
echo a > dist/src/a && echo b > dist/src/b
touch -d "@$(( $(od -An -N2 -tu2 /dev/urandom) + 1000000 ))" dist/src/a dist/src/b
tar cf dist/src.tar -C dist src/a src/b
gzip -c dist/src.tar > dist/src.tar.gz
rm -r dist/src
"""
outputs = ["dist/"]
deterministic = true
{normalize}
"#
        )
    };
    let raw = Workspace::new(&step(""));
    let out = raw.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v = verdict(&raw.record(), "pack").clone();
    assert_eq!(v["verdict"], "drift", "{v}");
    let report = std::fs::read_to_string(v["report_path"].as_str().unwrap()).unwrap();
    assert!(
        report.contains("mtime"),
        "the report names the field: {report}"
    );

    let normalized = Workspace::new(&step(r#"normalize = ["tar", "gzip"]"#));
    let out = normalized.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        verdict(&normalized.record(), "pack")["verdict"],
        "reproducible"
    );
    let listing = std::process::Command::new("tar")
        .args(["tvf", "dist/src.tar", "--utc"])
        .current_dir(normalized.path())
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().all(|l| !l.contains("1970-01-1")),
        "member times are SOURCE_DATE_EPOCH, not the random ones: {listing}"
    );
}

#[test]
fn a_checked_result_is_restored_and_the_flag_checks_again() {
    let plan = |extra: &str| {
        format!(
            "version = 1\n[steps.pure]\nrun = \"mkdir -p out && echo same > out/x\"\noutputs = [\"out/\"]\n{extra}\n"
        )
    };
    let w = Workspace::new(&plan(""));
    let first = w.run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    // Marking the step deterministic changes its key: the unchecked result is not used.
    std::fs::write(w.path().join("plan.toml"), plan("deterministic = true")).unwrap();
    let checked = w.run(&[]);
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("PASS pure"),
        "{}",
        text(&checked)
    );
    assert_eq!(verdict(&w.record(), "pure")["verdict"], "reproducible");
    // Its checked result is restored next time, and checked again only when asked.
    let again = w.run(&[]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("CACHED pure"),
        "{}",
        text(&again)
    );
    assert!(w.record().get("determinism").is_none());
    let flagged = w.run(&["--verify-determinism"]);
    assert!(
        String::from_utf8_lossy(&flagged.stdout).contains("PASS pure"),
        "{}",
        text(&flagged)
    );
    assert_eq!(verdict(&w.record(), "pure")["verdict"], "reproducible");
    // A different normaliser is a different result.
    std::fs::write(
        w.path().join("plan.toml"),
        plan("deterministic = true\nnormalize = [\"tar\"]"),
    )
    .unwrap();
    let renormalized = w.run(&[]);
    assert!(
        String::from_utf8_lossy(&renormalized.stdout).contains("PASS pure"),
        "{}",
        text(&renormalized)
    );
}

#[test]
fn the_directory_order_is_varied_where_fuse_works() {
    assert!(
        Path::new("/dev/fuse").exists() && Path::new("/usr/bin/disorderfs").exists(),
        "this test needs FUSE and disorderfs (apt-get install disorderfs fuse3)"
    );
    let w = Workspace::new(
        r#"version = 1
[steps.listing]
run = "mkdir -p out && ls -U src > out/list.txt"
inputs = ["src/**"]
outputs = ["out/"]
deterministic = true

[steps.sorted]
run = "mkdir -p out2 && ls src > out2/list.txt"
inputs = ["src/**"]
outputs = ["out2/"]
deterministic = true
"#,
    );
    std::fs::create_dir(w.path().join("src")).unwrap();
    for name in ["a", "b", "c", "d", "e"] {
        std::fs::write(w.path().join("src").join(name), name).unwrap();
    }
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = w.record();
    assert_eq!(verdict(&r, "listing")["cause"], "dir_order", "{r}");
    assert_eq!(verdict(&r, "sorted")["verdict"], "reproducible");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&w.path().display().to_string()),
        "every disorderfs mount is gone: {mounts}"
    );
}
