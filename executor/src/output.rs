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
    secrets: Vec<Vec<u8>>,
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
        // Output is redacted line by line, so a multi-line secret (a PEM key) is masked
        // line by line, as GitHub Actions does.
        let mut secrets: Vec<Vec<u8>> = secrets
            .iter()
            .flat_map(|s| s.split(|&b| b == b'\n'))
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        OutputProcessor {
            step,
            log: BufWriter::with_capacity(64 * 1024, log),
            sink,
            secrets,
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
            for s in &self.secrets {
                let straddles = |start: &usize| {
                    let avail = &self.partial[*start..];
                    let n = avail.len().min(s.len());
                    avail[..n] == s[..n]
                };
                if let Some(start) = (cut.saturating_sub(s.len() - 1)..cut).find(straddles) {
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

/// Replaces every occurrence of every secret with `***`.
pub(crate) fn redact<'l>(line: &'l [u8], secrets: &[Vec<u8>]) -> std::borrow::Cow<'l, [u8]> {
    if secrets.is_empty() || !secrets.iter().any(|s| contains(line, s)) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    'outer: while i < line.len() {
        for s in secrets {
            if line[i..].starts_with(s) {
                out.extend_from_slice(b"***");
                i += s.len();
                continue 'outer;
            }
        }
        out.push(line[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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
