//! HTTP response headers for a verdict: the IETF `RateLimit-Policy` / `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers, structured-field form of draft -08 and later) and `Retry-After`.
//!
//! Invariant: every value is built from integers and a sanitized sf-string, so it is always a valid
//! header value; seconds are rounded up so that a client honouring them never comes back too early.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::gcra::{Quota, Verdict};

/// `RateLimit-Policy` header name.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` header name.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Headers describing `verdict` under `quota`, for the policy named `policy_name`:
///
/// - `RateLimit-Policy: "<name>";q=<limit>;w=<period in seconds, rounded up, at least 1>`
/// - `RateLimit: "<name>";r=<remaining>;t=<seconds until the full burst is back, rounded up>`
/// - `Retry-After: <seconds, rounded up, at least 1>` when the request is limited.
///
/// The name becomes a structured-field string: `"` and `\` are escaped, and characters outside printable
/// ASCII are replaced by `_` (sf-strings cannot carry them).
pub fn response_headers(quota: &Quota, verdict: &Verdict, policy_name: &str) -> Vec<(HeaderName, HeaderValue)> {
    PolicyHeaders::new(quota, policy_name).headers(verdict)
}

/// [`response_headers`] for one policy, with what does not depend on the verdict (the
/// `RateLimit-Policy` value and the quoted name) made once.
#[derive(Debug, Clone)]
pub struct PolicyHeaders {
    name: String,
    policy: Option<HeaderValue>,
}

impl PolicyHeaders {
    pub fn new(quota: &Quota, policy_name: &str) -> PolicyHeaders {
        let name = sf_string(policy_name);
        let window = ceil_secs(quota.period()).max(1);
        // Cannot fail (printable ASCII only); skipping a header is the harmless fallback anyway.
        let policy = HeaderValue::from_str(&format!("{name};q={};w={window}", quota.limit())).ok();
        PolicyHeaders { name, policy }
    }

    /// The headers for `verdict` (see [`response_headers`]).
    pub fn headers(&self, verdict: &Verdict) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::with_capacity(3);
        self.each(verdict, |name, value| headers.push((name, value)));
        headers
    }

    /// [`PolicyHeaders::headers`], inserted into `map` (replacing values of the same names).
    pub fn insert(&self, verdict: &Verdict, map: &mut HeaderMap) {
        self.each(verdict, |name, value| {
            map.insert(name, value);
        });
    }

    fn each(&self, verdict: &Verdict, mut out: impl FnMut(HeaderName, HeaderValue)) {
        let (remaining, reset, retry_after) = match *verdict {
            Verdict::Allowed { remaining, reset } => (remaining, reset, None),
            Verdict::Limited { retry_after, reset } => (0, reset, Some(retry_after)),
        };
        if let Some(p) = &self.policy {
            out(RATELIMIT_POLICY, p.clone());
        }
        // Allocated once, at its exact size, so that it becomes the header's bytes without a copy.
        let (mut r_digits, mut t_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
        let r = r_digits.format(remaining).as_bytes();
        let t = t_digits.format(ceil_secs(reset)).as_bytes();
        let parts: [&[u8]; 5] = [self.name.as_bytes(), b";r=", r, b";t=", t];
        let mut value = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            value.extend_from_slice(p);
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            out(RATELIMIT, value);
        }
        if let Some(retry_after) = retry_after {
            out(RETRY_AFTER, HeaderValue::from(ceil_secs(retry_after).max(1)));
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// RFC 8941 sf-string: `"` + printable ASCII with `"` and `\` escaped + `"`.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(headers: &[(HeaderName, HeaderValue)]) -> Vec<(String, String)> {
        headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    /// `insert` puts exactly `headers` into a map, replacing what was there under those names.
    #[test]
    fn inserted_headers_are_the_listed_ones() {
        let quota = Quota::new(100, Duration::from_secs(60), 10).unwrap();
        let p = PolicyHeaders::new(&quota, "per-client");
        for verdict in [
            Verdict::Allowed { remaining: 7, reset: Duration::from_millis(2400) },
            Verdict::Allowed { remaining: u32::MAX, reset: Duration::MAX },
            Verdict::Limited { retry_after: Duration::from_millis(1), reset: Duration::from_secs(9) },
        ] {
            let mut map = HeaderMap::new();
            map.insert(RATELIMIT, HeaderValue::from_static("old"));
            map.insert("x-other", HeaderValue::from_static("kept"));
            p.insert(&verdict, &mut map);
            let mut expected = render(&p.headers(&verdict));
            expected.push(("x-other".into(), "kept".into()));
            let mut got: Vec<_> = map.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())).collect();
            expected.sort();
            got.sort();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn allowed_headers() {
        let quota = Quota::new(100, Duration::from_secs(60), 10).unwrap();
        let verdict = Verdict::Allowed { remaining: 7, reset: Duration::from_millis(2400) };
        assert_eq!(
            render(&response_headers(&quota, &verdict, "per-client")),
            pairs(&[("ratelimit-policy", "\"per-client\";q=100;w=60"), ("ratelimit", "\"per-client\";r=7;t=3")])
        );
    }

    #[test]
    fn limited_headers_round_up() {
        let quota = Quota::new(5, Duration::from_millis(500), 0).unwrap();
        let verdict = Verdict::Limited { retry_after: Duration::from_millis(1), reset: Duration::from_secs(2) };
        assert_eq!(
            render(&response_headers(&quota, &verdict, "api")),
            pairs(&[("ratelimit-policy", "\"api\";q=5;w=1"), ("ratelimit", "\"api\";r=0;t=2"), ("retry-after", "1")])
        );
        let verdict = Verdict::Limited { retry_after: Duration::from_millis(3001), reset: Duration::from_millis(3001) };
        assert_eq!(render(&response_headers(&quota, &verdict, "api"))[2], ("retry-after".into(), "4".into()));
        let verdict = Verdict::Limited { retry_after: Duration::ZERO, reset: Duration::ZERO };
        assert_eq!(render(&response_headers(&quota, &verdict, "api"))[2], ("retry-after".into(), "1".into()));
    }

    #[test]
    fn large_numbers_are_written_whole() {
        let quota = Quota::new(u32::MAX, Duration::from_secs(86_400 * 365), 0).unwrap();
        let verdict = Verdict::Allowed { remaining: u32::MAX, reset: Duration::from_secs(31_536_000) };
        assert_eq!(
            render(&response_headers(&quota, &verdict, "big"))[1],
            ("ratelimit".into(), format!("\"big\";r={};t=31536000", u32::MAX))
        );
    }

    #[test]
    fn policy_name_is_a_valid_sf_string() {
        let quota = Quota::new(1, Duration::from_secs(1), 0).unwrap();
        let verdict = Verdict::Allowed { remaining: 0, reset: Duration::from_secs(1) };
        let headers = render(&response_headers(&quota, &verdict, "a\"b\\c\u{e9}\r\n"));
        assert_eq!(headers[0].1, r#""a\"b\\c___";q=1;w=1"#);
    }
}
