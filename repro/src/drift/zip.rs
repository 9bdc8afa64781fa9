//! zip (jar, wheel, apk…): the central directory read by hand, members' DOS times and
//! extended timestamps, Unix modes and owners, compression, and their data.

use super::archive::{Data, Drifts, Member, compare_members};
use super::{Ctx, DriftKind, Field, Format, util};

const EOCD: &[u8] = b"PK\x05\x06";
const EOCD64: &[u8] = b"PK\x06\x06";
const LOCATOR64: &[u8] = b"PK\x06\x07";
const CENTRAL: &[u8] = b"PK\x01\x02";
const LOCAL: &[u8] = b"PK\x03\x04";

/// A zip archive: its members and its comment.
#[derive(Debug)]
pub(super) struct Zip<'d> {
    pub(super) members: Vec<Member<'d>>,
    pub(super) comment: String,
}

fn dos_time(date: u16, time: u16) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} (DOS time)",
        1980 + (date >> 9),
        (date >> 5) & 0xf,
        date & 0x1f,
        time >> 11,
        (time >> 5) & 0x3f,
        (time & 0x1f) * 2
    )
}

fn method(m: u16) -> String {
    match m {
        0 => "stored".to_owned(),
        8 => "deflate".to_owned(),
        9 => "deflate64".to_owned(),
        12 => "bzip2".to_owned(),
        14 => "lzma".to_owned(),
        93 => "zstd".to_owned(),
        95 => "xz".to_owned(),
        _ => format!("method {m}"),
    }
}

fn eocd(d: &[u8]) -> Result<usize, String> {
    let lowest = d.len().saturating_sub(22 + 0xffff);
    (lowest..=d.len().saturating_sub(22))
        .rev()
        .find(|&i| d[i..].starts_with(EOCD))
        .filter(|_| d.len() >= 22)
        .ok_or_else(|| "no zip end of central directory".to_owned())
}

