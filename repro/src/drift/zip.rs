//! zip (jar, wheel, apk…): members' DOS times and extended timestamps, Unix modes and
//! owners, compression, and their data, from the central directory.

use super::archive::{Data, Drifts, Member, compare_members, reason};
use super::{Ctx, DriftKind, Field, Format, util};
use crate::formats::zip::{
    EXTRA_ZIP64, Extra, FLAG_ENCRYPTED, HOST_UNIX, METHOD_DEFLATED, METHOD_STORED, ZIP64_16,
    ZIP64_32, dos_fields, extra_fields, read_central, read_end, read_local, read_zip64_end,
};
use crate::formats::{le16, le32};

/// A zip archive: its members and its comment.
#[derive(Debug)]
pub(super) struct Zip<'d> {
    pub(super) members: Vec<Member<'d>>,
    pub(super) comment: String,
}

fn dos_time(date: u16, time: u16) -> String {
    let (y, mo, d, h, mi, s) = dos_fields(date, time);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} (DOS time)")
}

fn method(m: u16) -> String {
    match m {
        METHOD_STORED => "stored".to_owned(),
        METHOD_DEFLATED => "deflate".to_owned(),
        9 => "deflate64".to_owned(),
        12 => "bzip2".to_owned(),
        14 => "lzma".to_owned(),
        93 => "zstd".to_owned(),
        95 => "xz".to_owned(),
        _ => format!("method {m}"),
    }
}

/// What the extra fields this report reads say: a Unix mtime, an owner; the others as
/// `id:hex`.
fn extras(extra: &[u8]) -> (Option<i64>, Option<String>, Vec<String>) {
    let (mut unix_mtime, mut owner, mut other) = (None, None, Vec::new());
    for field in extra_fields(extra) {
        let (id, body) = match field {
            Extra::Field(id, body) => (id, body),
            Extra::Malformed(tail) => {
                other.push(format!("cut:{}", util::hex(tail)));
                continue;
            }
        };
        match id {
            // The zip64 values are read from the entry.
            EXTRA_ZIP64 => {}
            // Extended timestamp: flags, then the mtime when flag 1 says so.
            0x5455 if body.first().is_some_and(|f| f & 1 != 0) && body.len() >= 5 => {
                unix_mtime = Some(i64::from(le32(body, 1)));
            }
            // Info-ZIP Unix (new): version, uid size, uid, gid size, gid (little-endian).
            0x7875 => {
                let uid_len = usize::from(*body.get(1).unwrap_or(&0));
                let num = |s: &[u8]| s.iter().rev().fold(0u64, |v, &c| v << 8 | u64::from(c));
                let uid = body.get(2..2 + uid_len).map(num);
                let gid_len = usize::from(*body.get(2 + uid_len).unwrap_or(&0));
                let gid = body.get(3 + uid_len..3 + uid_len + gid_len).map(num);
                owner = Some(format!(
                    "uid {} gid {}",
                    uid.map_or("?".to_owned(), |v| v.to_string()),
                    gid.map_or("?".to_owned(), |v| v.to_string())
                ));
            }
            // PKWARE Unix: atime, mtime, uid, gid.
            0x000d if body.len() >= 12 => {
                unix_mtime = Some(i64::from(le32(body, 4)));
                owner = Some(format!("uid {} gid {}", le16(body, 8), le16(body, 10)));
            }
            _ => other.push(format!("{id:#06x}:{}", util::hex(body))),
        }
    }
    (unix_mtime, owner, other)
}

pub(super) fn read(d: &[u8]) -> Result<Zip<'_>, String> {
    let end = read_end(d).map_err(reason)?;
    let comment = String::from_utf8_lossy(&end.comment).into_owned();
    let (mut entries, mut cd_off) = (u64::from(end.entries), u64::from(end.cd_offset));
    if let Some(at) = end
        .zip64
        .filter(|_| end.entries == ZIP64_16 || end.cd_offset == ZIP64_32)
    {
        let z = read_zip64_end(d, at).map_err(reason)?;
        (entries, cd_off) = (z.entries, z.cd_offset);
    }
    let mut at = cd_off;
    let mut members = Vec::new();
    for _ in 0..entries {
        let c = read_central(d, at).map_err(reason)?;
        at += c.record_len();
        let name = String::from_utf8_lossy(&c.name).into_owned();
        let values = c.zip64_values();
        let (unix_mtime, owner, other) = extras(&c.extra);
        let local =
            read_local(d, values.local_offset).map_err(|e| format!("{name:?}: {}", reason(e)))?;
        let stored = util::slice(d, local.data_offset, values.compressed, "zip member data")?;
        let data = match c.info.method {
            _ if c.info.flags & FLAG_ENCRYPTED != 0 => Data::Opaque(stored),
            METHOD_STORED => Data::Raw(stored),
            METHOD_DEFLATED => Data::Deflate(stored),
            _ => Data::Opaque(stored),
        };
        let unix = c.made_by >> 8 == HOST_UNIX;
        let file_type = c.external_attr >> 16 & 0o170_000;
        let kind = if name.ends_with('/') || (unix && file_type == 0o040_000) {
            "directory"
        } else if unix && file_type == 0o120_000 {
            "symlink"
        } else {
            "file"
        };
        let mut m = Member::new(name, kind, data);
        let mut mtime = dos_time(c.info.date, c.info.time);
        if let Some(t) = unix_mtime {
            mtime = format!("{mtime}; unix {}", util::fmt_unix(t));
        }
        m.mtime = Some(mtime);
        m.mode = unix.then_some(c.external_attr >> 16 & 0o7777);
        m.owner = owner;
        m.compression = Some(method(c.info.method));
        m.header
            .push(("version made by", format!("{:#06x}", c.made_by)));
        m.header.push(("flags", format!("{:#06x}", c.info.flags)));
        m.header
            .push(("uncompressed size", values.uncompressed.to_string()));
        if !unix {
            m.header
                .push(("external attributes", format!("{:#010x}", c.external_attr)));
        }
        if !other.is_empty() {
            m.header.push(("extra fields", other.join(" ")));
        }
        if !c.comment.is_empty() {
            m.header
                .push(("comment", String::from_utf8_lossy(&c.comment).into_owned()));
        }
        members.push(m);
    }
    Ok(Zip { members, comment })
}

