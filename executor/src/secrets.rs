//! The runtime secret sweep: credentials in a step's environment that the plan did not
//! declare as `secrets`.
//!
//! A declared secret is redacted from every log and kept out of cache keys; a credential
//! passed any other way (in `env`, or through `pass_env`) is neither. Before a step runs, its
//! environment is swept for values that look like credentials, and each variable that
//! holds one is reported by name and kind, never by value.
//!
//! The matchers are hand-written: each pattern is a fixed prefix and a character class,
//! which a few lines of byte scanning check faster than a regex engine is built.

use std::fmt;

/// What an AWS access key id looks like.
pub const AWS_ACCESS_KEY: &str = "AWS access key";
/// What an AWS secret access key looks like.
pub const AWS_SECRET_KEY: &str = "AWS secret access key";
/// What a GitHub token looks like.
pub const GITHUB_TOKEN: &str = "GitHub token";
/// What a PEM private key looks like.
pub const PRIVATE_KEY: &str = "private key";
/// What a Slack token looks like.
pub const SLACK_TOKEN: &str = "Slack token";
/// What a random-looking value of a credential-like name looks like.
pub const HIGH_ENTROPY: &str = "high-entropy value";

/// A variable whose value looks like a credential. It never holds the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The variable's name.
    pub name: String,
    /// What the value looks like: one of [`AWS_ACCESS_KEY`], [`AWS_SECRET_KEY`],
    /// [`GITHUB_TOKEN`], [`PRIVATE_KEY`], [`SLACK_TOKEN`] or [`HIGH_ENTROPY`].
    pub kind: &'static str,
}

impl fmt::Display for Finding {
    /// `` `NAME` holds what looks like a GitHub token ``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let article = if self
            .kind
            .starts_with(['A', 'E', 'I', 'O', 'a', 'e', 'i', 'o'])
        {
            "an"
        } else {
            "a"
        };
        write!(
            f,
            "`{}` holds what looks like {article} {}",
            self.name, self.kind
        )
    }
}

/// Sweeps `env` for credentials in variables not named in `declared_secrets`.
///
/// Each variable is reported at most once, with the first kind that matches, in this
/// order:
///
/// - [`PRIVATE_KEY`]: a PEM header `-----BEGIN … PRIVATE KEY-----` (any label ending in
///   `PRIVATE KEY`, and PGP's `PRIVATE KEY BLOCK`);
/// - [`AWS_ACCESS_KEY`]: `AKIA` or `ASIA` and 16 uppercase letters or digits, as a word;
/// - [`AWS_SECRET_KEY`]: in a variable whose name contains `AWS_SECRET`, a value of
///   exactly 40 characters of `A-Za-z0-9/+=` with an entropy of 3.5 bits per character or
///   more;
/// - [`GITHUB_TOKEN`]: `ghp_`, `gho_`, `ghu_`, `ghs_` or `ghr_` and 36 or more letters and
///   digits; `github_pat_` and 22 or more letters, digits and `_`;
/// - [`SLACK_TOKEN`]: `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-` or `xoxs-` and 10 or more letters,
///   digits and `-`;
/// - [`HIGH_ENTROPY`]: in a variable named `*_TOKEN`, `*_SECRET`, `*_KEY` or `*_PASSWORD`
///   (or just `TOKEN`, `SECRET`, `KEY`, `PASSWORD`; in any case, and not containing
///   `PUBLIC`), a value of 20 characters or more with a Shannon entropy of 3.5 bits per
///   character or more that is not a path (`/…`, `~/…`, `./…`) and, under a `*_KEY`
///   name, not an identifier built of parts one of which is a lowercase word
///   (`cargo-linux-3f2a9c1e7b4d8a6f`).
///
/// Prefixed tokens are found anywhere in a value (`https://ghp_…@github.com/…`), but only
/// as whole words: not preceded, nor followed, by more of their own characters.
///
/// So `CACHE_KEY=v1` and `SORT_KEY=name` (too short), `CACHE_KEY=linux-x86_64-rust-1.85`
/// (an identifier), `SSH_KEY=/home/ci/.ssh/id_ed25519` (a path) and a UUID under
/// `PUBLIC_KEY_ID` (not a credential-like name) are not reported, while a random UUID
/// under `IDEMPOTENCY_KEY` is: many services issue UUIDs as API keys.
pub fn sweep<'a>(
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    declared_secrets: &[String],
) -> Vec<Finding> {
    env.into_iter()
        .filter(|(name, _)| !declared_secrets.iter().any(|d| d == name))
        .filter_map(|(name, value)| {
            kind_of(name, value).map(|kind| Finding {
                name: name.to_owned(),
                kind,
            })
        })
        .collect()
}

