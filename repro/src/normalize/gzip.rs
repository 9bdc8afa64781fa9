//! Gzip (RFC 1952): each member's header loses its time, file name, comment and header
//! CRC, and names Unix as its system; the compressed data and trailer are copied as they
//! are (after inflating them once to check them).

use std::io::{self, Write};

use flate2::Compression;
use flate2::Crc;
use flate2::write::DeflateEncoder;

use super::{Fail, Input, Kind, wr};
use crate::formats::Source;
use crate::formats::gzip::{FEXTRA, FTEXT, Header, read_members};

/// The OS byte written: 3 (Unix), what GNU gzip and zlib write on Linux.
const OS_UNIX: u8 = 3;

/// The normalised header bytes for `h`.
fn header_bytes(h: &Header) -> Vec<u8> {
    let flags = h.flags & (FTEXT | FEXTRA);
    let mut out = vec![0x1f, 0x8b, 0x08, flags, 0, 0, 0, 0, h.xfl, OS_UNIX];
    if let Some(extra) = &h.extra {
        out.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        out.extend_from_slice(extra);
    }
    out
}

/// Writes `input` with every member header normalised; zero padding after the last
/// member is kept.
pub(super) fn normalize(input: &Input, out: &mut dyn Write) -> Result<(), Fail> {
    let read = read_members(input, &mut io::sink()).map_err(Fail::format(Kind::Gzip))?;
    for m in &read.members {
        wr(out, &header_bytes(&m.header))?;
        input
            .copy_to(m.header.data, m.end - m.header.data, out, "member")
            .map_err(Fail::format(Kind::Gzip))?;
    }
    if let Some(from) = read.padding {
        input
            .copy_to(from, input.len - from, out, "padding")
            .map_err(Fail::format(Kind::Gzip))?;
    }
    Ok(())
}

/// Writes the decompressed content of every member of `input` to `out`, checking each.
pub(super) fn decompress(input: &Input, out: &mut dyn Write) -> Result<(), Fail> {
    read_members(input, out).map_err(Fail::format(Kind::Gzip))?;
    Ok(())
}

/// Compresses into a single gzip member with a normalised header: deflate level 6 of the
/// bundled deflate implementation (so the bytes depend only on the content and that
/// implementation's version), XFL 0, OS Unix.
pub(super) struct Writer<'a> {
    enc: DeflateEncoder<&'a mut dyn Write>,
    crc: Crc,
    size: u64,
}

