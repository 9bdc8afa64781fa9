//! Streaming a step's output to its log file and to a live sink, in bounded memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};

/// Receives a step's output live, one line at a time (without the newline).
pub trait OutputSink: Send + Sync + 'static {
    /// One line of `step`'s output, already redacted.
    fn line(&self, step: &str, line: &[u8]);
}

/// Longest line kept whole; longer lines are cut into pieces of this size.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Bytes of the end of the output kept for diagnosis.
const TAIL: usize = 4096;

/// Splits a byte stream into lines, redacts secrets, writes the log and feeds the sink.
pub(crate) struct OutputProcessor<'a> {
    step: &'a str,
    log: BufWriter<File>,
    sink: &'a dyn OutputSink,
    secrets: Redactor,
    partial: Vec<u8>,
    live_left: u64,
    live_truncated: bool,
    /// The fast path wrote a chunk that did not end a line: `finish` must end it.
    open_line: bool,
    log_hint: String,
    tail: VecDeque<u8>,
    /// Bytes the step wrote.
    pub(crate) total: u64,
}

impl<'a> OutputProcessor<'a> {
    pub(crate) fn new(
        step: &'a str,
        log: File,
        sink: &'a dyn OutputSink,
        secrets: Vec<Vec<u8>>,
        live_limit: u64,
        log_hint: String,
    ) -> Self {
        OutputProcessor {
            step,
            log: BufWriter::with_capacity(64 * 1024, log),
            sink,
            secrets: Redactor::new(&secrets),
            partial: Vec::new(),
            live_left: live_limit,
            // With no live output asked for, there is nothing to say was truncated.
            live_truncated: live_limit == 0,
            open_line: false,
            log_hint,
            tail: VecDeque::with_capacity(TAIL),
            total: 0,
        }
    }

    /// A line written by the orchestrator itself into the log (not shown live).
    pub(crate) fn note(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.log, "--- ci-intel: {text} ---")
    }

    /// Feeds one chunk of output. Complete lines reach the log file before this returns,
    /// so `tail -f` on a log shows a running step's progress.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.feed_buffered(chunk)?;
        self.log.flush()
    }

    fn feed_buffered(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        self.total += chunk.len() as u64;
        // Fast path: nothing to redact and nothing more to show live.
        if self.secrets.is_empty() && self.live_left == 0 && self.partial.is_empty() {
            if let Some(&last) = chunk.last() {
                self.open_line = last != b'\n';
            }
            self.push_tail(chunk);
            return self.log.write_all(chunk);
        }
        while let Some(nl) = memchr(b'\n', chunk) {
            self.partial.extend_from_slice(&chunk[..nl]);
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, true)?;
            self.partial = line;
            self.partial.clear();
            chunk = &chunk[nl + 1..];
        }
        self.partial.extend_from_slice(chunk);
        while self.partial.len() > MAX_LINE {
            let cut = self.safe_cut(MAX_LINE);
            let rest = self.partial.split_off(cut);
            let piece = std::mem::replace(&mut self.partial, rest);
            self.emit(&piece, false)?;
        }
        Ok(())
    }

    /// Ends an unterminated last line, whichever path wrote it, and flushes the log.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, true)?;
        } else if std::mem::take(&mut self.open_line) {
            self.log.write_all(b"\n")?;
            self.push_tail(b"\n");
        }
        self.log.flush()
    }

    /// The last few lines of output, lossily decoded.
    pub(crate) fn tail(&self) -> String {
        let (a, b) = self.tail.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Where to cut a too-long line so that no secret's prefix is left at the end of the
    /// piece (the rest of that secret would arrive in the next piece and never match).
    fn safe_cut(&self, max: usize) -> usize {
        // Move the cut back to the start of any possible match that straddles it, and
        // repeat until no secret straddles the cut.
        let mut cut = max;
        'again: loop {
            for p in &self.secrets.patterns {
                let straddles = |start: &usize| {
                    let m = p.match_at(&self.partial[*start..]);
                    m.partial || m.full.is_some_and(|n| *start + n > cut)
                };
                let window = cut.saturating_sub(p.max_len() - 1)..cut;
                if let Some(start) = window.into_iter().find(straddles) {
                    cut = start;
                    continue 'again;
                }
            }
            return cut.max(1);
        }
    }

    fn emit(&mut self, line: &[u8], newline: bool) -> io::Result<()> {
        let redacted = redact(line, &self.secrets);
        self.log.write_all(&redacted)?;
        if newline {
            self.log.write_all(b"\n")?;
        }
        self.push_tail(&redacted);
        if newline {
            self.push_tail(b"\n");
        }
        if self.live_left > 0 {
            let n = redacted.len() as u64 + 1;
            if n <= self.live_left {
                self.live_left -= n;
                self.sink.line(self.step, &redacted);
            } else {
                self.live_left = 0;
            }
        }
        if self.live_left == 0 && !self.live_truncated {
            self.live_truncated = true;
            let msg = format!(
                "[ci-intel] live output truncated; the full log is {}",
                self.log_hint
            );
            self.sink.line(self.step, msg.as_bytes());
        }
        Ok(())
    }

    fn push_tail(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(TAIL)..];
        let excess = (self.tail.len() + bytes.len()).saturating_sub(TAIL);
        self.tail.drain(..excess);
        self.tail.extend(bytes);
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Secrets shorter than this are masked only as they are: their encoded forms are short
/// enough to turn up in ordinary output.
const MIN_ENCODED_SECRET: usize = 4;
/// Encoded forms (or pieces of them) shorter than this are not masked.
const MIN_ENCODED_FORM: usize = 6;
/// Columns at which base64 tools wrap: PEM and `openssl base64` (64), GNU `base64` (76).
const BASE64_WRAPS: [usize; 2] = [64, 76];
const BASE64_STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL_SAFE: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Everything that must not appear in a log line: each secret as it is, URL-encoded and
/// base64-encoded.
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    patterns: Vec<Pattern>,
    /// For each byte, the patterns a match can start with it at, in `patterns` order.
    by_first: Vec<Vec<usize>>,
}

