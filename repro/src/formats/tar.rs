//! Tar (old, GNU, ustar and pax): header blocks with every field as stored, and the
//! archive's entries with what GNU long-name entries and pax extended headers say about
//! them (path, link target, size) applied, as GNU tar and Python read them.

use super::{FormatError, Source, parse_ascii_number, text, truncated, until_error};

pub(crate) const BLOCK: usize = 512;
/// Extended headers (pax, GNU long names) larger than this are refused.
pub(crate) const MAX_EXTENDED: u64 = 1 << 20;

/// A header block, its fields read on demand.
#[derive(Clone, Debug)]
pub(crate) struct Header(pub(crate) [u8; BLOCK]);

impl Header {
    /// The block `d` starts with, if it is that long.
    pub(crate) fn at_start(d: &[u8]) -> Option<Header> {
        d.get(..BLOCK)
            .and_then(|b| <[u8; BLOCK]>::try_from(b).ok())
            .map(Header)
    }

    /// The name field (without the ustar prefix).
    pub(crate) fn name(&self) -> &[u8] {
        text(&self.0[..100])
    }

    pub(crate) fn mode(&self) -> Option<u64> {
        number(&self.0[100..108])
    }

    pub(crate) fn uid(&self) -> Option<u64> {
        number(&self.0[108..116])
    }

    pub(crate) fn gid(&self) -> Option<u64> {
        number(&self.0[116..124])
    }

    pub(crate) fn size(&self) -> Option<u64> {
        number(&self.0[124..136])
    }

    pub(crate) fn mtime(&self) -> Option<u64> {
        number(&self.0[136..148])
    }

    /// The type flag as stored (NUL for an old tar's regular file).
    pub(crate) fn typeflag(&self) -> u8 {
        self.0[156]
    }

    pub(crate) fn linkname(&self) -> &[u8] {
        text(&self.0[157..257])
    }

    /// POSIX ustar (`ustar\0`): the prefix field holds the start of long paths.
    pub(crate) fn is_posix(&self) -> bool {
        &self.0[257..263] == b"ustar\0"
    }

    /// ustar or GNU (`ustar  \0`): owner names and device numbers are there.
    pub(crate) fn is_ustar(&self) -> bool {
        &self.0[257..262] == b"ustar"
    }

    pub(crate) fn uname(&self) -> &[u8] {
        text(&self.0[265..297])
    }

    pub(crate) fn gname(&self) -> &[u8] {
        text(&self.0[297..329])
    }

    pub(crate) fn dev_major(&self) -> Option<u64> {
        number(&self.0[329..337])
    }

    pub(crate) fn dev_minor(&self) -> Option<u64> {
        number(&self.0[337..345])
    }

