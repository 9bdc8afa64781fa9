//! Zip (and jar, wheel, apk…): the end of central directory record (and the zip64 one),
//! central directory entries, local headers, extra fields and MS-DOS times.
//!
//! Values are as stored: a zip64 placeholder (`0xffff`, `0xffff_ffff`) stays one, and
//! [`CentralEntry::zip64_values`] resolves it from the zip64 extra field for callers that
//! read zip64 archives.

use super::{FormatError, Source, civil_from_days, le16, le32, le64};

pub(crate) const LOCAL_SIG: u32 = 0x0403_4b50;
pub(crate) const CENTRAL_SIG: u32 = 0x0201_4b50;
pub(crate) const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
pub(crate) const EOCD_LEN: usize = 22;
pub(crate) const LOCAL_LEN: usize = 30;
pub(crate) const CENTRAL_LEN: usize = 46;
const ZIP64_EOCD_LEN: usize = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;

/// General purpose flags.
pub(crate) const FLAG_ENCRYPTED: u16 = 0x0001;
pub(crate) const FLAG_DATA_DESCRIPTOR: u16 = 0x0008;
pub(crate) const FLAG_STRONG_ENCRYPTION: u16 = 0x0040;
pub(crate) const FLAG_MASKED_HEADERS: u16 = 0x2000;

pub(crate) const METHOD_STORED: u16 = 0;
pub(crate) const METHOD_DEFLATED: u16 = 8;
pub(crate) const METHOD_AES: u16 = 99;

/// "Version made by" host: Unix (its external attributes carry a `st_mode`).
pub(crate) const HOST_UNIX: u16 = 3;

/// The zip64 extended information extra field.
pub(crate) const EXTRA_ZIP64: u16 = 0x0001;

/// What a 16-bit field holds when the zip64 record has the value.
pub(crate) const ZIP64_16: u16 = 0xffff;
/// What a 32-bit field holds when the zip64 extra field or record has the value.
pub(crate) const ZIP64_32: u32 = 0xffff_ffff;

/// Whether `head` starts like a zip: a local header, or the end record of an empty zip.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

/// The end of central directory record.
#[derive(Debug)]
pub(crate) struct End {
    /// Where the record starts.
    pub(crate) offset: u64,
    pub(crate) disk: u16,
    pub(crate) cd_disk: u16,
    /// Entries on this disk.
    pub(crate) disk_entries: u16,
    pub(crate) entries: u16,
    pub(crate) cd_size: u32,
    pub(crate) cd_offset: u32,
    pub(crate) comment: Vec<u8>,
    /// Bytes after the record and its comment: 0 when they end the input, as they should.
    pub(crate) trailing: u64,
    /// Where the zip64 end record is, when a zip64 locator precedes this record.
    pub(crate) zip64: Option<u64>,
}

/// Finds and reads the end of central directory record: the last one whose comment ends
/// the input, else (data after the archive) the last one that fits in it.
pub(crate) fn read_end<S: Source + ?Sized>(src: &S) -> Result<End, FormatError> {
    let size = src.size();
    let tail_len = size.min((EOCD_LEN + 0xffff) as u64);
    let tail_start = size - tail_len;
    let tail = src.bytes(tail_start, tail_len, "archive")?;
    let comment_end = |i: usize| i + EOCD_LEN + usize::from(le16(&tail, i + 20));
    let candidates = || {
        (0..tail.len().saturating_sub(EOCD_LEN - 1))
            .rev()
            .filter(|&i| le32(&tail, i) == EOCD_SIG)
    };
    let found = candidates()
        .find(|&i| comment_end(i) == tail.len())
        .or_else(|| candidates().find(|&i| comment_end(i) <= tail.len()));
    let Some(i) = found else {
        return Err(FormatError::Corrupt(
            "no end of central directory record (truncated?)".into(),
        ));
    };
    let r = &tail[i..];
    let offset = tail_start + i as u64;
    let mut zip64 = None;
    if offset >= ZIP64_LOCATOR_LEN {
        let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
        src.read_exact_at(offset - ZIP64_LOCATOR_LEN, &mut locator, "zip64 locator")?;
        if le32(&locator, 0) == ZIP64_LOCATOR_SIG {
            zip64 = Some(le64(&locator, 8));
        }
    }
    Ok(End {
        offset,
        disk: le16(r, 4),
        cd_disk: le16(r, 6),
        disk_entries: le16(r, 8),
        entries: le16(r, 10),
        cd_size: le32(r, 12),
        cd_offset: le32(r, 16),
        comment: r[EOCD_LEN..comment_end(i) - i].to_vec(),
        trailing: (tail.len() - comment_end(i)) as u64,
        zip64,
    })
}

