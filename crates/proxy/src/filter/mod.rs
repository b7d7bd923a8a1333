//! The filter chain. A filter is a small unit that declares the phases it runs in, named as
//! in Pingora: `request_filter` (may refuse or answer the request) → `request_body_filter`
//! (only for filters that ask for the buffered body) → upstream selection →
//! `upstream_request_filter` → `response_body_filter` (only for filters that ask for a buffered
//! response body) → `response_filter` (upstream and gateway-made responses alike) → `logging`.
//! Filters run in configured order on every request of their route.

pub(crate) mod authn;
pub(crate) mod authz;
pub(crate) mod cors;
pub(crate) mod ratelimit;
pub(crate) mod secheaders;
pub(crate) mod transform;
pub(crate) mod validate;
pub(crate) mod waf;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use palisade_core::audit::{Decision, Stage};

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::identity::{Identity, PeerCert};

/// What a filter sees of the request being proxied.
pub struct Session {
    /// The client's request head; `request_filter` may change it. After the request phases its
    /// headers are moved into the upstream request (no copy on the hot path), so later phases see
    /// the method and URI here and the headers in `upstream_request_filter`'s `upstream` argument.
    pub request: http::request::Parts,
    pub client_addr: SocketAddr,
    /// The client's address after trusted-proxy handling (`client_ip.trusted_proxies`).
    pub client_ip: IpAddr,
    pub request_id: String,
    pub route: Arc<str>,
    pub tls: bool,
    /// Whether a request body follows the head (known before it is read).
    pub body_expected: bool,
    /// The client certificate, verified by the listener (against `client_auth.ca`, or the mesh bundle).
    pub peer_cert: Option<Arc<PeerCert>>,
    /// Set by the authentication filter only (it is the one that verified it).
    pub identity: Option<Arc<Identity>>,
    /// The decision to audit for this request.
    pub audit: AuditNote,
    /// Per-request state a filter keeps between its phases.
    pub ext: http::Extensions,
    /// The rate-limit filter's tightest verdict (its limit's index) for an allowed request: the
    /// response's `RateLimit` headers. A field, because `ext` allocates on every request.
    pub rate_limit: Option<(usize, palisade_ratelimit::Verdict)>,
}

/// The security decision of a request, filled in by the filters as they decide.
#[derive(Debug, Default)]
pub struct AuditNote {
    pub decision: Option<(Decision, Stage)>,
    pub reason: String,
    pub policy_ids: Arc<[String]>,
    /// The WAF rules that matched (also when they did not block).
    pub waf: Vec<palisade_core::audit::WafHit>,
    /// Audit this request even on an unprotected route (e.g. a rate limiter that failed open).
    pub force: bool,
}

impl Session {
    /// Record a refusal for the audit event; the filter then returns the error that answers it.
    pub fn deny(&mut self, stage: Stage, reason: impl Into<String>) {
        self.audit.decision = Some((Decision::Deny, stage));
        self.audit.reason = reason.into();
    }

    /// Record a passed stage; the last one recorded is what the audit event says.
    pub fn allow(&mut self, stage: Stage, reason: impl Into<String>) {
        self.audit.decision = Some((Decision::Allow, stage));
        self.audit.reason = reason.into();
    }
}

/// What `request_filter` decided.
pub enum Flow {
    Continue,
    /// Answer the client with this response (e.g. a CORS preflight); the upstream is not called.
    Respond(Response<ResponseBody>),
}

#[async_trait::async_trait]
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;

    /// Before an upstream is chosen. An error answers the client with it.
    async fn request_filter(&self, _session: &mut Session) -> Result<Flow, ProxyError> {
        Ok(Flow::Continue)
    }

    /// What `request_filter` would do, when the filter can decide without waiting (a policy
    /// decision, a local rate limit): it saves boxing a future per request. `None` (the default)
    /// when it cannot; the engine then awaits `request_filter`. Must not have acted when `None`.
    fn request_filter_now(&self, _session: &mut Session) -> Option<Result<Flow, ProxyError>> {
        None
    }

    /// Whether this filter needs the whole request body (it is then buffered, up to the limit).
    fn wants_body(&self) -> Option<u64> {
        None
    }

    /// The buffered request body, for filters whose `wants_body` is set. A filter may replace it
    /// (the engine then sends the new body upstream with a matching `Content-Length`); later
    /// filters see the replacement.
    async fn request_body_filter(&self, _session: &mut Session, _body: &mut Bytes) -> Result<(), ProxyError> {
        Ok(())
    }

    /// Whether this filter needs this response's whole body (buffered up to the returned size).
    /// A body larger than the largest asked-for size is passed on unchanged, streamed.
    fn wants_response_body(&self, _session: &Session, _response: &http::response::Parts) -> Option<u64> {
        None
    }

    /// The buffered response body, for filters whose `wants_response_body` returned a size; it
    /// may be replaced (`Content-Length` is fixed by the engine). An error answers the client with it.
    async fn response_body_filter(
        &self,
        _session: &mut Session,
        _response: &mut http::response::Parts,
        _body: &mut Bytes,
    ) -> Result<(), ProxyError> {
        Ok(())
    }

    /// The request about to be sent upstream (hop-by-hop headers already removed).
    fn upstream_request_filter(&self, _session: &Session, _upstream: &mut http::request::Parts) {}

    /// The response head before it goes to the client: the upstream's, or one the gateway made
    /// (errors, refusals, preflights) once the route was known.
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
pub(crate) mod tests {
    use super::*;
    use palisade_core::config::HeaderOps;

    fn session() -> Session {
        let (request, ()) = http::Request::new(()).into_parts();
        test_session(request)
    }

    pub(crate) fn test_session(request: http::request::Parts) -> Session {
        Session {
            request,
            client_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            request_id: "r".into(),
            route: "x".into(),
            tls: false,
            body_expected: false,
            peer_cert: None,
            identity: None,
            audit: AuditNote::default(),
            ext: http::Extensions::new(),
            rate_limit: None,
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
