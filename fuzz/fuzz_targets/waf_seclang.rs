//! Untrusted SecLang: rule files as an operator might write them (or an attacker who controls a
//! rule file could). Parsing and compiling must never panic, and a rule set that loads must run a
//! request through every phase without panicking. The request's query is the second half of the
//! input, so the rules' operators and transformations see hostile values too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_waf::{RequestHead, RuleSet};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (rules, rest) = data.split_at(split);
    let Ok(text) = std::str::from_utf8(rules) else { return };
    let Ok(set) = RuleSet::parse_str(text, "fuzz.conf") else { return };
    let query = rest.get(1..).unwrap_or_default();
    let mut uri = b"/p?".to_vec();
    uri.extend_from_slice(query);
    let mut tx = set.transaction("fuzz", std::net::IpAddr::from([127, 0, 0, 1]));
    let head = RequestHead {
        method: "POST",
        uri: &uri,
        protocol: "HTTP/1.1",
        headers: vec![
            (&b"host"[..], &b"example"[..]),
            (&b"content-type"[..], &b"application/x-www-form-urlencoded"[..]),
            (&b"cookie"[..], query),
        ],
    };
    if tx.process_request_headers(&head).is_none() {
        let _ = tx.process_request_body(query);
    }
    tx.process_logging();
    let _ = tx.matches();
});
