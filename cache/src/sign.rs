//! Ed25519 signing keys, public keys and keyrings.
//!
//! A cache entry is trusted only when it is signed by a key in the reader's [`Keyring`].
//! Keys are stored as one line of text:
//!
//! - a signing key: `ci-intel-signing-key v1 <64 lowercase hex>\n`, mode 0600; loading
//!   refuses a file that group or others may read or write, as ssh does;
//! - a public key: `ci-intel-public-key v1 <64 lowercase hex>\n`, mode 0644.
//!
//! Key files are never overwritten: they are written to a temporary file beside the
//! destination, flushed to disk, then hard-linked into place, which fails if the name
//! exists. A crash leaves either no key or a whole one (and at worst a stray temporary
//! file, itself 0600 for a signing key).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::Signer as _;

use crate::digest::hex;

/// The file name of the signing key [`keygen`] writes.
pub const KEY_FILE: &str = "ci-intel.key";
/// The file name of the public key [`keygen`] writes.
pub const PUB_FILE: &str = "ci-intel.pub";

const SIGNING_PREFIX: &[u8] = b"ci-intel-signing-key v1 ";
const PUBLIC_PREFIX: &[u8] = b"ci-intel-public-key v1 ";
/// Key files are one short line; anything longer is malformed and is not read further.
const MAX_KEY_FILE: u64 = 4096;

/// Why reading, writing or making a key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file or its directory could not be read or written.
    #[error("cannot access key file `{}`", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A key file does not hold exactly one key line of the expected kind.
    #[error("malformed key file `{}`", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// A signing key file that group or others may read or write.
    #[error(
        "signing key file `{}` is accessible by group or others (mode {mode:04o}); it must be 0600",
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The destination of a new key exists; keys are never overwritten.
    #[error("key file `{}` already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The operating system gave no random bytes.
    #[error("no randomness from the operating system")]
    Random(#[source] getrandom::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Exactly `2 * N` lowercase hex digits into `N` bytes (no uppercase: one spelling only).
pub(crate) fn unhex_lower<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if !s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    crate::digest::unhex::<N>(std::str::from_utf8(s).ok()?)
}

/// Overwrites a buffer that held secret material (best effort: the compiler is kept from
/// dropping the writes, copies made elsewhere are not reached).
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// An Ed25519 signing key. Its `Debug` shows only the public half; the secret is wiped
/// from memory when the key (or a clone) is dropped.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from 32 bytes of the operating system's randomness.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(KeyError::Random)?;
        let key = SigningKey(ed25519_dalek::SigningKey::from_bytes(&secret));
        wipe(&mut secret);
        Ok(key)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// Reads a key written by [`SigningKey::save`]. Refuses a file that group or others may
    /// read or write, and anything but one well-formed key line.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let (file, meta) = open_regular(path)?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let mut content = read_limited(file, path)?;
        let parsed = parse_key_line(&content, SIGNING_PREFIX);
        wipe(&mut content);
        let mut secret = parsed.ok_or_else(|| KeyError::Malformed {
            path: path.to_owned(),
        })?;
        let key = SigningKey(ed25519_dalek::SigningKey::from_bytes(&secret));
        wipe(&mut secret);
        Ok(key)
    }

    /// Writes the key to a new file `path` with mode 0600. Never overwrites:
    /// [`KeyError::Exists`] if `path` exists.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let mut secret = self.0.to_bytes();
        let mut content = Vec::with_capacity(SIGNING_PREFIX.len() + 65);
        content.extend_from_slice(SIGNING_PREFIX);
        let mut digits = hex(&secret).into_bytes();
        content.extend_from_slice(&digits);
        content.push(b'\n');
        wipe(&mut digits);
        wipe(&mut secret);
        let written = write_new(path, &content, 0o600);
        wipe(&mut content);
        written
    }
}

