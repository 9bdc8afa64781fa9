//! The local cache, for real: store, look up, restore, and every way an entry can be
//! broken — each detected, quarantined, and never restored.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ci_intel_cache::ActionKey;
use ci_intel_cache::key::{KeyInputs, KeySummary};
use ci_intel_cache::manifest::open;
use ci_intel_cache::namespace::Namespaces;
use ci_intel_cache::sign::SigningKey;
use ci_intel_cache::store::{LocalCache, RestoreError, StoreRequest};

mod common;

use common::Fixture;

impl Fixture {
    /// A workspace with a few outputs of every kind, made by "running the step".
    fn workspace(&self, name: &str, content: &str) -> PathBuf {
        let ws = self.dir.path().join(name);
        fs::create_dir_all(ws.join("out/sub/empty")).unwrap();
        fs::write(ws.join("out/bin"), format!("#!/bin/sh\necho {content}\n")).unwrap();
        fs::set_permissions(ws.join("out/bin"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(ws.join("out/sub/data.txt"), content.repeat(1000)).unwrap();
        std::os::unix::fs::symlink("sub/data.txt", ws.join("out/link")).unwrap();
        fs::write(ws.join("single.o"), format!("object {content}")).unwrap();
        fs::write(ws.join("step.log"), format!("built {content}\n")).unwrap();
        ws
    }
}

fn key_for(label: &str) -> (ActionKey, KeySummary) {
    let inputs = KeyInputs {
        argv: vec!["make".into(), label.into()],
        platform: "test".into(),
        ..KeyInputs::default()
    };
    (inputs.key(), inputs.summary())
}

fn store(cache: &LocalCache, key: ActionKey, summary: &KeySummary, ws: &Path) {
    let outputs = ["out".to_string(), "single.o".to_string()];
    cache
        .store(&StoreRequest {
            key,
            summary: summary.clone(),
            root: ws,
            outputs: &outputs,
            exit_code: 0,
            log: &ws.join("step.log"),
            log_offset: 0,
            duration: Duration::from_millis(1234),
        })
        .unwrap();
}

/// Every file, link and directory under `root`, with content, target or mode.
fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o777;
            if m.file_type().is_symlink() {
                out.push((rel, format!("-> {}", fs::read_link(&p).unwrap().display())));
            } else if m.is_dir() {
                out.push((rel.clone(), format!("dir {mode:o}")));
                walk(root, &p, out);
            } else {
                let c = fs::read(&p).unwrap();
                out.push((rel, format!("{mode:o} {}", blake3::hash(&c))));
            }
        }
    }
    walk(root, root, &mut out);
    out.retain(|(p, _)| p != "step.log");
    out
}

#[test]
fn a_stored_entry_is_restored_exactly() {
    let f = Fixture::new();
    let cache = f.trusted();
    let (key, summary) = key_for("all");
    let ws = f.workspace("ws", "hello");
    store(&cache, key, &summary, &ws);

    let lookup = cache.lookup(&key);
    assert!(lookup.quarantined.is_empty());
    let entry = lookup.entry.expect("a hit");
    assert_eq!(entry.manifest.exit_code, 0);
    assert_eq!(entry.manifest.duration_ms, 1234);
    assert_eq!(entry.manifest.inputs, summary);
    assert_eq!(cache.log(&entry).unwrap(), b"built hello\n");

    let fresh = f.dir.path().join("fresh");
    fs::create_dir_all(&fresh).unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    cache.restore(&entry, &fresh, Some(t)).unwrap();
    assert_eq!(tree(&fresh), tree(&ws));
    assert_eq!(
        fs::metadata(fresh.join("out/bin"))
            .unwrap()
            .modified()
            .unwrap(),
        t
    );
    assert_eq!(
        fs::metadata(fresh.join("out/sub"))
            .unwrap()
            .modified()
            .unwrap(),
        t
    );
}

