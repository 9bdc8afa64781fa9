//! Tar: members rewritten sorted by path, in one format (POSIX ustar headers, with a pax
//! extended header only where a value does not fit), with mtime `SOURCE_DATE_EPOCH`,
//! uid/gid 0, no user or group names and modes 0644/0755 (0777 for symbolic links); pax
//! records carrying times, owners or inode numbers are dropped, GNU long names become pax
//! records. Member data is copied as it is.
//!
//! Written by hand (with the reader in `formats::tar`) rather than with the tar crate: the
//! output is a canonical header layout of this module's choosing, and reading needs the
//! raw header fields (to drop what the crate would carry over) plus two passes over the
//! file (index, then copy in sorted order).

use std::collections::HashMap;
use std::io::Write;

use super::{Fail, Input, Kind, wr};
use crate::formats::Source;
use crate::formats::tar::{BLOCK, Header, MAX_EXTENDED, Records, entries};

/// GNU tar's default record size: the output is padded to a multiple of it.
const RECORD: u64 = 20 * BLOCK as u64;
/// The largest value an 11-digit octal field holds.
const MAX_OCTAL_11: u64 = 0o777_7777_7777;
/// The name of the pax extended headers written.
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// Pax records dropped: times, owners and inode details that depend on when, by whom or
/// where the archive was made, and the ones rewritten from the member (`size`, `path`,
/// `linkpath`).
const DROPPED_RECORDS: &[&[u8]] = &[
    b"atime",
    b"ctime",
    b"mtime",
    b"uid",
    b"gid",
    b"uname",
    b"gname",
    b"size",
    b"path",
    b"linkpath",
    b"SCHILY.dev",
    b"SCHILY.ino",
    b"SCHILY.nlink",
    b"LIBARCHIVE.creationtime",
];

fn corrupt(detail: String) -> Fail {
    Fail::Corrupt(Kind::Tar, detail)
}

fn unsupported(detail: String) -> Fail {
    Fail::Unsupported(Kind::Tar, detail)
}

/// Whether the first block is a tar header (its checksum holds), or the file is an empty
/// tar (only zero blocks).
pub(super) fn sniff(head: &[u8], input: &Input) -> bool {
    let Some(header) = Header::at_start(head) else {
        return false;
    };
    if header.is_zero() {
        return input.len >= 2 * BLOCK as u64
            && input.len % BLOCK as u64 == 0
            && input.zero_from(0).unwrap_or(false);
    }
    header.checksum_ok()
}

/// Refuses the pax records of features not handled.
fn check_records(records: &Records) -> Result<(), Fail> {
    for (key, _) in records {
        if key.starts_with(b"GNU.sparse.") {
            return Err(unsupported("sparse members".into()));
        }
        if key.starts_with(b"GNU.volume.") {
            return Err(unsupported("multi-volume archives".into()));
        }
    }
    Ok(())
}

fn kept(records: &Records) -> Records {
    let mut kept: Records = records
        .iter()
        .filter(|(k, _)| !DROPPED_RECORDS.contains(&k.as_slice()))
        .cloned()
        .collect();
    kept.sort();
    kept
}

/// One member (a file, directory, link, ...) of the archive.
#[derive(Debug)]
struct Member {
    path: Vec<u8>,
    link: Vec<u8>,
    typeflag: u8,
    mode: u32,
    /// Bytes of data that follow the header.
    size: u64,
    /// Where the data starts in the input.
    data: u64,
    dev: (u64, u64),
    /// Pax records kept (sorted by key).
    records: Records,
}

fn is_regular(typeflag: u8) -> bool {
    matches!(typeflag, b'0' | b'7')
}

/// The archive's members, in the order they appear, and its global pax records.
#[derive(Debug, Default)]
struct Parsed {
    globals: Vec<Records>,
    members: Vec<Member>,
}