pub(super) fn compare(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &[u8],
    b: &[u8],
    depth: usize,
) -> Result<Vec<DriftKind>, String> {
    let za = read(a).map_err(|e| format!("a: {e}"))?;
    let zb = read(b).map_err(|e| format!("b: {e}"))?;
    let mut d = Drifts::new(Format::Zip);
    if za.comment != zb.comment {
        d.push(
            "(archive comment)",
            Field::Header,
            Some(za.comment.clone()),
            Some(zb.comment.clone()),
            None,
        );
    }
    compare_members(ctx, label, &mut d, &za.members, &zb.members, depth);
    Ok(d.finish(ctx, label))
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write as _;

    use super::super::CompareOptions;
    use super::*;
    use crate::formats::zip::{CENTRAL_SIG, EOCD_SIG, LOCAL_SIG};

    const LOCAL: &[u8] = &LOCAL_SIG.to_le_bytes();
    const CENTRAL: &[u8] = &CENTRAL_SIG.to_le_bytes();
    const EOCD: &[u8] = &EOCD_SIG.to_le_bytes();

    /// A zip of `(name, data, dos date, dos time, deflate)` entries.
    pub(in super::super) fn zip(entries: &[(&str, &[u8], u16, u16, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for &(name, data, date, time, deflate) in entries {
            let stored = if deflate {
                let mut w =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                w.write_all(data).unwrap();
                w.finish().unwrap()
            } else {
                data.to_vec()
            };
            let crc = 0u32;
            let method: u16 = if deflate { 8 } else { 0 };
            let local = out.len() as u32;
            out.extend_from_slice(LOCAL);
            for v in [20u16, 0, method, time, date] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [crc, stored.len() as u32, data.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&stored);
            central.extend_from_slice(CENTRAL);
            for v in [0x031eu16, 20, 0, method, time, date] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            for v in [crc, stored.len() as u32, data.len() as u32] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            for v in [name.len() as u16, 0, 0, 0, 0] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            central.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
            central.extend_from_slice(&local.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(EOCD);
        for v in [0u16, 0, entries.len() as u16, entries.len() as u16] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn zip_members() {
        let a = zip(&[
            ("x.txt", b"hello\n", 0x5b7c, 0x6000, true),
            ("y", b"\0\x01\x02", 0x5b7c, 0, false),
        ]);
        let b = zip(&[
            ("x.txt", b"hello\n", 0x5b7d, 0x6000, true),
            ("y", b"\0\x01\x03", 0x5b7c, 0, false),
        ]);
        let z = read(&a).unwrap();
        assert_eq!(z.members.len(), 2);
        assert_eq!(
            z.members[0].mtime.as_deref(),
            Some("2025-11-28 12:00:00 (DOS time)")
        );
        assert_eq!(z.members[0].mode, Some(0o644));
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let kinds = compare(&mut ctx, "p.whl", &a, &b, 0).unwrap();
        let got: Vec<(&str, Field)> = kinds
            .iter()
            .filter_map(|k| match k {
                DriftKind::Archive { member, field, .. } => Some((member.as_str(), *field)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [("x.txt", Field::Mtime), ("y", Field::Content)]);
        let DriftKind::Archive {
            detail: Some(bin), ..
        } = &kinds[1]
        else {
            panic!()
        };
        assert!(
            matches!(**bin, DriftKind::Binary { offset: 2, .. }),
            "{bin:?}"
        );
    }

    #[test]
    fn corrupt_zip() {
        let a = zip(&[("x.txt", b"hello\n", 0x5b7c, 0x6000, true)]);
        assert!(read(&a[..a.len() - 30]).is_err());
        let mut bad = a.clone();
        // The member's deflate stream: garbage inflates to an error, not a panic.
        bad[30 + 5] ^= 0xff;
        bad[30 + 6] ^= 0xff;
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let kinds = compare(&mut ctx, "p.zip", &a, &bad, 0).unwrap();
        assert!(!kinds.is_empty());
    }
}
