//! Security response headers: HSTS, `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`
//! and `Content-Security-Policy`. Every value is validated and turned into a `HeaderValue` once, at
//! construction; `apply` only inserts. HSTS is sent only over TLS (RFC 6797 §7.2 forbids it on plain HTTP).

use http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// HSTS value used when the configuration does not name one: one year, subdomains included.
pub(crate) const DEFAULT_HSTS: &str = "max-age=31536000; includeSubDomains";

/// Referrer policies defined by the W3C Referrer Policy spec (§3); a header may list several
/// (comma-separated, the last one the browser knows wins), so each is checked.
const REFERRER_POLICIES: &[&str] = &[
    "no-referrer",
    "no-referrer-when-downgrade",
    "same-origin",
    "origin",
    "strict-origin",
    "origin-when-cross-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];

/// What to send; `None` / `false` leaves that header out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecHeadersSpec {
    pub hsts: Option<String>,
    pub content_type_options: bool,
    /// `DENY` or `SAMEORIGIN` (case-insensitive; `ALLOW-FROM` is obsolete and refused).
    pub frame_options: Option<String>,
    pub referrer_policy: Option<String>,
    pub csp: Option<String>,
    /// Replace values the upstream set; by default the upstream's own value is kept.
    pub override_upstream: bool,
}

impl Default for SecHeadersSpec {
    fn default() -> Self {
        SecHeadersSpec {
            hsts: Some(DEFAULT_HSTS.to_owned()),
            content_type_options: true,
            frame_options: Some("DENY".to_owned()),
            referrer_policy: Some("no-referrer".to_owned()),
            csp: None,
            override_upstream: false,
        }
    }
}

/// The precomputed headers of one route.
#[derive(Debug, Clone)]
pub(crate) struct SecurityHeaders {
    hsts: Option<HeaderValue>,
    /// Headers sent on every response (TLS or not).
    always: Vec<(HeaderName, HeaderValue)>,
    override_upstream: bool,
}

impl SecurityHeaders {
    pub(crate) fn new(spec: SecHeadersSpec) -> Result<Self, String> {
        let hsts = spec.hsts.as_deref().map(parse_hsts).transpose()?;
        let mut always = Vec::new();
        if spec.content_type_options {
            always.push((X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
        }
        if let Some(fo) = &spec.frame_options {
            let v = if fo.trim().eq_ignore_ascii_case("DENY") {
                "DENY"
            } else if fo.trim().eq_ignore_ascii_case("SAMEORIGIN") {
                "SAMEORIGIN"
            } else {
                return Err(format!("frame_options must be DENY or SAMEORIGIN, not {:?}", clip(fo)));
            };
            always.push((X_FRAME_OPTIONS, HeaderValue::from_static(v)));
        }
        if let Some(rp) = &spec.referrer_policy {
            always.push((REFERRER_POLICY, parse_referrer_policy(rp)?));
        }
        if let Some(csp) = &spec.csp {
            let csp = csp.trim();
            if csp.is_empty() {
                return Err("csp must not be empty".to_owned());
            }
            let v = HeaderValue::from_str(csp).map_err(|_| "csp is not a valid header value".to_owned())?;
            always.push((CONTENT_SECURITY_POLICY, v));
        }
        Ok(SecurityHeaders { hsts, always, override_upstream: spec.override_upstream })
    }

    /// Adds the headers to a response head. `tls` says whether the client connection is TLS.
    pub(crate) fn apply(&self, tls: bool, response: &mut HeaderMap) {
        if tls {
            if let Some(v) = &self.hsts {
                self.set(response, STRICT_TRANSPORT_SECURITY, v);
            }
        }
        for (name, value) in &self.always {
            self.set(response, name.clone(), value);
        }
    }

    fn set(&self, response: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
        if self.override_upstream {
            response.insert(name, value.clone());
        } else {
            response.entry(name).or_insert_with(|| value.clone());
        }
    }
}

/// RFC 6797 §6.1: directives separated by `;`, `max-age` required exactly once with a
/// delta-seconds value (optionally quoted), `includeSubDomains` at most once; unknown
/// directives (such as `preload`) are allowed, as UAs ignore them.
fn parse_hsts(value: &str) -> Result<HeaderValue, String> {
    let mut max_age = 0usize;
    let mut subdomains = 0usize;
    for directive in value.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("max-age") {
            max_age += 1;
            let arg = arg.unwrap_or("");
            let digits = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(arg);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("hsts max-age must be a number of seconds, not {:?}", clip(arg)));
            }
        } else if name.eq_ignore_ascii_case("includeSubDomains") {
            subdomains += 1;
            if arg.is_some() {
                return Err("hsts includeSubDomains takes no value".to_owned());
            }
        }
    }
    if max_age != 1 {
        return Err("hsts must contain exactly one max-age directive".to_owned());
    }
    if subdomains > 1 {
        return Err("hsts must not repeat includeSubDomains".to_owned());
    }
    HeaderValue::from_str(value.trim()).map_err(|_| "hsts is not a valid header value".to_owned())
}

fn parse_referrer_policy(value: &str) -> Result<HeaderValue, String> {
    let mut any = false;
    for token in value.split(',').map(str::trim) {
        if !REFERRER_POLICIES.iter().any(|p| p.eq_ignore_ascii_case(token)) {
            return Err(format!("unknown referrer_policy {:?}", clip(token)));
        }
        any = true;
    }
    if !any {
        return Err("referrer_policy must not be empty".to_owned());
    }
    HeaderValue::from_str(&value.trim().to_ascii_lowercase())
        .map_err(|_| "referrer_policy is not a valid header value".to_owned())
}

