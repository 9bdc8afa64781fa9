//! Who may do what: the service's configuration file, its tokens (stored as SHA-256
//! hashes, never in clear), and the identity a request's `Authorization` header proves.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::Digest as _;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Read entries.
    Read,
    /// Read and write entries.
    ReadWrite,
}

/// Whose results a token writes: a trusted token writes the team's trusted space, an
/// untrusted one (a fork's pull request) only a space of its own that trusted clients
/// never read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// Writes the team's trusted space.
    Trusted,
    /// Writes only the team's untrusted space.
    Untrusted,
}

/// One token of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The team (namespace) it belongs to: `[a-z0-9-]`, 1–64 characters.
    pub team: String,
    /// Lowercase hex SHA-256 of the token (`ci-intel cache token-hash`).
    pub sha256: String,
    /// What it may do.
    pub scope: Scope,
    /// Whose results it writes.
    pub trust: Trust,
    /// A name for the access log (never the token).
    #[serde(default)]
    pub name: Option<String>,
}

/// Limits of one team, shared by its tokens.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamLimits {
    /// Requests per second, sustained.
    pub requests_per_second: f64,
    /// Requests allowed in a burst.
    pub burst_requests: f64,
    /// Bytes (in and out) per second, sustained.
    pub bytes_per_second: f64,
    /// Bytes allowed in a burst.
    pub burst_bytes: f64,
}

impl Default for TeamLimits {
    fn default() -> Self {
        TeamLimits {
            requests_per_second: 2000.0,
            burst_requests: 4000.0,
            bytes_per_second: 512.0 * 1024.0 * 1024.0,
            burst_bytes: 1024.0 * 1024.0 * 1024.0,
        }
    }
}

/// The service's configuration file (TOML).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bytes the store may hold; least recently used entries go first.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Largest request body accepted, bytes.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Seconds between scrubs of the whole store (default 6 hours; 0: never).
    #[serde(default)]
    pub scrub_interval_seconds: Option<u64>,
    /// Whether a request without a token may read (as team `public`, untrusted).
    #[serde(default)]
    pub anonymous_read: bool,
    /// The tokens.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
    /// Per-team limits; a team not listed gets the defaults.
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, TeamLimits>,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the service configuration {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid TOML of this shape.
    #[error("the service configuration {} is invalid", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A token entry is wrong.
    #[error("token {index} of the service configuration: {what}")]
    Token {
        /// Its position, from 1.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

impl Config {
    /// Reads and checks the configuration at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        for (i, t) in config.tokens.iter().enumerate() {
            let bad = |what: &str| ConfigError::Token {
                index: i + 1,
                what: what.to_string(),
            };
            if !valid_team(&t.team) {
                return Err(bad("`team` must be 1-64 characters of a-z, 0-9 and -"));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    "`sha256` must be the 64 hex digits of the token's SHA-256 (`ci-intel cache token-hash`)",
                ));
            }
        }
        Ok(config)
    }
}

/// Whether `team` is a usable team name.
pub fn valid_team(team: &str) -> bool {
    (1..=64).contains(&team.len())
        && team
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The lowercase hex SHA-256 of a token, as the configuration stores it.
pub fn token_hash(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The team.
    pub team: String,
    /// What it may do.
    pub scope: Scope,
    /// Whose results it writes.
    pub trust: Trust,
    /// The token's name, for logs.
    pub name: String,
}

/// Why a request is refused before it reaches the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, and anonymous reads are off (401).
    #[error("authentication required")]
    Missing,
    /// Credentials that match no token (401).
    #[error("unknown token")]
    Unknown,
    /// A header that is neither Basic nor Bearer, or not decodable (401).
    #[error("malformed authorization header")]
    Malformed,
}

/// The tokens, by hash.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: std::collections::HashMap<String, TokenEntry>,
    anonymous_read: bool,
}

impl Tokens {
    /// The tokens of `config`.
    pub fn new(config: &Config) -> Tokens {
        Tokens {
            by_hash: config
                .tokens
                .iter()
                .map(|t| (t.sha256.to_ascii_lowercase(), t.clone()))
                .collect(),
            anonymous_read: config.anonymous_read,
        }
    }