/// What the zip64 end of central directory record holds in place of the end record's
/// placeholders: the number of entries and where the central directory starts.
#[derive(Debug)]
pub(crate) struct Zip64End {
    pub(crate) entries: u64,
    pub(crate) cd_offset: u64,
}

/// Reads the zip64 end of central directory record at `at` (where the locator says).
pub(crate) fn read_zip64_end<S: Source + ?Sized>(
    src: &S,
    at: u64,
) -> Result<Zip64End, FormatError> {
    let mut r = [0u8; ZIP64_EOCD_LEN];
    src.read_exact_at(at, &mut r, "zip64 end record")?;
    if le32(&r, 0) != ZIP64_EOCD_SIG {
        return Err(FormatError::Corrupt(format!(
            "no zip64 end record at offset {at}"
        )));
    }
    Ok(Zip64End {
        entries: le64(&r, 32),
        cd_offset: le64(&r, 48),
    })
}

/// The values a local header and its central directory entry both hold (at offsets 4 and
/// 6 of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Info {
    pub(crate) version_needed: u16,
    pub(crate) flags: u16,
    pub(crate) method: u16,
    pub(crate) time: u16,
    pub(crate) date: u16,
    pub(crate) crc: u32,
    pub(crate) compressed: u32,
    pub(crate) uncompressed: u32,
}

impl Info {
    /// The values at `at` of the header `h` (read long enough).
    fn read(h: &[u8], at: usize) -> Info {
        Info {
            version_needed: le16(h, at),
            flags: le16(h, at + 2),
            method: le16(h, at + 4),
            time: le16(h, at + 6),
            date: le16(h, at + 8),
            crc: le32(h, at + 10),
            compressed: le32(h, at + 14),
            uncompressed: le32(h, at + 18),
        }
    }
}

/// A central directory entry.
#[derive(Clone, Debug)]
pub(crate) struct CentralEntry {
    pub(crate) made_by: u16,
    pub(crate) info: Info,
    pub(crate) disk_start: u16,
    pub(crate) internal_attr: u16,
    pub(crate) external_attr: u32,
    pub(crate) local_offset: u32,
    pub(crate) name: Vec<u8>,
    pub(crate) extra: Vec<u8>,
    pub(crate) comment: Vec<u8>,
}

/// An entry's sizes and local header offset, zip64 placeholders resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Zip64Values {
    pub(crate) uncompressed: u64,
    pub(crate) compressed: u64,
    pub(crate) local_offset: u64,
}

impl CentralEntry {
    /// The entry's length in the central directory: the next one starts this far on.
    pub(crate) fn record_len(&self) -> u64 {
        (CENTRAL_LEN + self.name.len() + self.extra.len() + self.comment.len()) as u64
    }

    /// The sizes and offset, each placeholder replaced by the zip64 extra field's value
    /// (a placeholder the field does not hold stays).
    pub(crate) fn zip64_values(&self) -> Zip64Values {
        let mut v = Zip64Values {
            uncompressed: u64::from(self.info.uncompressed),
            compressed: u64::from(self.info.compressed),
            local_offset: u64::from(self.local_offset),
        };
        let Some(body) = extra_fields(&self.extra).find_map(|f| match f {
            Extra::Field(EXTRA_ZIP64, body) => Some(body),
            _ => None,
        }) else {
            return v;
        };
        let mut values = body.chunks_exact(8).map(|c| le64(c, 0));
        for (stored, slot) in [
            (self.info.uncompressed, &mut v.uncompressed),
            (self.info.compressed, &mut v.compressed),
            (self.local_offset, &mut v.local_offset),
        ] {
            if stored == ZIP64_32 {
                match values.next() {
                    Some(x) => *slot = x,
                    None => break,
                }
            }
        }
        v
    }
}

/// Reads the central directory entry at `at`.
pub(crate) fn read_central<S: Source + ?Sized>(
    src: &S,
    at: u64,
) -> Result<CentralEntry, FormatError> {
    let mut h = [0u8; CENTRAL_LEN];
    src.read_exact_at(at, &mut h, "central directory entry")?;
    if le32(&h, 0) != CENTRAL_SIG {
        return Err(FormatError::Corrupt(format!(
            "no central directory entry at offset {at}"
        )));
    }
    let (name_len, extra_len, comment_len) = (
        u64::from(le16(&h, 28)),
        u64::from(le16(&h, 30)),
        u64::from(le16(&h, 32)),
    );
    let vars = at + CENTRAL_LEN as u64;
    let name = src.bytes(vars, name_len, "entry name")?;
    let extra = src.bytes(vars + name_len, extra_len, "extra field")?;
    let comment = src.bytes(vars + name_len + extra_len, comment_len, "entry comment")?;
    Ok(CentralEntry {
        made_by: le16(&h, 4),
        info: Info::read(&h, 6),
        disk_start: le16(&h, 34),
        internal_attr: le16(&h, 36),
        external_attr: le32(&h, 38),
        local_offset: le32(&h, 42),
        name,
        extra,
        comment,
    })
}

