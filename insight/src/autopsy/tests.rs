use proptest::prelude::*;

use super::*;

fn cx(exit_code: Option<i32>) -> StepContext<'static> {
    StepContext {
        step: "build",
        plan: "ci/plan.toml",
        exit_code,
        signal: None,
        timed_out: false,
        secrets: &[],
    }
}

fn top(log: &str, exit_code: i32) -> Finding {
    Rules::builtin()
        .classify(log, &cx(Some(exit_code)))
        .into_iter()
        .next()
        .expect("a failed step has at least one finding")
}

fn rule_file(rule: &str) -> String {
    format!("version = 1\n\n[[rule]]\n{rule}\n")
}

const GOOD_RULE: &str = r#"id = "demo.error"
tool = "demo"
name = "demo error"
severity = "error"
pattern = '^demo: (?P<message>.+)'
suggestion = "fix it"
docs = "https://example.com/docs""#;

// ---------------------------------------------------------------------------------------
// The rule file

#[test]
fn the_builtin_rule_file_parses() {
    let rules = Rules::parse(include_str!("../../rules/autopsy.toml")).unwrap();
    assert!(rules.len() >= 40, "only {} rules", rules.len());
    assert!(std::ptr::eq(Rules::builtin(), Rules::builtin()));
}

#[test]
fn every_builtin_rule_has_docs_and_a_suggestion() {
    for rule in &Rules::builtin().rules {
        let (docs, _) = rule.docs.render(|_| None);
        assert!(
            docs.starts_with("https://") || docs.starts_with("docs/"),
            "{}: docs {docs:?}",
            rule.id
        );
        if let Some(f) = &rule.docs_fallback {
            assert!(f.render(|_| None).0.starts_with("https://"), "{}", rule.id);
        }
        let (suggestion, _) = rule.suggestion.render(|_| Some("x"));
        assert!(
            suggestion.len() > 10,
            "{}: suggestion {suggestion:?}",
            rule.id
        );
        assert!(
            !suggestion.starts_with(char::is_uppercase),
            "{}: {suggestion:?}",
            rule.id
        );
        assert!(
            !rule.tool.is_empty() && rule.id.contains('.'),
            "{}",
            rule.id
        );
    }
}

#[test]
fn builtin_rules_cover_the_documented_categories() {
    let ids: Vec<&str> = Rules::builtin().ids().collect();
    for id in [
        "pytest.failed",
        "rustc.error",
        "cargo.test",
        "clippy.denied",
        "cargo.locked",
        "rustc.linker",
        "go.build",
        "go.test",
        "jest.failed",
        "npm.missing_script",
        "pnpm.lockfile",
        "maven.compile",
        "gradle.compile",
        "cc.error",
        "ld.undefined",
        "ld.missing_lib",
        "docker.daemon",
        "docker.build",
        "docker.pull_denied",
        "terraform.init",
        "terraform.error",
        "oom.killed",
        "oom.out_of_memory",
        "timeout.step",
        "disk.full",
        "network.egress_denied",
        "network.dns",
        "command.not_found",
    ] {
        assert!(ids.contains(&id), "no rule {id}");
    }
}

