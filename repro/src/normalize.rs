//! Archive normalisers: rewrite a step's output archives in place so their bytes no longer
//! depend on when, by whom or in which order they were written (what Debian's
//! strip-nondeterminism does), before the outputs are hashed.
//!
//! Each format lives in its own module: it reads an `Input` (the original file, read by
//! offset) with that format's reader in `crate::formats` and writes the replacement (to a
//! temporary file beside the original, renamed over it only when it differs). A corrupt or unsupported archive is
//! an error and leaves the original untouched. What each normaliser rewrites, and why, is in
//! docs/determinism.md (`## Normalisers`).

mod ar;
mod gzip;
mod tar;
mod zip;

use std::fmt;
use std::fs::{self, File, FileTimes, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::formats::{self, FormatError, Source};

/// An archive format a plan step may ask to normalise (`normalize = [...]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Zip archives (also wheels and any other zip-based format).
    Zip,
    /// Java archives: zips whose `META-INF/MANIFEST.MF` comes first.
    Jar,
    /// Plain (uncompressed) tar archives.
    Tar,
    /// Gzip files (and `.tar.gz` when `tar` is declared too).
    Gzip,
    /// Unix `ar` archives: static libraries, `.deb` packages.
    Ar,
}

impl Kind {
    /// Every kind, in the order [`normalize_any`] tries them.
    pub const ALL: [Kind; 5] = [Kind::Jar, Kind::Zip, Kind::Tar, Kind::Gzip, Kind::Ar];

