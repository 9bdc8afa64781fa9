//! Looking after the local cache: statistics, the scrub and least-recently-used eviction,
//! on real caches with entries broken in the ways a disk or a writer can break them.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ci_intel_cache::ActionKey;
use ci_intel_cache::digest::Digest;
use ci_intel_cache::index::Index;
use ci_intel_cache::key::KeyInputs;
use ci_intel_cache::maintenance::{EntryName, STALE_AFTER};
use ci_intel_cache::manifest::open;
use ci_intel_cache::sign::SigningKey;
use ci_intel_cache::store::{LocalCache, StoreRequest};

mod common;

use common::Fixture;

impl Fixture {
    /// Stores a step named `label` whose outputs are `files` (path, content) and whose log
    /// is `built <label>`.
    fn store(&self, cache: &LocalCache, label: &str, files: &[(&str, &[u8])]) -> ActionKey {
        let ws = self.dir.path().join(format!("ws-{label}"));
        for (path, content) in files {
            let p = ws.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        let key = key_for(label);
        let outputs: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
        let log = ws.join("step.log");
        fs::create_dir_all(&ws).unwrap();
        fs::write(&log, format!("built {label}\n")).unwrap();
        cache
            .store(&StoreRequest {
                key,
                summary: inputs(label).summary(),
                root: &ws,
                outputs: &outputs,
                exit_code: 0,
                log: &log,
                log_offset: 0,
                duration: Duration::from_millis(5),
            })
            .unwrap();
        key
    }

    /// Restores `key` into a fresh directory: each output's content.
    fn restored(&self, cache: &LocalCache, key: &ActionKey) -> Vec<(String, Vec<u8>)> {
        let entry = cache.lookup(key).entry.expect("a hit");
        let out = tempfile::tempdir_in(self.dir.path()).unwrap();
        cache.restore(&entry, out.path(), None).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = entry
            .manifest
            .outputs
            .iter()
            .map(|o| (o.path.clone(), fs::read(out.path().join(&o.path)).unwrap()))
            .collect();
        files.sort();
        files
    }
}

fn inputs(label: &str) -> KeyInputs {
    KeyInputs {
        argv: vec!["make".into(), label.into()],
        platform: "test".into(),
        ..KeyInputs::default()
    }
}

fn key_for(label: &str) -> ActionKey {
    inputs(label).key()
}

/// Rewrites a (read-only) file with `f` applied to its bytes.
fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, bytes).unwrap();
}

fn flip_a_bit(path: &Path) {
    rewrite(path, |b| {
        let i = b.len() / 2;
        b[i] ^= 0x10;
    });
}

/// Sets a file's modification time `ago` in the past.
fn age(path: &Path, ago: Duration) {
    fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

/// The blob holding `content`.
fn blob(cache: &LocalCache, content: &[u8]) -> PathBuf {
    cache.cas().path(&Digest::of(content))
}

/// Bytes on disk that `key` alone takes: its manifest and each of its blobs once.
fn entry_bytes(cache: &LocalCache, namespace: &str, key: &ActionKey) -> u64 {
    let path = cache.manifest_path(namespace, key);
    let manifest = open(&fs::read(&path).unwrap(), |_| true).unwrap().manifest;
    let blobs: BTreeSet<Digest> = manifest.blobs().map(|b| b.digest).collect();
    fs::metadata(&path).unwrap().len()
        + blobs
            .iter()
            .map(|d| fs::metadata(cache.cas().path(d)).unwrap().len())
            .sum::<u64>()
}

/// Moves every index row `secs` into the past, as if the entries were stored earlier.
fn age_index(f: &Fixture, secs: i64) {
    let db = rusqlite::Connection::open(f.cache_root().join("index.db")).unwrap();
    db.execute(
        "UPDATE entries SET last_used = last_used - ?1, created = created - ?1",
        [secs],
    )
    .unwrap();
}

/// 50 kB that do not compress: stored as raw zstd blocks, so a flipped bit lands in the
/// content and only a full hash notices.
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..50_000)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}
const SHARED: &[u8] = b"the same header in every entry";

