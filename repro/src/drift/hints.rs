//! Hints: recognising in the differing bytes the variation they likely come from.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use memchr::memmem;
use regex::Regex;
use similar::{DiffTag, TextDiff};

use super::{Ctx, Variation, util};

/// Text scanned per side and call.
const SCAN_BYTES: usize = 256 << 10;
/// Differing regions of binary data looked at.
const MAX_REGIONS: usize = 32;
/// Bytes of printable text taken on each side of a differing region.
const STRING_REACH: usize = 160;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("hint pattern {pattern:?}: {e}"))
}

const MONTH: &str = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const HMS: &str = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]";
const YEAR: &str = "(?:19[7-9][0-9]|20[0-9][0-9])";

static ISO_DATE: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"\b{YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?)?"
    ))
});
/// `__DATE__` (`Nov 28 2026`, `Nov  8 2026`), with `__TIME__` after it or not.
static C_DATE: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"\b{MONTH} (?: [1-9]|[12][0-9]|3[01]) {YEAR}(?: {HMS})?\b"
    ))
});
/// `date`'s and ctime's `Sat Nov 28 12:34:56 UTC 2026`.
static CTIME: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {MONTH} (?: [1-9]|[12][0-9]|3[01]) {HMS}(?: [A-Z]{{3,5}})? {YEAR}\b"
    ))
});
/// RFC 2822's `28 Nov 2026`.
static DAY_MONTH: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"\b(?:[1-9]|[12][0-9]|3[01]) {MONTH}[a-z]* {YEAR}\b"
    ))
});
static TIME: LazyLock<Regex> = LazyLock::new(|| re(&format!(r"\b{HMS}\b")));
static ZONE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?(?:\.[0-9]+)? ?(Z|[+-](?:0[0-9]|1[0-4]):?[0-5][0-9]|UTC|GMT|CES?T|EES?T|WES?T|BST|IST|JST|KST|MSK|[ECMP][SD]T|AK[SD]T|HST|AE[SD]T|NZ[SD]T)\b",
    )
});
static EPOCH: LazyLock<Regex> = LazyLock::new(|| re(r"\b1[0-9]{9}(?:[0-9]{3})?\b"));
static PID: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\bpid[ =:#]{0,3}([0-9]{1,7})\b|/proc/([0-9]{1,7})\b"));
static TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Za-z0-9]{8,}\b"));
static LOCALE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b[a-z]{2,3}_[A-Z]{2}(?:\.[A-Za-z0-9-]+)?(?:@[a-z]+)?\b|\bC\.UTF-8\b|\bPOSIX\b")
});
static DECIMAL: LazyLock<Regex> = LazyLock::new(|| re(r"([0-9])[.,]([0-9])"));

/// Permission bits that differ.
pub(super) fn mode(ctx: &mut Ctx<'_>, label: &str, a: u32, b: u32) {
    let why = if (a ^ b) & !0o077 == 0 {
        "group/other bits only: the umask"
    } else {
        "the umask, or a chmod that depends on the environment"
    };
    ctx.hint(
        label,
        Variation::Umask,
        format!("mode {a:04o} in a, {b:04o} in b ({why})"),
    );
}

