//! BLAKE3 digests of bytes and files.
//!
//! Small files are read and hashed in one pass; large ones are memory-mapped and hashed on
//! every core (BLAKE3's tree mode). Many files at once ([`of_files`]) are spread over a few
//! threads, since a tree of small files is bound by system calls, not by hashing.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Files at least this large are memory-mapped and hashed on every core.
pub const MMAP_FROM: u64 = 1 << 20;

/// The BLAKE3 digest of some content: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Digest {
        Digest(*h.as_bytes())
    }
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Lowercase (or uppercase) hex into exactly `N` bytes.
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a digest (64 hex digits): `{0}`")]
pub struct ParseDigestError(String);

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        unhex::<32>(s)
            .map(Digest)
            .ok_or_else(|| ParseDigestError(s.chars().take(80).collect()))
    }
}

serde_as_string!(Digest);

/// The digest and size of a file's content, as it is read now.
pub fn of_file(path: &Path) -> io::Result<(Digest, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_FROM {
        hasher.update_mmap_rayon(path)?;
        let size = hasher.count();
        return Ok((hasher.finalize().into(), size));
    }
    let size = hash_stream(&mut hasher, file)?;
    Ok((hasher.finalize().into(), size))
}

/// Feeds `reader` into `hasher` to its end; the byte count.
pub(crate) fn hash_stream(hasher: &mut blake3::Hasher, mut reader: impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// The CPUs this process may use, asked once (the answer reads cgroup files).
pub(crate) fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The digests of many files, in the order given, hashed on up to `threads` threads (0:
/// one per CPU). Large files also use every core inside ([`MMAP_FROM`]).
pub fn of_files(paths: &[PathBuf], threads: usize) -> Vec<io::Result<(Digest, u64)>> {
    let threads = match threads {
        0 => cpus(),
        n => n,
    }
    .min(paths.len().max(1));
    // A few files are hashed here: starting threads would cost more than it saves.
    if threads <= 1 || paths.len() < 4 {
        return paths.iter().map(|p| of_file(p)).collect();
    }
    type Slot = Mutex<Option<io::Result<(Digest, u64)>>>;
    let results: Vec<Slot> = paths.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let r = of_file(path);
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err(io::Error::other("file not hashed")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_bytes_is_blake3() {
        // The BLAKE3 test vector for the empty input.
        assert_eq!(
            Digest::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_hex().to_uppercase().parse::<Digest>().unwrap(), d);
        assert!("".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
        assert!(d.to_hex()[1..].parse::<Digest>().is_err());
    }

    #[test]
    fn files_small_and_large_hash_to_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        let large = dir.path().join("large");
        let big: Vec<u8> = (0..(MMAP_FROM as usize * 3 + 17))
            .map(|i| (i * 7) as u8)
            .collect();
        std::fs::write(&small, b"hello").unwrap();
        std::fs::write(&large, &big).unwrap();
        assert_eq!(of_file(&small).unwrap(), (Digest::of(b"hello"), 5));
        assert_eq!(
            of_file(&large).unwrap(),
            (Digest::of(&big), big.len() as u64)
        );
        let many = of_files(
            &[large.clone(), small.clone(), dir.path().join("missing")],
            2,
        );
        assert_eq!(many[0].as_ref().unwrap().0, Digest::of(&big));
        assert_eq!(many[1].as_ref().unwrap().0, Digest::of(b"hello"));
        assert_eq!(
            many[2].as_ref().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
