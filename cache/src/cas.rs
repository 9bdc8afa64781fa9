//! The content-addressed store: zstd-compressed blobs named by the BLAKE3 of their
//! uncompressed content.
//!
//! A blob is written to a temporary file beside the store, hashed while it is compressed
//! (so what is stored is exactly what was hashed, even if the source changes meanwhile),
//! flushed with `fsync`, and renamed into place: a crash leaves at most a stray temporary
//! file, never a torn blob under a real name. Two writers of the same blob both succeed;
//! the second rename replaces the first with the same content.
//!
//! Reading is verified: a blob streams out through BLAKE3 into a temporary file that is
//! renamed over the destination only if the digest and size match.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::digest::Digest;
use crate::manifest::Blob;

/// zstd level for stored blobs: the library's default, fast to write and to read.
const LEVEL: i32 = 3;

/// The store under one directory.
#[derive(Debug, Clone)]
pub struct Cas {
    dir: PathBuf,
    tmp: PathBuf,
}

/// What [`Cas::put_file`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The content's digest and size.
    pub blob: Blob,
    /// Bytes on disk, compressed.
    pub stored_bytes: u64,
}

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// Reading the source failed.
    #[error("could not read {}", path.display())]
    Source {
        /// The source.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the store failed.
    #[error("could not write the blob store")]
    Store(#[source] io::Error),
}

/// Why a blob could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The blob is not in the store.
    #[error("blob {0} is missing")]
    Missing(Digest),
    /// The blob's content does not match its name.
    #[error("blob {expected} is corrupt: its content hashes to {actual} ({size} bytes)")]
    Corrupt {
        /// Its name.
        expected: Digest,
        /// What it holds.
        actual: Digest,
        /// How many bytes it decompressed to.
        size: u64,
    },
    /// The blob could not be decompressed (truncated, or not zstd).
    #[error("blob {digest} cannot be decompressed")]
    Undecodable {
        /// Its name.
        digest: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the destination failed.
    #[error("could not write {}", path.display())]
    Destination {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ReadError {
    /// Whether the store itself is at fault (the entry must be quarantined), rather than
    /// the destination.
    pub fn is_store_fault(&self) -> bool {
        !matches!(self, ReadError::Destination { .. })
    }
}

/// A unique name for a temporary file.
pub(crate) fn temp_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        ".{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes a temporary file when dropped, unless disarmed.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Cas {
    /// The store in `dir` (blobs) with temporary files in `tmp` (same file system).
    pub fn open(dir: &Path, tmp: &Path) -> io::Result<Cas> {
        fs::create_dir_all(dir)?;
        fs::create_dir_all(tmp)?;
        Ok(Cas {
            dir: dir.to_path_buf(),
            tmp: tmp.to_path_buf(),
        })
    }

    /// Where the blob named `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Whether the blob is present (not whether it is intact).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores the content of the file at `src`.
    pub fn put_file(&self, src: &Path) -> Result<Stored, PutError> {
        let source = |e| PutError::Source {
            path: src.to_path_buf(),
            source: e,
        };
        let file = File::open(src).map_err(source)?;
        self.put_reader(file).map_err(|e| match e {
            Either::Read(e) => source(e),
            Either::Write(e) => PutError::Store(e),
        })
    }

    /// Stores the content of the file at `src` from byte `offset` on (the part of a log
    /// one attempt wrote), streaming.
    pub fn put_file_from(&self, src: &Path, offset: u64) -> Result<Stored, PutError> {
        use std::io::Seek as _;
        let source = |e| PutError::Source {
            path: src.to_path_buf(),
            source: e,
        };
        let mut file = File::open(src).map_err(source)?;
        file.seek(io::SeekFrom::Start(offset)).map_err(source)?;
        self.put_reader(file).map_err(|e| match e {
            Either::Read(e) => source(e),
            Either::Write(e) => PutError::Store(e),
        })
    }

    /// Stores `bytes`.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Stored, PutError> {
        self.put_reader(bytes).map_err(|e| match e {
            Either::Read(e) | Either::Write(e) => PutError::Store(e),
        })
    }

    fn put_reader(&self, mut reader: impl Read) -> Result<Stored, Either> {
        let tmp_path = self.tmp.join(temp_name("blob"));
        let tmp = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp_path)
            .map_err(Either::Write)?;
        let guard = TempFile(Some(tmp_path.clone()));
        let encoder = zstd::stream::Encoder::new(tmp, LEVEL).map_err(Either::Write)?;
        let mut sink = Hashing {
            inner: encoder,
            hasher: blake3::Hasher::new(),
            count: 0,
        };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Either::Read(e)),
            };
            sink.write_all(&buf[..n]).map_err(Either::Write)?;
        }
        let digest: Digest = sink.hasher.finalize().into();
        let size = sink.count;
        let file = sink.inner.finish().map_err(Either::Write)?;
        file.sync_all().map_err(Either::Write)?;
        let stored_bytes = file.metadata().map_err(Either::Write)?.len();
        drop(file);
        let dest = self.path(&digest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(Either::Write)?;
        }
        fs::rename(&tmp_path, &dest).map_err(Either::Write)?;
        guard.keep();
        Ok(Stored {
            blob: Blob { digest, size },
            stored_bytes,
        })
    }

    /// Streams the blob into a new file at `dest` with `mode` and, when given, `mtime`,
    /// verifying it on the way: `dest` is replaced only by content that matches.
    pub fn restore(
        &self,
        blob: &Blob,
        dest: &Path,
        mode: u32,
        mtime: Option<SystemTime>,
    ) -> Result<(), ReadError> {
        let dest_err = |e| ReadError::Destination {
            path: dest.to_path_buf(),
            source: e,
        };
        let dir = dest.parent().unwrap_or(Path::new("."));
        let tmp_path = dir.join(temp_name("restore"));
        let tmp = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(dest_err)?;
        let guard = TempFile(Some(tmp_path.clone()));
        let mut sink = Hashing {
            inner: io::BufWriter::with_capacity(256 * 1024, tmp),
            hasher: blake3::Hasher::new(),
            count: 0,
        };
        self.stream(blob, &mut sink)?;
        let file = sink
            .inner
            .into_inner()
            .map_err(|e| dest_err(e.into_error()))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(dest_err)?;
        if let Some(t) = mtime {
            file.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
                .map_err(dest_err)?;
        }
        drop(file);
        fs::rename(&tmp_path, dest).map_err(dest_err)?;
        guard.keep();
        Ok(())
    }

    /// The blob's content, verified.
    pub fn read(&self, blob: &Blob) -> Result<Vec<u8>, ReadError> {
        let mut sink = Hashing {
            inner: Vec::with_capacity(usize::try_from(blob.size).unwrap_or(0).min(1 << 26)),
            hasher: blake3::Hasher::new(),
            count: 0,
        };
        self.stream(blob, &mut sink)?;
        Ok(sink.inner)
    }

    /// Checks the blob without writing it anywhere.
    pub fn verify(&self, blob: &Blob) -> Result<(), ReadError> {
        let mut sink = Hashing {
            inner: io::sink(),
            hasher: blake3::Hasher::new(),
            count: 0,
        };
        self.stream(blob, &mut sink)
    }

    /// Stores a blob that arrives as it is stored (zstd, from another cache), verified:
    /// `compressed` goes to a temporary file (at most `max_compressed` bytes), which is
    /// decompressed and checked against `blob`, and renamed into place only if it matches.
    /// Returns the bytes stored.
    pub fn put_compressed(
        &self,
        blob: &Blob,
        mut compressed: impl Read,
        max_compressed: u64,
    ) -> Result<u64, AdoptError> {
        let tmp_path = self.tmp.join(temp_name("fetched"));
        let store = AdoptError::Store;
        let mut tmp = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp_path)
            .map_err(store)?;
        let guard = TempFile(Some(tmp_path.clone()));
        let copied = io::copy(
            &mut (&mut compressed).take(max_compressed.saturating_add(1)),
            &mut tmp,
        )
        .map_err(AdoptError::Source)?;
        if copied > max_compressed {
            return Err(AdoptError::TooLarge(max_compressed));
        }
        tmp.sync_all().map_err(store)?;
        drop(tmp);
        let file = File::open(&tmp_path).map_err(store)?;
        let mut sink = Hashing {
            inner: io::sink(),
            hasher: blake3::Hasher::new(),
            count: 0,
        };
        stream_from(file, blob, &mut sink).map_err(AdoptError::Corrupt)?;
        let dest = self.path(&blob.digest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(store)?;
        }
        fs::rename(&tmp_path, &dest).map_err(store)?;
        guard.keep();
        Ok(copied)
    }

    /// Decompresses the blob into `sink`, then checks what passed through.
    fn stream<W: Write>(&self, blob: &Blob, sink: &mut Hashing<W>) -> Result<(), ReadError> {
        let file = match File::open(self.path(&blob.digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ReadError::Missing(blob.digest));
            }
            Err(e) => {
                return Err(ReadError::Undecodable {
                    digest: blob.digest,
                    source: e,
                });
            }
        };
        stream_from(file, blob, sink)
    }

    /// Removes a blob (eviction, or quarantine of a corrupt one).
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every blob in the store, with its size on disk. Stray files are skipped.
    pub fn list(&self) -> io::Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if let Ok(d) = name.parse::<Digest>() {
                    out.push((d, entry.metadata()?.len()));
                }
            }
        }
        Ok(out)
    }
}