/// A local file header.
#[derive(Debug)]
pub(crate) struct LocalHeader {
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "read whole, as stored; the callers so far need only the name, extra field and data offset"
        )
    )]
    pub(crate) info: Info,
    pub(crate) name: Vec<u8>,
    pub(crate) extra: Vec<u8>,
    /// Where the entry's data starts.
    pub(crate) data_offset: u64,
}

/// Reads the local header at `at`.
pub(crate) fn read_local<S: Source + ?Sized>(src: &S, at: u64) -> Result<LocalHeader, FormatError> {
    let mut h = [0u8; LOCAL_LEN];
    src.read_exact_at(at, &mut h, "local header")?;
    if le32(&h, 0) != LOCAL_SIG {
        return Err(FormatError::Corrupt(format!(
            "no local header at offset {at}"
        )));
    }
    let (name_len, extra_len) = (u64::from(le16(&h, 26)), u64::from(le16(&h, 28)));
    let vars = at + LOCAL_LEN as u64;
    let name = src.bytes(vars, name_len, "local header")?;
    let extra = src.bytes(vars + name_len, extra_len, "local header")?;
    Ok(LocalHeader {
        info: Info::read(&h, 4),
        name,
        extra,
        data_offset: vars + name_len + extra_len,
    })
}

/// One item of an extra field block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Extra<'a> {
    /// A field: its id and body.
    Field(u16, &'a [u8]),
    /// Bytes at the end that are not a whole field (padding, or a length that overruns).
    Malformed(&'a [u8]),
}

/// The fields of an extra field block, in order.
pub(crate) fn extra_fields(extra: &[u8]) -> impl Iterator<Item = Extra<'_>> {
    let mut rest = extra;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let field = (rest.len() >= 4)
            .then(|| 4 + usize::from(le16(rest, 2)))
            .filter(|&end| end <= rest.len());
        let Some(end) = field else {
            let tail = std::mem::take(&mut rest);
            return Some(Extra::Malformed(tail));
        };
        let item = Extra::Field(le16(rest, 0), &rest[4..end]);
        rest = &rest[end..];
        Some(item)
    })
}

/// The MS-DOS (time, date) of the Unix time `t` in UTC, clamped to what MS-DOS dates can
/// hold (1980-01-01 to 2107-12-31), seconds rounded down to even.
pub(crate) fn dos_time(t: u64) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    if t < MIN {
        return (0, (1 << 5) | 1);
    }
    // t / 86_400 < 2^47: it fits.
    let (y, m, d) = civil_from_days((t / 86_400) as i64);
    if y > 2107 {
        return ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31);
    }
    let secs = t % 86_400;
    let time = ((secs / 3600) << 11) | (((secs / 60) % 60) << 5) | ((secs % 60) / 2);
    let date = ((y - 1980) << 9) | (i64::from(m) << 5) | i64::from(d);
    (time as u16, date as u16)
}

