//! The HTTP server: the accept loop (with a header-read timeout), routing, the Bazel HTTP
//! remote cache protocol, authentication, per-team token buckets, metrics and access logs,
//! on a runtime of its own. `/ccache/…` is [ccache's protocol](super::ccache),
//! `/v8/artifacts…` [Turborepo's](super::turbo) and `/native/…` [ci-intel's
//! own](super::native);
//! everything else but `/healthz` and `/metrics` is Bazel's.
//!
//! Bazel's protocol: `GET`/`PUT`/`HEAD` of `[/<instance>]/ac/<sha256>` and
//! `[/<instance>]/cas/<sha256>`; 404 on a miss; a CAS upload whose body does not hash to its
//! name is refused with 400 and nothing is stored. A trusted token reads and writes its
//! team's space; an untrusted one (a fork's pull request) reads the trusted space, then its
//! own, and writes only its own. Every protocol keeps that rule, in spaces of its own.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest as _;

use super::auth::{AuthError, Config, Identity, Scope, TeamLimits, Tokens, Trust};
use super::store::{Kind, Store, StoreError};

/// Default size cap of the store.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
/// Default largest request body.
pub const DEFAULT_MAX_BODY: u64 = 1 << 30;
/// A request that has not finished in this long (once its body is in) is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A connection that has not sent a whole request head this long after it opened (or,
/// kept alive, after its previous response) is closed: a slowloris client that sends a
/// request a byte at a time, or half a request line and then nothing, holds no connection
/// longer than this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error("cannot open the store in {}", dir.display())]
    Store {
        /// Its directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: super::store::OpenError,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("cannot start the server's runtime")]
    Runtime(#[source] std::io::Error),
}

/// A token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Bucket {
        Bucket {
            level: burst,
            rate,
            burst,
            at: Instant::now(),
        }
    }

    /// Takes `n`, or says how long until it could.
    fn take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.burst);
        self.at = now;
        // A request larger than the burst can never fit: it waits for a full bucket.
        let need = n.min(self.burst);
        if self.level >= need {
            self.level -= need;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (need - self.level) / self.rate.max(1e-9),
            ))
        }
    }
}

/// Counters of one team.
#[derive(Clone, Debug, Default)]
struct TeamCounters {
    requests: u64,
    hits: u64,
    misses: u64,
    bytes_in: u64,
    bytes_out: u64,
    denials: u64,
    queue_denials: u64,
    refused_digests: u64,
    client_events: u64,
}

