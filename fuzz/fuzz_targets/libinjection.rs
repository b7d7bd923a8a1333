//! Untrusted values as `@detectSQLi` and `@detectXSS` see them: the copy in `crates/libinjection` must decide as the
//! published `libinjectionrs` 0.1.1 does (SQLi verdict and fingerprint, XSS verdict), and panic only where it does
//! (the WAF catches those).
#![no_main]

use std::panic::{catch_unwind, AssertUnwindSafe};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = catch_unwind(AssertUnwindSafe(|| {
        let r = palisade_libinjection::detect_sqli(data);
        (
            r.is_injection(),
            r.fingerprint.map(|f| f.as_bytes().to_vec()),
            palisade_libinjection::detect_xss(data).is_injection(),
        )
    }))
    .ok();
    let published = catch_unwind(AssertUnwindSafe(|| {
        let r = libinjectionrs::detect_sqli(data);
        (
            r.is_injection(),
            r.fingerprint.map(|f| f.as_bytes().to_vec()),
            libinjectionrs::detect_xss(data).is_injection(),
        )
    }))
    .ok();
    assert_eq!(ours, published, "{:?}", String::from_utf8_lossy(data));
});
