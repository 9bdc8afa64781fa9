//! Gzip (RFC 1952): member headers with every field as stored, and the members of a file
//! (each inflated and checked against its trailer), with the zero padding some writers
//! leave after the last one.

use std::io::Write;

use super::deflate::inflate;
use super::{FormatError, Source};

pub(crate) const MAGIC: [u8; 2] = [0x1f, 0x8b];
const METHOD_DEFLATE: u8 = 8;

pub(crate) const FTEXT: u8 = 0x01;
pub(crate) const FHCRC: u8 = 0x02;
pub(crate) const FEXTRA: u8 = 0x04;
pub(crate) const FNAME: u8 = 0x08;
pub(crate) const FCOMMENT: u8 = 0x10;
const RESERVED: u8 = 0xe0;

/// Whether `head` starts like a gzip member (magic and the deflate method).
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.starts_with(&[MAGIC[0], MAGIC[1], METHOD_DEFLATE])
}

fn corrupt(detail: String) -> FormatError {
    FormatError::Corrupt(detail)
}

/// A member header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) flags: u8,
    pub(crate) mtime: u32,
    pub(crate) xfl: u8,
    pub(crate) os: u8,
    /// FEXTRA's field.
    pub(crate) extra: Option<Vec<u8>>,
    /// FNAME's file name (without its NUL).
    pub(crate) name: Option<Vec<u8>>,
    /// FCOMMENT's comment (without its NUL).
    pub(crate) comment: Option<Vec<u8>>,
    /// FHCRC's header CRC (not checked).
    pub(crate) header_crc: Option<u16>,
    /// Where the compressed data starts.
    pub(crate) data: u64,
}

/// Reads the member header at `pos`.
pub(crate) fn read_header<S: Source + ?Sized>(src: &S, pos: u64) -> Result<Header, FormatError> {
    let mut fixed = [0u8; 10];
    src.read_exact_at(pos, &mut fixed, "member header")?;
    if fixed[..2] != MAGIC {
        return Err(corrupt(format!("no gzip member at offset {pos}")));
    }
    if fixed[2] != METHOD_DEFLATE {
        return Err(corrupt(format!(
            "unknown compression method {} in the member at offset {pos}",
            fixed[2]
        )));
    }
    let flags = fixed[3];
    if flags & RESERVED != 0 {
        return Err(corrupt(format!(
            "reserved header flags {flags:#04x} set in the member at offset {pos}"
        )));
    }
    let mut at = pos + 10;
    let mut extra = None;
    if flags & FEXTRA != 0 {
        let mut len = [0u8; 2];
        src.read_exact_at(at, &mut len, "extra field")?;
        let len = u64::from(u16::from_le_bytes(len));
        extra = Some(src.bytes(at + 2, len, "extra field")?);
        at += 2 + len;
    }
    let mut string = |flag: u8, what: &str| -> Result<Option<Vec<u8>>, FormatError> {
        if flags & flag == 0 {
            return Ok(None);
        }
        let s = zero_terminated(src, at, what)?;
        at += s.len() as u64 + 1;
        Ok(Some(s))
    };
    let name = string(FNAME, "file name")?;
    let comment = string(FCOMMENT, "comment")?;
    let mut header_crc = None;
    if flags & FHCRC != 0 {
        let mut crc = [0u8; 2];
        src.read_exact_at(at, &mut crc, "header crc")?;
        header_crc = Some(u16::from_le_bytes(crc));
        at += 2;
    }
    Ok(Header {
        flags,
        mtime: u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        xfl: fixed[8],
        os: fixed[9],
        extra,
        name,
        comment,
        header_crc,
        data: at,
    })
}

/// The string from `at` up to the next NUL.
fn zero_terminated<S: Source + ?Sized>(
    src: &S,
    mut at: u64,
    what: &str,
) -> Result<Vec<u8>, FormatError> {
    let start = at;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = src.read_at(at, &mut buf).map_err(FormatError::Read)?;
        if n == 0 {
            return Err(corrupt(format!(
                "the {what} at offset {start} is not terminated (truncated header)"
            )));
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..i]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
}

/// One member of a gzip file.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) header: Header,
    /// Where it ends: past its 8-byte trailer (CRC-32 and size of the inflated data).
    pub(crate) end: u64,
}

/// The members of a gzip file.
#[derive(Debug)]
pub(crate) struct Members {
    pub(crate) members: Vec<Member>,
    /// Where zero bytes after the last member start (tape padding, which gzip tolerates).
    pub(crate) padding: Option<u64>,
}

