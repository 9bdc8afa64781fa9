//! The egress proxy's request handling, end to end over loopback sockets: the request-head
//! parser (`parse_request`, `parse_target_authority`) is private to the sandbox crate and
//! only reachable through a running `EgressProxy`, so each input is sent as-is as one
//! client connection to a proxy started once per process.
//!
//! The proxy's allowlist holds one address, an origin server this target runs on
//! `127.0.0.1:ORIGIN_PORT` that records what it receives and answers nothing; it has no
//! name entry, so no input can make the proxy resolve a name or leave the machine.
//!
//! Checked for every input: no panic (libfuzzer-sys aborts on a panic in any thread), no
//! hang, exactly one decision event per non-empty request, and one of:
//! - a refusal (400, 403, 408, 431 or 502 status line), and the origin received nothing;
//! - `200 Connection established` for a `CONNECT` to the origin, and the origin received
//!   exactly the bytes after the request head;
//! - a plain request forwarded to the origin: a complete request head in origin form
//!   (same method and version, a path starting with `/`), one `Host`, no `Proxy-*` header,
//!   no header the request's `Connection` listed (except framing ones), `Connection:
//!   close` as the last header, then exactly the bytes after the request head.
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use ci_intel_sandbox::{Allowlist, EgressEvent, EgressProxy};
use libfuzzer_sys::fuzz_target;

/// The origin's fixed port, so that seeds and crashing inputs that name it reproduce.
const ORIGIN_PORT: u16 = 47_391;
/// Longer than any of the proxy's own timeouts: past it, something hangs.
const HANG: Duration = Duration::from_secs(30);

struct Harness {
    proxy: SocketAddr,
    events: Mutex<Receiver<EgressEvent>>,
    origin: Mutex<Receiver<Vec<u8>>>,
    _runtime: tokio::runtime::Runtime,
    _proxy: EgressProxy,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let origin = TcpListener::bind(("127.0.0.1", ORIGIN_PORT)).unwrap_or_else(|e| {
        eprintln!("egress_request: cannot listen on 127.0.0.1:{ORIGIN_PORT}: {e}");
        std::process::exit(2)
    });
    let (origin_tx, origin_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in origin.incoming() {
            let mut conn = conn.expect("accept at the origin");
            conn.set_read_timeout(Some(HANG))
                .expect("origin read timeout");
            let mut got = Vec::new();
            conn.read_to_end(&mut got)
                .expect("the origin reads until the proxy closes");
            // Sent before the connection closes: the client sees its end after this.
            origin_tx.send(got).expect("the harness listens");
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy's listener");
    let proxy = listener.local_addr().expect("the proxy's address");
    let allow = Allowlist::parse([format!("127.0.0.1:{ORIGIN_PORT}")]).expect("allowlist");
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let (std_tx, std_rx) = mpsc::channel();
    let started = {
        let _guard = runtime.enter();
        EgressProxy::start(listener, "fuzz".into(), allow, events_tx).expect("start the proxy")
    };
    runtime.spawn(async move {
        while let Some(event) = events_rx.recv().await {
            let _ = std_tx.send(event);
        }
    });
    Harness {
        proxy,
        events: Mutex::new(std_rx),
        origin: Mutex::new(origin_rx),
        _runtime: runtime,
        _proxy: started,
    }
});

/// The length of `data`'s request head, as the proxy finds it.
fn head_len(data: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    match httparse::Request::new(&mut headers).parse(data) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    }
}

/// Header names the request's `Connection` and `Proxy-Connection` headers list, lowercased,
/// less the framing headers (which the proxy keeps).
fn listed_hop_by_hop(head: &[u8]) -> Vec<String> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).expect("a head the proxy parsed");
    req.headers
        .iter()
        .filter(|h| {
            h.name.eq_ignore_ascii_case("connection")
                || h.name.eq_ignore_ascii_case("proxy-connection")
        })
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "content-length" && t != "transfer-encoding")
        .collect()
}