/// Reads every header of the archive.
fn parse(input: &Input) -> Result<Parsed, Fail> {
    let mut parsed = Parsed::default();
    for entry in entries(input) {
        let e = entry.map_err(Fail::format(Kind::Tar))?;
        let pos = e.offset;
        check_records(&e.pax)?;
        match e.typeflag {
            b'g' => {
                if !parsed.members.is_empty() {
                    return Err(unsupported(format!(
                        "a global pax header after the first member (offset {pos})"
                    )));
                }
                let records = kept(&e.pax);
                if !records.is_empty() {
                    parsed.globals.push(records);
                }
            }
            b'0'..=b'7' => {
                let mode = e
                    .header
                    .mode()
                    .ok_or_else(|| corrupt(format!("bad mode field at offset {pos}")))?;
                let dev = if matches!(e.typeflag, b'3' | b'4') {
                    let bad = || corrupt(format!("bad device field at offset {pos}"));
                    (
                        e.header.dev_major().ok_or_else(bad)?,
                        e.header.dev_minor().ok_or_else(bad)?,
                    )
                } else {
                    (0, 0)
                };
                parsed.members.push(Member {
                    path: e.path,
                    link: e.link,
                    typeflag: e.typeflag,
                    mode: (mode & 0o7777) as u32,
                    size: e.size,
                    data: e.data,
                    dev,
                    records: kept(&e.pax),
                });
            }
            b'S' => return Err(unsupported("sparse members".into())),
            b'M' | b'V' => return Err(unsupported("multi-volume archives".into())),
            t => {
                return Err(unsupported(format!(
                    "member type {:?} (offset {pos})",
                    char::from(t)
                )));
            }
        }
    }
    Ok(parsed)
}

/// Makes hard links independent of the order the archive was written in: in each set of
/// names for one file, the first name in sorted order holds the data and the others link
/// to it, all with the file's mode.
fn canonical_hard_links(members: &mut [Member]) {
    let mut latest: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut root: Vec<Option<usize>> = vec![None; members.len()];
    for i in 0..members.len() {
        if members[i].typeflag == b'1' {
            if let Some(&j) = latest.get(&members[i].link) {
                root[i] = if is_regular(members[j].typeflag) {
                    Some(j)
                } else {
                    root[j]
                };
            }
        }
        latest.insert(members[i].path.clone(), i);
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, r) in root.iter().enumerate() {
        if let Some(r) = *r {
            groups.entry(r).or_insert_with(|| vec![r]).push(i);
        }
    }
    for (r, group) in groups {
        let holder = group
            .iter()
            .copied()
            .min_by(|&a, &b| (&members[a].path, a).cmp(&(&members[b].path, b)))
            .unwrap_or(r);
        if holder != r {
            let (typeflag, size, data) = (members[r].typeflag, members[r].size, members[r].data);
            let records = std::mem::take(&mut members[r].records);
            members[r].records = std::mem::replace(&mut members[holder].records, records);
            members[holder].typeflag = typeflag;
            members[holder].size = size;
            members[holder].data = data;
            members[holder].link.clear();
        }
        let mode = members[r].mode;
        let target = members[holder].path.clone();
        for &i in &group {
            members[i].mode = mode;
            if i != holder {
                members[i].typeflag = b'1';
                members[i].size = 0;
                members[i].link = target.clone();
            }
        }
    }
}

fn normal_mode(typeflag: u8, mode: u32) -> u32 {
    match typeflag {
        b'5' => 0o755,
        b'2' => 0o777,
        b'0' | b'1' | b'7' if mode & 0o111 != 0 => 0o755,
        _ => 0o644,
    }
}

/// Writes `v` as zero-padded octal filling `field` but its last byte (NUL).
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

/// Splits a path into ustar `(prefix, name)`, if it fits. The prefix is not empty (an
/// empty one reads as none: a leading `/` would be lost).
fn split_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    (0..path.len())
        .filter(|&i| path[i] == b'/')
        .find(|&i| (1..=155).contains(&i) && path.len() - i - 1 <= 100 && i + 1 < path.len())
        .map(|i| (&path[..i], &path[i + 1..]))
}

/// A ustar header block.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per header field written"
)]
fn header(
    name: &[u8],
    prefix: &[u8],
    mode: u32,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &[u8],
    dev: (u64, u64),
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], dev.0);
    octal(&mut h[337..345], dev.1);
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

