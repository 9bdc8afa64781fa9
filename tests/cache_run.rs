//! `ci-intel run` with the cache, end to end: a second run restores instead of running,
//! changes to what a step sees miss, broken entries are quarantined and re-run, and the
//! steps that must not be cached are not.
#[path = "support/summary.rs"]
mod summary;

use summary::Ran;
mod support;

use std::path::{Path, PathBuf};

/// A plan root with a cache of its own.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(plan: &str, files: &[(&str, &str)]) -> Workspace {
        let w = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        w.write("plan.toml", plan);
        for (name, text) in files {
            w.write(name, text);
        }
        w
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        let p = self.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn cache_dir(&self) -> PathBuf {
        self.path().join(".cache-dir")
    }

    fn run(&self, extra: &[&str]) -> Ran {
        self.run_env(extra, &[])
    }

    fn run_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Ran {
        let out = support::ci_intel()
            .args(["run", "plan.toml", "--cache-dir"])
            .arg(self.cache_dir())
            .args(extra)
            .current_dir(self.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Ran::from(out)
    }

    /// How many times the step's command ran: each run appends a line to `counter/STEP`,
    /// a writable path (`write`) that is not an output, so a restore never touches it.
    fn runs_of(&self, step: &str) -> usize {
        std::fs::read_to_string(self.path().join("counter").join(step))
            .map_or(0, |s| s.lines().count())
    }
}

/// A two-step plan: `build` compiles (copies) the source into outputs, `check` reads
/// them. Each step also appends to a counter in a writable path, so the test can tell a
/// run from a restore.
const PLAN: &str = r#"
version = 1

[sandbox]
write = ["counter"]

[steps.build]
run = """
echo run >> counter/build
mkdir -p out/sub
cp src/main.txt out/main.txt
tr a-z A-Z < src/main.txt > out/sub/upper.txt
ln -s sub/upper.txt out/link
chmod 755 out/main.txt
echo built
"""
inputs = ["src/**"]
outputs = ["out/"]

[steps.check]
needs = ["build"]
run = """
echo run >> counter/check
grep -q hello out/sub/upper.txt || grep -q HELLO out/sub/upper.txt
echo checked
"""
"#;

fn workspace() -> Workspace {
    let w = Workspace::new(PLAN, &[("src/main.txt", "hello\n")]);
    std::fs::create_dir_all(w.path().join("counter")).unwrap();
    w
}

