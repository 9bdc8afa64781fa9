//! Unix `ar` archives (static libraries, `.deb`): 60-byte ASCII member headers with every
//! field as stored, GNU/SysV and BSD long names, the 2-byte alignment of members.

use super::{FormatError, Source, parse_ascii_number, until_error};

pub(crate) const MAGIC: &[u8; 8] = b"!<arch>\n";
pub(crate) const HEADER: usize = 60;

/// Whether `head` starts like an `ar` archive (not a thin one: its members live elsewhere).
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// A member header, its fields read on demand.
#[derive(Clone, Debug)]
pub(crate) struct Header(pub(crate) [u8; HEADER]);

/// What a member's name field says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Name<'a> {
    /// The symbol table (`/`, or `/SYM64/` for 64-bit offsets).
    Symbols,
    /// The GNU/SysV long-name table (`//`).
    LongNames,
    /// A GNU/SysV long name: `/N`, an offset into the long-name table.
    Long(usize),
    /// A BSD long name: `#1/N`, the name is the first N bytes of the data.
    Bsd(usize),
    /// The name itself (GNU ends it with `/`, kept here).
    Plain(&'a [u8]),
}

impl Header {
    /// The name field, trailing spaces removed.
    pub(crate) fn name(&self) -> &[u8] {
        let field = &self.0[..16];
        let end = field.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        &field[..end]
    }

    pub(crate) fn name_kind(&self) -> Name<'_> {
        let name = self.name();
        let number = |digits: &[u8]| {
            std::str::from_utf8(digits)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
        };
        match name {
            b"/" | b"/SYM64/" => Name::Symbols,
            b"//" => Name::LongNames,
            _ => {
                if let Some(n) = name.strip_prefix(b"/").and_then(number) {
                    Name::Long(n)
                } else if let Some(n) = name.strip_prefix(b"#1/").and_then(number) {
                    Name::Bsd(n)
                } else {
                    Name::Plain(name)
                }
            }
        }
    }

    pub(crate) fn mtime(&self) -> Option<u64> {
        parse_ascii_number(&self.0[16..28], 10)
    }

    pub(crate) fn uid(&self) -> Option<u64> {
        parse_ascii_number(&self.0[28..34], 10)
    }

    pub(crate) fn gid(&self) -> Option<u64> {
        parse_ascii_number(&self.0[34..40], 10)
    }

    pub(crate) fn mode(&self) -> Option<u64> {
        parse_ascii_number(&self.0[40..48], 8)
    }

    pub(crate) fn size(&self) -> Option<u64> {
        parse_ascii_number(&self.0[48..58], 10)
    }
}

