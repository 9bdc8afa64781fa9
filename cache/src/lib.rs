//! Action keys and the action cache.
//!
//! This crate owns how a step's result is found again and trusted:
//! - [`digest`]: BLAKE3 digests of bytes and files (memory-mapped and multi-threaded for
//!   large files, many files on several threads);
//! - [`key`]: the [`ActionKey`], derived from a canonical encoding of everything that can
//!   change a result, and its per-part [`key::KeySummary`];
//! - [`platform`]: the fingerprint (architecture, OS, C library) that enters every key;
//! - [`sign`]: Ed25519 signing keys, public keys and keyrings;
//! - [`manifest`]: what a cache entry says (outputs, exit status, log, timing, key
//!   summary), its canonical encoding and its signed envelope;
//! - [`cas`]: the content-addressed store of zstd blobs, written atomically, read verified;
//! - [`namespace`]: trusted and per-pull-request namespaces;
//! - [`index`]: sizes, last use and counters (SQLite);
//! - [`store`]: the [`store::LocalCache`] that puts these together: lookup with
//!   verification, restore, store, quarantine;
//! - [`maintenance`]: statistics, a scrub of every entry and blob, and least-recently-used
//!   eviction, for the [`store::LocalCache`];
//! - [`tools`]: the program a tool name runs (found on `PATH`, links followed) and the
//!   digest of its bytes;
//! - `service` (feature `server`): the team cache service, `ci-intel cache serve`;
//! - `remote` (feature `remote`): its native protocol's client, a tier behind the
//!   [`store::LocalCache`] (`ci-intel run --remote-cache URL`).
//!
//! It does not run anything, and knows nothing of plans or sandboxes: the executor gathers
//! a step's [`key::KeyInputs`] and decides what to store.

/// Serializes a type as its `Display` string and deserializes it with `FromStr`.
macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod cas;
pub mod digest;
pub mod index;
pub mod key;
pub mod maintenance;
pub mod manifest;
pub mod namespace;
pub mod platform;
#[cfg(feature = "remote")]
pub mod remote;
#[cfg(feature = "server")]
pub mod service;
pub mod sign;
pub mod store;
pub mod tools;

use std::fmt;

/// An error and its causes as one message, `: `-separated: for logs, quarantine reasons
/// and the binary's messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The name of one action: 32 bytes derived from everything that can influence its result.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionKey(pub [u8; 32]);

impl fmt::Display for ActionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ActionKey {
    type Err = digest::ParseDigestError;

    fn from_str(s: &str) -> Result<ActionKey, Self::Err> {
        s.parse::<digest::Digest>().map(|d| ActionKey(d.0))
    }
}

serde_as_string!(ActionKey);

impl fmt::Debug for ActionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_displays_as_lowercase_hex() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x01;
        let s = ActionKey(bytes).to_string();
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("ab00"));
        assert!(s.ends_with("01"));
    }
}
