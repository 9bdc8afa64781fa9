//! Arbitrary manifest bodies, correctly signed: what a trusted signer with a bug (or a
//! stolen key) could send. The JSON parser, the canonical-form check and
//! `Manifest::validate` must never panic, and whatever opens is canonical, valid, and seals
//! back to exactly the envelope it came from.
#![no_main]

use ci_intel_cache::manifest;
use ci_intel_fuzz::{KEY, envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let sealed = envelope(body);
    if let Ok(opened) = manifest::open(&sealed, |_| true) {
        assert_eq!(opened.signer, KEY.public());
        let encoded = opened
            .manifest
            .encode()
            .expect("an opened manifest is valid");
        assert!(encoded == body, "an opened body is not canonical");
        let resealed = opened
            .manifest
            .seal(&KEY)
            .expect("an opened manifest seals");
        assert!(resealed == sealed, "resealing changed the envelope");
    }
});