    /// The ustar prefix field (meaningful in POSIX headers only: GNU keeps times there).
    pub(crate) fn prefix(&self) -> &[u8] {
        text(&self.0[345..500])
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// Whether the stored checksum matches the block (as unsigned or, as some old tars
    /// wrote it, signed bytes).
    pub(crate) fn checksum_ok(&self) -> bool {
        let Some(stored) = parse_ascii_number(&self.0[148..156], 8) else {
            return false;
        };
        let (mut unsigned, mut signed) = (0u64, 0i64);
        for (i, &b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
    }
}

/// A numeric header field: octal ASCII, or GNU base-256 (high bit set; negative refused).
pub(crate) fn number(field: &[u8]) -> Option<u64> {
    let first = *field.first()?;
    if first & 0x80 == 0 {
        return parse_ascii_number(field, 8);
    }
    if first & 0x40 != 0 {
        return None;
    }
    let mut v = u64::from(first & 0x7f);
    for &b in &field[1..] {
        v = v.checked_mul(256)?.checked_add(u64::from(b))?;
    }
    Some(v)
}

/// Pax records (key, value), in order; a key given twice keeps its last value.
pub(crate) type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses pax extended header data (`"LEN key=value\n"` records; zeros may pad the end).
/// `at` is the header's offset, for the error.
pub(crate) fn parse_pax(data: &[u8], at: u64) -> Result<Records, FormatError> {
    let bad = || FormatError::Corrupt(format!("malformed pax extended header at offset {at}"));
    let mut records = Records::new();
    let mut p = 0;
    while p < data.len() {
        if data[p..].iter().all(|&b| b == 0) {
            break;
        }
        let sp = data[p..].iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len = parse_ascii_number(&data[p..p + sp], 10).ok_or_else(bad)?;
        let len = usize::try_from(len).map_err(|_| bad())?;
        if len <= sp + 2 || len > data.len() - p || data[p + len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[p + sp + 1..p + len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        set(&mut records, &record[..eq], &record[eq + 1..]);
        p += len;
    }
    Ok(records)
}

fn set(records: &mut Records, key: &[u8], value: &[u8]) {
    match records.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_vec(),
        None => records.push((key.to_vec(), value.to_vec())),
    }
}

/// The value of `key`, if recorded.
pub(crate) fn record<'a>(records: &'a Records, key: &[u8]) -> Option<&'a [u8]> {
    records
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// Whether members of this type carry data (GNU tar reads unknown types as regular files;
/// a size on a link, device, directory or fifo is ignored).
pub(crate) fn has_data(typeflag: u8) -> bool {
    !matches!(typeflag, b'1'..=b'6')
}

/// One entry of the archive: a member (file, directory, link, …) or a pax global header.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Where its own header starts (after any extended headers of its own).
    pub(crate) offset: u64,
    pub(crate) header: Header,
    /// The type: as stored, but NUL read as `'0'` (or `'5'` for a name ending in `/`).
    pub(crate) typeflag: u8,
    /// Pax `path` > GNU long name > ustar prefix and name > name.
    pub(crate) path: Vec<u8>,
    /// Pax `linkpath` > GNU long link name > link name.
    pub(crate) link: Vec<u8>,
    /// Bytes of data after the header (pax `size` applied; 0 for types without data).
    pub(crate) size: u64,
    /// Where the data starts.
    pub(crate) data: u64,
    /// The pax records of its extended headers; for a global header (`'g'`), its own.
    pub(crate) pax: Records,
}

/// The entries of the tar in `src`, in order. The archive ends at a zero block or at the
/// end of the input; the first error ends the iteration.
pub(crate) fn entries<S: Source + ?Sized>(
    src: &S,
) -> impl Iterator<Item = Result<Entry, FormatError>> + '_ {
    let mut state = State::default();
    until_error(move || read_entry(src, &mut state))
}

/// Where [`entries`] is: the next header, and what extended headers read so far say about
/// the next member (a global header between them and their member leaves them pending).
#[derive(Debug, Default)]
struct State {
    next: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Records>,
}

