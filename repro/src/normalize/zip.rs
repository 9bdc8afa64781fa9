//! Zip (and jar, wheel, ...): entries rewritten in a canonical order with the time
//! `SOURCE_DATE_EPOCH`, no time or owner extra fields, normalised permissions and no data
//! descriptors; the compressed bytes and CRC of each entry are copied as they are (stored
//! and deflated entries are inflated once to check them), the comments kept.
//!
//! Hand-written rather than with a zip crate: the output must be exactly the canonical
//! form (which extra fields, which header values), reusing the compressed bytes, and the
//! parsing needed is the central directory and local headers only.

use std::io::{self, Write};

use super::deflate::inflate;
use super::{Fail, Input, Kind, wr};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const EOCD_LEN: usize = 22;
const LOCAL_LEN: usize = 30;
const CENTRAL_LEN: usize = 46;

/// General purpose flags.
const FLAG_ENCRYPTED: u16 = 0x0001;
const FLAG_DATA_DESCRIPTOR: u16 = 0x0008;
const FLAG_STRONG_ENCRYPTION: u16 = 0x0040;
const FLAG_MASKED_HEADERS: u16 = 0x2000;

const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;
const METHOD_AES: u16 = 99;

/// "Version made by" host: Unix (its external attributes carry a `st_mode`).
const HOST_UNIX: u16 = 3;

/// Extra fields dropped: they carry times, owners or layout that depend on the writer:
/// extended timestamp (UT), PKWARE Unix, Info-ZIP Unix (UX, Ux, ux), NTFS times, zip64
/// (never needed here: zip64 archives are refused) and Android alignment padding.
const DROPPED_EXTRAS: &[u16] = &[
    0x5455, 0x000d, 0x5855, 0x7855, 0x7875, 0x000a, 0x0001, 0xd935,
];

/// Whether `head` starts like a zip: a local header, or the end record of an empty zip.
pub(super) fn sniff(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One central directory entry, with what its local header adds.
#[derive(Debug)]
struct Entry {
    made_by: u16,
    version_needed: u16,
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    name: Vec<u8>,
    central_extra: Vec<u8>,
    comment: Vec<u8>,
    internal_attr: u16,
    external_attr: u32,
    local_offset: u64,
    local_extra: Vec<u8>,
    data_offset: u64,
}

/// The end of central directory record.
#[derive(Debug)]
struct End {
    entries: u16,
    cd_size: u64,
    cd_offset: u64,
    comment: Vec<u8>,
}

/// Finds and parses the end of central directory record.
fn read_end(input: &Input, kind: Kind) -> Result<End, Fail> {
    let tail_len = input.len.min((EOCD_LEN + 0xffff) as u64);
    let tail_start = input.len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    input.read_exact_at(tail_start, &mut tail, kind, "archive")?;
    // The last signature whose comment length reaches exactly the end of the file.
    let found = (0..tail.len().saturating_sub(EOCD_LEN - 1))
        .rev()
        .find(|&i| {
            le32(&tail, i) == EOCD_SIG
                && i + EOCD_LEN + usize::from(le16(&tail, i + 20)) == tail.len()
        });
    let Some(i) = found else {
        return Err(Fail::Corrupt(
            kind,
            "no end of central directory record (truncated?)".into(),
        ));
    };
    let r = &tail[i..];
    let offset = tail_start + i as u64;
    let (disk, cd_disk) = (le16(r, 4), le16(r, 6));
    let (here, entries) = (le16(r, 8), le16(r, 10));
    let (cd_size, cd_offset) = (le32(r, 12), le32(r, 16));
    let zip64_locator = i >= 20 && le32(&tail, i - 20) == ZIP64_LOCATOR_SIG;
    if zip64_locator || entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        return Err(Fail::Unsupported(kind, "zip64".into()));
    }
    if disk != 0 || cd_disk != 0 || here != entries {
        return Err(Fail::Unsupported(
            kind,
            "archives split over several disks".into(),
        ));
    }
    let (cd_size, cd_offset) = (u64::from(cd_size), u64::from(cd_offset));
    if cd_offset + cd_size != offset {
        return Err(Fail::Corrupt(
            kind,
            format!(
                "the central directory ({cd_size} bytes at offset {cd_offset}) does not end where the end record starts ({offset}); data before the archive is not supported"
            ),
        ));
    }
    Ok(End {
        entries,
        cd_size,
        cd_offset,
        comment: r[EOCD_LEN..].to_vec(),
    })
}