/// What `value` of variable `name` looks like, if it looks like a credential.
fn kind_of(name: &str, value: &str) -> Option<&'static str> {
    let v = value.as_bytes();
    let upper = name.to_ascii_uppercase();
    if has_private_key_header(v) {
        Some(PRIVATE_KEY)
    } else if has_aws_access_key(v) {
        Some(AWS_ACCESS_KEY)
    } else if upper.contains("AWS_SECRET") && is_aws_secret_key(value.trim()) {
        Some(AWS_SECRET_KEY)
    } else if has_github_token(v) {
        Some(GITHUB_TOKEN)
    } else if has_slack_token(v) {
        Some(SLACK_TOKEN)
    } else if is_credential_name(&upper)
        && is_high_entropy(value)
        && !is_path(value)
        && !(is_key_name(&upper) && is_structured(value))
    {
        Some(HIGH_ENTROPY)
    } else {
        None
    }
}

/// Offsets at which `prefix` starts a word in `hay`: not right after a byte of `word`.
fn word_starts<'h>(
    hay: &'h [u8],
    prefix: &'h [u8],
    word: fn(u8) -> bool,
) -> impl Iterator<Item = usize> + 'h {
    (0..hay.len().saturating_sub(prefix.len() - 1))
        .filter(move |&i| hay[i..].starts_with(prefix) && (i == 0 || !word(hay[i - 1])))
}

/// The length of the run of bytes of class `class` at the start of `hay`.
fn run_of(hay: &[u8], class: fn(u8) -> bool) -> usize {
    hay.iter().take_while(|&&b| class(b)).count()
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn is_slack(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn has_private_key_header(v: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ";
    (0..v.len())
        .filter(|&i| v[i..].starts_with(BEGIN))
        .any(|i| {
            let rest = &v[i + BEGIN.len()..];
            let label_len = run_of(rest, |b| {
                b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
            });
            let label = &rest[..label_len];
            rest[label_len..].starts_with(b"-----")
                && (label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
        })
}

fn has_aws_access_key(v: &[u8]) -> bool {
    [&b"AKIA"[..], b"ASIA"].into_iter().any(|prefix| {
        word_starts(v, prefix, is_alnum).any(|i| {
            run_of(&v[i + 4..], is_alnum) == 16 && run_of(&v[i + 4..], is_upper_alnum) == 16
        })
    })
}

fn is_aws_secret_key(v: &str) -> bool {
    v.len() == 40
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'='))
        && entropy(v) >= 3.5
}

fn has_github_token(v: &[u8]) -> bool {
    let classic = [&b"ghp_"[..], b"gho_", b"ghu_", b"ghs_", b"ghr_"]
        .into_iter()
        .any(|prefix| word_starts(v, prefix, is_word).any(|i| run_of(&v[i + 4..], is_alnum) >= 36));
    classic
        || word_starts(v, b"github_pat_", is_word)
            .any(|i| run_of(&v[i + b"github_pat_".len()..], is_word) >= 22)
}

fn has_slack_token(v: &[u8]) -> bool {
    [&b"xoxb-"[..], b"xoxp-", b"xoxa-", b"xoxr-", b"xoxs-"]
        .into_iter()
        .any(|prefix| word_starts(v, prefix, is_slack).any(|i| run_of(&v[i + 5..], is_slack) >= 10))
}

/// `*_TOKEN`, `*_SECRET`, `*_KEY`, `*_PASSWORD` or the bare word, not naming something
/// public. `upper` is the name in uppercase.
fn is_credential_name(upper: &str) -> bool {
    const WORDS: [&str; 4] = ["TOKEN", "SECRET", "KEY", "PASSWORD"];
    !upper.contains("PUBLIC")
        && WORDS.iter().any(|w| {
            upper == *w
                || upper
                    .strip_suffix(w)
                    .is_some_and(|head| head.ends_with('_'))
        })
}

/// `*_KEY` or `KEY`: a name that often holds an identifier (a cache key, a sort key, an
/// object key) rather than a credential. `upper` is the name in uppercase.
fn is_key_name(upper: &str) -> bool {
    upper == "KEY" || upper.ends_with("_KEY")
}

/// A value built of parts, one of them a lowercase word that is not hex
/// (`cargo-linux-3f2a9c1e`, `linux-x86_64-rust-1.85`): an identifier, not a random
/// credential, in which such a word is rare. A UUID has no such word.
fn is_structured(v: &str) -> bool {
    let parts = v
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty());
    let mut count = 0;
    let mut word = false;
    for part in parts {
        count += 1;
        word |= part.len() >= 4
            && part.bytes().all(|b| b.is_ascii_lowercase())
            && part.bytes().any(|b| b > b'f');
    }
    count >= 2 && word
}

