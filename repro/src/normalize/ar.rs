//! Unix `ar` archives (static libraries, `.deb`): every member header gets what GNU ar's
//! deterministic mode (`ar D`) writes: time 0, uid and gid 0, mode 644 (the symbol table:
//! mode 0). Member order and data, the symbol table and the long-name table are kept:
//! the order is part of what the archive means (the linker searches members in order), so
//! it is not sorted.

use std::io::Write;

use super::{Fail, Input, Kind, wr};
use crate::formats::Source;
use crate::formats::ar::{HEADER, Header, MAGIC, Name, members};

/// Writes `value` left-justified and space-padded into `field`.
fn put(field: &mut [u8], value: &[u8]) {
    field.fill(b' ');
    field[..value.len()].copy_from_slice(value);
}

/// The normalised form of a member header.
fn normalize_header(hdr: &Header) -> [u8; HEADER] {
    let mut out = hdr.0;
    let symbols = match hdr.name_kind() {
        // The GNU/SysV long-name table has no time, owner or mode: GNU ar leaves them blank.
        Name::LongNames => return out,
        // The symbol table (`/`, `/SYM64/`): GNU ar D writes mode 0 for it.
        Name::Symbols => true,
        _ => false,
    };
    put(&mut out[16..28], b"0");
    put(&mut out[28..34], b"0");
    put(&mut out[34..40], b"0");
    put(&mut out[40..48], if symbols { b"0" } else { b"644" });
    out
}

/// Writes `input` with every member header normalised; the data is copied as it is.
pub(super) fn normalize(input: &Input, out: &mut dyn Write) -> Result<(), Fail> {
    wr(out, MAGIC)?;
    for member in members(input) {
        let m = member.map_err(Fail::format(Kind::Ar))?;
        wr(out, &normalize_header(&m.header))?;
        input
            .copy_to(m.data, m.size, out, "member")
            .map_err(Fail::format(Kind::Ar))?;
        if m.size % 2 == 1 {
            // Members are 2-aligned with a newline (also after the last one).
            wr(out, b"\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::{normalize_bytes, write_temp};
    use super::super::{Normalized, normalize_file};
    use super::*;

    fn header(name: &str, date: &str, uid: &str, gid: &str, mode: &str, size: usize) -> Vec<u8> {
        let mut h = vec![b' '; HEADER];
        put(&mut h[..16], name.as_bytes());
        put(&mut h[16..28], date.as_bytes());
        put(&mut h[28..34], uid.as_bytes());
        put(&mut h[34..40], gid.as_bytes());
        put(&mut h[40..48], mode.as_bytes());
        put(&mut h[48..58], size.to_string().as_bytes());
        h[58..60].copy_from_slice(b"`\n");
        h
    }

    fn archive(members: &[(&str, &str, &str, &[u8])]) -> Vec<u8> {
        let mut a = MAGIC.to_vec();
        for (name, date, mode, data) in members {
            a.extend(header(name, date, "1000", "1000", mode, data.len()));
            a.extend_from_slice(data);
            if data.len() % 2 == 1 {
                a.push(b'\n');
            }
        }
        a
    }

    #[test]
    fn headers_lose_time_owner_and_mode_but_keep_order_and_data() {
        let a = archive(&[
            ("/", "1700000000", "0", b"\0\0\0\0"),
            ("//", "", "", b"a_very_long_member_name.o/\n"),
            ("zz.o/", "1700000001", "100755", b"odd"),
            ("aa.o/", "1700000002", "100600", b"even"),
        ]);
        let (out, result) = normalize_bytes(Kind::Ar, &a, "lib.a");
        assert_eq!(result, Normalized::Rewritten);
        let mut want = MAGIC.to_vec();
        want.extend(header("/", "0", "0", "0", "0", 4));
        want.extend_from_slice(b"\0\0\0\0");
        // The long-name table is copied as it was (its blank fields hold "1000" here).
        want.extend(header("//", "", "1000", "1000", "", 27));
        want.extend_from_slice(b"a_very_long_member_name.o/\n\n");
        want.extend(header("zz.o/", "0", "0", "0", "644", 3));
        want.extend_from_slice(b"odd\n");
        want.extend(header("aa.o/", "0", "0", "0", "644", 4));
        want.extend_from_slice(b"even");
        assert_eq!(out, want);
        let (again, result) = normalize_bytes(Kind::Ar, &out, "lib.a");
        assert_eq!(result, Normalized::Unchanged);
        assert_eq!(again, out);
    }

    #[test]
    fn same_members_at_other_times_normalise_alike() {
        let a = archive(&[
            ("x.o/", "1", "100644", b"x"),
            ("y.o/", "2", "100755", b"yy"),
        ]);
        let b = archive(&[
            ("x.o/", "99999", "100600", b"x"),
            ("y.o/", "5", "100700", b"yy"),
        ]);
        assert_ne!(a, b);
        assert_eq!(
            normalize_bytes(Kind::Ar, &a, "l.a").0,
            normalize_bytes(Kind::Ar, &b, "l.a").0
        );
    }

    #[test]
    fn corrupt_archives_are_errors_and_stay_untouched() {
        let good = archive(&[("x.o/", "1", "100644", b"hello")]);
        let mut bad_magic = good.clone();
        bad_magic[8 + 58] = b'X';
        let mut bad_size = good.clone();
        bad_size[8 + 48] = b'z';
        for bad in [
            good[..good.len() - 3].to_vec(),
            bad_magic,
            bad_size,
            good[..40].to_vec(),
        ] {
            let (dir, path) = write_temp("lib.a", &bad);
            let err = normalize_file(&path, Kind::Ar, 0).unwrap_err();
            assert!(err.to_string().contains("corrupt ar archive"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), bad);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }

    #[test]
    fn other_files_are_not_this_kind() {
        for other in [&b"!<thin>\nxxxx"[..], b"", b"hello"] {
            let (out, result) = normalize_bytes(Kind::Ar, other, "lib.a");
            assert_eq!(result, Normalized::NotThisKind);
            assert_eq!(out, other);
        }
    }
}