impl Redactor {
    /// The patterns of these secret values.
    ///
    /// Output is redacted line by line, so a multi-line secret (a PEM key) is masked line
    /// by line, as GitHub Actions does. Each line of 4 bytes or more, and the whole value,
    /// is also masked when any of its bytes is percent-encoded; the whole value is also
    /// masked base64-encoded (standard and URL-safe alphabets, padded or not, wrapped at 64
    /// and 76 columns).
    pub fn new(secrets: &[Vec<u8>]) -> Redactor {
        let mut patterns = Vec::new();
        for secret in secrets {
            for line in secret.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.is_empty() {
                    patterns.push(Pattern::new(
                        line.to_vec(),
                        line.len() >= MIN_ENCODED_SECRET,
                    ));
                }
            }
            if secret.len() >= MIN_ENCODED_SECRET {
                if secret.contains(&b'\n') {
                    // Percent-encoded, a multi-line value is one line (`%0A`).
                    patterns.push(Pattern::new(secret.clone(), true));
                }
                patterns.extend(
                    base64_forms(secret)
                        .into_iter()
                        .filter(|f| f.len() >= MIN_ENCODED_FORM)
                        .map(|bytes| Pattern::new(bytes, true)),
                );
            }
        }
        patterns.sort_by(|a, b| b.bytes.len().cmp(&a.bytes.len()).then(a.cmp(b)));
        patterns.dedup();
        let mut by_first = vec![Vec::new(); 256];
        for (i, p) in patterns.iter().enumerate() {
            let first = p.bytes[0];
            by_first[usize::from(first)].push(i);
            if p.url {
                by_first[usize::from(b'%')].push(i);
                if first == b' ' {
                    by_first[usize::from(b'+')].push(i);
                }
            }
        }
        for list in &mut by_first {
            list.sort_unstable();
            list.dedup();
        }
        Redactor { patterns, by_first }
    }

    fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The length of the match at the start of `hay` of the first pattern that matches
    /// there, longest patterns first.
    fn match_at(&self, hay: &[u8]) -> Option<usize> {
        let first = *hay.first()?;
        self.by_first[usize::from(first)]
            .iter()
            .find_map(|&i| self.patterns[i].match_at(hay).full)
    }
}