#[test]
fn the_scrub_finds_a_flipped_bit_that_a_lookup_does_not() {
    let big_a = noise(1);
    let big_b = noise(2);
    let f = Fixture::new();
    let cache = f.trusted();
    let a = f.store(&cache, "a", &[("out/a", &big_a)]);
    let b = f.store(&cache, "b", &[("out/b", &big_b)]);
    flip_a_bit(&blob(&cache, &big_a));

    // A lookup checks signatures and presence, not content: the damage is not seen yet.
    assert!(cache.lookup(&a).entry.is_some());

    let report = cache.verify_all().unwrap();
    assert_eq!(report.entries_checked, 2);
    // Two outputs and two logs.
    assert_eq!(report.blobs_checked, 4);
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    let q = &report.quarantined[0];
    assert_eq!((q.key, q.namespace.as_str()), (a, "trusted"));
    assert!(q.reason.contains("is corrupt"), "{}", q.reason);
    assert!(q.path.join("reason").is_file());
    assert!(
        q.path
            .join(format!("blob-{}", Digest::of(&big_a)))
            .is_file(),
        "the corrupt blob went with it"
    );
    assert!(!blob(&cache, &big_a).exists());
    assert!(cache.lookup(&a).entry.is_none());
    assert_eq!(f.restored(&cache, &b), [("out/b".to_string(), big_b)]);

    // The scrub left a clean cache behind.
    let again = cache.verify_all().unwrap();
    assert_eq!((again.entries_checked, again.quarantined.len()), (1, 0));
    assert_eq!(cache.stats().unwrap().in_quarantine, 1);
}

#[test]
fn the_scrub_quarantines_every_entry_naming_a_corrupt_blob() {
    let big_a = noise(1);
    let big_b = noise(2);
    let f = Fixture::new();
    let cache = f.trusted();
    let a = f.store(&cache, "a", &[("out/a", &big_a), ("out/h", SHARED)]);
    let b = f.store(&cache, "b", &[("out/b", &big_b), ("out/h", SHARED)]);
    let c = f.store(&cache, "c", &[("out/c", b"unrelated")]);
    rewrite(&blob(&cache, SHARED), |bytes| {
        bytes.truncate(bytes.len() - 2)
    });

    let report = cache.verify_all().unwrap();
    let mut keys: Vec<ActionKey> = report.quarantined.iter().map(|q| q.key).collect();
    keys.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(keys, expected, "{report:?}");
    assert!(cache.lookup(&c).entry.is_some());
    assert!(cache.lookup(&a).entry.is_none() && cache.lookup(&b).entry.is_none());
}

#[test]
fn the_scrub_removes_corrupt_unnamed_blobs_and_stale_temporary_files() {
    let big_a = noise(1);
    let f = Fixture::new();
    let cache = f.trusted();
    f.store(&cache, "a", &[("out/a", &big_a)]);
    cache
        .cas()
        .put_bytes(b"an intact blob nothing names")
        .unwrap();
    let bad = cache.cas().put_bytes(&[b'z'; 10_000]).unwrap().blob.digest;
    flip_a_bit(&cache.cas().path(&bad));
    let tmp = f.cache_root().join("tmp");
    fs::write(tmp.join(".blob-old"), b"left by a crash").unwrap();
    age(
        &tmp.join(".blob-old"),
        STALE_AFTER + Duration::from_secs(60),
    );
    fs::write(tmp.join(".blob-new"), b"a store under way").unwrap();

    let report = cache.verify_all().unwrap();
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert_eq!(report.stray_blobs_removed, 1);
    assert_eq!(report.temp_files_removed, 1);
    // The entry's two blobs and the two unnamed ones.
    assert_eq!(report.blobs_checked, 4);
    assert!(!cache.cas().contains(&bad));
    assert!(blob(&cache, b"an intact blob nothing names").is_file());
    assert!(!tmp.join(".blob-old").exists());
    assert!(tmp.join(".blob-new").exists());
}

