//! The rule file: its format, its validation, and the compiled rule set.

use std::collections::BTreeSet;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use super::Severity;

/// The priority of a rule that does not give one.
const DEFAULT_PRIORITY: i32 = 50;
/// The highest priority a rule may have.
const MAX_PRIORITY: i32 = 1000;
/// Compiled size limit of one pattern, and of all of them together in the prefilter.
const REGEX_SIZE_LIMIT: usize = 32 << 20;
/// Step facts every template may use besides a rule's capture groups.
pub(super) const STATUS_VARS: [&str; 3] = ["exit_code", "signal", "step"];

/// Why a rule file was rejected. Each variant that concerns one rule names its id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The file is not TOML, or does not have the shape of a rule file.
    #[error("the rule file does not parse")]
    Toml(#[source] toml::de::Error),
    /// The file's `version` is not one this build reads.
    #[error("rule file version {0} is not supported (this build reads version 1)")]
    Version(u32),
    /// One of a rule's regexes does not compile.
    #[error("rule `{id}`: {field} is not a valid regex")]
    Regex {
        /// The rule.
        id: String,
        /// Which regex: `pattern 2`, `context`, `unless`, `location` or `location_skip`.
        field: String,
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
    /// A rule breaks one of the format's other rules.
    #[error("rule `{id}`: {problem}")]
    Invalid {
        /// The rule (or `?` when it has no id).
        id: String,
        /// What is wrong, in a few words.
        problem: String,
    },
    /// Two rules have the same id.
    #[error("rule `{id}` is defined more than once")]
    Duplicate {
        /// The id.
        id: String,
    },
    /// Every pattern compiles alone, but not all of them together in the prefilter.
    #[error("the rules' patterns are too large to compile together")]
    Prefilter(#[source] regex::Error),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: u32,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    tool: String,
    name: String,
    severity: Severity,
    priority: Option<i32>,
    pattern: Option<String>,
    #[serde(default)]
    patterns: Vec<String>,
    context: Option<String>,
    unless: Option<String>,
    location: Option<String>,
    location_skip: Option<String>,
    #[serde(default)]
    status: Vec<StatusSpec>,
    status_message: Option<String>,
    suggestion: String,
    docs: String,
    docs_fallback: Option<String>,
}

/// One alternative of a rule's `status`: every field given must hold.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusSpec {
    pub(super) exit_code: Option<i32>,
    pub(super) signal: Option<i32>,
    pub(super) timed_out: Option<bool>,
}

impl StatusSpec {
    pub(super) fn holds(
        &self,
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    ) -> bool {
        self.exit_code.is_none_or(|c| exit_code == Some(c))
            && self.signal.is_none_or(|s| signal == Some(s))
            && self.timed_out.is_none_or(|t| timed_out == t)
    }
}

/// A compiled rule.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) id: String,
    pub(super) tool: String,
    pub(super) name: Template,
    pub(super) severity: Severity,
    pub(super) priority: i32,
    pub(super) patterns: Vec<Regex>,
    pub(super) context: Option<Regex>,
    pub(super) unless: Option<Regex>,
    pub(super) location: Option<Regex>,
    pub(super) location_skip: Option<Regex>,
    pub(super) status: Vec<StatusSpec>,
    pub(super) status_message: Option<Template>,
    pub(super) suggestion: Template,
    pub(super) docs: Template,
    pub(super) docs_fallback: Option<Template>,
}

/// A compiled rule set: the rules, and one prefilter over all their patterns.
///
/// Build it with [`Rules::parse`], or use the embedded rule file, [`Rules::builtin`].
#[derive(Debug)]
pub struct Rules {
    pub(super) rules: Vec<Rule>,
    /// Every pattern of every rule, in rule order: which ones match anywhere in a log.
    pub(super) prefilter: RegexSet,
    /// For each pattern of `prefilter`: its rule, and its index among the rule's patterns.
    pub(super) owners: Vec<(usize, usize)>,
}

/// The rule file compiled into the crate.
const BUILTIN: &str = include_str!("../../rules/autopsy.toml");

impl Rules {
    /// The rules of the embedded rule file (`insight/rules/autopsy.toml`), compiled once.
    pub fn builtin() -> &'static Rules {
        static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
        RULES.get_or_init(|| {
            Rules::parse(BUILTIN).expect("the built-in rule file is valid (a unit test parses it)")
        })
    }

    /// Parses and compiles a rule file (see `docs/autopsy.md` for the format).
    pub fn parse(toml: &str) -> Result<Rules, RulesError> {
        let file: RuleFile = toml::from_str(toml).map_err(RulesError::Toml)?;
        if file.version != 1 {
            return Err(RulesError::Version(file.version));
        }
        let mut seen = BTreeSet::new();
        let mut rules = Vec::with_capacity(file.rule.len());
        for spec in file.rule {
            if !seen.insert(spec.id.clone()) {
                return Err(RulesError::Duplicate { id: spec.id });
            }
            rules.push(compile(spec)?);
        }
        let mut sources = Vec::new();
        let mut owners = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            for (p, pattern) in rule.patterns.iter().enumerate() {
                sources.push(pattern.as_str().to_owned());
                owners.push((r, p));
            }
        }
        let prefilter = RegexSetBuilder::new(&sources)
            .multi_line(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(RulesError::Prefilter)?;
        Ok(Rules {
            rules,
            prefilter,
            owners,
        })
    }

    /// The rule ids, in file order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn invalid(id: &str, problem: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        id: if id.is_empty() { "?".into() } else { id.into() },
        problem: problem.into(),
    }
}

