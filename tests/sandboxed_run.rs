//! `ci-intel run` with sandboxed steps, end to end: what a step sees, output collection,
//! egress through the proxy, the secret sweep and the opt-outs.
//!
//! Needs user, mount, pid and network namespaces and Landlock, which this project's CI
//! hosts provide (`ci-intel doctor` says what a host lacks).
#[path = "support/origin.rs"]
mod origin;
mod support;

struct Ran {
    code: Option<i32>,
    stdout: String,
    log: String,
}

/// Writes `files` and `plan.toml` into a fresh directory and runs the plan.
fn run_plan(plan: &str, files: &[(&str, &str)], extra: &[&str]) -> (tempfile::TempDir, Ran) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(dir.path().join("plan.toml"), plan).unwrap();
    let out = support::ci_intel()
        .args(["run", "plan.toml"])
        .args(extra)
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", dir.path().join(".test-cache"))
        .env_remove("CI_INTEL_LOG")
        .output()
        .unwrap();
    // Every step log of the run, for assertions on notes.
    let mut log = String::new();
    let runs = dir.path().join(".ci-intel/runs");
    for run in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(run.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "log") {
                log.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
    }
    let ran = Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        log,
    };
    (dir, ran)
}

fn show(r: &Ran) -> String {
    format!("exit {:?}\n{}\n--- logs\n{}", r.code, r.stdout, r.log)
}

#[test]
fn a_step_sees_its_inputs_and_needs_outputs_and_nothing_else() {
    let plan = r#"version = 1

[steps.gen]
run = """
cat src/in.txt > out/copy.txt
test ! -e secret.txt && echo "gen: secret.txt is invisible"
(echo x > src/in.txt) 2>/dev/null || echo "gen: inputs are read-only"
(echo x > stray.txt) 2>/dev/null || echo "gen: the root is read-only"
"""
inputs = ["src/*.txt"]
outputs = ["out/"]

[steps.use]
needs = ["gen"]
run = "cat out/copy.txt; test ! -e src/in.txt && echo 'use: undeclared inputs are invisible'"

[steps.lonely]
run = "test ! -e out && echo 'lonely: outputs of steps it does not need are invisible'"
"#;
    let (dir, r) = run_plan(
        plan,
        &[
            ("src/in.txt", "hello from the input\n"),
            ("secret.txt", "no"),
        ],
        &["--jobs", "1"],
    );
    assert_eq!(r.code, Some(0), "{}", show(&r));
    for line in [
        "gen: secret.txt is invisible",
        "gen: inputs are read-only",
        "gen: the root is read-only",
        "[use] hello from the input",
        "use: undeclared inputs are invisible",
        "lonely: outputs of steps it does not need are invisible",
    ] {
        assert!(r.stdout.contains(line), "missing {line:?} in\n{}", show(&r));
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/copy.txt")).unwrap(),
        "hello from the input\n"
    );
    assert!(!dir.path().join("stray.txt").exists());
    assert!(!r.stdout.contains("sandbox: off"), "{}", r.stdout);
}

#[test]
fn an_output_symlink_out_of_the_output_fails_the_step_and_is_not_collected() {
    let plan = r#"version = 1

[steps.evil]
run = "ln -s /etc/passwd out/evil; echo ok > out/fine"
outputs = ["out/"]
"#;
    let (dir, r) = run_plan(plan, &[], &[]);
    assert_eq!(r.code, Some(1), "{}", show(&r));
    assert!(
        r.stdout
            .contains("output out/evil is a symbolic link to /etc/passwd, outside the output"),
        "{}",
        show(&r)
    );
    assert!(!dir.path().join("out/evil").exists());
    assert!(std::fs::symlink_metadata(dir.path().join("out/evil")).is_err());
}

#[test]
fn a_declared_output_that_is_not_produced_fails_the_step() {
    let plan = "version = 1\n\n[steps.lazy]\nrun = \"true\"\noutputs = [\"build/out.bin\"]\n";
    let (_dir, r) = run_plan(plan, &[], &[]);
    assert_eq!(r.code, Some(1), "{}", show(&r));
    assert!(
        r.stdout
            .contains("declared output build/out.bin was not produced"),
        "{}",
        show(&r)
    );
}

