//! `WWW-Authenticate` challenge parsing on arbitrary header values: never panics, keys come out
//! lowercased, and every value is a substring of the input.
#![no_main]

use bpfship_registry::auth::parse_challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    for (k, v) in parse_challenge(header) {
        assert_eq!(k, k.to_ascii_lowercase());
        assert!(header.contains(v.as_str()));
    }
});
