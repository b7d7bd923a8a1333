//! CORS per route, with the semantics of the Fetch standard (§3.2, "CORS protocol"). Preflights
//! are answered by the gateway; on actual responses the gateway's policy replaces whatever
//! `Access-Control-*` headers the upstream set. Configuration is validated and header values are
//! precomputed at construction.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// Request headers a browser never asks permission for (Fetch "CORS-safelisted request-header"
/// names; `content-type` is accepted whatever its value, so JSON APIs need not list it).
const SAFELISTED_HEADERS: &[&str] = &["accept", "accept-language", "content-language", "content-type"];

/// Headers a response may carry that belong to the CORS policy; the upstream's are dropped.
const POLICY_HEADERS: [HeaderName; 6] = [
    ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE,
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CorsSpec {
    /// Exact origins (`scheme://host[:port]`), or `"*"` for any origin.
    pub allow_origins: Vec<String>,
    /// Methods allowed beyond the safelisted GET, HEAD and POST; `"*"` allows any.
    pub allow_methods: Vec<String>,
    /// Request headers allowed beyond the safelisted ones; `"*"` allows any.
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read.
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    /// Seconds a browser may cache a preflight answer.
    pub max_age: Option<u64>,
}

/// The answer to a request that may be a preflight.
// `NotPreflight` reads better at call sites than `Not`, hence the allow.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Preflight {
    /// Not `OPTIONS` with both `Origin` and `Access-Control-Request-Method`: proxy it as usual.
    NotPreflight,
    /// Answer 204 with these headers, without contacting the upstream.
    Allowed(HeaderMap),
    /// Answer 403; the reason is for logs and the response body (it holds no request secrets).
    Refused(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Cors {
    any_origin: bool,
    /// Normalised (lowercase, default port removed) serialised origins.
    origins: Vec<String>,
    any_method: bool,
    methods: Vec<Method>,
    methods_value: Option<HeaderValue>,
    any_header: bool,
    /// Lowercase header names.
    headers: Vec<String>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl Cors {
    pub(crate) fn new(spec: CorsSpec) -> Result<Cors, String> {
        if spec.allow_origins.is_empty() {
            return Err("cors allow_origins must not be empty".to_owned());
        }
        let any_origin = spec.allow_origins.iter().any(|o| o.trim() == "*");
        if any_origin && spec.allow_credentials {
            return Err("cors allow_origins \"*\" cannot be combined with allow_credentials".to_owned());
        }
        let mut origins = Vec::new();
        for o in spec.allow_origins.iter().map(|o| o.trim()).filter(|o| *o != "*") {
            origins.push(
                normalize_origin(o).ok_or_else(|| format!("cors origin {:?} is not scheme://host[:port]", clip(o)))?,
            );
        }

        let any_method = spec.allow_methods.iter().any(|m| m.trim() == "*");
        let mut methods = Vec::new();
        for m in spec.allow_methods.iter().map(|m| m.trim()).filter(|m| *m != "*") {
            let method =
                Method::from_bytes(m.as_bytes()).map_err(|_| format!("cors method {:?} is invalid", clip(m)))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let methods_value = if methods.is_empty() {
            None
        } else {
            Some(join_value(methods.iter().map(Method::as_str), "allow_methods")?)
        };

        let any_header = spec.allow_headers.iter().any(|h| h.trim() == "*");
        let mut headers = Vec::new();
        for h in spec.allow_headers.iter().map(|h| h.trim()).filter(|h| *h != "*") {
            let name =
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("cors header {:?} is invalid", clip(h)))?;
            if !headers.iter().any(|x| x == name.as_str()) {
                headers.push(name.as_str().to_owned());
            }
        }

        let mut expose = Vec::new();
        for h in spec.expose_headers.iter().map(|h| h.trim()) {
            let name =
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("cors header {:?} is invalid", clip(h)))?;
            expose.push(name);
        }
        let expose_value = if expose.is_empty() {
            None
        } else {
            Some(join_value(expose.iter().map(HeaderName::as_str), "expose_headers")?)
        };

        Ok(Cors {
            any_origin,
            origins,
            any_method,
            methods,
            methods_value,
            any_header,
            headers,
            expose_value,
            credentials: spec.allow_credentials,
            max_age: spec.max_age.map(HeaderValue::from),
        })
    }

    /// Whether `origin` (a request's `Origin` value) is allowed.
    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        if self.any_origin {
            return true;
        }
        let Ok(origin) = origin.to_str() else { return false };
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The `Access-Control-Allow-Origin` value for an allowed origin.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Whether responses differ by `Origin` (they do unless the answer is always `*`).
    fn varies_by_origin(&self) -> bool {
        !self.any_origin || self.credentials
    }

    pub(crate) fn preflight(&self, method: &Method, headers: &HeaderMap) -> Preflight {
        if method != Method::OPTIONS {
            return Preflight::NotPreflight;
        }
        let (Some(origin), Some(requested)) = (headers.get(ORIGIN), headers.get(ACCESS_CONTROL_REQUEST_METHOD)) else {
            return Preflight::NotPreflight;
        };
        if headers.get_all(ORIGIN).iter().nth(1).is_some() {
            return Preflight::Refused("more than one Origin header".to_owned());
        }
        if !self.origin_allowed(origin) {
            return Preflight::Refused(match origin.to_str() {
                Ok(o) => format!("origin {:?} is not allowed", clip(o)),
                Err(_) => "origin is not allowed".to_owned(),
            });
        }
        let Ok(requested) = Method::from_bytes(requested.as_bytes()) else {
            return Preflight::Refused("Access-Control-Request-Method is not a method".to_owned());
        };
        let safelisted = requested == Method::GET || requested == Method::HEAD || requested == Method::POST;
        if !(safelisted || self.any_method || self.methods.contains(&requested)) {
            return Preflight::Refused(format!("method {} is not allowed", clip(requested.as_str())));
        }

        // Every requested header must be allowed; the answer echoes exactly the requested list.
        let mut asked: Vec<String> = Vec::new();
        for value in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let Ok(value) = value.to_str() else {
                return Preflight::Refused("Access-Control-Request-Headers is not ASCII".to_owned());
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    return Preflight::Refused("Access-Control-Request-Headers holds an invalid name".to_owned());
                };
                let name = name.as_str();
                let allowed =
                    self.any_header || SAFELISTED_HEADERS.contains(&name) || self.headers.iter().any(|h| h == name);
                if !allowed {
                    return Preflight::Refused(format!("request header {} is not allowed", clip(name)));
                }
                if !asked.iter().any(|a| a == name) {
                    asked.push(name.to_owned());
                }
            }
        }

        let mut out = HeaderMap::new();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        if self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        // A wildcard, or a safelisted method when none is configured: echo the method asked for.
        let methods = if self.any_method || self.methods_value.is_none() {
            HeaderValue::from_str(requested.as_str()).ok()
        } else {
            self.methods_value.clone()
        };
        if let Some(m) = methods {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        if !asked.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&asked.join(", ")) {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if let Some(age) = &self.max_age {
            out.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        out.insert(
            VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        Preflight::Allowed(out)
    }

    /// Applies the policy to an actual (non-preflight) response: upstream `Access-Control-*`
    /// policy headers are always removed; an allowed origin gets ours. `Vary: Origin` is added
    /// whenever the answer depends on the origin, also for refused or absent origins, so a shared
    /// cache never serves one origin's answer to another.
    pub(crate) fn actual_response_headers(&self, request_origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        for name in &POLICY_HEADERS {
            response.remove(name);
        }
        if let Some(origin) = request_origin.filter(|o| self.origin_allowed(o)) {
            response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
            if self.credentials {
                response.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            }
            if let Some(v) = &self.expose_value {
                response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
        }
        if self.varies_by_origin() {
            add_vary_origin(response);
        }
    }
}

/// Adds `Origin` to `Vary`, merging with a single existing field; leaves `Vary: *` or a `Vary`
/// that already names `Origin` alone.
fn add_vary_origin(response: &mut HeaderMap) {
    let mut fields = 0usize;
    for v in response.get_all(VARY) {
        fields += 1;
        let Ok(s) = v.to_str() else { continue };
        if s.split(',').map(str::trim).any(|t| t == "*" || t.eq_ignore_ascii_case("origin")) {
            return;
        }
    }
    let merged = match (fields, response.get(VARY).and_then(|v| v.to_str().ok())) {
        (1, Some(existing)) if !existing.trim().is_empty() => {
            HeaderValue::from_str(&format!("{}, Origin", existing.trim())).ok()
        }
        _ => None,
    };
    match merged {
        Some(v) => {
            response.insert(VARY, v);
        }
        None if fields == 0 => {
            response.insert(VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            response.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Parses `scheme://host[:port]` into the serialised origin browsers send: lowercase, no
/// default port, no path, userinfo, query or fragment.
fn normalize_origin(o: &str) -> Option<String> {
    let (scheme, rest) = o.split_once("://")?;
    let mut sc = scheme.chars();
    if !sc.next()?.is_ascii_alphabetic() || !sc.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let labels_ok = host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if host.is_empty() || host.len() > 253 || !labels_ok {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = p.parse().ok()?;
            if n == 0 || n > 65535 {
                return None;
            }
            let default = (scheme == "http" && n == 80) || (scheme == "https" && n == 443);
            (!default).then_some(n)
        }
        Some(_) => return None,
    };
    Some(match port {
        Some(n) => format!("{scheme}://{host}:{n}"),
        None => format!("{scheme}://{host}"),
    })
}

fn join_value<'a>(items: impl Iterator<Item = &'a str>, what: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&items.collect::<Vec<_>>().join(", "))
        .map_err(|_| format!("cors {what} is not a valid header value"))
}

/// Request-derived text in refusal reasons is kept short.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// The route filter: answers preflights before authentication (they carry no credentials) and
/// puts the CORS headers on every response of the route, the gateway's own errors included.
pub(crate) struct CorsFilter(pub(crate) Cors);

/// The request's `Origin`, kept for the response phase.
#[derive(Clone)]
struct SeenOrigin(Option<HeaderValue>);

/// Marks a preflight the gateway answered itself (its headers are final).
#[derive(Clone)]
struct Answered;

#[async_trait::async_trait]
impl crate::filter::Filter for CorsFilter {
    fn name(&self) -> &'static str {
        "cors"
    }

    async fn request_filter(
        &self,
        s: &mut crate::filter::Session,
    ) -> Result<crate::filter::Flow, crate::error::ProxyError> {
        use palisade_core::audit::Stage;
        match self.0.preflight(&s.request.method, &s.request.headers) {
            Preflight::NotPreflight => {
                s.ext.insert(SeenOrigin(s.request.headers.get(http::header::ORIGIN).cloned()));
                Ok(crate::filter::Flow::Continue)
            }
            Preflight::Allowed(headers) => {
                s.allow(Stage::Cors, "CORS preflight answered");
                s.ext.insert(Answered);
                let mut r = http::Response::new(crate::body::ResponseBody::empty());
                *r.status_mut() = http::StatusCode::NO_CONTENT;
                *r.headers_mut() = headers;
                Ok(crate::filter::Flow::Respond(r))
            }
            Preflight::Refused(why) => {
                let reason = format!("CORS preflight refused: {why}");
                s.deny(Stage::Cors, reason.clone());
                Err(crate::error::ProxyError::rejected(http::StatusCode::FORBIDDEN, reason))
            }
        }
    }

    fn response_filter(&self, s: &crate::filter::Session, resp: &mut http::response::Parts) {
        if s.ext.get::<Answered>().is_some() {
            return;
        }
        let origin = s.ext.get::<SeenOrigin>().and_then(|o| o.0.as_ref());
        self.0.actual_response_headers(origin, &mut resp.headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CorsSpec {
        CorsSpec {
            allow_origins: vec!["https://App.Example.com:443".into(), "http://localhost:3000".into()],
            allow_methods: vec!["PUT".into(), "DELETE".into()],
            allow_headers: vec!["Authorization".into(), "X-Request-Id".into()],
            expose_headers: vec!["X-Request-Id".into(), "ETag".into()],
            allow_credentials: true,
            max_age: Some(600),
        }
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn dump(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<_> = h.iter().map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap())).collect();
        v.sort();
        v
    }

    fn allowed(p: Preflight) -> Vec<String> {
        match p {
            Preflight::Allowed(h) => dump(&h),
            other => panic!("expected Allowed, got {other:?}"),
        }
    }

    const VARY_ALL: &str = "vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

    #[test]
    fn preflight_allowed_with_credentials() {
        let cors = Cors::new(spec()).unwrap();
        let h = req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "authorization, X-REQUEST-ID,content-type"),
        ]);
        assert_eq!(
            allowed(cors.preflight(&Method::OPTIONS, &h)),
            vec![
                "access-control-allow-credentials: true",
                "access-control-allow-headers: authorization, x-request-id, content-type",
                "access-control-allow-methods: PUT, DELETE",
                "access-control-allow-origin: https://app.example.com",
                "access-control-max-age: 600",
                VARY_ALL,
            ]
        );
    }

    #[test]
    fn not_preflight() {
        let cors = Cors::new(spec()).unwrap();
        let full = req(&[("origin", "https://app.example.com"), ("access-control-request-method", "PUT")]);
        assert_eq!(cors.preflight(&Method::GET, &full), Preflight::NotPreflight);
        let no_acrm = req(&[("origin", "https://app.example.com")]);
        assert_eq!(cors.preflight(&Method::OPTIONS, &no_acrm), Preflight::NotPreflight);
        let no_origin = req(&[("access-control-request-method", "PUT")]);
        assert_eq!(cors.preflight(&Method::OPTIONS, &no_origin), Preflight::NotPreflight);
    }

    #[test]
    fn preflight_refusals() {
        let cors = Cors::new(spec()).unwrap();
        let refuse = |pairs: &[(&str, &str)]| match cors.preflight(&Method::OPTIONS, &req(pairs)) {
            Preflight::Refused(r) => r,
            other => panic!("expected Refused, got {other:?}"),
        };
        assert_eq!(
            refuse(&[("origin", "https://evil.example"), ("access-control-request-method", "GET")]),
            "origin \"https://evil.example\" is not allowed"
        );
        // Same host, other scheme or port: a different origin.
        assert_eq!(
            refuse(&[("origin", "http://app.example.com"), ("access-control-request-method", "GET")]),
            "origin \"http://app.example.com\" is not allowed"
        );
        assert_eq!(
            refuse(&[("origin", "null"), ("access-control-request-method", "GET")]),
            "origin \"null\" is not allowed"
        );
        assert_eq!(
            refuse(&[("origin", "http://localhost:3000"), ("access-control-request-method", "PATCH")]),
            "method PATCH is not allowed"
        );
        // Methods are case-sensitive (Fetch normalises only the standard ones in the browser).
        assert_eq!(
            refuse(&[("origin", "http://localhost:3000"), ("access-control-request-method", "put")]),
            "method put is not allowed"
        );
        assert_eq!(
            refuse(&[("origin", "http://localhost:3000"), ("access-control-request-method", "P UT")]),
            "Access-Control-Request-Method is not a method"
        );
        assert_eq!(
            refuse(&[
                ("origin", "http://localhost:3000"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "authorization"),
                ("access-control-request-headers", "x-api-key"),
            ]),
            "request header x-api-key is not allowed"
        );
        assert_eq!(
            refuse(&[
                ("origin", "http://localhost:3000"),
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
            ]),
            "more than one Origin header"
        );
    }

    #[test]
    fn safelisted_method_and_headers_need_no_configuration() {
        let cors =
            Cors::new(CorsSpec { allow_origins: vec!["https://a.example".into()], ..CorsSpec::default() }).unwrap();
        let h = req(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "Content-Type, accept"),
        ]);
        assert_eq!(
            allowed(cors.preflight(&Method::OPTIONS, &h)),
            vec![
                "access-control-allow-headers: content-type, accept",
                "access-control-allow-methods: POST",
                "access-control-allow-origin: https://a.example",
                VARY_ALL,
            ]
        );
        let put = req(&[("origin", "https://a.example"), ("access-control-request-method", "PUT")]);
        assert_eq!(cors.preflight(&Method::OPTIONS, &put), Preflight::Refused("method PUT is not allowed".into()));
    }

    #[test]
    fn wildcards_without_credentials() {
        let cors = Cors::new(CorsSpec {
            allow_origins: vec!["*".into()],
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            ..CorsSpec::default()
        })
        .unwrap();
        let h = req(&[
            ("origin", "https://anything.example"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "x-custom"),
        ]);
        assert_eq!(
            allowed(cors.preflight(&Method::OPTIONS, &h)),
            vec![
                "access-control-allow-headers: x-custom",
                "access-control-allow-methods: PATCH",
                "access-control-allow-origin: *",
                VARY_ALL,
            ]
        );
        // Actual response: `*`, and no Vary since the answer never depends on the origin.
        let mut resp = req(&[("access-control-allow-origin", "https://upstream.example")]);
        cors.actual_response_headers(Some(&HeaderValue::from_static("https://x.example")), &mut resp);
        assert_eq!(dump(&resp), vec!["access-control-allow-origin: *"]);
    }

    #[test]
    fn actual_response_allowed_origin() {
        let cors = Cors::new(spec()).unwrap();
        let mut resp = req(&[
            ("vary", "Accept-Encoding"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET"),
            ("content-type", "application/json"),
        ]);
        cors.actual_response_headers(Some(&HeaderValue::from_static("http://localhost:3000")), &mut resp);
        assert_eq!(
            dump(&resp),
            vec![
                "access-control-allow-credentials: true",
                "access-control-allow-origin: http://localhost:3000",
                "access-control-expose-headers: x-request-id, etag",
                "content-type: application/json",
                "vary: Accept-Encoding, Origin",
            ]
        );
    }

    #[test]
    fn actual_response_disallowed_or_absent_origin() {
        let cors = Cors::new(spec()).unwrap();
        for origin in [Some(HeaderValue::from_static("https://evil.example")), None] {
            let mut resp = req(&[
                ("access-control-allow-origin", "*"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "x-secret"),
                ("x-other", "1"),
            ]);
            cors.actual_response_headers(origin.as_ref(), &mut resp);
            assert_eq!(dump(&resp), vec!["vary: Origin", "x-other: 1"]);
        }
    }

    #[test]
    fn vary_merging() {
        let mut star = req(&[("vary", "*")]);
        add_vary_origin(&mut star);
        assert_eq!(dump(&star), vec!["vary: *"]);
        let mut has = req(&[("vary", "accept-encoding, ORIGIN")]);
        add_vary_origin(&mut has);
        assert_eq!(dump(&has), vec!["vary: accept-encoding, ORIGIN"]);
        let mut two = req(&[("vary", "Accept"), ("vary", "Cookie")]);
        add_vary_origin(&mut two);
        assert_eq!(dump(&two), vec!["vary: Accept", "vary: Cookie", "vary: Origin"]);
    }

    #[test]
    fn construction_errors() {
        let err = |s: CorsSpec| Cors::new(s).unwrap_err();
        assert_eq!(
            err(CorsSpec { allow_origins: vec!["*".into()], allow_credentials: true, ..CorsSpec::default() }),
            "cors allow_origins \"*\" cannot be combined with allow_credentials"
        );
        assert_eq!(err(CorsSpec::default()), "cors allow_origins must not be empty");
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://user@app.example.com",
            "https://app.example.com:0",
            "https://app.example.com:65536",
            "https://app.example.com:x",
            "https://*.example.com",
            "null",
            "1http://a.example",
        ] {
            assert_eq!(
                err(CorsSpec { allow_origins: vec![bad.into()], ..CorsSpec::default() }),
                format!("cors origin {bad:?} is not scheme://host[:port]")
            );
        }
        assert_eq!(
            err(CorsSpec {
                allow_origins: vec!["*".into()],
                allow_methods: vec!["GE T".into()],
                ..CorsSpec::default()
            }),
            "cors method \"GE T\" is invalid"
        );
        assert_eq!(
            err(CorsSpec { allow_origins: vec!["*".into()], allow_headers: vec!["x y".into()], ..CorsSpec::default() }),
            "cors header \"x y\" is invalid"
        );
    }

    #[test]
    fn origin_normalisation() {
        assert_eq!(normalize_origin("HTTPS://App.Example.COM:443").as_deref(), Some("https://app.example.com"));
        assert_eq!(normalize_origin("http://a.example:80").as_deref(), Some("http://a.example"));
        assert_eq!(normalize_origin("http://a.example:443").as_deref(), Some("http://a.example:443"));
        assert_eq!(normalize_origin("http://[::1]:8080").as_deref(), Some("http://[::1]:8080"));
        assert_eq!(normalize_origin("http://[::1]x"), None);
        assert_eq!(normalize_origin("http://127.0.0.1:8080").as_deref(), Some("http://127.0.0.1:8080"));
    }
}