/// An Ed25519 public key: 32 bytes, shown and serialized as 64 lowercase hex digits.
///
/// Any 32 bytes are held; bytes that are not a usable curve point never verify.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Whether `sig` is a valid signature of `msg` under this key, by the strict rules
    /// (canonical encodings, no small-order key or nonce point). Invalid key bytes or a
    /// malformed signature are simply `false`.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }

    /// Reads a key written by [`PublicKey::save`]. Refuses anything but one well-formed key
    /// line naming a usable curve point.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let (file, _) = open_regular(path)?;
        let content = read_limited(file, path)?;
        parse_key_line(&content, PUBLIC_PREFIX)
            .filter(|bytes| {
                ed25519_dalek::VerifyingKey::from_bytes(bytes).is_ok_and(|k| !k.is_weak())
            })
            .map(PublicKey)
            .ok_or_else(|| KeyError::Malformed {
                path: path.to_owned(),
            })
    }

    /// Writes the key to a new file `path` with mode 0644. Never overwrites:
    /// [`KeyError::Exists`] if `path` exists.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let mut content = PUBLIC_PREFIX.to_vec();
        content.extend_from_slice(self.to_string().as_bytes());
        content.push(b'\n');
        write_new(path, &content, 0o644)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a public key (64 hex digits): `{0}`")]
pub struct ParsePublicKeyError(String);

impl FromStr for PublicKey {
    type Err = ParsePublicKeyError;

    /// 64 hex digits (either case, as for [`crate::digest::Digest`]).
    fn from_str(s: &str) -> Result<PublicKey, ParsePublicKeyError> {
        crate::digest::unhex::<32>(s)
            .map(PublicKey)
            .ok_or_else(|| ParsePublicKeyError(s.chars().take(80).collect()))
    }
}

serde_as_string!(PublicKey);

/// The public keys whose signatures are trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: BTreeSet<PublicKey>,
}

impl Keyring {
    /// An empty keyring: trusts nothing.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Trusts `key`; whether it was new.
    pub fn insert(&mut self, key: PublicKey) -> bool {
        self.keys.insert(key)
    }

    /// Whether `key` is trusted.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in order.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// Every `*.pub` file in `dir` (not its subdirectories), in name order. A missing
    /// directory is an empty keyring; an unreadable or malformed `.pub` file is an error
    /// naming it. Other files are ignored.
    pub fn load_dir(dir: &Path) -> Result<Keyring, KeyError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Keyring::new()),
            Err(e) => return Err(io_at(dir)(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_at(dir))?.path();
            if path.extension().is_some_and(|ext| ext == "pub") {
                files.push(path);
            }
        }
        files.sort();
        let mut ring = Keyring::new();
        for path in files {
            ring.insert(PublicKey::load(&path)?);
        }
        Ok(ring)
    }
}

impl FromIterator<PublicKey> for Keyring {
    fn from_iter<I: IntoIterator<Item = PublicKey>>(iter: I) -> Keyring {
        Keyring {
            keys: iter.into_iter().collect(),
        }
    }
}

/// Makes a new key pair in `dir` (created 0700 if missing): [`KEY_FILE`] (0600) and
/// [`PUB_FILE`] (0644). Refuses, naming the file, if either exists. Returns their paths,
/// signing key first.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_at(dir))?;
    let key_path = dir.join(KEY_FILE);
    let pub_path = dir.join(PUB_FILE);
    for path in [&key_path, &pub_path] {
        match fs::symlink_metadata(path) {
            Ok(_) => return Err(KeyError::Exists { path: path.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(path)(e)),
        }
    }
    let key = SigningKey::generate()?;
    key.save(&key_path)?;
    if let Err(e) = key.public().save(&pub_path) {
        // Leave no signing key without its public half; the key was made just now.
        if let Err(rm) = fs::remove_file(&key_path) {
            tracing::warn!(path = %key_path.display(), error = %rm, "cannot remove half-made key");
        }
        return Err(e);
    }
    Ok((key_path, pub_path))
}