/// Latency histogram bucket bounds, seconds.
const LATENCY_BOUNDS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// A latency histogram.
#[derive(Debug, Default, Clone)]
struct Latency {
    buckets: [u64; LATENCY_BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Metrics {
    teams: BTreeMap<String, TeamCounters>,
    unauthenticated: u64,
    /// Request latency per team (`-` for requests without a valid token).
    latency: BTreeMap<String, Latency>,
    evictions: u64,
    scrubs: u64,
    scrub_checked: u64,
    quarantined: u64,
}

/// The state every request shares.
pub(super) struct Service {
    pub(super) store: Arc<Store>,
    tokens: Tokens,
    limits: BTreeMap<String, TeamLimits>,
    buckets: Mutex<BTreeMap<String, (Bucket, Bucket)>>,
    metrics: Mutex<Metrics>,
}

impl Service {
    fn count(&self, team: &str, f: impl FnOnce(&mut TeamCounters)) {
        if let Ok(mut m) = self.metrics.lock() {
            f(m.teams.entry(team.to_string()).or_default());
        }
    }

    /// Counts `n` usage events a client reported.
    pub(super) fn count_events(&self, team: &str, n: u64) {
        self.count(team, |c| c.client_events += n);
    }

    /// Counts an upload refused because its body is not what its name says.
    pub(super) fn count_refused_digest(&self, team: &str) {
        self.count(team, |c| c.refused_digests += 1);
    }

    /// Counts a request refused for its scope or team.
    pub(super) fn count_denial(&self, team: &str) {
        self.count(team, |c| c.denials += 1);
    }

    /// Charges one request and `bytes` to `team`'s buckets.
    pub(super) fn admit(&self, team: &str, bytes: u64) -> Result<(), Duration> {
        let limits = self.limits.get(team).copied().unwrap_or_default();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (requests, volume) = buckets.entry(team.to_string()).or_insert_with(|| {
            (
                Bucket::new(limits.requests_per_second, limits.burst_requests),
                Bucket::new(limits.bytes_per_second, limits.burst_bytes),
            )
        });
        let now = Instant::now();
        requests.take(1.0, now)?;
        volume.take(bytes as f64, now)
    }
}

/// A running service.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Waits until the server ends (after [`Running::stop`] from elsewhere, or a signal).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Starts the service on `listen` with its store in `dir`, on a runtime of its own. With
/// `signals`, SIGTERM and SIGINT stop it gracefully too.
pub fn start(
    listen: SocketAddr,
    dir: &Path,
    config: &Config,
    signals: bool,
) -> Result<Running, ServeError> {
    let store =
        Store::open(dir, config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES)).map_err(|source| {
            ServeError::Store {
                dir: dir.to_path_buf(),
                source,
            }
        })?;
    let service = Arc::new(Service {
        store: Arc::new(store),
        tokens: Tokens::new(config),
        limits: config.limits.clone(),
        buckets: Mutex::new(BTreeMap::new()),
        metrics: Mutex::new(Metrics::default()),
    });
    let max_body =
        usize::try_from(config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY)).unwrap_or(usize::MAX);
    // Store calls run on the blocking pool and take the store's one lock: a pool much
    // larger than the cores only adds threads waiting on it (and context switches).
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(cores)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(handle)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Arc::clone(&service));
    let scrub_every = Duration::from_secs(
        config
            .scrub_interval_seconds
            .unwrap_or(DEFAULT_SCRUB_INTERVAL.as_secs()),
    );
    if !scrub_every.is_zero() {
        runtime.spawn(scrub_loop(Arc::clone(&service), scrub_every));
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cache-serve".into())
        .spawn(move || {
            runtime.block_on(async move {
                let stop = async move {
                    if signals {
                        let mut term = tokio::signal::unix::signal(
                            tokio::signal::unix::SignalKind::terminate(),
                        )
                        .ok();
                        let term = async move {
                            match term.as_mut() {
                                Some(t) => {
                                    t.recv().await;
                                }
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = rx => {}
                            _ = tokio::signal::ctrl_c() => {}
                            () = term => {}
                        }
                    } else {
                        let _ = rx.await;
                    }
                    tracing::info!("cache service stopping: finishing requests in flight");
                };
                serve(listener, app, stop).await;
            });
        })
        .map_err(ServeError::Runtime)?;
    Ok(Running {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// Default time between scrubs.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Whether a stored entry is what its name says. Content-addressed blobs are hashed as
/// their protocol names them: Bazel's CAS by SHA-256 of the bytes, the native CAS by BLAKE3
/// of the decompressed blob. Action results, ccache's and Turborepo's entries are named by
/// keys, not by their content: the store's size check is all a scrub can do for them.
pub(super) fn entry_is_sound(space: &str, kind: Kind, key: &str, bytes: &[u8]) -> bool {
    if kind != Kind::Cas {
        return true;
    }
    // Spaces are `TEAM[/untrusted]/PROTOCOL[/...]`.
    let mut parts = space.split('/').skip(1).peekable();
    if parts.peek() == Some(&"untrusted") {
        parts.next();
    }
    match parts.next() {
        Some("bazel") => {
            let digest = sha2::Sha256::digest(bytes);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            hex == key
        }
        Some("native-cas") => match zstd::decode_all(bytes) {
            Ok(plain) => blake3::hash(&plain).to_hex().as_str() == key,
            Err(_) => false,
        },
        _ => true,
    }
}

/// Scrubs the whole store every `every`, off the async threads; failures are quarantined
/// by the store and counted.
async fn scrub_loop(svc: Arc<Service>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: a scrub after a restart checks what a crash left.
    loop {
        tick.tick().await;
        let store = Arc::clone(&svc.store);
        let report = tokio::task::spawn_blocking(move || store.scrub(entry_is_sound)).await;
        match report {
            Ok(Ok(r)) => {
                if r.quarantined > 0 {
                    tracing::warn!(
                        "cache scrub: {} of {} entries failed verification and were quarantined",
                        r.quarantined,
                        r.checked
                    );
                }
                if let Ok(mut m) = svc.metrics.lock() {
                    m.scrubs += 1;
                    m.scrub_checked += r.checked;
                    m.quarantined += r.quarantined;
                }
            }
            Ok(Err(e)) => tracing::error!("cache scrub failed: {}", crate::error_chain(&e)),
            Err(e) => tracing::error!("cache scrub task failed: {e}"),
        }
    }
}

/// Accepts connections on `listener` and serves HTTP/1.1 on them until `stop` resolves,
/// then lets every connection finish the request it is serving (idle ones close at once).
/// Unlike `axum::serve`, a connection gets [`HEADER_READ_TIMEOUT`] to send each request
/// head.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before we took its connection: nothing to do.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            // Out of file descriptors, most likely: wait for connections to close rather
            // than spin.
            Err(e) => {
                tracing::error!("cache service: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            match conn.await {
                Ok(()) => {}
                Err(e) if e.is_timeout() => tracing::info!(
                    target: "ci_intel::access",
                    peer = %peer,
                    "closed a connection that sent no whole request head in {} s",
                    HEADER_READ_TIMEOUT.as_secs()
                ),
                Err(e) => tracing::debug!("connection from {peer}: {e}"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A plain-text response.
pub(super) fn text(status: StatusCode, body: &str) -> Response {
    (status, format!("{body}\n")).into_response()
}

/// What a path names in Bazel's protocol.
struct Target {
    instance: Option<String>,
    kind: Kind,
    hash: String,
}

/// Parses `[/<instance>]/(ac|cas)/<sha256>`; `Err` is the 400 message.
fn parse_target(path: &str) -> Result<Target, &'static str> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts.len() < 2 {
        return Err("not a cache path: use [/<instance>]/ac/<sha256> or /cas/<sha256>");
    }
    let (hash, kind) = (parts[parts.len() - 1], parts[parts.len() - 2]);
    let kind = match kind {
        "ac" => Kind::Ac,
        "cas" => Kind::Cas,
        _ => return Err("not a cache path: use [/<instance>]/ac/<sha256> or /cas/<sha256>"),
    };
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("the digest must be 64 lowercase hex digits (SHA-256)");
    }
    let prefix = &parts[..parts.len() - 2];
    let instance = if prefix.is_empty() {
        None
    } else {
        if prefix.iter().any(|p| {
            p.is_empty()
                || *p == "."
                || *p == ".."
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }) {
            return Err("the instance name must be path components of A-Z, a-z, 0-9, - _ .");
        }
        Some(prefix.join("/"))
    };
    Ok(Target {
        instance,
        kind,
        hash: hash.to_string(),
    })
}

/// The space of `team`'s entries of `protocol` (`bazel`, `ccache`, `turbo`) that tokens of
/// `trust` write, and below it an instance's.
pub(super) fn space(team: &str, trust: Trust, protocol: &str, instance: Option<&str>) -> String {
    let base = match trust {
        Trust::Trusted => format!("{team}/{protocol}"),
        Trust::Untrusted => format!("{team}/untrusted/{protocol}"),
    };
    match instance {
        Some(i) => format!("{base}/{i}"),
        None => base,
    }
}

/// The spaces `id` reads, in order: a trusted token its team's space; an untrusted one the
/// trusted space first, then its own.
pub(super) fn read_spaces(id: &Identity, protocol: &str, instance: Option<&str>) -> Vec<String> {
    let mut spaces = vec![space(&id.team, Trust::Trusted, protocol, instance)];
    if id.trust == Trust::Untrusted {
        spaces.push(space(&id.team, Trust::Untrusted, protocol, instance));
    }
    spaces
}

/// Runs a store call off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    // In place, on this worker (its other tasks move to another): a hit takes
    // microseconds under the store's lock, and handing it to the blocking pool and back
    // cost more than the work (context switches were most of a 4 KiB GET).
    match tokio::task::block_in_place(f) {
        Ok(v) => Ok(v),
        Err(StoreError::BadName { .. }) => Err(text(StatusCode::BAD_REQUEST, "bad name")),
        Err(StoreError::TooLarge { .. }) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the whole store",
        )),
        Err(e) => {
            tracing::error!("cache service store: {}", crate::error_chain(&e));
            Err(text(StatusCode::INTERNAL_SERVER_ERROR, "store failure"))
        }
    }
}

async fn handle(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = svc.tokens.identify(auth);
    let team = identity
        .as_ref()
        .map_or_else(|_| "-".to_string(), |i| i.team.clone());
    let response = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        serve_request(&svc, &method, &uri, &headers, identity, body),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => text(StatusCode::REQUEST_TIMEOUT, "request took too long"),
    };
    let elapsed = started.elapsed();
    if let Ok(mut m) = svc.metrics.lock() {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        let l = m.latency.entry(team.clone()).or_default();
        l.buckets[bucket] += 1;
        l.sum += secs;
        l.count += 1;
    }
    tracing::info!(
        target: "ci_intel::access",
        method = %method,
        path = uri.path(),
        status = response.status().as_u16(),
        team = team.as_str(),
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

async fn serve_request(
    svc: &Arc<Service>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    identity: Result<Identity, AuthError>,
    body: Bytes,
) -> Response {
    let id = match identity {
        Ok(id) => id,
        Err(e) => {
            if let Ok(mut m) = svc.metrics.lock() {
                m.unauthenticated += 1;
            }
            let mut r = text(StatusCode::UNAUTHORIZED, &e.to_string());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ci-intel cache\", Bearer"),
            );
            return r;
        }
    };
    svc.count(&id.team, |c| c.requests += 1);
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/ccache/") {
        return super::ccache::serve(svc, method, rest, &id, body).await;
    }
    if let Some(rest) = path.strip_prefix("/native/") {
        return super::native::serve(svc, method, rest, &id, body).await;
    }
    if let Some(rest) = path
        .strip_prefix("/v8/artifacts")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        return super::turbo::serve(svc, method, rest, uri, headers, &id, body).await;
    }
    let target = match parse_target(path) {
        Ok(t) => t,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    match *method {
        Method::GET | Method::HEAD => read(svc, &id, &target, *method == Method::HEAD).await,
        Method::PUT => write(svc, &id, &target, body).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET, HEAD or PUT"),
    }
}

