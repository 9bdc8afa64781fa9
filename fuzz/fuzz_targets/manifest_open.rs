//! `manifest::open` on arbitrary bytes, with every signer accepted: the envelope header
//! parser, the signature check and (when the fuzzer reaches them) the body checks must
//! never panic, and whatever opens is canonical and valid.
#![no_main]

use ci_intel_cache::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(opened) = manifest::open(data, |_| true) {
        // Only a correctly signed envelope opens; its body is the canonical encoding.
        let body = opened
            .manifest
            .encode()
            .expect("an opened manifest is valid");
        assert!(data.ends_with(&body), "opened body is not canonical");
    }
});