/// Decompresses `file` (a stored blob) into `sink`, then checks what passed through
/// against `blob`.
fn stream_from<W: Write>(
    file: impl Read,
    blob: &Blob,
    sink: &mut Hashing<W>,
) -> Result<(), ReadError> {
    let undecodable = |e| ReadError::Undecodable {
        digest: blob.digest,
        source: e,
    };
    let mut decoder = zstd::stream::Decoder::new(file).map_err(undecodable)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(undecodable(e)),
        };
        // Never write past what the manifest promised: a swapped-in huge blob stops here.
        if sink.count + n as u64 > blob.size {
            sink.hasher.update(&buf[..n]);
            sink.count += n as u64;
            break;
        }
        sink.write_all(&buf[..n])
            .map_err(|e| ReadError::Destination {
                path: PathBuf::new(),
                source: e,
            })?;
    }
    let actual: Digest = sink.hasher.finalize().into();
    if actual != blob.digest || sink.count != blob.size {
        return Err(ReadError::Corrupt {
            expected: blob.digest,
            actual,
            size: sink.count,
        });
    }
    Ok(())
}

/// The BLAKE3 digest and size of what the zstd stream `compressed` decompresses to (a blob
/// as a store holds it): how a blob that arrives compressed is checked against its name.
pub fn content_digest(compressed: impl Read) -> io::Result<(Digest, u64)> {
    let mut decoder = zstd::stream::Decoder::new(compressed)?;
    let mut sink = Hashing {
        inner: io::sink(),
        hasher: blake3::Hasher::new(),
        count: 0,
    };
    io::copy(&mut decoder, &mut sink)?;
    Ok((sink.hasher.finalize().into(), sink.count))
}

