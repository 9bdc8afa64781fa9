//! Zip (and jar, wheel, ...): entries rewritten in a canonical order with the time
//! `SOURCE_DATE_EPOCH`, no time or owner extra fields, normalised permissions and no data
//! descriptors; the compressed bytes and CRC of each entry are copied as they are (stored
//! and deflated entries are inflated once to check them), the comments kept.
//!
//! Written by hand (with the reader in `formats::zip`) rather than with a zip crate: the
//! output must be exactly the canonical form (which extra fields, which header values),
//! reusing the compressed bytes.

use std::io::{self, Write};

use super::{Fail, Input, Kind, wr};
use crate::formats::deflate::inflate;
use crate::formats::zip::{
    CENTRAL_SIG, CentralEntry, EOCD_LEN, EOCD_SIG, Extra, FLAG_DATA_DESCRIPTOR, FLAG_ENCRYPTED,
    FLAG_MASKED_HEADERS, FLAG_STRONG_ENCRYPTION, HOST_UNIX, Info, LOCAL_LEN, LOCAL_SIG, METHOD_AES,
    METHOD_DEFLATED, METHOD_STORED, ZIP64_16, ZIP64_32, dos_time, extra_fields, read_central,
    read_end, read_local,
};
use crate::formats::{FormatError, Source};

/// Extra fields dropped: they carry times, owners or layout that depend on the writer:
/// extended timestamp (UT), PKWARE Unix, Info-ZIP Unix (UX, Ux, ux), NTFS times, zip64
/// (never needed here: zip64 archives are refused) and Android alignment padding.
const DROPPED_EXTRAS: &[u16] = &[
    0x5455, 0x000d, 0x5855, 0x7855, 0x7875, 0x000a, 0x0001, 0xd935,
];

/// One central directory entry, with what its local header adds.
#[derive(Debug)]
struct Entry {
    central: CentralEntry,
    local_offset: u64,
    local_extra: Vec<u8>,
    data_offset: u64,
}

impl Entry {
    fn compressed(&self) -> u64 {
        u64::from(self.central.info.compressed)
    }

    fn uncompressed(&self) -> u64 {
        u64::from(self.central.info.uncompressed)
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.central.name).into_owned()
    }
}

/// The end of central directory record's values the output keeps.
#[derive(Debug)]
struct End {
    entries: u16,
    cd_size: u64,
    cd_offset: u64,
    comment: Vec<u8>,
}

/// Finds and checks the end of central directory record.
fn read_end_checked(input: &Input, kind: Kind) -> Result<End, Fail> {
    let end = read_end(input).map_err(Fail::format(kind))?;
    if end.trailing != 0 {
        return Err(Fail::Corrupt(
            kind,
            "no end of central directory record (truncated?)".into(),
        ));
    }
    if end.zip64.is_some()
        || end.entries == ZIP64_16
        || end.cd_size == ZIP64_32
        || end.cd_offset == ZIP64_32
    {
        return Err(Fail::Unsupported(kind, "zip64".into()));
    }
    if end.disk != 0 || end.cd_disk != 0 || end.disk_entries != end.entries {
        return Err(Fail::Unsupported(
            kind,
            "archives split over several disks".into(),
        ));
    }
    let (cd_size, cd_offset) = (u64::from(end.cd_size), u64::from(end.cd_offset));
    if cd_offset + cd_size != end.offset {
        return Err(Fail::Corrupt(
            kind,
            format!(
                "the central directory ({cd_size} bytes at offset {cd_offset}) does not end where the end record starts ({}); data before the archive is not supported",
                end.offset
            ),
        ));
    }
    Ok(End {
        entries: end.entries,
        cd_size,
        cd_offset,
        comment: end.comment,
    })
}