/// The long name at `offset` of the GNU/SysV long-name table (ended by `/\n`, or `\n`).
pub(crate) fn long_name(table: &[u8], offset: usize) -> Option<&[u8]> {
    let rest = table.get(offset..)?;
    let end = rest
        .windows(2)
        .position(|w| w == b"/\n")
        .or_else(|| rest.iter().position(|&c| c == b'\n'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// One member of an archive.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// Where its header starts.
    pub(crate) offset: u64,
    pub(crate) header: Header,
    /// Where its data starts.
    pub(crate) data: u64,
    pub(crate) size: u64,
}

/// The members of the archive in `src`, in order; the first error ends the iteration.
/// Members are 2-aligned with a newline (the last one's may be missing).
pub(crate) fn members<S: Source + ?Sized>(
    src: &S,
) -> impl Iterator<Item = Result<Member, FormatError>> + '_ {
    let mut pos = 0;
    until_error(move || read_member(src, &mut pos))
}

/// Reads the member at `*pos` (after the magic at first), and moves `pos` past it.
fn read_member<S: Source + ?Sized>(src: &S, next: &mut u64) -> Result<Option<Member>, FormatError> {
    let corrupt = |detail: String| FormatError::Corrupt(detail);
    if *next == 0 {
        let mut magic = [0u8; MAGIC.len()];
        let n = src.read_at(0, &mut magic).map_err(FormatError::Read)?;
        if !sniff(&magic[..n]) {
            return Err(corrupt("no ar magic".into()));
        }
        *next = MAGIC.len() as u64;
    }
    let pos = *next;
    if pos >= src.size() {
        return Ok(None);
    }
    let mut h = [0u8; HEADER];
    src.read_exact_at(pos, &mut h, "member header")?;
    if &h[58..60] != b"`\n" {
        return Err(corrupt(format!("bad member header at offset {pos}")));
    }
    let header = Header(h);
    let size = header
        .size()
        .ok_or_else(|| corrupt(format!("bad member size at offset {pos}")))?;
    let data = pos + HEADER as u64;
    let mut end = src.end_of(data, size, "member")?;
    if size % 2 == 1 && end < src.size() {
        let mut pad = [0u8; 1];
        src.read_exact_at(end, &mut pad, "padding")?;
        if pad[0] != b'\n' {
            return Err(corrupt(format!("bad padding byte at offset {end}")));
        }
        end += 1;
    }
    *next = end;
    Ok(Some(Member {
        offset: pos,
        header,
        data,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, mode: &str, data: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "{name:<16}{:<12}{:<6}{:<6}{mode:<8}{:<10}`\n",
            1_700_000_000,
            1000,
            "",
            data.len()
        )
        .into_bytes();
        m.extend_from_slice(data);
        if data.len() % 2 == 1 {
            m.push(b'\n');
        }
        m
    }

    #[test]
    fn members_names_and_fields() {
        let a = [
            MAGIC.to_vec(),
            member("/", "0", b"\0\0\0\0"),
            member("//", "", b"a_very_long_member_name.o/\n"),
            member("/0", "100644", b"odd"),
            member("#1/6", "100755", b"bsd.o\0data"),
            member("x.o/", "644", b"xy"),
        ]
        .concat();
        let all: Vec<Member> = members(&a[..]).collect::<Result<_, _>>().unwrap();
        let kinds: Vec<Name<'_>> = all.iter().map(|m| m.header.name_kind()).collect();
        assert_eq!(
            kinds,
            [
                Name::Symbols,
                Name::LongNames,
                Name::Long(0),
                Name::Bsd(6),
                Name::Plain(b"x.o/")
            ]
        );
        let table = &a[all[1].data as usize..][..all[1].size as usize];
        assert_eq!(long_name(table, 0), Some(&b"a_very_long_member_name.o"[..]));
        assert_eq!(long_name(table, 99), None);
        let m = &all[2];
        assert_eq!(
            (m.header.mtime(), m.header.uid(), m.header.gid()),
            (Some(1_700_000_000), Some(1000), Some(0))
        );
        assert_eq!((m.header.mode(), m.size), (Some(0o100_644), 3));
        assert_eq!(&a[m.data as usize..][..3], b"odd");
        assert_eq!(all[4].offset, a.len() as u64 - 62);
        // The last member's padding may be missing.
        let unpadded = [MAGIC.to_vec(), member("x.o/", "644", b"odd")].concat();
        assert_eq!(members(&unpadded[..unpadded.len() - 1]).count(), 1);
    }

    #[test]
    fn bad_archives_are_errors() {
        let good = [
            MAGIC.to_vec(),
            member("x.o/", "644", b"hello"),
            member("y/", "644", b""),
        ]
        .concat();
        let first_error = |a: &[u8]| {
            members(a)
                .find_map(Result::err)
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let mut bad_fmag = good.clone();
        bad_fmag[8 + 58] = b'X';
        let mut bad_size = good.clone();
        bad_size[8 + 48] = b'z';
        let mut bad_pad = good.clone();
        bad_pad[8 + 60 + 5] = b' ';
        assert!(first_error(&bad_fmag).contains("bad member header at offset 8"));
        assert!(first_error(&bad_size).contains("bad member size at offset 8"));
        assert!(first_error(&bad_pad).contains("bad padding byte at offset 73"));
        assert!(first_error(&good[..30]).contains("truncated member header"));
        assert!(first_error(&good[..70]).contains("truncated member"));
        assert!(first_error(b"!<thin>\n").contains("no ar magic"));
        for n in 0..good.len() {
            let _ = members(&good[..n]).count();
        }
    }
}