/// An MS-DOS date and time as stored: (year, month, day, hour, minute, second). The
/// fields are not checked (a month may be 0 or 15).
pub(crate) fn dos_fields(date: u16, time: u16) -> (u16, u16, u16, u16, u16, u16) {
    (
        1980 + (date >> 9),
        (date >> 5) & 0xf,
        date & 0x1f,
        time >> 11,
        (time >> 5) & 0x3f,
        (time & 0x1f) * 2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times() {
        let at = |y: u64, mo: u64, d: u64, h: u64, mi: u64, s: u64| {
            (
                ((h << 11) | (mi << 5) | (s / 2)) as u16,
                (((y - 1980) << 9) | (mo << 5) | d) as u16,
            )
        };
        assert_eq!(dos_time(0), at(1980, 1, 1, 0, 0, 0));
        assert_eq!(dos_time(315_532_799), at(1980, 1, 1, 0, 0, 0));
        assert_eq!(dos_time(315_532_800), at(1980, 1, 1, 0, 0, 0));
        assert_eq!(dos_time(1_614_834_367), at(2021, 3, 4, 5, 6, 6));
        assert_eq!(dos_time(951_782_400), at(2000, 2, 29, 0, 0, 0));
        assert_eq!(dos_time(4_354_819_199), at(2107, 12, 31, 23, 59, 58));
        assert_eq!(
            dos_time(u64::from(u32::MAX) * 4),
            at(2107, 12, 31, 23, 59, 58)
        );
        assert_eq!(dos_time(u64::MAX), at(2107, 12, 31, 23, 59, 58));
        let (time, date) = dos_time(1_614_834_367);
        assert_eq!(dos_fields(date, time), (2021, 3, 4, 5, 6, 6));
    }

    #[test]
    fn extra_fields_and_what_is_left() {
        let extra = [0x55, 0x54, 1, 0, 7, 0x75, 0x78, 0, 0, 0xaa, 0xbb, 9, 0, 1];
        let fields: Vec<Extra<'_>> = extra_fields(&extra).collect();
        assert_eq!(
            fields,
            [
                Extra::Field(0x5455, &[7][..]),
                Extra::Field(0x7875, &[][..]),
                Extra::Malformed(&[0xaa, 0xbb, 9, 0, 1][..]),
            ]
        );
        assert_eq!(extra_fields(&[]).count(), 0);
        assert_eq!(
            extra_fields(&[0]).collect::<Vec<_>>(),
            [Extra::Malformed(&[0][..])]
        );
    }

    #[test]
    fn zip64_values_replace_placeholders_only() {
        let mut body = Vec::new();
        body.extend_from_slice(&[1, 0, 16, 0]);
        body.extend_from_slice(&(5u64 << 32).to_le_bytes());
        body.extend_from_slice(&(7u64 << 32).to_le_bytes());
        let e = CentralEntry {
            made_by: 0,
            info: Info {
                version_needed: 45,
                flags: 0,
                method: 0,
                time: 0,
                date: 0,
                crc: 0,
                compressed: 12,
                uncompressed: ZIP64_32,
            },
            disk_start: 0,
            internal_attr: 0,
            external_attr: 0,
            local_offset: ZIP64_32,
            name: b"big".to_vec(),
            extra: body,
            comment: Vec::new(),
        };
        assert_eq!(
            e.zip64_values(),
            Zip64Values {
                uncompressed: 5 << 32,
                compressed: 12,
                local_offset: 7 << 32
            }
        );
        assert_eq!(e.record_len(), 46 + 3 + 20);
    }

    #[test]
    fn end_record_and_entries_of_a_small_zip() {
        // One stored entry "a" holding "x", an archive comment, then data after it.
        let mut z = Vec::new();
        z.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        for v in [10u16, 0, 0, 0, 0x21] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0x8cdc_1683u32, 1, 1] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        z.extend_from_slice(&[1, 0, 0, 0, b'a', b'x']);
        let cd = z.len() as u32;
        z.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        for v in [0x0314u16, 10, 0, 0, 0, 0x21] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0x8cdc_1683u32, 1, 1] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        for v in [1u16, 0, 0, 0, 0] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        z.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.push(b'a');
        let cd_size = z.len() as u32 - cd;
        z.extend_from_slice(&EOCD_SIG.to_le_bytes());
        for v in [0u16, 0, 1, 1] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        z.extend_from_slice(&cd_size.to_le_bytes());
        z.extend_from_slice(&cd.to_le_bytes());
        z.extend_from_slice(&2u16.to_le_bytes());
        z.extend_from_slice(b"hi");

        let end = read_end(&z[..]).unwrap();
        assert_eq!(
            (end.entries, end.cd_offset, end.cd_size, end.trailing),
            (1, cd, cd_size, 0)
        );
        assert_eq!((end.comment.as_slice(), end.zip64), (&b"hi"[..], None));
        let c = read_central(&z[..], u64::from(cd)).unwrap();
        assert_eq!(
            (c.name.as_slice(), c.external_attr >> 16),
            (&b"a"[..], 0o100_644)
        );
        assert_eq!(c.record_len(), u64::from(cd_size));
        let l = read_local(&z[..], 0).unwrap();
        assert_eq!((l.name.as_slice(), l.data_offset), (&b"a"[..], 31));
        assert_eq!(l.info, c.info);
        assert_eq!(
            (c.info.crc, c.info.time, c.info.version_needed),
            (0x8cdc_1683, 0, 10)
        );

        let mut longer = z.clone();
        longer.extend_from_slice(b"after");
        let end = read_end(&longer[..]).unwrap();
        assert_eq!((end.trailing, end.comment.as_slice()), (5, &b"hi"[..]));

        // Cut anywhere: an error, not a panic.
        for n in 0..z.len() {
            let cut = &z[..n];
            let read = read_end(cut).and_then(|e| {
                let c = read_central(cut, u64::from(e.cd_offset))?;
                read_local(cut, u64::from(c.local_offset))
            });
            assert!(read.is_err(), "cut at {n}");
        }
        let err = read_central(&z[..], 0).unwrap_err().to_string();
        assert!(
            err.contains("no central directory entry at offset 0"),
            "{err}"
        );
        let err = read_local(&z[..], u64::from(cd)).unwrap_err().to_string();
        assert!(err.contains("no local header"), "{err}");
        assert!(read_zip64_end(&z[..], 0).is_err());
    }
}
