//! Comparing two byte strings: by format (archives, ELF), as text, or as bytes.

use std::fmt::Write as _;
use std::time::Duration;

use similar::{Algorithm, ChangeTag, TextDiff};

use super::{Ctx, DriftKind, Format, MAX_ARCHIVE_DEPTH, archive, elf, gzip, hints, util, zip};
use crate::formats;

/// How long the line diff of one file may search for a minimal diff before settling for
/// a larger one.
const DIFF_DEADLINE: Duration = Duration::from_secs(5);
/// Changed text scanned for hints, per side.
const HINT_TEXT_BYTES: usize = 256 << 10;
/// Texts larger than this are compared as bytes (a line diff of them would cost too much).
pub(super) const MAX_TEXT_DIFF_BYTES: usize = 16 << 20;

/// The format `d` starts like.
pub(super) fn detect(d: &[u8]) -> Option<Format> {
    if d.starts_with(b"\x7fELF") {
        Some(Format::Elf)
    } else if d.starts_with(&formats::gzip::MAGIC) {
        Some(Format::Gzip)
    } else if formats::zip::sniff(d) {
        Some(Format::Zip)
    } else if formats::ar::sniff(d) {
        Some(Format::Ar)
    } else if archive::looks_like_tar(d) {
        Some(Format::Tar)
    } else {
        None
    }
}

/// How `a` and `b` differ (nothing when equal). `label` names them in hints; `depth` is
/// the number of archives they are inside.
pub(super) fn compare_bytes(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &[u8],
    b: &[u8],
    depth: usize,
) -> Vec<DriftKind> {
    if a == b {
        return Vec::new();
    }
    let format = detect(a);
    if let Some(format) = format.filter(|&f| detect(b) == Some(f)) {
        if format == Format::Elf || depth < MAX_ARCHIVE_DEPTH {
            let res = match format {
                Format::Tar => archive::compare_tar(ctx, label, a, b, depth),
                Format::Ar => archive::compare_ar(ctx, label, a, b, depth),
                Format::Gzip => gzip::compare(ctx, label, a, b, depth),
                Format::Zip => zip::compare(ctx, label, a, b, depth),
                Format::Elf => elf::compare(ctx, label, a, b),
            };
            match res {
                Ok(kinds) if !kinds.is_empty() => return kinds,
                // Equal structure, different bytes (padding, unread fields): the bytes say.
                Ok(_) => {}
                Err(reason) => {
                    let mut out = vec![DriftKind::Unreadable { format, reason }];
                    out.extend(leaf(ctx, label, a, b));
                    return out;
                }
            }
        }
    }
    leaf(ctx, label, a, b)
}

/// Content that is not opened further: text or bytes.
pub(super) fn leaf(ctx: &mut Ctx<'_>, label: &str, a: &[u8], b: &[u8]) -> Vec<DriftKind> {
    hints::roots_and_hosts(ctx, label, a, b);
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(ta), Ok(tb))
            if !a.contains(&0)
                && !b.contains(&0)
                && a.len().max(b.len()) <= MAX_TEXT_DIFF_BYTES =>
        {
            vec![text(ctx, label, ta, tb)]
        }
        _ => vec![binary(ctx, label, a, b, true)],
    }
}

/// A bounded unified diff of two texts, with hints from the changed lines.
pub(super) fn text(ctx: &mut Ctx<'_>, label: &str, a: &str, b: &str) -> DriftKind {
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .timeout(DIFF_DEADLINE)
        .diff_lines(a, b);
    let limit = ctx.opts.max_diff_lines.min(ctx.lines_left);
    let mut lines: Vec<String> = vec![format!("--- a/{label}"), format!("+++ b/{label}")];
    let mut total = lines.len();
    let mut keep = |lines: &mut Vec<String>, line: String| {
        total += 1;
        if lines.len() < limit {
            lines.push(line);
        }
    };
    let (mut removed, mut added) = (String::new(), String::new());
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        keep(&mut lines, hunk.header().to_string());
        for change in hunk.iter_changes() {
            let value = change.value().strip_suffix('\n').unwrap_or(change.value());
            let sign = match change.tag() {
                ChangeTag::Equal => ' ',
                ChangeTag::Delete => {
                    if removed.len() < HINT_TEXT_BYTES {
                        removed.push_str(value);
                        removed.push('\n');
                    }
                    '-'
                }
                ChangeTag::Insert => {
                    if added.len() < HINT_TEXT_BYTES {
                        added.push_str(value);
                        added.push('\n');
                    }
                    '+'
                }
            };
            keep(&mut lines, format!("{sign}{value}"));
            if change.missing_newline() {
                keep(&mut lines, "\\ No newline at end of file".to_owned());
            }
        }
    }
    let kept = lines.len().min(limit);
    ctx.lines_left -= kept;
    let mut shown = String::new();
    for l in &lines[..kept] {
        let _ = writeln!(shown, "{l}");
    }
    hints::scan_pair(ctx, label, &removed, &added);
    hints::line_pairs(ctx, label, &diff);
    hints::reordered_lines(ctx, label, a, b);
    DriftKind::Text {
        diff: shown,
        truncated: kept < total,
        lines: total,
    }
}

/// The first differing offset, with a dump around it; hints from the differing regions
/// (`region_hints: false` for bytes whose difference is explained already).
pub(super) fn binary(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &[u8],
    b: &[u8],
    region_hints: bool,
) -> DriftKind {
    let offset = util::first_difference(a, b).unwrap_or(0);
    if region_hints {
        hints::binary_regions(ctx, label, a, b);
    }
    DriftKind::Binary {
        offset: offset as u64,
        a_context: util::context(a, offset),
        b_context: util::context(b, offset),
        a_size: a.len() as u64,
        b_size: b.len() as u64,
    }
}