/// Opens `path` for reading, without blocking on a FIFO, and checks it is a regular file.
fn open_regular(path: &Path) -> Result<(File, fs::Metadata), KeyError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_at(path))?;
    let meta = file.metadata().map_err(io_at(path))?;
    if !meta.is_file() {
        return Err(io_at(path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok((file, meta))
}

/// At most [`MAX_KEY_FILE`] + 1 bytes of `file`.
fn read_limited(file: File, path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut content = Vec::with_capacity(128);
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut content)
        .map_err(io_at(path))?;
    Ok(content)
}

/// `prefix`, 64 lowercase hex digits and a newline, and nothing else.
fn parse_key_line(content: &[u8], prefix: &[u8]) -> Option<[u8; 32]> {
    let digits = content.strip_prefix(prefix)?.strip_suffix(b"\n")?;
    unhex_lower::<32>(digits)
}

/// Writes `contents` to the new file `path` with permission bits `mode`: a temporary file
/// in the same directory, flushed, then hard-linked to `path` (which fails if `path`
/// exists), then the directory flushed.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let name = path
        .file_name()
        .ok_or_else(|| io_at(path)(io::Error::new(io::ErrorKind::InvalidInput, "names no file")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(KeyError::Random)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", hex(&nonce)));
    let tmp = dir.join(tmp_name);

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_at(&tmp))?;
    let staged = file
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all());
    drop(file);
    let placed = match staged {
        Err(e) => Err(io_at(&tmp)(e)),
        Ok(()) => fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io_at(path)(e)
            }
        }),
    };
    if let Err(e) = fs::remove_file(&tmp) {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temporary key file");
    }
    placed?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn signing_key_round_trips_through_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = SigningKey::generate().unwrap();
        key.save(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let loaded = SigningKey::load(&path).unwrap();
        assert_eq!(loaded.public(), key.public());
        assert_eq!(loaded.sign(b"m"), key.sign(b"m"));
        // Only the key file is left: the temporary file is gone.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["k.key"]);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("ci-intel-signing-key v1 "), "{text:?}");
        assert!(text.ends_with('\n') && text.len() == 24 + 64 + 1);
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        assert_ne!(a.public(), b.public());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = SigningKey::generate().unwrap();
        key.save(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let secret = text.trim_end().rsplit(' ').next().unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(&key.public().to_string()), "{shown}");
    }

    #[test]
    fn load_refuses_a_key_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        SigningKey::generate().unwrap().save(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            match SigningKey::load(&path) {
                Err(KeyError::TooOpen { path: p, mode: m }) => {
                    assert_eq!(p, path);
                    assert_eq!(m, mode);
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        fs::set_permissions(&path, Permissions::from_mode(0o400)).unwrap();
        SigningKey::load(&path).unwrap();
    }

    #[test]
    fn save_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        fs::write(&path, "precious").unwrap();
        let err = SigningKey::generate().unwrap().save(&path).unwrap_err();
        assert!(
            matches!(&err, KeyError::Exists { path: p } if *p == path),
            "{err:?}"
        );
        let err = PublicKey([1; 32]).save(&path).unwrap_err();
        assert!(
            matches!(&err, KeyError::Exists { path: p } if *p == path),
            "{err:?}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn load_refuses_malformed_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let good = format!("ci-intel-signing-key v1 {}\n", "ab".repeat(32));
        let bad = [
            String::new(),
            good.trim_end().to_string(),
            good.to_uppercase(),
            format!("ci-intel-signing-key v1 {}\n", "AB".repeat(32)),
            format!("ci-intel-signing-key v1 {}\n", "ab".repeat(31)),
            format!("ci-intel-signing-key v2 {}\n", "ab".repeat(32)),
            format!("ci-intel-public-key v1 {}\n", "ab".repeat(32)),
            format!("{good}\n"),
            good.replace('\n', "\r\n"),
            format!(" {good}"),
        ];
        for content in bad {
            let _ = fs::remove_file(&path);
            fs::write(&path, &content).unwrap();
            fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
            let r = SigningKey::load(&path);
            assert!(
                matches!(&r, Err(KeyError::Malformed { path: p }) if *p == path),
                "{content:?}: {r:?}"
            );
        }
        let _ = fs::remove_file(&path);
        fs::write(&path, &good).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        SigningKey::load(&path).unwrap();
    }

    #[test]
    fn load_refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = SigningKey::load(dir.path());
        assert!(matches!(r, Err(KeyError::Io { .. })), "{r:?}");
        let r = PublicKey::load(&dir.path().join("missing.pub"));
        assert!(matches!(r, Err(KeyError::Io { .. })), "{r:?}");
    }

    #[test]
    fn keygen_writes_a_pair_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/keys");
        let (key_path, pub_path) = keygen(&out).unwrap();
        assert_eq!(key_path, out.join("ci-intel.key"));
        assert_eq!(pub_path, out.join("ci-intel.pub"));
        assert_eq!(mode_of(&key_path), 0o600);
        assert_eq!(mode_of(&pub_path), 0o644);
        assert_eq!(mode_of(&out), 0o700);
        let key = SigningKey::load(&key_path).unwrap();
        assert_eq!(PublicKey::load(&pub_path).unwrap(), key.public());
        let before = fs::read(&key_path).unwrap();

        let err = keygen(&out).unwrap_err();
        assert!(
            matches!(&err, KeyError::Exists { path } if *path == key_path),
            "{err:?}"
        );
        assert!(err.to_string().contains("ci-intel.key"), "{err}");
        assert_eq!(fs::read(&key_path).unwrap(), before);

        // A lone public key also stops it, and no signing key is left behind.
        fs::remove_file(&key_path).unwrap();
        let err = keygen(&out).unwrap_err();
        assert!(
            matches!(&err, KeyError::Exists { path } if *path == pub_path),
            "{err:?}"
        );
        assert!(!key_path.exists());
    }

    #[test]
    fn keyring_reads_every_pub_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKey::generate().unwrap().public();
        let b = SigningKey::generate().unwrap().public();
        let c = SigningKey::generate().unwrap().public();
        a.save(&dir.path().join("a.pub")).unwrap();
        b.save(&dir.path().join("b.pub")).unwrap();
        c.save(&dir.path().join("c.pub.old")).unwrap();
        fs::write(dir.path().join("notes.txt"), "not a key").unwrap();
        SigningKey::generate()
            .unwrap()
            .save(&dir.path().join("ci-intel.key"))
            .unwrap();
        let ring = Keyring::load_dir(dir.path()).unwrap();
        assert_eq!(ring.len(), 2);
        assert!(ring.contains(&a) && ring.contains(&b) && !ring.contains(&c));
        assert_eq!(ring.iter().count(), 2);

        let bad = dir.path().join("z.pub");
        fs::write(&bad, "ci-intel-public-key v1 nothex\n").unwrap();
        let err = Keyring::load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::Malformed { path } if *path == bad),
            "{err:?}"
        );
        assert!(err.to_string().contains("z.pub"), "{err}");
    }

    #[test]
    fn a_missing_keyring_directory_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_dir(&dir.path().join("absent")).unwrap();
        assert!(ring.is_empty());
    }

    #[test]
    fn a_public_key_file_must_name_a_usable_point() {
        let dir = tempfile::tempdir().unwrap();
        // All zeros encodes a point of small order: no signature may be checked against it.
        let path = dir.path().join("weak.pub");
        PublicKey([0; 32]).save(&path).unwrap();
        let r = PublicKey::load(&path);
        assert!(matches!(r, Err(KeyError::Malformed { .. })), "{r:?}");
    }

    #[test]
    fn public_key_hex_round_trips() {
        let key = SigningKey::generate().unwrap().public();
        let s = key.to_string();
        assert_eq!(s.len(), 64);
        assert!(
            s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{s}"
        );
        assert_eq!(s.parse::<PublicKey>().unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        assert!(s[1..].parse::<PublicKey>().is_err());
        assert!(format!("{s}0").parse::<PublicKey>().is_err());
        assert!(serde_json::from_str::<PublicKey>("\"xyz\"").is_err());
    }

    #[test]
    fn verify_rejects_any_flipped_bit() {
        let key = SigningKey::generate().unwrap();
        let public = key.public();
        let msg = b"ci-intel test message";
        let sig = key.sign(msg);
        assert!(public.verify(msg, &sig));
        for bit in 0..msg.len() * 8 {
            let mut m = *msg;
            m[bit / 8] ^= 1 << (bit % 8);
            assert!(!public.verify(&m, &sig), "message bit {bit}");
        }
        for bit in 0..512 {
            let mut s = sig;
            s[bit / 8] ^= 1 << (bit % 8);
            assert!(!public.verify(msg, &s), "signature bit {bit}");
        }
        let other = SigningKey::generate().unwrap().public();
        assert!(!other.verify(msg, &sig));
    }

    #[test]
    fn verify_with_unusable_key_bytes_is_false() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(b"m");
        for fill in 0..=255u8 {
            assert!(!PublicKey([fill; 32]).verify(b"m", &sig));
        }
        assert!(!PublicKey([0; 32]).verify(b"m", &[0; 64]));
    }

    #[test]
    fn strict_hex_is_lowercase_only() {
        assert_eq!(unhex_lower::<2>(b"0aff"), Some([0x0a, 0xff]));
        assert_eq!(unhex_lower::<2>(b"0AFF"), None);
        assert_eq!(unhex_lower::<2>(b"0af"), None);
        assert_eq!(unhex_lower::<2>(b"0afff"), None);
        assert_eq!(unhex_lower::<1>(b"+1"), None);
    }
}
