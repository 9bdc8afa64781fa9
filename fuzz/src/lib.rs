//! What the fuzz targets share: a fixed signing key, a sample manifest and its sealed
//! envelope, and byte-level edits driven by the fuzzer's input.
//!
//! Everything here is deterministic (the key comes from fixed bytes, Ed25519 signatures are
//! deterministic), so a crashing input found once reproduces anywhere, and the seed files
//! under `seeds/` can be checked against what this code makes (see the tests below).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::LazyLock;

use ci_intel_cache::digest::Digest;
use ci_intel_cache::key::KeySummary;
use ci_intel_cache::manifest::{Blob, Manifest, Output, OutputKind};
use ci_intel_cache::sign::SigningKey;

/// The secret of the fixed key: the first Ed25519 test vector of RFC 8032 (section 7.1), a
/// published key that protects nothing.
const SECRET_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// The fixed signing key.
///
/// The cache has no constructor from bytes (keys are generated or loaded), so the key is
/// written to a private temporary file in the key file format and loaded from there.
pub static KEY: LazyLock<SigningKey> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory for the fixed key");
    let path = dir.path().join("fixed.key");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create the fixed key file");
    writeln!(file, "ci-intel-signing-key v1 {SECRET_HEX}").expect("write the fixed key file");
    drop(file);
    SigningKey::load(&path).expect("load the fixed key")
});

fn summary() -> KeySummary {
    KeySummary {
        command: Digest::of(b"command"),
        env: Digest::of(b"env"),
        policy: Digest::of(b"policy"),
        inputs: Digest::of(b"inputs"),
        input_files: 3,
        outputs: Digest::of(b"outputs"),
        needs: Digest::of(b"needs"),
        tools: Digest::of(b"tools"),
        platform: "x86_64-linux-glibc2.36".into(),
        source_date_epoch: 1_700_000_000,
    }
}

fn out(path: &str, kind: OutputKind) -> Output {
    Output {
        path: path.into(),
        kind,
    }
}

fn file(content: &[u8], mode: u32) -> OutputKind {
    OutputKind::File {
        digest: Digest::of(content),
        size: content.len() as u64,
        mode,
    }
}

/// A manifest with every kind of output: directories, files, a symbolic link.
pub fn sample_manifest() -> Manifest {
    Manifest {
        key: summary().key(),
        namespace: "trusted".into(),
        outputs: vec![
            out("a", OutputKind::Dir { mode: 0o755 }),
            out("a/b", OutputKind::Dir { mode: 0o755 }),
            out("a/b/c", file(b"c", 0o644)),
            out(
                "a/l",
                OutputKind::Symlink {
                    target: "../bin".into(),
                },
            ),
            out("bin", file(b"bin", 0o755)),
        ],
        exit_code: 0,
        log: Blob {
            digest: Digest::of(b"log"),
            size: 3,
        },
        duration_ms: 1234,
        inputs: summary(),
        created_unix: 1_700_000_100,
    }
}

/// The sample manifest sealed with [`KEY`].
pub static SEALED: LazyLock<Vec<u8>> = LazyLock::new(|| {
    sample_manifest()
        .seal(&KEY)
        .expect("seal the sample manifest")
});

/// `body` signed with [`KEY`] in an envelope, whatever `body` is: the format of
/// `ci_intel_cache::manifest` (magic line, signer, signature over the domain-separated
/// body, blank line, body), written independently of it.
pub fn envelope(body: &[u8]) -> Vec<u8> {
    let mut msg = b"ci-intel-manifest v1\0".to_vec();
    msg.extend_from_slice(body);
    let signature = KEY.sign(&msg);
    let mut out = format!(
        "ci-intel-manifest v1\nsigner {}\nsignature {}\n\n",
        KEY.public(),
        hex(&signature)
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies the edits `data` describes to `bytes`, four input bytes per edit:
/// `[op, offset low, offset high, value]`, the offset taken modulo the current length.
/// Ops (modulo 5): set a byte, xor a byte (never a no-op unless the value is 0), insert a
/// byte, remove a byte, truncate. A trailing partial edit is ignored.
pub fn apply_edits(bytes: &mut Vec<u8>, data: &[u8]) {
    for e in data.chunks_exact(4) {
        let n = bytes.len();
        let at = usize::from(u16::from_le_bytes([e[1], e[2]]));
        let value = e[3];
        match e[0] % 5 {
            0 if n > 0 => bytes[at % n] = value,
            1 if n > 0 => bytes[at % n] ^= value,
            2 => bytes.insert(at % (n + 1), value),
            3 if n > 0 => {
                bytes.remove(at % n);
            }
            4 => bytes.truncate(at % (n + 1)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The seed files are what this code makes. With `CI_INTEL_FUZZ_WRITE_SEEDS=1` they are
    /// written instead of checked.
    #[test]
    fn seeds_match_the_fixtures() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let body = sample_manifest().encode().unwrap();
        let expected = [
            ("manifest_open/sealed", SEALED.clone()),
            ("manifest_body/canonical", body),
        ];
        for (name, bytes) in expected {
            let path = seeds.join(name);
            if std::env::var_os("CI_INTEL_FUZZ_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let stored = std::fs::read(&path).unwrap();
            assert!(
                stored == bytes,
                "{} is stale: run `CI_INTEL_FUZZ_WRITE_SEEDS=1 cargo test` in fuzz/",
                path.display()
            );
        }
    }

    #[test]
    fn the_independent_envelope_is_the_sealed_one() {
        let body = sample_manifest().encode().unwrap();
        assert_eq!(envelope(&body), *SEALED);
    }

    #[test]
    fn edits_change_what_they_say() {
        let mut b = b"abcd".to_vec();
        apply_edits(&mut b, &[0, 1, 0, b'X', 2, 0, 0, b'<', 3, 4, 0, 0]);
        assert_eq!(b, b"<aXc");
        apply_edits(&mut b, &[4, 2, 0, 0, 9]);
        assert_eq!(b, b"<a");
    }
}
