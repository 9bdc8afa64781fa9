//! A correctly sealed envelope, edited byte by byte as the input says
//! (`ci_intel_fuzz::apply_edits`), then opened with every signer accepted.
//!
//! The format leaves no byte that does not matter (strict header, canonical body, a
//! signature over the domain-separated body), so `open` may succeed only if the edits left
//! the envelope exactly as sealed.
#![no_main]

use ci_intel_cache::manifest;
use ci_intel_fuzz::{KEY, SEALED, apply_edits, sample_manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = SEALED.clone();
    apply_edits(&mut bytes, data);
    match manifest::open(&bytes, |_| true) {
        Ok(opened) => {
            assert!(
                bytes == *SEALED,
                "an altered envelope opened: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(opened.manifest, sample_manifest());
            assert_eq!(opened.signer, KEY.public());
        }
        Err(e) => assert!(bytes != *SEALED, "the sealed envelope did not open: {e}"),
    }
});
