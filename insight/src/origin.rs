//! Where a run comes from: repository, commit, branch and pull request, from the CI
//! environment (GitHub Actions, GitLab CI) and from git, and what kind of runner it is on.

use std::path::Path;
use std::process::{Command, Stdio};

/// A run's origin. Each field is what the environment or git says, or absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// `owner/name`.
    pub repo: Option<String>,
    /// The 40-digit commit.
    pub commit_sha: Option<String>,
    /// The branch: a pull request's head branch, else the pushed branch, else git's.
    pub branch: Option<String>,
    /// The pull (merge) request's number.
    pub pr: Option<u64>,
    /// `hosted` or `self-hosted`, when the CI environment says.
    pub runner_type: Option<String>,
}

impl Origin {
    /// Reads the CI environment through `env`, then asks git (read-only, no prompt) about
    /// `root` for what the environment did not say. `commit` is HEAD when the caller
    /// already knows it.
    pub fn detect(
        root: &Path,
        env: impl Fn(&str) -> Option<String>,
        commit: Option<&str>,
    ) -> Origin {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let mut o = Origin {
            runner_type: match env("RUNNER_ENVIRONMENT").as_deref() {
                Some("github-hosted") => Some("hosted".into()),
                Some("self-hosted") => Some("self-hosted".into()),
                _ => None,
            },
            ..Origin::default()
        };
        if env("GITHUB_ACTIONS").as_deref() == Some("true") {
            o.repo = env("GITHUB_REPOSITORY");
            o.branch = env("GITHUB_HEAD_REF").or_else(|| {
                (env("GITHUB_REF_TYPE").as_deref() != Some("tag"))
                    .then(|| env("GITHUB_REF_NAME"))
                    .flatten()
                    .filter(|b| !b.ends_with("/merge"))
            });
            o.pr = env("GITHUB_REF").as_deref().and_then(pull_number);
            o.commit_sha = env("GITHUB_SHA");
        } else if env("GITLAB_CI").as_deref() == Some("true") {
            o.repo = env("CI_PROJECT_PATH");
            o.branch =
                env("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME").or_else(|| env("CI_COMMIT_BRANCH"));
            o.pr = env("CI_MERGE_REQUEST_IID").and_then(|v| v.parse().ok());
            o.commit_sha = env("CI_COMMIT_SHA");
        }
        // What was built is what the checkout is at.
        let head = commit
            .map(str::to_string)
            .or_else(|| git(root, &["rev-parse", "--verify", "--quiet", "HEAD"]));
        if let Some(head) = head.filter(|h| is_commit(h)) {
            o.commit_sha = Some(head);
        }
        if o.branch.is_none() {
            o.branch = git(root, &["symbolic-ref", "--quiet", "--short", "HEAD"]);
        }
        if o.repo.is_none() {
            o.repo = git(root, &["config", "--get", "remote.origin.url"])
                .as_deref()
                .and_then(repo_of_url);
        }
        o.repo = o.repo.filter(|r| is_owner_name(r));
        o.commit_sha = o
            .commit_sha
            .filter(|c| is_commit(c))
            .map(|c| c.to_ascii_lowercase());
        o.pr = o.pr.filter(|n| *n >= 1);
        o
    }
}

/// `refs/pull/<n>/merge` (or `/head`) → n.
fn pull_number(git_ref: &str) -> Option<u64> {
    let rest = git_ref.strip_prefix("refs/pull/")?;
    rest.split('/').next()?.parse().ok()
}

/// `owner/name` of a remote URL: `https://host/owner/name(.git)`, `git@host:owner/name.git`,
/// `ssh://git@host/owner/name`.
fn repo_of_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        None => url.split_once(':')?.1,
    };
    let mut parts = path.rsplit('/');
    let name = parts.next()?;
    let owner = parts.next()?;
    let repo = format!("{owner}/{name}");
    is_owner_name(&repo).then_some(repo)
}

/// What v1.2's `repo` pattern accepts: one slash, both sides non-empty.
fn is_owner_name(r: &str) -> bool {
    matches!(r.split_once('/'), Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('/'))
}

fn is_commit(c: &str) -> bool {
    c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One line of git's answer about `root`, read-only: no prompt, no pager, no lazy fetch,
/// and no repository inherited from the environment.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_NO_LAZY_FETCH", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn remote_urls() {
        for (url, want) in [
            ("https://github.com/org/app.git", Some("org/app")),
            ("https://github.com/org/app", Some("org/app")),
            ("git@github.com:org/app.git", Some("org/app")),
            ("ssh://git@example.com:2222/org/app.git", Some("org/app")),
            ("https://gitlab.example/group/sub/app.git", Some("sub/app")),
            ("/srv/git/app", None),
            ("app", None),
        ] {
            assert_eq!(repo_of_url(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn github_pull_request() {
        let dir = tempfile::tempdir().unwrap();
        let o = Origin::detect(
            dir.path(),
            env_of(&[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_REPOSITORY", "org/app"),
                ("GITHUB_REF", "refs/pull/123/merge"),
                ("GITHUB_REF_NAME", "123/merge"),
                ("GITHUB_HEAD_REF", "feature/x"),
                ("GITHUB_SHA", "A".repeat(40).as_str()),
                ("RUNNER_ENVIRONMENT", "github-hosted"),
            ]),
            None,
        );
        assert_eq!(o.repo.as_deref(), Some("org/app"));
        assert_eq!(o.branch.as_deref(), Some("feature/x"));
        assert_eq!(o.pr, Some(123));
        assert_eq!(o.commit_sha, Some("a".repeat(40)));
        assert_eq!(o.runner_type.as_deref(), Some("hosted"));
    }

    #[test]
    fn github_push_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let push = Origin::detect(
            dir.path(),
            env_of(&[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_REF", "refs/heads/main"),
                ("GITHUB_REF_NAME", "main"),
                ("GITHUB_REF_TYPE", "branch"),
            ]),
            None,
        );
        assert_eq!((push.branch.as_deref(), push.pr), (Some("main"), None));
        let tag = Origin::detect(
            dir.path(),
            env_of(&[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_REF_NAME", "v1.0"),
                ("GITHUB_REF_TYPE", "tag"),
            ]),
            None,
        );
        assert_eq!(tag.branch, None, "a tag is not a branch");
    }

    #[test]
    fn git_checkout_outside_ci() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .status()
                .expect("git is installed")
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q", "-b", "trunk"]);
        run(&["remote", "add", "origin", "git@example.invalid:org/app.git"]);
        run(&["commit", "-q", "--allow-empty", "-m", "x"]);
        let o = Origin::detect(root, env_of(&[]), None);
        assert_eq!(o.repo.as_deref(), Some("org/app"));
        assert_eq!(o.branch.as_deref(), Some("trunk"));
        assert!(o.commit_sha.as_deref().is_some_and(is_commit), "{o:?}");
        assert_eq!(o.pr, None);
        // Outside a checkout: nothing is invented.
        let bare = tempfile::tempdir().unwrap();
        assert_eq!(
            Origin::detect(bare.path(), env_of(&[]), None),
            Origin::default()
        );
    }
}