/// Reads every central directory entry and its local header.
fn read_entries(input: &Input, end: &End, kind: Kind) -> Result<Vec<Entry>, Fail> {
    let corrupt = |detail: String| Fail::Corrupt(kind, detail);
    let cd = input
        .bytes(end.cd_offset, end.cd_size, "central directory")
        .map_err(Fail::format(kind))?;
    let mut entries = Vec::with_capacity(usize::from(end.entries));
    let mut p = 0u64;
    for n in 0..end.entries {
        let central = read_central(&cd[..], p)
            .map_err(|e| corrupt(format!("bad central directory entry {n}: {e}")))?;
        p += central.record_len();
        let shown = String::from_utf8_lossy(&central.name).into_owned();
        if central.info.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS) != 0
            || central.info.method == METHOD_AES
        {
            return Err(Fail::Unsupported(
                kind,
                format!("encrypted entry {shown:?}"),
            ));
        }
        if [
            central.info.compressed,
            central.info.uncompressed,
            central.local_offset,
        ]
        .contains(&ZIP64_32)
            || central.disk_start == ZIP64_16
        {
            return Err(Fail::Unsupported(kind, format!("zip64 entry {shown:?}")));
        }
        if central.disk_start != 0 {
            return Err(Fail::Unsupported(
                kind,
                "archives split over several disks".into(),
            ));
        }
        let local_offset = u64::from(central.local_offset);
        let local = read_local(input, local_offset).map_err(|e| match e {
            FormatError::Corrupt(d) => corrupt(format!("entry {shown:?}: {d}")),
            other => Fail::format(kind)(other),
        })?;
        if local.name != central.name {
            return Err(corrupt(format!(
                "the local header at offset {local_offset} names {:?}, the central directory {shown:?}",
                String::from_utf8_lossy(&local.name)
            )));
        }
        if local.data_offset + u64::from(central.info.compressed) > end.cd_offset {
            return Err(corrupt(format!(
                "the data of {shown:?} runs into the central directory"
            )));
        }
        entries.push(Entry {
            central,
            local_offset,
            local_extra: local.extra,
            data_offset: local.data_offset,
        });
    }
    if p != cd.len() as u64 {
        return Err(corrupt(format!(
            "the central directory holds {} bytes more than its {} entries",
            cd.len() as u64 - p,
            end.entries
        )));
    }
    Ok(entries)
}

/// Checks an entry's data against its CRC and size (stored and deflated entries; others
/// are copied unchecked).
fn check(input: &Input, e: &Entry, kind: Kind) -> Result<(), Fail> {
    let (crc, size) = match e.central.info.method {
        METHOD_STORED => {
            if e.compressed() != e.uncompressed() {
                return Err(Fail::Corrupt(
                    kind,
                    format!("stored entry {:?} has two sizes", e.shown()),
                ));
            }
            let mut c = flate2::Crc::new();
            let mut sink = CrcSink(&mut c);
            input
                .copy_to(e.data_offset, e.compressed(), &mut sink, "data")
                .map_err(Fail::format(kind))?;
            (c.sum(), e.compressed())
        }
        METHOD_DEFLATED => {
            let limit = e.data_offset + e.compressed();
            let r = inflate(
                input,
                e.data_offset,
                limit,
                e.uncompressed(),
                &mut io::sink(),
            )
            .map_err(|f| match f {
                FormatError::Corrupt(d) => {
                    Fail::Corrupt(kind, format!("entry {:?}: {d}", e.shown()))
                }
                other => Fail::format(kind)(other),
            })?;
            (r.crc, r.size)
        }
        _ => return Ok(()),
    };
    if crc != e.central.info.crc || size != e.uncompressed() {
        return Err(Fail::Corrupt(
            kind,
            format!(
                "entry {:?}: data does not match its crc or size (stored {:#010x}/{}, data {crc:#010x}/{size})",
                e.shown(),
                e.central.info.crc,
                e.uncompressed()
            ),
        ));
    }
    Ok(())
}

struct CrcSink<'a>(&'a mut flate2::Crc);

impl Write for CrcSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `extra` without the dropped fields; a malformed tail (padding that is not a field) is
/// dropped too.
fn filter_extra(extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(extra.len());
    for field in extra_fields(extra) {
        if let Extra::Field(id, body) = field {
            if !DROPPED_EXTRAS.contains(&id) {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&(body.len() as u16).to_le_bytes());
                out.extend_from_slice(body);
            }
        }
    }
    out
}