/// Reads every central directory entry and its local header.
fn read_entries(input: &Input, end: &End, kind: Kind) -> Result<Vec<Entry>, Fail> {
    let corrupt = |detail: String| Fail::Corrupt(kind, detail);
    let mut cd = vec![0u8; end.cd_size as usize];
    input.read_exact_at(end.cd_offset, &mut cd, kind, "central directory")?;
    let mut entries = Vec::with_capacity(usize::from(end.entries));
    let mut p = 0usize;
    for n in 0..end.entries {
        if cd.len() < p + CENTRAL_LEN || le32(&cd, p) != CENTRAL_SIG {
            return Err(corrupt(format!("bad central directory entry {n}")));
        }
        let h = &cd[p..p + CENTRAL_LEN];
        let (name_len, extra_len, comment_len) = (
            usize::from(le16(h, 28)),
            usize::from(le16(h, 30)),
            usize::from(le16(h, 32)),
        );
        let vars = p + CENTRAL_LEN;
        let next = vars + name_len + extra_len + comment_len;
        if next > cd.len() {
            return Err(corrupt(format!(
                "central directory entry {n} runs past its end"
            )));
        }
        let flags = le16(h, 8);
        let method = le16(h, 10);
        let (compressed, uncompressed, local) = (le32(h, 20), le32(h, 24), le32(h, 42));
        let name = cd[vars..vars + name_len].to_vec();
        let shown = String::from_utf8_lossy(&name).into_owned();
        if flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS) != 0
            || method == METHOD_AES
        {
            return Err(Fail::Unsupported(
                kind,
                format!("encrypted entry {shown:?}"),
            ));
        }
        if [compressed, uncompressed, local].contains(&0xffff_ffff) || le16(h, 34) == 0xffff {
            return Err(Fail::Unsupported(kind, format!("zip64 entry {shown:?}")));
        }
        if le16(h, 34) != 0 {
            return Err(Fail::Unsupported(
                kind,
                "archives split over several disks".into(),
            ));
        }
        let local = u64::from(local);
        let mut lh = [0u8; LOCAL_LEN];
        input.read_exact_at(local, &mut lh, kind, "local header")?;
        if le32(&lh, 0) != LOCAL_SIG {
            return Err(corrupt(format!(
                "no local header for {shown:?} at offset {local}"
            )));
        }
        let (lname_len, lextra_len) = (u64::from(le16(&lh, 26)), usize::from(le16(&lh, 28)));
        let mut lname = vec![0u8; lname_len as usize];
        input.read_exact_at(local + LOCAL_LEN as u64, &mut lname, kind, "local header")?;
        if lname != name {
            return Err(corrupt(format!(
                "the local header at offset {local} names {:?}, the central directory {shown:?}",
                String::from_utf8_lossy(&lname)
            )));
        }
        let mut local_extra = vec![0u8; lextra_len];
        let extra_at = local + LOCAL_LEN as u64 + lname_len;
        input.read_exact_at(extra_at, &mut local_extra, kind, "local header")?;
        let data_offset = extra_at + lextra_len as u64;
        if data_offset + u64::from(compressed) > end.cd_offset {
            return Err(corrupt(format!(
                "the data of {shown:?} runs into the central directory"
            )));
        }
        entries.push(Entry {
            made_by: le16(h, 4),
            version_needed: le16(h, 6),
            flags,
            method,
            crc: le32(h, 16),
            compressed: u64::from(compressed),
            uncompressed: u64::from(uncompressed),
            name,
            central_extra: cd[vars + name_len..vars + name_len + extra_len].to_vec(),
            comment: cd[vars + name_len + extra_len..next].to_vec(),
            internal_attr: le16(h, 36),
            external_attr: le32(h, 38),
            local_offset: local,
            local_extra,
            data_offset,
        });
        p = next;
    }
    if p != cd.len() {
        return Err(corrupt(format!(
            "the central directory holds {} bytes more than its {} entries",
            cd.len() - p,
            end.entries
        )));
    }
    Ok(entries)
}

