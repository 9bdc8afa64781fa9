//! ELF (32- and 64-bit, either byte order): section headers read by hand, sections
//! compared by name, the GNU build-id note read from `.note.gnu.build-id`.

use std::collections::HashMap;

use super::{Ctx, DriftKind, content, hints, util};

/// Section details shown per file; the rest are only named.
const MAX_SECTION_DETAILS: usize = 6;
const SHT_NOBITS: u32 = 8;
const SHF_STRINGS: u64 = 0x20;
const NT_GNU_BUILD_ID: u32 = 3;
const BUILD_ID_SECTION: &str = ".note.gnu.build-id";

#[derive(Debug)]
struct Section<'d> {
    name: String,
    kind: u32,
    flags: u64,
    addr: u64,
    data: &'d [u8],
    size: u64,
}

/// A section header's fields this report reads.
#[derive(Clone, Copy, Debug)]
struct Shdr {
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
}

#[derive(Debug)]
struct Elf<'d> {
    header: &'d [u8],
    program_headers: &'d [u8],
    sections: Vec<Section<'d>>,
    big: bool,
}

fn read(d: &[u8]) -> Result<Elf<'_>, String> {
    if !d.starts_with(b"\x7fELF") {
        return Err("no ELF magic".to_owned());
    }
    let class64 = match d.get(4) {
        Some(1) => false,
        Some(2) => true,
        c => return Err(format!("unknown ELF class {c:?}")),
    };
    let big = match d.get(5) {
        Some(1) => false,
        Some(2) => true,
        e => return Err(format!("unknown ELF data encoding {e:?}")),
    };
    let r = util::Bytes { d, big };
    let cut = || "ELF header cut short".to_owned();
    let to = |v: u64| usize::try_from(v).map_err(|_| "ELF offset out of range".to_owned());
    let (phoff, shoff, ehsize, phentsize, phnum, shentsize, mut shnum, mut shstrndx) = if class64 {
        (
            r.u64(0x20).ok_or_else(cut)?,
            r.u64(0x28).ok_or_else(cut)?,
            r.u16(0x34).ok_or_else(cut)?,
            r.u16(0x36).ok_or_else(cut)?,
            r.u16(0x38).ok_or_else(cut)?,
            r.u16(0x3a).ok_or_else(cut)?,
            u64::from(r.u16(0x3c).ok_or_else(cut)?),
            u32::from(r.u16(0x3e).ok_or_else(cut)?),
        )
    } else {
        (
            u64::from(r.u32(0x1c).ok_or_else(cut)?),
            u64::from(r.u32(0x20).ok_or_else(cut)?),
            r.u16(0x28).ok_or_else(cut)?,
            r.u16(0x2a).ok_or_else(cut)?,
            r.u16(0x2c).ok_or_else(cut)?,
            r.u16(0x2e).ok_or_else(cut)?,
            u64::from(r.u16(0x30).ok_or_else(cut)?),
            u32::from(r.u16(0x32).ok_or_else(cut)?),
        )
    };
    let header = util::slice(d, 0, u64::from(ehsize), "ELF header")?;
    let program_headers = util::slice(
        d,
        phoff,
        u64::from(phentsize) * u64::from(phnum),
        "ELF program headers",
    )?;
    let shoff = to(shoff)?;
    let shentsize = usize::from(shentsize);
    let min_entsize = if class64 { 64 } else { 40 };
    if shoff == 0 {
        return Ok(Elf {
            header,
            program_headers,
            sections: Vec::new(),
            big,
        });
    }
    if shentsize < min_entsize {
        return Err(format!("ELF section header size {shentsize} too small"));
    }
    let entry = |i: usize| -> Result<Shdr, String> {
        let at = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or_else(|| "ELF section header out of range".to_owned())?;
        util::slice(d, at as u64, shentsize as u64, "ELF section header")?;
        let c = || "ELF section header cut short".to_owned();
        Ok(if class64 {
            Shdr {
                name: r.u32(at).ok_or_else(c)?,
                kind: r.u32(at + 4).ok_or_else(c)?,
                flags: r.u64(at + 8).ok_or_else(c)?,
                addr: r.u64(at + 16).ok_or_else(c)?,
                offset: r.u64(at + 24).ok_or_else(c)?,
                size: r.u64(at + 32).ok_or_else(c)?,
                link: r.u32(at + 40).ok_or_else(c)?,
            }
        } else {
            Shdr {
                name: r.u32(at).ok_or_else(c)?,
                kind: r.u32(at + 4).ok_or_else(c)?,
                flags: u64::from(r.u32(at + 8).ok_or_else(c)?),
                addr: u64::from(r.u32(at + 12).ok_or_else(c)?),
                offset: u64::from(r.u32(at + 16).ok_or_else(c)?),
                size: u64::from(r.u32(at + 20).ok_or_else(c)?),
                link: r.u32(at + 24).ok_or_else(c)?,
            }
        })
    };
    let first = entry(0)?;
    if shnum == 0 {
        shnum = first.size;
    }
    if shstrndx == 0xffff {
        shstrndx = first.link;
    }
    let shnum = to(shnum)?;
    if shnum > 65_536 {
        return Err(format!("ELF has {shnum} sections"));
    }
    let headers: Vec<_> = (0..shnum).map(entry).collect::<Result<_, _>>()?;
    let bytes = |h: &Shdr| -> Result<&[u8], String> {
        if h.kind == SHT_NOBITS {
            Ok(&[])
        } else {
            util::slice(d, h.offset, h.size, "ELF section")
        }
    };
    let names = match headers.get(shstrndx as usize) {
        Some(h) => bytes(h)?,
        None => &[],
    };
    let mut sections = Vec::with_capacity(shnum);
    for (i, h) in headers.iter().enumerate() {
        let name = names
            .get(h.name as usize..)
            .map(util::cstr)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                if i == 0 {
                    "(null)".to_owned()
                } else {
                    format!("(section {i})")
                }
            });
        sections.push(Section {
            name,
            kind: h.kind,
            flags: h.flags,
            addr: h.addr,
            data: bytes(h)?,
            size: h.size,
        });
    }
    Ok(Elf {
        header,
        program_headers,
        sections,
        big,
    })
}