#[test]
fn the_scrub_keeps_foreign_entries_and_refuses_an_untrusted_signer_in_trusted() {
    let f = Fixture::new();
    // A pull request's entry, signed by the machine's own key, which a trusted run (signing
    // with the trusted key) does not accept.
    let pr_key = f.store(&f.pr("pr-1"), "pr", &[("out/p", b"pr output")]);
    let cache = f.trusted();
    let good = f.store(&cache, "good", &[("out/g", b"good output")]);

    let report = cache.verify_all().unwrap();
    assert_eq!((report.entries_checked, report.foreign), (2, 1));
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert!(f.pr("pr-1").lookup(&pr_key).entry.is_some());

    // A trusted-namespace manifest re-signed by an unknown key is poison: quarantined.
    let path = cache.manifest_path("trusted", &good);
    let genuine = open(&fs::read(&path).unwrap(), |_| true).unwrap().manifest;
    let forged = genuine.seal(&SigningKey::generate().unwrap()).unwrap();
    rewrite(&path, |b| *b = forged);
    // A foreign entry edited after signing is broken, whoever signed it.
    rewrite(&f.pr("pr-1").manifest_path("pr-1", &pr_key), |b| {
        let text = String::from_utf8(b.clone()).unwrap();
        *b = text
            .replace("\"exit_code\":0", "\"exit_code\":1")
            .into_bytes();
    });

    let report = cache.verify_all().unwrap();
    let mut reasons: Vec<(String, String)> = report
        .quarantined
        .iter()
        .map(|q| (q.namespace.clone(), q.reason.clone()))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{report:?}");
    assert_eq!(reasons[0].0, "pr-1");
    assert!(
        reasons[0].1.contains("signature does not verify"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, "trusted");
    assert!(reasons[1].1.contains("untrusted key"), "{reasons:?}");
}

#[test]
fn gc_evicts_the_least_recently_used_entry_and_keeps_shared_blobs() {
    let big_a = noise(1);
    let big_b = noise(2);
    let f = Fixture::new();
    let cache = f.trusted();
    let a = f.store(&cache, "a", &[("out/a", &big_a), ("out/h", SHARED)]);
    let b = f.store(&cache, "b", &[("out/b", &big_b), ("out/h", SHARED)]);
    // Both were stored a while ago; `a` is restored now, `b` is not.
    age_index(&f, 3600);
    let a_files = f.restored(&cache, &a);

    let a_alone = entry_bytes(&cache, "trusted", &a);
    let before = cache.stats().unwrap().bytes_on_disk;
    assert!(before > a_alone);
    let report = cache.gc(a_alone).unwrap();
    assert_eq!(
        report.evicted,
        [EntryName {
            namespace: "trusted".into(),
            key: b
        }]
    );
    assert!(report.quarantined.is_empty());
    // `b`'s output and its log; the shared blob stays.
    assert_eq!(report.blobs_removed, 2);
    assert_eq!((report.bytes_before, report.bytes_after), (before, a_alone));
    assert!(!blob(&cache, &big_b).exists());
    assert!(!blob(&cache, b"built b\n").exists());
    assert!(blob(&cache, SHARED).is_file());
    assert!(!cache.manifest_path("trusted", &b).exists());
    let ix = Index::open(&f.cache_root().join("index.db")).unwrap();
    assert!(ix.entry("trusted", &b.to_string()).unwrap().is_none());
    assert!(ix.entry("trusted", &a.to_string()).unwrap().is_some());

    // What remains is whole: it verifies and restores.
    let scrub = cache.verify_all().unwrap();
    assert_eq!((scrub.entries_checked, scrub.quarantined.len()), (1, 0));
    assert_eq!(f.restored(&cache, &a), a_files);
    assert!(cache.lookup(&b).entry.is_none());
}

#[test]
fn gc_without_index_rows_goes_by_manifest_age() {
    let big_a = noise(1);
    let big_b = noise(2);
    let f = Fixture::new();
    let cache = f.trusted();
    let old = f.store(&cache, "old", &[("out/o", &big_a)]);
    let new = f.store(&cache, "new", &[("out/n", &big_b)]);
    let db = rusqlite::Connection::open(f.cache_root().join("index.db")).unwrap();
    db.execute("DELETE FROM entries", []).unwrap();
    age(
        &cache.manifest_path("trusted", &old),
        Duration::from_secs(7200),
    );
    age(
        &cache.manifest_path("trusted", &new),
        Duration::from_secs(3600),
    );

    let report = cache.gc(entry_bytes(&cache, "trusted", &new)).unwrap();
    assert_eq!(report.evicted.len(), 1);
    assert_eq!(report.evicted[0].key, old);
    assert!(cache.lookup(&new).entry.is_some());
}

#[test]
fn gc_removes_stale_unnamed_blobs_but_not_a_store_under_way() {
    let big_a = noise(1);
    let f = Fixture::new();
    let cache = f.trusted();
    let a = f.store(&cache, "a", &[("out/a", &big_a)]);
    let stale = cache.cas().put_bytes(b"left by an old crash").unwrap().blob;
    age(
        &cache.cas().path(&stale.digest),
        STALE_AFTER + Duration::from_secs(60),
    );
    // Just written, its manifest not yet: it may be a store under way.
    let young = cache.cas().put_bytes(b"a store under way").unwrap().blob;

    let report = cache.gc(u64::MAX).unwrap();
    assert!(report.evicted.is_empty());
    assert_eq!((report.blobs_removed, report.young_blobs_kept), (1, 1));
    assert!(!cache.cas().contains(&stale.digest));
    assert!(cache.cas().contains(&young.digest));
    assert!(cache.lookup(&a).entry.is_some());
}

#[test]
fn gc_to_zero_empties_the_cache_and_quarantines_what_is_broken() {
    let big_a = noise(1);
    let big_b = noise(2);
    let f = Fixture::new();
    let cache = f.trusted();
    f.store(&cache, "a", &[("out/a", &big_a), ("out/h", SHARED)]);
    f.store(&cache, "b", &[("out/b", &big_b), ("out/h", SHARED)]);
    let broken = f.store(&cache, "broken", &[("out/x", b"x")]);
    rewrite(&cache.manifest_path("trusted", &broken), |b| {
        b.truncate(b.len() - 1);
    });

    let report = cache.gc(0).unwrap();
    assert_eq!(report.evicted.len(), 2);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].key, broken);
    // The broken entry's blobs are fresh and named by nothing that verifies: kept until
    // stale, like any blob a store may be about to name.
    assert_eq!(report.young_blobs_kept, 2);
    assert_eq!(report.blobs_removed, 5);
    let stats = cache.stats().unwrap();
    assert_eq!((stats.entries, stats.blobs), (0, 2));
    assert_eq!(report.bytes_after, stats.bytes_on_disk);
    let scrub = cache.verify_all().unwrap();
    assert_eq!((scrub.entries_checked, scrub.quarantined.len()), (0, 0));
}