fn regex(id: &str, field: &str, source: &str) -> Result<Regex, RulesError> {
    if has_unicode_word_boundary(source) {
        return Err(invalid(
            id,
            format!(
                "{field} has a Unicode word boundary; write `(?-u:\\b)` (a Unicode one makes \
                 searches of non-ASCII logs fall back to a slow engine)"
            ),
        ));
    }
    RegexBuilder::new(source)
        .multi_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|source| RulesError::Regex {
            id: id.to_owned(),
            field: field.to_owned(),
            source,
        })
}

/// Whether `source` has `\b`, `\B`, `\<` or `\>` other than as `(?-u:\b)` or `(?-u:\B)`.
fn has_unicode_word_boundary(source: &str) -> bool {
    let stripped = source.replace(r"(?-u:\b)", "").replace(r"(?-u:\B)", "");
    let mut chars = stripped.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.next(), Some('b' | 'B' | '<' | '>')) {
            return true;
        }
    }
    false
}

fn compile(spec: RuleSpec) -> Result<Rule, RulesError> {
    let id = spec.id.as_str();
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && id.contains('.')
        && !id.starts_with('.')
        && !id.ends_with('.');
    if !id_ok {
        return Err(invalid(
            id,
            "the id must be lowercase `tool.kind` (letters, digits, `.`, `_`, `-`)",
        ));
    }
    if id == super::GENERIC_RULE {
        return Err(invalid(id, "the id is reserved for the generic finding"));
    }
    for (field, value) in [("tool", &spec.tool), ("name", &spec.name)] {
        if value.trim().is_empty() {
            return Err(invalid(id, format!("`{field}` is empty")));
        }
    }
    let priority = spec.priority.unwrap_or(DEFAULT_PRIORITY);
    if !(0..=MAX_PRIORITY).contains(&priority) {
        return Err(invalid(
            id,
            format!("priority {priority} is outside 0..={MAX_PRIORITY}"),
        ));
    }

    let sources: Vec<String> = match (spec.pattern, spec.patterns.is_empty()) {
        (Some(_), false) => {
            return Err(invalid(id, "give either `pattern` or `patterns`, not both"));
        }
        (Some(p), true) => vec![p],
        (None, _) => spec.patterns,
    };
    if sources.is_empty() && spec.status.is_empty() {
        return Err(invalid(
            id,
            "the rule has neither a pattern nor a status to match",
        ));
    }
    let mut patterns = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        let re = regex(id, &format!("pattern {}", i + 1), source)?;
        if re.is_match("") {
            return Err(invalid(
                id,
                format!("pattern {} matches the empty string", i + 1),
            ));
        }
        patterns.push(re);
    }
    let optional = |field: &str, source: &Option<String>| -> Result<Option<Regex>, RulesError> {
        source.as_deref().map(|s| regex(id, field, s)).transpose()
    };
    let context = optional("context", &spec.context)?;
    let unless = optional("unless", &spec.unless)?;
    let location = optional("location", &spec.location)?;
    let location_skip = optional("location_skip", &spec.location_skip)?;
    if let Some(loc) = &location {
        if !loc
            .capture_names()
            .flatten()
            .any(|n| n == "file" || n == "line")
        {
            return Err(invalid(id, "`location` captures neither `file` nor `line`"));
        }
    } else if location_skip.is_some() {
        return Err(invalid(id, "`location_skip` is given without `location`"));
    }
    if spec
        .status
        .iter()
        .any(|s| s.exit_code.is_none() && s.signal.is_none() && s.timed_out.is_none())
    {
        return Err(invalid(id, "a `status` alternative is empty"));
    }
    if spec.status_message.is_some() && spec.status.is_empty() {
        return Err(invalid(id, "`status_message` is given without `status`"));
    }

    let suggestion = spec.suggestion.trim();
    if suggestion.is_empty() {
        return Err(invalid(id, "`suggestion` is empty"));
    }
    if suggestion.chars().next().is_some_and(char::is_uppercase) {
        return Err(invalid(
            id,
            "`suggestion` must start in lowercase (it is shown after a label)",
        ));
    }
    for (field, value) in [
        ("docs", Some(&spec.docs)),
        ("docs_fallback", spec.docs_fallback.as_ref()),
    ] {
        if let Some(v) = value {
            if !(v.starts_with("https://") || v.starts_with("docs/"))
                || v.contains(char::is_whitespace)
            {
                return Err(invalid(
                    id,
                    format!("`{field}` must be an https:// URL or a docs/ path"),
                ));
            }
        }
    }

    // Every placeholder must name something a match can provide.
    let mut groups: BTreeSet<String> = STATUS_VARS.iter().map(|s| (*s).to_owned()).collect();
    for re in patterns.iter().chain(&location) {
        groups.extend(re.capture_names().flatten().map(str::to_owned));
    }
    let template = |field: &str, text: &str| -> Result<Template, RulesError> {
        let t = Template::parse(text)
            .map_err(|problem| invalid(id, format!("`{field}`: {problem}")))?;
        if let Some(var) = t.vars().find(|v| !groups.contains(*v)) {
            return Err(invalid(
                id,
                format!("`{field}` uses {{{var}}}, which no pattern captures"),
            ));
        }
        Ok(t)
    };
    let docs = template("docs", &spec.docs)?;
    let docs_fallback = spec
        .docs_fallback
        .as_deref()
        .map(|d| template("docs_fallback", d))
        .transpose()?;
    if docs.has_required_vars() && docs_fallback.is_none() {
        return Err(invalid(
            id,
            "`docs` has a placeholder, so it needs a `docs_fallback`",
        ));
    }
    if docs_fallback
        .as_ref()
        .is_some_and(Template::has_required_vars)
    {
        return Err(invalid(id, "`docs_fallback` must not need a placeholder"));
    }
    Ok(Rule {
        name: template("name", &spec.name)?,
        suggestion: template("suggestion", suggestion)?,
        status_message: spec
            .status_message
            .as_deref()
            .map(|m| template("status_message", m))
            .transpose()?,
        docs,
        docs_fallback,
        id: spec.id,
        tool: spec.tool,
        severity: spec.severity,
        priority,
        patterns,
        context,
        unless,
        location,
        location_skip,
        status: spec.status,
    })
}