/// Reads the next entry (after its extended headers).
fn read_entry<S: Source + ?Sized>(
    src: &S,
    state: &mut State,
) -> Result<Option<Entry>, FormatError> {
    let corrupt = |detail: String| FormatError::Corrupt(detail);
    let State {
        next,
        long_name,
        long_link,
        pax,
    } = state;
    loop {
        let pos = *next;
        let mut block = [0u8; BLOCK];
        let n = src.read_at(pos, &mut block).map_err(FormatError::Read)?;
        let header = Header(block);
        if n == 0 || (n == BLOCK && header.is_zero()) {
            if long_name.is_some() || long_link.is_some() || pax.is_some() {
                return Err(corrupt(format!(
                    "an extended header is not followed by a member (offset {pos})"
                )));
            }
            // The end of the archive (zero blocks, or none at all).
            return Ok(None);
        }
        if n < BLOCK {
            return Err(truncated("header", pos, BLOCK as u64, src.size()));
        }
        if !header.checksum_ok() {
            return Err(corrupt(format!("bad header checksum at offset {pos}")));
        }
        let typeflag = match header.typeflag() {
            0 if header.name().ends_with(b"/") => b'5',
            0 => b'0',
            t => t,
        };
        let mut size = header
            .size()
            .ok_or_else(|| corrupt(format!("bad size field at offset {pos}")))?;
        if let Some(v) = pax.as_ref().and_then(|r| record(r, b"size")) {
            size = parse_ascii_number(v, 10)
                .ok_or_else(|| corrupt(format!("bad pax size before offset {pos}")))?;
        }
        let extended = matches!(typeflag, b'L' | b'K' | b'x' | b'X' | b'g');
        if !extended && !has_data(typeflag) {
            size = 0;
        }
        let data = pos + BLOCK as u64;
        let end = src.end_of(data, size, "member data")?;
        *next = end
            .checked_next_multiple_of(BLOCK as u64)
            .ok_or_else(|| truncated("member data", data, size, src.size()))?;
        let read_extended = || -> Result<Vec<u8>, FormatError> {
            if size > MAX_EXTENDED {
                return Err(FormatError::Unsupported(format!(
                    "an extended header of {size} bytes (offset {pos})"
                )));
            }
            src.bytes(data, size, "extended header")
        };
        let (path, link, pax) = match typeflag {
            b'L' => {
                *long_name = Some(text(&read_extended()?).to_vec());
                continue;
            }
            b'K' => {
                *long_link = Some(text(&read_extended()?).to_vec());
                continue;
            }
            b'x' | b'X' => {
                let merged = pax.get_or_insert_with(Records::new);
                for (k, v) in parse_pax(&read_extended()?, pos)? {
                    set(merged, &k, &v);
                }
                continue;
            }
            b'g' => {
                let records = parse_pax(&read_extended()?, pos)?;
                (header.name().to_vec(), Vec::new(), records)
            }
            _ => {
                let records = pax.take().unwrap_or_default();
                for key in [&b"path"[..], b"linkpath"] {
                    if record(&records, key).is_some_and(|v| v.contains(&0)) {
                        return Err(corrupt(format!(
                            "a pax {} holding a NUL byte (offset {pos})",
                            String::from_utf8_lossy(key)
                        )));
                    }
                }
                let path = if let Some(p) = record(&records, b"path") {
                    p.to_vec()
                } else if let Some(p) = long_name.take() {
                    p
                } else if header.is_posix() && !header.prefix().is_empty() {
                    let mut p = header.prefix().to_vec();
                    p.push(b'/');
                    p.extend_from_slice(header.name());
                    p
                } else {
                    header.name().to_vec()
                };
                let link = if let Some(l) = record(&records, b"linkpath") {
                    l.to_vec()
                } else if let Some(l) = long_link.take() {
                    l
                } else {
                    header.linkname().to_vec()
                };
                (path, link, records)
            }
        };
        return Ok(Some(Entry {
            offset: pos,
            header,
            typeflag,
            path,
            link,
            size,
            data,
            pax,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block of `typeflag` for `name` with `size` bytes of data, checksummed.
    fn block(name: &[u8], typeflag: u8, size: usize, magic: &[u8; 8]) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000017\0");
        h[156] = typeflag;
        h[257..265].copy_from_slice(magic);
        h[345..348].copy_from_slice(b"pre");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn push(out: &mut Vec<u8>, h: [u8; BLOCK], data: &[u8]) {
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }

    const POSIX: &[u8; 8] = b"ustar\x0000";
    const GNU: &[u8; 8] = b"ustar  \0";

    #[test]
    fn extended_headers_apply_to_the_next_member() {
        let pax = b"15 path=a/long\n10 uid=77\n";
        let mut t = Vec::new();
        // A global header between an extended header and its member leaves it pending.
        push(&mut t, block(b"x", b'x', pax.len(), POSIX), pax);
        push(&mut t, block(b"g", b'g', 12, POSIX), b"12 comment=\n");
        push(&mut t, block(b"short", b'0', 3, POSIX), b"abc");
        push(&mut t, block(b"././@LongLink", b'K', 7, GNU), b"target\0");
        push(&mut t, block(b"link", b'2', 99, GNU), b"");
        push(&mut t, block(b"name", 0, 1, POSIX), b"z");
        push(&mut t, block(b"dir/", 0, 0, GNU), b"");
        t.resize(t.len() + 2 * BLOCK, 0);
        let all: Vec<Entry> = entries(&t[..]).collect::<Result<_, _>>().unwrap();
        let got: Vec<(&[u8], u8, &[u8], u64)> = all
            .iter()
            .map(|e| (e.path.as_slice(), e.typeflag, e.link.as_slice(), e.size))
            .collect();
        assert_eq!(
            got,
            [
                (&b"g"[..], b'g', &b""[..], 12),
                (b"a/long", b'0', b"", 3),
                (b"link", b'2', b"target", 0),
                (b"pre/name", b'0', b"", 1),
                (b"dir/", b'5', b"", 0),
            ]
        );
        assert_eq!(all[0].pax, vec![(b"comment".to_vec(), Vec::new())]);
        assert_eq!(record(&all[1].pax, b"uid"), Some(&b"77"[..]));
        assert_eq!(&t[all[1].data as usize..][..3], b"abc");
        assert_eq!(all[1].header.mtime(), Some(0o17));
        assert!(all[1].header.is_posix() && all[2].header.is_ustar());
        assert!(!all[2].header.is_posix());
    }

    #[test]
    fn bad_archives_are_errors() {
        let mut good = Vec::new();
        push(&mut good, block(b"f", b'0', 700, POSIX), &[7; 700]);
        let first_error = |t: &[u8]| {
            entries(t)
                .find_map(Result::err)
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(first_error(&good[..1000]).contains("past the end"));
        assert!(first_error(&good[..300]).contains("truncated header"));
        let mut bad = good.clone();
        bad[0] = b'g';
        assert!(first_error(&bad).contains("bad header checksum at offset 0"));
        let mut dangling = Vec::new();
        push(&mut dangling, block(b"x", b'x', 11, POSIX), b"11 uid=770\n");
        assert!(first_error(&dangling).contains("not followed by a member"));
        let mut malformed = Vec::new();
        push(&mut malformed, block(b"x", b'x', 6, POSIX), b"9 a=b\n");
        push(&mut malformed, block(b"f", b'0', 0, POSIX), b"");
        assert!(first_error(&malformed).contains("malformed pax"));
        let mut huge = Vec::new();
        push(&mut huge, block(b"L", b'L', 2 << 20, GNU), &[b'n'; 2 << 20]);
        let err = entries(&huge[..]).next().unwrap().unwrap_err();
        assert!(matches!(err, FormatError::Unsupported(_)), "{err}");
        // Every cut of a good archive is an error or a shorter archive, never a panic.
        for n in 0..good.len() {
            let _ = entries(&good[..n]).count();
        }
    }

    #[test]
    fn octal_and_base256_numbers() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"     17 "), Some(0o17));
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
        assert_eq!(number(&[0xff; 12]), None);
        assert_eq!(number(&[0x80; 12]), None);
        assert_eq!(number(b"0000x44\0"), None);
        assert_eq!(number(b""), None);
    }

    #[test]
    fn pax_records() {
        assert_eq!(
            parse_pax(b"8 a=b=c\n7 a=xy\n\0\0", 0).unwrap(),
            vec![(b"a".to_vec(), b"xy".to_vec())]
        );
        for bad in [
            &b"3 a\n"[..],
            b"x a=b\n",
            b"99 a=b\n",
            b"7 a=b\nx",
            b"6 ab\n\n",
        ] {
            assert!(parse_pax(bad, 0).is_err(), "{bad:?}");
        }
    }
}