/// Checks an entry's data against its CRC and size (stored and deflated entries; others
/// are copied unchecked).
fn check(input: &Input, e: &Entry, kind: Kind) -> Result<(), Fail> {
    let shown = || String::from_utf8_lossy(&e.name).into_owned();
    let (crc, size) = match e.method {
        METHOD_STORED => {
            if e.compressed != e.uncompressed {
                return Err(Fail::Corrupt(
                    kind,
                    format!("stored entry {:?} has two sizes", shown()),
                ));
            }
            let mut c = flate2::Crc::new();
            let mut sink = CrcSink(&mut c);
            input.copy_to(e.data_offset, e.compressed, &mut sink, kind)?;
            (c.sum(), e.compressed)
        }
        METHOD_DEFLATED => {
            let limit = e.data_offset + e.compressed;
            let r = inflate(
                input,
                e.data_offset,
                limit,
                e.uncompressed,
                &mut io::sink(),
                kind,
            )
            .map_err(|f| match f {
                Fail::Corrupt(k, d) => Fail::Corrupt(k, format!("entry {:?}: {d}", shown())),
                other => other,
            })?;
            (r.crc, r.size)
        }
        _ => return Ok(()),
    };
    if crc != e.crc || size != e.uncompressed {
        return Err(Fail::Corrupt(
            kind,
            format!(
                "entry {:?}: data does not match its crc or size (stored {:#010x}/{}, data {crc:#010x}/{size})",
                shown(),
                e.crc,
                e.uncompressed
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
    let mut p = 0;
    while p + 4 <= extra.len() {
        let id = le16(extra, p);
        let len = usize::from(le16(extra, p + 2));
        if p + 4 + len > extra.len() {
            break;
        }
        if !DROPPED_EXTRAS.contains(&id) {
            out.extend_from_slice(&extra[p..p + 4 + len]);
        }
        p += 4 + len;
    }
    out
}

/// The normalised external attributes: Unix mode 0755 for directories (plus the MS-DOS
/// directory bit) and executables, 0777 for symbolic links, 0644 for other files.
fn external_attr(e: &Entry) -> u32 {
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
fn order(entries: &mut [Entry]) {
    let first = entries
        .iter()
        .min_by_key(|e| e.local_offset)
        .map(|e| e.local_offset);
    let rank = |e: &Entry| -> u8 {
        if e.name == b"mimetype" && Some(e.local_offset) == first {
            0
        } else if e.name.eq_ignore_ascii_case(b"META-INF/") {
            1
        } else if e.name.eq_ignore_ascii_case(b"META-INF/MANIFEST.MF") {
            2
        } else {
            3
        }
    };
    entries.sort_by(|a, b| {
        (
            rank(a),
            &a.name,
            a.crc,
            a.uncompressed,
            a.compressed,
            a.method,
        )
            .cmp(&(
                rank(b),
                &b.name,
                b.crc,
                b.uncompressed,
                b.compressed,
                b.method,
            ))
    });
}

/// The MS-DOS (time, date) of `sde` in UTC, clamped to what MS-DOS dates can hold
/// (1980-01-01 to 2107-12-31), seconds rounded down to even.
pub(super) fn dos_time(sde: u64) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    if sde < MIN {
        return (0, (1 << 5) | 1);
    }
    let days = sde / 86_400;
    let secs = sde % 86_400;
    let (y, m, d) = civil_from_days(days);
    if y > 2107 {
        return ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31);
    }
    let time = ((secs / 3600) << 11) | (((secs / 60) % 60) << 5) | ((secs % 60) / 2);
    let date = ((y - 1980) << 9) | (m << 5) | d;
    (time as u16, date as u16)
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Whether the zip's central directory names `META-INF/MANIFEST.MF`.
pub(super) fn has_manifest(input: &Input) -> bool {
    let Ok(end) = read_end(input, Kind::Jar) else {
        return false;
    };
    let mut cd = vec![0u8; end.cd_size as usize];
    if input
        .read_exact_at(end.cd_offset, &mut cd, Kind::Jar, "central directory")
        .is_err()
    {
        return false;
    }
    let mut p = 0usize;
    while p + CENTRAL_LEN <= cd.len() && le32(&cd, p) == CENTRAL_SIG {
        let (n, x, c) = (
            usize::from(le16(&cd, p + 28)),
            usize::from(le16(&cd, p + 30)),
            usize::from(le16(&cd, p + 32)),
        );
        let name = cd.get(p + CENTRAL_LEN..p + CENTRAL_LEN + n);
        if name.is_some_and(|n| n.eq_ignore_ascii_case(b"META-INF/MANIFEST.MF")) {
            return true;
        }
        p += CENTRAL_LEN + n + x + c;
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
    let end = read_end(input, kind)?;
    let mut entries = read_entries(input, &end, kind)?;
    for e in &entries {
        check(input, e, kind)?;
    }
    order(&mut entries);
    let (time, date) = dos_time(sde);
    let mut w = Counting { out, at: 0 };
    let mut central = Vec::new();
    for e in &entries {
        let flags = e.flags & !FLAG_DATA_DESCRIPTOR;
        let local_extra = filter_extra(&e.local_extra);
        let central_extra = filter_extra(&e.central_extra);
        let offset = u32_field(w.at, kind)?;
        let (crc, csize, usize_) = (e.crc, e.compressed as u32, e.uncompressed as u32);

        let mut lh = Vec::with_capacity(LOCAL_LEN + e.name.len() + local_extra.len());
        lh.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        lh.extend_from_slice(&e.version_needed.to_le_bytes());
        lh.extend_from_slice(&flags.to_le_bytes());
        lh.extend_from_slice(&e.method.to_le_bytes());
        lh.extend_from_slice(&time.to_le_bytes());
        lh.extend_from_slice(&date.to_le_bytes());
        lh.extend_from_slice(&crc.to_le_bytes());
        lh.extend_from_slice(&csize.to_le_bytes());
        lh.extend_from_slice(&usize_.to_le_bytes());
        lh.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        lh.extend_from_slice(&(local_extra.len() as u16).to_le_bytes());
        lh.extend_from_slice(&e.name);
        lh.extend_from_slice(&local_extra);
        w.put(&lh)?;
        input.copy_to(e.data_offset, e.compressed, w.out, kind)?;
        w.at += e.compressed;

        let made_by = (HOST_UNIX << 8) | (e.made_by & 0xff);
        central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        central.extend_from_slice(&made_by.to_le_bytes());
        central.extend_from_slice(&e.version_needed.to_le_bytes());
        central.extend_from_slice(&flags.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&time.to_le_bytes());
        central.extend_from_slice(&date.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&csize.to_le_bytes());
        central.extend_from_slice(&usize_.to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(central_extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&(e.comment.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&e.internal_attr.to_le_bytes());
        central.extend_from_slice(&external_attr(e).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&e.name);
        central.extend_from_slice(&central_extra);
        central.extend_from_slice(&e.comment);
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

    use super::super::deflate::crc32;
    use super::super::tests_support::{SDE, normalize_bytes, write_temp};
    use super::super::{NormalizeError, Normalized, normalize_file};
    use super::*;

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
        let end = read_end(&input, Kind::Zip).unwrap();
        let entries = read_entries(&input, &end, Kind::Zip).unwrap();
        let data = entries
            .iter()
            .map(|e| {
                check(&input, e, Kind::Zip).unwrap();
                let raw = &bytes[e.data_offset as usize..(e.data_offset + e.compressed) as usize];
                if e.method == METHOD_DEFLATED {
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
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect()
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
                .find(|s| s.name.as_bytes() == e.name)
                .unwrap();
            assert_eq!(d, &original.data, "{}", original.name);
            assert_eq!(e.made_by >> 8, HOST_UNIX);
            assert_eq!(e.flags & FLAG_DATA_DESCRIPTOR, 0);
            assert!(e.central_extra.is_empty() && e.local_extra.is_empty());
            let lh = &out[e.local_offset as usize..];
            assert_eq!((le16(lh, 10), le16(lh, 12)), (time, date));
            assert_eq!((le32(lh, 14), le32(lh, 18)), (e.crc, e.compressed as u32));
            let mode = e.external_attr >> 16;
            let want = match original.name.as_str() {
                "src/" => 0o040755,
                "run.sh" => 0o100755,
                _ => 0o100644,
            };
            assert_eq!(mode, want, "{}", original.name);
        }
        // The central directory's times too.
        let cd = out.len() - 22 - 15 - entries.iter().map(|e| 46 + e.name.len()).sum::<usize>();
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
        assert_eq!(entries[0].central_extra, extra);
        assert_eq!(entries[0].comment, b"entry comment");
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
        assert_eq!(dos_time(SDE), at(2021, 3, 4, 5, 6, 6));
        assert_eq!(dos_time(951_782_400), at(2000, 2, 29, 0, 0, 0));
        assert_eq!(dos_time(4_354_819_199), at(2107, 12, 31, 23, 59, 58));
        assert_eq!(
            dos_time(u64::from(u32::MAX) * 4),
            at(2107, 12, 31, 23, 59, 58)
        );
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