/// The GNU build-id in a note section, as hex.
fn build_id(elf: &Elf<'_>) -> Option<String> {
    let s = elf.sections.iter().find(|s| s.name == BUILD_ID_SECTION)?;
    let r = util::Bytes {
        d: s.data,
        big: elf.big,
    };
    let mut at = 0usize;
    while at + 12 <= s.data.len() {
        let namesz = r.u32(at)? as usize;
        let descsz = r.u32(at + 4)? as usize;
        let kind = r.u32(at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at + namesz.div_ceil(4) * 4;
        let desc = s.data.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && s.data.get(name_at..name_at + namesz) == Some(b"GNU\0") {
            return Some(util::hex(desc));
        }
        at = desc_at + descsz.div_ceil(4) * 4;
    }
    None
}

fn keyed<'e, 'd>(elf: &'e Elf<'d>) -> Vec<(String, &'e Section<'d>)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    elf.sections
        .iter()
        .map(|s| {
            let n = seen.entry(s.name.as_str()).or_insert(0);
            *n += 1;
            let key = if *n == 1 {
                s.name.clone()
            } else {
                format!("{} (#{n})", s.name)
            };
            (key, s)
        })
        .collect()
}

/// The strings of a string section, one a line (non-printable bytes escaped).
fn strings(d: &[u8]) -> String {
    let mut out = String::new();
    for s in d.split(|&c| c == 0).filter(|s| !s.is_empty()) {
        for &c in s {
            if (0x20..0x7f).contains(&c) {
                out.push(c as char);
            } else {
                out.push_str(&format!("\\x{c:02x}"));
            }
        }
        out.push('\n');
    }
    out
}