#[test]
fn a_miss_is_a_miss() {
    let f = Fixture::new();
    let lookup = f.trusted().lookup(&key_for("never stored").0);
    assert!(lookup.entry.is_none());
    assert!(lookup.quarantined.is_empty());
}

/// Stores one entry in the trusted namespace, damages it with `damage`, and checks the
/// lookup or the restore refuses it for a reason containing `expect`, quarantines it, and
/// leaves no corrupt output.
fn refused(what: &str, expect: &str, damage: impl FnOnce(&Fixture, &LocalCache, ActionKey)) {
    let f = Fixture::new();
    let cache = f.trusted();
    let (key, summary) = key_for(what);
    let ws = f.workspace("ws", "payload");
    store(&cache, key, &summary, &ws);
    damage(&f, &cache, key);

    let fresh = f.dir.path().join("fresh");
    fs::create_dir_all(&fresh).unwrap();
    let lookup = cache.lookup(&key);
    let quarantined = match lookup.entry {
        None => lookup.quarantined,
        Some(entry) => match cache.restore(&entry, &fresh, None) {
            Err(RestoreError::Corrupt(q)) => vec![q],
            other => panic!("{what}: restored anyway: {other:?}"),
        },
    };
    assert_eq!(quarantined.len(), 1, "{what}");
    let q = &quarantined[0];
    assert!(!q.reason.is_empty(), "{what}");
    assert!(q.reason.contains(expect), "{what}: reason `{}`", q.reason);
    assert!(q.path.join("reason").is_file(), "{what}: reason file");
    assert!(
        !cache.manifest_path("trusted", &key).exists(),
        "{what}: entry still served"
    );
    // Whatever was restored before the damage was found is intact content.
    for (path, desc) in tree(&fresh) {
        let orig: Vec<_> = tree(&ws).into_iter().filter(|(p, _)| *p == path).collect();
        if desc.starts_with("dir") {
            continue;
        }
        assert_eq!(orig, [(path.clone(), desc)], "{what}: {path} differs");
    }
    // And the next lookup is a plain miss.
    let again = cache.lookup(&key);
    assert!(
        again.entry.is_none() && again.quarantined.is_empty(),
        "{what}"
    );
}