/// Reads every member of the gzip file in `src`, inflating it (the inflated bytes go to
/// `sink`) and checking it against its trailer. After the last member only zero bytes may
/// follow.
pub(crate) fn read_members<S: Source + ?Sized>(
    src: &S,
    sink: &mut dyn Write,
) -> Result<Members, FormatError> {
    let mut members = Vec::new();
    let mut pos = 0u64;
    loop {
        let header = read_header(src, pos)?;
        let inflated = inflate(src, header.data, src.size(), u64::MAX, sink)?;
        let trailer = header.data + inflated.consumed;
        let mut t = [0u8; 8];
        src.read_exact_at(trailer, &mut t, "member trailer")?;
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if crc != inflated.crc {
            return Err(corrupt(format!(
                "crc mismatch in the member at offset {pos}: stored {crc:#010x}, data {:#010x}",
                inflated.crc
            )));
        }
        if u64::from(isize) != inflated.size & 0xffff_ffff {
            return Err(corrupt(format!(
                "size mismatch in the member at offset {pos}: stored {isize}, data {}",
                inflated.size
            )));
        }
        let end = trailer + 8;
        members.push(Member { header, end });
        pos = end;
        if pos == src.size() {
            return Ok(Members {
                members,
                padding: None,
            });
        }
        let mut magic = [0u8; 2];
        let n = src.read_at(pos, &mut magic).map_err(FormatError::Read)?;
        if n == 2 && magic == MAGIC {
            continue;
        }
        if src.zero_from(pos)? {
            return Ok(Members {
                members,
                padding: Some(pos),
            });
        }
        return Err(corrupt(format!(
            "trailing data after the last member, at offset {pos}"
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests_support;
    use super::*;

    fn gz(data: &[u8], name: Option<&str>, comment: Option<&str>) -> Vec<u8> {
        tests_support::gz(data, name, comment, 77, 11)
    }

    #[test]
    fn headers_hold_every_field() {
        let g = gz(b"hello", Some("h.txt"), Some("a comment"));
        let h = read_header(&g[..], 0).unwrap();
        assert_eq!(h.flags, FNAME | FCOMMENT);
        assert_eq!((h.mtime, h.os), (77, 11));
        assert_eq!(h.name.as_deref(), Some(&b"h.txt"[..]));
        assert_eq!(h.comment.as_deref(), Some(&b"a comment"[..]));
        assert_eq!((h.extra, h.header_crc), (None, None));
        assert_eq!(h.data, 10 + 6 + 10);
        let mut x = g[..10].to_vec();
        x[3] = FEXTRA | FHCRC | FTEXT;
        x.extend_from_slice(&[2, 0, 7, 9, 0xcd, 0xab]);
        let h = read_header(&x[..], 0).unwrap();
        assert_eq!(
            (h.extra.as_deref(), h.header_crc, h.data),
            (Some(&[7u8, 9][..]), Some(0xabcd), 16)
        );
    }

    #[test]
    fn bad_headers_are_errors() {
        let err = |d: &[u8]| read_header(d, 0).unwrap_err().to_string();
        assert!(err(&[0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3, b'x']).contains("not terminated"));
        assert!(err(&[0x1f, 0x8b, 9, 0, 0, 0, 0, 0, 0, 3]).contains("compression method 9"));
        assert!(err(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3]).contains("reserved"));
        assert!(err(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 3, 9, 0, 1]).contains("extra field"));
        assert!(err(&[0x1f, 0x8b, 8, 2, 0, 0, 0, 0, 0, 3, 1]).contains("header crc"));
        assert!(err(b"PK\x03\x04").contains("truncated member header"));
        assert!(err(b"PK\x03\x04\0\0\0\0\0\0").contains("no gzip member"));
    }

    #[test]
    fn members_padding_and_trailers() {
        let mut g = gz(b"one ", Some("1"), None);
        let second = g.len() as u64;
        g.extend(gz(b"two", None, None));
        let padding = g.len() as u64;
        g.extend_from_slice(&[0; 5]);
        let mut out = Vec::new();
        let m = read_members(&g[..], &mut out).unwrap();
        assert_eq!(out, b"one two");
        let ends: Vec<u64> = m.members.iter().map(|m| m.end).collect();
        assert_eq!(ends, [second, padding]);
        assert_eq!(m.padding, Some(padding));
        assert_eq!(m.members[0].header.name.as_deref(), Some(&b"1"[..]));

        let mut bad_crc = gz(b"data", None, None);
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let mut bad_size = gz(b"data", None, None);
        bad_size[n - 1] ^= 1;
        let mut junk = gz(b"data", None, None);
        junk.push(1);
        for (bad, what) in [
            (bad_crc, "crc mismatch"),
            (bad_size, "size mismatch"),
            (junk, "trailing data"),
        ] {
            let err = read_members(&bad[..], &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
        let good = gz(b"some data to cut", Some("n"), None);
        for n in 0..good.len() {
            assert!(
                read_members(&good[..n], &mut Vec::new()).is_err(),
                "cut at {n}"
            );
        }
    }
}