/// Text with `{group}` and `{group|fallback}` placeholders (`{{` and `}}` are braces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Template(Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var {
        name: String,
        fallback: Option<String>,
    },
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err("a `}` without its `{` (write `}}` for a brace)".into()),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err("a `{` without its `}` (write `{{` for a brace)".into());
                            }
                            Some(c) => inner.push(c),
                        }
                    }
                    let (name, fallback) = match inner.split_once('|') {
                        Some((n, f)) => (n, Some(f.to_owned())),
                        None => (inner.as_str(), None),
                    };
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!("`{{{inner}}}` is not a placeholder"));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Var {
                        name: name.to_owned(),
                        fallback,
                    });
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::Var { name, .. } => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    fn has_required_vars(&self) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, Piece::Var { fallback: None, .. }))
    }

    /// The text with each placeholder's value, its fallback, or nothing; and whether a
    /// placeholder without a fallback had no value.
    pub(super) fn render<'v>(&self, value: impl Fn(&str) -> Option<&'v str>) -> (String, bool) {
        let mut out = String::new();
        let mut missing = false;
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var { name, fallback } => match (value(name), fallback) {
                    (Some(v), _) => out.push_str(v),
                    (None, Some(f)) => out.push_str(f),
                    (None, None) => missing = true,
                },
            }
        }
        (out, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_values_fallbacks_and_braces() {
        let t = Template::parse("run `{cmd}` in {dir|the root} {{literally}}").unwrap();
        let (text, missing) = t.render(|n| (n == "cmd").then_some("make"));
        assert_eq!(text, "run `make` in the root {literally}");
        assert!(!missing);
        let (text, missing) = t.render(|_| None);
        assert_eq!(text, "run `` in the root {literally}");
        assert!(missing);
    }

    #[test]
    fn unicode_word_boundaries_are_found() {
        assert!(has_unicode_word_boundary(r"a\bb"));
        assert!(has_unicode_word_boundary(r"\Bx"));
        assert!(!has_unicode_word_boundary(r"(?-u:\b)x(?-u:\B)"));
        assert!(!has_unicode_word_boundary(r"a\\b"));
        assert!(!has_unicode_word_boundary(r"[\d\s]+"));
    }

    #[test]
    fn malformed_templates_are_rejected() {
        for bad in ["{", "a}", "{a", "{}", "{a b}", "{a{b}"] {
            assert!(Template::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn status_alternatives_need_every_field_they_give() {
        let s = StatusSpec {
            exit_code: Some(137),
            signal: None,
            timed_out: Some(false),
        };
        assert!(s.holds(Some(137), None, false));
        assert!(!s.holds(Some(137), None, true));
        assert!(!s.holds(Some(1), None, false));
        assert!(!s.holds(None, Some(9), false));
    }
}