/// The normalised external attributes: Unix mode 0755 for directories (plus the MS-DOS
/// directory bit) and executables, 0777 for symbolic links, 0644 for other files.
fn external_attr(e: &CentralEntry) -> u32 {
    let unix = e.made_by >> 8 == HOST_UNIX;
    let mode = if unix { e.external_attr >> 16 } else { 0 };
    let is_dir = e.name.ends_with(b"/")
        || (mode & 0o170000) == 0o040000
        || (!unix && e.external_attr & 0x10 != 0);
    if is_dir {
        (0o040755 << 16) | 0x10
    } else if mode & 0o170000 == 0o120000 {
        0o120777 << 16
    } else if mode & 0o111 != 0 {
        0o100755 << 16
    } else {
        0o100644 << 16
    }
}

/// Where an entry goes: `mimetype` when it was first (EPUB, OpenDocument), then
/// `META-INF/` and `META-INF/MANIFEST.MF` (what the JAR format wants), then by name bytes;
/// entries with the same name by what they hold.
///
/// "First" is one entry: the one with the lowest local header offset, the first in the
/// central directory among entries sharing that header.
fn order(entries: &mut Vec<Entry>) {
    let first = entries
        .iter()
        .enumerate()
        .min_by_key(|(i, e)| (e.local_offset, *i))
        .map(|(i, _)| i);
    let rank = |i: usize, e: &Entry| -> u8 {
        let name = &e.central.name;
        if name == b"mimetype" && Some(i) == first {
            0
        } else if name.eq_ignore_ascii_case(b"META-INF/") {
            1
        } else if name.eq_ignore_ascii_case(b"META-INF/MANIFEST.MF") {
            2
        } else {
            3
        }
    };
    fn key(e: &Entry, rank: u8) -> (u8, &[u8], u32, u32, u32, u16) {
        let c = &e.central;
        (
            rank,
            &c.name,
            c.info.crc,
            c.info.uncompressed,
            c.info.compressed,
            c.info.method,
        )
    }
    let mut ranked: Vec<(u8, Entry)> = std::mem::take(entries)
        .into_iter()
        .enumerate()
        .map(|(i, e)| (rank(i, &e), e))
        .collect();
    ranked.sort_by(|(ra, a), (rb, b)| key(a, *ra).cmp(&key(b, *rb)));
    entries.extend(ranked.into_iter().map(|(_, e)| e));
}

/// Whether the zip's central directory names `META-INF/MANIFEST.MF`.
pub(super) fn has_manifest(input: &Input) -> bool {
    let end = match read_end(input) {
        Ok(end) if end.trailing == 0 => end,
        _ => return false,
    };
    let mut at = u64::from(end.cd_offset);
    for _ in 0..end.entries {
        let Ok(e) = read_central(input, at) else {
            return false;
        };
        if e.name.eq_ignore_ascii_case(b"META-INF/MANIFEST.MF") {
            return true;
        }
        at += e.record_len();
    }
    false
}

/// A counting writer: zip offsets are where bytes land in the output.
struct Counting<'a> {
    out: &'a mut dyn Write,
    at: u64,
}

impl Counting<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        wr(self.out, bytes)?;
        self.at += bytes.len() as u64;
        Ok(())
    }
}

