//! Text for the page: escaping, durations, shares, sizes and times.

/// `s` with the five characters that mean something in HTML (text or a quoted attribute)
/// replaced by their references.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped, with `backquoted` spans set as code when the backquotes pair up (as
/// autopsy suggestions write commands and names).
pub(crate) fn esc_inline_code(s: &str) -> String {
    let parts: Vec<&str> = s.split('`').collect();
    if parts.len() < 3 || parts.len() % 2 == 0 {
        return esc(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(&esc(part));
            out.push_str("</code>");
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// A duration a person reads at a glance: `420ms`, `1.2s`, `14s`, `3m04s`, `1h02m`.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 10_000 {
        // Tenths, rounded; 9_960 ms and above reads as 10s rather than "10.0s".
        let tenths = (ms + 50) / 100;
        if tenths < 100 {
            return format!("{}.{}s", tenths / 10, tenths % 10);
        }
    }
    let s = (ms + 500) / 1000;
    if s < 60 {
        return format!("{s}s");
    }
    if s < 3600 {
        return format!("{}m{:02}s", s / 60, s % 60);
    }
    let m = (s + 30) / 60;
    format!("{}h{:02}m", m / 60, m % 60)
}

/// A signed duration (a prediction's error): `+1.2s`, `-3m04s`, `0ms`.
pub(crate) fn signed_duration(ms: i64) -> String {
    let text = duration(ms.unsigned_abs());
    match ms.signum() {
        1 => format!("+{text}"),
        -1 => format!("\u{2212}{text}"),
        _ => text,
    }
}

/// A share as a percentage with one decimal: `87.5%`; whole numbers lose the decimal.
pub(crate) fn percent(share: f64) -> String {
    let p = share * 100.0;
    let rounded = (p * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}%")
    } else {
        format!("{rounded:.1}%")
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A number with thousands separated by thin spaces: `12 345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// Money: `$1.23`, or four decimals under a cent.
pub(crate) fn usd(v: f64) -> String {
    if v.abs() < 0.01 && v != 0.0 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// A record's RFC 3339 time as `2026-05-01 12:03 UTC`; anything else as it was written.
pub(crate) fn when(rfc3339: &str) -> String {
    match super::stats::parse_rfc3339_ms(rfc3339) {
        Some(ms) => {
            let (y, mo, d, h, mi) = civil_minutes(ms);
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
        }
        None => rfc3339.to_string(),
    }
}

/// A record's time as `05-01 12:03` (UTC), for an axis.
pub(crate) fn axis_time(rfc3339: &str) -> Option<String> {
    let ms = super::stats::parse_rfc3339_ms(rfc3339)?;
    let (_, mo, d, h, mi) = civil_minutes(ms);
    Some(format!("{mo:02}-{d:02} {h:02}:{mi:02}"))
}

/// Milliseconds since the epoch as UTC (year, month, day, hour, minute).
fn civil_minutes(ms: i64) -> (i64, u32, u32, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = crate::record::civil_from_days(days);
    (y, mo, d, rem / 3600, rem % 3600 / 60)
}

/// The first seven characters of a commit.
pub(crate) fn short_sha(sha: &str) -> &str {
    sha.char_indices().nth(7).map_or(sha, |(i, _)| &sha[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(esc("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn paired_backquotes_become_code() {
        assert_eq!(
            esc_inline_code("run `cargo test <x>` then `y`"),
            "run <code>cargo test &lt;x&gt;</code> then <code>y</code>"
        );
        assert_eq!(esc_inline_code("one ` only <"), "one ` only &lt;");
        assert_eq!(esc_inline_code("`a` and ` b"), "`a` and ` b");
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(420), "420ms");
        assert_eq!(duration(1_000), "1.0s");
        assert_eq!(duration(1_240), "1.2s");
        assert_eq!(duration(9_960), "10s");
        assert_eq!(duration(14_400), "14s");
        assert_eq!(duration(59_600), "1m00s");
        assert_eq!(duration(184_000), "3m04s");
        assert_eq!(duration(3_720_000), "1h02m");
        assert_eq!(signed_duration(-1_240), "\u{2212}1.2s");
        assert_eq!(signed_duration(1_240), "+1.2s");
    }

    #[test]
    fn shares_sizes_and_counts() {
        assert_eq!(percent(0.875), "87.5%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(count(12_345), "12\u{2009}345");
        assert_eq!(count(123), "123");
        assert_eq!(usd(1.234), "$1.23");
        assert_eq!(usd(0.0012), "$0.0012");
    }

    #[test]
    fn times_are_shown_in_utc_minutes() {
        assert_eq!(when("2026-05-01T12:03:09.120Z"), "2026-05-01 12:03 UTC");
        assert_eq!(when("2026-05-01T14:03:09+02:00"), "2026-05-01 12:03 UTC");
        assert_eq!(when("yesterday"), "yesterday");
        assert_eq!(
            axis_time("2026-05-01T23:59:59Z").as_deref(),
            Some("05-01 23:59")
        );
        assert_eq!(short_sha("0123456789abcdef"), "0123456");
        assert_eq!(short_sha("abc"), "abc");
    }
}