#[test]
fn a_bad_regex_is_an_error_naming_the_rule() {
    let file = rule_file(&GOOD_RULE.replace(
        r"pattern = '^demo: (?P<message>.+)'",
        r"pattern = '^demo: (?P<message>.+'",
    ));
    let err = Rules::parse(&file).unwrap_err();
    assert!(
        matches!(err, RulesError::Regex { ref id, .. } if id == "demo.error"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("rule `demo.error`") && text.contains("pattern 1"),
        "{text}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the regex error is chained"
    );
}

#[test]
fn invalid_rules_are_rejected_with_their_id_and_the_problem() {
    let cases = [
        (GOOD_RULE.replace("fix it", "Fix it"), "lowercase"),
        (
            GOOD_RULE.replace("fix it", "fix {nothing}"),
            "{nothing}, which no pattern captures",
        ),
        (
            GOOD_RULE.replace("https://example.com/docs", "http://example.com/docs"),
            "https:// URL",
        ),
        (
            GOOD_RULE.replace("https://example.com/docs", "https://example.com/{message}"),
            "needs a `docs_fallback`",
        ),
        (
            GOOD_RULE.replace(r"'^demo: (?P<message>.+)'", "'x*'"),
            "matches the empty string",
        ),
        (
            GOOD_RULE.replace("demo.error", "Demo"),
            "lowercase `tool.kind`",
        ),
        (format!("{GOOD_RULE}\npriority = 5000"), "priority 5000"),
    ];
    for (rule, expected) in cases {
        let err = Rules::parse(&rule_file(&rule)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "{text:?} does not say {expected:?}"
        );
        assert!(
            text.starts_with("rule `"),
            "{text:?} does not name the rule"
        );
    }
    let twice = format!("{}\n[[rule]]\n{GOOD_RULE}\n", rule_file(GOOD_RULE));
    assert_eq!(
        Rules::parse(&twice).unwrap_err().to_string(),
        "rule `demo.error` is defined more than once"
    );
    let unknown = rule_file(&format!("{GOOD_RULE}\npatern = 'x'"));
    let err = Rules::parse(&unknown).unwrap_err();
    assert!(matches!(err, RulesError::Toml(_)), "{err:?}");
    assert!(matches!(
        Rules::parse("version = 2").unwrap_err(),
        RulesError::Version(2)
    ));
}

#[test]
fn a_parsed_rule_file_classifies() {
    let rules = Rules::parse(&rule_file(GOOD_RULE)).unwrap();
    let f = rules.classify("ok\ndemo: it broke\n", &cx(Some(1)));
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].rule.as_str(), f[0].message.as_str()),
        ("demo.error", "it broke")
    );
}

// ---------------------------------------------------------------------------------------
// Locations

#[test]
fn rustc_errors_give_file_line_and_the_error_codes_page() {
    let log = "   Compiling demo v0.1.0 (/src/demo)\n\
               error[E0425]: cannot find value `totl` in this scope\n \
               --> src/main.rs:3:5\n  |\n3 |     totl\n  |     ^^^^\n\n\
               error: could not compile `demo` (bin \"demo\") due to 1 previous error\n";
    let f = top(log, 101);
    assert_eq!(f.rule, "rustc.error");
    assert_eq!(f.file.as_deref(), Some("src/main.rs"));
    assert_eq!(f.line, Some(3));
    assert_eq!(f.pattern, "rustc error E0425");
    assert_eq!(f.message, "cannot find value `totl` in this scope");
    assert_eq!(
        f.docs_uri,
        "https://doc.rust-lang.org/error_codes/E0425.html"
    );
    assert_eq!(f.severity, Severity::Error);
    let all = Rules::builtin().classify(log, &cx(Some(101)));
    assert_eq!(
        all.len(),
        1,
        "the could-not-compile summary is not repeated: {all:#?}"
    );
}

#[test]
fn a_rustc_error_without_a_code_links_the_error_index() {
    let f = top(
        "error: unused variable: `x`\n --> src/lib.rs:4:9\n  |\n",
        101,
    );
    assert_eq!((f.rule.as_str(), f.line), ("rustc.error", Some(4)));
    assert_eq!(f.pattern, "rustc error");
    assert_eq!(f.docs_uri, "https://doc.rust-lang.org/error_codes/");
}

#[test]
fn gcc_errors_give_file_and_line() {
    let f = top(
        "main.c: In function 'main':\nmain.c:4:5: error: 'count' undeclared (first use in this function)\n",
        1,
    );
    assert_eq!(f.rule, "cc.error");
    assert_eq!((f.file.as_deref(), f.line), (Some("main.c"), Some(4)));
    assert_eq!(f.message, "'count' undeclared (first use in this function)");
}