/// The stored blob holding `content`.
fn blob_path(cache: &LocalCache, content: &[u8]) -> PathBuf {
    cache
        .cas()
        .path(&ci_intel_cache::digest::Digest::of(content))
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_bit_in_a_blob_is_caught() {
    refused("flipped bit", "is corrupt", |_, cache, _| {
        rewrite(&blob_path(cache, "payload".repeat(1000).as_bytes()), |b| {
            let i = b.len() / 2;
            b[i] ^= 1;
        });
    });
}

#[test]
fn a_truncated_blob_is_caught() {
    refused("truncated blob", "cannot be decompressed", |_, cache, _| {
        rewrite(&blob_path(cache, "payload".repeat(1000).as_bytes()), |b| {
            b.truncate(b.len() - 3);
        });
    });
}

#[test]
fn a_swapped_blob_is_caught() {
    refused("swapped blob", "is corrupt", |_, cache, _| {
        let other = fs::read(blob_path(cache, b"object payload")).unwrap();
        rewrite(&blob_path(cache, "payload".repeat(1000).as_bytes()), |b| {
            *b = other;
        });
    });
}

#[test]
fn a_deleted_blob_is_caught_before_anything_is_restored() {
    refused("deleted blob", "is missing", |_, cache, _| {
        fs::remove_file(blob_path(cache, "payload".repeat(1000).as_bytes())).unwrap();
    });
}

#[test]
fn a_store_to_the_trusted_namespace_without_the_trusted_key_is_refused() {
    let f = Fixture::new();
    let rogue = f.open(Namespaces::trusted(), Some(SigningKey::generate().unwrap()));
    let (key, summary) = key_for("refused store");
    let ws = f.workspace("rogue", "evil");
    let outputs = ["out".to_string()];
    let err = rogue
        .store(&StoreRequest {
            key,
            summary,
            root: &ws,
            outputs: &outputs,
            exit_code: 0,
            log: &ws.join("step.log"),
            log_offset: 0,
            duration: Duration::ZERO,
        })
        .unwrap_err();
    assert!(err.to_string().contains("not trusted"), "{err}");
    assert!(!rogue.manifest_path("trusted", &key).exists());
}

#[test]
fn a_manifest_signed_by_an_untrusted_key_is_caught() {
    refused("untrusted signer", "untrusted key", |_, cache, key| {
        // A well-formed manifest for this very key and namespace, with blobs that are all
        // present, signed by a key that is not trusted: written straight into the store.
        let path = cache.manifest_path("trusted", &key);
        let genuine = open(&fs::read(&path).unwrap(), |_| true).unwrap().manifest;
        let forged = genuine.seal(&SigningKey::generate().unwrap()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, forged).unwrap();
    });
}

#[test]
fn a_manifest_whose_path_escapes_is_caught() {
    for (what, path, expect) in [
        ("climbing path", "../escaped", "`..` component"),
        ("absolute path", "/tmp/escaped", "is absolute"),
    ] {
        refused(what, expect, |f, cache, key| {
            // Validation refuses to seal such a manifest, so sign the body by hand, with
            // the trusted key: only the path rules stand in the way.
            let mp = cache.manifest_path("trusted", &key);
            let genuine = open(&fs::read(&mp).unwrap(), |_| true).unwrap().manifest;
            let mut body = String::from_utf8(genuine.encode().unwrap()).unwrap();
            body = body.replacen("\"path\":\"out/bin\"", &format!("\"path\":\"{path}\""), 1);
            assert!(body.contains(path), "{what}: edit applies");
            let mut message = b"ci-intel-manifest v1\0".to_vec();
            message.extend_from_slice(body.as_bytes());
            let sig = f.trusted.sign(&message);
            let envelope = format!(
                "ci-intel-manifest v1\nsigner {}\nsignature {}\n\n{body}",
                f.trusted.public(),
                sig.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            fs::set_permissions(&mp, fs::Permissions::from_mode(0o644)).unwrap();
            fs::write(&mp, envelope).unwrap();
        });
        // Nothing was written outside the restore root.
        assert!(!Path::new("/tmp/escaped").exists());
    }
}

#[test]
fn a_manifest_edited_after_signing_is_caught() {
    refused(
        "edited manifest",
        "signature does not verify",
        |_, cache, key| {
            let path = cache.manifest_path("trusted", &key);
            rewrite(&path, |b| {
                let text = String::from_utf8(b.clone()).unwrap();
                *b = text
                    .replace("\"exit_code\":0", "\"exit_code\":1")
                    .into_bytes();
                assert_ne!(*b, text.as_bytes(), "the edit applies");
            });
        },
    );
}

#[test]
fn a_manifest_moved_to_another_key_is_caught() {
    refused("moved manifest", "not this one", |_, cache, key| {
        let (other, summary) = key_for("another step");
        let ws = tempfile::tempdir().unwrap();
        fs::write(ws.path().join("step.log"), b"other").unwrap();
        cache
            .store(&StoreRequest {
                key: other,
                summary,
                root: ws.path(),
                outputs: &[],
                exit_code: 0,
                log: &ws.path().join("step.log"),
                log_offset: 0,
                duration: Duration::ZERO,
            })
            .unwrap();
        // A valid, trusted manifest — for a different key.
        fs::copy(
            cache.manifest_path("trusted", &other),
            cache.manifest_path("trusted", &key),
        )
        .unwrap();
    });
}

#[test]
fn a_pull_request_cannot_overwrite_or_shadow_a_trusted_entry() {
    let f = Fixture::new();
    let (key, summary) = key_for("shared step");
    let main_ws = f.workspace("main", "good");
    store(&f.trusted(), key, &summary, &main_ws);

    // The pull request computes the same key and stores a different result.
    let pr = f.pr("fork-pr-9");
    let pr_ws = f.workspace("pr", "evil");
    store(&pr, key, &summary, &pr_ws);
    assert!(pr.manifest_path("fork-pr-9", &key).is_file());

    // Trusted runs never see it; the pull request itself reads the trusted entry first.
    for (who, cache) in [("trusted", f.trusted()), ("pr", f.pr("fork-pr-9"))] {
        let entry = cache.lookup(&key).entry.expect("a hit");
        assert_eq!(entry.namespace, "trusted", "{who}");
        let out = f.dir.path().join(format!("restored-{who}"));
        fs::create_dir_all(&out).unwrap();
        cache.restore(&entry, &out, None).unwrap();
        assert_eq!(tree(&out), tree(&main_ws), "{who}");
    }

    // A PR-only key is served to the PR, and not to trusted runs.
    let (own, own_summary) = key_for("pr only");
    store(&pr, own, &own_summary, &pr_ws);
    assert_eq!(
        f.pr("fork-pr-9").lookup(&own).entry.unwrap().namespace,
        "fork-pr-9"
    );
    assert!(f.trusted().lookup(&own).entry.is_none());
    // Nor to another PR.
    assert!(f.pr("pr-10").lookup(&own).entry.is_none());
}

#[test]
fn concurrent_writers_of_one_key_both_succeed() {
    let f = Fixture::new();
    let (key, summary) = key_for("raced");
    let ws = f.workspace("ws", "same");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| store(&f.trusted(), key, &summary, &ws));
        }
    });
    let cache = f.trusted();
    let entry = cache.lookup(&key).entry.expect("a hit");
    let out = f.dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    cache.restore(&entry, &out, None).unwrap();
    assert_eq!(tree(&out), tree(&ws));
}