impl<'a> Writer<'a> {
    pub(super) fn new(out: &'a mut dyn Write) -> io::Result<Writer<'a>> {
        out.write_all(&[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, OS_UNIX])?;
        Ok(Writer {
            enc: DeflateEncoder::new(out, Compression::new(6)),
            crc: Crc::new(),
            size: 0,
        })
    }

    pub(super) fn finish(self) -> io::Result<()> {
        let out = self.enc.finish()?;
        out.write_all(&self.crc.sum().to_le_bytes())?;
        out.write_all(&((self.size & 0xffff_ffff) as u32).to_le_bytes())
    }
}

impl Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.enc.write(buf)?;
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.enc.flush()
    }
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("size", &self.size).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;

    use super::super::tests_support::{SDE, gz, normalize_bytes, tar, write_temp};
    use super::super::{NormalizeError, Normalized, normalize_file, normalize_tar_gz};
    use super::*;
    use crate::formats::gzip::FHCRC;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    const TEXT: &[u8] = b"the same content, compressed at another time\n";

    #[test]
    fn header_loses_time_name_and_comment_and_the_rest_is_kept() {
        let input = gz(TEXT, Some("file.txt"), Some("made by me"), 1_700_000_000, 0);
        let (out, result) = normalize_bytes(Kind::Gzip, &input, "f.gz");
        assert_eq!(result, Normalized::Rewritten);
        assert_eq!(
            &out[..10],
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, input[8], OS_UNIX]
        );
        let header_len = 10 + "file.txt\0made by me\0".len();
        assert_eq!(&out[10..], &input[header_len..]);
        assert_eq!(gunzip(&out), TEXT);
    }

    #[test]
    fn same_content_at_other_times_normalises_alike() {
        let a = gz(TEXT, Some("a.txt"), None, 1, 3);
        let b = gz(TEXT, None, None, 1_900_000_000, 11);
        assert_ne!(a, b);
        assert_eq!(
            normalize_bytes(Kind::Gzip, &a, "a.gz").0,
            normalize_bytes(Kind::Gzip, &b, "b.gz").0
        );
    }

    #[test]
    fn normalising_twice_is_normalising_once() {
        let (once, _) = normalize_bytes(Kind::Gzip, &gz(TEXT, Some("x"), None, 5, 3), "a.gz");
        assert_eq!(
            normalize_bytes(Kind::Gzip, &once, "a.gz"),
            (once, Normalized::Unchanged)
        );
    }

    #[test]
    fn extra_field_is_kept_and_header_crc_dropped() {
        let plain = gz(TEXT, None, None, 0, 3);
        let mut input = plain[..10].to_vec();
        input[3] = FEXTRA | FHCRC | FTEXT;
        input.extend_from_slice(&[6, 0, b'R', b'A', 2, 0, 9, 9]);
        input.extend_from_slice(&[0xab, 0xcd]); // a header CRC (not checked by readers here)
        input.extend_from_slice(&plain[10..]);
        let (out, _) = normalize_bytes(Kind::Gzip, &input, "a.gz");
        let mut want = plain[..10].to_vec();
        want[3] = FEXTRA | FTEXT;
        want.extend_from_slice(&[6, 0, b'R', b'A', 2, 0, 9, 9]);
        want.extend_from_slice(&plain[10..]);
        assert_eq!(out, want);
        assert_eq!(gunzip(&out), TEXT);
    }

    #[test]
    fn every_member_is_normalised_and_zero_padding_kept() {
        let mut input = gz(b"one ", Some("1"), None, 10, 0);
        input.extend(gz(b"two", Some("2"), Some("c"), 20, 0));
        input.extend_from_slice(&[0; 7]);
        let (out, _) = normalize_bytes(Kind::Gzip, &input, "a.gz");
        let mut want = gz(b"one ", None, None, 0, OS_UNIX);
        want.extend(gz(b"two", None, None, 0, OS_UNIX));
        want.extend_from_slice(&[0; 7]);
        assert_eq!(out, want);
    }

    #[test]
    fn corrupt_gzips_are_errors_and_stay_untouched() {
        let good = gz(&TEXT.repeat(50), Some("n"), None, 1, 3);
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 1;
        let mut flipped = good.clone();
        flipped[20] ^= 0xff;
        let mut garbage = good.clone();
        garbage.extend_from_slice(b"junk");
        let mut reserved = good.clone();
        reserved[3] |= 0x80;
        let cases = [
            ("truncated data", good[..good.len() / 2].to_vec()),
            ("truncated trailer", good[..good.len() - 3].to_vec()),
            ("truncated header", good[..12].to_vec()),
            ("bad crc", bad_crc),
            ("flipped data", flipped),
            ("trailing garbage", garbage),
            ("reserved flag", reserved),
        ];
        for (what, bad) in cases {
            let (dir, path) = write_temp("a.gz", &bad);
            let err = normalize_file(&path, Kind::Gzip, SDE).unwrap_err();
            assert!(
                matches!(err, NormalizeError::Corrupt { .. }),
                "{what}: {err}"
            );
            assert!(
                err.to_string().contains("corrupt gzip archive"),
                "{what}: {err}"
            );
            assert_eq!(fs::read(&path).unwrap(), bad, "{what}");
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{what}");
        }
    }

    #[test]
    fn other_files_are_not_this_kind() {
        for other in [&b""[..], b"\x1f", b"\x1f\x8b\x09xxxxxxx", b"PK\x03\x04"] {
            assert_eq!(
                normalize_bytes(Kind::Gzip, other, "a.gz"),
                (other.to_vec(), Normalized::NotThisKind)
            );
        }
    }

    #[test]
    fn tar_gz_normalises_the_tar_inside() {
        let a = gz(&tar("f", TEXT, 1_600_000_000), Some("a.tar"), None, 1, 3);
        let b = gz(&tar("f", TEXT, 1_700_000_000), None, None, 2, 3);
        let mut outs = Vec::new();
        for input in [a, b] {
            let (_dir, path) = write_temp("x.tar.gz", &input);
            assert_eq!(normalize_tar_gz(&path, SDE).unwrap(), Normalized::Rewritten);
            let out = fs::read(&path).unwrap();
            assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, OS_UNIX]);
            let inner = gunzip(&out);
            assert_eq!(&inner[136..148], format!("{SDE:011o}\0").as_bytes());
            assert_eq!(&inner[512..512 + TEXT.len()], TEXT);
            assert_eq!(normalize_tar_gz(&path, SDE).unwrap(), Normalized::Unchanged);
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1]);
    }

    #[test]
    fn tar_gz_of_something_else_gets_the_header_only() {
        let input = gz(TEXT, Some("n"), None, 9, 3);
        let (_dir, path) = write_temp("x.tar.gz", &input);
        assert_eq!(normalize_tar_gz(&path, SDE).unwrap(), Normalized::Rewritten);
        assert_eq!(fs::read(&path).unwrap(), gz(TEXT, None, None, 0, OS_UNIX));
    }
}