#[test]
fn a_second_run_restores_every_step_from_the_cache() {
    let w = workspace();
    let first = w.run(&[]);
    first.ok();
    assert_eq!(first.status("build"), "succeeded");
    assert_eq!((w.runs_of("build"), w.runs_of("check")), (1, 1));
    let built = std::fs::read(w.path().join("out/sub/upper.txt")).unwrap();

    // The outputs are gone (a fresh checkout): the cache brings them back.
    std::fs::remove_dir_all(w.path().join("out")).unwrap();
    let second = w.run(&[]);
    second.ok();
    assert_eq!(second.status("build"), "cached", "{}", second.show());
    assert_eq!(second.status("check"), "cached", "{}", second.show());
    assert!(second.stdout.contains("CACHED build"), "{}", second.show());
    // A fresh cache on a machine outside CI trusts the machine's own key, and says so once.
    let notice = "now trusts this machine's signing key";
    assert!(
        String::from_utf8_lossy(&first.out.stderr).contains(notice),
        "{}",
        first.show()
    );
    assert!(
        !String::from_utf8_lossy(&second.out.stderr).contains(notice),
        "{}",
        second.show()
    );
    assert_eq!(
        (w.runs_of("build"), w.runs_of("check")),
        (1, 1),
        "nothing ran again"
    );
    assert!(second.stdout.contains("2 cached"), "{}", second.show());
    // Outputs restored exactly: content, mode, links.
    assert_eq!(
        std::fs::read(w.path().join("out/sub/upper.txt")).unwrap(),
        built
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(w.path().join("out/main.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(w.path().join("out/link")).unwrap(),
        Path::new("sub/upper.txt")
    );
    // The step's recorded output is replayed.
    assert!(second.stdout.contains("[build] built"), "{}", second.show());
}

#[test]
fn a_changed_input_misses_and_its_dependents_too() {
    let w = workspace();
    w.run(&[]).ok();
    w.write("src/main.txt", "hello, world\n");
    let second = w.run(&[]);
    second.ok();
    assert_eq!(second.status("build"), "succeeded", "{}", second.show());
    // check's inputs are build's outputs, which changed.
    assert_eq!(second.status("check"), "succeeded", "{}", second.show());
    assert_eq!((w.runs_of("build"), w.runs_of("check")), (2, 2));
    // Going back to the first content hits the first entries again.
    w.write("src/main.txt", "hello\n");
    let third = w.run(&[]);
    assert_eq!(third.status("build"), "cached", "{}", third.show());
    assert_eq!(third.status("check"), "cached", "{}", third.show());
}

#[test]
fn a_changed_command_or_environment_misses() {
    let w = workspace();
    w.run(&[]).ok();
    let plan = PLAN.replace("echo checked", "echo checked again");
    w.write("plan.toml", &plan);
    let second = w.run(&[]);
    assert_eq!(second.status("build"), "cached", "{}", second.show());
    assert_eq!(second.status("check"), "succeeded", "{}", second.show());
    let plan = format!("{plan}\n[env]\nOPT = \"1\"\n");
    w.write("plan.toml", &plan);
    let third = w.run(&[]);
    assert_eq!(third.status("build"), "succeeded", "{}", third.show());
}

#[test]
fn a_corrupt_entry_is_quarantined_and_the_step_runs_again() {
    let w = workspace();
    w.run(&[]).ok();
    // Damage every blob of the cache.
    let cas = w.cache_dir().join("cas");
    let mut damaged = 0;
    for shard in std::fs::read_dir(&cas).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let p = blob.unwrap().path();
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&p, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    std::fs::remove_dir_all(w.path().join("out")).unwrap();
    let second = w.run(&[]);
    second.ok();
    assert_eq!(second.status("build"), "succeeded", "{}", second.show());
    assert_eq!(w.runs_of("build"), 2, "the step ran again");
    // The outputs on disk are the real ones, never the corrupt blobs.
    assert_eq!(
        std::fs::read_to_string(w.path().join("out/sub/upper.txt")).unwrap(),
        "HELLO\n"
    );
    let quarantine: Vec<_> = std::fs::read_dir(w.cache_dir().join("quarantine"))
        .unwrap()
        .collect();
    assert!(!quarantine.is_empty(), "an entry went to quarantine");
    let log = std::fs::read_dir(w.path().join(".ci-intel/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|d| std::fs::read_to_string(d.join("build.log")).ok())
        .collect::<String>();
    assert!(log.contains("cache_quarantine:"), "{log}");
}

#[test]
fn no_cache_runs_everything_and_stores_nothing() {
    let w = workspace();
    w.run(&["--no-cache"]).ok();
    let second = w.run(&["--no-cache"]);
    assert_eq!(second.status("build"), "succeeded");
    assert_eq!(w.runs_of("build"), 2);
    assert!(!w.cache_dir().join("ac").exists(), "nothing stored");
}

#[test]
fn steps_that_must_not_be_cached_always_run() {
    let plan = r#"
version = 1
[sandbox]
write = ["counter"]

[steps.off]
run = "echo run >> counter/off"
cache = false

[steps.secret]
run = "echo run >> counter/secret"
secrets = ["TEST_SECRET_VALUE"]

[steps.unsandboxed]
run = "echo run >> counter/unsandboxed"
sandbox = false

[steps.optin]
run = "echo run >> counter/optin"
secrets = ["TEST_SECRET_VALUE"]
cache = true
"#;
    let w = Workspace::new(plan, &[]);
    std::fs::create_dir_all(w.path().join("counter")).unwrap();
    let run = |w: &Workspace| {
        let out = support::ci_intel()
            .args(["run", "plan.toml", "--cache-dir"])
            .arg(w.cache_dir())
            .current_dir(w.path())
            .env("TEST_SECRET_VALUE", "s3cr3t-value-for-the-test")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    run(&w);
    run(&w);
    assert_eq!(w.runs_of("off"), 2, "cache = false");
    assert_eq!(w.runs_of("secret"), 2, "a step with secrets");
    assert_eq!(w.runs_of("unsandboxed"), 2, "sandbox = false");
    assert_eq!(w.runs_of("optin"), 1, "secrets with cache = true opt in");
}

#[test]
fn a_pull_request_run_does_not_poison_the_trusted_namespace() {
    let w = workspace();
    // A pull request's run stores in its own namespace...
    w.run(&["--cache-namespace", "fork-pr-7"]).ok();
    assert_eq!(w.runs_of("build"), 1);
    // ...which a trusted run does not read.
    std::fs::remove_dir_all(w.path().join("out")).unwrap();
    let trusted = w.run(&[]);
    assert_eq!(trusted.status("build"), "succeeded", "{}", trusted.show());
    assert_eq!(w.runs_of("build"), 2);
    // The pull request reads the trusted entry now.
    std::fs::remove_dir_all(w.path().join("out")).unwrap();
    let pr = w.run(&["--cache-namespace", "fork-pr-7"]);
    assert_eq!(pr.status("build"), "cached", "{}", pr.show());
}

#[test]
fn on_ci_without_a_key_nothing_is_stored_and_the_run_says_so_once() {
    // On a CI runner a cache does not trust the machine's own key on first use: the run
    // works, stores nothing, and says once (in plain text, stderr is not a terminal) how
    // to give it a key.
    let w = workspace();
    let ci = [("CI", "true")];
    let first = w.run_env(&[], &ci);
    first.ok();
    let stderr = String::from_utf8_lossy(&first.out.stderr);
    assert_eq!(
        stderr.matches("results are not cached").count(),
        1,
        "{}",
        first.show()
    );
    assert!(stderr.contains("CI_INTEL_CACHE_KEY"), "{}", first.show());
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes: {}",
        first.show()
    );
    let second = w.run_env(&[], &ci);
    assert_eq!(second.status("build"), "succeeded", "{}", second.show());
    assert_eq!(w.runs_of("build"), 2);
    // Given a key the cache trusts, the same runner stores and restores.
    let keys = w.path().join("keys");
    let keygen = support::ci_intel()
        .args(["cache", "keygen", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let trusted = w.cache_dir().join("keys").join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    let public = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pub"))
        .expect("keygen writes a .pub file");
    std::fs::copy(&public, trusted.join("ci.pub")).unwrap();
    let private = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_none_or(|e| e != "pub"))
        .expect("keygen writes a private key");
    let key = private.to_str().unwrap();
    let with_key = [("CI", "true"), ("CI_INTEL_CACHE_KEY", key)];
    w.run_env(&[], &with_key).ok();
    let restored = w.run_env(&[], &with_key);
    assert_eq!(restored.status("build"), "cached", "{}", restored.show());
    assert_eq!(w.runs_of("build"), 3);
}

#[test]
fn source_date_epoch_from_the_environment_is_the_steps_and_part_of_the_key() {
    let plan = r#"
version = 1
[sandbox]
write = ["counter"]
[steps.stamp]
run = "echo run >> counter/stamp; echo epoch=$SOURCE_DATE_EPOCH"
"#;
    let w = Workspace::new(plan, &[]);
    std::fs::create_dir_all(w.path().join("counter")).unwrap();
    let first = w.run_env(&[], &[("SOURCE_DATE_EPOCH", "1700000000")]);
    first.ok();
    assert!(
        first.stdout.contains("[stamp] epoch=1700000000"),
        "{}",
        first.show()
    );
    let same = w.run_env(&[], &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert_eq!(same.status("stamp"), "cached", "{}", same.show());
    let other = w.run_env(&[], &[("SOURCE_DATE_EPOCH", "1700000001")]);
    assert_eq!(other.status("stamp"), "succeeded", "{}", other.show());
    assert!(
        other.stdout.contains("[stamp] epoch=1700000001"),
        "{}",
        other.show()
    );
    assert_eq!(w.runs_of("stamp"), 2);
}

#[test]
fn the_order_of_input_globs_does_not_change_the_key() {
    let plan = |inputs: &str| {
        format!(
            r#"
version = 1
[sandbox]
write = ["counter"]
[steps.cat]
run = "echo run >> counter/cat; cat a/x b/y"
inputs = {inputs}
"#
        )
    };
    let w = Workspace::new(
        &plan(r#"["a/*", "b/*"]"#),
        &[("a/x", "1\n"), ("b/y", "2\n")],
    );
    std::fs::create_dir_all(w.path().join("counter")).unwrap();
    w.run(&[]).ok();
    w.write("plan.toml", &plan(r#"["b/*", "a/*"]"#));
    let again = w.run(&[]);
    assert_eq!(again.status("cat"), "cached", "{}", again.show());
    // A glob that shows one more file is another key.
    w.write("c/z", "3\n");
    w.write("plan.toml", &plan(r#"["b/*", "a/*", "c/*"]"#));
    let more = w.run(&[]);
    assert_eq!(more.status("cat"), "succeeded", "{}", more.show());
    assert_eq!(w.runs_of("cat"), 2);
}