/// Encodes pax records (`"LEN key=value\n"`, LEN counting itself).
fn encode_pax(records: &Records) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while len != base + len.to_string().len() {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn pad(out: &mut dyn Write, len: u64) -> Result<(), Fail> {
    let rest = len.next_multiple_of(BLOCK as u64) - len;
    wr(out, &[0u8; BLOCK][..rest as usize])
}

fn write_extended(
    out: &mut dyn Write,
    typeflag: u8,
    records: &Records,
    mtime: u64,
) -> Result<(), Fail> {
    let data = encode_pax(records);
    if data.len() as u64 > MAX_EXTENDED {
        // Reading the result would refuse it.
        return Err(unsupported(format!(
            "pax records of {} bytes for one member",
            data.len()
        )));
    }
    let h = header(
        PAX_NAME,
        &[],
        0o644,
        data.len() as u64,
        mtime,
        typeflag,
        &[],
        (0, 0),
    );
    wr(out, &h)?;
    wr(out, &data)?;
    pad(out, data.len() as u64)
}

/// Writes the normalised form of the tar `input`.
pub(super) fn normalize(input: &Input, out: &mut dyn Write, sde: u64) -> Result<(), Fail> {
    let mut parsed = parse(input)?;
    canonical_hard_links(&mut parsed.members);
    parsed.members.sort_by(|a, b| a.path.cmp(&b.path));
    // A link to a member that came after it (a broken archive) resolves once the members
    // are sorted, as it will when the result is read again: resolve it now too.
    canonical_hard_links(&mut parsed.members);
    let mtime = sde.min(MAX_OCTAL_11);
    let mut written = 0u64;
    for g in &parsed.globals {
        let len = encode_pax(g).len() as u64;
        write_extended(out, b'g', g, mtime)?;
        written += BLOCK as u64 + len.next_multiple_of(BLOCK as u64);
    }
    for m in &parsed.members {
        let mut records = m.records.clone();
        let (prefix, name) = match split_path(&m.path) {
            Some(split) => split,
            None => {
                records.push((b"path".to_vec(), m.path.clone()));
                (&[][..], &m.path[..m.path.len().min(100)])
            }
        };
        if m.link.len() > 100 {
            records.push((b"linkpath".to_vec(), m.link.clone()));
        }
        if m.size > MAX_OCTAL_11 {
            records.push((b"size".to_vec(), m.size.to_string().into_bytes()));
        }
        if sde > MAX_OCTAL_11 {
            records.push((b"mtime".to_vec(), sde.to_string().into_bytes()));
        }
        if m.dev.0 > 0o777_7777 || m.dev.1 > 0o777_7777 {
            return Err(unsupported(format!(
                "device numbers {}:{} do not fit a ustar header",
                m.dev.0, m.dev.1
            )));
        }
        if !records.is_empty() {
            records.sort();
            let len = encode_pax(&records).len() as u64;
            write_extended(out, b'x', &records, mtime)?;
            written += BLOCK as u64 + len.next_multiple_of(BLOCK as u64);
        }
        let size = m.size.min(MAX_OCTAL_11);
        let mode = normal_mode(m.typeflag, m.mode);
        let h = header(name, prefix, mode, size, mtime, m.typeflag, &m.link, m.dev);
        wr(out, &h)?;
        input
            .copy_to(m.data, m.size, out, "member data")
            .map_err(Fail::format(Kind::Tar))?;
        pad(out, m.size)?;
        written += BLOCK as u64 + m.size.next_multiple_of(BLOCK as u64);
    }
    // Two zero blocks end the archive; zeros then fill the last record, as GNU tar does.
    let total = (written + 2 * BLOCK as u64).next_multiple_of(RECORD);
    let zeros = [0u8; BLOCK];
    for _ in 0..(total - written) / BLOCK as u64 {
        wr(out, &zeros)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use proptest::prelude::*;

    use super::super::tests_support::{SDE, normalize_bytes, write_temp};
    use super::super::{NormalizeError, Normalized, normalize_file};
    use super::*;
    use crate::formats::tar::number;
    use crate::formats::text;

    fn checksum_ok(h: &[u8]) -> bool {
        Header(h.try_into().unwrap()).checksum_ok()
    }

    #[derive(Clone, Debug, PartialEq)]
    enum What {
        File { exec: bool },
        Dir,
        Symlink(String),
        Hardlink(String),
    }

    #[derive(Clone, Debug)]
    struct TestMember {
        path: String,
        data: Vec<u8>,
        what: What,
    }

    fn file(path: &str, data: &[u8], exec: bool) -> TestMember {
        TestMember {
            path: path.into(),
            data: data.to_vec(),
            what: What::File { exec },
        }
    }

    fn other(path: &str, what: What) -> TestMember {
        TestMember {
            path: path.into(),
            data: Vec::new(),
            what,
        }
    }

    /// How a test tar is written: the knobs real writers differ on.
    #[derive(Clone, Copy, Debug)]
    struct Style {
        mtime: u64,
        uid: u64,
        /// GNU format (`ustar  ` magic, `././@LongLink` names), else POSIX with pax.
        gnu: bool,
        /// Pax headers with atime and ctime on every member (POSIX only).
        pax_times: bool,
    }

    const GNU: Style = Style {
        mtime: 1_700_000_000,
        uid: 1000,
        gnu: true,
        pax_times: false,
    };

    /// A header block with every field given, as writers other than this module's fill them.
    fn raw(
        path: &[u8],
        mode: u32,
        size: u64,
        typeflag: u8,
        link: &[u8],
        style: Style,
    ) -> [u8; BLOCK] {
        let mut h = header(
            &path[..path.len().min(100)],
            &[],
            mode,
            size,
            style.mtime,
            typeflag,
            link,
            (0, 0),
        );
        octal(&mut h[108..116], style.uid);
        octal(&mut h[116..124], style.uid + 1);
        h[265..269].copy_from_slice(b"user");
        h[297..302].copy_from_slice(b"group");
        if style.gnu {
            h[257..265].copy_from_slice(b"ustar  \0");
        }
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        octal(&mut h[148..155], sum);
        h
    }

    fn push_data(out: &mut Vec<u8>, data: &[u8]) {
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }

    fn build(members: &[TestMember], style: Style) -> Vec<u8> {
        let mut out = Vec::new();
        for m in members {
            let (typeflag, mode, link) = match &m.what {
                What::File { exec: true } => (b'0', 0o775, ""),
                What::File { exec: false } => (b'0', 0o664, ""),
                What::Dir => (b'5', 0o775, ""),
                What::Symlink(t) => (b'2', 0o777, t.as_str()),
                What::Hardlink(t) => (b'1', 0o664, t.as_str()),
            };
            let path = m.path.as_bytes();
            if style.gnu && path.len() > 100 {
                let mut name = path.to_vec();
                name.push(0);
                out.extend_from_slice(&raw(
                    b"././@LongLink",
                    0o644,
                    name.len() as u64,
                    b'L',
                    b"",
                    style,
                ));
                push_data(&mut out, &name);
            } else if !style.gnu && (path.len() > 100 || style.pax_times) {
                let mut records = Records::new();
                if style.pax_times {
                    records.push((
                        b"atime".to_vec(),
                        format!("{}.5", style.mtime + 9).into_bytes(),
                    ));
                    records.push((
                        b"ctime".to_vec(),
                        format!("{}.25", style.mtime + 3).into_bytes(),
                    ));
                }
                if path.len() > 100 {
                    records.push((b"path".to_vec(), path.to_vec()));
                }
                let data = encode_pax(&records);
                let name = format!("./PaxHeaders.{}/x", style.uid);
                out.extend_from_slice(&raw(
                    name.as_bytes(),
                    0o644,
                    data.len() as u64,
                    b'x',
                    b"",
                    style,
                ));
                push_data(&mut out, &data);
            }
            out.extend_from_slice(&raw(
                path,
                mode,
                m.data.len() as u64,
                typeflag,
                link.as_bytes(),
                style,
            ));
            push_data(&mut out, &m.data);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out.resize(out.len().next_multiple_of(RECORD as usize), 0);
        out
    }

    /// A member as read back: (path, typeflag, mode, link, data).
    type Read = (String, u8, u32, String, Vec<u8>);

    fn read(bytes: &[u8]) -> (Parsed, Vec<Read>) {
        let (_dir, path) = write_temp("x.tar", bytes);
        let input = Input::new(fs::File::open(&path).unwrap()).unwrap();
        let parsed = parse(&input).unwrap();
        let members = parsed
            .members
            .iter()
            .map(|m| {
                let data = bytes[m.data as usize..(m.data + m.size) as usize].to_vec();
                let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                (s(&m.path), m.typeflag, m.mode, s(&m.link), data)
            })
            .collect();
        (parsed, members)
    }

    fn sample() -> Vec<TestMember> {
        vec![
            other("pkg/", What::Dir),
            file("pkg/bin/tool", b"#!/bin/sh\n", true),
            other("pkg/bin/", What::Dir),
            file("pkg/README", &b"read me\n".repeat(100), false),
            other("pkg/latest", What::Symlink("README".into())),
            file("pkg/empty", b"", false),
        ]
    }

    #[test]
    fn members_get_order_time_owner_and_mode() {
        let input = build(&sample(), GNU);
        let (out, result) = normalize_bytes(Kind::Tar, &input, "a.tar");
        assert_eq!(result, Normalized::Rewritten);
        assert_eq!(out.len() % RECORD as usize, 0);
        let (_, members) = read(&out);
        let want: Vec<Read> = vec![
            ("pkg/".into(), b'5', 0o755, String::new(), vec![]),
            (
                "pkg/README".into(),
                b'0',
                0o644,
                String::new(),
                b"read me\n".repeat(100),
            ),
            ("pkg/bin/".into(), b'5', 0o755, String::new(), vec![]),
            (
                "pkg/bin/tool".into(),
                b'0',
                0o755,
                String::new(),
                b"#!/bin/sh\n".to_vec(),
            ),
            ("pkg/empty".into(), b'0', 0o644, String::new(), vec![]),
            ("pkg/latest".into(), b'2', 0o777, "README".into(), vec![]),
        ];
        assert_eq!(members, want);
        // Every header: POSIX magic, mtime SDE, owner 0 without names.
        let mut pos = 0;
        for _ in 0..want.len() {
            let h = &out[pos..pos + BLOCK];
            assert!(checksum_ok(h));
            assert_eq!(&h[257..265], b"ustar\x0000");
            assert_eq!(number(&h[136..148]), Some(SDE));
            assert_eq!(
                (number(&h[108..116]), number(&h[116..124])),
                (Some(0), Some(0))
            );
            assert_eq!(
                (text(&h[265..297]), text(&h[297..329])),
                (&b""[..], &b""[..])
            );
            pos += BLOCK + (number(&h[124..136]).unwrap() as usize).next_multiple_of(BLOCK);
        }
        assert!(out[pos..].iter().all(|&b| b == 0));
    }

    #[test]
    fn same_content_in_any_order_time_or_format_normalises_alike() {
        let mut reversed = sample();
        reversed.reverse();
        let a = build(&sample(), GNU);
        let b = build(
            &reversed,
            Style {
                mtime: 1_800_000_000,
                uid: 0,
                gnu: false,
                pax_times: true,
            },
        );
        assert_ne!(a, b);
        assert_eq!(
            normalize_bytes(Kind::Tar, &a, "a.tar").0,
            normalize_bytes(Kind::Tar, &b, "b.tar").0
        );
    }

    #[test]
    fn normalising_twice_is_normalising_once() {
        let (once, _) = normalize_bytes(Kind::Tar, &build(&sample(), GNU), "a.tar");
        let (twice, result) = normalize_bytes(Kind::Tar, &once, "a.tar");
        assert_eq!(result, Normalized::Unchanged);
        assert_eq!(twice, once);
    }

    #[test]
    fn long_names_become_ustar_prefixes_or_pax_paths() {
        let splittable = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let unsplittable = format!("{}/{}", "d".repeat(20), "f".repeat(120));
        let long_link = "t".repeat(150);
        let members = [
            file(&splittable, b"1", false),
            file(&unsplittable, b"2", false),
        ];
        let mut gnu = build(&members, GNU);
        // A GNU long link name for the symlink.
        let mut name = long_link.clone().into_bytes();
        name.push(0);
        let end = gnu.len() - RECORD as usize;
        let mut tail = raw(b"././@LongLink", 0o644, name.len() as u64, b'K', b"", GNU).to_vec();
        push_data(&mut tail, &name);
        tail.extend_from_slice(&raw(
            b"link",
            0o777,
            0,
            b'2',
            &long_link.as_bytes()[..100],
            GNU,
        ));
        gnu.splice(end..end, tail);
        let posix = build(&members, Style { gnu: false, ..GNU });
        let (out, _) = normalize_bytes(Kind::Tar, &gnu, "a.tar");
        let (_, read_back) = read(&out);
        let paths: Vec<&str> = read_back.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(paths, [unsplittable.as_str(), splittable.as_str(), "link"]);
        assert_eq!(read_back[2].3, long_link);
        // The unsplittable name needs a pax header (one block of records), then its header
        // and data; the splittable one fits ustar's prefix and name; the link needs a pax
        // header again.
        assert_eq!(text(&out[..100]), PAX_NAME);
        assert_eq!(out[156], b'x');
        let split = &out[4 * BLOCK..5 * BLOCK];
        assert_eq!(text(&split[..100]), "f".repeat(90).as_bytes());
        assert_eq!(text(&split[345..500]), "d".repeat(120).as_bytes());
        assert_eq!(text(&out[6 * BLOCK..6 * BLOCK + 100]), PAX_NAME);
        // The POSIX form of the same two files normalises to the same bytes.
        let (a, _) = normalize_bytes(Kind::Tar, &posix, "b.tar");
        let (b, _) = normalize_bytes(Kind::Tar, &build(&members, GNU), "c.tar");
        assert_eq!(a, b);
    }

    #[test]
    fn pax_times_are_dropped_and_other_records_kept() {
        let mut records: Records = vec![
            (b"atime".to_vec(), b"1.5".to_vec()),
            (b"mtime".to_vec(), b"2.5".to_vec()),
            (b"SCHILY.xattr.user.k".to_vec(), b"v".to_vec()),
            (b"SCHILY.ino".to_vec(), b"1234".to_vec()),
            (b"uname".to_vec(), b"me".to_vec()),
        ];
        let data = encode_pax(&records);
        let style = Style { gnu: false, ..GNU };
        let mut input = raw(
            b"PaxHeaders.1/f",
            0o644,
            data.len() as u64,
            b'x',
            b"",
            style,
        )
        .to_vec();
        push_data(&mut input, &data);
        input.extend_from_slice(&raw(b"f", 0o644, 1, b'0', b"", style));
        push_data(&mut input, b"x");
        let global = encode_pax(&vec![
            (b"comment".to_vec(), b"commit 0123".to_vec()),
            (b"mtime".to_vec(), b"5".to_vec()),
        ]);
        let mut g = raw(
            b"pax_global_header",
            0o644,
            global.len() as u64,
            b'g',
            b"",
            style,
        )
        .to_vec();
        push_data(&mut g, &global);
        input.splice(0..0, g);
        input.resize(input.len() + 2 * BLOCK, 0);
        let (out, _) = normalize_bytes(Kind::Tar, &input, "a.tar");
        let (parsed, members) = read(&out);
        assert_eq!(
            parsed.globals,
            vec![vec![(b"comment".to_vec(), b"commit 0123".to_vec())]]
        );
        records.retain(|(k, _)| k == b"SCHILY.xattr.user.k");
        assert_eq!(parsed.members[0].records, records);
        assert_eq!(members[0].4, b"x");
        assert_eq!(out[156], b'g');
    }

    #[test]
    fn hard_links_are_canonical_whatever_the_order() {
        // `tar` stores the first name it meets with the data, later ones as links to it.
        let zeta_first = vec![
            file("zeta", b"shared", true),
            other("alpha", What::Hardlink("zeta".into())),
            other("mid", What::Hardlink("zeta".into())),
        ];
        let alpha_first = vec![
            file("mid", b"shared", true),
            other("zeta", What::Hardlink("mid".into())),
            other("alpha", What::Hardlink("mid".into())),
        ];
        let (a, _) = normalize_bytes(Kind::Tar, &build(&zeta_first, GNU), "a.tar");
        let (b, _) = normalize_bytes(Kind::Tar, &build(&alpha_first, GNU), "b.tar");
        assert_eq!(a, b);
        let (_, members) = read(&a);
        let want: Vec<Read> = vec![
            (
                "alpha".into(),
                b'0',
                0o755,
                String::new(),
                b"shared".to_vec(),
            ),
            ("mid".into(), b'1', 0o755, "alpha".into(), vec![]),
            ("zeta".into(), b'1', 0o755, "alpha".into(), vec![]),
        ];
        assert_eq!(members, want);
    }

    /// Normalises `input` twice: the second time changes nothing.
    fn assert_fixpoint(what: &str, input: &[u8]) -> Vec<u8> {
        let (once, result) = normalize_bytes(Kind::Tar, input, "a.tar");
        assert_eq!(result, Normalized::Rewritten, "{what}");
        let (twice, result) = normalize_bytes(Kind::Tar, &once, "a.tar");
        assert_eq!(result, Normalized::Unchanged, "{what}");
        assert_eq!(twice, once, "{what}");
        once
    }

    #[test]
    fn a_hard_link_before_its_target_is_resolved_once_sorted() {
        // "zeta" links to "alpha", which comes later in the archive but first once sorted:
        // it normalises as if it came after it.
        let alpha = file("alpha", b"shared", true);
        let zeta = other("zeta", What::Hardlink("alpha".into()));
        let before = build(&[zeta.clone(), alpha.clone()], GNU);
        let once = assert_fixpoint("a hard link before its target", &before);
        let (after, _) = normalize_bytes(Kind::Tar, &build(&[alpha, zeta], GNU), "b.tar");
        assert_eq!(once, after);
    }

    #[test]
    fn a_long_path_from_the_root_keeps_its_slash() {
        let rooted = format!("/{}", "a".repeat(100));
        let posix = Style { gnu: false, ..GNU };
        let input = build(&[file(&rooted, b"1", false), file("0", b"2", false)], posix);
        let out = assert_fixpoint("a 101-byte path from the root", &input);
        let (_, members) = read(&out);
        let paths: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(paths, [rooted.as_str(), "0"]);
    }

    /// A POSIX tar of the member `last` after one pax extended header per item of `pax`.
    fn after_pax(pax: &[Records], last: [u8; BLOCK]) -> Vec<u8> {
        let mut input = Vec::new();
        for records in pax {
            let data = encode_pax(records);
            let style = Style { gnu: false, ..GNU };
            input.extend_from_slice(&raw(b"x", 0o644, data.len() as u64, b'x', b"", style));
            push_data(&mut input, &data);
        }
        input.extend_from_slice(&last);
        input.resize(input.len() + 2 * BLOCK, 0);
        input
    }

    /// The error normalising `input` gives (which leaves the file as it was).
    fn refused(input: &[u8]) -> NormalizeError {
        let (_dir, path) = write_temp("a.tar", input);
        let err = normalize_file(&path, Kind::Tar, SDE).unwrap_err();
        assert_eq!(fs::read(&path).unwrap(), input);
        err
    }

    #[test]
    fn a_pax_path_holding_a_nul_is_corrupt() {
        let link = raw(b"f", 0o644, 0, b'2', b"t", Style { gnu: false, ..GNU });
        for key in [&b"path"[..], b"linkpath"] {
            let err = refused(&after_pax(&[vec![(key.to_vec(), b"a\0b".to_vec())]], link));
            assert!(matches!(err, NormalizeError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("NUL"), "{err}");
        }
    }

    #[test]
    fn pax_records_too_large_to_read_back_are_refused() {
        // Two extended headers of 600 KB each, for one member: each reads, together they
        // would make one header over the limit.
        let big = |key: &str| vec![(key.as_bytes().to_vec(), vec![b'v'; 600_000])];
        let file = raw(b"f", 0o644, 0, b'0', b"", Style { gnu: false, ..GNU });
        let input = after_pax(
            &[big("SCHILY.xattr.user.a"), big("SCHILY.xattr.user.b")],
            file,
        );
        let err = refused(&input);
        assert!(matches!(err, NormalizeError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("pax records of"), "{err}");
    }

    #[test]
    fn corrupt_tars_are_errors_and_stay_untouched() {
        let good = build(&sample(), GNU);
        let mut bad_sum = good.clone();
        bad_sum[BLOCK * 3] ^= 1; // the third member's name: its checksum no longer holds
        let last_data = good.iter().rposition(|&b| b != 0).unwrap();
        let cases = [
            ("truncated data", good[..last_data - 10].to_vec()),
            ("truncated header", good[..BLOCK + 100].to_vec()),
            ("bad checksum", bad_sum),
        ];
        for (what, bad) in cases {
            let (dir, path) = write_temp("a.tar", &bad);
            let err = normalize_file(&path, Kind::Tar, SDE).unwrap_err();
            assert!(
                matches!(err, NormalizeError::Corrupt { .. }),
                "{what}: {err}"
            );
            assert!(err.to_string().contains("corrupt tar archive"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), bad, "{what}");
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{what}");
        }
        let mut sparse = raw(b"s", 0o644, 0, b'S', b"", GNU).to_vec();
        sparse.resize(RECORD as usize, 0);
        let (_dir, path) = write_temp("s.tar", &sparse);
        let err = normalize_file(&path, Kind::Tar, SDE).unwrap_err();
        assert!(matches!(err, NormalizeError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("sparse"), "{err}");
    }

    #[test]
    fn empty_tar_and_other_files() {
        let empty = vec![0u8; RECORD as usize];
        assert_eq!(
            normalize_bytes(Kind::Tar, &empty, "e.tar"),
            (empty, Normalized::Unchanged)
        );
        let text = b"just some text\n".repeat(100);
        for other in [&b""[..], &text, &[0u8; 100]] {
            assert_eq!(
                normalize_bytes(Kind::Tar, other, "x.tar"),
                (other.to_vec(), Normalized::NotThisKind)
            );
        }
    }

    fn members_strategy() -> impl Strategy<Value = Vec<TestMember>> {
        proptest::collection::btree_map(
            "[a-c]{1,2}(/[a-c]{1,2}){0,2}|[a-z]{101,130}",
            (proptest::collection::vec(any::<u8>(), 0..700), 0u8..4),
            1..8,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(path, (data, what))| match what {
                    0 => file(&path, &data, false),
                    1 => file(&path, &data, true),
                    2 => other(&format!("{path}/"), What::Dir),
                    _ => other(&path, What::Symlink("target".into())),
                })
                .collect()
        })
    }

    fn style_strategy() -> impl Strategy<Value = Style> {
        (
            0u64..0o77_7777_7777,
            0u64..70_000,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(mtime, uid, gnu, pax_times)| Style {
                mtime,
                uid,
                gnu,
                pax_times: pax_times && !gnu,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_order_time_and_owner_normalise_alike(
            members in members_strategy(),
            shuffle in any::<u64>(),
            a in style_strategy(),
            b in style_strategy(),
        ) {
            let mut other = members.clone();
            let mut rng = shuffle;
            for i in (1..other.len()).rev() {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                other.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let (na, _) = normalize_bytes(Kind::Tar, &build(&members, a), "a.tar");
            let (nb, _) = normalize_bytes(Kind::Tar, &build(&other, b), "b.tar");
            prop_assert_eq!(&na, &nb);
            let (again, result) = normalize_bytes(Kind::Tar, &na, "a.tar");
            prop_assert_eq!(result, Normalized::Unchanged);
            prop_assert_eq!(again, na);
        }
    }
}