/// One masked byte string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pattern {
    /// Never empty.
    bytes: Vec<u8>,
    /// Whether each byte may also appear percent-encoded (`%2F` or `%2f`), and a space as
    /// `+`, so every URL-encoding of the value matches, whichever bytes the encoder
    /// chose to escape.
    url: bool,
    /// Whether `bytes` has a `%`, which may match `%` or `%25`.
    percent: bool,
}

/// How a [`Pattern`] matches at the start of some bytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Match {
    /// The length of the longest whole match.
    full: Option<usize>,
    /// The bytes ran out in the middle of a possible match.
    partial: bool,
}

impl Pattern {
    fn new(bytes: Vec<u8>, url: bool) -> Pattern {
        Pattern {
            percent: bytes.contains(&b'%'),
            bytes,
            url,
        }
    }

    /// The longest text a match can span.
    fn max_len(&self) -> usize {
        if self.url {
            3 * self.bytes.len()
        } else {
            self.bytes.len()
        }
    }

    fn match_at(&self, hay: &[u8]) -> Match {
        if !self.url {
            let n = hay.len().min(self.bytes.len());
            return match hay[..n] == self.bytes[..n] {
                true if n == self.bytes.len() => Match {
                    full: Some(n),
                    partial: false,
                },
                true => Match {
                    full: None,
                    partial: true,
                },
                false => Match::default(),
            };
        }
        // Cheap rejection first: most positions fail on the first byte.
        let first = self.bytes[0];
        match hay.first() {
            Some(&c) if c == first || (c == b'+' && first == b' ') => {}
            Some(b'%') if hay.get(1).is_none_or(|&h| is_hex_of(h, first >> 4)) => {}
            _ => return Match::default(),
        }
        if !self.percent {
            return self.match_url_unambiguous(hay);
        }
        // A byte of the value may match one byte (itself) or three (`%XX`), and `%` may be
        // either, so follow every offset in `hay` a prefix of the value can end at.
        let mut partial = false;
        let mut ends: Vec<usize> = vec![0];
        let mut next: Vec<usize> = Vec::with_capacity(2);
        for &b in &self.bytes {
            next.clear();
            for &at in &ends {
                let Some(&c) = hay.get(at) else {
                    partial = true;
                    continue;
                };
                if c == b || (c == b'+' && b == b' ') {
                    next.push(at + 1);
                }
                if c == b'%' {
                    match (hay.get(at + 1), hay.get(at + 2)) {
                        (Some(&h), Some(&l)) if is_hex_of(h, b >> 4) && is_hex_of(l, b & 0xf) => {
                            next.push(at + 3);
                        }
                        (Some(&h), None) if is_hex_of(h, b >> 4) => partial = true,
                        (None, _) => partial = true,
                        _ => {}
                    }
                }
            }
            next.sort_unstable();
            next.dedup();
            std::mem::swap(&mut ends, &mut next);
            if ends.is_empty() {
                break;
            }
        }
        Match {
            full: ends.iter().max().copied(),
            partial,
        }
    }

