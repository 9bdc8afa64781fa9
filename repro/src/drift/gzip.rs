//! gzip: the header's fields (mtime, name, OS, flags, extra, comment) and the inflated
//! data, compared recursively.

use super::archive::{Drifts, inflate};
use super::{Ctx, DriftKind, Field, Format, content, util};

/// A gzip member's header.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) mtime: u32,
    pub(super) name: Option<String>,
    pub(super) os: u8,
    pub(super) xfl: u8,
    pub(super) flags: u8,
    pub(super) extra: Option<Vec<u8>>,
    pub(super) comment: Option<String>,
    /// Where the compressed data starts.
    pub(super) body: usize,
}

pub(super) fn header(d: &[u8]) -> Result<Header, String> {
    let fixed = util::slice(d, 0, 10, "gzip header")?;
    if fixed[..2] != [0x1f, 0x8b] {
        return Err("no gzip magic".to_owned());
    }
    if fixed[2] != 8 {
        return Err(format!("unknown gzip compression method {}", fixed[2]));
    }
    let flags = fixed[3];
    let mut at = 10;
    let mut extra = None;
    if flags & 4 != 0 {
        let len = usize::from(util::le(d).u16(at).ok_or("gzip extra field cut short")?);
        extra = Some(util::slice(d, at + 2, len, "gzip extra field")?.to_vec());
        at += 2 + len;
    }
    let mut string = |what: &str| -> Result<String, String> {
        let rest = d.get(at..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| format!("gzip {what} not terminated"))?;
        at += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let name = if flags & 8 != 0 {
        Some(string("file name")?)
    } else {
        None
    };
    let comment = if flags & 16 != 0 {
        Some(string("comment")?)
    } else {
        None
    };
    if flags & 2 != 0 {
        at += 2;
    }
    Ok(Header {
        mtime: util::le(d).u32(4).unwrap_or(0),
        name,
        os: fixed[9],
        xfl: fixed[8],
        flags,
        extra,
        comment,
        body: at.min(d.len()),
    })
}

fn os_name(os: u8) -> String {
    let name = match os {
        0 => "FAT",
        3 => "Unix",
        7 => "Macintosh",
        10 => "TOPS-20",
        11 => "NTFS",
        255 => "unknown",
        _ => "other",
    };
    format!("{os} ({name})")
}

fn mtime(t: u32) -> String {
    if t == 0 {
        "0 (not stored)".to_owned()
    } else {
        util::fmt_unix(i64::from(t))
    }
}

fn name(n: &Option<String>) -> String {
    n.as_ref()
        .map_or_else(|| "(not stored)".to_owned(), |n| format!("{n:?}"))
}

/// The name the data goes by: the stored name, else the file's without `.gz`.
fn inner_name(label: &str, ha: &Header, hb: &Header) -> String {
    if let Some(n) = ha.name.as_ref().or(hb.name.as_ref()) {
        return n.clone();
    }
    let base = label.rsplit(['/', '!']).next().unwrap_or(label);
    if let Some(stem) = base.strip_suffix(".tgz") {
        format!("{stem}.tar")
    } else if let Some(stem) = base.strip_suffix(".gz") {
        stem.to_owned()
    } else {
        "(data)".to_owned()
    }
}

pub(super) fn compare(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &[u8],
    b: &[u8],
    depth: usize,
) -> Result<Vec<DriftKind>, String> {
    let ha = header(a).map_err(|e| format!("a: {e}"))?;
    let hb = header(b).map_err(|e| format!("b: {e}"))?;
    let da = inflate(flate2::read::MultiGzDecoder::new(a)).map_err(|e| format!("a: {e}"))?;
    let db = inflate(flate2::read::MultiGzDecoder::new(b)).map_err(|e| format!("b: {e}"))?;
    let member = inner_name(label, &ha, &hb);
    let at = format!("{label}!{member}");
    let mut d = Drifts::new(Format::Gzip);
    if ha.mtime != hb.mtime {
        d.field(
            ctx,
            &at,
            &member,
            Field::Mtime,
            mtime(ha.mtime),
            mtime(hb.mtime),
        );
    }
    if ha.name != hb.name {
        d.field(
            ctx,
            &at,
            &member,
            Field::Name,
            name(&ha.name),
            name(&hb.name),
        );
    }
    if ha.os != hb.os {
        d.field(ctx, &at, &member, Field::Os, os_name(ha.os), os_name(hb.os));
    }
    if ha.xfl != hb.xfl {
        d.field(
            ctx,
            &at,
            &member,
            Field::Header,
            format!("xfl {}", ha.xfl),
            format!("xfl {}", hb.xfl),
        );
    }
    if ha.extra != hb.extra {
        let show = |e: &Option<Vec<u8>>| {
            e.as_ref().map_or_else(
                || "extra (none)".to_owned(),
                |e| format!("extra {}", util::hex(e)),
            )
        };
        d.field(
            ctx,
            &at,
            &member,
            Field::Header,
            show(&ha.extra),
            show(&hb.extra),
        );
    }
    if ha.comment != hb.comment {
        let show = |c: &Option<String>| {
            format!(
                "comment {}",
                c.as_deref()
                    .map_or("(none)".to_owned(), |c| format!("{c:?}"))
            )
        };
        d.field(
            ctx,
            &at,
            &member,
            Field::Header,
            show(&ha.comment),
            show(&hb.comment),
        );
    }
    if (ha.flags & 2) != (hb.flags & 2) {
        d.field(
            ctx,
            &at,
            &member,
            Field::Header,
            format!("flags {:#04x}", ha.flags),
            format!("flags {:#04x}", hb.flags),
        );
    }
    if da != db {
        for kind in content::compare_bytes(ctx, &at, &da, &db, depth + 1) {
            d.push(&member, Field::Content, None, None, Some(kind));
        }
    } else if a[ha.body..] != b[hb.body..] {
        d.push(
            &member,
            Field::Compression,
            Some(format!("{} bytes compressed", a.len() - ha.body)),
            Some(format!("{} bytes compressed", b.len() - hb.body)),
            None,
        );
    }
    Ok(d.finish(ctx, label))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::{CompareOptions, Variation};
    use super::*;

    fn gz(data: &[u8], mtime: u32, name: Option<&str>, level: u32) -> Vec<u8> {
        let mut b = flate2::GzBuilder::new().mtime(mtime);
        if let Some(n) = name {
            b = b.filename(n);
        }
        let mut w = b.write(Vec::new(), flate2::Compression::new(level));
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn fields(kinds: &[DriftKind]) -> Vec<Field> {
        kinds
            .iter()
            .filter_map(|k| match k {
                DriftKind::Archive { field, .. } => Some(*field),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn header_fields_and_content() {
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let a = gz(b"hello\n", 1_000_000_000, Some("x.txt"), 6);
        let b = gz(b"hello\n", 0, None, 6);
        let kinds = compare(&mut ctx, "x.txt.gz", &a, &b, 0).unwrap();
        assert_eq!(fields(&kinds), [Field::Mtime, Field::Name]);
        let DriftKind::Archive {
            member,
            a: Some(va),
            b: Some(vb),
            ..
        } = &kinds[0]
        else {
            panic!("{kinds:?}");
        };
        assert_eq!(member, "x.txt");
        assert!(va.starts_with("1000000000 (2001-09-09"), "{va}");
        assert_eq!(vb, "0 (not stored)");
        assert_eq!(ctx.hints[0].variation, Variation::Time);

        let a = gz(b"one\n", 0, None, 6);
        let b = gz(b"two\n", 0, None, 6);
        let kinds = compare(&mut ctx, "x.gz", &a, &b, 0).unwrap();
        assert!(
            matches!(
                kinds.as_slice(),
                [DriftKind::Archive { field: Field::Content, detail: Some(t), .. }] if matches!(**t, DriftKind::Text { .. })
            ),
            "{kinds:?}"
        );

        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let a = gz(&data, 0, None, 1);
        let b = gz(&data, 0, None, 9);
        assert_ne!(a, b);
        let kinds = compare(&mut ctx, "x.gz", &a, &b, 0).unwrap();
        assert_eq!(fields(&kinds), [Field::Header, Field::Compression]);
    }

    #[test]
    fn corrupt_gzip() {
        let a = gz(b"hello\n", 0, None, 6);
        let mut b = a.clone();
        b.truncate(12);
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        assert!(
            compare(&mut ctx, "x.gz", &a, &b, 0)
                .unwrap_err()
                .starts_with("b: ")
        );
        assert!(
            header(&[0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3, b'x'])
                .unwrap_err()
                .contains("not terminated")
        );
    }
}
