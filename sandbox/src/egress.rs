//! The egress proxy: the only way out of a sandbox whose network mode is an allowlist.
//!
//! A sandboxed step has no network but loopback. When its policy allows some `host:port`
//! destinations, the step reaches them through an HTTP proxy listening on a loopback port
//! inside its network namespace; the listening socket is handed out of the namespace and
//! [`EgressProxy`] accepts on it from the host side, so every outbound connection is made
//! from the host's network namespace, after a decision:
//!
//! - **Default deny.** Only destinations matched by the [`Allowlist`] are reachable: exact
//!   names (`crates.io:443`), wildcards (`*.example.com:443`, any name strictly below
//!   `example.com`) and exact addresses (`127.0.0.1:8080`, `[::1]:8080`). Ports are always
//!   explicit.
//! - **The proxy resolves names itself** and refuses addresses that lead back into the host
//!   or its networks (loopback, private, link-local including the cloud metadata address,
//!   shared CGNAT space, unspecified, multicast, reserved, and the IPv4-mapped forms of
//!   those) even when the *name* is allowlisted. Only an exact address entry lets such an
//!   address through. Refused addresses of a name are skipped; the request is refused when
//!   none remains.
//! - **Every decision is an [`EgressEvent`]**: the step, the host and port asked for,
//!   whether it was allowed, why not, and the bytes carried each way.
//!
//! Both ways of using an HTTP proxy are served: `CONNECT host:port` opens a byte tunnel
//! (what HTTPS, git and most package managers use), and an absolute-form request such as
//! `GET http://host:port/path HTTP/1.1` is forwarded in origin form with the hop-by-hop and
//! `Proxy-*` headers removed and `Connection: close`; one connection carries one request,
//! and anything the client sends after it goes to the same destination, so it is no way
//! around the allowlist. Refusals are `403 Forbidden` with a
//! one-line body naming the destination and the reason; malformed requests are
//! `400 Bad Request`; unreachable destinations are `502 Bad Gateway`.
//!
//! Request heads are bounded ([`MAX_HEAD_BYTES`]) and must arrive within
//! [`HEAD_TIMEOUT`]; name resolution and connecting are each bounded by
//! [`CONNECT_TIMEOUT`]; at most [`MAX_CONNECTIONS`] connections are served at once.
//!
//! **Connects are retried.** A destination that refuses, resets or is unreachable is tried
//! again: up to [`CONNECT_ATTEMPTS`] rounds over its addresses, 100 ms then 200 ms apart,
//! all within [`CONNECT_TIMEOUT`]. Retrying a connect is always safe: no byte has been sent
//! yet. The event of the connection says how many retries it took
//! ([`EgressEvent::connect_retries`]); the destination is `502` only when every round failed.
//!
//! **Fault injection.** A proxy started with a [`NetFault`]
//! ([`EgressProxy::start_with_fault`]) applies it to every allowed connection: latency,
//! a bandwidth limit, a hang, failed connects, or a reset mid-stream, after the faults of
//! Toxiproxy. Refusals are never touched, so the allowlist reads the same under faults. A
//! kill switch file, checked as each connection is accepted, turns injection off at once.
//! What a fault did to a connection is in its event ([`EgressEvent::fault`]).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest request head (request line and headers) the proxy reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a client has to send a complete request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long resolving a destination, and then connecting to it, may each take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most client connections served at once; further clients wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Rounds of connect attempts to a destination: each round tries every address it resolved
/// to, in order; a failed round is retried after a short backoff (100 ms, then 200 ms), all
/// within [`CONNECT_TIMEOUT`].
pub const CONNECT_ATTEMPTS: u32 = 3;

/// Wait before the second connect round; each later round waits twice the one before.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Most bytes a [`NetFault::Latency`] holds back per direction before it stops reading.
const LATENCY_QUEUE_BYTES: usize = 512 * 1024;

/// Most headers in one request head.
const MAX_HEADERS: usize = 128;
/// How long, and how much, a refused client's unread input is drained before closing, so
/// that the refusal is not lost to a connection reset.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// Tunnel copy buffer, per direction.
const COPY_BUFFER: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------
// Allowlist
// ---------------------------------------------------------------------------------------

/// The destinations a step may reach, parsed from `host:port` entries.
///
/// Entries are one of:
/// - a name, `crates.io:443`: that name only (case-insensitive, a trailing dot ignored);
/// - a wildcard, `*.example.com:443`: every name strictly below `example.com`
///   (`a.example.com`, `a.b.example.com`), but not `example.com` itself;
/// - an address, `127.0.0.1:8080` or `[::1]:8080`: that address only. This is also the
///   only way to reach a loopback, private or link-local address, which the proxy
///   otherwise refuses even for an allowlisted name.
///
/// The port is required; there is no port wildcard. The empty allowlist (the
/// [`Default`]) allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// Normalised name (lowercase, no trailing dot).
    Name { name: String, port: u16 },
    /// Normalised parent domain with a leading dot: `.example.com`.
    Below { suffix: String, port: u16 },
    /// Canonical address (IPv4-mapped IPv6 addresses stored as IPv4).
    Addr(SocketAddr),
}

/// Why an allowlist entry was rejected. Each variant carries the entry as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// The entry has no `:port`, or an empty one.
    #[error("invalid allowlist entry `{0}`: port is required")]
    MissingPort(String),
    /// The port is `*`.
    #[error("invalid allowlist entry `{0}`: port wildcards are not allowed")]
    WildcardPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("invalid allowlist entry `{0}`: port must be a number from 1 to 65535")]
    BadPort(String),
    /// A `*` appears other than as the whole first label of a name.
    #[error(
        "invalid allowlist entry `{0}`: `*` is only allowed as the whole first label, \
         as in `*.example.com:443`"
    )]
    BadWildcard(String),
    /// An IPv6 address without brackets.
    #[error("invalid allowlist entry `{0}`: IPv6 addresses must be bracketed, as in `[::1]:443`")]
    BareIpv6(String),
    /// The bracketed part is not an IPv6 address.
    #[error("invalid allowlist entry `{0}`: invalid IPv6 address")]
    BadIpv6(String),
    /// The host is empty or not a valid DNS name.
    #[error("invalid allowlist entry `{0}`: invalid host name")]
    BadHost(String),
}

impl Allowlist {
    /// Parses `host:port` entries (surrounding whitespace ignored). Fails on the first
    /// invalid entry.
    pub fn parse<I, S>(entries: I) -> Result<Allowlist, AllowlistError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries = entries
            .into_iter()
            .map(|e| parse_entry(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Allowlist { entries })
    }

    /// Whether no entry was given (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a name entry (exact or wildcard) matches `host:port`. The comparison is
    /// case-insensitive and ignores one trailing dot. An address literal never matches here
    /// (see [`Allowlist::allows_addr`]).
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        if parse_ip_literal(host).is_some() {
            return false;
        }
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        self.entries.iter().any(|e| match e {
            Entry::Name { name, port: p } => *p == port && *name == host,
            Entry::Below { suffix, port: p } => {
                *p == port && host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            Entry::Addr(_) => false,
        })
    }

    /// Whether an address entry is exactly `addr`. IPv4-mapped IPv6 addresses compare
    /// equal to their IPv4 form.
    pub fn allows_addr(&self, addr: SocketAddr) -> bool {
        let addr = canonical(addr);
        self.entries.contains(&Entry::Addr(addr))
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match e {
                Entry::Name { name, port } => write!(f, "{name}:{port}")?,
                Entry::Below { suffix, port } => write!(f, "*{suffix}:{port}")?,
                Entry::Addr(addr) => write!(f, "{addr}")?,
            }
        }
        Ok(())
    }
}

fn parse_entry(raw: &str) -> Result<Entry, AllowlistError> {
    let s = raw.trim();
    let err = |f: fn(String) -> AllowlistError| f(raw.to_owned());
    let split = split_authority(s).map_err(|e| match e {
        SplitError::BareIpv6 => err(AllowlistError::BareIpv6),
        SplitError::Unbalanced => err(AllowlistError::BadIpv6),
        SplitError::Trailing => err(AllowlistError::BadHost),
    })?;
    let port = match split.port {
        None | Some("") => return Err(err(AllowlistError::MissingPort)),
        Some("*") => return Err(err(AllowlistError::WildcardPort)),
        Some(p) => parse_port(p).ok_or_else(|| err(AllowlistError::BadPort))?,
    };
    if split.bracketed {
        let ip: Ipv6Addr = split
            .host
            .parse()
            .map_err(|_| err(AllowlistError::BadIpv6))?;
        return Ok(Entry::Addr(canonical(SocketAddr::new(ip.into(), port))));
    }
    if let Ok(ip) = split.host.parse::<Ipv4Addr>() {
        return Ok(Entry::Addr(SocketAddr::new(ip.into(), port)));
    }
    if let Some(parent) = split.host.strip_prefix("*.") {
        if parent.contains('*') {
            return Err(err(AllowlistError::BadWildcard));
        }
        let parent = normalize_name(parent).ok_or_else(|| err(AllowlistError::BadHost))?;
        return Ok(Entry::Below {
            suffix: format!(".{parent}"),
            port,
        });
    }
    if split.host.contains('*') {
        return Err(err(AllowlistError::BadWildcard));
    }
    let name = normalize_name(split.host).ok_or_else(|| err(AllowlistError::BadHost))?;
    Ok(Entry::Name { name, port })
}