/// The build roots and hostnames anywhere in two differing contents.
pub(super) fn roots_and_hosts(ctx: &mut Ctx<'_>, label: &str, a: &[u8], b: &[u8]) {
    let (ra, rb) = (ctx.opts.a_root_hint, ctx.opts.b_root_hint);
    if ra != rb {
        let mut found = Vec::new();
        if !ra.is_empty() && memmem::find(a, ra.as_bytes()).is_some() {
            found.push(format!("`{ra}` in a"));
        }
        if !rb.is_empty() && memmem::find(b, rb.as_bytes()).is_some() {
            found.push(format!("`{rb}` in b"));
        }
        if !found.is_empty() {
            ctx.hint(
                label,
                Variation::BuildPath,
                format!("an absolute build path is embedded: {}", found.join(", ")),
            );
        }
    }
    let mut found = Vec::new();
    for &h in ctx.opts.hostnames {
        if h.len() < 3 {
            continue;
        }
        let count = |d: &[u8]| memmem::find_iter(d, h.as_bytes()).count();
        let (na, nb) = (count(a), count(b));
        if na != nb {
            let side = match (na, nb) {
                (_, 0) => "in a",
                (0, _) => "in b",
                _ => "a different number of times",
            };
            found.push(format!("`{h}` {side}"));
        }
    }
    if !found.is_empty() {
        ctx.hint(
            label,
            Variation::Hostname,
            format!("a hostname is embedded: {}", found.join(", ")),
        );
    }
}

fn clip_bytes(s: &str) -> &str {
    if s.len() <= SCAN_BYTES {
        return s;
    }
    let mut end = SCAN_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Matches (whole, or group 1 where the pattern has one) of `re` in `a` and not in `b`,
/// and in `b` and not in `a`; `None` when the two agree.
fn differing(re: &Regex, a: &str, b: &str) -> Option<(Vec<String>, Vec<String>)> {
    let collect = |s: &str| -> Vec<String> {
        let mut seen = BTreeSet::new();
        re.captures_iter(s)
            .filter_map(|c| {
                c.iter()
                    .skip(1)
                    .flatten()
                    .next()
                    .or_else(|| c.get(0))
                    .map(|m| m.as_str().to_owned())
            })
            .filter(|m| seen.insert(m.clone()))
            .collect()
    };
    let (ma, mb) = (collect(a), collect(b));
    let only_a: Vec<String> = ma.iter().filter(|m| !mb.contains(m)).cloned().collect();
    let only_b: Vec<String> = mb.iter().filter(|m| !ma.contains(m)).cloned().collect();
    (!only_a.is_empty() || !only_b.is_empty()).then_some((only_a, only_b))
}

fn examples(v: &[String]) -> String {
    if v.is_empty() {
        return "nothing".to_owned();
    }
    let mut s = v
        .iter()
        .take(2)
        .map(|m| format!("`{}`", util::clip(m, 60)))
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > 2 {
        s.push_str(&format!(" (+{})", v.len() - 2));
    }
    s
}

fn sides(what: &str, (a, b): &(Vec<String>, Vec<String>)) -> String {
    format!("{what}: {} in a, {} in b", examples(a), examples(b))
}

/// Whether a token looks like a hash, a random name or a seed.
fn random_looking(t: &str) -> bool {
    let len = t.len();
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    let upper = t.bytes().filter(u8::is_ascii_uppercase).count();
    let lower = t.bytes().filter(u8::is_ascii_lowercase).count();
    if len < 8 || digits == 0 || digits == len {
        return false;
    }
    let distinct = t.bytes().collect::<BTreeSet<_>>().len();
    let hex = t.bytes().all(|c| c.is_ascii_hexdigit()) && (upper == 0 || lower == 0);
    (hex || (upper > 0 && lower > 0)) && distinct * 2 >= len.min(32)
}

/// Looks for dates, times, timestamps, zones, process ids, random tokens and locale names
/// that differ between two texts (changed lines, strings around differing bytes, names).
pub(super) fn scan_pair(ctx: &mut Ctx<'_>, label: &str, a: &str, b: &str) {
    let (mut a, mut b) = (clip_bytes(a).to_owned(), clip_bytes(b).to_owned());
    // The build roots are hinted on their own: their bytes are no date or random name.
    for root in [ctx.opts.a_root_hint, ctx.opts.b_root_hint] {
        if root.len() > 1 {
            a = a.replace(root, "<root>");
            b = b.replace(root, "<root>");
        }
    }
    let mut dated = false;
    for (re, what) in [
        (&*C_DATE, "an embedded date (like `__DATE__ __TIME__`)"),
        (&*CTIME, "an embedded date and time"),
        (&*ISO_DATE, "an embedded date"),
        (&*DAY_MONTH, "an embedded date"),
    ] {
        if let Some(d) = differing(re, &a, &b) {
            ctx.hint(label, Variation::Time, sides(what, &d));
            dated = true;
        }
    }
    if !dated {
        if let Some(d) = differing(&TIME, &a, &b) {
            ctx.hint(label, Variation::Time, sides("an embedded time of day", &d));
        }
    }
    if let Some(d) = differing(&ZONE, &a, &b) {
        ctx.hint(label, Variation::Timezone, sides("a timezone", &d));
    }
    let near = |s: &str| -> String {
        let near: Vec<&str> = EPOCH
            .find_iter(s)
            .map(|m| m.as_str())
            .filter(|m| {
                let v: i64 = m.parse().unwrap_or(0);
                let secs = if m.len() == 13 { v / 1000 } else { v };
                ctx.near_run_time(secs)
            })
            .collect();
        near.join("\n")
    };
    let (ea, eb) = (near(&a), near(&b));
    if let Some(d) = differing(&EPOCH, &ea, &eb) {
        let secs = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|m| {
                    let n: i64 = m.parse().unwrap_or(0);
                    util::fmt_unix(if m.len() == 13 { n / 1000 } else { n })
                })
                .collect()
        };
        ctx.hint(
            label,
            Variation::Time,
            sides(
                "a Unix timestamp near the time of a run",
                &(secs(&d.0), secs(&d.1)),
            ),
        );
    }
    if let Some(d) = differing(&PID, &a, &b) {
        ctx.hint(
            label,
            Variation::Random,
            sides("a process id (pids differ from run to run)", &d),
        );
    }
    let tokens = |s: &str| -> String {
        TOKEN
            .find_iter(s)
            .map(|m| m.as_str())
            .filter(|t| random_looking(t))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (ta, tb) = (tokens(&a), tokens(&b));
    if let Some(d) = differing(&TOKEN, &ta, &tb) {
        ctx.hint(
            label,
            Variation::Random,
            sides(
                "random-looking text (a seed, a temporary name, or a hash of something else that differs)",
                &d,
            ),
        );
    }
    if let Some(d) = differing(&LOCALE, &a, &b) {
        ctx.hint(label, Variation::Locale, sides("a locale name", &d));
    }
}