/// A 429 with `Retry-After`.
pub(super) fn too_many(svc: &Service, team: &str, wait: Duration) -> Response {
    svc.count(team, |c| {
        c.denials += 1;
        c.queue_denials += 1;
    });
    let mut r = text(StatusCode::TOO_MANY_REQUESTS, "over the team's rate limit");
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// How much of an entry a read needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// Its size only (HEAD).
    Size,
    /// Its first bytes, at most this many.
    Prefix(usize),
    /// All of it.
    All,
}

/// An entry a read found.
#[derive(Debug)]
pub(super) struct Hit {
    /// What the read wanted of it: nothing, its first bytes, or all of it.
    pub(super) bytes: Vec<u8>,
    /// Its size.
    pub(super) size: u64,
}

/// The entry `key` in the first of `spaces` that holds it.
pub(super) fn lookup(
    store: &Store,
    spaces: &[String],
    kind: Kind,
    key: &str,
    want: Want,
) -> Result<Option<Hit>, StoreError> {
    for s in spaces {
        if want == Want::Size {
            if let Some(size) = store.head(s, kind, key)? {
                return Ok(Some(Hit {
                    bytes: Vec::new(),
                    size,
                }));
            }
        } else if let Some((file, size)) = store.get(s, kind, key)? {
            let limit = match want {
                Want::Prefix(n) => size.min(n as u64),
                _ => size,
            };
            let mut bytes = Vec::with_capacity(usize::try_from(limit).unwrap_or(0));
            file.take(limit)
                .read_to_end(&mut bytes)
                .map_err(|source| StoreError::from_io(s, source))?;
            return Ok(Some(Hit { bytes, size }));
        }
    }
    Ok(None)
}