#[test]
fn pytest_failures_give_file_and_line() {
    let log = "=================================== FAILURES ===================================\n\
               ___________________________________ test_x ____________________________________\n\n    \
               def test_x():\n>       assert f() == 2\nE       assert 1 == 2\n\n\
               tests/test_x.py:12: AssertionError\n\
               =========================== short test summary info ============================\n\
               FAILED tests/test_x.py::test_x - assert 1 == 2\n";
    let f = top(log, 1);
    assert_eq!(f.rule, "pytest.failed");
    assert_eq!(
        (f.file.as_deref(), f.line),
        (Some("tests/test_x.py"), Some(12))
    );
    assert_eq!(f.message, "assert 1 == 2");
}

#[test]
fn tsc_errors_give_file_and_line_in_both_formats() {
    let f = top(
        "src/index.ts(4,26): error TS2322: Type 'string' is not assignable to type 'number'.\n",
        2,
    );
    assert_eq!(f.rule, "tsc.error");
    assert_eq!((f.file.as_deref(), f.line), (Some("src/index.ts"), Some(4)));
    assert_eq!(f.pattern, "TypeScript error TS2322");
    let f = top(
        "src/app.ts:1:28 - error TS2307: Cannot find module './config'.\n",
        2,
    );
    assert_eq!((f.file.as_deref(), f.line), (Some("src/app.ts"), Some(1)));
}

#[test]
fn jest_failures_take_the_first_frame_outside_node_modules() {
    let log = "FAIL src/parse.test.js\n  ● parseConfig › reads the port\n\n    \
               TypeError: Cannot read properties of undefined (reading 'port')\n\n      \
               at Object.<anonymous> (node_modules/lib/index.js:9:1)\n      \
               at port (src/parse.js:3:22)\n      \
               at Object.parseConfig (src/parse.test.js:5:12)\n\n\
               Tests:       1 failed, 1 total\n";
    let f = top(log, 1);
    assert_eq!(f.rule, "jest.failed");
    assert_eq!((f.file.as_deref(), f.line), (Some("src/parse.js"), Some(3)));
    assert_eq!(
        f.message,
        "TypeError: Cannot read properties of undefined (reading 'port')"
    );
    assert_eq!(f.pattern, "test failed: parseConfig › reads the port");
}

#[test]
fn terraform_errors_give_file_and_line_with_or_without_boxes() {
    let plain = "\nError: Unsupported argument\n\n  on main.tf line 3, in resource \"x\" \"y\":\n   3:   foo = 1\n";
    let f = top(plain, 1);
    assert_eq!(f.rule, "terraform.error");
    assert_eq!((f.file.as_deref(), f.line), (Some("main.tf"), Some(3)));
    assert_eq!(f.message, "Unsupported argument");
    let boxed = "╷\n│ Error: Reference to undeclared resource\n│ \n│   on main.tf line 2, in output \"b\":\n│    2:   value = x.y\n╵\n";
    let f = top(boxed, 1);
    assert_eq!((f.rule.as_str(), f.line), ("terraform.error", Some(2)));
}

#[test]
fn docker_build_and_pull_failures_are_recognised() {
    let build = "#5 [2/2] RUN make\n#5 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n\
                 Dockerfile:3\n--------------------\n   2 |     FROM alpine\n   3 | >>> RUN make\n--------------------\n\
                 ERROR: failed to solve: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n";
    let f = top(build, 1);
    assert_eq!(f.rule, "docker.build");
    assert_eq!((f.file.as_deref(), f.line), (Some("Dockerfile"), Some(3)));
    let pull = "Unable to find image 'acme/private:1' locally\n\
                docker: Error response from daemon: pull access denied for acme/private, repository does not exist or may require 'docker login'.\n";
    assert_eq!(top(pull, 125).rule, "docker.pull_denied");
}