/// `host[:port]` split apart; `host` is without brackets.
#[derive(Debug)]
struct Split<'a> {
    host: &'a str,
    port: Option<&'a str>,
    bracketed: bool,
}

#[derive(Debug)]
enum SplitError {
    /// More than one `:` outside brackets.
    BareIpv6,
    /// `[` without `]`.
    Unbalanced,
    /// Something other than `:port` after `]`.
    Trailing,
}

fn split_authority(s: &str) -> Result<Split<'_>, SplitError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(SplitError::Unbalanced)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(SplitError::Trailing)?),
        };
        return Ok(Split {
            host,
            port,
            bracketed: true,
        });
    }
    match s.split_once(':') {
        None => Ok(Split {
            host: s,
            port: None,
            bracketed: false,
        }),
        Some((_, port)) if port.contains(':') => Err(SplitError::BareIpv6),
        Some((host, port)) => Ok(Split {
            host,
            port: Some(port),
            bracketed: false,
        }),
    }
}

/// A decimal port from 1 to 65535 (no sign, no spaces).
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

/// Lowercases a DNS name and drops one trailing dot; `None` if it is not a valid name
/// (labels of 1 to 63 letters, digits, `-` or `_`, not starting or ending with `-`; at
/// most 253 characters; the last label not all digits, so that no name reads as an IPv4
/// address: `127.0.0.1.` or `1.2.3`, which the resolver would take for 1.2.0.3).
fn normalize_name(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let numeric_top = s
        .rsplit('.')
        .next()
        .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()));
    (s.split('.').all(valid_label) && !numeric_top).then(|| s.to_ascii_lowercase())
}

/// An IPv4 literal, or an IPv6 literal with or without brackets.
fn parse_ip_literal(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

// ---------------------------------------------------------------------------------------
// Address classification
// ---------------------------------------------------------------------------------------

/// Why an address must not be reached through an allowlisted *name*, or `None` for an
/// ordinary public address. The text completes "… resolves to ADDR, <text>".
fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_unspecified() {
        "an unspecified address"
    } else if a == 0 {
        "a \"this network\" address (0.0.0.0/8)"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_private() {
        "a private address"
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        "the link-local cloud metadata address"
    } else if ip.is_link_local() {
        "a link-local address"
    } else if a == 100 && (b & 0xc0) == 64 {
        "a shared (CGNAT) address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else if a >= 240 {
        "a reserved address"
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let s = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 reaches the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return refused_v4(Ipv4Addr::new(a, b, c, d));
    }
    Some(if ip.is_unspecified() {
        "an unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if s[..6] == [0; 6] {
        "an IPv4-compatible address (deprecated)"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "a unique local (private) address"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "a link-local address"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "a site-local address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else {
        return None;
    })
}

// ---------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------

/// One decision of the egress proxy, sent when the request is refused or, for an allowed
/// one, when its connection ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressEvent {
    /// The step the proxy serves.
    pub step: String,
    /// The host asked for: a lowercased name, or an address (IPv6 without brackets).
    /// Empty when the request was malformed.
    pub host: String,
    /// The port asked for; 0 when the request was malformed.
    pub port: u16,
    /// Whether the allowlist and address checks let the request through.
    pub allowed: bool,
    /// Why the request was refused; for an allowed request, why the destination could not
    /// be reached, if it could not.
    pub reason: Option<String>,
    /// Bytes sent to the destination (for plain HTTP, including the rewritten head).
    pub bytes_up: u64,
    /// Bytes received from the destination.
    pub bytes_down: u64,
    /// What an injected [`NetFault`] did to this connection, as a lowercase fragment for a
    /// log line (`chaos drop_net: reset after 4096 bytes`); `None` when no fault touched it.
    pub fault: Option<String>,
    /// Connect rounds beyond the first that reaching the destination took (see
    /// [`CONNECT_ATTEMPTS`]), whether the failures were real or injected: 0 when the first
    /// round connected or nothing was connected to, `CONNECT_ATTEMPTS - 1` when the last
    /// round was needed or every round failed.
    pub connect_retries: u32,
}

/// A network fault the egress proxy applies to every allowed connection (fault injection).
///
/// Refused and malformed requests are never touched. The `fault` of a connection's
/// [`EgressEvent`] says what the fault did to it: `chaos delay_net: …` for the first three,
/// `chaos drop_net: …` for the last two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetFault {
    /// Each chunk sent toward the client is held back this long first (and the first byte
    /// of a connection waits once before connecting). Chunks are delayed as they arrive,
    /// not one after the other, like a long link: at most 512 KiB is held at once. Uploads
    /// are not delayed.
    Latency {
        /// How long each chunk is held.
        delay: Duration,
    },
    /// Data toward the client flows at most this many bytes per second (token bucket
    /// holding a tenth of a second's bytes; uploads are limited the same way). 0 is taken
    /// as 1.
    Bandwidth {
        /// The rate, each way.
        bytes_per_sec: u64,
    },
    /// The request is accepted, then nothing is answered or forwarded for up to `at_most`,
    /// after which the connection is reset (a hung upstream: proves the client's/step's
    /// timeout handling). The destination is not connected to; a client that closes first
    /// ends the hang.
    Hang {
        /// How long the connection is held before the reset.
        at_most: Duration,
    },
    /// The first `count` upstream connect rounds of each connection (see
    /// [`CONNECT_ATTEMPTS`]) fail as if reset by the peer, without touching the network;
    /// the proxy's connect retry recovers when `count < CONNECT_ATTEMPTS`, and the client
    /// gets `502` otherwise.
    RefuseConnects {
        /// How many rounds fail.
        count: u32,
    },
    /// After this many bytes have flowed toward the client, both sides are reset (RST, via
    /// `SO_LINGER` 0) mid-stream. A connection that carries fewer bytes ends normally.
    ResetAfter {
        /// Bytes from the destination forwarded before the reset.
        bytes: u64,
    },
}

/// A running egress proxy. Dropping it (or [`EgressProxy::shutdown`]) stops accepting,
/// closes the listener and aborts every open connection; each aborted connection still
/// reports its event with the bytes carried so far.
#[derive(Debug)]
pub struct EgressProxy {
    task: JoinHandle<()>,
}

impl EgressProxy {
    /// Starts serving `listener` on the current tokio runtime (a current-thread runtime is
    /// enough). The listener may belong to another network namespace: the proxy only
    /// accepts on it, and connects out from the namespace this process runs in. Every
    /// decision is sent to `events` (send failures are ignored).
    ///
    /// Fails if called outside a tokio runtime or if the listener cannot be registered
    /// with it.
    pub fn start(
        listener: std::net::TcpListener,
        step: String,
        allow: Allowlist,
        events: mpsc::UnboundedSender<EgressEvent>,
    ) -> io::Result<EgressProxy> {
        EgressProxy::start_with_fault(listener, step, allow, events, None, None)
    }

    /// [`EgressProxy::start`], applying `fault` (if any) to every allowed connection.
    ///
    /// When `kill_switch` names a file that exists at the moment a connection is accepted,
    /// the fault is not applied to that connection: creating the file stops injection for
    /// every later connection at once (connections already faulted keep their fault). A
    /// kill switch whose existence cannot be checked counts as present.
    pub fn start_with_fault(
        listener: std::net::TcpListener,
        step: String,
        allow: Allowlist,
        events: mpsc::UnboundedSender<EgressEvent>,
        fault: Option<NetFault>,
        kill_switch: Option<PathBuf>,
    ) -> io::Result<EgressProxy> {
        let faults = Faults { fault, kill_switch };
        EgressProxy::start_with(listener, step, allow, events, faults, Resolver::System)
    }

    fn start_with(
        listener: std::net::TcpListener,
        step: String,
        allow: Allowlist,
        events: mpsc::UnboundedSender<EgressEvent>,
        faults: Faults,
        resolver: Resolver,
    ) -> io::Result<EgressProxy> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            io::Error::other(format!("the egress proxy needs a tokio runtime: {e}"))
        })?;
        listener.set_nonblocking(true)?;
        let _guard = runtime.enter();
        let listener = TcpListener::from_std(listener)?;
        let shared = Arc::new(Shared {
            step,
            allow,
            events,
            faults,
            resolver,
        });
        let task = runtime.spawn(accept_loop(listener, shared));
        Ok(EgressProxy { task })
    }

    /// Stops the proxy and waits until the listener is closed. Open connections are
    /// aborted.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The only possible outcome is a cancellation (or the loop's own end).
        let _ = (&mut self.task).await;
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Shared {
    step: String,
    allow: Allowlist,
    events: mpsc::UnboundedSender<EgressEvent>,
    faults: Faults,
    resolver: Resolver,
}

/// The fault a proxy injects, and the file that turns it off.
#[derive(Debug, Default)]
struct Faults {
    fault: Option<NetFault>,
    kill_switch: Option<PathBuf>,
}

impl Faults {
    /// The fault for a connection accepted now: none while the kill switch exists (or
    /// cannot be checked).
    fn for_connection(&self) -> Option<NetFault> {
        let fault = self.fault.as_ref()?;
        match &self.kill_switch {
            Some(path) if !matches!(path.try_exists(), Ok(false)) => None,
            _ => Some(fault.clone()),
        }
    }
}