#[test]
fn opting_out_is_explicit_and_shown_in_the_summary() {
    let plan = "version = 1\n\n[steps.host]\nrun = \"touch marker\"\nsandbox = false\n\n[steps.boxed]\nrun = \"true\"\n";
    let (dir, r) = run_plan(plan, &[], &[]);
    assert_eq!(r.code, Some(0), "{}", show(&r));
    assert!(dir.path().join("marker").exists());
    assert!(
        r.stdout
            .contains("sandbox: off for host (sandbox = false)\n"),
        "{}",
        r.stdout
    );
    let plan = "version = 1\n\n[steps.a]\nrun = \"touch marker2\"\n";
    let (dir, r) = run_plan(plan, &[], &["--no-sandbox"]);
    assert_eq!(r.code, Some(0), "{}", show(&r));
    assert!(dir.path().join("marker2").exists());
    assert!(
        r.stdout
            .contains("sandbox: off for every step (--no-sandbox)\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn an_undeclared_secret_in_the_declared_env_fails_the_step_without_its_value() {
    let token = format!("ghp_{}", "A1b2C3d4E5".repeat(4).get(..36).unwrap());
    let plan = format!(
        "version = 1\n\n[steps.leaky]\nrun = \"touch ran\"\nenv = {{ API_TOKEN = \"{token}\" }}\n"
    );
    let (dir, r) = run_plan(&plan, &[], &[]);
    assert_eq!(r.code, Some(1), "{}", show(&r));
    assert!(r.stdout.contains("`API_TOKEN`"), "{}", show(&r));
    assert!(
        !r.stdout.contains(&token) && !r.log.contains(&token),
        "{}",
        show(&r)
    );
    assert!(!dir.path().join("ran").exists());
}

#[test]
fn egress_goes_through_the_allowlist_proxy_and_denials_are_events() {
    let port = origin::start(b"hello, step\n");
    let plan = format!(
        r#"version = 1

[steps.fetch]
run = """
curl -sS --max-time 10 --noproxy '' http://127.0.0.1:{port}/ -o out/page.txt
curl -sS --max-time 10 --noproxy '*' http://127.0.0.1:{port}/ 2>&1 || echo "direct: refused"
curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}\n' http://denied.invalid/ || true
"""
outputs = ["out/"]
sandbox = {{ network = "allowlist", allow = ["127.0.0.1:{port}"] }}
"#
    );
    let (dir, r) = run_plan(&plan, &[], &[]);
    assert_eq!(r.code, Some(0), "{}", show(&r));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/page.txt")).unwrap(),
        "hello, step\n"
    );
    assert!(r.stdout.contains("direct: refused"), "{}", show(&r));
    assert!(r.stdout.contains("[fetch] 403"), "{}", show(&r));
    assert!(
        r.log.contains("egress_denied: denied.invalid:80"),
        "{}",
        show(&r)
    );
    assert!(
        r.log.contains(&format!("egress allowed: 127.0.0.1:{port}")),
        "{}",
        show(&r)
    );
}

#[test]
fn a_step_can_run_from_a_root_under_dev_shm() {
    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
    std::fs::write(
        dir.path().join("plan.toml"),
        "version = 1\n\n[steps.a]\nrun = \"pwd\"\n",
    )
    .unwrap();
    let out = support::ci_intel()
        .args(["run", "plan.toml"])
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", dir.path().join(".test-cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let real = dir.path().canonicalize().unwrap();
    assert!(
        stdout.contains(&format!("[a] {}", real.display())),
        "{stdout}"
    );
}

#[test]
fn a_sandbox_that_cannot_be_built_fails_the_step_and_says_how_to_fix_it() {
    let plan = "version = 1\n\n[steps.a]\nrun = \"true\"\nsandbox = { read = [\"/nonexistent/ci-intel-sdk\"] }\n";
    let (_dir, r) = run_plan(plan, &[], &[]);
    assert_eq!(r.code, Some(1), "{}", show(&r));
    assert!(
        r.stdout
            .contains("sandbox path /nonexistent/ci-intel-sdk does not exist"),
        "{}",
        show(&r)
    );
    assert!(r.stdout.contains("`ci-intel doctor`"), "{}", show(&r));
    assert!(r.stdout.contains("exit code 125"), "{}", show(&r));
}