/// Changed lines side by side: numbers written for another locale, times a whole number
/// of hours apart.
pub(super) fn line_pairs(ctx: &mut Ctx<'_>, label: &str, diff: &TextDiff<'_, '_, '_, str>) {
    let (old, new) = (diff.old_slices(), diff.new_slices());
    let mut pairs = 0;
    for op in diff.ops() {
        let (tag, ra, rb) = op.as_tag_tuple();
        if tag != DiffTag::Replace {
            continue;
        }
        for (i, j) in ra.zip(rb) {
            pairs += 1;
            if pairs > 200 {
                return;
            }
            let (la, lb) = (old[i].trim_end(), new[j].trim_end());
            if DECIMAL.replace_all(la, "$1·$2") == DECIMAL.replace_all(lb, "$1·$2") {
                ctx.hint(
                    label,
                    Variation::Locale,
                    format!(
                        "numbers written for another locale: `{}` in a, `{}` in b",
                        util::clip(la, 60),
                        util::clip(lb, 60)
                    ),
                );
            }
            let times = |l: &str| -> Vec<(u32, u32)> {
                TIME.find_iter(l)
                    .map(|m| {
                        let s = m.as_str();
                        let h: u32 = s[..2].parse().unwrap_or(0);
                        let rest: u32 = s[3..5].parse::<u32>().unwrap_or(0) * 60
                            + s[6..8].parse::<u32>().unwrap_or(0);
                        (h, rest)
                    })
                    .collect()
            };
            let (ta, tb) = (times(la), times(lb));
            if !ta.is_empty()
                && ta.len() == tb.len()
                && ta.iter().zip(&tb).any(|(x, y)| x.0 != y.0)
                && ta.iter().zip(&tb).all(|(x, y)| x.1 == y.1)
            {
                ctx.hint(
                    label,
                    Variation::Timezone,
                    format!(
                        "times a whole number of hours apart (local time in another timezone): `{}` in a, `{}` in b",
                        util::clip(la, 60),
                        util::clip(lb, 60)
                    ),
                );
            }
        }
    }
}

