//! The report as text for a person.

use std::fmt::Write as _;

use super::{DriftKind, DriftReport, EntryType, Field, Format, Side};

fn pad(out: &mut String, indent: usize, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{:indent$}{line}", "");
    }
}

fn entry(t: EntryType) -> &'static str {
    match t {
        EntryType::File => "file",
        EntryType::Dir => "directory",
        EntryType::Symlink => "symlink",
        EntryType::Other => "special file",
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Tar => "tar",
        Format::Gzip => "gzip",
        Format::Zip => "zip",
        Format::Ar => "ar",
        Format::Elf => "ELF",
    }
}

pub(super) fn field_name(f: Field) -> &'static str {
    match f {
        Field::Mtime => "mtime",
        Field::Order => "order",
        Field::Mode => "mode",
        Field::Owner => "owner",
        Field::Content => "content",
        Field::Name => "name",
        Field::Os => "os",
        Field::Compression => "compression",
        Field::Header => "header",
        Field::Link => "link",
        Field::Type => "type",
        Field::OnlyInA => "only in a",
        Field::OnlyInB => "only in b",
    }
}

fn kind(out: &mut String, k: &DriftKind, indent: usize) {
    let i = indent;
    match k {
        DriftKind::OnlyIn { side, entry: e } => {
            let side = match side {
                Side::A => "a",
                Side::B => "b",
            };
            pad(out, i, &format!("only in {side} ({})", entry(*e)));
        }
        DriftKind::Type { a, b } => {
            pad(
                out,
                i,
                &format!("type: {} in a, {} in b", entry(*a), entry(*b)),
            );
        }
        DriftKind::Mode { a, b } => pad(out, i, &format!("mode: {a:04o} in a, {b:04o} in b")),
        DriftKind::Symlink { a, b } => {
            pad(out, i, &format!("symlink target: {a:?} in a, {b:?} in b"));
        }
        DriftKind::Text {
            diff,
            truncated,
            lines,
        } => {
            pad(out, i, &format!("text differs ({lines} lines of diff):"));
            pad(out, i + 2, diff);
            if *truncated {
                let shown = diff.lines().count();
                pad(
                    out,
                    i + 2,
                    &format!("… diff cut at {shown} of {lines} lines (the report's bound)"),
                );
            }
        }
        DriftKind::Binary {
            offset,
            a_context,
            b_context,
            a_size,
            b_size,
        } => {
            let sizes = if a_size == b_size {
                format!("both {a_size} bytes")
            } else {
                format!("{a_size} bytes in a, {b_size} in b")
            };
            pad(
                out,
                i,
                &format!("bytes differ from offset {offset:#x} ({offset}); {sizes}"),
            );
            pad(out, i + 2, "a:");
            pad(out, i + 4, a_context);
            pad(out, i + 2, "b:");
            pad(out, i + 4, b_context);
        }
        DriftKind::Archive {
            format,
            member,
            field,
            a,
            b,
            detail,
        } => {
            let f = format_name(*format);
            let head = match (field, member.is_empty()) {
                (Field::Order, _) => format!("{f}: the same members in another order"),
                (_, true) => format!("{f}: {}", field_name(*field)),
                (Field::Content, false) => format!("{f} member `{member}`: content"),
                (Field::OnlyInA | Field::OnlyInB, false) => {
                    format!("{f} member `{member}`: {}", field_name(*field))
                }
                (_, false) => format!("{f} member `{member}`: {} differs", field_name(*field)),
            };
            let vals = match (a, b) {
                (Some(a), Some(b)) if *field == Field::Order => format!(": [{a}] in a, [{b}] in b"),
                (Some(a), Some(b)) => format!(": {a} in a, {b} in b"),
                (Some(a), None) => format!(" ({a})"),
                (None, Some(b)) => format!(" ({b})"),
                (None, None) => String::new(),
            };
            pad(out, i, &format!("{head}{vals}"));
            if let Some(d) = detail {
                kind(out, d, i + 2);
            }
        }
        DriftKind::ElfBuildId {
            a,
            b,
            other_sections,
        } => {
            pad(out, i, &format!("ELF build-id drift: {a} in a, {b} in b"));
            if other_sections.is_empty() {
                pad(
                    out,
                    i + 2,
                    "nothing else differs: the ids were set explicitly (--build-id=0x…) or hashed from inputs the file does not hold",
                );
            } else {
                pad(
                    out,
                    i + 2,
                    &format!(
                        "the build-id is a hash of the rest of the file; these differ too: {}",
                        other_sections.join(", ")
                    ),
                );
            }
        }
        DriftKind::ElfSections { sections } => {
            pad(
                out,
                i,
                &format!("ELF sections differ: {}", sections.join(", ")),
            );
        }
        DriftKind::ElfSection { name, detail } => {
            pad(
                out,
                i,
                &format!("ELF section {name} (offsets within the section):"),
            );
            kind(out, detail, i + 2);
        }
        DriftKind::Unreadable { format, reason } => {
            pad(
                out,
                i,
                &format!(
                    "could not be read as {}: {reason}; compared as bytes",
                    format_name(*format)
                ),
            );
        }
        DriftKind::Omitted { count, what } => pad(out, i, &format!("… {count} {what}")),
    }
}

pub(super) fn render(r: &DriftReport) -> String {
    let mut out = String::new();
    if r.identical {
        out.push_str("no drift: the outputs are identical\n");
    } else {
        let mut paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
        paths.dedup();
        let _ = writeln!(
            out,
            "drift: {} path{} differ{} ({} difference{})",
            paths.len(),
            if paths.len() == 1 { "" } else { "s" },
            if paths.len() == 1 { "s" } else { "" },
            r.files.len(),
            if r.files.len() == 1 { "" } else { "s" },
        );
    }
    let mut i = 0;
    while i < r.files.len() {
        let path = r.files[i].path.as_str();
        let _ = writeln!(out, "\n== {path}");
        // The entries of one path; the content headers an entry shares with the one
        // before it (`gzip member `x.tar`: content`) are not repeated.
        let mut heads: Vec<String> = Vec::new();
        let mut diffoscope = Vec::new();
        while i < r.files.len() && r.files[i].path == path {
            let f = &r.files[i];
            let mut text = String::new();
            kind(&mut text, &f.kind, 2);
            let lines: Vec<&str> = text.lines().collect();
            let n_heads = lines
                .iter()
                .take_while(|l| l.ends_with(": content"))
                .count();
            let shared = lines[..n_heads]
                .iter()
                .zip(&heads)
                .take_while(|(l, h)| **l == h.as_str())
                .count();
            for l in &lines[shared..] {
                let _ = writeln!(out, "{l}");
            }
            heads = lines[..n_heads].iter().map(|l| (*l).to_owned()).collect();
            if let Some(d) = &f.diffoscope {
                diffoscope.push(d);
            }
            i += 1;
        }
        for d in diffoscope {
            pad(&mut out, 2, "diffoscope:");
            pad(&mut out, 4, d);
        }
    }
    if !r.hints.is_empty() {
        let _ = writeln!(out, "\nhints (likely causes: {}):", r.causes().join(", "));
        for h in &r.hints {
            let _ = writeln!(
                out,
                "  [{}] {}: {}",
                h.variation.as_str(),
                h.path,
                h.message
            );
        }
    }
    if let Some(d) = &r.diffoscope {
        let _ = writeln!(out, "\ndiffoscope: {d}");
    }
    out
}
