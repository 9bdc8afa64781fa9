//! Crash safety: a process storing into the cache is killed (SIGKILL) at arbitrary points,
//! over and over; whatever it leaves behind is either a whole entry or nothing. And two
//! processes storing the same key at once both succeed.
//!
//! The storing processes are this test binary run again (`--exact <test>`) with
//! [`ROLE`] set, so no extra program is needed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;
use std::{env, fs};

use ci_intel_cache::ActionKey;
use ci_intel_cache::key::KeyInputs;
use ci_intel_cache::namespace::Namespaces;
use ci_intel_cache::sign::SigningKey;
use ci_intel_cache::store::{CacheConfig, LocalCache, StoreRequest};

/// Set in a child: what it does (`loop`, or `same-key:N` for variant N).
const ROLE: &str = "CI_INTEL_CACHE_TEST_ROLE";
/// Set in a child: the test's directory (`cache/`, `trusted.key`).
const DIR: &str = "CI_INTEL_CACHE_TEST_DIR";

/// Keys the storing loop picks from, and versions of each key's outputs (a key is
/// stored again with other content, as a step that is not reproducible would).
const KEYS: u64 = 12;
const VARIANTS: u64 = 3;

/// splitmix64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key_inputs(i: u64) -> KeyInputs {
    KeyInputs {
        argv: vec!["build".into(), format!("target-{i}")],
        platform: "test".into(),
        ..KeyInputs::default()
    }
}

/// The outputs of key `i` in version `v`: path and content. Sizes vary so some blobs take
/// several writes; `common` is the same in every entry (a shared blob).
fn outputs(i: u64, v: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut x = i * 1000 + v + 1;
    let len = usize::try_from(1000 + (i * 7919 + v * 104_729) % 300_000).unwrap();
    let big = (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 59) as u8 + b'a'
        })
        .collect();
    vec![
        ("out/big", big),
        ("out/small", format!("key {i} version {v}\n").into_bytes()),
        ("out/common", b"shared by every entry\n".to_vec()),
    ]
}

fn log(i: u64, v: u64) -> Vec<u8> {
    format!("built {i} as version {v}\n").into_bytes()
}

/// The cache as a trusted run sees it, signing with `dir/trusted.key`.
fn open_cache(dir: &Path) -> LocalCache {
    LocalCache::open(CacheConfig {
        root: dir.join("cache"),
        namespaces: Namespaces::trusted(),
        signing_key: Some(SigningKey::load(&dir.join("trusted.key")).unwrap()),
    })
    .unwrap()
}

/// A test directory with a trusted key.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    key.save(&dir.path().join("trusted.key")).unwrap();
    let trusted = dir.path().join("cache/keys/trusted");
    fs::create_dir_all(&trusted).unwrap();
    key.public().save(&trusted.join("ci.pub")).unwrap();
    dir
}

/// Writes key `i` version `v`'s outputs into `ws` and stores them.
fn store(cache: &LocalCache, ws: &Path, i: u64, v: u64) {
    let files = outputs(i, v);
    for (path, content) in &files {
        let p = ws.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let names: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
    let log_path = ws.join("step.log");
    fs::write(&log_path, log(i, v)).unwrap();
    cache
        .store(&StoreRequest {
            key: key_inputs(i).key(),
            summary: key_inputs(i).summary(),
            root: ws,
            outputs: &names,
            exit_code: 0,
            log: &log_path,
            log_offset: 0,
            duration: Duration::from_millis(1),
        })
        .unwrap();
}

/// What a child prints when it is about to store. The test harness prints `test NAME ... `
/// on the same line first, so it is looked for at the end of a line.
const READY: &str = "<child ready>";

/// A child process, killed (SIGKILL) and reaped when dropped: a failing test never leaves
/// a storing loop behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs this test binary's `test` as a child with `role`, its stdin and stdout piped.
fn spawn(test: &str, role: &str, dir: &Path) -> (Reaped, BufReader<ChildStdout>) {
    let mut child = Command::new(env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Reaped(child), out)
}

/// Reads the child's stdout up to a line that ends with [`READY`].
fn wait_ready(out: &mut BufReader<ChildStdout>) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the child ended before it was ready");
        if line.trim_end().ends_with(READY) {
            return;
        }
    }
}