// ---------------------------------------------------------------------------------------
// Ranking and the generic finding

#[test]
fn a_specific_rule_beats_the_exit_code() {
    let f = Rules::builtin().classify(
        "error[E0308]: mismatched types\n --> src/lib.rs:2:21\n",
        &cx(Some(101)),
    );
    assert_eq!(f.len(), 1);
    assert!(f[0].is_specific());
}

#[test]
fn an_unrecognised_failure_gets_one_generic_finding() {
    let f = Rules::builtin().classify("deploying\nlock held by release 41\n", &cx(Some(3)));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, GENERIC_RULE);
    assert!(!f[0].is_specific());
    assert_eq!(f[0].pattern, "exit code 3");
    assert_eq!(f[0].message, "lock held by release 41");
    assert_eq!(f[0].repro, "ci-intel run ci/plan.toml --step build");
    let killed = StepContext {
        signal: Some(11),
        exit_code: None,
        ..cx(None)
    };
    assert_eq!(
        Rules::builtin().classify("", &killed)[0].pattern,
        "killed by signal 11"
    );
}

#[test]
fn a_step_that_succeeded_gets_no_generic_finding() {
    assert!(
        Rules::builtin()
            .classify("all good\n", &cx(Some(0)))
            .is_empty()
    );
}

#[test]
fn the_step_timeout_outranks_what_the_log_shows() {
    let timed_out = StepContext {
        timed_out: true,
        signal: Some(15),
        exit_code: None,
        ..cx(None)
    };
    let f = Rules::builtin().classify(
        "test tests::slow ... FAILED\nwaiting for the lock\n",
        &timed_out,
    );
    assert_eq!(f[0].rule, "timeout.step");
    assert_eq!(f[0].message, "waiting for the lock");
    let f = Rules::builtin().classify("", &timed_out);
    assert_eq!(f[0].message, "the step was stopped by its timeout");
}

#[test]
fn sigkill_without_output_is_classified_as_oom() {
    let killed = StepContext {
        signal: Some(9),
        exit_code: None,
        ..cx(None)
    };
    let f = Rules::builtin().classify("", &killed);
    assert_eq!(f[0].rule, "oom.killed");
    assert_eq!(f[0].message, "the process was killed with SIGKILL");
}

#[test]
fn the_same_rule_file_and_line_is_reported_once() {
    let line = "main.c:4:5: error: 'count' undeclared\n";
    let f = Rules::builtin().classify(&line.repeat(3), &cx(Some(1)));
    assert_eq!(f.len(), 1);
}