/// At least 20 characters, and at least 3.5 bits of Shannon entropy per character.
fn is_high_entropy(v: &str) -> bool {
    v.chars().count() >= 20 && entropy(v) >= 3.5
}

/// Shannon entropy of the characters of `v`, in bits per character.
fn entropy(v: &str) -> f64 {
    let mut chars: Vec<char> = v.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    chars.sort_unstable();
    let n = chars.len() as f64;
    chars
        .chunk_by(|a, b| a == b)
        .map(|run| {
            let p = run.len() as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// A file system path: a reference to a credential, not one. Only path characters, so
/// that a random value that happens to start with `/` is still reported.
fn is_path(v: &str) -> bool {
    let body = if let Some(rest) = v.strip_prefix("~/").or_else(|| v.strip_prefix("./")) {
        rest
    } else if let Some(rest) = v.strip_prefix('/') {
        rest
    } else {
        return false;
    };
    body.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds(env: &[(&str, &str)]) -> Vec<(String, &'static str)> {
        sweep(env.iter().copied(), &[])
            .into_iter()
            .map(|f| (f.name, f.kind))
            .collect()
    }

    fn kind(name: &str, value: &str) -> Option<&'static str> {
        let found = kinds(&[(name, value)]);
        assert!(found.len() <= 1);
        found.first().map(|(_, k)| *k)
    }

    const GHP: &str = "ghp_R2d2C3poBb8aY7xQw3LmN0pZk4JtVf6Hs1Ue";

    #[test]
    fn known_token_formats_are_found_under_any_name() {
        for (value, want) in [
            ("AKIAIOSFODNN7EXAMPLE", AWS_ACCESS_KEY),
            ("ASIAY34FZKBOKMUTVV7A", AWS_ACCESS_KEY),
            ("aws_access_key_id=AKIAIOSFODNN7EXAMPLE;", AWS_ACCESS_KEY),
            (GHP, GITHUB_TOKEN),
            ("gho_16C7e42F292c6912E7710c838347Ae178B4a", GITHUB_TOKEN),
            ("ghs_16C7e42F292c6912E7710c838347Ae178B4a", GITHUB_TOKEN),
            ("ghu_16C7e42F292c6912E7710c838347Ae178B4a", GITHUB_TOKEN),
            ("ghr_16C7e42F292c6912E7710c838347Ae178B4a", GITHUB_TOKEN),
            (
                "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456",
                GITHUB_TOKEN,
            ),
            (
                "https://x-access-token:ghs_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r",
                GITHUB_TOKEN,
            ),
            ("xoxb-2048-1024-AbCdEfGhIjKl", SLACK_TOKEN),
            ("xoxp-123456789012-123456789012", SLACK_TOKEN),
            ("xoxa-2-abcdefghij", SLACK_TOKEN),
            ("xoxr-abcdefghijk", SLACK_TOKEN),
            ("xoxs-abcdefghijk", SLACK_TOKEN),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
                PRIVATE_KEY,
            ),
            ("-----BEGIN RSA PRIVATE KEY-----\\nMIIEow", PRIVATE_KEY),
            ("-----BEGIN PRIVATE KEY-----", PRIVATE_KEY),
            ("-----BEGIN ENCRYPTED PRIVATE KEY-----", PRIVATE_KEY),
            ("-----BEGIN EC PRIVATE KEY-----", PRIVATE_KEY),
            ("-----BEGIN PGP PRIVATE KEY BLOCK-----", PRIVATE_KEY),
        ] {
            assert_eq!(kind("SOME_SETTING", value), Some(want), "{value}");
        }
    }

    #[test]
    fn look_alikes_of_token_formats_are_not_found() {
        for value in [
            "AKIAIOSFODNN7EXAMPL",                     // 15 after the prefix
            "AKIAIOSFODNN7EXAMPLEX",                   // 17
            "XAKIAIOSFODNN7EXAMPLE",                   // not a word
            "AKIAiosfodnn7example",                    // lowercase
            "AIDAIOSFODNN7EXAMPLE",                    // a user id, not a key
            "ghp_short",                               // too short
            "ghp_16C7e42F292c6912E7710c838347Ae178B4", // 35
            "xghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_tooshort",
            "xoxb-123", // too short
            "axoxb-2048-1024-AbCdEfGhIjKl",
            "-----BEGIN PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN OPENSSH PRIVATE KEY", // no closing dashes
            "BEGIN PRIVATE KEY",
            "the docs mention ghp_ and xoxb- prefixes",
        ] {
            assert_eq!(kind("SOME_SETTING", value), None, "{value}");
        }
    }

    #[test]
    fn aws_secret_keys_are_found_by_name_and_shape() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(kind("AWS_SECRET_ACCESS_KEY", secret), Some(AWS_SECRET_KEY));
        assert_eq!(kind("my_aws_secret", secret), Some(AWS_SECRET_KEY));
        // Not 40 characters, or not random: not this kind (the name still ends in _KEY).
        assert_eq!(kind("AWS_SECRET_ACCESS_KEY", &"x".repeat(40)), None);
        assert_eq!(kind("AWS_SECRET_ACCESS_KEY", "short"), None);
        // Another name: only the entropy rule, which this name does not qualify for.
        assert_eq!(kind("AWS_REGION_NAME", secret), None);
    }

    #[test]
    fn high_entropy_values_of_credential_names() {
        let random = "q8Zr2LxT0vKp7NwY3sJd";
        for name in [
            "API_TOKEN",
            "UPLOAD_TOKEN",
            "db_password",
            "Signing_Key",
            "CLIENT_SECRET",
            "TOKEN",
            "password",
            "IDEMPOTENCY_KEY",
        ] {
            assert_eq!(kind(name, random), Some(HIGH_ENTROPY), "{name}");
        }
        // Identifiers are exempt under *_KEY names only.
        assert_eq!(
            kind("DEPLOY_TOKEN", "cargo-linux-3f2a9c1e7b4d8a6f0e1d2c3b"),
            Some(HIGH_ENTROPY)
        );
        // A random UUID is an API key at many services.
        assert_eq!(
            kind("HEROKU_API_KEY", "01234567-89ab-4def-9012-3456789abcde"),
            Some(HIGH_ENTROPY)
        );
    }

    #[test]
    fn ordinary_values_are_not_reported() {
        for (name, value) in [
            ("CACHE_KEY", "v1"),
            ("SORT_KEY", "name"),
            ("CACHE_KEY", "linux-x86_64-rust-1.85"),
            ("CACHE_KEY", "cargo-linux-3f2a9c1e7b4d8a6f0e1d2c3b"),
            ("S3_OBJECT_KEY", "builds/linux-x86_64/app-1.2.3.tar.gz"),
            ("PUBLIC_KEY_ID", "01234567-89ab-4def-9012-3456789abcde"),
            (
                "SSH_PUBLIC_KEY",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtaDq2v user@host",
            ),
            ("NEXT_PUBLIC_STRIPE_KEY", "pk_live_51HxQ2vK8ZrT0LpN3sYw"),
            ("SSH_KEY", "/home/runner/.ssh/id_ed25519_deploy"),
            ("TLS_KEY", "~/certs/server-2024.key"),
            ("DEPLOY_KEY", "./secrets/deploy_key.pem"),
            ("GITHUB_TOKEN", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ("DB_PASSWORD", "correct horse battery staple"),
            ("KEYRING", "q8Zr2LxT0vKp7NwY3sJd"), // does not end in _KEY
            ("TOKENS_DIR", "q8Zr2LxT0vKp7NwY3sJd"),
            ("MONKEY", "q8Zr2LxT0vKp7NwY3sJd"), // ends in KEY, not _KEY
            ("RUST_BACKTRACE", "1"),
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("SOURCE_DATE_EPOCH", "1700000000"),
        ] {
            assert_eq!(kind(name, value), None, "{name}={value}");
        }
    }

    #[test]
    fn a_random_value_starting_with_a_slash_is_not_taken_for_a_path() {
        assert_eq!(
            kind("SIGNING_KEY", "/q8Zr+LxT0vKp7NwY3sJd=="),
            Some(HIGH_ENTROPY)
        );
    }

    #[test]
    fn declared_secrets_are_not_reported_and_order_is_kept() {
        let env = [
            ("Z_TOKEN", GHP),
            ("GITHUB_TOKEN", GHP),
            ("A_TOKEN", "AKIAIOSFODNN7EXAMPLE"),
            ("PLAIN", "hello"),
        ];
        let found = sweep(env.iter().copied(), &["GITHUB_TOKEN".to_string()]);
        assert_eq!(
            found,
            [
                Finding {
                    name: "Z_TOKEN".into(),
                    kind: GITHUB_TOKEN
                },
                Finding {
                    name: "A_TOKEN".into(),
                    kind: AWS_ACCESS_KEY
                },
            ]
        );
        assert!(
            sweep(
                env.iter().copied(),
                &["Z_TOKEN".into(), "A_TOKEN".into(), "GITHUB_TOKEN".into()]
            )
            .is_empty()
        );
    }

    #[test]
    fn messages_name_the_variable_and_the_kind() {
        let f = |kind| Finding {
            name: "X".into(),
            kind,
        };
        assert_eq!(
            f(GITHUB_TOKEN).to_string(),
            "`X` holds what looks like a GitHub token"
        );
        assert_eq!(
            f(AWS_ACCESS_KEY).to_string(),
            "`X` holds what looks like an AWS access key"
        );
        assert_eq!(
            f(HIGH_ENTROPY).to_string(),
            "`X` holds what looks like a high-entropy value"
        );
    }

    #[test]
    fn entropy_in_bits_per_character() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abab") - 1.0).abs() < 1e-9);
        assert!((entropy("abcdefgh") - 3.0).abs() < 1e-9);
    }

    /// Values the sweep reports, and any text at all.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "(AKIA|ASIA)[A-Z0-9]{16}",
            "gh[pousr]_[A-Za-z0-9]{36,40}",
            "github_pat_[A-Za-z0-9_]{22,82}",
            "xox[bpars]-[A-Za-z0-9-]{10,40}",
            "-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----\n[A-Za-z0-9+/]{0,64}",
            "[A-Za-z0-9+/=_-]{20,64}",
            "\\PC{0,64}",
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Z][A-Z0-9_]{0,12}_(TOKEN|SECRET|KEY|PASSWORD)",
            "AWS_SECRET_ACCESS_KEY",
            "[A-Za-z_][A-Za-z0-9_]{0,16}",
        ]
    }

    proptest! {
        /// A finding holds the variable's name and a fixed kind: the value never appears
        /// in its fields or its message.
        #[test]
        fn findings_never_contain_the_value(
            env in prop::collection::vec((name(), value()), 1..8),
        ) {
            let found = sweep(env.iter().map(|(n, v)| (n.as_str(), v.as_str())), &[]);
            for f in &found {
                let kinds = [AWS_ACCESS_KEY, AWS_SECRET_KEY, GITHUB_TOKEN, PRIVATE_KEY, SLACK_TOKEN, HIGH_ENTROPY];
                prop_assert!(kinds.contains(&f.kind));
                // The message's own words, without the name.
                let template = Finding { name: String::new(), kind: f.kind }.to_string();
                let message = f.to_string();
                let mut flagged = env.iter().filter(|(n, _)| *n == f.name).peekable();
                prop_assert!(flagged.peek().is_some(), "{} is not a variable", f.name);
                for (_, v) in flagged {
                    // A value that is part of the name or of the fixed words (`A`, `KEY`)
                    // says nothing by appearing there.
                    if v.is_empty() || f.name.contains(v.as_str()) || template.contains(v.as_str()) {
                        continue;
                    }
                    prop_assert!(!f.name.contains(v.as_str()));
                    prop_assert!(!f.kind.contains(v.as_str()));
                    prop_assert!(!message.contains(v.as_str()), "{message:?} contains {v:?}");
                }
            }
        }

        /// Every generated token is found, under any name, unless declared.
        #[test]
        fn generated_tokens_are_found_unless_declared(
            n in name(),
            v in prop_oneof![
                "(AKIA|ASIA)[A-Z0-9]{16}",
                "gh[pousr]_[A-Za-z0-9]{36,40}",
                "github_pat_[A-Za-z0-9_]{22,82}",
                "xox[bpars]-[A-Za-z0-9-]{10,40}",
                "-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----\n[A-Za-z0-9+/]{0,64}",
            ],
        ) {
            prop_assert_eq!(sweep([(n.as_str(), v.as_str())], &[]).len(), 1);
            prop_assert!(sweep([(n.as_str(), v.as_str())], std::slice::from_ref(&n)).is_empty());
        }
    }
}
