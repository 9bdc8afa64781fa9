//! A running `ci-intel cache serve` for the end-to-end tests of the cache service
//! (`tests/cache_service.rs`, `tests/cache_protocols.rs`), and raw HTTP/1.1 requests to it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support;

/// Tokens of the test configuration, by role.
pub(crate) const MAIN: &str = "main-token-1";
pub(crate) const READER: &str = "reader-token-2";
pub(crate) const FORK: &str = "fork-token-3";
pub(crate) const LIMITED: &str = "limited-token-4";

/// A running `ci-intel cache serve`, stopped (SIGTERM) when dropped.
pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) _dir: tempfile::TempDir,
}

impl Service {
    pub(crate) fn start() -> Service {
        let dir = tempfile::tempdir().unwrap();
        let hash = |t: &str| {
            let out = support::ci_intel()
                .args(["cache", "token-hash"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    c.stdin.take().unwrap().write_all(t.as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let config = format!(
            r#"
max_body_bytes = 8388608
scrub_interval_seconds = 1

[[token]]
team = "team-a"
sha256 = "{}"
scope = "read-write"
trust = "trusted"
name = "main"

[[token]]
team = "team-a"
sha256 = "{}"
scope = "read"
trust = "trusted"

[[token]]
team = "team-a"
sha256 = "{}"
scope = "read-write"
trust = "untrusted"

[[token]]
team = "team-b"
sha256 = "{}"
scope = "read-write"
trust = "trusted"

[limits.team-b]
requests_per_second = 1.0
burst_requests = 2.0
bytes_per_second = 1048576.0
burst_bytes = 1048576.0
"#,
            hash(MAIN),
            hash(READER),
            hash(FORK),
            hash(LIMITED)
        );
        std::fs::write(dir.path().join("service.toml"), config).unwrap();
        let (store, config) = (dir.path().join("store"), dir.path().join("service.toml"));
        Service::launch(&store, &config, dir)
    }

    /// `ci-intel cache serve` on `store` with `config`; `dir` lives as long as it does.
    pub(crate) fn launch(store: &Path, config: &Path, dir: tempfile::TempDir) -> Service {
        let mut child = support::ci_intel()
            .args(["cache", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(store)
            .arg("--config")
            .arg(config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the service printed where it listens")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Service {
            child,
            addr,
            _dir: dir,
        }
    }

    /// One request on a fresh connection: status, headers (lowercase names), body.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let auth: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        self.request_with(method, path, &auth, body)
    }

    /// [`Service::request`] with headers of its own.
    pub(crate) fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: cache\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, raw[split + 4..].to_vec())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
