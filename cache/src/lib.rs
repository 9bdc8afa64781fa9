//! Action keys and the action cache.
//!
//! This crate owns how a step's result is found again: the [`ActionKey`] that names an
//! action, and the [`ActionCache`] seam the executor consults before running and publishes
//! to after. It does not run anything and knows nothing of plans or sandboxes.
//!
//! Today it provides the seam and the [`Disabled`] cache, which never hits and stores
//! nothing, so every step runs. The content-addressed store (BLAKE3 digests, zstd blobs,
//! signed manifests verified before restore, quarantine, eviction) and the team cache
//! client and server are built behind this same trait.

use std::fmt;

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

impl fmt::Debug for ActionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionKey({self})")
    }
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Nothing usable is stored under the key; the action must run.
    Miss,
}

/// Why a lookup failed as a fault of the cache itself (not a miss).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The store could not be read.
    #[error("cache store unreadable")]
    Io(#[source] std::io::Error),
}

/// What the executor asks of a cache.
pub trait ActionCache: Send + Sync + fmt::Debug {
    /// Looks up `key`. A verified hit or a miss; never an unverified entry.
    fn lookup(&self, key: &ActionKey) -> Result<Lookup, LookupError>;

    /// A short name for reports (`"disabled"`, `"local"`, ...).
    fn name(&self) -> &'static str;
}

/// A cache that stores nothing: every lookup misses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Disabled;

impl ActionCache for Disabled {
    fn lookup(&self, _key: &ActionKey) -> Result<Lookup, LookupError> {
        Ok(Lookup::Miss)
    }

    fn name(&self) -> &'static str {
        "disabled"
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

    #[test]
    fn disabled_cache_always_misses() {
        assert_eq!(Disabled.lookup(&ActionKey([7; 32])).unwrap(), Lookup::Miss);
    }
}
