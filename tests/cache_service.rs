//! `ci-intel cache serve`, end to end: the real binary on a loopback port, spoken to over
//! real HTTP/1.1 connections in Bazel's remote cache protocol.
mod support;

use std::time::Duration;

use service::{FORK, LIMITED, MAIN, READER, Service, bearer, header};

#[path = "support/service.rs"]
mod service;

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn blobs_and_action_results_round_trip_and_a_wrong_digest_stores_nothing() {
    let svc = Service::start();
    let main = bearer(MAIN);
    let blob = b"int main(void) { return 0; }\n".repeat(100);
    let digest = sha256_hex(&blob);
    let cas = format!("/cas/{digest}");
    assert_eq!(svc.request("GET", &cas, Some(&main), b"").0, 404);
    assert_eq!(svc.request("PUT", &cas, Some(&main), &blob).0, 200);
    let (status, headers, body) = svc.request("GET", &cas, Some(&main), b"");
    assert_eq!((status, body), (200, blob.clone()));
    let (status, headers_head, body) = svc.request("HEAD", &cas, Some(&main), b"");
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(
        header(&headers_head, "content-length"),
        Some(blob.len().to_string().as_str())
    );
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/octet-stream")
    );
    // An action result is stored under its action digest, as sent.
    let ac = format!("/ac/{}", sha256_hex(b"the action"));
    assert_eq!(svc.request("PUT", &ac, Some(&main), b"result").0, 200);
    assert_eq!(svc.request("GET", &ac, Some(&main), b"").2, b"result");
    // With an instance name, a separate space.
    let with_instance = format!("/linux-x86/cas/{digest}");
    assert_eq!(svc.request("GET", &with_instance, Some(&main), b"").0, 404);
    // A body that is not what its name says: 400, and nothing is stored.
    let other = sha256_hex(b"something else");
    let (status, _, body) = svc.request("PUT", &format!("/cas/{other}"), Some(&main), &blob);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        svc.request("GET", &format!("/cas/{other}"), Some(&main), b"")
            .0,
        404
    );
}

#[test]
fn tokens_scopes_and_trust_decide_who_reads_and_writes_what() {
    let svc = Service::start();
    let blob = b"from main".to_vec();
    let cas = format!("/cas/{}", sha256_hex(&blob));
    // No credentials, unknown ones: 401 with a challenge.
    let (status, headers, _) = svc.request("GET", &cas, None, b"");
    assert_eq!(status, 401);
    assert!(header(&headers, "www-authenticate").is_some());
    assert_eq!(svc.request("GET", &cas, Some("Bearer nope"), b"").0, 401);
    // A read-only token may not write.
    assert_eq!(
        svc.request("PUT", &cas, Some(&bearer(READER)), &blob).0,
        403
    );
    // Basic auth in both base64 alphabets, padded or not.
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    for engine in [STANDARD, URL_SAFE_NO_PAD] {
        let basic = format!("Basic {}", engine.encode(format!("ci:{MAIN}")));
        assert_eq!(svc.request("PUT", &cas, Some(&basic), &blob).0, 200);
    }
    // A fork's token reads what trusted clients wrote...
    assert_eq!(svc.request("GET", &cas, Some(&bearer(FORK)), b"").2, blob);
    // ...and what it writes lands in its own space: trusted readers never see it.
    let ac = format!("/ac/{}", sha256_hex(b"poisoned action"));
    assert_eq!(svc.request("PUT", &ac, Some(&bearer(FORK)), b"evil").0, 200);
    assert_eq!(svc.request("GET", &ac, Some(&bearer(MAIN)), b"").0, 404);
    assert_eq!(svc.request("GET", &ac, Some(&bearer(READER)), b"").0, 404);
    assert_eq!(svc.request("GET", &ac, Some(&bearer(FORK)), b"").2, b"evil");
    // Another team does not see team-a's entries.
    assert_eq!(svc.request("GET", &cas, Some(&bearer(LIMITED)), b"").0, 404);
}

#[test]
fn malformed_digests_and_traversal_are_refused() {
    let svc = Service::start();
    let main = bearer(MAIN);
    let good = sha256_hex(b"x");
    for path in [
        format!("/cas/{}", good.to_uppercase()),
        format!("/cas/{}", &good[..40]),
        format!("/../cas/{good}"),
        format!("/a/../cas/{good}"),
        format!("/blob/{good}"),
        "/cas/".to_string(),
    ] {
        assert_eq!(
            svc.request("PUT", &path, Some(&main), b"x").0,
            400,
            "{path}"
        );
    }
}