pub(super) fn compare(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &[u8],
    b: &[u8],
) -> Result<Vec<DriftKind>, String> {
    let ea = read(a).map_err(|e| format!("a: {e}"))?;
    let eb = read(b).map_err(|e| format!("b: {e}"))?;
    hints::roots_and_hosts(ctx, label, a, b);
    let mut differing: Vec<String> = Vec::new();
    let mut details: Vec<(String, &Section<'_>, &Section<'_>)> = Vec::new();
    if ea.header != eb.header {
        differing.push("(ELF header)".to_owned());
    }
    if ea.program_headers != eb.program_headers {
        differing.push("(program headers)".to_owned());
    }
    let (ka, kb) = (keyed(&ea), keyed(&eb));
    let ib: HashMap<&str, &Section<'_>> = kb.iter().map(|(k, s)| (k.as_str(), *s)).collect();
    for (k, sa) in &ka {
        match ib.get(k.as_str()) {
            None => differing.push(format!("{k} (only in a)")),
            Some(sb) => {
                if sa.data != sb.data || sa.size != sb.size {
                    differing.push(k.clone());
                    // No bytes to show for a build-id (its entry says it) or a NOBITS
                    // section (its size is all there is).
                    if k != BUILD_ID_SECTION && sa.kind != SHT_NOBITS && sb.kind != SHT_NOBITS {
                        details.push((k.clone(), sa, sb));
                    }
                } else if sa.kind != sb.kind || sa.flags != sb.flags || sa.addr != sb.addr {
                    differing.push(format!("{k} (header)"));
                }
            }
        }
    }
    for (k, _) in &kb {
        if !ka.iter().any(|(x, _)| x == k) {
            differing.push(format!("{k} (only in b)"));
        }
    }
    let (ida, idb) = (build_id(&ea), build_id(&eb));
    let mut out = Vec::new();
    match (ida, idb) {
        (Some(ia), Some(ib)) if ia != ib => {
            let other_sections = differing
                .iter()
                .filter(|s| *s != BUILD_ID_SECTION)
                .cloned()
                .collect();
            out.push(DriftKind::ElfBuildId {
                a: ia,
                b: ib,
                other_sections,
            });
        }
        _ => {
            if !differing.is_empty() {
                out.push(DriftKind::ElfSections {
                    sections: differing.clone(),
                });
            }
        }
    }
    let total = details.len();
    for (name, sa, sb) in details.into_iter().take(MAX_SECTION_DETAILS) {
        let at = format!("{label}[{name}]");
        let detail = if sa.flags & SHF_STRINGS != 0 || name == ".comment" {
            content::text(ctx, &at, &strings(sa.data), &strings(sb.data))
        } else {
            content::binary(ctx, &at, sa.data, sb.data, true)
        };
        out.push(DriftKind::ElfSection {
            name,
            detail: Box::new(detail),
        });
    }
    if total > MAX_SECTION_DETAILS {
        out.push(DriftKind::Omitted {
            count: total - MAX_SECTION_DETAILS,
            what: "more differing sections (named above)".to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::CompareOptions;
    use super::*;

    /// A minimal 64-bit little-endian ELF: null section, `.note.gnu.build-id`, `.rodata`,
    /// `.shstrtab`.
    pub(in super::super) fn elf(build_id: &[u8], rodata: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.note.gnu.build-id\0.rodata\0.shstrtab\0";
        let mut note = Vec::new();
        for v in [4u32, build_id.len() as u32, NT_GNU_BUILD_ID] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"GNU\0");
        note.extend_from_slice(build_id);
        while note.len() % 4 != 0 {
            note.push(0);
        }
        let mut d = vec![0u8; 64];
        let place = |d: &mut Vec<u8>, s: &[u8]| -> (u64, u64) {
            let at = d.len() as u64;
            d.extend_from_slice(s);
            (at, s.len() as u64)
        };
        let n = place(&mut d, &note);
        let r = place(&mut d, rodata);
        let s = place(&mut d, shstrtab);
        while d.len() % 8 != 0 {
            d.push(0);
        }
        let shoff = d.len() as u64;
        let sh = |name: u32, kind: u32, flags: u64, (off, size): (u64, u64)| {
            let mut e = Vec::new();
            e.extend_from_slice(&name.to_le_bytes());
            e.extend_from_slice(&kind.to_le_bytes());
            e.extend_from_slice(&flags.to_le_bytes());
            e.extend_from_slice(&0u64.to_le_bytes());
            e.extend_from_slice(&off.to_le_bytes());
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&[0u8; 24]);
            e
        };
        let headers = [
            sh(0, 0, 0, (0, 0)),
            sh(1, 7, 2, n),
            sh(20, 1, 2, r),
            sh(28, 3, 0, s),
        ]
        .concat();
        d.extend_from_slice(&headers);
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[6] = 1;
        d[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        d[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
        d[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        d[0x3c..0x3e].copy_from_slice(&4u16.to_le_bytes());
        d[0x3e..0x40].copy_from_slice(&3u16.to_le_bytes());
        d
    }

    #[test]
    fn build_id_only() {
        let a = elf(&[1, 2, 3, 4], b"same data");
        let b = elf(&[9, 8, 7, 6], b"same data");
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let kinds = compare(&mut ctx, "p", &a, &b).unwrap();
        assert_eq!(
            kinds,
            [DriftKind::ElfBuildId {
                a: "01020304".to_owned(),
                b: "09080706".to_owned(),
                other_sections: vec![]
            }]
        );
        assert!(ctx.hints.is_empty(), "{:?}", ctx.hints);
    }

    #[test]
    fn other_sections_named_with_details() {
        let a = elf(&[1, 2, 3, 4], b"built Nov 28 2026 10:00:00\0");
        let b = elf(&[9, 8, 7, 6], b"built Nov 29 2026 11:00:00\0");
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let kinds = compare(&mut ctx, "p", &a, &b).unwrap();
        let DriftKind::ElfBuildId { other_sections, .. } = &kinds[0] else {
            panic!("{kinds:?}")
        };
        assert_eq!(other_sections, &[".rodata"]);
        let DriftKind::ElfSection { name, detail } = &kinds[1] else {
            panic!("{kinds:?}")
        };
        assert_eq!(name, ".rodata");
        assert!(
            matches!(**detail, DriftKind::Binary { offset: 11, .. }),
            "{detail:?}"
        );
        assert_eq!(
            ctx.hints[0].variation,
            super::super::Variation::Time,
            "{:?}",
            ctx.hints
        );
        assert_eq!(ctx.hints[0].path, "p[.rodata]");
    }

    #[test]
    fn corrupt_elf() {
        let a = elf(&[1, 2, 3, 4], b"x");
        assert!(read(&a[..40]).is_err());
        let mut b = a.clone();
        // A section header table past the end.
        b[0x28..0x30].copy_from_slice(&0xffff_0000u64.to_le_bytes());
        assert!(read(&b).unwrap_err().contains("past the end"));
    }
}
