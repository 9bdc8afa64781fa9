//! Readers of the formats both the normalisers and the drift report open: zip (end record,
//! central directory, local headers, extra fields, MS-DOS times), tar (header blocks, GNU
//! long names, pax records), gzip (member headers and trailers), Unix `ar` (member headers,
//! long names) and raw deflate streams.
//!
//! A reader gives every field as stored and leaves what to make of it (refuse it, rewrite
//! it, show it) to its caller; it checks only what it needs to go on: signatures,
//! checksums, and that what a header announces lies within the input. Bad input is a
//! [`FormatError`], never a panic, and no length read from the input is allocated before
//! it is known to fit in the input.
//!
//! Readers work on a [`Source`]: bytes in memory (the drift report) or a file read by
//! offset (the normalisers, which do not hold whole archives in memory). They are
//! hand-written rather than taken from the `zip` or `tar` crates because those normalise
//! or hide the fields that matter here (times, owners, order, extra fields); see
//! docs/determinism.md.

pub(crate) mod ar;
pub(crate) mod deflate;
pub(crate) mod gzip;
pub(crate) mod tar;
pub(crate) mod zip;

use std::io::{self, Write};

/// Why an input could not be read as the format asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    /// Reading the input failed (a short read is [`FormatError::Corrupt`]).
    #[error("reading the input")]
    Read(#[source] io::Error),
    /// Writing what was read out (inflated data, a copy) failed.
    #[error("writing out what was read")]
    Write(#[source] io::Error),
    /// The input is truncated or malformed: what is wrong, and where.
    #[error("{0}")]
    Corrupt(String),
    /// The input uses a feature the reader does not handle.
    #[error("{0}")]
    Unsupported(String),
}

/// A truncated input: `len` bytes of `what` at `offset` do not fit in its `size` bytes.
pub(crate) fn truncated(what: &str, offset: u64, len: u64, size: u64) -> FormatError {
    FormatError::Corrupt(format!(
        "truncated {what}: {len} bytes at offset {offset} run past the end ({size} bytes)"
    ))
}

/// Bytes read by offset.
pub(crate) trait Source {
    /// How many bytes the input holds.
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the input.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Where `len` bytes of `what` at `offset` end, if they lie within the input.
    fn end_of(&self, offset: u64, len: u64, what: &str) -> Result<u64, FormatError> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.size())
            .ok_or_else(|| truncated(what, offset, len, self.size()))
    }

    /// Reads exactly `buf.len()` bytes of `what` at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<(), FormatError> {
        let n = self.read_at(offset, buf).map_err(FormatError::Read)?;
        if n == buf.len() {
            Ok(())
        } else {
            Err(truncated(what, offset, buf.len() as u64, self.size()))
        }
    }

    /// The `len` bytes of `what` at `offset` (allocated only once they are known to exist).
    fn bytes(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, FormatError> {
        self.end_of(offset, len, what)?;
        let n = usize::try_from(len).map_err(|_| truncated(what, offset, len, self.size()))?;
        let mut buf = vec![0; n];
        self.read_exact_at(offset, &mut buf, what)?;
        Ok(buf)
    }

    /// Whether every byte from `pos` to the end is zero.
    fn zero_from(&self, mut pos: u64) -> Result<bool, FormatError> {
        let mut buf = vec![0u8; 64 * 1024];
        while pos < self.size() {
            let n = self.read_at(pos, &mut buf).map_err(FormatError::Read)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    /// Copies the `len` bytes of `what` at `offset` to `out`.
    fn copy_to(
        &self,
        offset: u64,
        len: u64,
        out: &mut dyn Write,
        what: &str,
    ) -> Result<(), FormatError> {
        self.end_of(offset, len, what)?;
        let mut buf = vec![0; 64 * 1024];
        let mut done = 0;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            self.read_exact_at(offset + done, &mut buf[..want], what)?;
            out.write_all(&buf[..want]).map_err(FormatError::Write)?;
            done += want as u64;
        }
        Ok(())
    }
}

impl Source for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let rest = usize::try_from(offset)
            .ok()
            .and_then(|at| self.get(at..))
            .unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// The items `next` reads, until it finds no more (`Ok(None)`) or fails: the error is the
/// last item.
pub(crate) fn until_error<T>(
    mut next: impl FnMut() -> Result<Option<T>, FormatError>,
) -> impl Iterator<Item = Result<T, FormatError>> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let item = next();
        done = !matches!(item, Ok(Some(_)));
        item.transpose()
    })
}

