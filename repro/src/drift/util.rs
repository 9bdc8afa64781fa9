//! Small helpers: hex dumps, UTC times, byte-field parsing.

use std::fmt::Write as _;

use crate::formats::{self, Source as _, civil_from_days};

/// A `hexdump -C`-like dump of `d[start..end]`, 16 bytes a line.
pub(super) fn hexdump(d: &[u8], start: usize, end: usize) -> String {
    let end = end.min(d.len());
    let mut s = String::new();
    let mut off = start;
    while off < end {
        let line = &d[off..(off + 16).min(end)];
        let _ = write!(s, "{off:08x}  ");
        for i in 0..16 {
            match line.get(i) {
                Some(byte) => {
                    let _ = write!(s, "{byte:02x} ");
                }
                None => s.push_str("   "),
            }
            if i == 7 {
                s.push(' ');
            }
        }
        s.push_str(" |");
        s.extend(line.iter().map(|&c| printable(c)));
        s.push_str("|\n");
        off += 16;
    }
    s.pop();
    s
}

/// Three dump lines around `offset` (the line before, its line, the line after); past the
/// end of `d`, its last lines and where it ends.
pub(super) fn context(d: &[u8], offset: usize) -> String {
    if d.is_empty() {
        return "(empty)".to_owned();
    }
    let at = offset.min(d.len() - 1);
    let start = (at / 16).saturating_sub(1) * 16;
    let mut s = hexdump(d, start, start + 48);
    if offset >= d.len() {
        let _ = write!(s, "\n(ends at {:#x})", d.len());
    }
    s
}

pub(super) fn printable(c: u8) -> char {
    if (0x20..0x7f).contains(&c) {
        c as char
    } else {
        '.'
    }
}

/// The first offset at which `a` and `b` differ (the shorter length when one is a prefix).
pub(super) fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i < n {
        let end = (i + 4096).min(n);
        if a[i..end] != b[i..end] {
            return (i..end).find(|&j| a[j] != b[j]);
        }
        i = end;
    }
    (a.len() != b.len()).then_some(n)
}

/// `t` with its UTC date: `1764331200 (2025-11-28 12:00:00 UTC)`.
pub(super) fn fmt_unix(t: i64) -> String {
    format!("{t} ({})", utc(t))
}

/// `t` as `2025-11-28 12:00:00 UTC`.
pub(super) fn utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let rem = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A NUL-terminated (or full-width) string field.
pub(super) fn cstr(d: &[u8]) -> String {
    String::from_utf8_lossy(formats::text(d)).into_owned()
}

/// Reads little- or big-endian integers at offsets, `None` past the end.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bytes<'d> {
    pub(super) d: &'d [u8],
    pub(super) big: bool,
}

impl Bytes<'_> {
    pub(super) fn u16(self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.d.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    pub(super) fn u32(self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.d.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    pub(super) fn u64(self, at: usize) -> Option<u64> {
        let b: [u8; 8] = self.d.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }
}

/// `d[at..at + len]`, or an error naming what was cut.
pub(super) fn slice<'d>(d: &'d [u8], at: u64, len: u64, what: &str) -> Result<&'d [u8], String> {
    let end = d.end_of(at, len, what).map_err(|e| e.to_string())?;
    // Both are within `d`: they fit a usize.
    Ok(&d[at as usize..end as usize])
}

/// Lowercase hex.
pub(super) fn hex(d: &[u8]) -> String {
    d.iter()
        .fold(String::with_capacity(d.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Shortens `s` to `max` characters, marking the cut.
pub(super) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_825_496), "2026-11-28 00:24:56 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn hexdump_lines() {
        let d: Vec<u8> = (0..40u8).map(|i| i + 0x41).collect();
        let s = context(&d, 20);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("00000000  41 42"), "{s}");
        assert!(lines[1].starts_with("00000010  51"), "{s}");
        assert!(lines[0].ends_with("|ABCDEFGHIJKLMNOP|"), "{s}");
        assert!(context(&d, 100).ends_with("(ends at 0x28)"));
    }

    #[test]
    fn first_difference_finds_offsets() {
        let a = vec![7u8; 10_000];
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b[9_000] = 8;
        assert_eq!(first_difference(&a, &b), Some(9_000));
        assert_eq!(first_difference(&a, &a[..5]), Some(5));
    }
}