    /// The identity an `Authorization` header value proves. Basic credentials carry the
    /// token as the password (or as the user name when the password is empty), in either
    /// base64 alphabet, padded or not; Bearer carries it as is.
    pub fn identify(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let Some(header) = header else {
            return if self.anonymous_read {
                Ok(Identity {
                    team: "public".into(),
                    scope: Scope::Read,
                    trust: Trust::Untrusted,
                    name: "anonymous".into(),
                })
            } else {
                Err(AuthError::Missing)
            };
        };
        let (kind, rest) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        let token = if kind.eq_ignore_ascii_case("bearer") {
            rest.trim().to_string()
        } else if kind.eq_ignore_ascii_case("basic") {
            let decoded = decode_base64(rest.trim()).ok_or(AuthError::Malformed)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
            let (user, password) = text.split_once(':').unwrap_or((text.as_str(), ""));
            if password.is_empty() { user } else { password }.to_string()
        } else {
            return Err(AuthError::Malformed);
        };
        let entry = self
            .by_hash
            .get(&token_hash(&token))
            .ok_or(AuthError::Unknown)?;
        Ok(Identity {
            team: entry.team.clone(),
            scope: entry.scope,
            trust: entry.trust,
            name: entry.name.clone().unwrap_or_else(|| entry.team.clone()),
        })
    }
}

/// Base64 in the standard or the URL-safe alphabet, padded or not.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// An `Authorization` header is untrusted input: any value is an identity or a
        /// refusal, never a panic, and only the real token identifies as its team.
        #[test]
        fn any_header_is_identified_or_refused(header in "\\PC{0,120}") {
            let t = tokens();
            if let Ok(id) = t.identify(Some(&header)) {
                proptest::prop_assert_eq!(id.team, "team-a");
                proptest::prop_assert!(
                    header.contains("s3cret-main") || header.contains("fork-token")
                        || header.to_ascii_lowercase().starts_with("basic")
                );
            }
        }
    }

    fn tokens() -> Tokens {
        let config: Config = toml::from_str(&format!(
            r#"
[[token]]
team = "team-a"
sha256 = "{}"
scope = "read-write"
trust = "trusted"
name = "main-ci"

[[token]]
team = "team-a"
sha256 = "{}"
scope = "read-write"
trust = "untrusted"
"#,
            token_hash("s3cret-main"),
            token_hash("fork-token?>")
        ))
        .unwrap();
        Tokens::new(&config)
    }

    #[test]
    fn bearer_and_basic_in_both_alphabets_identify_the_token() {
        let t = tokens();
        let main = t.identify(Some("Bearer s3cret-main")).unwrap();
        assert_eq!((main.team.as_str(), main.trust), ("team-a", Trust::Trusted));
        assert_eq!(main.name, "main-ci");
        // "x:fork-token?>" encodes with `+`/`/` in one alphabet and `-`/`_` in the other.
        let raw = b"x:fork-token?>";
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        for enc in [STANDARD.encode(raw), URL_SAFE_NO_PAD.encode(raw)] {
            let id = t.identify(Some(&format!("Basic {enc}"))).unwrap();
            assert_eq!(id.trust, Trust::Untrusted, "{enc}");
        }
        // The token as the user name, with an empty password.
        let user_only = STANDARD.encode(b"s3cret-main:");
        assert_eq!(
            t.identify(Some(&format!("basic {user_only}")))
                .unwrap()
                .trust,
            Trust::Trusted
        );
    }

    #[test]
    fn missing_unknown_and_malformed_credentials_are_refused() {
        let t = tokens();
        assert_eq!(t.identify(None), Err(AuthError::Missing));
        assert_eq!(t.identify(Some("Bearer nope")), Err(AuthError::Unknown));
        assert_eq!(t.identify(Some("Digest abc")), Err(AuthError::Malformed));
        assert_eq!(t.identify(Some("Basic %%%")), Err(AuthError::Malformed));
        let anon = Tokens {
            anonymous_read: true,
            ..tokens()
        };
        let id = anon.identify(None).unwrap();
        assert_eq!((id.scope, id.trust), (Scope::Read, Trust::Untrusted));
    }

    #[test]
    fn a_config_with_a_token_in_clear_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.toml");
        std::fs::write(
            &path,
            "[[token]]\nteam = \"a\"\nsha256 = \"my-token\"\nscope = \"read\"\ntrust = \"trusted\"\n",
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.to_string().contains("token 1"), "{err}");
        std::fs::write(&path, "tokens = 3\n").unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }
}