/// How destination names become addresses.
#[derive(Debug)]
enum Resolver {
    /// The host's resolver (`getaddrinfo`).
    System,
    /// Fixed answers; unknown names fail to resolve.
    #[cfg(test)]
    Fixed(std::collections::HashMap<String, Vec<IpAddr>>),
}

impl Resolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match self {
            Resolver::System => Ok(tokio::net::lookup_host((host, port)).await?.collect()),
            #[cfg(test)]
            Resolver::Fixed(map) => map
                .get(host)
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown name")),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let fault = shared.faults.for_connection();
                connections.spawn(serve(stream, Arc::clone(&shared), fault, permit));
            }
            Err(e) if is_fatal_accept_error(&e) => {
                tracing::error!(step = %shared.step, error = %e, "egress proxy listener failed");
                return;
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(step = %shared.step, error = %e, "egress proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn is_fatal_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}

/// The event of one connection, sent when it is dropped: at the end of the connection, or
/// when the proxy aborts it.
#[derive(Debug)]
struct Report {
    shared: Arc<Shared>,
    host: String,
    port: u16,
    allowed: bool,
    reason: Option<String>,
    up: AtomicU64,
    down: AtomicU64,
    fault: Option<String>,
    connect_retries: u32,
}

impl Report {
    fn new(shared: &Arc<Shared>, host: String, port: u16) -> Report {
        Report {
            shared: Arc::clone(shared),
            host,
            port,
            allowed: false,
            reason: None,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            fault: None,
            connect_retries: 0,
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let event = EgressEvent {
            step: self.shared.step.clone(),
            host: std::mem::take(&mut self.host),
            port: self.port,
            allowed: self.allowed,
            reason: self.reason.take(),
            bytes_up: *self.up.get_mut(),
            bytes_down: *self.down.get_mut(),
            fault: self.fault.take(),
            connect_retries: self.connect_retries,
        };
        tracing::debug!(?event, "egress decision");
        // The receiver may be gone when nobody listens any more; the event has nowhere to go.
        let _ = self.shared.events.send(event);
    }
}

/// A request's destination host.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// Normalised name.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// For events: the name, or the address without brackets.
    fn event_form(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

/// `host:port`, with IPv6 addresses bracketed.
struct Dest<'a>(&'a Host, u16);

impl fmt::Display for Dest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Host::Name(n) => write!(f, "{n}:{}", self.1),
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.1)),
        }
    }
}

/// A parsed proxy request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    host: Host,
    port: u16,
    /// `None` for CONNECT; for plain HTTP, the head to send to the destination.
    forward: Option<Vec<u8>>,
}

/// Why a request head could not be used.
#[derive(Debug)]
enum HeadError {
    /// The client closed before sending anything.
    Closed,
    Io(io::Error),
    TooLarge,
    /// The client closed mid-head.
    Truncated,
    Malformed(String),
}

async fn serve(
    mut client: TcpStream,
    shared: Arc<Shared>,
    fault: Option<NetFault>,
    _permit: OwnedSemaphorePermit,
) {
    let mut buf = Vec::with_capacity(4096);
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client, &mut buf)).await;
    let (status, why) = match head {
        Ok(Ok(n)) => match parse_request(&buf[..n]) {
            Ok(request) => {
                return handle(client, &shared, request, &buf[n..], fault.as_ref()).await;
            }
            Err(why) => (Status::BadRequest, why),
        },
        // Nothing was asked: nothing to decide.
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Io(e))) => {
            tracing::debug!(error = %e, "egress client failed before sending a request");
            return;
        }
        Err(_) if buf.is_empty() => return,
        Err(_) => (
            Status::RequestTimeout,
            "request head not received in time".to_owned(),
        ),
        Ok(Err(HeadError::TooLarge)) => (
            Status::HeadTooLarge,
            format!("request head larger than {MAX_HEAD_BYTES} bytes"),
        ),
        Ok(Err(HeadError::Truncated)) => (
            Status::BadRequest,
            "connection closed mid-request".to_owned(),
        ),
        Ok(Err(HeadError::Malformed(why))) => (Status::BadRequest, why),
    };
    let why = format!("malformed request: {why}");
    let mut report = Report::new(&shared, String::new(), 0);
    report.reason = Some(why.clone());
    drop(report);
    refuse(client, status, &why).await;
}

/// Decides on a parsed request and, if allowed, carries it to its destination, applying
/// `fault` on the way.
async fn handle(
    mut client: TcpStream,
    shared: &Arc<Shared>,
    request: Request,
    leftover: &[u8],
    fault: Option<&NetFault>,
) {
    let dest = Dest(&request.host, request.port);
    let mut report = Report::new(shared, request.host.event_form(), request.port);

    let addrs = match decide(shared, &request.host, request.port).await {
        Decision::Deny(why) => {
            let body = format!("egress to {dest} denied: {why}");
            report.reason = Some(why);
            drop(report);
            refuse(client, Status::Forbidden, &body).await;
            return;
        }
        Decision::Fail(why) => {
            report.allowed = true;
            let body = format!("egress to {dest} failed: {why}");
            report.reason = Some(why);
            drop(report);
            refuse(client, Status::BadGateway, &body).await;
            return;
        }
        Decision::Connect(addrs) => addrs,
    };
    report.allowed = true;

    let mut refused_rounds = 0;
    match fault {
        Some(NetFault::Hang { at_most }) => return hang(client, *at_most, &mut report).await,
        Some(NetFault::Latency { delay }) => {
            report.fault = Some(format!("chaos delay_net: {} per chunk", human(*delay)));
            tokio::time::sleep(*delay).await;
        }
        Some(NetFault::RefuseConnects { count }) => refused_rounds = *count,
        _ => {}
    }
    let (connected, tries) = connect_any(&addrs, refused_rounds).await;
    report.connect_retries = tries.rounds.saturating_sub(1);
    if tries.injected > 0 {
        let outcome = if connected.is_ok() {
            "recovered by the proxy's retry"
        } else {
            "the proxy gave up"
        };
        report.fault = Some(format!(
            "chaos drop_net: {} connect{} reset, {outcome}",
            tries.injected,
            if tries.injected == 1 { "" } else { "s" },
        ));
    }
    let mut upstream = match connected {
        Ok(s) => s,
        Err(why) => {
            let body = format!("egress to {dest} failed: {why}");
            report.reason = Some(why);
            drop(report);
            refuse(client, Status::BadGateway, &body).await;
            return;
        }
    };

    let started = match &request.forward {
        None => {
            let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
            match client.write_all(ok).await {
                Ok(()) => send_counted(&mut upstream, leftover, &report.up).await,
                Err(e) => Err(e),
            }
        }
        Some(head) => match send_counted(&mut upstream, head, &report.up).await {
            Ok(()) => send_counted(&mut upstream, leftover, &report.up).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = started {
        tracing::debug!(%dest, error = %e, "egress connection ended early");
        return;
    }

    let (up_shape, down_shape) = match fault {
        Some(NetFault::Latency { delay }) => (Shape::Pass, Shape::Latency(*delay)),
        Some(NetFault::Bandwidth { bytes_per_sec }) => {
            let rate = (*bytes_per_sec).max(1);
            report.fault = Some(format!("chaos delay_net: bandwidth {rate} B/s"));
            (
                Shape::Paced(Pacer::new(rate)),
                Shape::Paced(Pacer::new(rate)),
            )
        }
        Some(NetFault::ResetAfter { bytes }) => (Shape::Pass, Shape::CutAfter(*bytes)),
        _ => (Shape::Pass, Shape::Pass),
    };
    let tunnel = {
        let (mut client_rx, mut client_tx) = client.split();
        let (mut upstream_rx, mut upstream_tx) = upstream.split();
        tokio::try_join!(
            pump(&mut client_rx, &mut upstream_tx, &report.up, up_shape),
            pump(&mut upstream_rx, &mut client_tx, &report.down, down_shape),
        )
    };
    match tunnel {
        Ok(_) => {}
        Err(e) if e.get_ref().is_some_and(|e| e.is::<Cut>()) => {
            let bytes = report.down.load(Ordering::Relaxed);
            report.fault = Some(format!("chaos drop_net: reset after {bytes} bytes"));
            reset(&client);
            reset(&upstream);
        }
        Err(e) => tracing::debug!(%dest, error = %e, "egress connection ended with an error"),
    }
}

/// [`NetFault::Hang`]: holds the client without an answer, draining what it sends, until it
/// closes or `at_most` has passed; then resets it.
async fn hang(mut client: TcpStream, at_most: Duration, report: &mut Report) {
    // Said first, in case the proxy is stopped mid-hang.
    report.fault = Some(format!(
        "chaos delay_net: held without an answer (at most {})",
        human(at_most)
    ));
    let started = Instant::now();
    let drain = async {
        let mut sink = [0u8; 4096];
        while let Ok(1..) = client.read(&mut sink).await {}
    };
    let gave_up = tokio::time::timeout(at_most, drain).await.is_ok();
    report.fault = Some(if gave_up {
        format!(
            "chaos delay_net: held {} without an answer, until the client closed",
            human(started.elapsed())
        )
    } else {
        reset(&client);
        format!(
            "chaos delay_net: held {} without an answer, then reset",
            human(at_most)
        )
    });
}

/// Makes the coming close of `stream` a reset (RST) rather than an orderly end.
fn reset(stream: &TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(error = %e, "could not arm a reset on an egress connection");
    }
}

/// A duration as a person reads it in a log: `3 s`, `250 ms`, `1500 ms`, `50 µs`.
fn human(d: Duration) -> String {
    if d.as_secs() > 0 && d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if d.is_zero() || d >= Duration::from_millis(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} µs", d.as_micros())
    }
}

