//! Untrusted request bodies and request parts as the WAF parses them: query strings, urlencoded
//! bodies, cookies, multipart (with a content type taken from the input), JSON and XML, and
//! request targets. The first byte picks the parser. Must never panic; output stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_waf_body::{
    parse_cookies, parse_json, parse_multipart, parse_query, parse_urlencoded, parse_xml, split_target,
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    match kind % 7 {
        0 => {
            let (pairs, _) = parse_query(rest);
            assert!(pairs.len() <= palisade_waf_body::DEFAULT_MAX_ARGS);
        }
        1 => {
            let (pairs, _) = parse_urlencoded(rest);
            assert!(pairs.len() <= palisade_waf_body::DEFAULT_MAX_ARGS);
        }
        2 => {
            let headers: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
            let _ = parse_cookies(&headers);
        }
        3 => {
            // The first line is the Content-Type, the rest the body.
            let (ct, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b"multipart/form-data; boundary=x"[..], rest),
            };
            let _ = parse_multipart(body, ct);
        }
        4 => {
            let _ = parse_json(rest, 32);
        }
        5 => {
            let _ = parse_xml(rest);
        }
        _ => {
            let t = split_target(rest);
            let _ = t.basename();
        }
    }
});
