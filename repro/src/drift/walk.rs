//! Walking the two trees: which paths exist where, their types, modes and links, and the
//! content of files that exist on both sides.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

use super::{
    Ctx, DriftError, DriftKind, EntryType, FileDrift, MAX_ANALYSED_BYTES, MAX_ENTRIES, Side,
    content, hints, util,
};

/// What a walk found.
#[derive(Debug, Default)]
pub(super) struct Walked {
    pub(super) files: Vec<FileDrift>,
    /// Regular files on both sides whose contents differ: shown path, relative path.
    pub(super) content_paths: Vec<(String, PathBuf)>,
    omitted: usize,
}

impl Walked {
    fn push(&mut self, path: &str, kind: DriftKind) {
        if self.files.len() >= MAX_ENTRIES {
            self.omitted += 1;
        } else {
            self.files.push(FileDrift {
                path: path.to_owned(),
                kind,
                diffoscope: None,
            });
        }
    }
}

pub(super) fn walk(
    ctx: &mut Ctx<'_>,
    a: &Path,
    b: &Path,
    paths: &[String],
) -> Result<Walked, DriftError> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if paths.is_empty() {
        roots.push(PathBuf::new());
    }
    for p in paths {
        roots.push(relative(p)?);
    }
    let mut done: Vec<PathBuf> = Vec::new();
    let mut out = Walked::default();
    for rel in roots {
        if done.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        entry(ctx, a, b, &rel, &mut out)?;
        done.push(rel);
    }
    if out.omitted > 0 {
        let count = out.omitted;
        out.files.push(FileDrift {
            path: ".".to_owned(),
            kind: DriftKind::Omitted {
                count,
                what: "more differences (the report lists the first ones)".to_owned(),
            },
            diffoscope: None,
        });
    }
    Ok(out)
}

/// `p` as a relative path without `.` or `..` (`""` and `.` are the root).
fn relative(p: &str) -> Result<PathBuf, DriftError> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(DriftError::BadPath { path: p.to_owned() });
            }
        }
    }
    Ok(out)
}

fn shown(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        rel.to_string_lossy().into_owned()
    }
}

fn lstat(p: &Path) -> Result<Option<Metadata>, DriftError> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io(p, source)),
    }
}

fn io(path: &Path, source: std::io::Error) -> DriftError {
    DriftError::Io {
        path: path.to_owned(),
        source,
    }
}

fn entry_type(m: &Metadata) -> EntryType {
    let t = m.file_type();
    if t.is_symlink() {
        EntryType::Symlink
    } else if t.is_dir() {
        EntryType::Dir
    } else if t.is_file() {
        EntryType::File
    } else {
        EntryType::Other
    }
}

fn entry(
    ctx: &mut Ctx<'_>,
    a: &Path,
    b: &Path,
    rel: &Path,
    out: &mut Walked,
) -> Result<(), DriftError> {
    let (pa, pb) = (a.join(rel), b.join(rel));
    let label = shown(rel);
    let (ma, mb) = match (lstat(&pa)?, lstat(&pb)?) {
        (None, None) => return Ok(()),
        (Some(m), None) => {
            let entry = entry_type(&m);
            out.push(
                &label,
                DriftKind::OnlyIn {
                    side: Side::A,
                    entry,
                },
            );
            return Ok(());
        }
        (None, Some(m)) => {
            let entry = entry_type(&m);
            out.push(
                &label,
                DriftKind::OnlyIn {
                    side: Side::B,
                    entry,
                },
            );
            return Ok(());
        }
        (Some(ma), Some(mb)) => (ma, mb),
    };
    let (ta, tb) = (entry_type(&ma), entry_type(&mb));
    if ta != tb {
        out.push(&label, DriftKind::Type { a: ta, b: tb });
        return Ok(());
    }
    // A symlink's own mode is meaningless on Linux.
    if ta != EntryType::Symlink {
        let (mode_a, mode_b) = (ma.mode() & 0o7777, mb.mode() & 0o7777);
        if mode_a != mode_b {
            out.push(
                &label,
                DriftKind::Mode {
                    a: mode_a,
                    b: mode_b,
                },
            );
            hints::mode(ctx, &label, mode_a, mode_b);
        }
    }
    match ta {
        EntryType::Dir => dir(ctx, a, b, rel, &label, out),
        EntryType::Symlink => {
            let la = fs::read_link(&pa).map_err(|e| io(&pa, e))?;
            let lb = fs::read_link(&pb).map_err(|e| io(&pb, e))?;
            if la != lb {
                let (la, lb) = (
                    la.to_string_lossy().into_owned(),
                    lb.to_string_lossy().into_owned(),
                );
                hints::roots_and_hosts(ctx, &label, la.as_bytes(), lb.as_bytes());
                hints::scan_pair(ctx, &label, &la, &lb);
                out.push(&label, DriftKind::Symlink { a: la, b: lb });
            }
            Ok(())
        }
        EntryType::File => file(ctx, (&pa, &ma), (&pb, &mb), rel, &label, out),
        EntryType::Other => Ok(()),
    }
}

fn list(p: &Path) -> Result<BTreeSet<OsString>, DriftError> {
    let mut names = BTreeSet::new();
    for e in fs::read_dir(p).map_err(|e| io(p, e))? {
        names.insert(e.map_err(|e| io(p, e))?.file_name());
    }
    Ok(names)
}