/// Reads into `buf` until it holds a complete request head; returns the head's length.
/// Bytes after the head (a request body, or early tunnel data) stay in `buf`.
async fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, HeadError> {
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::Request::new(&mut headers).parse(buf) {
                Ok(httparse::Status::Complete(n)) => return Ok(n),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(e) => return Err(HeadError::Malformed(e.to_string())),
            }
        }
        let room = MAX_HEAD_BYTES - buf.len();
        if room == 0 {
            return Err(HeadError::TooLarge);
        }
        let want = room.min(chunk.len());
        let n = client
            .read(&mut chunk[..want])
            .await
            .map_err(HeadError::Io)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                HeadError::Closed
            } else {
                HeadError::Truncated
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Headers never forwarded: hop-by-hop ones (`Proxy-*` are dropped by prefix), and `Host`,
/// which is rewritten from the request target.
const DROPPED_HEADERS: &[&str] = &["connection", "keep-alive", "te", "upgrade", "host"];

/// Headers that frame the request body; kept even when `Connection` names them, because
/// the body is forwarded as it arrives.
const FRAMING_HEADERS: &[&str] = &["content-length", "transfer-encoding"];

/// Parses a complete request head (as found by [`read_head`]).
fn parse_request(head: &[u8]) -> Result<Request, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head".to_owned()),
        Err(e) => return Err(e.to_string()),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err("incomplete request line".to_owned());
    };
    if method == "CONNECT" {
        let (host, port) = parse_target_authority(target, None)?;
        return Ok(Request {
            host,
            port,
            forward: None,
        });
    }

    let Some(rest) = strip_prefix_ignore_case(target, "http://") else {
        return Err(if strip_prefix_ignore_case(target, "https://").is_some() {
            "https:// targets must use CONNECT".to_owned()
        } else {
            format!("`{target}` is not an absolute http:// URL (is this a proxy request?)")
        });
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err("credentials in the request URL are not supported".to_owned());
    }
    let (host, port) = parse_target_authority(authority, Some(80))?;
    let path = path.split('#').next().unwrap_or_default();
    let path = match path.as_bytes().first() {
        None => "/".to_owned(),
        Some(b'?') => format!("/{path}"),
        Some(_) => path.to_owned(),
    };

    // Names listed in `Connection` are hop-by-hop too.
    let listed: Vec<String> = req
        .headers
        .iter()
        .filter(|h| {
            h.name.eq_ignore_ascii_case("connection")
                || h.name.eq_ignore_ascii_case("proxy-connection")
        })
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && !FRAMING_HEADERS.contains(&t.as_str()))
        .collect();

    let mut out = Vec::with_capacity(head.len() + 32);
    out.extend_from_slice(format!("{method} {path} HTTP/1.{version}\r\n").as_bytes());
    out.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if DROPPED_HEADERS.contains(&name.as_str())
            || name.starts_with("proxy-")
            || listed.contains(&name)
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request {
        host,
        port,
        forward: Some(out),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Parses a request's `host[:port]`; the port is required unless a default is given.
fn parse_target_authority(s: &str, default_port: Option<u16>) -> Result<(Host, u16), String> {
    let split = split_authority(s).map_err(|_| format!("invalid destination `{s}`"))?;
    let port = match (split.port, default_port) {
        (None | Some(""), Some(p)) => p,
        (None | Some(""), None) => return Err(format!("destination `{s}` has no port")),
        (Some(p), _) => parse_port(p).ok_or_else(|| format!("invalid port in `{s}`"))?,
    };
    let host = if split.bracketed {
        let ip: Ipv6Addr = split
            .host
            .parse()
            .map_err(|_| format!("invalid IPv6 address in `{s}`"))?;
        Host::Ip(ip.into())
    } else if let Ok(ip) = split.host.parse::<Ipv4Addr>() {
        Host::Ip(ip.into())
    } else {
        Host::Name(normalize_name(split.host).ok_or_else(|| format!("invalid host in `{s}`"))?)
    };
    Ok((host, port))
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Refused by policy; the reason.
    Deny(String),
    /// Allowed, but the destination cannot be reached; the reason.
    Fail(String),
    /// Allowed; the addresses that may be tried, in order.
    Connect(Vec<SocketAddr>),
}

async fn decide(shared: &Shared, host: &Host, port: u16) -> Decision {
    let name = match host {
        Host::Ip(ip) => {
            let addr = SocketAddr::new(*ip, port);
            if shared.allow.allows_addr(addr) {
                return Decision::Connect(vec![addr]);
            }
            return Decision::Deny(match refused_class(*ip) {
                Some(class) => format!("not on the allowlist ({ip} is {class})"),
                None => "not on the allowlist".to_owned(),
            });
        }
        Host::Name(name) => name,
    };
    if !shared.allow.allows_host(name, port) {
        return Decision::Deny("not on the allowlist".to_owned());
    }
    let addrs =
        match tokio::time::timeout(CONNECT_TIMEOUT, shared.resolver.resolve(name, port)).await {
            Err(_) => return Decision::Fail(format!("resolving {name} timed out")),
            Ok(Err(e)) => return Decision::Fail(format!("could not resolve {name}: {e}")),
            Ok(Ok(addrs)) if addrs.is_empty() => {
                return Decision::Fail(format!("{name} resolves to no address"));
            }
            Ok(Ok(addrs)) => addrs,
        };
    let mut refused = None;
    let mut usable = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match refused_class(addr.ip()) {
            Some(class) if !shared.allow.allows_addr(addr) => {
                refused.get_or_insert_with(|| {
                    format!(
                        "{name} resolves to {}, {class}, which is refused unless allowlisted \
                         as an address",
                        addr.ip()
                    )
                });
            }
            _ => usable.push(addr),
        }
    }
    match refused {
        Some(why) if usable.is_empty() => Decision::Deny(why),
        _ => Decision::Connect(usable),
    }
}

/// How the connect rounds of one connection went.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tries {
    /// Rounds started (each tries every address), injected ones included.
    rounds: u32,
    /// Rounds failed by a [`NetFault::RefuseConnects`].
    injected: u32,
}

/// Connects to the first reachable address, in up to [`CONNECT_ATTEMPTS`] rounds within
/// [`CONNECT_TIMEOUT`] overall; the first `refused_rounds` rounds fail as if reset.
async fn connect_any(
    addrs: &[SocketAddr],
    refused_rounds: u32,
) -> (Result<TcpStream, String>, Tries) {
    connect_rounds(addrs, refused_rounds, TcpStream::connect).await
}

/// [`connect_any`] with the connecting done by `connect`.
async fn connect_rounds<S, F, Fut>(
    addrs: &[SocketAddr],
    refused_rounds: u32,
    mut connect: F,
) -> (Result<S, String>, Tries)
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let mut tries = Tries::default();
    let Some(first) = addrs.first() else {
        return (Err("no address to connect to".to_owned()), tries);
    };
    let attempt = async {
        let mut last = String::new();
        let mut backoff = CONNECT_BACKOFF;
        for round in 0..CONNECT_ATTEMPTS {
            if round > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            tries.rounds += 1;
            if round < refused_rounds {
                tries.injected += 1;
                last = format!("could not connect to {first}: connection reset by peer (injected)");
                continue;
            }
            for addr in addrs {
                match connect(*addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = format!("could not connect to {addr}: {e}"),
                }
            }
        }
        Err(format!("{last} ({CONNECT_ATTEMPTS} attempts)"))
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err("connecting timed out".to_owned()));
    (result, tries)
}