/// Reads `key` from the first of `spaces` that holds it, charging `id`'s team for the
/// request and the bytes served and counting a hit or a miss. `Err` is the response to
/// give instead (429, a store failure).
pub(super) async fn read_entry(
    svc: &Arc<Service>,
    id: &Identity,
    spaces: Vec<String>,
    kind: Kind,
    key: String,
    want: Want,
) -> Result<Option<Hit>, Response> {
    let store = Arc::clone(&svc.store);
    let found = blocking(move || lookup(&store, &spaces, kind, &key, want)).await?;
    let Some(hit) = found else {
        svc.admit(&id.team, 0)
            .map_err(|wait| too_many(svc, &id.team, wait))?;
        svc.count(&id.team, |c| c.misses += 1);
        return Ok(None);
    };
    let out = if want == Want::All { hit.size } else { 0 };
    svc.admit(&id.team, out)
        .map_err(|wait| too_many(svc, &id.team, wait))?;
    svc.count(&id.team, |c| {
        c.hits += 1;
        c.bytes_out += out;
    });
    Ok(Some(hit))
}

/// A 200 carrying an entry of `size` bytes: `body`, or no body for a HEAD.
pub(super) fn blob_response(body: Vec<u8>, size: u64, head: bool) -> Response {
    let mut r = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(body))
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
        r.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    r
}