#[test]
fn findings_are_capped_and_keep_log_order_within_a_priority() {
    let log: String = (1..=30)
        .map(|i| format!("main.c:{i}:1: error: problem {i}\n"))
        .collect();
    let f = Rules::builtin().classify(&log, &cx(Some(1)));
    assert_eq!(f.len(), MAX_FINDINGS);
    let lines: Vec<u32> = f.iter().filter_map(|f| f.line).collect();
    assert_eq!(lines, (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_refused_local_connection_is_not_the_network() {
    let f = top(
        "curl: (7) Failed to connect to localhost port 5432 after 0 ms: Couldn't connect to server\n",
        7,
    );
    assert_eq!(f.rule, GENERIC_RULE);
    let f = top(
        "curl: (7) Failed to connect to 192.0.2.1 port 443 after 0 ms: Couldn't connect to server\n",
        7,
    );
    assert_eq!(f.rule, "network.unreachable");
}

#[test]
fn messages_are_bounded() {
    let long = format!("main.c:1:1: error: {}\n", "x".repeat(5000));
    let f = top(&long, 1);
    assert_eq!(f.message.chars().count(), MAX_MESSAGE_CHARS);
    assert!(f.message.ends_with('…'));
}

#[test]
fn only_the_end_of_a_long_log_is_scanned() {
    let filler = "building...\n".repeat(MAX_SCAN_BYTES / 12 + 10);
    let early = format!("main.c:1:1: error: early\n{filler}");
    assert_eq!(top(&early, 1).rule, GENERIC_RULE);
    let late = format!("{filler}main.c:2:1: error: late\n");
    assert_eq!(top(&late, 1).line, Some(2));
}

#[test]
fn colours_and_carriage_returns_do_not_hide_errors() {
    let log = "progress 10%\rprogress 100%\r\n\x1b[0m\x1b[1m\x1b[91merror[E0425]\x1b[0m\x1b[1m: cannot find value\x1b[0m\r\n  \x1b[1m\x1b[94m--> \x1b[0msrc/main.rs:3:5\r\n";
    let f = top(log, 101);
    assert_eq!((f.rule.as_str(), f.line), ("rustc.error", Some(3)));
    assert_eq!(f.file.as_deref(), Some("src/main.rs"));
}

#[test]
fn secrets_are_redacted_before_anything_is_quoted() {
    let secrets = ["hunter2-value"];
    let c = StepContext {
        secrets: &secrets,
        ..cx(Some(1))
    };
    let f = Rules::builtin().classify(
        "main.c:1:1: error: bad token hunter2-value and ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n",
        &c,
    );
    assert_eq!(f[0].message, "bad token [redacted] and [redacted]");
}

#[test]
fn suggestions_use_what_the_log_captured() {
    let f = top("/bin/sh: 1: frobnicate: not found\n", 127);
    assert_eq!(f.rule, "command.not_found");
    assert_eq!(f.pattern, "command not found: frobnicate");
    assert!(
        f.suggestion.starts_with("install `frobnicate`"),
        "{}",
        f.suggestion
    );
    let f = top(
        "--- ci-intel: egress_denied: crates.io:443 (not on the allowlist) ---\n",
        56,
    );
    assert_eq!(f.pattern, "egress denied to crates.io:443");
    assert!(
        f.suggestion.contains("\"crates.io:443\""),
        "{}",
        f.suggestion
    );
    assert_eq!(
        f.docs_uri,
        concat!(
            env!("CARGO_PKG_REPOSITORY"),
            "/blob/main/docs/sandbox.md#network"
        )
    );
}

#[test]
fn the_repro_command_is_quoted_for_a_shell() {
    let c = StepContext {
        plan: "my plans/ci.toml",
        step: "it's",
        ..cx(Some(1))
    };
    assert_eq!(
        Rules::builtin().classify("x\n", &c)[0].repro,
        r"ci-intel run 'my plans/ci.toml' --step 'it'\''s'"
    );
}

#[test]
fn findings_serialize_with_lowercase_severity() {
    let f = top("main.c:4:5: error: boom\n", 1);
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["severity"], "error");
    assert_eq!(json["line"], 4);
    let back: Finding = serde_json::from_value(json).unwrap();
    assert_eq!(back, f);
}

// ---------------------------------------------------------------------------------------
// Redaction

#[test]
fn literal_secrets_are_redacted() {
    assert_eq!(
        redact("a s3cr3t-v4lue b s3cr3t c", &["s3cr3t-v4lue", "s3cr3t"]),
        "a [redacted] b [redacted] c",
        "longest first: a secret that holds another is masked whole"
    );
    // Each line of a multi-line secret, as it is.
    assert_eq!(
        redact("one\ntwo\n", &["one\ntwo"]),
        "[redacted]\n[redacted]\n"
    );
}

#[test]
fn each_kind_of_credential_is_redacted() {
    let cases = [
        (
            "token ghp_0123456789abcdefghijklmnopqrstuvwxyzAB end",
            "token [redacted] end",
        ),
        ("gho_0123456789abcdefghijklmnopqrstuvwxyzAB", "[redacted]"),
        (
            "x ghs_0123456789abcdefghijklmnopqrstuvwxyzAB.",
            "x [redacted].",
        ),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "[redacted]",
        ),
        ("key AKIAIOSFODNN7EXAMPLE here", "key [redacted] here"),
        ("hook xoxb-1234567890-abcdefghij", "hook [redacted]"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc",
            "Authorization: Bearer [redacted]",
        ),
        (
            "authorization: Basic dXNlcjpwYXNz",
            "authorization: Basic [redacted]",
        ),
        (
            "git clone https://user:hunter2pass@example.com/repo.git",
            "git clone https://user:[redacted]@example.com/repo.git",
        ),
        (
            "GET https://api.example.com/v1?user=ci&token=abc123def&x=1",
            "GET https://api.example.com/v1?user=ci&token=[redacted]&x=1",
        ),
        ("password=hunter2 next", "password=[redacted] next"),
        ("DB_PASSWORD='p a s s' rest", "DB_PASSWORD=[redacted] rest"),
        ("CI_JOB_TOKEN=glcbt-abc", "CI_JOB_TOKEN=[redacted]"),
        (
            r#"{"api_key": "k-123", "name": "x"}"#,
            r#"{"api_key": "[redacted]", "name": "x"}"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(redact(input, &[]), expected, "{input}");
    }
    let pem = "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabcdef==\n-----END RSA PRIVATE KEY-----\nafter\n";
    assert_eq!(redact(pem, &[]), "before\n[redacted]\nafter\n");
    let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n";
    assert!(!redact(cut, &[]).contains("b3BlbnNz"));
}

#[test]
fn ordinary_text_is_left_alone() {
    for text in [
        "tokens=5 max_tokens=3 token_count=2",
        "Compiling errors v0.1.0",
        "PWD=/work HOME=/home/ci",
        "the bearer of bad news",
        "https://example.com/path?page=2",
    ] {
        assert_eq!(redact(text, &[]), text);
    }
}

proptest! {
    #[test]
    fn redact_never_panics_and_leaves_no_secret(
        text in "\\PC{0,200}",
        secrets in proptest::collection::vec("[^\\[\\]]{1,24}", 0..4),
        insert_at in 0usize..200,
    ) {
        // Put each secret into the text somewhere, whole.
        let mut log = text.clone();
        for s in &secrets {
            let mut at = insert_at.min(log.len());
            while !log.is_char_boundary(at) {
                at -= 1;
            }
            log.insert_str(at, s);
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let out = redact(&log, &refs);
        for s in secrets.iter().filter(|s| s.len() >= 4 && !s.contains('\n')) {
            for piece in out.split(REDACTED) {
                prop_assert!(!piece.contains(s.as_str()), "{s:?} left in {out:?}");
            }
        }
    }

    #[test]
    fn classify_never_panics(log in "\\PC{0,400}", exit in proptest::option::of(-1i32..256)) {
        let f = Rules::builtin().classify(&log, &cx(exit));
        prop_assert!(f.len() <= MAX_FINDINGS);
        if exit != Some(0) {
            prop_assert!(!f.is_empty());
        }
    }
}

#[test]
fn a_location_window_ending_inside_a_character_is_cut_before_it() {
    // Found by the autopsy_classify fuzz target: the window after a match is a byte
    // count, and it may end in the middle of a multi-byte character.
    let rules = Rules::parse(&rule_file(&format!(
        "{GOOD_RULE}\nlocation = '^  at (?P<file>[a-z]+\\.c):(?P<line>\\d+)$'"
    )))
    .unwrap();
    for pad in 0..4 {
        let mut log = String::from("demo: broken\n");
        let end = log.len() - 1;
        log.push_str(&"x".repeat(LOCATION_WINDOW - (log.len() - end) - pad));
        log.push_str("ééé\n  at main.c:3\n");
        let found = rules.classify(&log, &cx(Some(1)));
        assert_eq!(found[0].rule, "demo.error", "pad {pad}");
    }
}