fn dir(
    ctx: &mut Ctx<'_>,
    a: &Path,
    b: &Path,
    rel: &Path,
    label: &str,
    out: &mut Walked,
) -> Result<(), DriftError> {
    let na = list(&a.join(rel))?;
    let nb = list(&b.join(rel))?;
    let only = |x: &BTreeSet<OsString>, y: &BTreeSet<OsString>| -> String {
        x.difference(y)
            .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (only_a, only_b) = (only(&na, &nb), only(&nb, &na));
    if !only_a.is_empty() && !only_b.is_empty() {
        hints::scan_pair(ctx, label, &only_a, &only_b);
    }
    for name in na.union(&nb) {
        entry(ctx, a, b, &rel.join(name), out)?;
    }
    Ok(())
}

fn file(
    ctx: &mut Ctx<'_>,
    (pa, ma): (&Path, &Metadata),
    (pb, mb): (&Path, &Metadata),
    rel: &Path,
    label: &str,
    out: &mut Walked,
) -> Result<(), DriftError> {
    let kinds = if ma.len() > MAX_ANALYSED_BYTES || mb.len() > MAX_ANALYSED_BYTES {
        match large(pa, pb)? {
            None => return Ok(()),
            Some(kind) => vec![kind],
        }
    } else {
        let da = read(pa)?;
        let db = read(pb)?;
        if da == db {
            return Ok(());
        }
        content::compare_bytes(ctx, label, &da, &db, 0)
    };
    out.content_paths.push((label.to_owned(), rel.to_owned()));
    for kind in kinds {
        out.push(label, kind);
    }
    Ok(())
}

fn read(p: &Path) -> Result<Vec<u8>, DriftError> {
    let mut d = Vec::new();
    fs::File::open(p)
        .and_then(|f| f.take(MAX_ANALYSED_BYTES + 1).read_to_end(&mut d))
        .map_err(|e| io(p, e))?;
    Ok(d)
}

/// Compares files too large to hold: streams both, and on a difference reads the bytes
/// around it.
fn large(pa: &Path, pb: &Path) -> Result<Option<DriftKind>, DriftError> {
    const CHUNK: usize = 1 << 20;
    let fa = fs::File::open(pa).map_err(|e| io(pa, e))?;
    let fb = fs::File::open(pb).map_err(|e| io(pb, e))?;
    let (size_a, size_b) = (
        fa.metadata().map_err(|e| io(pa, e))?.len(),
        fb.metadata().map_err(|e| io(pb, e))?.len(),
    );
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut at: u64 = 0;
    let offset = loop {
        let na = read_full(&fa, &mut ba, at).map_err(|e| io(pa, e))?;
        let nb = read_full(&fb, &mut bb, at).map_err(|e| io(pb, e))?;
        if let Some(i) = util::first_difference(&ba[..na], &bb[..nb]) {
            break at + i as u64;
        }
        if na == 0 {
            return Ok(None);
        }
        at += na as u64;
    };
    let start = (offset / 16).saturating_sub(1) * 16;
    let window = |f: &fs::File, p: &Path| -> Result<(Vec<u8>, usize), DriftError> {
        let mut w = vec![0u8; 48];
        let n = read_full(f, &mut w, start).map_err(|e| io(p, e))?;
        w.truncate(n);
        Ok((w, usize::try_from(offset - start).unwrap_or(0)))
    };
    let ((wa, ia), (wb, ib)) = (window(&fa, pa)?, window(&fb, pb)?);
    let rebase = |dump: String| -> String {
        // The window's dump counts from 0: shift its offsets to the file's.
        dump.lines()
            .map(
                |l| match l.get(..8).and_then(|h| u64::from_str_radix(h, 16).ok()) {
                    Some(o) => format!("{:08x}{}", o + start, &l[8..]),
                    None => l.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Some(DriftKind::Binary {
        offset,
        a_context: rebase(util::context(&wa, ia)),
        b_context: rebase(util::context(&wb, ib)),
        a_size: size_a,
        b_size: size_b,
    }))
}

fn read_full(f: &fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative("a/./b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative(".").unwrap(), PathBuf::new());
        assert!(matches!(relative("../x"), Err(DriftError::BadPath { .. })));
        assert!(matches!(relative("/etc"), Err(DriftError::BadPath { .. })));
    }

    #[test]
    fn large_files_stream_to_the_first_difference() {
        let dir = tempfile::tempdir().unwrap();
        let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
        let mut d = vec![0x55u8; 3 << 20];
        fs::write(&pa, &d).unwrap();
        d[(2 << 20) + 5] = 0xaa;
        fs::write(&pb, &d).unwrap();
        let Some(DriftKind::Binary {
            offset,
            a_context,
            b_context,
            ..
        }) = large(&pa, &pb).unwrap()
        else {
            panic!("no binary drift");
        };
        assert_eq!(offset, (2 << 20) + 5);
        assert!(a_context.starts_with("001ffff0  55"), "{a_context}");
        assert!(
            b_context.contains("00200000  55 55 55 55 55 aa"),
            "{b_context}"
        );
        fs::write(&pb, vec![0x55u8; 3 << 20]).unwrap();
        assert_eq!(large(&pa, &pb).unwrap(), None);
    }
}
