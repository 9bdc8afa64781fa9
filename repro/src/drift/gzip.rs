//! gzip: the header's fields (mtime, name, OS, flags, extra, comment) and the inflated
//! data, compared recursively.

use super::archive::{Capped, Drifts, reason};
use super::{Ctx, DriftKind, Field, Format, content, util};
use crate::formats::gzip::{FHCRC, Header, read_members};

/// The first member's header and what every member inflates to.
fn read(d: &[u8]) -> Result<(Header, Vec<u8>), String> {
    let mut out = Capped::default();
    let read = read_members(d, &mut out).map_err(reason)?;
    let first = read.members.into_iter().next().map(|m| m.header);
    // A gzip file holds at least one member: reading it would have failed otherwise.
    let header = first.ok_or("no gzip member")?;
    Ok((header, out.0))
}

/// The bytes after the first member's header.
fn compressed<'d>(d: &'d [u8], h: &Header) -> &'d [u8] {
    let at = usize::try_from(h.data).unwrap_or(d.len());
    &d[at.min(d.len())..]
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

fn lossy(s: &Option<Vec<u8>>) -> Option<String> {
    s.as_deref()
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

fn name(n: &Option<Vec<u8>>) -> String {
    lossy(n).map_or_else(|| "(not stored)".to_owned(), |n| format!("{n:?}"))
}

/// The name the data goes by: the stored name, else the file's without `.gz`.
fn inner_name(label: &str, ha: &Header, hb: &Header) -> String {
    if let Some(n) = lossy(&ha.name).or_else(|| lossy(&hb.name)) {
        return n;
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
    let (ha, da) = read(a).map_err(|e| format!("a: {e}"))?;
    let (hb, db) = read(b).map_err(|e| format!("b: {e}"))?;
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
        let show = |c: &Option<Vec<u8>>| {
            format!(
                "comment {}",
                lossy(c).map_or("(none)".to_owned(), |c| format!("{c:?}"))
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
    if (ha.flags & FHCRC) != (hb.flags & FHCRC) {
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
    } else {
        let (ba, bb) = (compressed(a, &ha), compressed(b, &hb));
        if ba != bb {
            d.push(
                &member,
                Field::Compression,
                Some(format!("{} bytes compressed", ba.len())),
                Some(format!("{} bytes compressed", bb.len())),
                None,
            );
        }
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
    }
}