/// Appends the values a local header and a central directory entry both hold.
fn put_info(out: &mut Vec<u8>, i: &Info) {
    for v in [i.version_needed, i.flags, i.method, i.time, i.date] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [i.crc, i.compressed, i.uncompressed] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn u32_field(v: u64, kind: Kind) -> Result<u32, Fail> {
    u32::try_from(v).map_err(|_| Fail::Unsupported(kind, "an output past 4 GiB (zip64)".into()))
}

/// Writes the normalised form of the zip `input`.
pub(super) fn normalize(
    input: &Input,
    out: &mut dyn Write,
    kind: Kind,
    sde: u64,
) -> Result<(), Fail> {
    let end = read_end_checked(input, kind)?;
    let mut entries = read_entries(input, &end, kind)?;
    for e in &entries {
        check(input, e, kind)?;
    }
    order(&mut entries);
    let (time, date) = dos_time(sde);
    let mut w = Counting { out, at: 0 };
    let mut central = Vec::new();
    for e in &entries {
        let c = &e.central;
        let info = Info {
            flags: c.info.flags & !FLAG_DATA_DESCRIPTOR,
            time,
            date,
            ..c.info
        };
        let local_extra = filter_extra(&e.local_extra);
        let central_extra = filter_extra(&c.extra);
        let offset = u32_field(w.at, kind)?;

        let mut lh = Vec::with_capacity(LOCAL_LEN + c.name.len() + local_extra.len());
        lh.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        put_info(&mut lh, &info);
        lh.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
        lh.extend_from_slice(&(local_extra.len() as u16).to_le_bytes());
        lh.extend_from_slice(&c.name);
        lh.extend_from_slice(&local_extra);
        w.put(&lh)?;
        input
            .copy_to(e.data_offset, e.compressed(), w.out, "data")
            .map_err(Fail::format(kind))?;
        w.at += e.compressed();

        let made_by = (HOST_UNIX << 8) | (c.made_by & 0xff);
        central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        central.extend_from_slice(&made_by.to_le_bytes());
        put_info(&mut central, &info);
        central.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(central_extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&(c.comment.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&c.internal_attr.to_le_bytes());
        central.extend_from_slice(&external_attr(c).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&c.name);
        central.extend_from_slice(&central_extra);
        central.extend_from_slice(&c.comment);
    }
    let cd_offset = u32_field(w.at, kind)?;
    let cd_size = u32_field(central.len() as u64, kind)?;
    w.put(&central)?;
    let mut eocd = Vec::with_capacity(EOCD_LEN + end.comment.len());
    eocd.extend_from_slice(&EOCD_SIG.to_le_bytes());
    eocd.extend_from_slice(&[0, 0, 0, 0]); // disk numbers
    eocd.extend_from_slice(&end.entries.to_le_bytes());
    eocd.extend_from_slice(&end.entries.to_le_bytes());
    eocd.extend_from_slice(&cd_size.to_le_bytes());
    eocd.extend_from_slice(&cd_offset.to_le_bytes());
    eocd.extend_from_slice(&(end.comment.len() as u16).to_le_bytes());
    eocd.extend_from_slice(&end.comment);
    w.put(&eocd)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use proptest::prelude::*;

    use super::super::tests_support::{SDE, normalize_bytes, write_temp};
    use super::super::{NormalizeError, Normalized, normalize_file};
    use super::*;
    use crate::formats::deflate::crc32;
    use crate::formats::zip::CENTRAL_LEN;
    use crate::formats::{le16, le32};

    /// An entry of a test zip.
    #[derive(Clone, Debug)]
    struct TestEntry {
        name: String,
        data: Vec<u8>,
        exec: bool,
    }

    fn entry(name: &str, data: &[u8], exec: bool) -> TestEntry {
        TestEntry {
            name: name.into(),
            data: data.to_vec(),
            exec,
        }
    }

    /// How a test zip is written: the knobs real writers differ on.
    #[derive(Clone, Copy, Debug)]
    struct Style {
        mtime: u64,
        descriptor: bool,
        time_extras: bool,
        uid: u32,
    }

    const PLAIN: Style = Style {
        mtime: 1_700_000_000,
        descriptor: false,
        time_extras: true,
        uid: 1000,
    };

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Writes a zip the way Info-ZIP does: UT and ux extra fields, Unix attributes,
    /// entries over 16 bytes deflated, optionally with data descriptors.
    fn build(entries: &[TestEntry], style: Style, comment: &[u8]) -> Vec<u8> {
        let (time, date) = dos_time(style.mtime);
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let is_dir = e.name.ends_with('/');
            let (method, body) = if e.data.len() > 16 {
                (METHOD_DEFLATED, deflate(&e.data))
            } else {
                (METHOD_STORED, e.data.clone())
            };
            let crc = crc32(&e.data);
            let mut local_extra = Vec::new();
            let mut central_extra = Vec::new();
            if style.time_extras {
                let t = (style.mtime as u32).to_le_bytes();
                local_extra.extend_from_slice(&[0x55, 0x54, 9, 0, 3]);
                local_extra.extend_from_slice(&t);
                local_extra.extend_from_slice(&(style.mtime as u32 + 7).to_le_bytes());
                central_extra.extend_from_slice(&[0x55, 0x54, 5, 0, 3]);
                central_extra.extend_from_slice(&t);
                let ux = [
                    &[0x75, 0x78, 11, 0, 1, 4][..],
                    &style.uid.to_le_bytes(),
                    &[4],
                    &style.uid.to_le_bytes(),
                ]
                .concat();
                local_extra.extend_from_slice(&ux);
                central_extra.extend_from_slice(&[0x75, 0x78, 0, 0]);
            }
            let flags: u16 = if style.descriptor { 0x0808 } else { 0x0800 };
            let offset = out.len() as u32;
            let (lcrc, lc, lu) = if style.descriptor {
                (0, 0, 0)
            } else {
                (crc, body.len() as u32, e.data.len() as u32)
            };
            out.extend_from_slice(&LOCAL_SIG.to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&time.to_le_bytes());
            out.extend_from_slice(&date.to_le_bytes());
            out.extend_from_slice(&lcrc.to_le_bytes());
            out.extend_from_slice(&lc.to_le_bytes());
            out.extend_from_slice(&lu.to_le_bytes());
            out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(local_extra.len() as u16).to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&local_extra);
            out.extend_from_slice(&body);
            if style.descriptor {
                out.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            }
            let mode: u32 = if is_dir {
                0o040775
            } else if e.exec {
                0o100775
            } else {
                0o100664
            };
            central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            central.extend_from_slice(&0x031eu16.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes());
            central.extend_from_slice(&flags.to_le_bytes());
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&time.to_le_bytes());
            central.extend_from_slice(&date.to_le_bytes());
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(body.len() as u32).to_le_bytes());
            central.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(central_extra.len() as u16).to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&((mode << 16) | (u32::from(is_dir) * 0x10)).to_le_bytes());
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(e.name.as_bytes());
            central.extend_from_slice(&central_extra);
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        out.extend_from_slice(comment);
        out
    }

    /// Parses `bytes` as a zip: its entries, each with its inflated data.
    fn read(bytes: &[u8]) -> (Vec<Entry>, Vec<Vec<u8>>, Vec<u8>) {
        let (_dir, path) = write_temp("x.zip", bytes);
        let input = Input::new(fs::File::open(&path).unwrap()).unwrap();
        let end = read_end_checked(&input, Kind::Zip).unwrap();
        let entries = read_entries(&input, &end, Kind::Zip).unwrap();
        let data = entries
            .iter()
            .map(|e| {
                check(&input, e, Kind::Zip).unwrap();
                let raw = &bytes[e.data_offset as usize..(e.data_offset + e.compressed()) as usize];
                if e.central.info.method == METHOD_DEFLATED {
                    let mut d = flate2::read::DeflateDecoder::new(raw);
                    let mut v = Vec::new();
                    io::Read::read_to_end(&mut d, &mut v).unwrap();
                    v
                } else {
                    raw.to_vec()
                }
            })
            .collect();
        (entries, data, end.comment)
    }

    fn names(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(Entry::shown).collect()
    }

    fn sample() -> Vec<TestEntry> {
        vec![
            entry("src/", b"", false),
            entry("src/main.py", &b"print('hello, world')\n".repeat(20), false),
            entry("run.sh", b"#!/bin/sh\necho hi\n", true),
            entry("README", b"read me", false),
        ]
    }

    #[test]
    fn entries_get_order_time_attributes_and_lose_time_extras() {
        let input = build(&sample(), PLAIN, b"archive comment");
        let (out, result) = normalize_bytes(Kind::Zip, &input, "a.zip");
        assert_eq!(result, Normalized::Rewritten);
        let (entries, data, comment) = read(&out);
        assert_eq!(names(&entries), ["README", "run.sh", "src/", "src/main.py"]);
        assert_eq!(comment, b"archive comment");
        let (time, date) = dos_time(SDE);
        for (e, d) in entries.iter().zip(&data) {
            let original = sample()
                .into_iter()
                .find(|s| s.name.as_bytes() == e.central.name)
                .unwrap();
            assert_eq!(d, &original.data, "{}", original.name);
            assert_eq!(e.central.made_by >> 8, HOST_UNIX);
            assert_eq!(e.central.info.flags & FLAG_DATA_DESCRIPTOR, 0);
            assert!(e.central.extra.is_empty() && e.local_extra.is_empty());
            let lh = &out[e.local_offset as usize..];
            assert_eq!((le16(lh, 10), le16(lh, 12)), (time, date));
            assert_eq!(
                (le32(lh, 14), le32(lh, 18)),
                (e.central.info.crc, e.central.info.compressed)
            );
            let mode = e.central.external_attr >> 16;
            let want = match original.name.as_str() {
                "src/" => 0o040755,
                "run.sh" => 0o100755,
                _ => 0o100644,
            };
            assert_eq!(mode, want, "{}", original.name);
        }
        // The central directory's times too.
        let cd = out.len()
            - 22
            - 15
            - entries
                .iter()
                .map(|e| 46 + e.central.name.len())
                .sum::<usize>();
        assert_eq!((le16(&out, cd + 12), le16(&out, cd + 14)), (time, date));
        // The compressed bytes are the original ones.
        let main = deflate(&sample()[1].data);
        assert!(out.windows(main.len()).any(|w| w == main));
    }

    #[test]
    fn same_content_in_any_order_or_time_normalises_alike() {
        let mut reversed = sample();
        reversed.reverse();
        let a = build(&sample(), PLAIN, b"");
        let b = build(
            &reversed,
            Style {
                mtime: 1_800_000_001,
                descriptor: true,
                time_extras: false,
                uid: 0,
            },
            b"",
        );
        assert_ne!(a, b);
        let (na, _) = normalize_bytes(Kind::Zip, &a, "a.zip");
        let (nb, _) = normalize_bytes(Kind::Zip, &b, "b.zip");
        assert_eq!(na, nb);
    }

    #[test]
    fn normalising_twice_is_normalising_once() {
        let (once, _) = normalize_bytes(Kind::Zip, &build(&sample(), PLAIN, b"c"), "a.zip");
        let (twice, result) = normalize_bytes(Kind::Zip, &once, "a.zip");
        assert_eq!(result, Normalized::Unchanged);
        assert_eq!(twice, once);
    }

    #[test]
    fn jar_manifest_and_epub_mimetype_come_first() {
        let jar = vec![
            entry("com/x/A.class", b"\xca\xfe\xba\xbe", false),
            entry(
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\n\r\n",
                false,
            ),
            entry("Aardvark.txt", b"a", false),
            entry("META-INF/", b"", false),
            entry("META-INF/LICENSE", b"l", false),
        ];
        for kind in [Kind::Jar, Kind::Zip] {
            let (out, _) = normalize_bytes(kind, &build(&jar, PLAIN, b""), "a.jar");
            assert_eq!(
                names(&read(&out).0),
                [
                    "META-INF/",
                    "META-INF/MANIFEST.MF",
                    "Aardvark.txt",
                    "META-INF/LICENSE",
                    "com/x/A.class"
                ]
            );
        }
        let epub = vec![
            entry("mimetype", b"application/epub+zip", false),
            entry("META-INF/container.xml", b"<c/>", false),
            entry("EPUB/a.xhtml", b"<a/>", false),
        ];
        let (out, _) = normalize_bytes(Kind::Zip, &build(&epub, PLAIN, b""), "a.epub");
        assert_eq!(
            names(&read(&out).0),
            ["mimetype", "EPUB/a.xhtml", "META-INF/container.xml"]
        );
        // Not first: an ordinary name.
        let late = vec![epub[1].clone(), epub[0].clone()];
        let (out, _) = normalize_bytes(Kind::Zip, &build(&late, PLAIN, b""), "b.zip");
        assert_eq!(names(&read(&out).0), ["META-INF/container.xml", "mimetype"]);
    }

    #[test]
    fn only_one_entry_is_first() {
        // Two central directory entries named `mimetype` share the first local header: only
        // one of them was first, and the normal form is its own normal form.
        let entries = vec![
            entry("mimetype", b"application/epub+zip", false),
            entry("META-INF/", b"", false),
            entry("mimetype", b"application/epub+zip", false),
        ];
        let mut zip = build(&entries, PLAIN, b"");
        let mut at = u64::from(le32(&zip, zip.len() - 6));
        for _ in 0..2 {
            at += read_central(&zip[..], at).unwrap().record_len();
        }
        let at = at as usize;
        zip[at + 42..at + 46].copy_from_slice(&0u32.to_le_bytes());
        let (once, result) = normalize_bytes(Kind::Zip, &zip, "a.epub");
        assert_eq!(result, Normalized::Rewritten);
        assert_eq!(names(&read(&once).0), ["mimetype", "META-INF/", "mimetype"]);
        let (twice, result) = normalize_bytes(Kind::Zip, &once, "a.epub");
        assert_eq!((twice, result), (once, Normalized::Unchanged));
    }

    #[test]
    fn other_extra_fields_and_comments_are_kept() {
        let mut zip = build(&[entry("a", b"x", false)], PLAIN, b"");
        // Add a jar marker (0xCAFE, empty) and an unknown field to the central entry, and
        // an entry comment.
        let extra = [0xfe, 0xca, 0, 0, 0x34, 0x12, 2, 0, 7, 7];
        let cd = le32(&zip, zip.len() - 6) as usize;
        let name_end = cd + CENTRAL_LEN + 1;
        let old_extra_len = usize::from(le16(&zip, cd + 30));
        let mut new = zip[..name_end].to_vec();
        new.extend_from_slice(&zip[name_end..name_end + old_extra_len]);
        new.extend_from_slice(&extra);
        new.extend_from_slice(b"entry comment");
        new.extend_from_slice(&zip[name_end + old_extra_len..]);
        let extra_len = (old_extra_len + extra.len()) as u16;
        new[cd + 30..cd + 32].copy_from_slice(&extra_len.to_le_bytes());
        new[cd + 32..cd + 34].copy_from_slice(&13u16.to_le_bytes());
        let eocd = new.len() - 22;
        let cd_size = (le32(&new, eocd + 12) as usize + extra.len() + 13) as u32;
        new[eocd + 12..eocd + 16].copy_from_slice(&cd_size.to_le_bytes());
        zip = new;
        let (out, _) = normalize_bytes(Kind::Zip, &zip, "a.zip");
        let (entries, _, _) = read(&out);
        assert_eq!(entries[0].central.extra, extra);
        assert_eq!(entries[0].central.comment, b"entry comment");
    }

    #[test]
    fn corrupt_zips_are_errors_and_stay_untouched() {
        let good = build(&sample(), PLAIN, b"");
        let main = deflate(&sample()[1].data);
        let at = good.windows(main.len()).position(|w| w == main).unwrap();
        let mut flipped = good.clone();
        flipped[at + main.len() / 2] ^= 0x55;
        let mut bad_local = good.clone();
        bad_local[0] = b'Q';
        bad_local[1..4].copy_from_slice(b"K\x03\x04");
        let mut bad_count = good.clone();
        let n = good.len() - 22 + 8;
        bad_count[n] = 9;
        bad_count[n + 2] = 9;
        let mut understated = build(&[entry("big", &[7; 5000], false)], PLAIN, b"");
        let cd = le32(&understated, understated.len() - 6) as usize;
        understated[cd + 24..cd + 28].copy_from_slice(&100u32.to_le_bytes());
        let cases = [
            (
                "understated size",
                understated,
                "inflates to more than 100 bytes",
            ),
            (
                "truncated",
                good[..good.len() - 10].to_vec(),
                "no end of central directory",
            ),
            (
                "cut in the middle",
                good[..good.len() / 2].to_vec(),
                "no end of central directory",
            ),
            ("flipped data", flipped, "src/main.py"),
            (
                "bad entry count",
                bad_count,
                "bad central directory entry 4",
            ),
        ];
        for (what, bad, detail) in cases {
            let (dir, path) = write_temp("a.zip", &bad);
            let err = normalize_file(&path, Kind::Zip, SDE).unwrap_err();
            assert!(
                matches!(err, NormalizeError::Corrupt { .. }),
                "{what}: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("a.zip is a corrupt zip archive"),
                "{message}"
            );
            assert!(message.contains(detail), "{what}: {message}");
            assert_eq!(fs::read(&path).unwrap(), bad, "{what}");
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                1,
                "{what}: a temporary file was left"
            );
        }
        // Not starting with a local header: not a zip at all.
        let (out, result) = normalize_bytes(Kind::Zip, &bad_local, "a.zip");
        assert_eq!((out, result), (bad_local, Normalized::NotThisKind));
    }

    #[test]
    fn encrypted_and_zip64_archives_are_refused() {
        let mut encrypted = build(&[entry("a", b"x", false)], PLAIN, b"");
        let cd = le32(&encrypted, encrypted.len() - 6) as usize;
        encrypted[cd + 8] |= 1;
        let mut zip64 = build(&[entry("a", b"x", false)], PLAIN, b"");
        let eocd = zip64.len() - 22;
        zip64[eocd + 16..eocd + 20].copy_from_slice(&[0xff; 4]);
        for (bad, what) in [(encrypted, "encrypted entry"), (zip64, "zip64")] {
            let (_dir, path) = write_temp("a.zip", &bad);
            let err = normalize_file(&path, Kind::Zip, SDE).unwrap_err();
            assert!(matches!(err, NormalizeError::Unsupported { .. }), "{err}");
            assert!(err.to_string().contains(what), "{err}");
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
    }

    #[test]
    fn empty_zip_and_other_files() {
        let empty = build(&[], PLAIN, b"");
        assert_eq!(
            normalize_bytes(Kind::Zip, &empty, "e.zip").1,
            Normalized::Unchanged
        );
        for other in [&b""[..], b"hello", b"\x1f\x8b\x08\0"] {
            assert_eq!(
                normalize_bytes(Kind::Zip, other, "x.zip"),
                (other.to_vec(), Normalized::NotThisKind)
            );
        }
    }

    #[test]
    fn jar_matches_by_extension_or_manifest() {
        let jar = build(&[entry("META-INF/MANIFEST.MF", b"M", false)], PLAIN, b"");
        let zip = build(&[entry("a", b"x", false)], PLAIN, b"");
        let (_d1, jar_path) = write_temp("lib.bin", &jar);
        let (_d2, zip_path) = write_temp("data.bin", &zip);
        let (_d3, named) = write_temp("app.war", b"not even a zip");
        assert!(Kind::Jar.matches(&jar_path) && Kind::Zip.matches(&jar_path));
        assert!(!Kind::Jar.matches(&zip_path) && Kind::Zip.matches(&zip_path));
        assert!(Kind::Jar.matches(&named) && !Kind::Tar.matches(&named));
        assert_eq!(
            normalize_file(&named, Kind::Jar, SDE).unwrap(),
            Normalized::NotThisKind
        );
    }

    fn entries_strategy() -> impl Strategy<Value = Vec<TestEntry>> {
        proptest::collection::btree_map(
            "[a-z]{1,3}(/[a-z]{1,3}){0,2}/?",
            (proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()),
            1..8,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(name, (data, exec))| {
                    let data = if name.ends_with('/') {
                        Vec::new()
                    } else {
                        data
                    };
                    TestEntry { name, data, exec }
                })
                .collect()
        })
    }

    fn style_strategy() -> impl Strategy<Value = Style> {
        (
            0u64..4_000_000_000,
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
        )
            .prop_map(|(mtime, descriptor, time_extras, uid)| Style {
                mtime,
                descriptor,
                time_extras,
                uid,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_order_and_time_normalise_alike(
            entries in entries_strategy(),
            shuffle in any::<u64>(),
            a in style_strategy(),
            b in style_strategy(),
        ) {
            let mut other = entries.clone();
            // A permutation of the entries, chosen by `shuffle`.
            let mut rng = shuffle;
            for i in (1..other.len()).rev() {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                other.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let (na, _) = normalize_bytes(Kind::Zip, &build(&entries, a, b""), "a.zip");
            let (nb, _) = normalize_bytes(Kind::Zip, &build(&other, b, b""), "b.zip");
            prop_assert_eq!(&na, &nb);
            let (again, result) = normalize_bytes(Kind::Zip, &na, "a.zip");
            prop_assert_eq!(result, Normalized::Unchanged);
            prop_assert_eq!(again, na);
        }
    }
}