/// The role of this process, when it is a child; the test directory with it.
fn child_role() -> Option<(String, PathBuf)> {
    Some((env::var(ROLE).ok()?, PathBuf::from(env::var_os(DIR)?)))
}

/// Checks every key: a miss, or a restore that is exactly one whole version.
fn check_every_key(cache: &LocalCache, scratch: &Path) -> usize {
    let mut hits = 0;
    for i in 0..KEYS {
        let key: ActionKey = key_inputs(i).key();
        let lookup = cache.lookup(&key);
        assert!(lookup.quarantined.is_empty(), "{:?}", lookup.quarantined);
        let Some(entry) = lookup.entry else { continue };
        hits += 1;
        let dest = scratch.join(format!("restore-{i}"));
        fs::create_dir_all(&dest).unwrap();
        cache.restore(&entry, &dest, None).unwrap();
        let got: Vec<(&str, Vec<u8>)> = outputs(i, 0)
            .iter()
            .map(|(p, _)| (*p, fs::read(dest.join(p)).unwrap()))
            .collect();
        let got_log = cache.log(&entry).unwrap();
        let version = (0..VARIANTS).find(|&v| got == outputs(i, v) && got_log == log(i, v));
        assert!(
            version.is_some(),
            "key {i}: the restored outputs are not one whole version"
        );
    }
    hits
}

#[test]
fn a_store_killed_at_any_point_leaves_a_whole_entry_or_none() {
    const TEST: &str = "a_store_killed_at_any_point_leaves_a_whole_entry_or_none";
    if let Some((role, dir)) = child_role() {
        assert_eq!(role, "loop");
        // Store forever (until killed), keys and versions at random, repeats included.
        let cache = open_cache(&dir);
        let ws = dir.join(format!("ws-{}", std::process::id()));
        let mut rng = Rng(u64::from(std::process::id()));
        // Should the parent go away without killing this process, its end of stdin
        // closes: stop then.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(3);
        });
        println!("{READY}");
        loop {
            let (i, v) = (rng.below(KEYS), rng.below(VARIANTS));
            store(&cache, &ws, i, v);
        }
    }

    let dir = setup();
    let seed = 0x5eed_cafe;
    let mut rng = Rng(seed);
    for _ in 0..100 {
        let (mut child, mut out) = spawn(TEST, "loop", dir.path());
        wait_ready(&mut out);
        // The delay only spreads the kills over every phase of a store; what is checked
        // below must hold whatever point the kill lands on.
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the child was still storing when killed (seed {seed:#x})"
        );
    }

    let cache = open_cache(dir.path());
    let report = cache.verify_all().unwrap();
    assert!(
        report.quarantined.is_empty() && report.unreadable.is_empty(),
        "torn entries after kills (seed {seed:#x}): {report:?}"
    );
    assert_eq!(report.stray_blobs_removed, 0, "a torn blob under its name");
    assert!(
        report.entries_checked > 0,
        "nothing was ever stored: the test tested nothing"
    );
    let hits = check_every_key(&cache, dir.path());
    assert_eq!(hits, report.entries_checked);
}

#[test]
fn two_processes_storing_one_key_both_succeed() {
    const TEST: &str = "two_processes_storing_one_key_both_succeed";
    if let Some((role, dir)) = child_role() {
        let v: u64 = role.strip_prefix("same-key:").unwrap().parse().unwrap();
        let cache = open_cache(&dir);
        let ws = dir.join(format!("ws-{v}"));
        println!("{READY}");
        // Start together: both wait for the parent's word.
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        for _ in 0..20 {
            store(&cache, &ws, 0, v);
        }
        return;
    }

    let dir = setup();
    let mut children: Vec<_> = (0..2)
        .map(|v| spawn(TEST, &format!("same-key:{v}"), dir.path()))
        .collect();
    for (_, out) in &mut children {
        wait_ready(out);
    }
    for (child, _) in &mut children {
        child.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    for (child, _) in &mut children {
        let status = child.0.wait().unwrap();
        assert!(status.success(), "a writer failed: {status}");
    }

    let cache = open_cache(dir.path());
    let report = cache.verify_all().unwrap();
    assert_eq!(report.entries_checked, 1);
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert_eq!(check_every_key(&cache, dir.path()), 1);
}