#[test]
fn gc_refuses_to_remove_anything_when_a_manifest_cannot_be_read() {
    let big_a = noise(1);
    let big_b = noise(2);
    let f = Fixture::new();
    let cache = f.trusted();
    let a = f.store(&cache, "a", &[("out/a", &big_a)]);
    let b = f.store(&cache, "b", &[("out/b", &big_b)]);
    // A manifest that fails to read (not one that is missing): a link to itself, ELOOP.
    let path = cache.manifest_path("trusted", &b);
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&path, &path).unwrap();

    let err = cache.gc(0).unwrap_err();
    assert!(
        err.to_string().contains("could not read the cache entry"),
        "{err}"
    );
    assert!(cache.lookup(&a).entry.is_some(), "nothing was evicted");
    assert!(blob(&cache, &big_b).is_file(), "nothing was removed");
}

#[test]
fn stats_count_per_namespace_and_the_hit_ratio() {
    let big_a = noise(1);
    let big_b = noise(2);
    let f = Fixture::new();
    let cache = f.trusted();
    let empty = cache.stats().unwrap();
    assert_eq!(empty.hit_ratio, None);
    assert_eq!(
        serde_json::to_value(&empty).unwrap()["hit_ratio"],
        serde_json::Value::Null
    );

    let a = f.store(&cache, "a", &[("out/a", &big_a), ("out/h", SHARED)]);
    f.store(&cache, "b", &[("out/b", &big_b), ("out/h", SHARED)]);
    f.store(&f.pr("pr-1"), "p", &[("out/p", b"pr")]);
    f.restored(&cache, &a);
    assert!(cache.lookup(&key_for("never stored")).entry.is_none());

    let stats = cache.stats().unwrap();
    let names: Vec<&str> = stats.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pr-1", "trusted"]);
    let trusted = &stats.namespaces[1];
    assert_eq!(
        (trusted.entries, trusted.indexed_entries, trusted.hits),
        (2, 2, 1)
    );
    assert_eq!(stats.namespaces[0].entries, 1);
    assert_eq!(stats.entries, 3);
    assert_eq!(
        trusted.manifest_bytes,
        [a, key_for("b")]
            .iter()
            .map(|k| fs::metadata(cache.manifest_path("trusted", k))
                .unwrap()
                .len())
            .sum::<u64>()
    );
    assert!(trusted.stored_bytes > 0);
    assert!(trusted.last_used_unix.is_some());
    // a, b, the shared header, the pull request's output, three logs.
    let listed = cache.cas().list().unwrap();
    assert_eq!(stats.blobs, 7);
    assert_eq!(stats.blobs, listed.len() as u64);
    assert_eq!(stats.blob_bytes, listed.iter().map(|(_, n)| n).sum::<u64>());
    assert_eq!(stats.bytes_on_disk, stats.manifest_bytes + stats.blob_bytes);
    assert_eq!(
        (
            stats.counters.hits,
            stats.counters.misses,
            stats.counters.stores,
            stats.counters.quarantined
        ),
        (1, 1, 3, 0)
    );
    assert_eq!(stats.hit_ratio, Some(0.5));
    assert_eq!(stats.in_quarantine, 0);

    // The JSON shape is the documented one.
    let json = serde_json::to_value(&stats).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json),
        [
            "blob_bytes",
            "blobs",
            "bytes_on_disk",
            "counters",
            "entries",
            "hit_ratio",
            "in_quarantine",
            "manifest_bytes",
            "namespaces"
        ]
    );
    assert_eq!(
        keys(&json["namespaces"][0]),
        [
            "entries",
            "hits",
            "indexed_entries",
            "last_used_unix",
            "manifest_bytes",
            "name",
            "stored_bytes"
        ]
    );
    assert_eq!(
        keys(&json["counters"]),
        ["hits", "misses", "quarantined", "stores"]
    );
    assert_eq!(json["hit_ratio"], 0.5);
    assert_eq!(json["namespaces"][1]["name"], "trusted");
}