fn check_forwarded(data: &[u8], got: &[u8]) {
    let sent = head_len(data).expect("a forwarded request had a complete head");
    let mut in_headers = [httparse::EMPTY_HEADER; 256];
    let mut request = httparse::Request::new(&mut in_headers);
    request.parse(data).expect("a forwarded request parsed");

    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut fwd = httparse::Request::new(&mut headers);
    let n = match fwd.parse(got) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "the forwarded head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(got)
        ),
    };
    let shown = String::from_utf8_lossy(&got[..n]);
    assert_eq!(fwd.method, request.method, "method changed: {shown:?}");
    assert_eq!(fwd.version, request.version, "version changed: {shown:?}");
    let path = fwd.path.expect("a forwarded path");
    assert!(path.starts_with('/'), "not origin form: {shown:?}");
    let hosts = fwd
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1, "Host headers: {shown:?}");
    let (last, forwarded) = fwd.headers.split_last().expect("forwarded headers");
    assert!(
        last.name == "Connection" && last.value == b"close",
        "not closed: {shown:?}"
    );
    // The request's own headers (before the proxy's `Connection: close`, which stays even
    // when the request lists `connection` itself).
    let listed = listed_hop_by_hop(&data[..sent]);
    for h in forwarded {
        let name = h.name.to_ascii_lowercase();
        assert!(!name.starts_with("proxy-"), "{name} forwarded: {shown:?}");
        assert!(
            !listed.contains(&name),
            "listed {name} forwarded: {shown:?}"
        );
    }
    let connections = fwd
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .count();
    assert_eq!(connections, 1, "Connection headers: {shown:?}");
    assert!(
        got[n..] == data[sent..],
        "the bytes after the head changed on the way"
    );
}

fuzz_target!(|data: &[u8]| {
    let h = &*HARNESS;
    let mut client = TcpStream::connect(h.proxy).expect("connect to the proxy");
    client.set_read_timeout(Some(HANG)).expect("read timeout");
    client.set_write_timeout(Some(HANG)).expect("write timeout");
    // The proxy may answer and close before reading everything (an oversized head).
    let _ = client.write_all(data);
    let _ = client.shutdown(Shutdown::Write);
    let mut response = Vec::new();
    match client.read_to_end(&mut response) {
        Ok(_) => {}
        // Closed with input unread: what was answered before is still in `response`.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no end of the proxy's answer: {e}"),
    }
    drop(client);

    if data.is_empty() {
        assert!(response.is_empty(), "an answer to nothing");
        return;
    }
    let event = h
        .events
        .lock()
        .unwrap()
        .recv_timeout(HANG)
        .expect("a decision event for the request");
    let origin = h.origin.lock().unwrap().try_recv().ok();
    let text = String::from_utf8_lossy(&response);

    const TUNNEL: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
    const REFUSED: [&str; 5] = ["400 ", "403 ", "408 ", "431 ", "502 "];
    if response.starts_with(TUNNEL) {
        assert!(event.allowed && event.port == ORIGIN_PORT, "{event:?}");
        let got = origin.expect("the tunnel reached the origin");
        let sent = head_len(data).expect("a CONNECT with a complete head");
        assert!(got == data[sent..], "the tunnel changed the bytes");
        assert_eq!(response.len(), TUNNEL.len(), "the origin answers nothing");
    } else if let Some(status) = text.strip_prefix("HTTP/1.1 ") {
        assert!(
            REFUSED.iter().any(|r| status.starts_with(r)),
            "unexpected answer: {text:?}"
        );
        assert!(
            origin.is_none(),
            "refused ({text:?}) yet the origin was reached"
        );
        assert!(
            event.reason.is_some(),
            "a refusal without a reason: {event:?}"
        );
        assert_eq!(
            event.allowed,
            status.starts_with("502 "),
            "{text:?}: {event:?}"
        );
    } else if response.is_empty() {
        let got = origin.unwrap_or_else(|| panic!("no answer and no forwarding: {event:?}"));
        assert!(event.allowed && event.port == ORIGIN_PORT, "{event:?}");
        check_forwarded(data, &got);
    } else {
        panic!("unexpected answer: {text:?}");
    }
});
