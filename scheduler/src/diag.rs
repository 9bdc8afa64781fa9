//! Plan diagnostics: where (file:line:col), what, and how to fix it.

use std::fmt;
use std::path::PathBuf;

/// One problem in a plan file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The plan file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong, as a lowercase fragment.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// The offending source line and the length of the marked span on it.
    pub snippet: Option<(String, usize)>,
}

impl Diagnostic {
    /// A diagnostic at byte range `span` of `source`.
    pub(crate) fn at(
        file: &std::path::Path,
        source: &str,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let start = span.start.min(source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line = source[..start].matches('\n').count() + 1;
        let text = source[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        // A span on the '\r' of a CRLF line ending points just past the visible text.
        let col = (source[line_start..start].chars().count() + 1).min(text.chars().count() + 1);
        let end = span.end.clamp(start, line_end);
        let len = source[start..end].chars().count().max(1);
        Diagnostic {
            file: file.to_owned(),
            line,
            col,
            message: message.into(),
            hint,
            snippet: Some((text, len)),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )?;
        if let Some((text, len)) = &self.snippet {
            let gutter = self.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {text}", self.line)?;
            let lead: String = text
                .chars()
                .take(self.col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(*len))?;
        }
        if let Some(hint) = &self.hint {
            let pad = " ".repeat(self.line.to_string().len());
            writeln!(f, "{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why a plan could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plan file {}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid plan; every problem found is listed.
    #[error("{}", render(diagnostics))]
    Invalid {
        /// The problems, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(diags: &[Diagnostic]) -> String {
    let mut s = String::new();
    for d in diags {
        s.push_str(&d.to_string());
    }
    let n = diags.len();
    s.push_str(&format!(
        "plan is invalid: {n} error{}",
        if n == 1 { "" } else { "s" }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_in_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        let off = src.find('"').unwrap();
        let d = Diagnostic::at(
            "p.toml".as_ref(),
            src,
            off..off + 3,
            "bad",
            Some("fix".into()),
        );
        assert_eq!((d.line, d.col), (2, 6));
        assert_eq!(
            d.to_string(),
            "p.toml:2:6: error: bad\n  |\n2 | bé = \"x\"\n  |      ^^^\n  = hint: fix\n"
        );
    }
}