#[test]
fn over_the_team_limit_is_429_with_retry_after_then_served() {
    let svc = Service::start();
    let token = bearer(LIMITED);
    let path = format!("/cas/{}", sha256_hex(b"limited"));
    // A burst of two requests, one a second after that.
    assert_eq!(svc.request("GET", &path, Some(&token), b"").0, 404);
    assert_eq!(svc.request("GET", &path, Some(&token), b"").0, 404);
    let (status, headers, _) = svc.request("GET", &path, Some(&token), b"");
    assert_eq!(status, 429);
    let wait: u64 = header(&headers, "retry-after")
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another team is not held back.
    assert_eq!(svc.request("GET", &path, Some(&bearer(MAIN)), b"").0, 404);
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(svc.request("GET", &path, Some(&token), b"").0, 404);
    let (_, _, metrics) = svc.request("GET", "/metrics", None, b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("ci_intel_cache_queue_denials_total{team=\"team-b\"} 1"),
        "{metrics}"
    );
}

#[test]
fn many_concurrent_clients_on_the_same_keys_leave_every_entry_whole() {
    let svc = Service::start();
    let blobs: Vec<Vec<u8>> = (0..8u8)
        .map(|i| (0..200_000u32).map(|j| (j as u8) ^ i).collect())
        .collect();
    std::thread::scope(|s| {
        for c in 0..64 {
            let (svc, blobs) = (&svc, &blobs);
            s.spawn(move || {
                let main = bearer(MAIN);
                for round in 0..4 {
                    let blob = &blobs[(c + round) % blobs.len()];
                    let path = format!("/cas/{}", sha256_hex(blob));
                    let (status, _, _) = svc.request("PUT", &path, Some(&main), blob);
                    assert_eq!(status, 200);
                    let (status, _, body) = svc.request("GET", &path, Some(&main), b"");
                    assert_eq!(status, 200);
                    assert_eq!(&body, blob, "a whole entry, never a torn one");
                }
            });
        }
    });
}

#[test]
fn health_and_metrics_need_no_token_and_sigterm_stops_it_cleanly() {
    let mut svc = Service::start();
    let (status, _, body) = svc.request("GET", "/healthz", None, b"");
    assert_eq!((status, body), (200, b"ok\n".to_vec()));
    let blob = b"counted";
    let path = format!("/cas/{}", sha256_hex(blob));
    svc.request("PUT", &path, Some(&bearer(MAIN)), blob);
    svc.request("GET", &path, Some(&bearer(MAIN)), b"");
    let (status, headers, metrics) = svc.request("GET", "/metrics", None, b"");
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        "ci_intel_cache_hits_total{team=\"team-a\"} 1",
        "ci_intel_cache_bytes_in_total{team=\"team-a\"} 7",
        "ci_intel_cache_bytes_out_total{team=\"team-a\"} 7",
        "ci_intel_cache_request_seconds_count{team=\"team-a\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(svc.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = svc.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop");
}

/// The store survives a kill: what was acknowledged is served again.
#[test]
fn acknowledged_entries_survive_a_kill() {
    let mut svc = Service::start();
    let blob = b"durable".to_vec();
    let path = format!("/cas/{}", sha256_hex(&blob));
    assert_eq!(svc.request("PUT", &path, Some(&bearer(MAIN)), &blob).0, 200);
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    let (store, config) = (
        svc._dir.path().join("store"),
        svc._dir.path().join("service.toml"),
    );
    let restarted = Service::launch(&store, &config, tempfile::tempdir().unwrap());
    let (status, _, body) = restarted.request("GET", &path, Some(&bearer(MAIN)), b"");
    assert_eq!((status, body), (200, blob));
}

#[test]
fn a_blob_corrupted_on_disk_is_quarantined_by_the_scrub_and_never_served() {
    let svc = Service::start();
    let main = bearer(MAIN);
    let blob = b"scrubbed".to_vec();
    let digest = sha256_hex(&blob);
    let path = format!("/cas/{digest}");
    assert_eq!(svc.request("PUT", &path, Some(&main), &blob).0, 200);
    let file = svc
        ._dir
        .path()
        .join("store/data/team-a/bazel/cas")
        .join(&digest[..2])
        .join(&digest);
    assert!(
        file.is_file(),
        "{} is where the entry lives",
        file.display()
    );
    // Same size, other bytes: only hashing finds it.
    std::fs::write(&file, b"scrubbad").unwrap();
    // The test configuration scrubs every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, metrics) = svc.request("GET", "/metrics", None, b"");
        let metrics = String::from_utf8(metrics).unwrap();
        if metrics.contains("ci_intel_cache_quarantined_total 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scrub quarantined the entry:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(svc.request("GET", &path, Some(&main), b"").0, 404);
    assert!(
        svc._dir
            .path()
            .join("store/quarantine")
            .read_dir()
            .unwrap()
            .next()
            .is_some()
    );
}