    /// [`Pattern::match_at`] of a URL pattern without `%`: each byte of `hay` then
    /// matches the value's byte in at most one way, so one pass decides.
    fn match_url_unambiguous(&self, hay: &[u8]) -> Match {
        const PARTIAL: Match = Match {
            full: None,
            partial: true,
        };
        let mut at = 0;
        for &b in &self.bytes {
            let Some(&c) = hay.get(at) else {
                return PARTIAL;
            };
            if c == b || (c == b'+' && b == b' ') {
                at += 1;
                continue;
            }
            if c == b'%' {
                match (hay.get(at + 1), hay.get(at + 2)) {
                    (Some(&h), Some(&l)) if is_hex_of(h, b >> 4) && is_hex_of(l, b & 0xf) => {
                        at += 3;
                        continue;
                    }
                    (Some(&h), None) if is_hex_of(h, b >> 4) => return PARTIAL,
                    (None, _) => return PARTIAL,
                    _ => {}
                }
            }
            return Match::default();
        }
        Match {
            full: Some(at),
            partial: false,
        }
    }
}

/// Whether `c` is a hex digit (either case) of value `nibble`.
fn is_hex_of(c: u8, nibble: u8) -> bool {
    match c {
        b'0'..=b'9' => c - b'0' == nibble,
        b'a'..=b'f' => c - b'a' + 10 == nibble,
        b'A'..=b'F' => c - b'A' + 10 == nibble,
        _ => false,
    }
}

/// Base64 forms of `secret` worth masking, in the standard and URL-safe alphabets:
///
/// - the encoding, with and without `=` padding;
/// - the encoding of the value and a newline (`echo "$TOKEN" | base64`), both ways;
/// - the characters that depend only on the value when it sits at any of the three
///   offsets in a longer encoded text (`Authorization: Basic` of `user:TOKEN`);
/// - each line of the padded encodings wrapped at 64 and 76 columns.
fn base64_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    let mut with_newline = secret.to_vec();
    with_newline.push(b'\n');
    for alphabet in [BASE64_STANDARD, BASE64_URL_SAFE] {
        for value in [secret, &with_newline[..]] {
            let padded = base64(value, alphabet, true);
            for width in BASE64_WRAPS {
                if padded.len() > width {
                    forms.extend(padded.chunks(width).map(<[u8]>::to_vec));
                }
            }
            forms.push(base64(value, alphabet, false));
            forms.push(padded);
        }
        for shift in 0..3usize {
            // After `shift` bytes of something else, characters from `first` on depend
            // only on the value, and those before `last` do not depend on what follows.
            let mut shifted = vec![0; shift];
            shifted.extend_from_slice(secret);
            let encoded = base64(&shifted, alphabet, false);
            let first = (8 * shift).div_ceil(6);
            let last = 8 * shifted.len() / 6;
            if first < last {
                forms.push(encoded[first..last].to_vec());
            }
        }
    }
    forms
}

/// `data` in base64 with `alphabet`, with or without `=` padding.
fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = group.len() + 1;
        for k in 0..4 {
            if k < chars {
                out.push(alphabet[((n >> (18 - 6 * k)) & 0x3f) as usize]);
            } else if pad {
                out.push(b'=');
            }
        }
    }
    out
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Redactor {
    /// `line` with every secret pattern replaced by `***`.
    pub fn redact<'l>(&self, line: &'l [u8]) -> std::borrow::Cow<'l, [u8]> {
        redact(line, self)
    }
}