/// Why a blob that arrived compressed was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// Reading it failed.
    #[error("could not read the blob")]
    Source(#[source] io::Error),
    /// It is larger than it may be.
    #[error("the blob is larger than {0} bytes compressed")]
    TooLarge(u64),
    /// It is not what its name says.
    #[error("the blob failed verification")]
    Corrupt(#[source] ReadError),
    /// Writing the store failed.
    #[error("could not write the blob store")]
    Store(#[source] io::Error),
}

/// A read or a write failure, told apart for [`PutError`].
enum Either {
    Read(io::Error),
    Write(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Cas) {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("cas"), &dir.path().join("tmp")).unwrap();
        (dir, cas)
    }

    #[test]
    fn a_blob_round_trips_and_is_named_by_its_content() {
        let (dir, cas) = store();
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let src = dir.path().join("src");
        fs::write(&src, &data).unwrap();
        let stored = cas.put_file(&src).unwrap();
        assert_eq!(stored.blob.digest, Digest::of(&data));
        assert_eq!(stored.blob.size, data.len() as u64);
        assert!(stored.stored_bytes < stored.blob.size, "compressed");
        assert!(cas.contains(&stored.blob.digest));
        assert_eq!(cas.read(&stored.blob).unwrap(), data);
        let out = dir.path().join("out");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        cas.restore(&stored.blob, &out, 0o755, Some(t)).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
        let meta = fs::metadata(&out).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(meta.modified().unwrap(), t);
        assert_eq!(cas.list().unwrap().len(), 1);
        // Nothing is left in the temporary directory.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn storing_the_same_content_twice_is_one_blob() {
        let (_dir, cas) = store();
        let a = cas.put_bytes(b"same").unwrap();
        let b = cas.put_bytes(b"same").unwrap();
        assert_eq!(a.blob, b.blob);
        assert_eq!(cas.list().unwrap().len(), 1);
    }

    /// Corrupts the stored blob of `blob` with `f` on its compressed bytes.
    fn tamper(cas: &Cas, blob: &Blob, f: impl FnOnce(&mut Vec<u8>)) {
        let path = cas.path(&blob.digest);
        let mut bytes = fs::read(&path).unwrap();
        f(&mut bytes);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, bytes).unwrap();
    }

    #[test]
    fn corruption_is_detected_and_never_reaches_the_destination() {
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 256) as u8).collect();
        let other: Vec<u8> = b"a different blob".to_vec();
        type Damage = Box<dyn Fn(&Cas, &Blob, &Blob)>;
        let cases: Vec<(&str, Damage)> = vec![
            (
                "a flipped bit",
                Box::new(|cas, b, _| {
                    tamper(cas, b, |v| {
                        let mid = v.len() / 2;
                        v[mid] ^= 0x10;
                    })
                }),
            ),
            (
                "truncated",
                Box::new(|cas, b, _| tamper(cas, b, |v| v.truncate(v.len() / 2))),
            ),
            (
                "swapped with another blob",
                Box::new(|cas, b, o| {
                    let theirs = fs::read(cas.path(&o.digest)).unwrap();
                    tamper(cas, b, |v| *v = theirs);
                }),
            ),
            (
                "deleted",
                Box::new(|cas, b, _| cas.remove(&b.digest).unwrap()),
            ),
            (
                "not zstd",
                Box::new(|cas, b, _| tamper(cas, b, |v| *v = b"plain".to_vec())),
            ),
        ];
        for (what, damage) in cases {
            let (dir, cas) = store();
            let b = cas.put_bytes(&content).unwrap().blob;
            let o = cas.put_bytes(&other).unwrap().blob;
            damage(&cas, &b, &o);
            let dest = dir.path().join("dest");
            fs::write(&dest, b"previous").unwrap();
            let err = cas.restore(&b, &dest, 0o644, None).expect_err(what);
            assert!(err.is_store_fault(), "{what}: {err}");
            assert_eq!(
                fs::read(&dest).unwrap(),
                b"previous",
                "{what}: destination untouched"
            );
            assert!(cas.read(&b).is_err(), "{what}");
            assert!(cas.verify(&b).is_err(), "{what}");
            let leftovers: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".restore"))
                .collect();
            assert!(leftovers.is_empty(), "{what}: temporary file left");
        }
    }

    #[test]
    fn a_compressed_blob_from_elsewhere_is_stored_only_when_it_verifies() {
        let (_src_dir, src) = store();
        let data = vec![9u8; 50_000];
        let blob = src.put_bytes(&data).unwrap().blob;
        let compressed = fs::read(src.path(&blob.digest)).unwrap();
        assert_eq!(
            content_digest(&compressed[..]).unwrap(),
            (blob.digest, blob.size)
        );
        let (_dir, cas) = store();
        let n = cas.put_compressed(&blob, &compressed[..], 1 << 20).unwrap();
        assert_eq!(n, compressed.len() as u64);
        assert_eq!(cas.read(&blob).unwrap(), data);
        // Another blob's bytes under this name, a flipped byte, and too many bytes: refused.
        let other = src.put_bytes(b"other").unwrap().blob;
        let theirs = fs::read(src.path(&other.digest)).unwrap();
        let mut flipped = compressed.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        let (_dir, cas) = store();
        for (what, bytes) in [("swapped", &theirs), ("flipped", &flipped)] {
            let err = cas.put_compressed(&blob, &bytes[..], 1 << 20).unwrap_err();
            assert!(matches!(err, AdoptError::Corrupt(_)), "{what}: {err}");
        }
        let err = cas.put_compressed(&blob, &compressed[..], 4).unwrap_err();
        assert!(matches!(err, AdoptError::TooLarge(4)), "{err}");
        assert!(!cas.contains(&blob.digest));
        assert!(cas.list().unwrap().is_empty());
    }

    #[test]
    fn a_blob_larger_than_promised_is_refused() {
        let (dir, cas) = store();
        let b = cas.put_bytes(&[7u8; 10_000]).unwrap().blob;
        let short = Blob { size: 100, ..b };
        let err = cas
            .restore(&short, &dir.path().join("x"), 0o644, None)
            .unwrap_err();
        assert!(matches!(err, ReadError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn concurrent_writers_of_one_blob_all_succeed() {
        let (_dir, cas) = store();
        let data = vec![42u8; 1 << 20];
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| cas.put_bytes(&data).map(|st| st.blob)))
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap().unwrap().digest, Digest::of(&data));
            }
        });
        assert_eq!(
            cas.read(&Blob {
                digest: Digest::of(&data),
                size: data.len() as u64
            })
            .unwrap(),
            data
        );
    }
}