async fn send_counted(to: &mut TcpStream, bytes: &[u8], count: &AtomicU64) -> io::Result<()> {
    if !bytes.is_empty() {
        to.write_all(bytes).await?;
        count.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// What a fault does to one direction of a tunnel.
#[derive(Debug)]
enum Shape {
    /// Nothing.
    Pass,
    /// Each chunk is held this long after it is read.
    Latency(Duration),
    /// Chunks are paced to a rate.
    Paced(Pacer),
    /// After this many more bytes, the tunnel is cut ([`Cut`]).
    CutAfter(u64),
}

/// The error a [`Shape::CutAfter`] pump ends with, so that the other direction stops too.
#[derive(Debug, thiserror::Error)]
#[error("cut by an injected fault")]
struct Cut;

/// A token bucket holding a tenth of a second's bytes (at least one byte, at most one copy
/// buffer), full at the start: each chunk of at most that size waits until the bucket
/// could have paid for the chunks before it.
#[derive(Debug)]
struct Pacer {
    /// Bytes per second, at least 1.
    rate: u64,
    /// When the bytes sent so far are paid for.
    next: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer {
            rate: rate.max(1),
            next: Instant::now(),
        }
    }

    /// Largest chunk sent at once.
    fn chunk(&self) -> usize {
        usize::try_from(self.rate / 10)
            .unwrap_or(usize::MAX)
            .clamp(1, COPY_BUFFER)
    }

    /// Waits until `n` more bytes may be sent, and counts them as sent.
    async fn take(&mut self, n: usize) {
        tokio::time::sleep_until(self.next).await;
        let nanos = (n as u64).saturating_mul(1_000_000_000) / self.rate;
        self.next = self.next.max(Instant::now()) + Duration::from_nanos(nanos);
    }
}

/// Copies until end of file, then half-closes the other side; `shape` says what a fault
/// does on the way.
async fn pump<R, W>(from: &mut R, to: &mut W, count: &AtomicU64, shape: Shape) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut shape = match shape {
        Shape::Latency(delay) => return pump_delayed(from, to, count, delay).await,
        other => other,
    };
    loop {
        let want = match &shape {
            Shape::CutAfter(0) => return Err(io::Error::other(Cut)),
            Shape::CutAfter(left) => usize::try_from(*left).unwrap_or(usize::MAX),
            Shape::Paced(pacer) => pacer.chunk(),
            Shape::Pass | Shape::Latency(_) => COPY_BUFFER,
        }
        .min(COPY_BUFFER);
        let n = from.read(&mut buf[..want]).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        match &mut shape {
            Shape::Paced(pacer) => pacer.take(n).await,
            Shape::CutAfter(left) => *left -= n as u64,
            Shape::Pass | Shape::Latency(_) => {}
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// [`pump`] for [`Shape::Latency`]: each chunk is written `delay` after it was read, while
/// later chunks are read meanwhile (up to [`LATENCY_QUEUE_BYTES`] held at once).
async fn pump_delayed<R, W>(
    from: &mut R,
    to: &mut W,
    count: &AtomicU64,
    delay: Duration,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut held_bytes = 0;
    let mut eof = false;
    loop {
        let due = match held.front() {
            Some((due, _)) => Some(*due),
            None if eof => return to.shutdown().await,
            None => None,
        };
        tokio::select! {
            // Reading a tokio stream is cancel-safe: a read that loses the race reads nothing.
            n = from.read(&mut buf), if !eof && held_bytes < LATENCY_QUEUE_BYTES => {
                match n? {
                    0 => eof = true,
                    n => {
                        held.push_back((Instant::now() + delay, buf[..n].to_vec()));
                        held_bytes += n;
                    }
                }
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let Some((_, chunk)) = held.pop_front() {
                    held_bytes -= chunk.len();
                    to.write_all(&chunk).await?;
                    count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Status {
    BadRequest,
    Forbidden,
    RequestTimeout,
    HeadTooLarge,
    BadGateway,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::Forbidden => "403 Forbidden",
            Status::RequestTimeout => "408 Request Timeout",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::BadGateway => "502 Bad Gateway",
        }
    }
}

/// Answers with `status` and a one-line body, then closes after draining (briefly, and
/// boundedly) what the client still sends, so the answer is not lost to a reset.
async fn refuse(mut client: TcpStream, status: Status, body: &str) {
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}\n",
        status.line(),
        body.len() + 1,
    );
    let linger = async {
        client.write_all(response.as_bytes()).await?;
        client.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match client.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    // Whatever happens, the connection is closed on return.
    let _ = tokio::time::timeout(LINGER_TIMEOUT, linger).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Upper bound for any one test; none comes near it when the proxy works.
    const TEST_TIMEOUT: Duration = Duration::from_secs(30);

    // --- allowlist -----------------------------------------------------------------------

    fn allow(entries: &[&str]) -> Allowlist {
        Allowlist::parse(entries).expect("valid allowlist")
    }

    #[test]
    fn exact_names_match_case_insensitively_and_ignore_a_trailing_dot() {
        let list = allow(&["Crates.IO:443", "static.rust-lang.org.:443"]);
        assert!(list.allows_host("crates.io", 443));
        assert!(list.allows_host("CRATES.io.", 443));
        assert!(list.allows_host("static.rust-lang.org", 443));
        assert!(!list.allows_host("crates.io", 80));
        assert!(!list.allows_host("index.crates.io", 443));
        assert!(!list.allows_host("crates.io.evil", 443));
    }

    #[test]
    fn wildcards_match_names_strictly_below_the_domain() {
        let list = allow(&["*.example.com:443"]);
        assert!(list.allows_host("a.example.com", 443));
        assert!(list.allows_host("A.B.Example.COM.", 443));
        assert!(!list.allows_host("example.com", 443));
        assert!(!list.allows_host("badexample.com", 443));
        assert!(!list.allows_host("a.example.com", 80));
        assert!(!list.allows_host("a.example.com.evil", 443));
    }

    #[test]
    fn address_entries_match_exact_addresses_only() {
        let list = allow(&["127.0.0.1:8080", "[::1]:8080", " [2001:db8::1]:443 "]);
        let sa = |s: &str| s.parse::<SocketAddr>().expect("socket address");
        assert!(list.allows_addr(sa("127.0.0.1:8080")));
        assert!(list.allows_addr(sa("[::ffff:127.0.0.1]:8080")));
        assert!(list.allows_addr(sa("[::1]:8080")));
        assert!(list.allows_addr(sa("[2001:db8::1]:443")));
        assert!(!list.allows_addr(sa("127.0.0.1:8081")));
        assert!(!list.allows_addr(sa("127.0.0.2:8080")));
        // Address entries are not names, and address literals never match names.
        assert!(!list.allows_host("127.0.0.1", 8080));
        // (A wildcard that could read as part of an address, `*.0.0.1`, is refused when
        // parsed: see bad_entries_are_rejected_with_the_reason.)
        assert!(!allow(&["*.example.com:80"]).allows_host("127.0.0.1", 80));
        // A mapped entry is stored in its IPv4 form.
        assert!(allow(&["[::ffff:10.0.0.1]:80"]).allows_addr(sa("10.0.0.1:80")));
    }

    #[test]
    fn the_empty_allowlist_allows_nothing() {
        let list = Allowlist::default();
        assert!(list.is_empty());
        assert!(!list.allows_host("example.com", 443));
        assert!(!list.allows_addr("127.0.0.1:80".parse().expect("address")));
        assert_eq!(Allowlist::parse(Vec::<String>::new()), Ok(list));
    }

    #[test]
    fn allowlists_display_in_canonical_form() {
        let list = allow(&[
            "Example.com.:443",
            "*.Example.org:80",
            "[::1]:8080",
            "10.0.0.1:1",
        ]);
        assert_eq!(
            list.to_string(),
            "example.com:443,*.example.org:80,[::1]:8080,10.0.0.1:1"
        );
        assert_eq!(Allowlist::parse(list.to_string().split(',')), Ok(list));
        // Digits are fine in a name, except as its last label.
        let names = allow(&["1password.com:443", "a1.b2.c3:443", "s3.amazonaws.com:443"]);
        assert_eq!(Allowlist::parse(names.to_string().split(',')), Ok(names));
    }

    #[test]
    fn bad_entries_are_rejected_with_the_reason() {
        type E = AllowlistError;
        type Variant = fn(String) -> E;
        let cases: &[(&str, Variant)] = &[
            ("example.com", E::MissingPort),
            ("example.com:", E::MissingPort),
            ("[::1]", E::MissingPort),
            ("example.com:*", E::WildcardPort),
            ("*.example.com:*", E::WildcardPort),
            ("example.com:0", E::BadPort),
            ("example.com:65536", E::BadPort),
            ("example.com:+80", E::BadPort),
            ("example.com:http", E::BadPort),
            ("*:443", E::BadWildcard),
            ("a.*.com:443", E::BadWildcard),
            ("*a.example.com:443", E::BadWildcard),
            ("*.*.example.com:443", E::BadWildcard),
            ("::1:443", E::BareIpv6),
            ("[::1:443", E::BadIpv6),
            ("[example.com]:443", E::BadIpv6),
            ("[::1]x:443", E::BadHost),
            (":443", E::BadHost),
            ("", E::MissingPort),
            ("exa mple.com:443", E::BadHost),
            ("-bad.example.com:443", E::BadHost),
            ("a..b:443", E::BadHost),
            ("*.:443", E::BadHost),
            ("user@example.com:443", E::BadHost),
            // Found by fuzzing: an address with a trailing dot was a name entry that
            // displayed as an address entry.
            ("127.0.0.1.:443", E::BadHost),
            ("2.0.0.1.:4", E::BadHost),
            ("1.2.3:80", E::BadHost),
            ("*.0.1:80", E::BadHost),
        ];
        for (entry, variant) in cases {
            assert_eq!(
                Allowlist::parse([*entry]),
                Err(variant(entry.to_string())),
                "entry `{entry}`"
            );
        }
        assert_eq!(
            Allowlist::parse(["ok.example:1", "example.com"])
                .expect_err("second entry is invalid")
                .to_string(),
            "invalid allowlist entry `example.com`: port is required"
        );
    }

    proptest::proptest! {
        #[test]
        fn wildcards_match_any_subdomain_but_never_the_domain(
            sub in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}",
            domain in "[a-z0-9]{1,10}\\.[a-z]{2,6}",
            port in 1u16..,
        ) {
            let list = allow(&[format!("*.{domain}:{port}").as_str()]);
            let matched = format!("{sub}.{domain}");
            proptest::prop_assert!(list.allows_host(&matched, port));
            proptest::prop_assert!(list.allows_host(&matched.to_ascii_uppercase(), port));
            proptest::prop_assert!(!list.allows_host(&domain, port));
            let glued = format!("{sub}{domain}");
            proptest::prop_assert!(!list.allows_host(&glued, port));
            proptest::prop_assert!(!list.allows_host(&matched, port.wrapping_add(1).max(1)));
        }
    }

    // --- address classification ----------------------------------------------------------

    #[test]
    fn internal_addresses_are_classified_in_every_form() {
        let refused = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::ffff:100.64.0.1", "CGNAT"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::169.254.169.254", "metadata"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("fc00::1", "unique local"),
            ("fd00:ec2::254", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
        ];
        for (ip, class) in refused {
            let ip: IpAddr = ip.parse().expect("address");
            let got = refused_class(ip).unwrap_or_else(|| panic!("{ip} should be refused"));
            assert!(
                got.contains(class),
                "{ip}: {got:?} should mention {class:?}"
            );
        }
        let public = [
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2606:4700:4700::1111",
            "2001:db8::1",
        ];
        for ip in public {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(refused_class(ip), None, "{ip} is public");
        }
    }

    // --- request parsing -----------------------------------------------------------------

    fn forwarded(head: &str) -> (Host, u16, String) {
        let r = parse_request(head.as_bytes()).expect("valid request");
        let out = String::from_utf8(r.forward.expect("a forwarded request")).expect("utf-8");
        (r.host, r.port, out)
    }

    #[test]
    fn plain_requests_are_rewritten_to_origin_form_without_hop_by_hop_headers() {
        let (host, port, out) = forwarded(
            "POST http://Api.Example.com:8080/v1/x?q=1#frag HTTP/1.1\r\n\
             Host: wrong.example\r\n\
             Proxy-Authorization: Basic c2VjcmV0\r\n\
             Proxy-Connection: keep-alive\r\n\
             Connection: keep-alive, X-Hop, Content-Length\r\n\
             Keep-Alive: timeout=5\r\n\
             TE: trailers\r\n\
             Upgrade: h2c\r\n\
             X-Hop: 1\r\n\
             Content-Length: 3\r\n\
             Accept: */*\r\n\r\n",
        );
        assert_eq!(host, Host::Name("api.example.com".to_owned()));
        assert_eq!(port, 8080);
        assert_eq!(
            out,
            "POST /v1/x?q=1 HTTP/1.1\r\n\
             Host: Api.Example.com:8080\r\n\
             Content-Length: 3\r\n\
             Accept: */*\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn plain_request_targets_default_to_port_80_and_path_slash() {
        let (host, port, out) = forwarded("GET http://example.com HTTP/1.0\r\n\r\n");
        assert_eq!((host, port), (Host::Name("example.com".to_owned()), 80));
        assert_eq!(
            out,
            "GET / HTTP/1.0\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        let (_, _, out) = forwarded("GET HTTP://example.com?a=b HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("GET /?a=b HTTP/1.1\r\n"), "{out}");
        let (host, port, _) = forwarded("GET http://[::1]:81/ HTTP/1.1\r\n\r\n");
        assert_eq!(
            (host, port),
            (Host::Ip("::1".parse().expect("address")), 81)
        );
    }

    #[test]
    fn connect_targets_need_a_host_and_port() {
        let r = parse_request(b"CONNECT Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("valid CONNECT");
        assert_eq!(
            r,
            Request {
                host: Host::Name("example.com".to_owned()),
                port: 443,
                forward: None
            }
        );
        let r = parse_request(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n").expect("valid CONNECT");
        assert_eq!(r.host, Host::Ip("::1".parse().expect("address")));
        for bad in [
            "CONNECT example.com HTTP/1.1\r\n\r\n",
            "CONNECT example.com:0 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443/x HTTP/1.1\r\n\r\n",
            "CONNECT ::1:443 HTTP/1.1\r\n\r\n",
            "GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "GET https://example.com/ HTTP/1.1\r\n\r\n",
            "GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
            "GET http://exa_mple!.com/ HTTP/1.1\r\n\r\n",
            "GET http://example.com:99999/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                parse_request(bad.as_bytes()).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    // --- the proxy over real sockets -----------------------------------------------------

    async fn bounded<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(TEST_TIMEOUT, f)
            .await
            .expect("the test did not finish in time")
    }

    struct Running {
        proxy: EgressProxy,
        addr: SocketAddr,
        events: mpsc::UnboundedReceiver<EgressEvent>,
    }

    impl Running {
        async fn next_event(&mut self) -> EgressEvent {
            self.events
                .recv()
                .await
                .expect("the proxy reports an event")
        }
    }

    fn run(entries: &[&str], names: &[(&str, &str)]) -> Running {
        run_with(entries, names, Faults::default())
    }

    fn run_faulty(entries: &[&str], fault: NetFault) -> Running {
        let faults = Faults {
            fault: Some(fault),
            kill_switch: None,
        };
        run_with(entries, &[], faults)
    }

    fn run_with(entries: &[&str], names: &[(&str, &str)], faults: Faults) -> Running {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (tx, events) = mpsc::unbounded_channel();
        let names = names
            .iter()
            .map(|(n, ip)| (n.to_string(), vec![ip.parse().expect("address")]))
            .collect();
        let proxy = EgressProxy::start_with(
            listener,
            "build".to_owned(),
            allow(entries),
            tx,
            faults,
            Resolver::Fixed(names),
        )
        .expect("start the proxy");
        Running {
            proxy,
            addr,
            events,
        }
    }

    /// A one-shot HTTP server on the host loopback: accepts one connection, records the
    /// request head it receives, answers `response` and closes.
    fn origin<B>(response: B) -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>)
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the origin");
        let addr = listener.local_addr().expect("origin address");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            conn.set_read_timeout(Some(TEST_TIMEOUT))
                .expect("read timeout");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match conn.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = tx.send(head);
            let _ = conn.write_all(response.as_ref());
        });
        (addr, rx)
    }

    const RESPONSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

    /// Sends `request` and reads the whole answer (the proxy closes after refusing).
    async fn exchange(proxy: SocketAddr, request: &[u8]) -> String {
        String::from_utf8(exchange_bytes(proxy, request).await).expect("utf-8 answer")
    }

    async fn exchange_bytes(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut conn = TcpStream::connect(proxy)
            .await
            .expect("connect to the proxy");
        conn.write_all(request).await.expect("send the request");
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer)
            .await
            .expect("read the answer");
        answer
    }

    /// A plain-HTTP proxy request for `origin`.
    fn get(origin: SocketAddr) -> Vec<u8> {
        format!("GET http://{origin}/ HTTP/1.1\r\n\r\n").into_bytes()
    }

    /// An HTTP response with a `len`-byte body of varied bytes.
    fn big_response(len: usize) -> Vec<u8> {
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                .into_bytes();
        response.extend((0..len).map(|i| (i % 251) as u8));
        response
    }

    /// Reads until the connection ends, cleanly or not: what arrived, and how it ended.
    async fn read_until_closed(conn: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    /// Reads one response head, byte by byte so nothing after it is consumed.
    async fn read_response_head(conn: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(conn.read_u8().await.expect("read the response head"));
        }
        String::from_utf8(head).expect("utf-8 head")
    }

    fn denied(event: &EgressEvent, host: &str, port: u16, reason: &str) {
        assert_eq!(
            (event.step.as_str(), event.host.as_str(), event.port),
            ("build", host, port)
        );
        assert!(!event.allowed, "{event:?} should be denied");
        let why = event.reason.as_deref().unwrap_or_default();
        assert!(why.contains(reason), "{event:?} should say {reason:?}");
        assert_eq!((event.bytes_up, event.bytes_down), (0, 0));
    }

    /// The proxy connected to nothing on `listener`.
    fn assert_untouched(listener: &std::net::TcpListener) {
        listener.set_nonblocking(true).expect("non-blocking");
        let err = listener
            .accept()
            .expect_err("nothing should have connected");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    }

    #[tokio::test]
    async fn connect_to_an_allowlisted_address_tunnels_both_ways() {
        bounded(async {
            let (origin, seen) = origin(RESPONSE);
            let mut p = run(&[&origin.to_string()], &[]);
            let mut conn = TcpStream::connect(p.addr)
                .await
                .expect("connect to the proxy");
            let connect = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
            conn.write_all(connect.as_bytes())
                .await
                .expect("send CONNECT");
            let head = read_response_head(&mut conn).await;
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");

            let request = b"GET /through HTTP/1.1\r\nHost: origin\r\n\r\n";
            conn.write_all(request)
                .await
                .expect("send through the tunnel");
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer)
                .await
                .expect("read through the tunnel");
            assert_eq!(answer, RESPONSE);
            assert_eq!(seen.recv().expect("the origin saw a request"), request);
            drop(conn);

            let event = p.next_event().await;
            assert_eq!(
                event,
                EgressEvent {
                    step: "build".to_owned(),
                    host: "127.0.0.1".to_owned(),
                    port: origin.port(),
                    allowed: true,
                    reason: None,
                    bytes_up: request.len() as u64,
                    bytes_down: RESPONSE.len() as u64,
                    fault: None,
                    connect_retries: 0,
                }
            );
        })
        .await;
    }

    #[tokio::test]
    async fn plain_http_is_forwarded_in_origin_form() {
        bounded(async {
            let (origin, seen) = origin(RESPONSE);
            let mut p = run(&[&origin.to_string()], &[]);
            let request = format!(
                "GET http://{origin}/pkg?v=1 HTTP/1.1\r\nHost: {origin}\r\n\
                 Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
                 User-Agent: test\r\n\r\n"
            );
            let answer = exchange(p.addr, request.as_bytes()).await;
            assert_eq!(answer.as_bytes(), RESPONSE);

            let seen =
                String::from_utf8(seen.recv().expect("the origin saw a request")).expect("utf-8");
            assert_eq!(
                seen,
                format!(
                    "GET /pkg?v=1 HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: test\r\n\
                     Connection: close\r\n\r\n"
                )
            );
            let event = p.next_event().await;
            assert!(event.allowed && event.reason.is_none(), "{event:?}");
            assert_eq!(event.host, "127.0.0.1");
            assert_eq!(event.bytes_up, seen.len() as u64);
            assert_eq!(event.bytes_down, RESPONSE.len() as u64);
        })
        .await;
    }

    #[tokio::test]
    async fn hosts_not_on_the_allowlist_are_forbidden() {
        bounded(async {
            let mut p = run(&["allowed.test:443"], &[("denied.test", "1.1.1.1")]);
            let answer = exchange(p.addr, b"CONNECT denied.test:443 HTTP/1.1\r\n\r\n").await;
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            assert!(
                answer.ends_with("egress to denied.test:443 denied: not on the allowlist\n"),
                "{answer}"
            );
            denied(
                &p.next_event().await,
                "denied.test",
                443,
                "not on the allowlist",
            );

            // The allowlisted name on another port is another destination.
            let answer = exchange(p.addr, b"GET http://allowed.test/ HTTP/1.1\r\n\r\n").await;
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            assert!(answer.contains("allowed.test:80"), "{answer}");
            denied(
                &p.next_event().await,
                "allowed.test",
                80,
                "not on the allowlist",
            );
        })
        .await;
    }

    #[tokio::test]
    async fn allowlisted_names_resolving_to_loopback_are_refused_unless_the_address_is_listed() {
        bounded(async {
            let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a target");
            let port = target.local_addr().expect("target address").port();
            let name = format!("internal.test:{port}");
            let mut p = run(&[&name], &[("internal.test", "127.0.0.1")]);
            let request = format!("CONNECT {name} HTTP/1.1\r\n\r\n");
            let answer = exchange(p.addr, request.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            assert!(
                answer.contains(&format!("egress to {name} denied")),
                "{answer}"
            );
            assert!(answer.contains("127.0.0.1, a loopback address"), "{answer}");
            denied(&p.next_event().await, "internal.test", port, "loopback");
            assert_untouched(&target);
            drop(target);

            // With the exact address listed too, the same name goes through.
            let (origin, seen) = origin(RESPONSE);
            let name = format!("internal.test:{}", origin.port());
            let mut p = run(
                &[&name, &origin.to_string()],
                &[("internal.test", "127.0.0.1")],
            );
            let request = format!("GET http://{name}/ HTTP/1.1\r\n\r\n");
            let answer = exchange(p.addr, request.as_bytes()).await;
            assert_eq!(answer.as_bytes(), RESPONSE);
            assert!(
                seen.recv()
                    .expect("the origin saw a request")
                    .starts_with(b"GET / ")
            );
            let event = p.next_event().await;
            assert!(event.allowed, "{event:?}");
            assert_eq!(
                (event.host.as_str(), event.port),
                ("internal.test", origin.port())
            );
        })
        .await;
    }

    #[tokio::test]
    async fn localhost_through_the_system_resolver_is_refused_as_loopback() {
        bounded(async {
            let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a target");
            let port = target.local_addr().expect("target address").port();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
            let addr = listener.local_addr().expect("proxy address");
            let (tx, mut events) = mpsc::unbounded_channel();
            let list = allow(&[&format!("localhost:{port}")]);
            let _proxy = EgressProxy::start(listener, "build".to_owned(), list, tx)
                .expect("start the proxy");
            let request = format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n");
            let answer = exchange(addr, request.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 403 Forbidden\r\n"),
                "`localhost` must resolve on this host (it answered {answer:?})"
            );
            let event = events.recv().await.expect("an event");
            denied(&event, "localhost", port, "loopback");
            assert_untouched(&target);
        })
        .await;
    }

    #[tokio::test]
    async fn the_metadata_address_is_refused() {
        bounded(async {
            let mut p = run(
                &["metadata.test:80", "mapped.test:80"],
                &[
                    ("metadata.test", "169.254.169.254"),
                    ("mapped.test", "::ffff:169.254.169.254"),
                ],
            );
            for (request, host) in [
                (
                    "GET http://metadata.test/latest/meta-data/ HTTP/1.1\r\n\r\n",
                    "metadata.test",
                ),
                ("CONNECT mapped.test:80 HTTP/1.1\r\n\r\n", "mapped.test"),
                (
                    "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
                    "169.254.169.254",
                ),
                (
                    "CONNECT [::ffff:169.254.169.254]:80 HTTP/1.1\r\n\r\n",
                    "::ffff:169.254.169.254",
                ),
            ] {
                let answer = exchange(p.addr, request.as_bytes()).await;
                assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
                assert!(answer.contains("metadata address"), "{answer}");
                denied(&p.next_event().await, host, 80, "metadata");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn malformed_requests_get_400_and_oversized_heads_431() {
        bounded(async {
            let mut p = run(&["example.test:443"], &[]);
            for request in [
                &b"NOT A REQUEST\r\n\r\n"[..],
                b"GET /relative HTTP/1.1\r\nHost: example.test\r\n\r\n",
                b"CONNECT example.test HTTP/1.1\r\n\r\n",
                b"GET http://exa\x01mple/ HTTP/1.1\r\n\r\n",
            ] {
                let answer = exchange(p.addr, request).await;
                assert!(
                    answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                    "{answer}"
                );
                denied(&p.next_event().await, "", 0, "malformed request");
            }

            let mut huge = b"GET http://example.test/ HTTP/1.1\r\n".to_vec();
            while huge.len() <= MAX_HEAD_BYTES {
                huge.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            }
            let answer = exchange(p.addr, &huge).await;
            assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
            denied(&p.next_event().await, "", 0, "larger than");

            // A client that closes mid-head gets nothing but still leaves a record.
            let mut conn = TcpStream::connect(p.addr).await.expect("connect");
            conn.write_all(b"GET http://example.test/ HT")
                .await
                .expect("send");
            conn.shutdown().await.expect("half-close");
            let mut answer = String::new();
            conn.read_to_string(&mut answer).await.expect("read");
            assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
            denied(&p.next_event().await, "", 0, "closed mid-request");
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_destinations_get_502() {
        bounded(async {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let dest = closed.local_addr().expect("address");
            drop(closed);
            let mut p = run(&[&dest.to_string(), "nowhere.test:443"], &[]);
            let answer = exchange(
                p.addr,
                format!("CONNECT {dest} HTTP/1.1\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(
                answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
                "{answer}"
            );
            let event = p.next_event().await;
            assert!(event.allowed, "{event:?}");
            let why = event.reason.expect("a failure reason");
            assert!(why.contains("could not connect"), "{why}");
            assert!(why.contains("(3 attempts)"), "{why}");
            assert_eq!(event.connect_retries, CONNECT_ATTEMPTS - 1);
            assert_eq!(event.fault, None);

            // A name that does not resolve.
            let answer = exchange(p.addr, b"CONNECT nowhere.test:443 HTTP/1.1\r\n\r\n").await;
            assert!(
                answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
                "{answer}"
            );
            assert!(
                answer.contains("could not resolve nowhere.test"),
                "{answer}"
            );
            let event = p.next_event().await;
            assert!(event.allowed && event.reason.is_some(), "{event:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_and_aborts_open_tunnels() {
        bounded(async {
            let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let dest = upstream.local_addr().expect("address");
            let p = run(&[&dest.to_string()], &[]);
            let mut conn = TcpStream::connect(p.addr)
                .await
                .expect("connect to the proxy");
            conn.write_all(format!("CONNECT {dest} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .expect("send CONNECT");
            let head = read_response_head(&mut conn).await;
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            let (_held, _) = upstream.accept().expect("the proxy connected upstream");
            conn.write_all(b"ping")
                .await
                .expect("send through the tunnel");

            let Running {
                proxy,
                addr,
                mut events,
            } = p;
            proxy.shutdown().await;
            let refused = TcpStream::connect(addr).await.expect_err("listener closed");
            assert_eq!(
                refused.kind(),
                io::ErrorKind::ConnectionRefused,
                "{refused}"
            );

            // The tunnel is torn down, and still reported.
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest).await;
            assert!(rest.is_empty(), "{rest:?}");
            let event = events.recv().await.expect("the aborted tunnel is reported");
            assert!(event.allowed, "{event:?}");
            assert_eq!(event.port, dest.port());
            assert!(event.bytes_up <= 4, "{event:?}");
        })
        .await;
    }

    // --- connect retry and injected faults -----------------------------------------------

    #[tokio::test]
    async fn a_refused_connect_is_retried_in_a_later_round() {
        bounded(async {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let dest = closed.local_addr().expect("address");
            drop(closed);
            let mut calls = 0;
            let mut listener = None;
            let (connected, tries) = connect_rounds(&[dest], 0, |addr| {
                calls += 1;
                // The destination starts listening only after it refused the first round.
                if calls == 2 {
                    let bound = std::net::TcpListener::bind(dest).expect("listen again");
                    listener = Some(bound);
                }
                TcpStream::connect(addr)
            })
            .await;
            let stream = connected.expect("the second round connects");
            assert_eq!(
                tries,
                Tries {
                    rounds: 2,
                    injected: 0
                }
            );
            assert_eq!(calls, 2);
            let listener = listener.expect("the destination listens");
            let (_, peer) = listener.accept().expect("the proxy's connection arrived");
            assert_eq!(peer, stream.local_addr().expect("local address"));
        })
        .await;
    }

    #[tokio::test]
    async fn every_round_tries_every_address_before_giving_up() {
        bounded(async {
            let closed: Vec<SocketAddr> = (0..2)
                .map(|_| {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                    l.local_addr().expect("address")
                })
                .collect();
            let mut tried = Vec::new();
            let (connected, tries) = connect_rounds(&closed, 0, |addr| {
                tried.push(addr);
                TcpStream::connect(addr)
            })
            .await;
            let why = connected.expect_err("nothing listens");
            assert!(
                why.starts_with(&format!("could not connect to {}: ", closed[1])),
                "{why}"
            );
            assert!(why.ends_with("(3 attempts)"), "{why}");
            assert_eq!(tries.rounds, CONNECT_ATTEMPTS);
            assert_eq!(tried, closed.repeat(CONNECT_ATTEMPTS as usize));

            let (connected, tries) = connect_rounds(&[], 0, TcpStream::connect).await;
            assert_eq!(
                connected.expect_err("no address").as_str(),
                "no address to connect to"
            );
            assert_eq!(tries.rounds, 0);
        })
        .await;
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(3)), "3 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(human(Duration::from_micros(50)), "50 µs");
        assert_eq!(human(Duration::ZERO), "0 ms");
    }

    #[tokio::test]
    async fn latency_holds_the_answer_back_and_is_reported() {
        bounded(async {
            let (origin, _) = origin(RESPONSE);
            let delay = Duration::from_millis(200);
            let mut p = run_faulty(&[&origin.to_string()], NetFault::Latency { delay });
            let started = Instant::now();
            let answer = exchange(p.addr, &get(origin)).await;
            let elapsed = started.elapsed();
            assert_eq!(answer.as_bytes(), RESPONSE);
            // Once before connecting, and once more for the answer.
            assert!(elapsed >= delay * 2, "answered after {elapsed:?}");
            let event = p.next_event().await;
            assert!(event.allowed && event.reason.is_none(), "{event:?}");
            assert_eq!(event.bytes_down, RESPONSE.len() as u64);
            assert_eq!(
                event.fault.as_deref(),
                Some("chaos delay_net: 200 ms per chunk")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn bandwidth_paces_the_download_and_delivers_it_intact() {
        bounded(async {
            let response = big_response(32 * 1024);
            let (origin, _) = origin(response.clone());
            let rate = 64 * 1024;
            let fault = NetFault::Bandwidth {
                bytes_per_sec: rate,
            };
            let mut p = run_faulty(&[&origin.to_string()], fault);
            let started = Instant::now();
            let answer = exchange_bytes(p.addr, &get(origin)).await;
            let elapsed = started.elapsed();
            assert!(answer == response, "the body arrived altered");
            // Everything after the first chunk (a tenth of a second's bytes) waited for its
            // tokens.
            let paced = (response.len() as u64 - rate / 10) * 1_000_000_000 / rate;
            let floor = Duration::from_nanos(paced) - Duration::from_millis(1);
            assert!(elapsed >= floor, "{elapsed:?} is faster than the limit");
            let event = p.next_event().await;
            assert!(event.allowed && event.reason.is_none(), "{event:?}");
            assert_eq!(event.bytes_down, response.len() as u64);
            assert_eq!(
                event.fault.as_deref(),
                Some("chaos delay_net: bandwidth 65536 B/s")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn hang_answers_nothing_then_resets() {
        bounded(async {
            let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let dest = upstream.local_addr().expect("address");
            let at_most = Duration::from_millis(300);
            let mut p = run_faulty(&[&dest.to_string()], NetFault::Hang { at_most });
            let started = Instant::now();
            let mut conn = TcpStream::connect(p.addr)
                .await
                .expect("connect to the proxy");
            conn.write_all(format!("CONNECT {dest} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .expect("send CONNECT");
            let (got, end) = read_until_closed(&mut conn).await;
            assert!(started.elapsed() >= at_most, "{:?}", started.elapsed());
            assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
            let err = end.expect_err("the connection is reset");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
            assert_untouched(&upstream);

            let event = p.next_event().await;
            assert!(event.allowed && event.reason.is_none(), "{event:?}");
            assert_eq!((event.bytes_up, event.bytes_down), (0, 0));
            assert_eq!(
                event.fault.as_deref(),
                Some("chaos delay_net: held 300 ms without an answer, then reset")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn refused_connects_are_recovered_by_the_retry() {
        bounded(async {
            let (origin, seen) = origin(RESPONSE);
            let mut p = run_faulty(
                &[&origin.to_string()],
                NetFault::RefuseConnects { count: 2 },
            );
            let answer = exchange(p.addr, &get(origin)).await;
            assert_eq!(answer.as_bytes(), RESPONSE);
            assert!(seen.recv().is_ok(), "the origin saw the request");
            let event = p.next_event().await;
            assert!(event.allowed && event.reason.is_none(), "{event:?}");
            assert_eq!(event.connect_retries, 2);
            assert_eq!(
                event.fault.as_deref(),
                Some("chaos drop_net: 2 connects reset, recovered by the proxy's retry")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn connects_refused_every_round_are_502() {
        bounded(async {
            let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let dest = upstream.local_addr().expect("address");
            let fault = NetFault::RefuseConnects {
                count: CONNECT_ATTEMPTS,
            };
            let mut p = run_faulty(&[&dest.to_string()], fault);
            let answer = exchange(
                p.addr,
                format!("CONNECT {dest} HTTP/1.1\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(
                answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
                "{answer}"
            );
            assert!(answer.contains("reset by peer (injected)"), "{answer}");
            assert_untouched(&upstream);

            let event = p.next_event().await;
            assert!(event.allowed, "{event:?}");
            assert_eq!(
                event.reason.as_deref(),
                Some(
                    format!(
                        "could not connect to {dest}: connection reset by peer (injected) \
                         (3 attempts)"
                    )
                    .as_str()
                )
            );
            assert_eq!(event.connect_retries, CONNECT_ATTEMPTS - 1);
            assert_eq!(
                event.fault.as_deref(),
                Some("chaos drop_net: 3 connects reset, the proxy gave up")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn reset_after_cuts_the_download_mid_stream() {
        bounded(async {
            let response = big_response(64 * 1024);
            let (origin, _) = origin(response.clone());
            let mut p = run_faulty(&[&origin.to_string()], NetFault::ResetAfter { bytes: 4096 });
            let mut conn = TcpStream::connect(p.addr)
                .await
                .expect("connect to the proxy");
            conn.write_all(&get(origin))
                .await
                .expect("send the request");
            let (got, end) = read_until_closed(&mut conn).await;
            assert!(got.len() <= 4096, "{} bytes arrived", got.len());
            assert!(got == response[..got.len()], "the bytes arrived altered");
            let err = end.expect_err("the connection is reset");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");

            let event = p.next_event().await;
            assert!(event.allowed && event.reason.is_none(), "{event:?}");
            assert_eq!(event.bytes_down, 4096);
            assert_eq!(
                event.fault.as_deref(),
                Some("chaos drop_net: reset after 4096 bytes")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn the_kill_switch_stops_injection_from_the_next_connection() {
        bounded(async {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let switch = dir.path().join("no-chaos");
            let (first, _) = origin(RESPONSE);
            let (second, _) = origin(RESPONSE);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
            let addr = listener.local_addr().expect("proxy address");
            let (tx, mut events) = mpsc::unbounded_channel();
            let list = allow(&[&first.to_string(), &second.to_string()]);
            let _proxy = EgressProxy::start_with_fault(
                listener,
                "build".to_owned(),
                list,
                tx,
                Some(NetFault::RefuseConnects { count: 1 }),
                Some(switch.clone()),
            )
            .expect("start the proxy");

            let answer = exchange(addr, &get(first)).await;
            assert_eq!(answer.as_bytes(), RESPONSE);
            let event = events.recv().await.expect("an event");
            assert_eq!(
                event.fault.as_deref(),
                Some("chaos drop_net: 1 connect reset, recovered by the proxy's retry")
            );
            assert_eq!(event.connect_retries, 1);

            std::fs::write(&switch, b"").expect("create the kill switch");
            let answer = exchange(addr, &get(second)).await;
            assert_eq!(answer.as_bytes(), RESPONSE);
            let event = events.recv().await.expect("an event");
            assert!(event.allowed && event.reason.is_none(), "{event:?}");
            assert_eq!((event.fault, event.connect_retries), (None, 0));
        })
        .await;
    }

    #[test]
    fn starting_outside_a_runtime_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (tx, _rx) = mpsc::unbounded_channel();
        let err = EgressProxy::start(listener, "build".to_owned(), Allowlist::default(), tx)
            .expect_err("no runtime");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