/// Replaces every occurrence of every secret pattern with `***`.
pub(crate) fn redact<'l>(line: &'l [u8], secrets: &Redactor) -> std::borrow::Cow<'l, [u8]> {
    if secrets.is_empty() {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < line.len() {
        match secrets.match_at(&line[i..]) {
            Some(n) => {
                let o = out.get_or_insert_with(|| Vec::with_capacity(line.len()));
                o.extend_from_slice(&line[copied..i]);
                o.extend_from_slice(b"***");
                i += n;
                copied = i;
            }
            None => i += 1,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(line),
        Some(mut o) => {
            o.extend_from_slice(&line[copied..]);
            std::borrow::Cow::Owned(o)
        }
    }
}

/// The program named in a shell's "not found" message, if the output ends with one.
///
/// Understands dash (`sh: 1: foo: not found`) and bash
/// (`bash: line 1: foo: command not found`).
pub(crate) fn command_not_found(tail: &str) -> Option<String> {
    tail.lines().rev().find_map(|line| {
        let rest = line
            .strip_suffix(": command not found")
            .or_else(|| line.strip_suffix(": not found"))?;
        let name = rest.rsplit(": ").next()?;
        (!name.is_empty()).then(|| name.to_string())
    })
}

/// A sink that keeps every line as `[step] line`, for tests of this crate.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Collect(pub(crate) std::sync::Mutex<Vec<String>>);

#[cfg(test)]
impl OutputSink for Collect {
    fn line(&self, step: &str, line: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push(format!("[{step}] {}", String::from_utf8_lossy(line)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], secrets: &[&str], live: u64) -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let sink = Collect::default();
        let mut p = OutputProcessor::new(
            "s",
            File::create(&path).unwrap(),
            &sink,
            secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            live,
            "LOG".into(),
        );
        for c in chunks {
            p.feed(c).unwrap();
        }
        p.finish().unwrap();
        drop(p);
        let log = std::fs::read_to_string(&path).unwrap();
        (log, sink.0.into_inner().unwrap())
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let (log, live) = run(&[b"hel", b"lo\nwor", b"ld"], &[], 1 << 20);
        assert_eq!(log, "hello\nworld\n");
        assert_eq!(live, ["[s] hello", "[s] world"]);
    }

    #[test]
    fn secrets_are_redacted_even_across_chunk_boundaries() {
        let (log, live) = run(&[b"token=hun", b"ter2 ok\n"], &["hunter2"], 1 << 20);
        assert_eq!(log, "token=*** ok\n");
        assert_eq!(live, ["[s] token=*** ok"]);
    }

    #[test]
    fn secrets_are_redacted_across_long_line_cuts() {
        let mut big = vec![b'a'; MAX_LINE - 3];
        big.extend_from_slice(b"hunter2");
        big.extend_from_slice(&[b'b'; 10]);
        let (log, _) = run(&[&big], &["hunter2"], 0);
        assert!(!log.contains("hun"), "a prefix of the secret leaked");
        assert!(log.contains("***"));
    }

    #[test]
    fn multi_line_secrets_are_masked_line_by_line() {
        let key = "-----BEGIN KEY-----\nMIIEsecretbody\n-----END KEY-----\n";
        let (log, _) = run(&[key.as_bytes()], &[key], 1 << 20);
        assert_eq!(log, "***\n***\n***\n");
    }

    #[test]
    fn overlapping_secrets_are_not_split_by_long_line_cuts() {
        for (secrets, at_cut) in [(&["ABCD", "DZ"][..], "ABCDZ"), (&["aba"][..], "abab")] {
            let mut big = vec![b'.'; MAX_LINE - 3];
            big.extend_from_slice(at_cut.as_bytes());
            big.extend_from_slice(b"....");
            let (log, _) = run(&[&big], secrets, 0);
            for s in secrets {
                for k in 2..s.len() {
                    assert!(
                        !log.contains(&s[..k]),
                        "{:?} leaked in {secrets:?}",
                        &s[..k]
                    );
                }
            }
        }
    }

    /// `line` redacted with `secrets`.
    fn mask(secrets: &[&str], line: &str) -> String {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        String::from_utf8(redact(line.as_bytes(), &Redactor::new(&secrets)).into_owned()).unwrap()
    }

    /// A secret whose base64 has `+`, `/` and padding, and that has bytes URL-encoding
    /// escapes.
    const TOK: &str = "tok?>~~>?~";

    #[test]
    fn base64_forms_are_redacted() {
        for encoded in [
            "dG9rPz5+fj4/fg==", // standard, padded
            "dG9rPz5+fj4/fg",   // standard, unpadded
            "dG9rPz5-fj4_fg==", // URL-safe, padded
            "dG9rPz5-fj4_fg",   // URL-safe, unpadded
            "dG9rPz5+fj4/fgo=", // `echo "$TOK" | base64`
            "dG9rPz5-fj4_fgo",  // the same, URL-safe and unpadded
        ] {
            assert_eq!(
                mask(&[TOK], &format!("x {encoded} y")),
                "x *** y",
                "{encoded}"
            );
        }
    }

    #[test]
    fn base64_of_a_secret_inside_a_longer_text_is_redacted_at_every_offset() {
        // Offset 0 of a group: `ab:TOK`.
        assert_eq!(mask(&[TOK], "YWI6dG9rPz5+fj4/fg=="), "YWI6***");
        // Offset 1: `uTOK!!`; what is left depends on the neighbours, at most 4 bits of it
        // on the secret.
        assert_eq!(mask(&[TOK], "dXRvaz8+fn4+P34hIQ=="), "dX***4hIQ==");
        // Offset 2: HTTP basic auth of `user:TOK`.
        assert_eq!(
            mask(&[TOK], "Authorization: Basic dXNlcjp0b2s/Pn5+Pj9+"),
            "Authorization: Basic dXNlcjp***"
        );
    }

    #[test]
    fn wrapped_base64_is_redacted_line_by_line() {
        let secret: String = (0..100u32)
            .map(|i| char::from_u32((i * 7 + 33) % 94 + 33).unwrap())
            .collect();
        let encoded = "QklQV15lbHN6IyoxOD9GTVRbYmlwd34nLjU8Q0pRWF9mbXR7JCsyOUBHTlVcY2pxeCEoLzY9REtSWWBnbnV8JSwzOkFIT1ZdZGtyeSIpMDc+RUxTWmFob3Z9Ji00O0JJUFdeZQ==";
        for width in [64, 76] {
            for line in encoded.as_bytes().chunks(width) {
                let line = std::str::from_utf8(line).unwrap();
                assert_eq!(mask(&[&secret], line), "***", "{width}: {line}");
            }
        }
    }

    #[test]
    fn url_encoded_forms_are_redacted() {
        for encoded in [
            "tok%3F%3E~~%3E%3F~", // every reserved byte, upper hex
            "tok%3f%3e~~%3e%3f~", // lower hex
            "tok%3f%3E~~%3e%3F~", // mixed
            "%74ok?>~~>?~",       // an unreserved byte escaped too
            "tok%3F>~~>%3F~",     // only some escaped
        ] {
            assert_eq!(
                mask(&[TOK], &format!("GET /?t={encoded}&x=1")),
                "GET /?t=***&x=1",
                "{encoded}"
            );
        }
        for encoded in [
            "tok%20en%2Fx", // every byte but unreserved ones
            "tok%20en/x",   // Python's quote(), which keeps `/`
            "tok+en%2Fx",   // form encoding: a space is `+`
            "tok+en%2fx",
        ] {
            assert_eq!(mask(&["tok en/x"], encoded), "***", "{encoded}");
        }
        // `%` in the secret may be written `%` or `%25`.
        for encoded in ["50%off!", "50%25off%21", "50%off%21", "50%25off!"] {
            assert_eq!(mask(&["50%off!"], encoded), "***", "{encoded}");
        }
        // URL-encoded base64 (a token in a query string).
        assert_eq!(mask(&[TOK], "dG9rPz5%2Bfj4%2Ffg%3D%3D"), "***");
    }

    #[test]
    fn a_url_encoded_multi_line_secret_is_one_line() {
        let key = "-----BEGIN KEY-----\nMIIEsecretbody\n-----END KEY-----";
        assert_eq!(
            mask(
                &[key],
                "k=-----BEGIN%20KEY-----%0AMIIEsecretbody%0A-----END%20KEY-----"
            ),
            "k=***"
        );
    }

    #[test]
    fn short_secrets_are_masked_only_as_they_are() {
        // base64 of `abc` is `YWJj`, and such short encodings turn up in ordinary text.
        assert_eq!(mask(&["abc"], "abc YWJj %61bc"), "*** YWJj %61bc");
        // Four bytes and more: encoded forms too, but not pieces shorter than 6.
        assert_eq!(
            mask(&["abcd"], "abcd YWJjZA== YWJjZA %61bcd YWJj"),
            "*** *** *** *** YWJj"
        );
    }

    #[test]
    fn lines_without_secrets_are_not_copied() {
        let secrets = Redactor::new(&[TOK.as_bytes().to_vec()]);
        for line in ["100% done, 3+4", "%", "%3", "tok?>~~>?", "", "dG9rPz5+fj4"] {
            assert!(
                matches!(
                    redact(line.as_bytes(), &secrets),
                    std::borrow::Cow::Borrowed(_)
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn encoded_secrets_are_redacted_across_long_line_cuts() {
        for (at, encoded) in [(5, "tok%3F%3E~~%3E%3F~"), (3, "dG9rPz5+fj4/fg==")] {
            let mut big = vec![b'a'; MAX_LINE - at];
            big.extend_from_slice(encoded.as_bytes());
            big.extend_from_slice(&[b'b'; 10]);
            let (log, _) = run(&[&big], &[TOK], 0);
            assert!(
                !log.contains(&encoded[..at + 2]),
                "a prefix of {encoded} leaked"
            );
            assert!(
                !log.contains(&encoded[at - 2..]),
                "a suffix of {encoded} leaked"
            );
            assert!(log.contains("a***b"), "{encoded}");
        }
    }

    /// Every byte but the unreserved ones percent-encoded, in upper or lower hex.
    fn percent_encoded(s: &[u8], upper: bool) -> String {
        s.iter()
            .map(|&b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ if upper => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect()
    }

    proptest::proptest! {
        /// Whatever the secret and its surroundings, none of its forms survives.
        #[test]
        fn no_form_of_a_secret_survives(
            secret in "[A-Za-z0-9 /+?&=%~._-]{4,40}",
            before in "[ ,;:!]{0,8}",
            after in "[ ,;:!]{0,8}",
        ) {
            let s = secret.as_bytes();
            let mut forms = vec![
                secret.clone(),
                percent_encoded(s, true),
                percent_encoded(s, false),
                secret.replace(' ', "+"),
            ];
            for alphabet in [BASE64_STANDARD, BASE64_URL_SAFE] {
                for pad in [true, false] {
                    forms.push(String::from_utf8(base64(s, alphabet, pad)).unwrap());
                }
            }
            for form in forms {
                let out = mask(&[&secret], &format!("{before}{form}{after}"));
                proptest::prop_assert!(!out.contains(&form), "{form:?} survived in {out:?}");
                proptest::prop_assert_eq!(out, format!("{before}***{after}"));
            }
        }
    }

    #[test]
    fn live_output_is_bounded_but_the_log_is_whole() {
        let chunk = b"0123456789\n".repeat(100);
        let (log, live) = run(&[&chunk], &[], 55);
        assert_eq!(log.len(), chunk.len());
        assert_eq!(live.len(), 6, "{live:?}");
        assert!(live[5].contains("live output truncated; the full log is LOG"));
    }

    #[test]
    fn an_unterminated_last_line_is_ended_whichever_path_wrote_it() {
        // Live output on: the line-splitting path ends the last line.
        let (log, _) = run(&[b"a\nb"], &[], 1 << 20);
        assert_eq!(log, "a\nb\n");
        // Live output used up: the pass-through path must end it the same way.
        let (log, _) = run(&[b"a\n", b"b"], &[], 0);
        assert_eq!(log, "a\nb\n");
        let (log, _) = run(&[b"a\n"], &[], 0);
        assert_eq!(log, "a\n");
    }

    #[test]
    fn not_found_messages_of_dash_and_bash() {
        assert_eq!(
            command_not_found("x\nsh: 1: frobnicate: not found\n").as_deref(),
            Some("frobnicate")
        );
        assert_eq!(
            command_not_found("bash: line 1: frob: command not found").as_deref(),
            Some("frob")
        );
        assert_eq!(command_not_found("all fine\n"), None);
    }
}