/// Why `id` may not write `bytes` now, if it may not: 403 for a read-only token, 429 over
/// its team's rate (charged when it may).
pub(super) fn write_refusal(svc: &Service, id: &Identity, bytes: u64) -> Option<Response> {
    if id.scope != Scope::ReadWrite {
        svc.count_denial(&id.team);
        return Some(text(StatusCode::FORBIDDEN, "this token may only read"));
    }
    svc.admit(&id.team, bytes)
        .err()
        .map(|wait| too_many(svc, &id.team, wait))
}

/// Stores `parts`, one after the other, as the entry `key` of `space`; returns once it is
/// durable. `Err` is the response to give (a store failure).
pub(super) async fn write_entry(
    svc: &Arc<Service>,
    id: &Identity,
    space: String,
    kind: Kind,
    key: String,
    parts: Vec<Bytes>,
) -> Result<(), Response> {
    let store = Arc::clone(&svc.store);
    let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let info = blocking(move || {
        let mut w = store.writer(&space, kind, &key)?;
        for part in &parts {
            w.write_all(part)
                .map_err(|source| StoreError::from_io(&space, source))?;
        }
        w.commit()
    })
    .await?;
    svc.count(&id.team, |c| c.bytes_in += len);
    if let Ok(mut m) = svc.metrics.lock() {
        m.evictions += info.evicted;
    }
    Ok(())
}

async fn read(svc: &Arc<Service>, id: &Identity, t: &Target, head: bool) -> Response {
    let spaces = read_spaces(id, "bazel", t.instance.as_deref());
    let want = if head { Want::Size } else { Want::All };
    match read_entry(svc, id, spaces, t.kind, t.hash.clone(), want).await {
        Err(r) => r,
        Ok(None) => text(StatusCode::NOT_FOUND, "not found"),
        Ok(Some(hit)) => blob_response(hit.bytes, hit.size, head),
    }
}

