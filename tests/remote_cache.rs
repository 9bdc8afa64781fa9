//! `ci-intel run --remote-cache`, end to end: two checkouts with caches of their own share
//! a result through `ci-intel cache serve`; what the service holds is verified before it
//! is used (chaos's corruption of a fetched entry included); a service that is down costs
//! a warning, never the build; and the native protocol refuses what it must, at the HTTP
//! level.
#[path = "support/summary.rs"]
mod summary;

use summary::Ran;
mod support;

#[path = "support/service.rs"]
mod service;

use std::path::{Path, PathBuf};

use service::{FORK, LIMITED, MAIN, READER, Service, bearer, header};

/// The plan both checkouts run: `build` copies its source into outputs and counts its
/// runs in a writable path that is not an output.
const PLAN: &str = r#"
version = 1

[sandbox]
write = ["counter"]

[steps.build]
run = """
echo run >> counter/build
mkdir -p out
cp src/main.txt out/main.txt
tr a-z A-Z < src/main.txt > out/upper.txt
echo built
"""
inputs = ["src/**"]
outputs = ["out/"]
"#;

/// A signing key pair, made by `ci-intel cache keygen`.
struct Keys {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: PathBuf,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let keygen = support::ci_intel()
            .args(["cache", "keygen", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{keygen:?}");
        let files: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let is_pub = |p: &&PathBuf| p.extension().is_some_and(|e| e == "pub");
        let public = files.iter().find(is_pub).expect("a .pub file").clone();
        let private = files
            .iter()
            .find(|p| !is_pub(p))
            .expect("a private key")
            .clone();
        Keys {
            _dir: dir,
            private,
            public,
        }
    }
}

/// One checkout of the project, with a local cache of its own that trusts `keys`.
struct Checkout {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Checkout {
    fn new(keys: &Keys) -> Checkout {
        let c = Checkout {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        std::fs::write(c.path().join("plan.toml"), PLAN).unwrap();
        std::fs::create_dir_all(c.path().join("src")).unwrap();
        std::fs::write(c.path().join("src/main.txt"), "hello\n").unwrap();
        std::fs::create_dir_all(c.path().join("counter")).unwrap();
        let trusted = c.cache.path().join("keys").join("trusted");
        std::fs::create_dir_all(&trusted).unwrap();
        std::fs::copy(&keys.public, trusted.join("ci.pub")).unwrap();
        c
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `ci-intel run` signing with `keys`, with `extra` arguments and `token`.
    fn run(&self, keys: &Keys, extra: &[&str], token: Option<&str>) -> Ran {
        let mut cmd = support::ci_intel();
        cmd.args(["run", "plan.toml", "--cache-dir"])
            .arg(self.cache.path())
            .args(extra)
            .current_dir(self.path())
            .env("CI", "true")
            .env("CI_INTEL_CACHE_KEY", &keys.private);
        if let Some(t) = token {
            cmd.env("CI_INTEL_REMOTE_CACHE_TOKEN", t);
        }
        Ran::from(cmd.output().unwrap())
    }

    /// How many times `build`'s command ran in this checkout.
    fn runs(&self) -> usize {
        std::fs::read_to_string(self.path().join("counter/build")).map_or(0, |s| s.lines().count())
    }

    /// The quarantined entries of this checkout's cache: their reasons.
    fn quarantine_reasons(&self) -> Vec<String> {
        std::fs::read_dir(self.cache.path().join("quarantine"))
            .map(|d| {
                d.map(|e| {
                    std::fs::read_to_string(e.unwrap().path().join("reason")).unwrap_or_default()
                })
                .collect()
            })
            .unwrap_or_default()
    }
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn url(svc: &Service) -> String {
    format!("http://{}", svc.addr)
}

#[test]
fn a_second_checkout_restores_what_the_first_built_through_the_service() {
    let svc = Service::start();
    let keys = Keys::new();
    let (a, b) = (Checkout::new(&keys), Checkout::new(&keys));
    let remote = ["--remote-cache", &url(&svc)];

    let first = a.run(&keys, &remote, Some(MAIN));
    first.ok();
    assert_eq!(first.status("build"), "succeeded", "{}", first.show());
    assert_eq!(a.runs(), 1);

    let second = b.run(&keys, &remote, Some(MAIN));
    second.ok();
    assert_eq!(second.status("build"), "cached", "{}", second.show());
    assert_eq!(
        b.runs(),
        0,
        "the command did not run in the second checkout"
    );
    assert_eq!(
        std::fs::read_to_string(b.path().join("out/upper.txt")).unwrap(),
        "HELLO\n"
    );
    assert!(second.stdout.contains("[build] built"), "{}", second.show());
    assert!(
        !second.stderr.contains("remote cache"),
        "no warning: {}",
        second.show()
    );
    // What came from the service is in the second checkout's own cache now: a run
    // without the service restores it too.
    std::fs::remove_dir_all(b.path().join("out")).unwrap();
    let local = b.run(&keys, &[], None);
    assert_eq!(local.status("build"), "cached", "{}", local.show());
    assert_eq!(b.runs(), 0);
}

#[test]
fn chaos_corrupting_an_entry_fetched_from_the_service_is_caught_and_the_service_keeps_a_good_one() {
    let svc = Service::start();
    let keys = Keys::new();
    let (a, b, c) = (
        Checkout::new(&keys),
        Checkout::new(&keys),
        Checkout::new(&keys),
    );
    let remote = ["--remote-cache", &url(&svc)];
    a.run(&keys, &remote, Some(MAIN)).ok();
    // b's entry comes from the service into its own cache, where a byte of it is flipped
    // before it is restored: verification quarantines it and the step runs.
    let chaos = [remote[0], remote[1], "--chaos", "seed=3,corrupt_cache=1"];
    let second = b.run(&keys, &chaos, Some(MAIN));
    second.ok();
    assert_eq!(second.status("build"), "succeeded", "{}", second.show());
    assert_eq!(b.runs(), 1, "the step ran: {}", second.show());
    let reasons = b.quarantine_reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("corrupt") || reasons[0].contains("decompressed"),
        "{reasons:?}"
    );
    assert!(
        second
            .stdout
            .contains("chaos: seed 3: 1 fault acted: 1 recovered"),
        "{}",
        second.show()
    );
    assert_eq!(
        std::fs::read_to_string(b.path().join("out/upper.txt")).unwrap(),
        "HELLO\n"
    );
    // What the service serves is still good: a third checkout restores it.
    let third = c.run(&keys, &remote, Some(MAIN));
    third.ok();
    assert_eq!(third.status("build"), "cached", "{}", third.show());
    assert_eq!(
        std::fs::read_to_string(c.path().join("out/upper.txt")).unwrap(),
        "HELLO\n"
    );
}

#[test]
fn an_entry_signed_by_a_key_the_checkout_does_not_trust_is_quarantined() {
    let svc = Service::start();
    let (keys, other) = (Keys::new(), Keys::new());
    let (a, b) = (Checkout::new(&keys), Checkout::new(&other));
    let remote = ["--remote-cache", &url(&svc)];
    a.run(&keys, &remote, Some(MAIN)).ok();
    // b trusts only its own key: a's entry is fetched, refused, and the step runs.
    let second = b.run(&other, &remote, Some(MAIN));
    second.ok();
    assert_eq!(second.status("build"), "succeeded", "{}", second.show());
    assert_eq!(b.runs(), 1);
    let reasons = b.quarantine_reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
}

#[test]
fn a_blob_corrupted_on_the_service_is_refused_and_the_step_runs() {
    let svc = Service::start();
    let keys = Keys::new();
    let (a, b) = (Checkout::new(&keys), Checkout::new(&keys));
    let remote = ["--remote-cache", &url(&svc)];
    a.run(&keys, &remote, Some(MAIN)).ok();

    // Flip a byte in the middle of every blob the service holds (their sizes unchanged).
    let blobs = files_under(&svc._dir.path().join("store/data/team-a/native-cas"));
    assert!(!blobs.is_empty(), "the service holds the entry's blobs");
    for blob in &blobs {
        let mut bytes = std::fs::read(blob).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(blob, bytes).unwrap();
    }

    let second = b.run(&keys, &remote, Some(MAIN));
    second.ok();
    assert_eq!(second.status("build"), "succeeded", "{}", second.show());
    assert_eq!(b.runs(), 1, "the step ran");
    assert_eq!(
        std::fs::read_to_string(b.path().join("out/upper.txt")).unwrap(),
        "HELLO\n"
    );
    let reasons = b.quarantine_reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("from the remote cache"), "{reasons:?}");
    // Nothing corrupt reached the second checkout's store.
    let verify = support::ci_intel()
        .args(["cache", "verify", "--cache-dir"])
        .arg(b.cache.path())
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn a_rate_limited_client_waits_as_told_and_still_shares_its_results() {
    // team-b may send 2 requests in a burst, then 1 a second: each run sends more, and
    // every 429 says to come back in a second.
    let svc = Service::start();
    let keys = Keys::new();
    let (a, b) = (Checkout::new(&keys), Checkout::new(&keys));
    let remote = ["--remote-cache", &url(&svc)];
    let first = a.run(&keys, &remote, Some(LIMITED));
    first.ok();
    assert!(!first.stderr.contains("remote cache"), "{}", first.show());
    let second = b.run(&keys, &remote, Some(LIMITED));
    assert_eq!(second.status("build"), "cached", "{}", second.show());
    assert_eq!(b.runs(), 0);
}

#[test]
fn a_service_that_is_down_costs_a_warning_not_the_build() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let keys = Keys::new();
    let a = Checkout::new(&keys);
    let remote = format!("http://127.0.0.1:{port}");
    let first = a.run(&keys, &["--remote-cache", &remote], Some(MAIN));
    first.ok();
    assert_eq!(first.status("build"), "succeeded", "{}", first.show());
    assert_eq!(
        first
            .stderr
            .lines()
            .filter(|l| l.contains("remote cache"))
            .count(),
        1,
        "warned once: {}",
        first.show()
    );
    assert!(
        first.stderr.contains("local cache only"),
        "{}",
        first.show()
    );
    // The local cache still works.
    std::fs::remove_dir_all(a.path().join("out")).unwrap();
    let second = a.run(&keys, &["--remote-cache", &remote], Some(MAIN));
    assert_eq!(second.status("build"), "cached", "{}", second.show());
    assert_eq!(a.runs(), 1);
}

#[test]
fn an_https_url_is_a_usage_error() {
    let keys = Keys::new();
    let a = Checkout::new(&keys);
    let ran = a.run(&keys, &["--remote-cache", "https://cache.example"], None);
    assert_eq!(ran.out.status.code(), Some(2), "{}", ran.show());
    assert!(ran.stderr.contains("--remote-cache"), "{}", ran.show());
    assert_eq!(a.runs(), 0);
}

/// A blob as the local cache stores it (zstd, named by the BLAKE3 of its content) and its
/// name, and a manifest and its key, from a checkout's cache after a run.
fn stored_entry(c: &Checkout) -> ((String, Vec<u8>), (String, Vec<u8>)) {
    let blob = files_under(&c.cache.path().join("cas"))
        .into_iter()
        .next()
        .expect("a blob");
    let manifest = files_under(&c.cache.path().join("ac/trusted"))
        .into_iter()
        .next()
        .expect("a manifest");
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    (
        (name(&blob), std::fs::read(&blob).unwrap()),
        (name(&manifest), std::fs::read(&manifest).unwrap()),
    )
}

#[test]
fn the_native_protocol_checks_digests_namespaces_and_trust() {
    let svc = Service::start();
    let keys = Keys::new();
    let a = Checkout::new(&keys);
    a.run(&keys, &[], None).ok();
    let ((digest, blob), (key, manifest)) = stored_entry(&a);
    let main = bearer(MAIN);
    let fork = bearer(FORK);
    let other = "0".repeat(64);

    // A blob whose content does not hash to its name: 400, nothing stored.
    let (status, _, body) = svc.request("PUT", &format!("/native/cas/{other}"), Some(&main), &blob);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = svc.request("GET", &format!("/native/cas/{other}"), Some(&main), b"");
    assert_eq!(status, 404);
    // Not zstd at all: 400.
    let (status, _, _) = svc.request("PUT", &format!("/native/cas/{digest}"), Some(&main), b"x");
    assert_eq!(status, 400);
    // The right name: stored, and served back as sent.
    let (status, _, _) = svc.request("PUT", &format!("/native/cas/{digest}"), Some(&main), &blob);
    assert_eq!(status, 200);
    let (status, _, got) = svc.request("GET", &format!("/native/cas/{digest}"), Some(&main), b"");
    assert_eq!((status, got), (200, blob.clone()));

    // One query says which blobs are missing.
    let query = format!("[\"{digest}\",\"{other}\"]");
    let (status, headers, got) =
        svc.request("POST", "/native/cas/missing", Some(&main), query.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(String::from_utf8(got).unwrap(), format!("[\"{other}\"]"));
    let (status, _, _) = svc.request("POST", "/native/cas/missing", Some(&main), b"[\"x\"]");
    assert_eq!(status, 400);

    // Manifests: stored as sent; a fork's token never writes the trusted namespace.
    let trusted = format!("/native/trusted/ac/{key}");
    let (status, _, _) = svc.request("PUT", &trusted, Some(&fork), &manifest);
    assert_eq!(status, 403);
    let (status, _, _) = svc.request("GET", &trusted, Some(&main), b"");
    assert_eq!(status, 404, "the refused upload stored nothing");
    let (status, _, _) = svc.request(
        "PUT",
        &format!("/native/fork-pr-9/ac/{key}"),
        Some(&fork),
        &manifest,
    );
    assert_eq!(status, 200);
    let (status, _, _) = svc.request("PUT", &trusted, Some(&main), &manifest);
    assert_eq!(status, 200);
    let (status, _, got) = svc.request("GET", &trusted, Some(&fork), b"");
    assert_eq!((status, got), (200, manifest.clone()));
    // A read-only token reads, and does not write.
    let reader = bearer(READER);
    let (status, _, _) = svc.request("HEAD", &trusted, Some(&reader), b"");
    assert_eq!(status, 200);
    let (status, _, _) = svc.request("PUT", &trusted, Some(&reader), &manifest);
    assert_eq!(status, 403);
    // Bad namespaces and keys, an empty manifest, and no token.
    for path in [
        format!("/native/Trusted/ac/{key}"),
        format!("/native/../ac/{key}"),
        format!("/native/trusted/ac/{}", &key[1..]),
        format!("/native/a/b/ac/{key}"),
    ] {
        let (status, _, _) = svc.request("PUT", &path, Some(&main), &manifest);
        assert_eq!(status, 400, "{path}");
    }
    let (status, _, _) = svc.request("PUT", &trusted, Some(&main), b"");
    assert_eq!(status, 400);
    let (status, _, _) = svc.request("GET", &trusted, None, b"");
    assert_eq!(status, 401);
}
