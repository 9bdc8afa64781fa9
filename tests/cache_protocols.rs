//! `ci-intel cache serve` speaking ccache's and Turborepo's protocols, end to end: the
//! real binary on a loopback port, Debian's real ccache compiling a small C project against
//! it, raw HTTP/1.1 for Turborepo's API, and clients that send their request too slowly.
mod support;

#[path = "support/service.rs"]
mod service;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use service::{FORK, LIMITED, MAIN, READER, Service, bearer, header};

/// Fails the test with what to install when `program` cannot run.
fn require(program: &str, args: &[&str], install: &str) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        other => {
            panic!("this test runs `{program}`, which does not work here ({other:?}): {install}")
        }
    }
}

/// The sources of a small C project: a header, two units and a main.
const PROJECT: [(&str, &str); 4] = [
    ("util.h", "int twice(int x);\nint square(int x);\n"),
    (
        "twice.c",
        "#include \"util.h\"\nint twice(int x) { return 2 * x; }\n",
    ),
    (
        "square.c",
        "#include \"util.h\"\nint square(int x) { return x * x; }\n",
    ),
    (
        "main.c",
        "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"%d\\n\", twice(square(3))); return 0; }\n",
    ),
];

/// The units of [`PROJECT`].
const UNITS: [&str; 3] = ["twice", "square", "main"];