/// Configuration values are echoed in errors only in part, so a mistaken paste stays short.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// The route filter: security headers on every response of the route (upstream or gateway-made).
pub(crate) struct SecHeadersFilter(pub(crate) SecurityHeaders);

#[async_trait::async_trait]
impl crate::filter::Filter for SecHeadersFilter {
    fn name(&self) -> &'static str {
        "security_headers"
    }

    fn response_filter(&self, s: &crate::filter::Session, resp: &mut http::response::Parts) {
        self.0.apply(s.tls, &mut resp.headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(spec: SecHeadersSpec, tls: bool, mut map: HeaderMap) -> Vec<(String, String)> {
        SecurityHeaders::new(spec).unwrap().apply(tls, &mut map);
        let mut v: Vec<_> = map.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
        v.sort();
        v
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = p.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        v.sort();
        v
    }

    #[test]
    fn defaults_over_tls() {
        assert_eq!(
            all(SecHeadersSpec::default(), true, HeaderMap::new()),
            pairs(&[
                ("strict-transport-security", "max-age=31536000; includeSubDomains"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer"),
            ])
        );
    }

    #[test]
    fn no_hsts_over_plain_http() {
        assert_eq!(
            all(SecHeadersSpec::default(), false, HeaderMap::new()),
            pairs(&[
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer")
            ])
        );
    }

    #[test]
    fn upstream_values_kept_unless_override() {
        let mut upstream = HeaderMap::new();
        upstream.insert(X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        upstream.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=60"));
        let spec = SecHeadersSpec { csp: Some("default-src 'self'".into()), ..SecHeadersSpec::default() };
        assert_eq!(
            all(spec.clone(), true, upstream.clone()),
            pairs(&[
                ("strict-transport-security", "max-age=60"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "SAMEORIGIN"),
                ("referrer-policy", "no-referrer"),
                ("content-security-policy", "default-src 'self'"),
            ])
        );
        // Override replaces every upstream value, including repeated ones.
        upstream.append(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        assert_eq!(
            all(SecHeadersSpec { override_upstream: true, ..spec }, true, upstream),
            pairs(&[
                ("strict-transport-security", "max-age=31536000; includeSubDomains"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer"),
                ("content-security-policy", "default-src 'self'"),
            ])
        );
    }

    #[test]
    fn everything_off_adds_nothing() {
        let spec = SecHeadersSpec {
            hsts: None,
            content_type_options: false,
            frame_options: None,
            referrer_policy: None,
            csp: None,
            override_upstream: true,
        };
        assert_eq!(all(spec, true, HeaderMap::new()), pairs(&[]));
    }

    #[test]
    fn values_normalised() {
        let spec = SecHeadersSpec {
            hsts: Some(" max-age=\"600\"; preload ".into()),
            frame_options: Some("sameorigin".into()),
            referrer_policy: Some("No-Referrer, Strict-Origin-When-Cross-Origin".into()),
            ..SecHeadersSpec::default()
        };
        assert_eq!(
            all(spec, true, HeaderMap::new()),
            pairs(&[
                ("strict-transport-security", "max-age=\"600\"; preload"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "SAMEORIGIN"),
                ("referrer-policy", "no-referrer, strict-origin-when-cross-origin"),
            ])
        );
    }

    #[test]
    fn invalid_values_refused() {
        let bad = |spec: SecHeadersSpec| SecurityHeaders::new(spec).unwrap_err();
        let d = SecHeadersSpec::default;
        assert_eq!(
            bad(SecHeadersSpec { frame_options: Some("ALLOW-FROM https://a.example".into()), ..d() }),
            "frame_options must be DENY or SAMEORIGIN, not \"ALLOW-FROM https://a.example\""
        );
        assert_eq!(
            bad(SecHeadersSpec { hsts: Some("includeSubDomains".into()), ..d() }),
            "hsts must contain exactly one max-age directive"
        );
        assert_eq!(
            bad(SecHeadersSpec { hsts: Some("max-age=1; max-age=2".into()), ..d() }),
            "hsts must contain exactly one max-age directive"
        );
        assert_eq!(
            bad(SecHeadersSpec { hsts: Some("max-age=-1".into()), ..d() }),
            "hsts max-age must be a number of seconds, not \"-1\""
        );
        assert_eq!(
            bad(SecHeadersSpec { hsts: Some("max-age=1; includeSubDomains=yes".into()), ..d() }),
            "hsts includeSubDomains takes no value"
        );
        assert_eq!(
            bad(SecHeadersSpec { hsts: Some("max-age=1; x=\u{7f}".into()), ..d() }),
            "hsts is not a valid header value"
        );
        assert_eq!(
            bad(SecHeadersSpec { referrer_policy: Some("same-origin, never".into()), ..d() }),
            "unknown referrer_policy \"never\""
        );
        assert_eq!(bad(SecHeadersSpec { referrer_policy: Some("".into()), ..d() }), "unknown referrer_policy \"\"");
        assert_eq!(bad(SecHeadersSpec { csp: Some("  ".into()), ..d() }), "csp must not be empty");
        assert_eq!(
            bad(SecHeadersSpec { csp: Some("default-src 'self'\r\nX-Evil: 1".into()), ..d() }),
            "csp is not a valid header value"
        );
    }
}
