//! Cache namespaces: who may read and write which entries.
//!
//! Runs of protected branches (and local runs) use the trusted namespace. Every other run
//! — a pull request, from a fork or not, or an unprotected branch — reads the trusted
//! namespace and its own, and writes only its own. So a pull request that computes the same
//! key as `main` cannot plant a result `main` will later restore (the cache-poisoning
//! attack on shared build caches), and cannot shadow a trusted entry either: the trusted
//! namespace is read first.

/// The trusted namespace's name.
pub const TRUSTED: &str = "trusted";

/// The namespaces of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// Where this run stores.
    pub write: String,
    /// Where it looks, in order (trusted first).
    pub read: Vec<String>,
}

/// A namespace name that is not `[a-z0-9._-]{1,64}`.
#[derive(Debug, thiserror::Error)]
#[error("invalid cache namespace `{0}`: use 1 to 64 of a-z, 0-9, `.`, `_` and `-`")]
pub struct InvalidNamespace(pub String);

/// Whether `name` is a valid namespace name: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`, and
/// not `.` or `..` (it is a directory name in the cache).
pub fn is_valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name != "."
        && name != ".."
}

/// `s` reduced to namespace characters (lowercased; others become `-`), at most 64.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(64);
    if out.is_empty() || out == "." || out == ".." {
        out = "unnamed".into();
    }
    out
}

impl Namespaces {
    /// The trusted namespace only.
    pub fn trusted() -> Namespaces {
        Namespaces {
            write: TRUSTED.into(),
            read: vec![TRUSTED.into()],
        }
    }

    /// `name` (or the trusted namespace, when `name` is `trusted`).
    pub fn named(name: &str) -> Result<Namespaces, InvalidNamespace> {
        if !is_valid(name) {
            return Err(InvalidNamespace(name.into()));
        }
        if name == TRUSTED {
            return Ok(Namespaces::trusted());
        }
        Ok(Namespaces {
            write: name.into(),
            read: vec![TRUSTED.into(), name.into()],
        })
    }

    /// Whether this run writes the trusted namespace.
    pub fn is_trusted(&self) -> bool {
        self.write == TRUSTED
    }

    /// The namespaces GitHub Actions' environment calls for; trusted outside of it.
    ///
    /// - `pull_request*` events: `pr-N` for a branch of the same repository, `fork-pr-N`
    ///   for a fork (`GITHUB_REF` is `refs/pull/N/merge`; the head repository comes from
    ///   the event payload at `GITHUB_EVENT_PATH`);
    /// - other events on a protected ref (`GITHUB_REF_PROTECTED=true`): trusted;
    /// - anything else: `ref-<branch or tag>`.
    pub fn from_github(env: impl Fn(&str) -> Option<String>) -> Namespaces {
        if env("GITHUB_ACTIONS").as_deref() != Some("true") {
            return Namespaces::trusted();
        }
        let event = env("GITHUB_EVENT_NAME").unwrap_or_default();
        let git_ref = env("GITHUB_REF").unwrap_or_default();
        let name = if event.starts_with("pull_request") {
            let number = git_ref
                .strip_prefix("refs/pull/")
                .and_then(|r| r.split('/').next())
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .unwrap_or("unknown");
            let fork = match (head_repository(&env), env("GITHUB_REPOSITORY")) {
                (Some(head), Some(base)) => head != base,
                // Unknown: assume the worst.
                _ => true,
            };
            format!("{}pr-{number}", if fork { "fork-" } else { "" })
        } else if env("GITHUB_REF_PROTECTED").as_deref() == Some("true") {
            return Namespaces::trusted();
        } else {
            let short = git_ref
                .strip_prefix("refs/heads/")
                .or_else(|| git_ref.strip_prefix("refs/tags/"))
                .unwrap_or(&git_ref);
            format!("ref-{}", sanitize(short))
        };
        let name = sanitize(&name);
        Namespaces {
            write: name.clone(),
            read: vec![TRUSTED.into(), name],
        }
    }
}

/// `pull_request.head.repo.full_name` from the event payload.
fn head_repository(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let path = env("GITHUB_EVENT_PATH")?;
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.pointer("/pull_request/head/repo/full_name")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn github(vars: &[(&str, &str)]) -> Namespaces {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("GITHUB_ACTIONS".into(), "true".into());
        Namespaces::from_github(|k| map.get(k).cloned())
    }

    #[test]
    fn local_runs_and_protected_branches_are_trusted() {
        assert_eq!(Namespaces::from_github(|_| None), Namespaces::trusted());
        let ns = github(&[
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_REF_PROTECTED", "true"),
        ]);
        assert!(ns.is_trusted());
    }

    #[test]
    fn pull_requests_get_their_own_namespace_and_read_trusted_first() {
        let payload = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            payload.path(),
            r#"{"pull_request":{"head":{"repo":{"full_name":"someone/ci-intel"}}}}"#,
        )
        .unwrap();
        let path = payload.path().to_str().unwrap();
        let fork = github(&[
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_REF", "refs/pull/42/merge"),
            ("GITHUB_REPOSITORY", "team/ci-intel"),
            ("GITHUB_EVENT_PATH", path),
        ]);
        assert_eq!(fork.write, "fork-pr-42");
        assert_eq!(fork.read, ["trusted", "fork-pr-42"]);
        let same = github(&[
            ("GITHUB_EVENT_NAME", "pull_request_target"),
            ("GITHUB_REF", "refs/pull/7/merge"),
            ("GITHUB_REPOSITORY", "someone/ci-intel"),
            ("GITHUB_EVENT_PATH", path),
        ]);
        assert_eq!(same.write, "pr-7");
        // Without a payload the head repository is unknown: treated as a fork.
        let unknown = github(&[
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_REF", "refs/pull/9/merge"),
        ]);
        assert_eq!(unknown.write, "fork-pr-9");
        // Even on a protected base, a pull request is not trusted.
        let protected = github(&[
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_REF", "refs/pull/9/merge"),
            ("GITHUB_REF_PROTECTED", "true"),
        ]);
        assert!(!protected.is_trusted());
    }

    #[test]
    fn unprotected_branches_are_named_after_the_ref() {
        let ns = github(&[
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/heads/Feature/Ünïcode x"),
        ]);
        assert_eq!(ns.write, "ref-feature--n-code-x");
        assert!(is_valid(&ns.write));
    }

    #[test]
    fn names_are_checked() {
        assert!(Namespaces::named("pr-1").is_ok());
        assert!(Namespaces::named("trusted").unwrap().is_trusted());
        for bad in ["", "..", "A", "a/b", &"x".repeat(65)] {
            assert!(Namespaces::named(bad).is_err(), "{bad}");
        }
    }
}