#[test]
fn a_restore_never_writes_through_a_link_in_the_workspace() {
    let f = Fixture::new();
    let cache = f.trusted();
    let (key, summary) = key_for("links");
    let ws = f.workspace("ws", "content");
    store(&cache, key, &summary, &ws);
    let entry = cache.lookup(&key).entry.unwrap();

    // The output directory itself is a link elsewhere: it is replaced by a real one.
    let outside = f.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let dest = f.dir.path().join("dest");
    fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("out")).unwrap();
    cache.restore(&entry, &dest, None).unwrap();
    assert!(fs::symlink_metadata(dest.join("out")).unwrap().is_dir());
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
    assert_eq!(tree(&dest), tree(&ws));
}

#[test]
fn a_restore_refuses_a_linked_parent_directory() {
    let f = Fixture::new();
    let cache = f.trusted();
    let (key, summary) = key_for("nested");
    let ws = f.dir.path().join("ws");
    fs::create_dir_all(ws.join("build/obj")).unwrap();
    fs::write(ws.join("build/obj/a.o"), b"object").unwrap();
    fs::write(ws.join("step.log"), b"").unwrap();
    let outputs = ["build/obj/a.o".to_string()];
    cache
        .store(&StoreRequest {
            key,
            summary,
            root: &ws,
            outputs: &outputs,
            exit_code: 0,
            log: &ws.join("step.log"),
            log_offset: 0,
            duration: Duration::ZERO,
        })
        .unwrap();
    let entry = cache.lookup(&key).entry.unwrap();
    let outside = f.dir.path().join("outside");
    fs::create_dir_all(outside.join("obj")).unwrap();
    let dest = f.dir.path().join("dest");
    fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("build")).unwrap();
    let err = cache.restore(&entry, &dest, None).unwrap_err();
    assert!(matches!(err, RestoreError::Destination { .. }), "{err}");
    assert!(
        !outside.join("obj/a.o").exists(),
        "nothing written through the link"
    );
}