pub(super) fn read(d: &[u8]) -> Result<Zip<'_>, String> {
    let r = util::le(d);
    let end = eocd(d)?;
    let cut = || "zip end record cut short".to_owned();
    let mut entries = u64::from(r.u16(end + 10).ok_or_else(cut)?);
    let mut cd_off = u64::from(r.u32(end + 16).ok_or_else(cut)?);
    let comment_len = usize::from(r.u16(end + 20).ok_or_else(cut)?);
    let comment =
        String::from_utf8_lossy(util::slice(d, end + 22, comment_len, "zip comment")?).into_owned();
    if (entries == 0xffff || cd_off == 0xffff_ffff)
        && end >= 20
        && d[end - 20..].starts_with(LOCATOR64)
    {
        let at = usize::try_from(r.u64(end - 20 + 8).ok_or_else(cut)?)
            .map_err(|_| "zip64 end record out of range".to_owned())?;
        if !d.get(at..).is_some_and(|s| s.starts_with(EOCD64)) {
            return Err(format!("no zip64 end record at offset {at:#x}"));
        }
        entries = r.u64(at + 32).ok_or_else(cut)?;
        cd_off = r.u64(at + 48).ok_or_else(cut)?;
    }
    let mut at = usize::try_from(cd_off).map_err(|_| "zip directory out of range".to_owned())?;
    let mut members = Vec::new();
    for _ in 0..entries {
        let h = util::slice(d, at, 46, "zip central directory entry")?;
        if !h.starts_with(CENTRAL) {
            return Err(format!("bad zip central directory entry at offset {at:#x}"));
        }
        let h = util::le(h);
        let field16 = |o: usize| h.u16(o).unwrap_or(0);
        let field32 = |o: usize| h.u32(o).unwrap_or(0);
        let made_by = field16(4);
        let flags = field16(8);
        let meth = field16(10);
        let (time, date) = (field16(12), field16(14));
        let mut csize = u64::from(field32(20));
        let mut usize_ = u64::from(field32(24));
        let (name_len, extra_len, comment_len) = (
            usize::from(field16(28)),
            usize::from(field16(30)),
            usize::from(field16(32)),
        );
        let ext_attr = field32(38);
        let mut local = u64::from(field32(42));
        let name_b = util::slice(d, at + 46, name_len, "zip member name")?;
        let name = String::from_utf8_lossy(name_b).into_owned();
        let extra = util::slice(d, at + 46 + name_len, extra_len, "zip extra field")?;
        let member_comment = util::slice(
            d,
            at + 46 + name_len + extra_len,
            comment_len,
            "zip member comment",
        )?;
        at += 46 + name_len + extra_len + comment_len;

        // Extra fields: times, owners, zip64 sizes; the rest is compared as bytes.
        let mut unix_mtime = None;
        let mut owner = None;
        let mut other = Vec::new();
        let mut e = extra;
        while e.len() >= 4 {
            let er = util::le(e);
            let (id, len) = (er.u16(0).unwrap_or(0), usize::from(er.u16(2).unwrap_or(0)));
            let Some(body) = e.get(4..4 + len) else {
                other.push(format!("cut:{}", util::hex(e)));
                break;
            };
            let br = util::le(body);
            match id {
                0x0001 => {
                    let mut o = 0;
                    if usize_ == 0xffff_ffff {
                        usize_ = br.u64(o).unwrap_or(usize_);
                        o += 8;
                    }
                    if csize == 0xffff_ffff {
                        csize = br.u64(o).unwrap_or(csize);
                        o += 8;
                    }
                    if local == 0xffff_ffff {
                        local = br.u64(o).unwrap_or(local);
                    }
                }
                0x5455 if body.first().is_some_and(|f| f & 1 != 0) => {
                    unix_mtime = br.u32(1).map(i64::from);
                }
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
                0x000d => {
                    unix_mtime = br.u32(4).map(i64::from);
                    owner = Some(format!(
                        "uid {} gid {}",
                        br.u16(8).unwrap_or(0),
                        br.u16(10).unwrap_or(0)
                    ));
                }
                _ => other.push(format!("{id:#06x}:{}", util::hex(body))),
            }
            e = &e[(4 + len).min(e.len())..];
        }

        let lr = util::le(d);
        let lo = usize::try_from(local).map_err(|_| "zip local header out of range".to_owned())?;
        if !d.get(lo..).is_some_and(|s| s.starts_with(LOCAL)) {
            return Err(format!(
                "no zip local header for {name:?} at offset {lo:#x}"
            ));
        }
        let cut = || format!("zip local header for {name:?} cut short");
        let data_at = lo
            + 30
            + usize::from(lr.u16(lo + 26).ok_or_else(cut)?)
            + usize::from(lr.u16(lo + 28).ok_or_else(cut)?);
        let csize = usize::try_from(csize).map_err(|_| "zip member too large".to_owned())?;
        let stored = util::slice(d, data_at, csize, "zip member data")?;
        let data = match meth {
            _ if flags & 1 != 0 => Data::Opaque(stored),
            0 => Data::Raw(stored),
            8 => Data::Deflate(stored),
            _ => Data::Opaque(stored),
        };
        let unix = made_by >> 8 == 3;
        let file_type = ext_attr >> 16 & 0o170_000;
        let kind = if name.ends_with('/') || (unix && file_type == 0o040_000) {
            "directory"
        } else if unix && file_type == 0o120_000 {
            "symlink"
        } else {
            "file"
        };
        let mut m = Member::new(name, kind, data);
        let mut mtime = dos_time(date, time);
        if let Some(t) = unix_mtime {
            mtime = format!("{mtime}; unix {}", util::fmt_unix(t));
        }
        m.mtime = Some(mtime);
        m.mode = unix.then_some(ext_attr >> 16 & 0o7777);
        m.owner = owner;
        m.compression = Some(method(meth));
        m.header
            .push(("version made by", format!("{made_by:#06x}")));
        m.header.push(("flags", format!("{flags:#06x}")));
        m.header.push(("uncompressed size", usize_.to_string()));
        if !unix {
            m.header
                .push(("external attributes", format!("{ext_attr:#010x}")));
        }
        if !other.is_empty() {
            m.header.push(("extra fields", other.join(" ")));
        }
        if !member_comment.is_empty() {
            m.header.push((
                "comment",
                String::from_utf8_lossy(member_comment).into_owned(),
            ));
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
