//! What a run leaves behind, end to end: the run record (state directory and
//! `--telemetry`, v1.3 and v1.2), the autopsy of a real compiler failure, JUnit XML, the
//! GitHub step summary, annotations and log groups, and OpenTelemetry spans received by an
//! in-process OTLP/HTTP collector.
#[path = "support/records.rs"]
mod records;
mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::Output;
use std::sync::mpsc;

/// A git checkout with a plan: a step that builds, one that fails to compile real C, one
/// that is denied egress, one that is skipped.
struct Checkout {
    dir: tempfile::TempDir,
}

const PLAN: &str = r#"version = 1
name = "insight"

[steps.build]
run = "mkdir -p out && echo built > out/app.txt"
outputs = ["out/app.txt"]

[steps.fetch]
needs = ["build"]
run = "curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' http://denied.invalid/ || true"
sandbox = { network = "allowlist", allow = ["allowed.invalid:443"] }

[steps.compile]
needs = ["build"]
run = "cc -Wall -c src/broken.c -o /tmp/broken.o"
inputs = ["src/broken.c"]

[steps.package]
needs = ["compile"]
run = "true"
"#;

const BROKEN_C: &str = "int main(void) {\n    return undeclared_thing;\n}\n";

impl Checkout {
    fn new() -> Checkout {
        for tool in ["git", "cc", "curl"] {
            assert!(
                std::process::Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .unwrap()
                    .status
                    .success(),
                "this test needs `{tool}` on the host (apt-get install git gcc curl)"
            );
        }
        let c = Checkout {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(c.path().join("plan.toml"), PLAN).unwrap();
        std::fs::create_dir_all(c.path().join("src")).unwrap();
        std::fs::write(c.path().join("src/broken.c"), BROKEN_C).unwrap();
        c.git(&["init", "-q", "-b", "main"]);
        c.git(&[
            "remote",
            "add",
            "origin",
            "https://example.invalid/org/app.git",
        ]);
        c.git(&["add", "."]);
        c.git(&["commit", "-q", "-m", "start"]);
        c
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    fn head(&self) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn run(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        support::ci_intel()
            .args(["run", "plan.toml", "-k", "--cache-dir"])
            .arg(self.path().join(".cache"))
            .args(extra)
            .envs(env.iter().copied())
            .current_dir(self.path())
            .output()
            .unwrap()
    }

    fn state_records(&self) -> Vec<serde_json::Value> {
        records::read_valid(&self.path().join(".ci-intel/runs.ndjson"))
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

fn job<'a>(record: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    record["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("no job {id} in {record}"))
}

#[test]
fn a_run_writes_a_valid_record_of_what_happened() {
    let c = Checkout::new();
    let tel = c.path().join("telemetry.ndjson");
    let first = c.run(&["--telemetry", tel.to_str().unwrap()], &[]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let second = c.run(&[], &[]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));

    let runs = c.state_records();
    assert_eq!(runs.len(), 2, "one record per run in the state directory");
    let given = records::read_valid(&tel);
    assert_eq!(given.len(), 1);
    assert_eq!(given[0], runs[0], "--telemetry gets the same record");
    let r = &runs[0];
    assert_eq!(r["schema"], "pipeline_run.v1.3");
    assert_ne!(runs[0]["run_id"], runs[1]["run_id"]);
    assert_eq!(r["repo"], "org/app");
    assert_eq!(r["branch"], "main");
    assert_eq!(r["commit_sha"], c.head());
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 1);
    assert_eq!(r["plan"], "insight");
    assert_eq!(job(r, "build")["status"], "success");
    assert_eq!(job(r, "compile")["status"], "failed");
    assert_eq!(job(r, "compile")["exit_code"], 1);
    assert_eq!(job(r, "package")["status"], "skipped");
    assert_eq!(r["tests"]["total"], 4);
    assert_eq!(r["tests"]["failed"], 1);
    assert_eq!(r["tests"]["skipped"], 1);
    assert!(
        r["tests"].get("resilience").is_none(),
        "no mutation step ran"
    );
    assert!(r["cost"]["cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        r["cost"].get("usd").is_none(),
        "no rate configured: no price"
    );
    assert!(
        job(r, "compile")["logs_uri"]
            .as_str()
            .unwrap()
            .starts_with("file:///"),
    );

    // The compiler's own words, classified, with where and how to fix.
    let causes = r["autopsy"]["root_causes"].as_array().unwrap();
    let c0 = causes
        .iter()
        .find(|c| c["job"] == "compile")
        .unwrap_or_else(|| panic!("no finding for compile: {causes:?}"));
    assert_eq!(c0["file"], "src/broken.c", "{c0}");
    assert_eq!(c0["line"], 2, "{c0}");
    assert!(
        c0["repro"]
            .as_str()
            .unwrap()
            .contains("ci-intel run plan.toml --step compile"),
        "{c0}"
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("why: "), "{}", text(&first));
    assert!(stdout.contains("src/broken.c:2"), "{}", text(&first));

    // Egress and sandbox posture.
    let denied: Vec<&serde_json::Value> = r["egress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["allowed"] == false)
        .collect();
    assert_eq!(denied.len(), 1, "{:?}", r["egress"]);
    assert_eq!(denied[0]["job"], "fetch");
    assert_eq!(denied[0]["host"], "denied.invalid");
    let posture = r["sandbox"].as_array().unwrap();
    assert!(
        posture.iter().all(|p| p["sandboxed"] == true),
        "{posture:?}"
    );
    assert!(
        posture[0]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["layer"] == "netns" && l["level"] == "fully"),
        "{posture:?}"
    );

    // Cache: the first run misses and stores, the second restores `build`.
    let events = |r: &serde_json::Value, job: &str| -> Vec<String> {
        r["cache_events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["job"] == job)
            .map(|e| e["result"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(events(&runs[0], "build"), ["miss"]);
    assert_eq!(events(&runs[1], "build"), ["hit"]);
    assert_eq!(job(&runs[1], "build")["cache"]["hit"], true);
    assert_eq!(job(&runs[1], "build")["state"], "cached");

    // Predictions: the second run knows the first.
    let p = runs[1]["prediction"].as_array().unwrap();
    assert!(p.iter().any(|p| p["job"] == "build"), "{p:?}");

    // The critical path ends at the last step to end (compile or fetch, whichever) and
    // walks its needs back to build.
    let critical: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["critical"] == true)
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(critical.len(), 2, "{critical:?}");
    assert!(critical.contains(&"build"), "{critical:?}");
}

#[test]
fn v1_2_records_are_written_only_when_the_run_has_what_v1_2_requires() {
    let c = Checkout::new();
    let tel = c.path().join("v12.ndjson");
    let out = c.run(
        &[
            "--telemetry",
            tel.to_str().unwrap(),
            "--telemetry-schema",
            "v1.2",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no pipeline_run.v1.2 record") && stderr.contains("tests.resilience"),
        "{}",
        text(&out)
    );
    assert!(!tel.exists(), "nothing invalid is written");
    assert_eq!(c.state_records().len(), 1, "the v1.3 record is still kept");
}

#[test]
fn a_mutation_testing_step_completes_a_v1_2_record() {
    let c = Checkout::new();
    std::fs::write(
        c.path().join("plan.toml"),
        r#"version = 1
name = "mutation"

[steps.mutants]
# What cargo-mutants writes: mutants.out/outcomes.json.
run = """
mkdir -p mutants.out
printf '{"outcomes":[],"total_mutants":12,"missed":2,"caught":7,"timeout":1,"unviable":2,"success":0}' > mutants.out/outcomes.json
"""
outputs = ["mutants.out/"]
mutation_report = "mutants.out/outcomes.json"
"#,
    )
    .unwrap();
    c.git(&["add", "."]);
    c.git(&["commit", "-q", "-m", "mutation"]);
    let tel = c.path().join("v12.ndjson");
    let out = c.run(
        &[
            "--telemetry",
            tel.to_str().unwrap(),
            "--telemetry-schema",
            "v1.2",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v13 = &c.state_records()[0];
    assert_eq!(v13["tests"]["resilience"]["mutants_total"], 12);
    assert_eq!(v13["tests"]["resilience"]["killed"], 7);
    assert_eq!(v13["tests"]["resilience"]["equiv"], 2);
    assert!((v13["tests"]["resilience"]["score"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    let line = std::fs::read_to_string(&tel).unwrap();
    let v12: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v12["schema"], "pipeline_run.v1.2");
    let bad = records::violations(&records::validator("pipeline_run.v1.2.json"), &v12);
    assert_eq!(bad, Vec::<String>::new(), "{v12}");
    assert!(v12.get("cache_events").is_none() && v12.get("plan").is_none());
}

#[test]
fn junit_has_a_case_per_step_with_its_log() {
    let c = Checkout::new();
    let junit = c.path().join("junit.xml");
    let out = c.run(&["--junit", junit.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("name"), Some("insight"));
    assert_eq!(suite.attribute("tests"), Some("4"));
    assert_eq!(suite.attribute("failures"), Some("1"));
    assert_eq!(suite.attribute("skipped"), Some("1"));
    let case = |id: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(id))
            .unwrap_or_else(|| panic!("no testcase {id}\n{xml}"))
    };
    let compile = case("compile");
    let failure = compile
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(failure.attribute("message"), Some("exit code 1"));
    let log = compile
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .unwrap()
        .text()
        .unwrap();
    assert!(log.contains("undeclared_thing"), "{log}");
    assert!(
        case("package")
            .children()
            .any(|n| n.has_tag_name("skipped"))
    );
    assert!(!case("build").children().any(|n| n.has_tag_name("failure")));
}

#[test]
fn on_github_actions_the_summary_annotations_and_groups_are_written() {
    let c = Checkout::new();
    let summary = c.path().join("summary.md");
    std::fs::write(&summary, "earlier step's summary\n").unwrap();
    let out = c.run(
        &[],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ("GITHUB_REPOSITORY", "org/from-ci"),
            ("GITHUB_REF", "refs/pull/7/merge"),
            ("GITHUB_HEAD_REF", "feature/x"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("earlier step's summary\n"),
        "appended, not replaced"
    );
    assert!(md.contains("| `compile` | ❌ failed |"), "{md}");
    assert!(md.contains("### Why it failed"), "{md}");
    assert!(md.contains("`src/broken.c:2`"), "{md}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("::error file=src/broken.c,line=2,"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("::group::"), "{}", text(&out));
    let group = stdout
        .split("::group::")
        .find(|g| {
            g.lines()
                .next()
                .is_some_and(|title| title.contains("FAIL compile"))
        })
        .unwrap_or_else(|| panic!("no group for compile\n{}", text(&out)));
    let group = group.split("::endgroup::").next().unwrap();
    assert!(
        group.contains("undeclared_thing"),
        "the log is replayed in its group: {group}"
    );
    assert!(
        !stdout.contains("[compile] "),
        "no interleaved live lines on GitHub Actions\n{}",
        text(&out)
    );
    let r = &c.state_records()[0];
    assert_eq!(r["repo"], "org/from-ci");
    assert_eq!(r["pr"], 7);
    assert_eq!(r["branch"], "feature/x");
}

/// An OTLP/HTTP collector on loopback: every request body it receives is sent on.
fn collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut conn = conn;
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = tx.send((path, body));
        }
    });
    (url, rx)
}

#[test]
fn spans_reach_an_otlp_collector_under_the_callers_trace() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let (url, rx) = collector();
    let c = Checkout::new();
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let out = c.run(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            (
                "TRACEPARENT",
                &format!("00-{caller_trace}-{caller_span}-01"),
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut spans = Vec::new();
    while let Ok((path, body)) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
        assert_eq!(path, "/v1/traces");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| format!("{:?}", a.value));
            assert!(service.is_some_and(|s| s.contains("ci-intel")));
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        if spans.iter().any(|s| s.name == "ci-intel run") {
            break;
        }
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let by_name = |n: &str| {
        spans.iter().find(|s| s.name == n).unwrap_or_else(|| {
            panic!(
                "no span {n}: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let run = by_name("ci-intel run");
    assert_eq!(
        hex(&run.trace_id),
        caller_trace,
        "the caller's trace goes on"
    );
    assert_eq!(hex(&run.parent_span_id), caller_span);
    assert!(spans.iter().all(|s| hex(&s.trace_id) == caller_trace));
    let compile = by_name("step compile");
    assert_eq!(compile.parent_span_id, run.span_id);
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == k)
            .map(|a| format!("{:?}", a.value))
            .unwrap_or_default()
    };
    assert!(attr(compile, "ci_intel.step.id").contains("compile"));
    assert!(attr(compile, "process.exit.code").contains('1'));
    assert!(attr(compile, "ci_intel.cache.result").contains("miss"));
    assert!(attr(compile, "ci_intel.action_key").len() > 64);
    let phases: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == compile.span_id)
        .map(|s| s.name.as_str())
        .collect();
    for want in ["cache.lookup", "sandbox.setup", "execute"] {
        assert!(
            phases.contains(&want),
            "{want} under step compile: {phases:?}"
        );
    }
    let build = by_name("step build");
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == build.span_id && s.name == "cache.upload"),
        "a stored result has an upload span"
    );
    for s in &spans {
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
    }
    let record = &c.state_records()[0];
    assert_eq!(
        record["traceparent"].as_str().unwrap(),
        format!("00-{caller_trace}-{}-01", hex(&run.span_id)),
        "the record names the run's span"
    );
}

#[test]
fn without_an_endpoint_nothing_is_exported_and_the_callers_context_is_recorded() {
    let c = Checkout::new();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out = c.run(&[], &[("TRACEPARENT", tp)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(c.state_records()[0]["traceparent"], tp);
    let bad = c.run(&[], &[("TRACEPARENT", "00-zz-11-01")]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(c.state_records()[1].get("traceparent").is_none());
}

#[test]
fn rates_price_a_run_and_a_bad_rates_file_is_a_usage_error() {
    let c = Checkout::new();
    let rates = c.path().join("rates.toml");
    std::fs::write(
        &rates,
        "[class.\"*\"]\nusd_per_minute = 0.5\nwatts = 100\ngrid_g_co2e_per_kwh = 400\n",
    )
    .unwrap();
    let out = c.run(&["--rates", rates.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = &c.state_records()[0];
    let minutes = r["cost"]["wall_minutes"].as_f64().unwrap();
    assert!(
        (r["cost"]["usd"].as_f64().unwrap() - minutes * 0.5).abs() < 1e-9,
        "{r}"
    );
    let kwh = r["energy"]["kwh"].as_f64().unwrap();
    assert!((kwh - minutes / 60.0 * 0.1).abs() < 1e-9, "{r}");
    assert!((r["carbon_g_co2e"].as_f64().unwrap() - kwh * 400.0).abs() < 1e-9);

    std::fs::write(&rates, "[class.x]\nusd_per_minute = -2\n").unwrap();
    let bad = c.run(&["--rates", rates.to_str().unwrap()], &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("`x.usd_per_minute`"), "{}", text(&bad));
    assert!(stderr.contains("hint: "), "{}", text(&bad));
}

/// The v1.2 downgrade of a record that has everything v1.2 requires validates against the
/// platform's schema, and the shipped example against ours.
#[test]
fn the_shipped_example_and_a_full_downgrade_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let example: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("pipeline_run.v1.3.example.json")).unwrap(),
    )
    .unwrap();
    let v13 = records::validator("pipeline_run.v1.3.json");
    assert_eq!(records::violations(&v13, &example), Vec::<String>::new());
    let record: ci_intel_insight::record::RunRecord =
        serde_json::from_value(example.clone()).unwrap();
    let v12 = records::validator("pipeline_run.v1.2.json");
    let down = record.to_v1_2().unwrap();
    assert_eq!(records::violations(&v12, &down), Vec::<String>::new());
    // The platform's own example fails its schema for exactly the two known reasons.
    let mut theirs = example;
    theirs["schema"] = "pipeline_run.v1.2".into();
    let bad = records::violations(&v12, &theirs);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("canary"), "{bad:?}");
}