/// Writes [`PROJECT`] (with `main.c` replaced by `main`, when given) into a new directory
/// `name` of `work` and compiles each unit with ccache, with an empty cache directory of its
/// own, remote storage only, at `remote`. Returns ccache's counters for the run.
fn ccache_build(
    work: &Path,
    name: &str,
    remote: &str,
    main: Option<&str>,
) -> BTreeMap<String, u64> {
    let dir = work.join(name);
    std::fs::create_dir(&dir).unwrap();
    for (file, text) in PROJECT {
        let text = if file == "main.c" {
            main.unwrap_or(text)
        } else {
            text
        };
        std::fs::write(dir.join(file), text).unwrap();
    }
    let cache_dir = work.join(format!("{name}-ccache"));
    std::fs::create_dir(&cache_dir).unwrap();
    // The configuration file a team would write; with CCACHE_CONFIGPATH the system's is not
    // read, and no CCACHE_* variable of the caller's leaks in.
    let conf = work.join(format!("{name}-ccache.conf"));
    std::fs::write(
        &conf,
        format!(
            "cache_dir = {}\nremote_storage = {remote}\nremote_only = true\nbase_dir = {}\nhash_dir = false\n",
            cache_dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let ccache = |args: &[&str]| {
        let out = Command::new("ccache")
            .args(args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CCACHE_CONFIGPATH", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "ccache {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for unit in UNITS {
        ccache(&[
            "cc",
            "-O2",
            "-c",
            &format!("{unit}.c"),
            "-o",
            &format!("{unit}.o"),
        ]);
    }
    ccache(&["--print-stats"])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// A counter of `ccache --print-stats`, which prints every counter, zeros too.
fn counter(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    let value = stats.get(name).copied();
    value.unwrap_or_else(|| panic!("ccache printed no counter {name}: {stats:?}"))
}

/// The service's metrics text.
fn metrics(svc: &Service) -> String {
    let (status, _, body) = svc.request("GET", "/metrics", None, b"");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

#[test]
fn real_ccache_builds_in_other_directories_are_remote_hits_and_forks_stay_apart() {
    let version = require(
        "ccache",
        &["--version"],
        "install Debian's ccache: apt-get install -y ccache; the CI plan does (step `deps`)",
    );
    assert!(
        version.contains("http-storage"),
        "this ccache has no HTTP storage: {version}"
    );
    require(
        "cc",
        &["--version"],
        "install a C compiler (e.g. `apt-get install gcc`)",
    );
    let svc = Service::start();
    let work = tempfile::tempdir().unwrap();
    // As ccache is configured: the token is the URL's password, sent as Basic credentials.
    let remote = |token: &str, layout: &str| {
        format!("http://ci:{token}@{}/ccache|layout={layout}", svc.addr)
    };

    // The first build misses and uploads every unit.
    let first = ccache_build(work.path(), "one", &remote(MAIN, "subdirs"), None);
    assert_eq!(counter(&first, "cache_miss"), 3, "{first:?}");
    assert_eq!(counter(&first, "remote_storage_miss"), 3, "{first:?}");
    assert!(counter(&first, "remote_storage_write") >= 3, "{first:?}");
    assert_eq!(counter(&first, "remote_storage_error"), 0, "{first:?}");
    assert!(
        metrics(&svc).contains("ci_intel_cache_stored_bytes{space=\"team-a/ccache\"}"),
        "the entries are in the team's ccache space"
    );

    // Another directory, another empty local cache: every compilation is a remote hit.
    let second = ccache_build(work.path(), "two", &remote(MAIN, "subdirs"), None);
    assert_eq!(counter(&second, "remote_storage_hit"), 3, "{second:?}");
    assert_eq!(counter(&second, "cache_miss"), 0, "{second:?}");
    assert_eq!(counter(&second, "local_storage_hit"), 0, "{second:?}");
    // layout=flat names the same entries.
    let flat = ccache_build(work.path(), "three", &remote(MAIN, "flat"), None);
    assert_eq!(counter(&flat, "remote_storage_hit"), 3, "{flat:?}");
    assert_eq!(counter(&flat, "cache_miss"), 0, "{flat:?}");
    // What came from the service is what the compiler made, and it links and runs.
    for unit in UNITS {
        let object = |run: &str| std::fs::read(work.path().join(run).join(format!("{unit}.o")));
        assert_eq!(object("one").unwrap(), object("two").unwrap(), "{unit}.o");
    }
    let two = work.path().join("two");
    let link = Command::new("cc")
        .args(["twice.o", "square.o", "main.o", "-o", "prog"])
        .current_dir(&two)
        .output()
        .unwrap();
    assert!(link.status.success(), "{link:?}");
    let run = Command::new(two.join("prog")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "18\n");

    // A fork's build reads the trusted entries, and what it uploads (its own main.c) is
    // never served to a trusted build.
    let forked_main = PROJECT[3].1.replace("square(3)", "square(4)");
    let fork = ccache_build(
        work.path(),
        "fork",
        &remote(FORK, "subdirs"),
        Some(&forked_main),
    );
    assert_eq!(counter(&fork, "remote_storage_hit"), 2, "{fork:?}");
    assert_eq!(counter(&fork, "cache_miss"), 1, "{fork:?}");
    let trusted = ccache_build(
        work.path(),
        "trusted",
        &remote(MAIN, "subdirs"),
        Some(&forked_main),
    );
    assert_eq!(counter(&trusted, "remote_storage_hit"), 2, "{trusted:?}");
    assert_eq!(counter(&trusted, "cache_miss"), 1, "{trusted:?}");
    assert!(
        metrics(&svc).contains("ci_intel_cache_stored_bytes{space=\"team-a/untrusted/ccache\"}")
    );
}

#[test]
fn ccache_paths_in_every_layout_with_scopes_trust_deletes_and_traversal_refused() {
    let svc = Service::start();
    // What ccache sends for http://ci:TOKEN@host/...
    let basic = |token: &str| {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("ci:{token}"));
        format!("Basic {credentials}")
    };
    let main = basic(MAIN);
    let key = "5e34f8rks00bodvu5pfj0nq2rj6fkeov4";
    let (subdirs, flat) = (
        format!("/ccache/{}/{}", &key[..2], &key[2..]),
        format!("/ccache/{key}"),
    );
    assert_eq!(svc.request("GET", &subdirs, Some(&main), b"").0, 404);
    assert_eq!(svc.request("PUT", &subdirs, Some(&main), b"entry").0, 200);
    assert_eq!(svc.request("GET", &flat, Some(&main), b"").2, b"entry");
    let (status, headers, body) = svc.request("HEAD", &subdirs, Some(&main), b"");
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(header(&headers, "content-length"), Some("5"));
    // layout=bazel: /ac/ and 64 hex digits, a key like any other.
    let bazel = format!("/ccache/ac/{}", "0123456789abcdef".repeat(4));
    assert_eq!(svc.request("PUT", &bazel, Some(&main), b"b").0, 200);
    assert_eq!(svc.request("GET", &bazel, Some(&main), b"").2, b"b");

    // A read-only token reads and may neither write nor delete.
    let reader = bearer(READER);
    assert_eq!(svc.request("GET", &flat, Some(&reader), b"").2, b"entry");
    assert_eq!(svc.request("PUT", &flat, Some(&reader), b"x").0, 403);
    assert_eq!(svc.request("DELETE", &flat, Some(&reader), b"").0, 403);
    // A fork reads trusted entries; what it writes only it sees; it cannot delete trusted ones.
    let fork = basic(FORK);
    assert_eq!(svc.request("GET", &flat, Some(&fork), b"").2, b"entry");
    let planted = "/ccache/aa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    assert_eq!(svc.request("PUT", planted, Some(&fork), b"evil").0, 200);
    assert_eq!(svc.request("GET", planted, Some(&main), b"").0, 404);
    assert_eq!(svc.request("GET", planted, Some(&fork), b"").2, b"evil");
    assert_eq!(svc.request("DELETE", &flat, Some(&fork), b"").0, 404);
    assert_eq!(svc.request("GET", &flat, Some(&main), b"").0, 200);
    // Another team sees nothing of team-a's.
    assert_eq!(
        svc.request("GET", &flat, Some(&bearer(LIMITED)), b"").0,
        404
    );
    // A trusted token deletes.
    assert_eq!(svc.request("DELETE", &flat, Some(&main), b"").0, 200);
    assert_eq!(svc.request("GET", &subdirs, Some(&main), b"").0, 404);
    assert_eq!(svc.request("DELETE", &flat, Some(&main), b"").0, 404);

    for path in [
        "/ccache/",
        "/ccache/../../etc/passwd",
        "/ccache/ab/..",
        "/ccache/%2e%2e/x",
        "/ccache/ab/cd/ef",
        "/ccache/abc/def",
        "/ccache/ab//cd",
        "/ccache/a.b",
        &format!("/ccache/{}", "a".repeat(129)),
    ] {
        assert_eq!(svc.request("PUT", path, Some(&main), b"x").0, 400, "{path}");
    }
    assert_eq!(svc.request("POST", &flat, Some(&main), b"").0, 405);
    assert_eq!(svc.request("GET", &flat, None, b"").0, 401);
}

#[test]
fn turbo_artifacts_round_trip_within_the_tokens_team_and_bad_hashes_are_refused() {
    let svc = Service::start();
    let main = bearer(MAIN);
    let json = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap();
    let (status, headers, body) =
        svc.request("GET", "/v8/artifacts/status?slug=team-a", Some(&main), b"");
    assert_eq!(status, 200);
    assert_eq!(json(&body), serde_json::json!({ "status": "enabled" }));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(svc.request("GET", "/v8/artifacts/status", None, b"").0, 401);

    // Round trip, as turbo uploads: duration and signature tag given back.
    let hash = "0f3c8a7b9d2e4f61";
    let artifact = b"\x28\xb5\x2f\xfd a zstd tarball of outputs".repeat(50);
    let path = format!("/v8/artifacts/{hash}?slug=team-a");
    assert_eq!(svc.request("GET", &path, Some(&main), b"").0, 404);
    let (status, _, body) = svc.request_with(
        "PUT",
        &path,
        &[
            ("Authorization", &main),
            ("Content-Type", "application/octet-stream"),
            ("x-artifact-duration", "1234"),
            ("x-artifact-tag", "c2lnbmF0dXJl"),
        ],
        &artifact,
    );
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let (status, headers, body) = svc.request("GET", &path, Some(&main), b"");
    assert_eq!((status, &body), (200, &artifact));
    assert_eq!(header(&headers, "x-artifact-duration"), Some("1234"));
    assert_eq!(header(&headers, "x-artifact-tag"), Some("c2lnbmF0dXJl"));
    let (status, headers, body) = svc.request("HEAD", &path, Some(&main), b"");
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(
        header(&headers, "content-length"),
        Some(artifact.len().to_string().as_str())
    );
    assert_eq!(header(&headers, "x-artifact-duration"), Some("1234"));
    // teamId works as slug does, and so does no team at all: the token's team.
    let by_id = format!("/v8/artifacts/{hash}?teamId=team-a");
    assert_eq!(svc.request("GET", &by_id, Some(&main), b"").2, artifact);
    let (status, _, _) = svc.request("GET", &format!("/v8/artifacts/{hash}"), Some(&main), b"");
    assert_eq!(status, 200);

    // Naming another team is 403, whatever the request; that team's token sees nothing.
    for (method, path) in [
        ("GET", format!("/v8/artifacts/{hash}?slug=team-b")),
        ("PUT", format!("/v8/artifacts/{hash}?teamId=team-b")),
        ("GET", "/v8/artifacts/status?slug=team-b".to_string()),
        (
            "GET",
            format!("/v8/artifacts/{hash}?slug=team-a&teamId=team-b"),
        ),
    ] {
        assert_eq!(
            svc.request(method, &path, Some(&main), b"x").0,
            403,
            "{path}"
        );
    }
    let other = format!("/v8/artifacts/{hash}?slug=team-b");
    assert_eq!(
        svc.request("GET", &other, Some(&bearer(LIMITED)), b"").0,
        404
    );
    // Scopes and trust as everywhere.
    assert_eq!(
        svc.request("PUT", &path, Some(&bearer(READER)), b"x").0,
        403
    );
    let fork = bearer(FORK);
    let planted = "/v8/artifacts/deadbeef?slug=team-a";
    assert_eq!(svc.request("PUT", planted, Some(&fork), b"evil").0, 202);
    assert_eq!(svc.request("GET", planted, Some(&main), b"").0, 404);
    assert_eq!(svc.request("GET", planted, Some(&fork), b"").2, b"evil");
    assert_eq!(svc.request("GET", &path, Some(&fork), b"").2, artifact);

    for bad in [
        "/v8/artifacts/..%2f..%2fetc?slug=team-a".to_string(),
        "/v8/artifacts/../ac?slug=team-a".to_string(),
        "/v8/artifacts/abc-def".to_string(),
        "/v8/artifacts/a/b".to_string(),
        format!("/v8/artifacts/{}", "f".repeat(129)),
    ] {
        assert_eq!(svc.request("PUT", &bad, Some(&main), b"x").0, 400, "{bad}");
    }
    let (status, _, _) = svc.request_with(
        "PUT",
        &path,
        &[("Authorization", &main), ("x-artifact-duration", "soon")],
        b"x",
    );
    assert_eq!(status, 400);

    // The batch query: what is known of each hash.
    let query = serde_json::json!({ "hashes": [hash, "abcdef"] }).to_string();
    let (status, _, body) = svc.request(
        "POST",
        "/v8/artifacts?slug=team-a",
        Some(&main),
        query.as_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({
            hash: { "size": artifact.len(), "taskDurationMs": 1234, "tag": "c2lnbmF0dXJl" },
            "abcdef": null,
        })
    );
    // Usage events are accepted and counted.
    let events = serde_json::json!([
        { "sessionId": "s", "source": "REMOTE", "event": "HIT", "hash": hash, "duration": 1234 },
        { "sessionId": "s", "source": "LOCAL", "event": "MISS", "hash": "abcdef" },
    ])
    .to_string();
    let (status, _, _) = svc.request(
        "POST",
        "/v8/artifacts/events?slug=team-a",
        Some(&main),
        events.as_bytes(),
    );
    assert_eq!(status, 200);
    let (status, _, _) = svc.request(
        "POST",
        "/v8/artifacts/events",
        Some(&main),
        b"{\"not\": \"a list\"}",
    );
    assert_eq!(status, 400);
    let metrics = metrics(&svc);
    for line in [
        "ci_intel_cache_client_events_total{team=\"team-a\"} 2",
        "ci_intel_cache_stored_bytes{space=\"team-a/turbo\"}",
        "ci_intel_cache_stored_bytes{space=\"team-a/untrusted/turbo\"}",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
}

/// Asserts that the server closes `conn` without answering: end of stream, or a reset. A
/// read that times out (the connection still open after `limit`) fails the test.
fn assert_closed_unanswered(mut conn: TcpStream, limit: Duration) {
    conn.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match conn.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got)),
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "the connection is still open after {limit:?}: {e}"
        ),
    }
}

#[test]
fn slow_clients_are_disconnected_while_others_are_served() {
    let mut svc = Service::start();
    // Three times the service's header-read timeout (10 s): longer means it never closed them.
    let limit = Duration::from_secs(30);
    // More stalled clients than the service has threads: half a request line, then nothing.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(svc.addr).unwrap();
            s.write_all(b"GET /cas/01").unwrap();
            s
        })
        .collect();
    // One that trickles a never-ending header: the limit is on the whole head, not per read.
    let addr = svc.addr;
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
        // 60 bytes at 2 a second: 30 s unless the service cuts it off.
        (0..60).any(|_| {
            std::thread::sleep(Duration::from_millis(500));
            s.write_all(b"a").is_err()
        })
    });
    // Meanwhile others are served.
    let main = bearer(MAIN);
    for i in 0..10u8 {
        let path = format!("/ccache/{i:02}/entry");
        assert_eq!(svc.request("PUT", &path, Some(&main), &[i; 100]).0, 200);
        assert_eq!(svc.request("GET", &path, Some(&main), b"").2, [i; 100]);
        assert_eq!(svc.request("GET", "/healthz", None, b"").0, 200);
    }
    for conn in stalled {
        assert_closed_unanswered(conn, limit);
    }
    assert!(
        trickler.join().unwrap(),
        "a client trickling its header was never cut off"
    );
    // A stalled client does not hold a graceful stop: SIGTERM ends the service (exit code
    // 0) once that client's time is up.
    let mut stalled = TcpStream::connect(svc.addr).unwrap();
    stalled
        .write_all(b"PUT /ccache/ab/cd HTTP/1.1\r\nHo")
        .unwrap();
    assert_eq!(svc.request("GET", "/healthz", None, b"").0, 200);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(svc.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(svc.child.wait().unwrap().code(), Some(0));
    assert_closed_unanswered(stalled, limit);
}
