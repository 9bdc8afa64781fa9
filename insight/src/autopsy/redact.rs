//! Redaction of secrets and credentials from log text.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// `text` with secrets and credentials replaced by `[redacted]`.
///
/// First each of `secrets` (literal values; each line of a multi-line value on its own).
/// A step's log is already redacted as it is written (the executor masks its declared
/// secrets there, base64- and URL-encoded forms too); this pass masks them again as they
/// are, for text from anywhere else. Then credentials recognised by their shape, whatever
/// the step declared:
///
/// - PEM private key blocks (`-----BEGIN … PRIVATE KEY-----` to its `END` line, or to the
///   end of the key's text when the log was cut);
/// - GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), AWS access
///   key ids (`AKIA…`, `ASIA…`) and Slack tokens (`xoxb-`, `xoxp-`, …);
/// - the value of an `Authorization:` header (after its scheme, `Bearer` or `Basic`…) and
///   a bearer token anywhere;
/// - the password of a URL (`https://user:password@host`);
/// - the value of `password=`, `token=`, `secret=`, `api_key=` and the like, also with a
///   prefix (`DB_PASSWORD=`, `CI_JOB_TOKEN=`) and as JSON (`"token": "…"`).
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = redact_literals(text, secrets).into_owned();
    for (re, replacement) in credential_patterns() {
        if let Cow::Owned(o) = re.replace_all(&out, |caps: &Captures<'_>| replacement.apply(caps)) {
            out = o;
        }
    }
    out
}

/// How a credential pattern's match is replaced.
enum Replacement {
    /// The whole match.
    Whole,
    /// Everything after capture group 1 (a prefix that stays).
    AfterPrefix,
    /// Group 2, between groups 1 and 3 that stay.
    Between,
}

impl Replacement {
    fn apply(&self, caps: &Captures<'_>) -> String {
        let group = |i| caps.get(i).map_or("", |m| m.as_str());
        match self {
            Replacement::Whole => REDACTED.to_owned(),
            Replacement::AfterPrefix => format!("{}{REDACTED}", group(1)),
            Replacement::Between => format!("{}{REDACTED}{}", group(1), group(3)),
        }
    }
}

fn credential_patterns() -> &'static [(Regex, Replacement)] {
    static PATTERNS: OnceLock<Vec<(Regex, Replacement)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let names = r"(?:[A-Za-z0-9]+[_-])*(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret)";
        [
            (
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
                Replacement::Whole,
            ),
            // A block cut short (the log's start or end is missing): up to the first line
            // that cannot be part of it.
            (
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:\r?\n(?:[A-Za-z0-9+/=]*|[A-Za-z-]+: [^\n]*))*",
                Replacement::Whole,
            ),
            (
                r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})(?-u:\b)",
                Replacement::Whole,
            ),
            (r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)", Replacement::Whole),
            (r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}", Replacement::Whole),
            (
                r#"(?i)((?-u:\b)authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|token|bot|digest|negotiate|apikey)\s+)?)[^\s"',;]+"#,
                Replacement::AfterPrefix,
            ),
            (
                r"(?i)((?-u:\b)bearer\s+)[A-Za-z0-9._~+/=-]{8,}",
                Replacement::AfterPrefix,
            ),
            (
                r"(?i)((?-u:\b)[a-z][a-z0-9+.-]*://[^\s/:@]*:)([^\s/@]+)(@)",
                Replacement::Between,
            ),
            // A prefix of its own makes the name's start a word boundary: DB_PASSWORD=…
            (
                &format!(r#"(?i)((?-u:\b){names}\s*=\s*)(?:"[^"\n]*"|'[^'\n]*'|[^\s&"';,]+)"#),
                Replacement::AfterPrefix,
            ),
            (
                &format!(r#"(?i)("{names}"\s*:\s*")([^"\n]+)(")"#),
                Replacement::Between,
            ),
        ]
        .into_iter()
        .map(|(source, replacement)| {
            (
                Regex::new(source).expect("the credential patterns compile"),
                replacement,
            )
        })
        .collect()
    })
}

/// `text` with every literal form of every secret masked.
fn redact_literals<'t>(text: &'t str, secrets: &[&str]) -> Cow<'t, str> {
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets {
        for line in secret.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                forms.push(line.to_owned());
            }
        }
    }
    if forms.is_empty() {
        return Cow::Borrowed(text);
    }
    // Longest first: a secret that contains another is masked whole.
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    let alternation = forms
        .iter()
        .map(|f| regex::escape(f))
        .collect::<Vec<_>>()
        .join("|");
    match Regex::new(&alternation) {
        Ok(re) => re.replace_all(text, REDACTED),
        // Too many or too long to compile together: one at a time.
        Err(_) => {
            let mut out = text.to_owned();
            for form in &forms {
                if out.contains(form.as_str()) {
                    out = out.replace(form.as_str(), REDACTED);
                }
            }
            Cow::Owned(out)
        }
    }
}
