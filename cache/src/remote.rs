//! The client of the native protocol (feature `remote`): the team cache service as a tier
//! behind the local cache (`ci-intel run --remote-cache URL`).
//!
//! Plain `http://` only (put the service behind a TLS-terminating proxy on a trusted
//! network, or reach it over one); the token goes as `Authorization: Bearer`.
//!
//! A request that fails to connect, times out or is answered 5xx is tried again after a
//! short backoff; a 429 after its `Retry-After`; at most [`ATTEMPTS`] times and
//! [`RETRY_BUDGET`] of waiting in all. When a request still fails, the service counts as
//! down for the rest of the run: every later call fails at once with
//! [`RemoteError::Unavailable`], and the run goes on with its local cache. The first
//! failure is logged as a warning, later ones at debug level: a cache outage never fails a
//! build, nor floods its log.
//!
//! Nothing the service sends is trusted: manifests are verified by the local cache
//! (signature, keyring, namespace) and blobs by their BLAKE3 before they are used.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ureq::http::{Response, StatusCode};

use crate::ActionKey;
use crate::digest::Digest;
use crate::manifest::MAX_ENVELOPE;

/// Most tries of one request.
pub const ATTEMPTS: u32 = 3;
/// Most time one request spends waiting between its tries.
pub const RETRY_BUDGET: Duration = Duration::from_secs(10);
/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response may take to start, once the request is sent.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most digests sent in one `missing` query (the service's limit).
const MISSING_BATCH: usize = 10_000;

/// Why a request to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// An earlier request found the service down; this one was not sent.
    #[error("the remote cache is unavailable for the rest of this run")]
    Unavailable,
    /// The URL is not one this client can use.
    #[error("invalid remote cache URL `{0}`: use http://HOST[:PORT][/PREFIX]")]
    Url(String),
    /// The service could not be reached (after retries).
    #[error("cannot reach the remote cache: {what}")]
    Unreachable {
        /// The request.
        what: String,
        /// The cause.
        #[source]
        source: ureq::Error,
    },
    /// The service answered with an error status (after retries, when it was worth it).
    #[error("the remote cache answered {status} to {what}: {message}")]
    Status {
        /// The request.
        what: String,
        /// The status.
        status: u16,
        /// The start of the body.
        message: String,
    },
    /// The answer could not be read, or is not what was asked for.
    #[error("bad answer from the remote cache to {what}: {reason}")]
    Answer {
        /// The request.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file to upload could not be read.
    #[error("cannot read {} to upload it", path.display())]
    Local {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The service at one URL, for one run.
#[derive(Debug)]
pub struct RemoteCache {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    down: AtomicBool,
    warned: AtomicBool,
}

/// What a try of a request came to.
enum Try {
    Done(Response<ureq::Body>),
    Again {
        wait: Duration,
        last: RemoteError,
        outage: bool,
    },
}

impl RemoteCache {
    /// The service at `url` (`http://HOST[:PORT][/PREFIX]`), with `token` sent as Bearer.
    pub fn new(url: &str, token: Option<String>) -> Result<RemoteCache, RemoteError> {
        let base = url.trim_end_matches('/');
        let valid = base
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|host| !host.is_empty())
            && base.parse::<ureq::http::Uri>().is_ok();
        if !valid {
            return Err(RemoteError::Url(url.to_string()));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .max_redirects(0)
            .user_agent(concat!("ci-intel/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(RemoteCache {
            base: base.to_string(),
            token: token.filter(|t| !t.is_empty()),
            agent,
            down: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        })
    }

    /// The service's URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether a request found the service down: later ones are not sent.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Logs a failed request: the first as a warning (the run goes on with the local cache
    /// alone when the service is down), the others at debug level.
    pub fn report(&self, e: &RemoteError) {
        if matches!(e, RemoteError::Unavailable) {
            return;
        }
        let message = crate::error_chain(e);
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!("remote cache {}: {message}", self.base);
        } else if self.is_down() {
            tracing::warn!(
                "remote cache {} unavailable, this run goes on with the local cache only: {message}",
                self.base
            );
        } else {
            tracing::warn!("remote cache {}: {message}", self.base);
        }
    }

    /// The signed manifest of `key` in `namespace`, as stored; `None` when there is none.
    pub fn fetch_manifest(
        &self,
        namespace: &str,
        key: &ActionKey,
    ) -> Result<Option<Vec<u8>>, RemoteError> {
        let path = format!("/native/{namespace}/ac/{key}");
        let Some(response) = self.get(&path)? else {
            return Ok(None);
        };
        let limit = u64::try_from(MAX_ENVELOPE).unwrap_or(u64::MAX);
        read_limited(response, limit, &path).map(Some)
    }

    /// The blob `digest` as the service stores it (zstd), to be read (at most `limit`
    /// bytes are let through) and verified by the caller; `None` when there is none.
    pub fn fetch_blob(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<ureq::BodyReader<'static>>, RemoteError> {
        let path = format!("/native/cas/{digest}");
        Ok(self.get(&path)?.map(|r| {
            r.into_body()
                .into_with_config()
                .limit(limit.saturating_add(1))
                .reader()
        }))
    }

    /// Which of `digests` the service does not hold.
    pub fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, RemoteError> {
        let mut out = Vec::new();
        for batch in digests.chunks(MISSING_BATCH) {
            let body: Vec<String> = batch.iter().map(Digest::to_hex).collect();
            let body = serde_json::to_vec(&body).map_err(|e| RemoteError::Answer {
                what: "POST /native/cas/missing".into(),
                reason: e.to_string(),
            })?;
            let what = "POST /native/cas/missing";
            let response = self.request(what, || {
                self.with_auth(self.agent.post(self.url_of("/native/cas/missing")))
                    .content_type("application/json")
                    .send(&body[..])
            })?;
            let response = expect_ok(response, what)?;
            let text = read_limited(response, 16 << 20, what)?;
            let absent: Vec<String> =
                serde_json::from_slice(&text).map_err(|e| RemoteError::Answer {
                    what: what.into(),
                    reason: e.to_string(),
                })?;
            for d in absent {
                let d: Digest = d.parse().map_err(|_| RemoteError::Answer {
                    what: what.into(),
                    reason: format!("`{d}` is not a digest"),
                })?;
                if !batch.contains(&d) {
                    return Err(RemoteError::Answer {
                        what: what.into(),
                        reason: format!("{d} was not asked about"),
                    });
                }
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Uploads the blob `digest` from `file` (as the local store holds it: zstd).
    pub fn put_blob(&self, digest: &Digest, file: &Path) -> Result<(), RemoteError> {
        let what = format!("PUT /native/cas/{digest}");
        // Opened once up front, so that a missing file is said as such, not as a retry.
        File::open(file).map_err(|source| RemoteError::Local {
            path: file.to_path_buf(),
            source,
        })?;
        let response = self.request(&what, || {
            let f = File::open(file)?;
            self.with_auth(
                self.agent
                    .put(self.url_of(&format!("/native/cas/{digest}"))),
            )
            .content_type("application/octet-stream")
            .send(f)
        })?;
        expect_ok(response, &what).map(drop)
    }

    /// Uploads the signed manifest of `key` in `namespace`.
    pub fn put_manifest(
        &self,
        namespace: &str,
        key: &ActionKey,
        sealed: &[u8],
    ) -> Result<(), RemoteError> {
        let path = format!("/native/{namespace}/ac/{key}");
        let what = format!("PUT {path}");
        let response = self.request(&what, || {
            self.with_auth(self.agent.put(self.url_of(&path)))
                .content_type("application/octet-stream")
                .send(sealed)
        })?;
        expect_ok(response, &what).map(drop)
    }

    fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// A GET of `path`: the response when 200, `None` when 404.
    fn get(&self, path: &str) -> Result<Option<Response<ureq::Body>>, RemoteError> {
        let what = format!("GET {path}");
        let response = self.request(&what, || {
            self.with_auth(self.agent.get(self.url_of(path))).call()
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        expect_ok(response, &what).map(Some)
    }

    /// Sends a request with `call`, again while it is worth it. An outage (no connection,
    /// or 5xx) after the last try marks the service down.
    fn request(
        &self,
        what: &str,
        call: impl Fn() -> Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>, RemoteError> {
        if self.is_down() {
            return Err(RemoteError::Unavailable);
        }
        let mut waited = Duration::ZERO;
        let started = Instant::now();
        for attempt in 1..=ATTEMPTS {
            let (wait, last, outage) = match classify(call(), what, attempt) {
                Try::Done(r) => return Ok(r),
                Try::Again { wait, last, outage } => (wait, last, outage),
            };
            let budget_left = RETRY_BUDGET.saturating_sub(waited.max(started.elapsed()));
            if attempt == ATTEMPTS || wait > budget_left {
                if outage {
                    self.down.store(true, Ordering::Relaxed);
                }
                return Err(last);
            }
            tracing::debug!(
                "remote cache: {}; trying again in {} ms",
                crate::error_chain(&last),
                wait.as_millis()
            );
            std::thread::sleep(wait);
            waited += wait;
        }
        Err(RemoteError::Unavailable)
    }
}

/// The backoff before try `attempt + 1`: 100 ms, 400 ms, ...
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 * 4u64.pow(attempt.saturating_sub(1).min(4)))
}

/// What to do after a try.
fn classify(result: Result<Response<ureq::Body>, ureq::Error>, what: &str, attempt: u32) -> Try {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let outage = !matches!(e, ureq::Error::BadUri(_) | ureq::Error::Http(_));
            return Try::Again {
                wait: if outage {
                    backoff(attempt)
                } else {
                    Duration::MAX
                },
                last: RemoteError::Unreachable {
                    what: what.to_string(),
                    source: e,
                },
                outage,
            };
        }
    };
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or_else(|| backoff(attempt), Duration::from_secs);
        return Try::Again {
            wait,
            last: status_error(response, what),
            outage: false,
        };
    }
    if status.is_server_error() {
        return Try::Again {
            wait: backoff(attempt),
            last: status_error(response, what),
            outage: true,
        };
    }
    Try::Done(response)
}

/// The response if it is a 200, else its error.
fn expect_ok(
    response: Response<ureq::Body>,
    what: &str,
) -> Result<Response<ureq::Body>, RemoteError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(status_error(response, what))
    }
}

/// The error a non-success response stands for, with the start of its body.
fn status_error(response: Response<ureq::Body>, what: &str) -> RemoteError {
    let status = response.status().as_u16();
    let message = response
        .into_body()
        .into_with_config()
        .limit(512)
        .lossy_utf8(true)
        .read_to_string()
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    RemoteError::Status {
        what: what.to_string(),
        status,
        message,
    }
}

/// The whole body, at most `limit` bytes.
fn read_limited(
    response: Response<ureq::Body>,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RemoteError> {
    response
        .into_body()
        .into_with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| RemoteError::Answer {
            what: what.to_string(),
            reason: crate::error_chain(&e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_accepted() {
        for good in ["http://cache:9090", "http://127.0.0.1:1/team/", "http://h"] {
            assert!(RemoteCache::new(good, None).is_ok(), "{good}");
        }
        for bad in ["https://cache", "cache:9090", "http://", "http:///x", ""] {
            assert!(
                matches!(RemoteCache::new(bad, None), Err(RemoteError::Url(_))),
                "{bad}"
            );
        }
        assert_eq!(
            RemoteCache::new("http://h:1/", None).unwrap().url(),
            "http://h:1"
        );
    }

    #[test]
    fn backoff_grows_and_stays_within_the_budget() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(400));
        let total: Duration = (1..ATTEMPTS).map(backoff).sum();
        assert!(total <= RETRY_BUDGET);
    }

    #[test]
    fn an_unreachable_service_is_down_after_its_retries_and_not_asked_again() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let remote = RemoteCache::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let key = ActionKey([7; 32]);
        let err = remote.fetch_manifest("trusted", &key).unwrap_err();
        assert!(matches!(err, RemoteError::Unreachable { .. }), "{err}");
        assert!(remote.is_down());
        assert!(matches!(
            remote.fetch_manifest("trusted", &key),
            Err(RemoteError::Unavailable)
        ));
    }
}
