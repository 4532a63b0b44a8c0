//! Image reference parsing on arbitrary strings: never panics, and what parses is canonical —
//! printing it and parsing again gives the same reference, its host is already in the form URLs
//! use, and no repository component is empty, `.` or `..`.
#![no_main]

use bpfship_registry::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Reference::parse(input) else {
        return;
    };
    let again = Reference::parse(&r.to_string()).expect("a printed reference parses");
    assert_eq!(again, r);
    assert!(
        r.repository()
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    );
    assert!(!r.registry().chars().any(|c| c.is_control() || c.is_whitespace()));
    let _ = r.is_loopback();
});