    /// The kind a plan names (`"zip"`, `"jar"`, `"tar"`, `"gzip"`, `"ar"`).
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "zip" => Some(Kind::Zip),
            "jar" => Some(Kind::Jar),
            "tar" => Some(Kind::Tar),
            "gzip" => Some(Kind::Gzip),
            "ar" => Some(Kind::Ar),
            _ => None,
        }
    }

    /// The name a plan uses for this kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Zip => "zip",
            Kind::Jar => "jar",
            Kind::Tar => "tar",
            Kind::Gzip => "gzip",
            Kind::Ar => "ar",
        }
    }

    /// File name extensions (lowercase, without the dot) that mark this kind.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Kind::Zip => &[
                "zip", "whl", "jar", "war", "ear", "aar", "apk", "egg", "nupkg", "vsix", "xpi",
            ],
            Kind::Jar => &["jar", "war", "ear"],
            Kind::Tar => &["tar"],
            Kind::Gzip => &["gz", "tgz"],
            Kind::Ar => &["a", "deb", "udeb", "rlib", "lib"],
        }
    }

    /// Whether `path` (by extension, then by magic bytes) is this kind.
    ///
    /// A known extension is enough; otherwise the first bytes decide (a jar without a jar
    /// extension is a zip holding `META-INF/MANIFEST.MF`). A file that cannot be read, or
    /// is not a regular file, matches nothing.
    pub fn matches(self, path: &Path) -> bool {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => {}
            _ => return false,
        }
        if has_extension(path, self.extensions()) {
            return true;
        }
        let Ok(file) = File::open(path) else {
            return false;
        };
        let Ok(input) = Input::new(file) else {
            return false;
        };
        let Ok(head) = input.head() else {
            return false;
        };
        match self {
            Kind::Jar => formats::zip::sniff(&head) && zip::has_manifest(&input),
            kind => sniff(kind, &head, &input),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`normalize_file`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Normalized {
    /// The file was replaced by its normalised form.
    Rewritten,
    /// The file already was in normalised form; it was not touched.
    Unchanged,
    /// The file is not an archive of the asked kind (its magic bytes differ); untouched.
    NotThisKind,
}

/// Why an archive could not be normalised. The file is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    /// The archive (or a directory being walked) could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The normalised copy could not be written or put in place.
    #[error("writing the normalised copy of {}", path.display())]
    Write {
        /// The archive being replaced.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The archive is truncated or malformed.
    #[error("{} is a corrupt {kind} archive: {detail}", path.display())]
    Corrupt {
        /// The archive.
        path: PathBuf,
        /// The format found broken (for a `.tar.gz`, the layer that is).
        kind: Kind,
        /// What is wrong, and where.
        detail: String,
    },
    /// The archive uses a feature the normaliser does not handle (zip64, encryption, ...).
    #[error("{} uses an unsupported {kind} feature: {detail}", path.display())]
    Unsupported {
        /// The archive.
        path: PathBuf,
        /// The format.
        kind: Kind,
        /// The feature.
        detail: String,
    },
}

/// A failure inside a format module, before the file's path is attached.
#[derive(Debug)]
enum Fail {
    /// Reading the input failed (not a short read: that is [`Fail::Corrupt`]).
    Read(io::Error),
    /// Writing the output failed.
    Write(io::Error),
    /// The input is malformed.
    Corrupt(Kind, String),
    /// The input uses a feature that is not handled.
    Unsupported(Kind, String),
}

impl Fail {
    fn into_error(self, path: &Path) -> NormalizeError {
        let path = path.to_path_buf();
        match self {
            Fail::Read(source) => NormalizeError::Read { path, source },
            Fail::Write(source) => NormalizeError::Write { path, source },
            Fail::Corrupt(kind, detail) => NormalizeError::Corrupt { path, kind, detail },
            Fail::Unsupported(kind, detail) => NormalizeError::Unsupported { path, kind, detail },
        }
    }

    /// A reader's error, for an archive of `kind`.
    fn format(kind: Kind) -> impl Fn(FormatError) -> Fail {
        move |e| match e {
            FormatError::Read(e) => Fail::Read(e),
            FormatError::Write(e) => Fail::Write(e),
            FormatError::Corrupt(detail) => Fail::Corrupt(kind, detail),
            FormatError::Unsupported(detail) => Fail::Unsupported(kind, detail),
        }
    }
}

/// Wraps a writer so its errors become [`Fail::Write`].
fn wr<W: Write + ?Sized>(out: &mut W, bytes: &[u8]) -> Result<(), Fail> {
    out.write_all(bytes).map_err(Fail::Write)
}

/// The original archive, read by offset.
#[derive(Debug)]
struct Input {
    file: File,
    len: u64,
}

/// How many bytes [`Input::head`] returns at most: enough for every magic (tar: 512).
const HEAD_LEN: usize = 512;

impl Input {
    fn new(file: File) -> io::Result<Input> {
        let len = file.metadata()?.len();
        Ok(Input { file, len })
    }

    /// The first bytes of the file (at most [`HEAD_LEN`]).
    fn head(&self) -> Result<Vec<u8>, Fail> {
        let mut head = vec![0; HEAD_LEN];
        let n = self.read_at(0, &mut head).map_err(Fail::Read)?;
        head.truncate(n);
        Ok(head)
    }
}

impl Source for Input {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let Some(at) = offset.checked_add(done as u64) else {
                break;
            };
            match self.file.read_at(&mut buf[done..], at) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// Whether the magic bytes say `kind` (zip and jar alike: a jar is a zip).
fn sniff(kind: Kind, head: &[u8], input: &Input) -> bool {
    match kind {
        Kind::Zip | Kind::Jar => formats::zip::sniff(head),
        Kind::Tar => tar::sniff(head, input),
        Kind::Gzip => formats::gzip::sniff(head),
        Kind::Ar => formats::ar::sniff(head),
    }
}

/// Whether the last extension of `path`, lowercased, is one of `exts`.
fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Whether `path` is named like a gzip-compressed tar (`.tar.gz`, `.tgz`).
fn is_tar_gz_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Normalises the archive at `path`, of `kind`, in place.
///
/// The normalised form is written to a temporary file in the same directory and renamed
/// over the original only if it differs, keeping the original's mode, owner and times.
/// `source_date_epoch` is the time stamped on entries (zip, tar); see docs/determinism.md.
/// A file that is not a regular file, or whose magic bytes are not `kind`'s, is
/// [`Normalized::NotThisKind`]. For `.tar.gz` with both tar and gzip, see
/// [`normalize_tar_gz`].
pub fn normalize_file(
    path: &Path,
    kind: Kind,
    source_date_epoch: u64,
) -> Result<Normalized, NormalizeError> {
    rewrite(path, |input, out| {
        let head = input.head()?;
        if !sniff(kind, &head, input) {
            return Ok(false);
        }
        match kind {
            Kind::Zip | Kind::Jar => zip::normalize(input, out, kind, source_date_epoch)?,
            Kind::Tar => tar::normalize(input, out, source_date_epoch)?,
            Kind::Gzip => gzip::normalize(input, out)?,
            Kind::Ar => ar::normalize(input, out)?,
        }
        Ok(true)
    })
}

/// Normalises a gzip-compressed tar in place: the tar inside as [`Kind::Tar`] does, then
/// compressed again with a fixed deflate implementation and level (so the result no longer
/// depends on the compressor either) under a normalised gzip header.
///
/// A gzip file whose content is not a tar gets the gzip header normalisation only.
pub fn normalize_tar_gz(path: &Path, source_date_epoch: u64) -> Result<Normalized, NormalizeError> {
    let dir = parent_dir(path);
    let result = rewrite(path, |input, out| {
        if !formats::gzip::sniff(&input.head()?) {
            return Ok(false);
        }
        let inner = tempfile::tempfile_in(&dir).map_err(Fail::Write)?;
        let mut sink = BufWriter::new(inner);
        gzip::decompress(input, &mut sink)?;
        let inner = sink.into_inner().map_err(|e| Fail::Write(e.into_error()))?;
        let inner = Input::new(inner).map_err(Fail::Read)?;
        if !tar::sniff(&inner.head()?, &inner) {
            return Ok(false);
        }
        let mut gz = gzip::Writer::new(out).map_err(Fail::Write)?;
        tar::normalize(&inner, &mut gz, source_date_epoch)?;
        gz.finish().map_err(Fail::Write)?;
        Ok(true)
    })?;
    match result {
        // Not a gzip (the header normaliser says so again), or a gzip of something else.
        Normalized::NotThisKind => normalize_file(path, Kind::Gzip, source_date_epoch),
        done => Ok(done),
    }
}

/// Normalises `path` with the first of `kinds` that applies: a `.tar.gz`/`.tgz` as
/// [`normalize_tar_gz`] when both tar and gzip are given, else the first kind (jar before
/// zip) that [`Kind::matches`] it and whose magic bytes agree. Returns the kind that
/// rewrote it, `None` if it was already normal or no kind applies.
pub fn normalize_any(
    path: &Path,
    kinds: &[Kind],
    source_date_epoch: u64,
) -> Result<Option<Kind>, NormalizeError> {
    let has = |k: Kind| kinds.contains(&k);
    if has(Kind::Tar) && has(Kind::Gzip) && is_tar_gz_name(path) {
        match normalize_tar_gz(path, source_date_epoch)? {
            Normalized::Rewritten => return Ok(Some(Kind::Gzip)),
            Normalized::Unchanged => return Ok(None),
            Normalized::NotThisKind => {}
        }
    }
    for kind in Kind::ALL {
        if !has(kind) || !kind.matches(path) {
            continue;
        }
        match normalize_file(path, kind, source_date_epoch)? {
            Normalized::Rewritten => return Ok(Some(kind)),
            Normalized::Unchanged => return Ok(None),
            Normalized::NotThisKind => {}
        }
    }
    Ok(None)
}

/// Every file under `root` that any of `kinds` matches, normalised; returns what was
/// rewritten (relative paths, `/`-separated, in name order), with the kind that did it (a
/// `.tar.gz` normalised inside and out is listed once, as gzip).
///
/// `root` may be a file (then the returned path is its file name). Symbolic links are
/// neither followed nor rewritten. The first error stops the walk; files already rewritten
/// stay rewritten (each on its own is complete).
pub fn normalize_tree(
    root: &Path,
    kinds: &[Kind],
    source_date_epoch: u64,
) -> Result<Vec<(String, Kind)>, NormalizeError> {
    let mut done = Vec::new();
    if kinds.is_empty() {
        return Ok(done);
    }
    let meta = fs::symlink_metadata(root).map_err(|source| NormalizeError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_file() {
        if let Some(kind) = normalize_any(root, kinds, source_date_epoch)? {
            let name = root.file_name().map(|n| n.to_string_lossy().into_owned());
            done.push((name.unwrap_or_default(), kind));
        }
    } else if meta.file_type().is_dir() {
        walk(root, "", kinds, source_date_epoch, &mut done)?;
    }
    Ok(done)
}

fn walk(
    dir: &Path,
    rel: &str,
    kinds: &[Kind],
    sde: u64,
    done: &mut Vec<(String, Kind)>,
) -> Result<(), NormalizeError> {
    let read_err = |source| NormalizeError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry.file_type().map_err(|source| NormalizeError::Read {
            path: path.clone(),
            source,
        })?;
        if ft.is_dir() {
            walk(&path, &rel, kinds, sde, done)?;
        } else if ft.is_file() {
            if let Some(kind) = normalize_any(&path, kinds, sde)? {
                done.push((rel, kind));
            }
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Runs `body` from the file at `path` into a temporary file beside it and, when `body`
/// returns true and the result differs, renames the result over the original. `body`
/// returning false means "not this kind": nothing is written.
fn rewrite<F>(path: &Path, body: F) -> Result<Normalized, NormalizeError>
where
    F: FnOnce(&Input, &mut dyn Write) -> Result<bool, Fail>,
{
    let read_err = |source| NormalizeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let write_err = |source| NormalizeError::Write {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Ok(Normalized::NotThisKind);
    }
    let input = Input::new(File::open(path).map_err(read_err)?).map_err(read_err)?;
    let dir = parent_dir(path);
    let prefix = format!(
        ".{}.",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".normalizing")
        .tempfile_in(&dir)
        .map_err(write_err)?;
    let mut out = BufWriter::with_capacity(64 * 1024, tmp.as_file());
    let is_kind = body(&input, &mut out).map_err(|f| f.into_error(path))?;
    if !is_kind {
        return Ok(Normalized::NotThisKind);
    }
    out.flush().map_err(write_err)?;
    drop(out);
    if same_content(&input, tmp.as_file()).map_err(read_err)? {
        return Ok(Normalized::Unchanged);
    }
    let file = tmp.as_file();
    file.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(write_err)?;
    let tmp_meta = file.metadata().map_err(write_err)?;
    if tmp_meta.uid() != meta.uid() || tmp_meta.gid() != meta.gid() {
        std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid())).map_err(write_err)?;
        // chown may clear set-id bits: set the mode again.
        file.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(write_err)?;
    }
    let mut times = FileTimes::new();
    if let Ok(t) = meta.modified() {
        times = times.set_modified(t);
    }
    if let Ok(t) = meta.accessed() {
        times = times.set_accessed(t);
    }
    file.set_times(times).map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(Normalized::Rewritten)
}

/// Whether the original and the new file hold the same bytes.
fn same_content(input: &Input, new: &File) -> io::Result<bool> {
    if new.metadata()?.len() != input.len {
        return Ok(false);
    }
    let mut x = vec![0; 64 * 1024];
    let mut y = vec![0; 64 * 1024];
    let mut offset = 0u64;
    while offset < input.len {
        let n = (input.len - offset).min(x.len() as u64) as usize;
        input.file.read_exact_at(&mut x[..n], offset)?;
        new.read_exact_at(&mut y[..n], offset)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests_support {
    use super::*;

    /// Writes `bytes` to a file named `name` in a new temporary directory.
    pub(super) fn write_temp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    /// Normalises `bytes` (as a file named `name`) as `kind`; the resulting bytes.
    pub(super) fn normalize_bytes(kind: Kind, bytes: &[u8], name: &str) -> (Vec<u8>, Normalized) {
        let (_dir, path) = write_temp(name, bytes);
        let result = normalize_file(&path, kind, SDE).unwrap();
        (fs::read(&path).unwrap(), result)
    }

    /// The `SOURCE_DATE_EPOCH` the unit tests use: 2021-03-04T05:06:07Z.
    pub(super) const SDE: u64 = 1_614_834_367;

    pub(super) use crate::formats::tests_support::{ar, gz, tar};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
        }
        assert_eq!(Kind::parse("ZIP"), None);
        assert_eq!(Kind::parse("xz"), None);
    }

    use std::os::unix::fs::symlink;
    use std::time::{Duration, SystemTime};

    use tests_support::{SDE, ar, gz, tar, write_temp};

    #[test]
    fn rewriting_keeps_mode_owner_and_times_and_unchanged_files_stay() {
        let (_dir, path) = write_temp("a.tar", &tar("f", b"data", 5));
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(then).set_accessed(then))
            .unwrap();
        let before = fs::metadata(&path).unwrap();
        assert_eq!(
            normalize_file(&path, Kind::Tar, SDE).unwrap(),
            Normalized::Rewritten
        );
        let after = fs::metadata(&path).unwrap();
        assert_ne!(after.ino(), before.ino(), "replaced by rename");
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(after.modified().unwrap(), then);
        assert_eq!(
            normalize_file(&path, Kind::Tar, SDE).unwrap(),
            Normalized::Unchanged
        );
        assert_eq!(
            fs::metadata(&path).unwrap().ino(),
            after.ino(),
            "not replaced"
        );
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn tree_normalises_what_the_kinds_match_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        let files: [(&str, Vec<u8>); 7] = [
            ("sub/deeper/a.tar", tar("f", b"data", 5)),
            (
                "b.tar.gz",
                gz(&tar("f", b"data", 5), Some("b.tar"), None, 7, 3),
            ),
            ("c.gz", gz(b"text", Some("c"), None, 7, 3)),
            ("lib.a", ar("x.o", b"obj", 1_700_000_000)),
            ("notes.txt", b"not an archive".to_vec()),
            ("fake.tar", b"not a tar either".to_vec()),
            ("tarball", tar("g", b"found by its magic", 5)),
        ];
        for (name, bytes) in &files {
            fs::write(root.join(name), bytes).unwrap();
        }
        let target = outside.path().join("t.tar");
        fs::write(&target, tar("f", b"data", 5)).unwrap();
        symlink(&target, root.join("link.tar")).unwrap();
        symlink(outside.path(), root.join("linked-dir")).unwrap();

        assert_eq!(normalize_tree(root, &[], SDE).unwrap(), vec![]);
        let done = normalize_tree(root, &[Kind::Tar, Kind::Gzip, Kind::Ar], SDE).unwrap();
        let want = [
            ("b.tar.gz", Kind::Gzip),
            ("c.gz", Kind::Gzip),
            ("lib.a", Kind::Ar),
            ("sub/deeper/a.tar", Kind::Tar),
            ("tarball", Kind::Tar),
        ];
        let want: Vec<(String, Kind)> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(done, want);
        assert_eq!(
            fs::read(&target).unwrap(),
            tar("f", b"data", 5),
            "links are not followed"
        );
        for name in ["notes.txt", "fake.tar"] {
            let original = &files.iter().find(|f| f.0 == name).unwrap().1;
            assert_eq!(&fs::read(root.join(name)).unwrap(), original);
        }
        // The tar inside the .tar.gz was normalised like the plain one.
        let mut inner = Vec::new();
        let gz_bytes = fs::read(root.join("b.tar.gz")).unwrap();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz_bytes[..]), &mut inner)
            .unwrap();
        assert_eq!(inner, fs::read(root.join("sub/deeper/a.tar")).unwrap());
        // Everything is normal now.
        assert_eq!(normalize_tree(root, &Kind::ALL, SDE).unwrap(), vec![]);
        // A file as the root.
        let single = root.join("single.a");
        fs::write(&single, ar("y.o", b"o", 9)).unwrap();
        assert_eq!(
            normalize_tree(&single, &[Kind::Ar], SDE).unwrap(),
            vec![("single.a".to_string(), Kind::Ar)]
        );
    }

    #[test]
    fn tar_gz_needs_both_kinds_for_the_inside() {
        let original = gz(&tar("f", b"data", 5), Some("b.tar"), None, 7, 3);
        let (dir, path) = write_temp("b.tgz", &original);
        assert_eq!(normalize_any(&path, &[Kind::Tar], SDE).unwrap(), None);
        assert_eq!(fs::read(&path).unwrap(), original);
        assert_eq!(
            normalize_any(&path, &[Kind::Gzip], SDE).unwrap(),
            Some(Kind::Gzip)
        );
        let header_only = fs::read(&path).unwrap();
        assert_eq!(&header_only[10..], &original[10 + "b.tar\0".len()..]);
        assert_eq!(
            normalize_any(&path, &[Kind::Gzip, Kind::Tar], SDE).unwrap(),
            Some(Kind::Gzip)
        );
        assert_ne!(fs::read(&path).unwrap(), header_only);
        drop(dir);
    }

    #[test]
    fn tree_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut broken = ar("x.o", b"obj", 1);
        broken.truncate(broken.len() - 2);
        fs::write(dir.path().join("broken.a"), &broken).unwrap();
        let err = normalize_tree(dir.path(), &[Kind::Ar], SDE).unwrap_err();
        assert!(
            matches!(&err, NormalizeError::Corrupt { kind: Kind::Ar, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("broken.a is a corrupt ar archive: truncated member"),
            "{err}"
        );
        assert_eq!(fs::read(dir.path().join("broken.a")).unwrap(), broken);
        let missing = dir.path().join("missing");
        let err = normalize_tree(&missing, &[Kind::Ar], SDE).unwrap_err();
        assert!(matches!(err, NormalizeError::Read { .. }), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn matches_by_extension_then_magic() {
        let (_d1, tar_bin) = write_temp("data.bin", &tar("f", b"x", 1));
        let (_d2, fake) = write_temp("fake.TAR", b"text");
        let (_d3, text) = write_temp("notes", b"text");
        assert!(Kind::Tar.matches(&tar_bin) && Kind::Tar.matches(&fake));
        assert!(!Kind::Tar.matches(&text) && !Kind::Gzip.matches(&tar_bin));
        assert_eq!(normalize_any(&fake, &[Kind::Tar], SDE).unwrap(), None);
        assert!(!Kind::Tar.matches(&tar_bin.with_file_name("absent.tar")));
    }

    #[test]
    fn tar_gz_names() {
        assert!(is_tar_gz_name(Path::new("a/b.tar.gz")));
        assert!(is_tar_gz_name(Path::new("b.TGZ")));
        assert!(!is_tar_gz_name(Path::new("b.gz")));
        assert!(!is_tar_gz_name(Path::new("tar.gz/x")));
    }
}