/// The little-endian `u16` at `at` of `b` (which the caller read long enough).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The little-endian `u32` at `at` of `b` (which the caller read long enough).
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The little-endian `u64` at `at` of `b` (which the caller read long enough).
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// A NUL-terminated (or full-width) string field.
pub(crate) fn text(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Parses an unsigned decimal or octal ASCII field: leading spaces, digits, then spaces
/// or NULs (all blank is 0). `None` if anything else is there.
pub(crate) fn parse_ascii_number(field: &[u8], radix: u32) -> Option<u64> {
    let s = field
        .iter()
        .position(|&b| b != b' ')
        .map_or(&field[field.len()..], |i| &field[i..]);
    let end = s
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(s.len());
    let (digits, rest) = s.split_at(end);
    if rest.iter().any(|&b| b != b' ' && b != 0) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        let d = (d as char).to_digit(radix)?;
        v = v.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Small archives for tests, written as the usual tools write them.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::io::Write as _;

    /// A gzip member of `data` with the given header fields.
    pub(crate) fn gz(
        data: &[u8],
        name: Option<&str>,
        comment: Option<&str>,
        mtime: u32,
        os: u8,
    ) -> Vec<u8> {
        let mut b = flate2::GzBuilder::new().mtime(mtime).operating_system(os);
        if let Some(n) = name {
            b = b.filename(n);
        }
        if let Some(c) = comment {
            b = b.comment(c);
        }
        let mut enc = b.write(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A one-member tar (ustar, GNU tar's layout) of `name` with `data` and `mtime`.
    pub(crate) fn tar(name: &str, data: &[u8], mtime: u64) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000664\0");
        h[108..116].copy_from_slice(b"0001750\0");
        h[116..124].copy_from_slice(b"0001750\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(format!("{mtime:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut t = h.to_vec();
        t.extend_from_slice(data);
        t.resize(10240, 0);
        t
    }

    /// A one-member `ar` archive as `ar` without `D` writes it.
    pub(crate) fn ar(name: &str, data: &[u8], mtime: u64) -> Vec<u8> {
        let mut a = b"!<arch>\n".to_vec();
        let header = format!(
            "{:<16}{mtime:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            format!("{name}/"),
            1000,
            1000,
            "100664",
            data.len()
        );
        a.extend_from_slice(header.as_bytes());
        a.extend_from_slice(data);
        if data.len() % 2 == 1 {
            a.push(b'\n');
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_numbers() {
        assert_eq!(parse_ascii_number(b"644     ", 8), Some(0o644));
        assert_eq!(parse_ascii_number(b"  12 \0", 10), Some(12));
        assert_eq!(parse_ascii_number(b"        ", 10), Some(0));
        assert_eq!(parse_ascii_number(b"1 2", 10), None);
        assert_eq!(parse_ascii_number(b"9", 8), None);
        assert_eq!(parse_ascii_number(b"99999999999999999999999", 10), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(50_402), (2107, 12, 31));
        assert_eq!(civil_from_days(50_403), (2108, 1, 1));
    }

    #[test]
    fn bytes_in_memory_are_a_source() {
        let d: &[u8] = b"0123456789";
        let mut buf = [0u8; 4];
        assert_eq!(d.read_at(8, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(d.read_at(u64::MAX, &mut buf).unwrap(), 0);
        assert_eq!(d.bytes(2, 3, "x").unwrap(), b"234");
        let err = d.bytes(8, u64::MAX, "the thing").unwrap_err().to_string();
        assert!(err.contains("truncated the thing"), "{err}");
        assert!(err.contains("past the end (10 bytes)"), "{err}");
        assert!(d.read_exact_at(7, &mut buf, "x").is_err());
        assert_eq!(d.end_of(3, 2, "x").unwrap(), 5);
        assert!(d.end_of(9, 2, "x").is_err());
        assert!(d.end_of(1, u64::MAX, "x").is_err());
        assert!(!d.zero_from(0).unwrap());
        assert!([0u8; 3][..].zero_from(1).unwrap());
        let mut out = Vec::new();
        d.copy_to(1, 3, &mut out, "x").unwrap();
        assert_eq!(out, b"123");
        assert!(d.copy_to(9, 3, &mut out, "x").is_err());
    }
}
