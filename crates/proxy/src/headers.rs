//! Header rules every proxied request follows: hop-by-hop headers are removed (RFC 9110
//! §7.6.1), `X-Forwarded-*` are set, and `x-request-id` is kept if sane or generated.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A hop-by-hop header (RFC 9110 §7.6.1, plus `Proxy-Connection` and `Keep-Alive`), compared as
/// text (a constant array of `HeaderName`s would be built and dropped on every call).
fn is_hop_by_hop(k: &HeaderName) -> bool {
    matches!(
        k.as_str(),
        "connection" | "proxy-connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    )
}

/// Remove hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a hashed removal per name.
    let (mut found, mut only_connection) = (false, true);
    for k in h.keys().filter(|k| is_hop_by_hop(k)) {
        found = true;
        only_connection &= *k == header::CONNECTION;
    }
    if !found {
        return;
    }
    // Most of the rest (every keep-alive response) carry `Connection: keep-alive` or `close`
    // alone, which names no header that is present: only `Connection` goes.
    if only_connection && h.get_all(header::CONNECTION).iter().all(names_no_header) {
        h.remove(header::CONNECTION);
        return;
    }
    // A typical response carries only `Connection: keep-alive`: remove the names that are there
    // (found by one more pass over the names) rather than look up every possible one.
    let present: Vec<HeaderName> = {
        // `Connection` may appear several times; every token in every value names a header.
        let listed: Vec<&str> = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or_default().split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        h.keys()
            .filter(|k| is_hop_by_hop(k) || listed.iter().any(|t| t.eq_ignore_ascii_case(k.as_str())))
            .cloned()
            .collect()
    };
    for n in &present {
        h.remove(n);
    }
}

/// A `Connection` value whose only option is `keep-alive` or `close`: the former names the
/// `Keep-Alive` header, which is hop-by-hop in its own right, the latter names nothing.
fn names_no_header(v: &HeaderValue) -> bool {
    let t = v.as_bytes().trim_ascii();
    t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
}

/// A client-supplied request id is kept only if it is short and plain.
pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// 128 random bits, hex.
pub fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut s = [0u8; 32];
    for c in s.iter_mut().rev() {
        *c = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    std::str::from_utf8(&s).map(str::to_owned).unwrap_or_default()
}

/// `f` of `ip` as text; the last address formatted on this thread is kept (a worker sees the same
/// clients again and again on keep-alive connections).
pub(crate) fn with_ip_text<R>(ip: IpAddr, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, String)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, text)) if *at == ip => f(text),
        _ => f(&last.insert((ip, ip.to_string())).1),
    })
}

/// A client address as a header value (made once per connection).
pub fn ip_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Append the client (its address as [`ip_value`] makes it) to `X-Forwarded-For`; set
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn set_forwarded(h: &mut HeaderMap, client: &HeaderValue, https: bool, host: Option<&HeaderValue>) {
    let xff = match h.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) if !prev.trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + client.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => Some(client.clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if https { "https" } else { "http" }));
    match host {
        Some(v) => {
            h.insert(X_FORWARDED_HOST, v.clone());
        }
        None => {
            h.remove(X_FORWARDED_HOST);
        }
    }
}

/// Size of a request head as counted against `max_header_bytes`.
pub fn head_size(h: &HeaderMap, target_len: usize) -> usize {
    target_len + h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn removes_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, hv("keep-alive, X-Secret-Hop"));
        h.append(header::CONNECTION, hv("x-second-hop"));
        h.insert("x-second-hop", hv("1"));
        h.insert("x-secret-hop", hv("1"));
        h.insert("keep-alive", hv("timeout=5"));
        h.insert(header::TE, hv("trailers"));
        h.insert(header::UPGRADE, hv("websocket"));
        h.insert("proxy-connection", hv("keep-alive"));
        h.insert(header::TRANSFER_ENCODING, hv("chunked"));
        h.insert("x-keep", hv("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-keep"], "yes");

        // A name listed in `Connection` in another case, with a value of several entries; a
        // listed name that is not there and an invalid token change nothing else.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, hv("X-Hop, absent, bad token, close"));
        h.append("x-hop", hv("1"));
        h.append("x-hop", hv("2"));
        h.insert("x-keep", hv("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, hv("203.0.113.7"));
        h.insert(X_FORWARDED_PROTO, hv("https"));
        let ip = |s: &str| ip_value(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        set_forwarded(&mut h, &ip("10.0.0.1"), false, Some(&hv("a.example")));
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.7, 10.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "a.example");

        // No earlier (or a blank) X-Forwarded-For: the client alone; IPv6 as text.
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, hv("  "));
        set_forwarded(&mut h, &ip("2001:db8::1"), true, None);
        assert_eq!(h[X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert!(!h.contains_key(X_FORWARDED_HOST));
    }

    const HOP_BY_HOP: [HeaderName; 7] = [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];

    #[test]
    fn every_hop_by_hop_name_and_no_other_is_recognised() {
        for n in &HOP_BY_HOP {
            assert!(is_hop_by_hop(n), "{n}");
        }
        for n in ["user-agent", "host", "x-forwarded-for", "content-length", "tex"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(n)), "{n}");
        }
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_unchanged() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, hv("a.example"));
        h.append("x-many", hv("1"));
        h.append("x-many", hv("2"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // One hop-by-hop header among others is still found.
        h.insert(header::TE, hv("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn a_lone_keep_alive_or_close_connection_is_removed_and_other_lists_still_name_headers() {
        for value in ["keep-alive", "Keep-Alive", " close "] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, hv("application/json"));
            h.insert(header::CONNECTION, HeaderValue::from_str(value).unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{value}: {h:?}");
            assert_eq!(h[header::CONTENT_TYPE], "application/json");
        }
        // `keep-alive` with a `Keep-Alive` header, two `Connection` values of which one names a
        // header, or a list: each takes the full path and removes what is named.
        let cases: [&[(&str, &str)]; 3] = [
            &[("connection", "keep-alive"), ("keep-alive", "timeout=5")],
            &[("connection", "close"), ("connection", "x-hop"), ("x-hop", "1")],
            &[("connection", "keep-alive, x-hop"), ("x-hop", "1")],
        ];
        for case in cases {
            let mut h = HeaderMap::new();
            for (name, value) in case.iter().chain(&[("x-keep", "yes")]) {
                h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
            }
            strip_hop_by_hop(&mut h);
            assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-keep"], "{case:?}");
        }
    }

    #[test]
    fn ip_text_follows_the_address() {
        let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for (ip, text) in [(a, "10.0.0.1"), (a, "10.0.0.1"), (b, "2001:db8::1"), (a, "10.0.0.1")] {
            assert_eq!(with_ip_text(ip, str::to_owned), text);
        }
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(&hv("abc-123")));
        assert!(!valid_request_id(&hv("a b")));
        assert!(!valid_request_id(&hv("")));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{id}");
        assert_ne!(id, new_request_id());
        // Every nibble position takes every value across ids (no stuck digit).
        let ids: Vec<String> = (0..2000).map(|_| new_request_id()).collect();
        for pos in 0..32 {
            let seen: std::collections::HashSet<u8> = ids.iter().map(|i| i.as_bytes()[pos]).collect();
            assert_eq!(seen.len(), 16, "position {pos}");
        }
    }
}
