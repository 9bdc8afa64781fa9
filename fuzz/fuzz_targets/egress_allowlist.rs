//! `Allowlist::parse` on arbitrary entries (one per input line; non-UTF-8 input converted
//! lossily), then the matching functions on what it made. Must never panic; an allowlist
//! that parses displays in its canonical form, which parses back to the same allowlist
//! (the contract the sandbox's own tests state), and each displayed name entry allows
//! exactly what it says.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use ci_intel_sandbox::Allowlist;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(list) = Allowlist::parse(text.split('\n')) else {
        return;
    };
    let shown = list.to_string();
    let entries: Vec<&str> = shown.split(',').filter(|s| !s.is_empty()).collect();
    assert_eq!(
        Allowlist::parse(&entries).as_ref(),
        Ok(&list),
        "{text:?} displays as {shown:?}, which parses to another allowlist"
    );
    assert_eq!(list.is_empty(), entries.is_empty());

    for entry in entries {
        if let Ok(addr) = entry.parse::<SocketAddr>() {
            assert!(list.allows_addr(addr), "{shown:?} does not allow {addr}");
            continue;
        }
        let (host, port) = entry
            .rsplit_once(':')
            .expect("a displayed entry has a port");
        let port: u16 = port.parse().expect("a displayed port is a number");
        match host.strip_prefix("*.") {
            Some(parent) => {
                let below = format!("x.{parent}");
                assert!(list.allows_host(&below, port), "{shown:?}: {below}");
                assert!(
                    list.allows_host(&below.to_ascii_uppercase(), port),
                    "{shown:?}: {below} in uppercase"
                );
            }
            // Address literals never match names.
            None if host.parse::<IpAddr>().is_ok() => {
                assert!(!list.allows_host(host, port), "{shown:?}: {host}");
            }
            None => {
                assert!(list.allows_host(host, port), "{shown:?}: {host}");
                assert!(
                    list.allows_host(&format!("{host}."), port),
                    "{shown:?}: {host}."
                );
            }
        }
    }
});