/// The same lines in another order.
pub(super) fn reordered_lines(ctx: &mut Ctx<'_>, label: &str, a: &str, b: &str) {
    if a.len() != b.len() || a.len() > 4 << 20 {
        return;
    }
    let (mut la, mut lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    la.sort_unstable();
    lb.sort_unstable();
    if la == lb {
        ctx.hint(
            label,
            Variation::Order,
            "the same lines in another order (a directory's or a hash map's order, or sorting under another locale)"
                .to_owned(),
        );
    }
}

/// Differing runs of bytes `[start, end)` over the common length, runs fewer than 8 equal
/// bytes apart merged; a length difference is a last run.
fn regions(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    let n = a.len().min(b.len());
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut i = match util::first_difference(&a[..n], &b[..n]) {
        Some(i) => i,
        None => n,
    };
    while i < n && out.len() < MAX_REGIONS {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        let mut j = end;
        while j < n && j < end + 8 {
            if a[j] != b[j] {
                end = j + 1;
            }
            j += 1;
        }
        out.push((start, end));
        i = end;
    }
    if a.len() != b.len() && out.len() < MAX_REGIONS {
        out.push((n, a.len().max(b.len())));
    }
    out
}

/// The printable text around `[start, end)` of `d`, in runs of 4 or more characters.
fn strings_around(d: &[u8], start: usize, end: usize) -> Vec<String> {
    let start = start.min(d.len());
    let end = end.min(d.len());
    let is_text = |c: u8| (0x20..0x7f).contains(&c) || c == b'\t';
    let mut lo = start;
    while lo > 0 && start - lo < STRING_REACH && is_text(d[lo - 1]) {
        lo -= 1;
    }
    let mut hi = end;
    while hi < d.len() && hi - end < STRING_REACH && is_text(d[hi]) {
        hi += 1;
    }
    d[lo..hi]
        .split(|&c| !is_text(c))
        .filter(|s| s.len() >= 4)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Hints from the regions where two byte strings differ: the text around them, Unix
/// times stored as 32-bit integers, random-looking bytes.
pub(super) fn binary_regions(ctx: &mut Ctx<'_>, label: &str, a: &[u8], b: &[u8]) {
    let n = a.len().min(b.len());
    let (mut ta, mut tb) = (String::new(), String::new());
    let mut stamped = false;
    let mut random = false;
    for (start, end) in regions(a, b) {
        for s in strings_around(a, start, end) {
            ta.push_str(&s);
            ta.push('\n');
        }
        for s in strings_around(b, start, end) {
            tb.push_str(&s);
            tb.push('\n');
        }
        if start >= n {
            continue;
        }
        if !stamped {
            for o in start.saturating_sub(3)..end.min(n.saturating_sub(3)) {
                let stamp = |big: bool| -> Option<(i64, i64)> {
                    let (x, y) = (
                        util::Bytes { d: a, big }.u32(o)?,
                        util::Bytes { d: b, big }.u32(o)?,
                    );
                    let (x, y) = (i64::from(x), i64::from(y));
                    (x != y && ctx.near_run_time(x) && ctx.near_run_time(y)).then_some((x, y))
                };
                if let Some(((x, y), order)) = stamp(false)
                    .map(|p| (p, "little"))
                    .or_else(|| stamp(true).map(|p| (p, "big")))
                {
                    ctx.hint(
                        label,
                        Variation::Time,
                        format!(
                            "a 32-bit {order}-endian Unix time at offset {o:#x}: {} in a, {} in b",
                            util::fmt_unix(x),
                            util::fmt_unix(y)
                        ),
                    );
                    stamped = true;
                    break;
                }
            }
        }
        let len = end - start;
        if !random && (8..=64).contains(&len) {
            let (ra, rb) = (&a[start..end], &b[start..end]);
            let differ = ra.iter().zip(rb).filter(|(x, y)| x != y).count();
            let printable = |r: &[u8]| r.iter().filter(|c| (0x20..0x7f).contains(*c)).count();
            let distinct = |r: &[u8]| r.iter().collect::<BTreeSet<_>>().len();
            if differ * 4 >= len * 3
                && printable(ra) * 2 < len
                && printable(rb) * 2 < len
                && distinct(ra) * 2 >= len
                && distinct(rb) * 2 >= len
            {
                ctx.hint(
                    label,
                    Variation::Random,
                    format!(
                        "{len} random-looking bytes at offset {start:#x} (a random seed, or a hash of something else that differs)"
                    ),
                );
                random = true;
            }
        }
    }
    if !ta.is_empty() || !tb.is_empty() {
        scan_pair(ctx, label, &ta, &tb);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CompareOptions, Ctx};
    use super::*;

    fn run(opts: &CompareOptions<'_>, f: impl FnOnce(&mut Ctx<'_>)) -> Vec<(Variation, String)> {
        let mut ctx = Ctx::new(opts);
        f(&mut ctx);
        ctx.hints
            .into_iter()
            .map(|h| (h.variation, h.message))
            .collect()
    }

    fn variations(h: &[(Variation, String)]) -> Vec<Variation> {
        h.iter().map(|(v, _)| *v).collect()
    }

    #[test]
    fn dates_in_text() {
        let o = CompareOptions::default();
        let h = run(&o, |c| {
            scan_pair(
                c,
                "f",
                "built Nov 28 2026 12:34:56\n",
                "built Nov 29 2026 01:02:03\n",
            )
        });
        assert_eq!(variations(&h), [Variation::Time], "{h:?}");
        assert!(h[0].1.contains("`Nov 28 2026 12:34:56` in a"), "{h:?}");
        let h = run(&o, |c| {
            scan_pair(c, "f", "on 2026-11-28\n", "on 2026-11-29\n")
        });
        assert_eq!(variations(&h), [Variation::Time], "{h:?}");
        let h = run(&o, |c| scan_pair(c, "f", "Nov  8 2026", "Nov  8 2026"));
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn timestamps_near_the_runs() {
        let times = [1_795_825_496];
        let o = CompareOptions {
            run_times: &times,
            ..CompareOptions::default()
        };
        let h = run(&o, |c| scan_pair(c, "f", "t=1795825496", "t=1795825500"));
        assert_eq!(variations(&h), [Variation::Time], "{h:?}");
        // Far from the runs: a number, not a time.
        let h = run(&o, |c| scan_pair(c, "f", "t=1000000000", "t=1000000007"));
        assert!(h.is_empty(), "{h:?}");
        let mut a = vec![0u8; 32];
        let mut b = a.clone();
        a[12..16].copy_from_slice(&1_795_825_496u32.to_le_bytes());
        b[12..16].copy_from_slice(&1_795_825_561u32.to_le_bytes());
        let h = run(&o, |c| binary_regions(c, "f", &a, &b));
        assert_eq!(variations(&h), [Variation::Time], "{h:?}");
        assert!(
            h[0].1.contains("little-endian Unix time at offset 0xc"),
            "{h:?}"
        );
    }

    #[test]
    fn roots_hosts_and_paths() {
        let hosts = ["builder-a", "builder-b"];
        let o = CompareOptions {
            a_root_hint: "/work/a",
            b_root_hint: "/work/b",
            hostnames: &hosts,
            ..CompareOptions::default()
        };
        let h = run(&o, |c| {
            roots_and_hosts(
                c,
                "f",
                b"src=/work/a/x on builder-a",
                b"src=/work/b/x on builder-b",
            );
        });
        assert_eq!(
            variations(&h),
            [Variation::BuildPath, Variation::Hostname],
            "{h:?}"
        );
        // The roots are no random tokens even when they look like one.
        let o = CompareOptions {
            a_root_hint: "/tmp/.tmpAb3dE9xQ",
            b_root_hint: "/tmp/.tmpZz8kP2wR",
            ..CompareOptions::default()
        };
        let h = run(&o, |c| {
            scan_pair(c, "f", "/tmp/.tmpAb3dE9xQ/x", "/tmp/.tmpZz8kP2wR/x")
        });
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn random_pids_locales_zones() {
        let o = CompareOptions::default();
        let h = run(&o, |c| {
            scan_pair(c, "f", "seed 9f86d081884c7d65\n", "seed 2c26b46b68ffc68f\n")
        });
        assert_eq!(variations(&h), [Variation::Random], "{h:?}");
        let h = run(&o, |c| {
            scan_pair(c, "f", "worker pid=4242\n", "worker pid=5151\n")
        });
        assert_eq!(variations(&h), [Variation::Random], "{h:?}");
        let h = run(&o, |c| {
            scan_pair(c, "f", "LANG=en_US.UTF-8", "LANG=de_DE.UTF-8")
        });
        assert_eq!(variations(&h), [Variation::Locale], "{h:?}");
        let h = run(&o, |c| {
            scan_pair(c, "f", "at 10:00 +0000", "at 10:00 +0100")
        });
        assert_eq!(variations(&h), [Variation::Timezone], "{h:?}");
        // A word is not random.
        let h = run(&o, |c| {
            scan_pair(c, "f", "compiling something", "compiling otherthing")
        });
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn line_pair_hints() {
        let o = CompareOptions::default();
        let h = run(&o, |c| {
            let d = TextDiff::from_lines("x\ntook 1.5 s\ny\n", "x\ntook 1,5 s\ny\n");
            line_pairs(c, "f", &d);
        });
        assert_eq!(variations(&h), [Variation::Locale], "{h:?}");
        let h = run(&o, |c| {
            let d = TextDiff::from_lines("at 12:34:56\n", "at 13:34:56\n");
            line_pairs(c, "f", &d);
        });
        assert_eq!(variations(&h), [Variation::Timezone], "{h:?}");
        let h = run(&o, |c| reordered_lines(c, "f", "a\nb\nc\n", "c\na\nb\n"));
        assert_eq!(variations(&h), [Variation::Order], "{h:?}");
    }

    #[test]
    fn random_bytes_and_modes() {
        let o = CompareOptions::default();
        let a: Vec<u8> = (0..64u8).collect();
        let mut b = a.clone();
        for (i, x) in b[20..36].iter_mut().enumerate() {
            *x = 0x80 + (i as u8) * 7;
        }
        let h = run(&o, |c| binary_regions(c, "f", &a, &b));
        assert_eq!(variations(&h), [Variation::Random], "{h:?}");
        let h = run(&o, |c| mode(c, "f", 0o644, 0o664));
        assert!(
            h[0].1
                .contains("0644 in a, 0664 in b (group/other bits only"),
            "{h:?}"
        );
    }

    #[test]
    fn region_merging() {
        let a = [0u8; 40];
        let mut b = a;
        b[3] = 1;
        b[6] = 1;
        b[30] = 1;
        assert_eq!(regions(&a, &b), [(3, 7), (30, 31)]);
        assert_eq!(regions(&a, &a[..35]), [(35, 40)]);
    }
}
