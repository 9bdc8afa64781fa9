//! An HTTP origin on the host's loopback for the tests of egress through the proxy.

use std::io::{Read as _, Write as _};

/// Serves `body` with `200 OK` to every request until the test process ends, each
/// connection on a thread of its own; returns the port.
pub(crate) fn start(body: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            });
        }
    });
    port
}