async fn write(svc: &Arc<Service>, id: &Identity, t: &Target, body: Bytes) -> Response {
    if let Some(r) = write_refusal(svc, id, body.len() as u64) {
        return r;
    }
    if t.kind == Kind::Cas {
        let digest = sha2::Sha256::digest(&body);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if hex != t.hash {
            svc.count(&id.team, |c| c.refused_digests += 1);
            return text(
                StatusCode::BAD_REQUEST,
                "the body's SHA-256 is not the digest in the path; nothing stored",
            );
        }
    }
    let space = space(&id.team, id.trust, "bazel", t.instance.as_deref());
    match write_entry(svc, id, space, t.kind, t.hash.clone(), vec![body]).await {
        Err(r) => r,
        Ok(()) => StatusCode::OK.into_response(),
    }
}

/// A per-team counter: its name, help text and value.
type Counter = (&'static str, &'static str, fn(&TeamCounters) -> u64);

/// Prometheus text exposition of the counters.
async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Ok(m) = svc.metrics.lock() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable");
    };
    let counters: [Counter; 9] = [
        ("requests", "Requests", |c| c.requests),
        ("hits", "Cache hits", |c| c.hits),
        ("misses", "Cache misses", |c| c.misses),
        ("bytes_in", "Bytes uploaded", |c| c.bytes_in),
        ("bytes_out", "Bytes served", |c| c.bytes_out),
        ("denials", "Requests refused (scope or rate)", |c| c.denials),
        (
            "queue_denials",
            "Requests refused by the rate limit (429)",
            |c| c.queue_denials,
        ),
        (
            "refused_digests",
            "Uploads refused for a wrong digest",
            |c| c.refused_digests,
        ),
        (
            "client_events",
            "Cache usage events clients reported (Turborepo)",
            |c| c.client_events,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP ci_intel_cache_{name}_total {help}.");
        let _ = writeln!(out, "# TYPE ci_intel_cache_{name}_total counter");
        for (team, c) in &m.teams {
            let _ = writeln!(
                out,
                "ci_intel_cache_{name}_total{{team=\"{team}\"}} {}",
                get(c)
            );
        }
    }
    let _ = writeln!(out, "# TYPE ci_intel_cache_unauthenticated_total counter");
    let _ = writeln!(
        out,
        "ci_intel_cache_unauthenticated_total {}",
        m.unauthenticated
    );
    let _ = writeln!(out, "# TYPE ci_intel_cache_evictions_total counter");
    let _ = writeln!(out, "ci_intel_cache_evictions_total {}", m.evictions);
    let _ = writeln!(out, "# TYPE ci_intel_cache_scrubs_total counter");
    let _ = writeln!(out, "ci_intel_cache_scrubs_total {}", m.scrubs);
    let _ = writeln!(out, "# TYPE ci_intel_cache_scrub_checked_total counter");
    let _ = writeln!(
        out,
        "ci_intel_cache_scrub_checked_total {}",
        m.scrub_checked
    );
    let _ = writeln!(out, "# TYPE ci_intel_cache_quarantined_total counter");
    let _ = writeln!(out, "ci_intel_cache_quarantined_total {}", m.quarantined);
    let _ = writeln!(out, "# TYPE ci_intel_cache_request_seconds histogram");
    for (team, l) in &m.latency {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += l.buckets[i];
            let _ = writeln!(
                out,
                "ci_intel_cache_request_seconds_bucket{{team=\"{team}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += l.buckets[LATENCY_BOUNDS.len()];
        let _ = writeln!(
            out,
            "ci_intel_cache_request_seconds_bucket{{team=\"{team}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "ci_intel_cache_request_seconds_sum{{team=\"{team}\"}} {}",
            l.sum
        );
        let _ = writeln!(
            out,
            "ci_intel_cache_request_seconds_count{{team=\"{team}\"}} {}",
            l.count
        );
    }
    drop(m);
    if let Ok(stats) = svc.store.stats() {
        let _ = writeln!(out, "# TYPE ci_intel_cache_stored_bytes gauge");
        for s in &stats {
            let _ = writeln!(
                out,
                "ci_intel_cache_stored_bytes{{space=\"{}\"}} {}",
                s.space, s.bytes
            );
        }
    }
    let mut r = out.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever path a client sends, what is accepted names a kind and a SHA-256, and
        /// its instance cannot climb out of the team's space.
        #[test]
        fn accepted_paths_are_confined(path in "[a-z0-9./_-]{0,20}(/(ac|cas)/[0-9a-f]{64})?") {
            if let Ok(t) = parse_target(&path) {
                proptest::prop_assert_eq!(t.hash.len(), 64);
                if let Some(i) = &t.instance {
                    proptest::prop_assert!(i.split('/').all(|p| !p.is_empty() && p != "." && p != ".."));
                    proptest::prop_assert!(!i.starts_with('/'));
                    let space = space("team", Trust::Trusted, "bazel", Some(i));
                    proptest::prop_assert!(space.starts_with("team/bazel/"));
                }
            }
        }

        #[test]
        fn any_path_parses_or_is_refused_without_panicking(path in "\\PC{0,200}") {
            let _ = parse_target(&path);
        }
    }

    #[test]
    fn paths_parse_with_and_without_an_instance_and_bad_ones_are_refused() {
        let h = "a".repeat(64);
        let t = parse_target(&format!("/ac/{h}")).unwrap();
        assert_eq!((t.kind, t.instance), (Kind::Ac, None));
        let t = parse_target(&format!("/main/x86/cas/{h}")).unwrap();
        assert_eq!(
            (t.kind, t.instance.as_deref()),
            (Kind::Cas, Some("main/x86"))
        );
        for bad in [
            format!("/ac/{}", "A".repeat(64)),
            format!("/ac/{}", "a".repeat(63)),
            format!("/../cas/{h}"),
            format!("/x//cas/{h}"),
            format!("/blob/{h}"),
            "/".to_string(),
        ] {
            assert!(parse_target(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_scrub_checks_blobs_as_their_protocol_names_them() {
        let data = b"blob";
        let sha: String = sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(entry_is_sound("t/bazel", Kind::Cas, &sha, data));
        assert!(entry_is_sound(
            "t/untrusted/bazel/x86",
            Kind::Cas,
            &sha,
            data
        ));
        assert!(!entry_is_sound("t/bazel", Kind::Cas, &sha, b"blub"));
        let compressed = zstd::encode_all(&data[..], 3).unwrap();
        let b3 = blake3::hash(data).to_hex().to_string();
        assert!(entry_is_sound("t/native-cas", Kind::Cas, &b3, &compressed));
        assert!(
            !entry_is_sound("t/native-cas", Kind::Cas, &b3, data),
            "not zstd"
        );
        // Keys that do not name content: nothing to check beyond the size.
        assert!(entry_is_sound("t/ccache", Kind::Cas, "abc", b"anything"));
        assert!(entry_is_sound("t/bazel", Kind::Ac, &sha, b"result"));
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_how_long_to_wait() {
        let mut b = Bucket::new(10.0, 2.0);
        let now = b.at;
        assert!(b.take(1.0, now).is_ok());
        assert!(b.take(1.0, now).is_ok());
        let wait = b.take(1.0, now).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert!(b.take(1.0, now + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn untrusted_tokens_write_a_space_of_their_own() {
        assert_eq!(space("a", Trust::Trusted, "bazel", None), "a/bazel");
        assert_eq!(
            space("a", Trust::Untrusted, "bazel", Some("i")),
            "a/untrusted/bazel/i"
        );
        let fork = Identity {
            team: "a".into(),
            scope: Scope::ReadWrite,
            trust: Trust::Untrusted,
            name: "fork".into(),
        };
        assert_eq!(
            read_spaces(&fork, "ccache", None),
            ["a/ccache", "a/untrusted/ccache"]
        );
    }
}
