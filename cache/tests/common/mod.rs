//! The fixture the cache's integration tests share: a cache directory whose trusted
//! keyring holds one key.

use std::fs;
use std::path::PathBuf;

use ci_intel_cache::namespace::Namespaces;
use ci_intel_cache::sign::SigningKey;
use ci_intel_cache::store::{CacheConfig, LocalCache};

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    /// The trusted signer (its public key is in keys/trusted).
    pub(crate) trusted: SigningKey,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let trusted = SigningKey::generate().unwrap();
        let keys = dir.path().join("cache/keys/trusted");
        fs::create_dir_all(&keys).unwrap();
        trusted.public().save(&keys.join("main.pub")).unwrap();
        Fixture { dir, trusted }
    }

    pub(crate) fn cache_root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A cache as a trusted run sees it.
    pub(crate) fn trusted(&self) -> LocalCache {
        self.open(Namespaces::trusted(), Some(self.trusted.clone()))
    }

    /// A cache as a pull request's run sees it (the machine's own, untrusted key).
    pub(crate) fn pr(&self, name: &str) -> LocalCache {
        self.open(Namespaces::named(name).unwrap(), None)
    }

    pub(crate) fn open(
        &self,
        namespaces: Namespaces,
        signing_key: Option<SigningKey>,
    ) -> LocalCache {
        LocalCache::open(CacheConfig {
            root: self.cache_root(),
            namespaces,
            signing_key,
        })
        .unwrap()
    }
}
