//! What a cache entry says, its canonical encoding and its signed envelope.
//!
//! A [`Manifest`] names a step's outputs by digest, with its exit status, log, timing and
//! the [`KeySummary`] of its key. It is stored as an envelope:
//!
//! ```text
//! ci-intel-manifest v1\n
//! signer <64 lowercase hex: the Ed25519 public key>\n
//! signature <128 lowercase hex>\n
//! \n
//! <canonical JSON body>
//! ```
//!
//! The signature covers `ci-intel-manifest v1\0` followed by the body, so it can never
//! pass for a signature over anything else. The canonical body is the compact JSON
//! serde_json writes for the [`Manifest`] (fields in declaration order, outputs sorted by
//! path); a body that does not re-encode to exactly the same bytes is refused, so there is
//! one signed spelling of each manifest and no room for whitespace, reordering, escapes or
//! duplicate keys.
//!
//! Envelopes come from other machines and runs: [`open`] bounds the size, parses the header
//! strictly, checks the signer is trusted and the signature holds, and only then parses the
//! body, checks it is canonical and [validates](Manifest::validate) it. Nothing is
//! restored from a manifest that has not passed all of these.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::ActionKey;
use crate::digest::{Digest, hex};
use crate::key::KeySummary;
use crate::sign::{PublicKey, SigningKey, unhex_lower};

/// The first line of an envelope.
const MAGIC: &[u8] = b"ci-intel-manifest v1\n";
/// What a signature is over, before the body.
const DOMAIN: &[u8] = b"ci-intel-manifest v1\0";

/// The largest envelope [`open`] reads and [`Manifest::seal`] makes, in bytes.
pub const MAX_ENVELOPE: usize = 64 << 20;
/// The most outputs a manifest may name.
pub const MAX_OUTPUTS: usize = 1_000_000;
/// The longest output path or symbolic link target, in bytes.
pub const MAX_PATH: usize = 4096;
/// The longest namespace, in bytes.
pub const MAX_NAMESPACE: usize = 64;

/// What a cache entry says about one run of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The action key the entry is stored under.
    pub key: ActionKey,
    /// Whose entry this is (`trusted`, `pr-123`, ...): see [`crate::namespace::is_valid`].
    pub namespace: String,
    /// The outputs, sorted by path (bytewise), each path once.
    pub outputs: Vec<Output>,
    /// The step's exit code.
    pub exit_code: i32,
    /// The step's recorded output.
    pub log: Blob,
    /// How long the step ran.
    pub duration_ms: u64,
    /// The digests of the key's parts, to explain a later miss.
    pub inputs: KeySummary,
    /// When the entry was made, in seconds since the Unix epoch.
    pub created_unix: u64,
}

/// Some content in the blob store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    /// Its digest.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
}

/// One output of a step.
///
/// In JSON: `{"kind":"file","path":..,"digest":..,"size":..,"mode":..}`,
/// `{"kind":"dir","path":..,"mode":..}` or `{"kind":"symlink","path":..,"target":..}`
/// (modes as decimal numbers).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "OutputRepr")]
pub struct Output {
    /// `/`-separated, relative to the step's output root, only plain names.
    pub path: String,
    /// What is there.
    pub kind: OutputKind,
}

/// What an output is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A regular file with this content and these permission bits (at most `0o777`).
    File {
        /// Digest of the content.
        digest: Digest,
        /// Length of the content in bytes.
        size: u64,
        /// Permission bits.
        mode: u32,
    },
    /// A directory with these permission bits (at most `0o777`).
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link; its target stays inside the output root.
    Symlink {
        /// The target, relative.
        target: String,
    },
}

/// The JSON shape of an [`Output`], read.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum OutputRepr {
    File {
        path: String,
        digest: Digest,
        size: u64,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// The JSON shape of an [`Output`], written (the same shape as [`OutputRepr`]).
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum OutputRef<'a> {
    File {
        path: &'a str,
        digest: &'a Digest,
        size: u64,
        mode: u32,
    },
    Dir {
        path: &'a str,
        mode: u32,
    },
    Symlink {
        path: &'a str,
        target: &'a str,
    },
}

impl From<OutputRepr> for Output {
    fn from(r: OutputRepr) -> Output {
        match r {
            OutputRepr::File {
                path,
                digest,
                size,
                mode,
            } => Output {
                path,
                kind: OutputKind::File { digest, size, mode },
            },
            OutputRepr::Dir { path, mode } => Output {
                path,
                kind: OutputKind::Dir { mode },
            },
            OutputRepr::Symlink { path, target } => Output {
                path,
                kind: OutputKind::Symlink { target },
            },
        }
    }
}

impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let path = self.path.as_str();
        match &self.kind {
            OutputKind::File { digest, size, mode } => OutputRef::File {
                path,
                digest,
                size: *size,
                mode: *mode,
            },
            OutputKind::Dir { mode } => OutputRef::Dir { path, mode: *mode },
            OutputKind::Symlink { target } => OutputRef::Symlink { path, target },
        }
        .serialize(s)
    }
}

/// A manifest that was signed by an accepted key, is canonical and is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The manifest.
    pub manifest: Manifest,
    /// Who signed it.
    pub signer: PublicKey,
}

/// Why a manifest cannot be encoded, sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The envelope's header is not exactly as written by [`Manifest::seal`].
    #[error("malformed envelope: {0}")]
    Envelope(&'static str),
    /// The envelope is larger than [`MAX_ENVELOPE`].
    #[error("manifest too large ({0} bytes, at most {MAX_ENVELOPE})")]
    TooLarge(usize),
    /// Signed by a key the reader does not accept.
    #[error("signed by an untrusted key {0}")]
    UntrustedSigner(PublicKey),
    /// The signature does not hold for the body under the named signer.
    #[error("signature does not verify")]
    BadSignature,
    /// The body is not a manifest (malformed JSON, a missing or unknown field, a bad
    /// value).
    #[error("malformed manifest body")]
    Body(#[source] serde_json::Error),
    /// The body is a manifest, but not in its one canonical encoding.
    #[error("manifest body is not in canonical form")]
    NotCanonical,
    /// The manifest breaks a rule of [`Manifest::validate`].
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

/// `s` quoted and escaped for a message, cut short if long.
fn shown(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

fn invalid(msg: String) -> ManifestError {
    ManifestError::Invalid(msg)
}

/// An output path: non-empty, relative, `/`-separated plain names, no backslash or control
/// character, at most [`MAX_PATH`] bytes.
fn check_path(path: &str) -> Result<(), ManifestError> {
    if path.is_empty() {
        return Err(invalid("empty output path".into()));
    }
    if path.len() > MAX_PATH {
        return Err(invalid(format!(
            "output path {} is longer than {MAX_PATH} bytes",
            shown(path)
        )));
    }
    if path.starts_with('/') {
        return Err(invalid(format!("output path {} is absolute", shown(path))));
    }
    if path.contains('\\') {
        return Err(invalid(format!(
            "output path {} contains a backslash",
            shown(path)
        )));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid(format!(
            "output path {} contains a control character",
            shown(path)
        )));
    }
    for part in path.split('/') {
        match part {
            "" => {
                return Err(invalid(format!(
                    "output path {} has an empty component",
                    shown(path)
                )));
            }
            "." | ".." => {
                return Err(invalid(format!(
                    "output path {} has a `{part}` component",
                    shown(path)
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A symbolic link's target: non-empty, relative, no NUL, at most [`MAX_PATH`] bytes, and
/// followed from the link's directory it stays inside the root. `..` may only lead the
/// target (`../../x`, not `x/../..`): after a name, `..` would climb from wherever that
/// name resolves to, which for another link need not be where the text says.
fn check_target(link: &str, target: &str) -> Result<(), ManifestError> {
    let fail = |why: &str| {
        Err(invalid(format!(
            "symlink {} -> {} {why}",
            shown(link),
            shown(target)
        )))
    };
    if target.is_empty() {
        return fail("has an empty target");
    }
    if target.len() > MAX_PATH {
        return fail(&format!("has a target longer than {MAX_PATH} bytes"));
    }
    if target.contains('\0') {
        return fail("has a NUL in its target");
    }
    if target.starts_with('/') {
        return fail("has an absolute target");
    }
    // Depth of the link's directory below the root.
    let mut depth = link.matches('/').count();
    let mut named = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if named => return fail("has `..` after a name in its target"),
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return fail("points outside the output root"),
            },
            _ => {
                named = true;
                depth += 1;
            }
        }
    }
    Ok(())
}

impl Manifest {
    /// Checks every rule a manifest must keep to be restored:
    /// - the namespace is valid ([`crate::namespace::is_valid`]);
    /// - at most [`MAX_OUTPUTS`] outputs, with paths sorted strictly ascending (bytewise,
    ///   so each path once), each non-empty, relative, `/`-separated plain names (no `.`,
    ///   `..` or empty component, no trailing `/`), no backslash or control character, at
    ///   most [`MAX_PATH`] bytes;
    /// - no output beneath a file or symbolic link output;
    /// - file and directory modes at most `0o777` (no set-id or sticky bit);
    /// - symbolic link targets non-empty, relative, without NUL, and staying inside the
    ///   root when followed from the link's directory (`..` only at the start).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !crate::namespace::is_valid(&self.namespace) {
            return Err(invalid(format!(
                "namespace {} is not 1 to 64 of [a-z0-9._-] (nor `.` or `..`)",
                shown(&self.namespace)
            )));
        }
        if self.outputs.len() > MAX_OUTPUTS {
            return Err(invalid(format!(
                "{} outputs, more than {MAX_OUTPUTS}",
                self.outputs.len()
            )));
        }
        // Outputs that cannot have anything beneath them. A path's ancestors sort before
        // it, so they are in here by the time it is checked.
        let mut leaves: HashSet<&str> = HashSet::new();
        let mut previous: Option<&str> = None;
        for output in &self.outputs {
            let path = output.path.as_str();
            check_path(path)?;
            if let Some(prev) = previous {
                if prev == path {
                    return Err(invalid(format!("output {} appears twice", shown(path))));
                }
                if prev > path {
                    return Err(invalid(format!(
                        "outputs are not sorted: {} before {}",
                        shown(prev),
                        shown(path)
                    )));
                }
            }
            for (slash, _) in path.match_indices('/') {
                let ancestor = &path[..slash];
                if leaves.contains(ancestor) {
                    return Err(invalid(format!(
                        "output {} is beneath {}, which is not a directory",
                        shown(path),
                        shown(ancestor)
                    )));
                }
            }
            match &output.kind {
                OutputKind::File { mode, .. } | OutputKind::Dir { mode } => {
                    if *mode > 0o777 {
                        return Err(invalid(format!(
                            "output {} has mode {mode:o} (set-id, sticky or unknown bits)",
                            shown(path)
                        )));
                    }
                }
                OutputKind::Symlink { target } => check_target(path, target)?,
            }
            if !matches!(output.kind, OutputKind::Dir { .. }) {
                leaves.insert(path);
            }
            previous = Some(path);
        }
        Ok(())
    }

    /// Every blob the entry needs: each file's content, in output order, then the log.
    /// The same blob may come more than once.
    pub fn blobs(&self) -> impl Iterator<Item = Blob> + '_ {
        self.outputs
            .iter()
            .filter_map(|o| match o.kind {
                OutputKind::File { digest, size, .. } => Some(Blob { digest, size }),
                OutputKind::Dir { .. } | OutputKind::Symlink { .. } => None,
            })
            .chain(std::iter::once(self.log))
    }

    /// The canonical encoding: compact JSON, fields in declaration order. Validates first.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        serde_json::to_vec(self).map_err(ManifestError::Body)
    }

    /// The signed envelope of the canonical encoding. Validates first; refuses to make an
    /// envelope larger than [`MAX_ENVELOPE`], which [`open`] would refuse.
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, ManifestError> {
        let sealed = envelope(key, &self.encode()?);
        if sealed.len() > MAX_ENVELOPE {
            return Err(ManifestError::TooLarge(sealed.len()));
        }
        Ok(sealed)
    }
}

/// What a signature over `body` signs.
fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN.len() + body.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(body);
    msg
}

/// `body` signed by `key`, in an envelope (whatever `body` is).
fn envelope(key: &SigningKey, body: &[u8]) -> Vec<u8> {
    let signature = key.sign(&signed_message(body));
    let header = format!("signer {}\nsignature {}\n\n", key.public(), hex(&signature));
    let mut out = Vec::with_capacity(MAGIC.len() + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

/// `line` = `name` + `N` bytes of lowercase hex + `\n`; the bytes and what follows.
fn header_field<'a, const N: usize>(
    rest: &'a [u8],
    name: &[u8],
    missing: &'static str,
    malformed: &'static str,
) -> Result<([u8; N], &'a [u8]), ManifestError> {
    let rest = rest
        .strip_prefix(name)
        .ok_or(ManifestError::Envelope(missing))?;
    let (digits, rest) = rest
        .split_at_checked(2 * N)
        .ok_or(ManifestError::Envelope(malformed))?;
    let rest = rest
        .strip_prefix(b"\n")
        .ok_or(ManifestError::Envelope(malformed))?;
    let bytes = unhex_lower::<N>(digits).ok_or(ManifestError::Envelope(malformed))?;
    Ok((bytes, rest))
}

/// Opens an envelope made by [`Manifest::seal`]: checks its size and header, that
/// `accept` trusts the signer and that the signature holds; only then parses the body,
/// checks it is canonical and valid.
pub fn open(bytes: &[u8], accept: impl Fn(&PublicKey) -> bool) -> Result<Opened, ManifestError> {
    if bytes.len() > MAX_ENVELOPE {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    let rest = bytes.strip_prefix(MAGIC).ok_or(ManifestError::Envelope(
        "not a `ci-intel-manifest v1` envelope",
    ))?;
    let (signer, rest) = header_field::<32>(
        rest,
        b"signer ",
        "no signer line",
        "signer is not 64 lowercase hex digits and a newline",
    )?;
    let (signature, rest) = header_field::<64>(
        rest,
        b"signature ",
        "no signature line",
        "signature is not 128 lowercase hex digits and a newline",
    )?;
    let body = rest
        .strip_prefix(b"\n")
        .ok_or(ManifestError::Envelope("no blank line after the header"))?;

    let signer = PublicKey(signer);
    if !accept(&signer) {
        return Err(ManifestError::UntrustedSigner(signer));
    }
    if !signer.verify(&signed_message(body), &signature) {
        return Err(ManifestError::BadSignature);
    }

    let manifest: Manifest = serde_json::from_slice(body).map_err(ManifestError::Body)?;
    if serde_json::to_vec(&manifest).map_err(ManifestError::Body)? != body {
        return Err(ManifestError::NotCanonical);
    }
    manifest.validate()?;
    Ok(Opened { manifest, signer })
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::sign::Keyring;

    static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate().unwrap());

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

    fn file(content: &[u8], mode: u32) -> OutputKind {
        OutputKind::File {
            digest: Digest::of(content),
            size: content.len() as u64,
            mode,
        }
    }

    fn dir() -> OutputKind {
        OutputKind::Dir { mode: 0o755 }
    }

    fn link(target: &str) -> OutputKind {
        OutputKind::Symlink {
            target: target.into(),
        }
    }

    fn out(path: &str, kind: OutputKind) -> Output {
        Output {
            path: path.into(),
            kind,
        }
    }

    fn sample() -> Manifest {
        Manifest {
            key: summary().key(),
            namespace: "trusted".into(),
            outputs: vec![
                out("a", dir()),
                out("a/b", dir()),
                out("a/b/c", file(b"c", 0o644)),
                out("a/l", link("../bin")),
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

    fn ring() -> Keyring {
        [KEY.public()].into_iter().collect()
    }

    fn sealed() -> Vec<u8> {
        sample().seal(&KEY).unwrap()
    }

    fn open_with_ring(bytes: &[u8]) -> Result<Opened, ManifestError> {
        let ring = ring();
        open(bytes, |k| ring.contains(k))
    }

    /// The body of an envelope made by `seal`.
    fn body_of(sealed: &[u8]) -> &[u8] {
        let at = sealed.windows(2).position(|w| w == b"\n\n").unwrap();
        &sealed[at + 2..]
    }

    #[test]
    fn seal_then_open_round_trips() {
        let sealed = sealed();
        let opened = open_with_ring(&sealed).unwrap();
        assert_eq!(opened.manifest, sample());
        assert_eq!(opened.signer, KEY.public());
        let text = String::from_utf8(sealed.clone()).unwrap();
        let lines: Vec<&str> = text.splitn(5, '\n').collect();
        assert_eq!(lines[0], "ci-intel-manifest v1");
        assert_eq!(lines[1], format!("signer {}", KEY.public()));
        assert!(lines[2].starts_with("signature ") && lines[2].len() == 10 + 128);
        assert_eq!(lines[3], "");
        assert_eq!(lines[4].as_bytes(), sample().encode().unwrap());
        // The signature is over the domain-separated body, not the bare body.
        let sig: [u8; 64] = unhex_lower(&lines[2].as_bytes()[10..]).unwrap();
        assert!(
            KEY.public()
                .verify(&signed_message(lines[4].as_bytes()), &sig)
        );
        assert!(!KEY.public().verify(lines[4].as_bytes(), &sig));
    }

    #[test]
    fn the_json_shape_is_explicit() {
        let body = String::from_utf8(sample().encode().unwrap()).unwrap();
        let c = Digest::of(b"c");
        assert!(
            body.starts_with(&format!(
                "{{\"key\":\"{}\",\"namespace\":\"trusted\",\"outputs\":[\
                 {{\"kind\":\"dir\",\"path\":\"a\",\"mode\":493}},\
                 {{\"kind\":\"dir\",\"path\":\"a/b\",\"mode\":493}},\
                 {{\"kind\":\"file\",\"path\":\"a/b/c\",\"digest\":\"{c}\",\"size\":1,\"mode\":420}},\
                 {{\"kind\":\"symlink\",\"path\":\"a/l\",\"target\":\"../bin\"}},",
                summary().key()
            )),
            "{body}"
        );
        assert!(
            body.contains("],\"exit_code\":0,\"log\":{\"digest\":\""),
            "{body}"
        );
        assert!(body.ends_with(",\"created_unix\":1700000100}"), "{body}");
    }

    #[test]
    fn an_unaccepted_signer_is_refused_before_anything_else() {
        let sealed = sealed();
        let other: Keyring = [SigningKey::generate().unwrap().public()]
            .into_iter()
            .collect();
        match open(&sealed, |k| other.contains(k)) {
            Err(ManifestError::UntrustedSigner(k)) => assert_eq!(k, KEY.public()),
            r => panic!("{r:?}"),
        }
        // Even with a body that is not JSON at all: the signer is checked first.
        let junk = envelope(&KEY, b"not json");
        assert!(matches!(
            open(&junk, |_| false),
            Err(ManifestError::UntrustedSigner(_))
        ));
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let sealed = sealed();
        for bit in 0..sealed.len() * 8 {
            let mut b = sealed.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let r = open_with_ring(&b);
            assert!(
                r.is_err(),
                "bit {bit} of byte {:?}",
                sealed[bit / 8] as char
            );
            if bit / 8 >= sealed.len() - body_of(&sealed).len() {
                assert!(
                    matches!(r, Err(ManifestError::BadSignature)),
                    "body bit {bit}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn a_body_edited_after_signing_is_refused() {
        let sealed = sealed();
        let old = Digest::of(b"c").to_hex();
        let new = Digest::of(b"evil").to_hex();
        let text = String::from_utf8(sealed).unwrap();
        assert_eq!(text.matches(&old).count(), 1);
        let edited = text.replace(&old, &new);
        assert!(matches!(
            open_with_ring(edited.as_bytes()),
            Err(ManifestError::BadSignature)
        ));
        // Signed by someone else, but naming the trusted key.
        let forged =
            String::from_utf8(sample().seal(&SigningKey::generate().unwrap()).unwrap()).unwrap();
        let forged = forged.replacen(
            &forged[7 + MAGIC.len()..7 + MAGIC.len() + 64],
            &KEY.public().to_string(),
            1,
        );
        assert!(matches!(
            open_with_ring(forged.as_bytes()),
            Err(ManifestError::BadSignature)
        ));
    }

    #[test]
    fn correctly_signed_non_canonical_bodies_are_refused() {
        let m = sample();
        let canonical = m.encode().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&canonical).unwrap();
        let text = String::from_utf8(canonical.clone()).unwrap();
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("pretty", serde_json::to_vec_pretty(&m).unwrap()),
            ("trailing newline", [&canonical[..], b"\n"].concat()),
            ("leading space", [b" ", &canonical[..]].concat()),
            // serde_json::Value sorts object keys.
            ("keys reordered", serde_json::to_vec(&value).unwrap()),
            (
                "uppercase digest",
                text.replace(
                    &Digest::of(b"c").to_hex(),
                    &Digest::of(b"c").to_hex().to_uppercase(),
                )
                .into_bytes(),
            ),
            (
                "escaped letter",
                text.replace("\"trusted\"", "\"tr\\u0075sted\"")
                    .into_bytes(),
            ),
        ];
        for (what, body) in bodies {
            assert_ne!(body, canonical, "{what}");
            let r = open_with_ring(&envelope(&KEY, &body));
            assert!(
                matches!(r, Err(ManifestError::NotCanonical)),
                "{what}: {r:?}"
            );
        }
    }

    #[test]
    fn correctly_signed_bodies_that_are_not_manifests_are_refused() {
        let text = String::from_utf8(sample().encode().unwrap()).unwrap();
        let cases = [
            (
                "duplicate key",
                text.replace("\"exit_code\":0", "\"exit_code\":0,\"exit_code\":1"),
            ),
            (
                "unknown field",
                text.replace("\"exit_code\":0", "\"exit_code\":0,\"extra\":1"),
            ),
            (
                "unknown output field",
                text.replace("\"mode\":420", "\"mode\":420,\"owner\":0"),
            ),
            (
                "unknown kind",
                text.replace("\"kind\":\"dir\"", "\"kind\":\"fifo\""),
            ),
            ("missing field", text.replace(",\"duration_ms\":1234", "")),
            ("float", text.replace("\"size\":1,", "\"size\":1.0,")),
            (
                "negative zero",
                text.replace("\"exit_code\":0", "\"exit_code\":-0"),
            ),
            ("leading zero", text.replace("\"size\":1,", "\"size\":01,")),
            ("not json", "ci-intel".into()),
            ("empty", String::new()),
        ];
        for (what, body) in cases {
            let r = open_with_ring(&envelope(&KEY, body.as_bytes()));
            assert!(matches!(r, Err(ManifestError::Body(_))), "{what}: {r:?}");
        }
    }

    #[test]
    fn correctly_signed_invalid_manifests_are_refused() {
        let mut m = sample();
        m.outputs[0].path = "../a".into();
        let body = serde_json::to_vec(&m).unwrap();
        let r = open_with_ring(&envelope(&KEY, &body));
        assert!(matches!(r, Err(ManifestError::Invalid(_))), "{r:?}");
        assert!(m.seal(&KEY).is_err());
    }

    #[test]
    fn the_header_is_parsed_strictly() {
        let text = String::from_utf8(sealed()).unwrap();
        let public = KEY.public().to_string();
        let variants = [
            text.replacen("ci-intel-manifest v1", "ci-intel-manifest v2", 1),
            text.replacen(&public, &public.to_uppercase(), 1),
            text.replacen("signer ", "signer  ", 1),
            text.replacen("\n\n", "\n", 1),
            text.replacen("\n\n", "\n\r\n", 1),
            text.replace('\n', "\r\n"),
            format!("\n{text}"),
            text[..MAGIC.len() + 30].to_string(),
            String::new(),
        ];
        for v in variants {
            let r = open_with_ring(v.as_bytes());
            assert!(matches!(r, Err(ManifestError::Envelope(_))), "{v:?}: {r:?}");
        }
        let sig_at = text.find("signature ").unwrap() + 10;
        let mut upper = text.clone();
        upper.replace_range(
            sig_at..sig_at + 128,
            &text[sig_at..sig_at + 128].to_uppercase(),
        );
        assert_ne!(upper, text);
        assert!(matches!(
            open_with_ring(upper.as_bytes()),
            Err(ManifestError::Envelope(_))
        ));
    }

    #[test]
    fn oversized_envelopes_are_refused_unread() {
        let mut big = sealed();
        big.resize(MAX_ENVELOPE + 1, b' ');
        assert!(matches!(
            open(&big, |_| panic!("the signer was looked at")),
            Err(ManifestError::TooLarge(n)) if n == MAX_ENVELOPE + 1
        ));
    }

    #[test]
    fn blobs_are_the_files_and_the_log() {
        let m = sample();
        let blobs: Vec<Blob> = m.blobs().collect();
        assert_eq!(
            blobs,
            [
                Blob {
                    digest: Digest::of(b"c"),
                    size: 1
                },
                Blob {
                    digest: Digest::of(b"bin"),
                    size: 3
                },
                m.log,
            ]
        );
    }

    fn with(mutate: impl FnOnce(&mut Manifest)) -> Result<(), ManifestError> {
        let mut m = sample();
        mutate(&mut m);
        m.validate()
    }

    fn with_outputs(outputs: Vec<Output>) -> Result<(), ManifestError> {
        with(|m| m.outputs = outputs)
    }

    #[test]
    fn validate_accepts_the_sample() {
        sample().validate().unwrap();
        with_outputs(vec![]).unwrap();
        with_outputs(vec![out("a/b/c", file(b"", 0o600))]).unwrap();
        with_outputs(vec![
            out("a", dir()),
            out("a/b", dir()),
            out("a/b/c", file(b"x", 0o777)),
        ])
        .unwrap();
        with_outputs(vec![out("a", dir()), out("a/l", link("../b"))]).unwrap();
        with_outputs(vec![out("a/b/l", link("./.././../c/./d//e"))]).unwrap();
        with_outputs(vec![out("l", link("."))]).unwrap();
        // `a-b` sorts between `a` and `a/...`; still nothing is beneath a file.
        with_outputs(vec![
            out("a", dir()),
            out("a-b", file(b"", 0o644)),
            out("a/c", file(b"", 0o644)),
        ])
        .unwrap();
        with_outputs(vec![out("dir with space/ünïcödé", file(b"", 0o644))]).unwrap();
        with(|m| m.namespace = "pr-123".into()).unwrap();
        with(|m| m.namespace = "0.x_y-z".into()).unwrap();
        with(|m| m.namespace = "a".repeat(64)).unwrap();
        with(|m| m.namespace = "-x_.y".into()).unwrap();
        with(|m| m.namespace = "...".into()).unwrap();
    }

    #[test]
    fn validate_rejects_unsafe_paths() {
        for path in [
            "../x", "/abs", "a//b", "a/./b", "a/", "a\\b", "", ".", "..", "a/..", "./a", "a\0b",
            "a\nb", "a\u{7f}", "a\u{85}b",
        ] {
            let r = with_outputs(vec![out(path, file(b"", 0o644))]);
            assert!(
                matches!(r, Err(ManifestError::Invalid(_))),
                "{path:?}: {r:?}"
            );
        }
        let long = "a/".repeat(MAX_PATH / 2) + "a";
        assert!(with_outputs(vec![out(&long, file(b"", 0o644))]).is_err());
        let just = "a/".repeat(MAX_PATH / 2 - 1) + "ab";
        assert_eq!(just.len(), MAX_PATH);
        with_outputs(vec![out(&just, file(b"", 0o644))]).unwrap();
    }

    #[test]
    fn validate_rejects_unsorted_duplicate_and_nested_outputs() {
        let cases = [
            (
                "unsorted",
                vec![out("b", dir()), out("a", dir())],
                "not sorted",
            ),
            (
                "duplicate",
                vec![out("a", dir()), out("a", file(b"", 0o644))],
                "twice",
            ),
            (
                "child of a file",
                vec![out("a", file(b"", 0o644)), out("a/b", file(b"", 0o644))],
                "beneath",
            ),
            (
                "grandchild of a file",
                vec![out("a", file(b"", 0o644)), out("a/b/c", dir())],
                "beneath",
            ),
            (
                "child of a symlink",
                vec![
                    out("a", link("b")),
                    out("a/x", file(b"", 0o644)),
                    out("b", dir()),
                ],
                "beneath",
            ),
            (
                "child of a file after a sibling",
                vec![
                    out("a", file(b"", 0o644)),
                    out("a-b", dir()),
                    out("a/c", dir()),
                ],
                "beneath",
            ),
        ];
        for (what, outputs, expect) in cases {
            match with_outputs(outputs) {
                Err(ManifestError::Invalid(msg)) => assert!(msg.contains(expect), "{what}: {msg}"),
                r => panic!("{what}: {r:?}"),
            }
        }
    }

    #[test]
    fn validate_rejects_special_mode_bits() {
        for mode in [0o4755, 0o2755, 0o1777, 0o10644, u32::MAX] {
            assert!(
                with_outputs(vec![out("a", file(b"", mode))]).is_err(),
                "{mode:o}"
            );
            assert!(
                with_outputs(vec![out("a", OutputKind::Dir { mode })]).is_err(),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn validate_rejects_escaping_symlinks() {
        let cases = [
            ("l", "/etc/passwd"),
            ("a/l", "../../x"),
            ("l", ".."),
            ("l", "../x"),
            ("a/b/l", "../../.."),
            ("l", ""),
            ("l", "x\0y"),
            // `..` after a name climbs from wherever the name resolves to.
            ("l", "s/.."),
            ("a/l", "b/../../c"),
        ];
        for (path, target) in cases {
            let mut outputs = vec![out(path, link(target))];
            if path.starts_with("a/") {
                outputs.insert(0, out("a", dir()));
            }
            let r = with_outputs(outputs);
            assert!(
                matches!(r, Err(ManifestError::Invalid(_))),
                "{path} -> {target:?}: {r:?}"
            );
        }
        let long = "x/".repeat(MAX_PATH / 2) + "x";
        assert!(with_outputs(vec![out("l", link(&long))]).is_err());
    }

    #[test]
    fn validate_rejects_bad_namespaces() {
        for ns in [
            "", ".", "..", "Trusted", "pr 1", "pr/1", "../x", "ns\n", "é",
        ] {
            assert!(with(|m| m.namespace = ns.into()).is_err(), "{ns:?}");
        }
        assert!(with(|m| m.namespace = "a".repeat(65)).is_err());
    }

    #[test]
    fn validate_limits_the_number_of_outputs() {
        let outputs = |n: usize| -> Vec<Output> {
            (0..n)
                .map(|i| out(&format!("{i:07}"), OutputKind::Dir { mode: 0o755 }))
                .collect()
        };
        let mut m = sample();
        m.outputs = outputs(MAX_OUTPUTS + 1);
        match m.validate() {
            Err(ManifestError::Invalid(msg)) => assert!(msg.contains("1000001 outputs"), "{msg}"),
            r => panic!("{r:?}"),
        }
        m.outputs.pop();
        m.validate().unwrap();
    }

    #[test]
    fn error_messages_are_single_lowercase_lines() {
        let mut m = sample();
        m.outputs = vec![out("a\nb", dir())];
        let errors = [
            m.validate().unwrap_err(),
            ManifestError::Envelope("x"),
            ManifestError::TooLarge(1),
            ManifestError::UntrustedSigner(KEY.public()),
            ManifestError::BadSignature,
            ManifestError::NotCanonical,
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
            assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s}");
        }
    }

    /// A byte-level edit of an envelope.
    #[derive(Debug, Clone)]
    enum Edit {
        Set(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Remove),
            any::<usize>().prop_map(Edit::Truncate),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
        for e in edits {
            let n = bytes.len();
            match *e {
                Edit::Set(i, b) if n > 0 => bytes[i % n] = b,
                Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
                Edit::Remove(i) if n > 0 => {
                    bytes.remove(i % n);
                }
                Edit::Truncate(i) => bytes.truncate(i % (n + 1)),
                Edit::Set(..) | Edit::Remove(_) => {}
            }
        }
    }

    proptest! {
        #[test]
        fn a_flipped_bit_anywhere_is_refused(bit in any::<usize>()) {
            let sealed = sealed();
            let mut b = sealed.clone();
            let bit = bit % (b.len() * 8);
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open_with_ring(&b).is_err());
        }

        #[test]
        fn random_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..1024), magic in any::<bool>()) {
            let bytes = if magic { [MAGIC, &bytes].concat() } else { bytes };
            prop_assert!(open(&bytes, |_| true).is_err());
        }

        #[test]
        fn an_edited_envelope_never_opens(edits in proptest::collection::vec(edit(), 1..8)) {
            let sealed = sealed();
            let mut b = sealed.clone();
            apply(&mut b, &edits);
            let r = open(&b, |_| true);
            if b == sealed {
                prop_assert!(r.is_ok());
            } else {
                prop_assert!(r.is_err(), "{:?}", String::from_utf8_lossy(&b));
            }
        }

        /// Bodies a trusted signer got wrong reach the parser and the rules: they must
        /// never panic, and whatever opens is canonical and valid.
        #[test]
        fn edited_bodies_signed_correctly_never_panic(edits in proptest::collection::vec(edit(), 1..8)) {
            let mut body = sample().encode().unwrap();
            apply(&mut body, &edits);
            if let Ok(opened) = open_with_ring(&envelope(&KEY, &body)) {
                prop_assert_eq!(opened.manifest.encode().unwrap(), body);
            }
        }

        #[test]
        fn validate_never_panics(paths in proptest::collection::vec(any::<String>(), 0..6), targets in proptest::collection::vec("[./a-c]{0,12}", 0..6)) {
            let mut m = sample();
            m.outputs = paths.iter().map(|p| out(p, dir())).collect();
            m.outputs.extend(targets.iter().enumerate().map(|(i, t)| out(&format!("z/{i}"), link(t))));
            let _ = m.validate();
        }

        /// A symlink that validates never climbs above the root, whatever it says.
        #[test]
        fn valid_symlinks_stay_inside(depth in 0usize..4, target in "(\\.\\.|\\.|[ab])(/(\\.\\.|\\.|[ab]|)){0,6}") {
            let link_path = (0..depth).map(|_| "d/").collect::<String>() + "l";
            if check_target(&link_path, &target).is_ok() {
                let mut level = depth as i64;
                for part in target.split('/') {
                    match part {
                        "" | "." => {}
                        ".." => level -= 1,
                        _ => level += 1,
                    }
                    prop_assert!(level >= 0, "{} -> {}", link_path, target);
                }
            }
        }
    }
}
