//! The cache's textual identifiers: `Digest`, `ActionKey` and `PublicKey` (`FromStr`), and
//! namespace names (`Namespaces::named`), on arbitrary text (non-UTF-8 input converted
//! lossily). None may panic; what parses must display back to the text (in lowercase:
//! hex digits are accepted in either case), parse again to the same value, and survive a
//! JSON round trip.
#![no_main]

use std::fmt::Display;
use std::str::FromStr;

use ci_intel_cache::ActionKey;
use ci_intel_cache::digest::Digest;
use ci_intel_cache::namespace::{self, Namespaces, TRUSTED};
use ci_intel_cache::sign::PublicKey;
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn round_trip<T>(s: &str)
where
    T: FromStr + Display + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned,
    T::Err: Display,
{
    match s.parse::<T>() {
        Ok(v) => {
            assert!(is_hex64(s), "{s:?} parsed");
            let shown = v.to_string();
            assert_eq!(shown, s.to_ascii_lowercase());
            assert_eq!(shown.parse::<T>().ok().as_ref(), Some(&v));
            let json = serde_json::to_string(&v).expect("serialize");
            assert_eq!(json, format!("\"{shown}\""));
            assert_eq!(serde_json::from_str::<T>(&json).expect("deserialize"), v);
        }
        Err(e) => {
            assert!(!is_hex64(s), "{s:?} refused");
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s = text.as_ref();
    round_trip::<Digest>(s);
    round_trip::<ActionKey>(s);
    round_trip::<PublicKey>(s);

    match Namespaces::named(s) {
        Ok(ns) => {
            assert!(namespace::is_valid(s), "{s:?} named");
            assert_eq!(ns.write, s);
            assert_eq!(ns.read.first().map(String::as_str), Some(TRUSTED));
            assert_eq!(ns.read.last().map(String::as_str), Some(s));
            assert_eq!(ns.is_trusted(), s == TRUSTED);
            assert_eq!(Namespaces::named(&ns.write).ok(), Some(ns));
        }
        Err(e) => {
            assert!(!namespace::is_valid(s), "{s:?} refused");
            let _ = e.to_string();
        }
    }
});
