//! The filter chain. A filter is a small unit that declares the phases it runs in, named as
//! in Pingora: `request_filter` (may refuse the request) → upstream selection →
//! `upstream_request_filter` → `response_filter` → `logging`. Filters run in configured order
//! on every request of their route; authentication, authorization, rate limiting, WAF,
//! transforms and audit plug in here.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::error::ProxyError;

/// What a filter sees of the request being proxied.
pub struct Session {
    /// The client's request head; `request_filter` may change it. After that phase its headers
    /// are moved into the upstream request (no copy on the hot path), so later phases see the
    /// method and URI here and the headers in `upstream_request_filter`'s `upstream` argument.
    pub request: http::request::Parts,
    pub client_addr: SocketAddr,
    pub request_id: String,
    pub route: Arc<str>,
    pub tls: bool,
}

#[async_trait::async_trait]
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;

    /// Before an upstream is chosen. Returning an error answers the client with it.
    async fn request_filter(&self, _session: &mut Session) -> Result<(), ProxyError> {
        Ok(())
    }

    /// The request about to be sent upstream (hop-by-hop headers already removed).
    fn upstream_request_filter(&self, _session: &Session, _upstream: &mut http::request::Parts) {}

    /// The upstream's response head, before it goes to the client.
    fn response_filter(&self, _session: &Session, _response: &mut http::response::Parts) {}

    /// After the response head was sent (or an error was returned).
    fn logging(&self, _session: &Session, _status: StatusCode) {}
}

/// Set and remove headers; used for both the request and the response side of a route.
pub struct HeaderRewrite {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
    response: bool,
}

impl HeaderRewrite {
    pub fn new(ops: &palisade_core::config::HeaderOps, response: bool) -> Result<Option<Self>, String> {
        if ops.set.is_empty() && ops.remove.is_empty() {
            return Ok(None);
        }
        let set = ops
            .set
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k}: {e}"))?,
                    HeaderValue::from_str(v).map_err(|e| format!("{k}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        let remove = ops
            .remove
            .iter()
            .map(|k| HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k}: {e}")))
            .collect::<Result<_, String>>()?;
        Ok(Some(HeaderRewrite { set, remove, response }))
    }

    fn apply(&self, h: &mut http::HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
    }
}

#[async_trait::async_trait]
impl Filter for HeaderRewrite {
    fn name(&self) -> &'static str {
        if self.response {
            "response_headers"
        } else {
            "request_headers"
        }
    }

    fn upstream_request_filter(&self, _s: &Session, up: &mut http::request::Parts) {
        if !self.response {
            self.apply(&mut up.headers);
        }
    }

    fn response_filter(&self, _s: &Session, resp: &mut http::response::Parts) {
        if self.response {
            self.apply(&mut resp.headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::config::HeaderOps;

    fn session() -> Session {
        let (request, ()) = http::Request::new(()).into_parts();
        Session {
            request,
            client_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            request_id: "r".into(),
            route: "x".into(),
            tls: false,
        }
    }

    #[test]
    fn header_rewrite_runs_in_its_phase_only() {
        let mut ops = HeaderOps::default();
        ops.set.insert("x-added".into(), "1".into());
        ops.remove.push("x-secret".into());
        let f = HeaderRewrite::new(&ops, false).ok().flatten();
        let Some(f) = f else { unreachable!() };
        let s = session();
        let (mut up, ()) = http::Request::builder().header("x-secret", "s").body(()).unwrap_or_default().into_parts();
        f.upstream_request_filter(&s, &mut up);
        assert_eq!(up.headers.get("x-added").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert!(up.headers.get("x-secret").is_none());
        let (mut resp, ()) =
            http::Response::builder().header("x-secret", "s").body(()).unwrap_or_default().into_parts();
        f.response_filter(&s, &mut resp);
        assert!(resp.headers.get("x-secret").is_some(), "request-side filter must not touch responses");
        assert_eq!(f.name(), "request_headers");
    }

    #[test]
    fn empty_ops_make_no_filter() {
        assert!(matches!(HeaderRewrite::new(&HeaderOps::default(), true), Ok(None)));
    }
}
