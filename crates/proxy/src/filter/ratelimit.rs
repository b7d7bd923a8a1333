//! Rate-limit filter (request phase, after authentication so keys can name the principal): each
//! of the route's limits is a GCRA quota over a key built from request parts. A limited request
//! gets 429 with `Retry-After` and the IETF `RateLimit` headers; allowed responses carry the
//! headers of the tightest limit. When the shared store cannot answer, the configured
//! `on_error` decides (fail closed by default: 503), and the audit event says so either way.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, StatusCode};
use palisade_core::audit::Stage;
use palisade_core::config::OnError;
use palisade_ratelimit::{PolicyHeaders, Quota, Store, Verdict};

use crate::error::ProxyError;
use crate::filter::{Filter, Flow, Session};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyPart {
    Principal,
    ClientId,
    ApiKey,
    ClientIp,
    Route,
    Header(HeaderName),
}

impl KeyPart {
    pub(crate) fn parse(s: &str) -> Option<KeyPart> {
        Some(match s {
            "principal" => KeyPart::Principal,
            "client_id" => KeyPart::ClientId,
            "api_key" => KeyPart::ApiKey,
            "client_ip" => KeyPart::ClientIp,
            "route" => KeyPart::Route,
            _ => KeyPart::Header(HeaderName::from_bytes(s.strip_prefix("header:")?.as_bytes()).ok()?),
        })
    }
}

pub(crate) struct Limit {
    pub(crate) name: String,
    pub(crate) quota: Quota,
    /// The response headers' verdict-independent parts, made once.
    pub(crate) headers: PolicyHeaders,
    pub(crate) key: Vec<KeyPart>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) on_error: OnError,
}

pub(crate) struct RateLimitFilter {
    pub(crate) route: String,
    pub(crate) limits: Vec<Limit>,
}

/// Headers to add to the response of an allowed request.
#[derive(Clone)]
struct Allowed(Vec<(HeaderName, HeaderValue)>);

impl Limit {
    fn key(&self, route: &str, s: &Session) -> String {
        let mut k = String::with_capacity(route.len() + self.name.len() + 16 * self.key.len() + 2);
        k.push_str(route);
        k.push('\u{1f}');
        k.push_str(&self.name);
        let id = s.identity.as_deref();
        for p in &self.key {
            k.push('\u{1f}');
            match p {
                KeyPart::Principal => match id {
                    Some(i) => k.push_str(&i.principal_ref()),
                    None => k.push_str("Anonymous"),
                },
                KeyPart::ClientId => k.push_str(id.and_then(|i| i.client_id()).unwrap_or_default()),
                KeyPart::ApiKey => k.push_str(id.and_then(|i| i.api_key_id()).unwrap_or_default()),
                KeyPart::ClientIp => crate::headers::with_ip_text(s.client_ip, |t| k.push_str(t)),
                KeyPart::Route => k.push_str(route),
                KeyPart::Header(h) => {
                    if let Some(v) = s.request.headers.get(h) {
                        k.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                }
            }
        }
        k
    }
}

#[async_trait::async_trait]
impl Filter for RateLimitFilter {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    async fn request_filter(&self, s: &mut Session) -> Result<Flow, ProxyError> {
        let mut tightest: Option<(u32, &Limit, Verdict)> = None;
        for l in &self.limits {
            let key = l.key(&self.route, s);
            match l.store.check(&key, &l.quota, SystemTime::now()).await {
                Ok(v @ Verdict::Limited { .. }) => {
                    let headers = l.headers.headers(&v);
                    s.deny(Stage::RateLimit, format!("rate limit {} exceeded", l.name));
                    return Err(ProxyError::Rejected {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        message: "rate limit exceeded".into(),
                        headers,
                    });
                }
                Ok(v @ Verdict::Allowed { remaining, .. }) => {
                    if tightest.as_ref().is_none_or(|t| remaining < t.0) {
                        tightest = Some((remaining, l, v));
                    }
                }
                Err(e) => match l.on_error {
                    OnError::FailClosed => {
                        tracing::warn!(limit = %l.name, error = %e, "rate limit store unavailable: failing closed");
                        s.deny(Stage::RateLimit, format!("rate limit store unavailable ({e}); failed closed"));
                        return Err(ProxyError::Rejected {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            message: "rate limiting is unavailable".into(),
                            headers: vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))],
                        });
                    }
                    OnError::FailOpen => {
                        tracing::warn!(limit = %l.name, error = %e, "rate limit store unavailable: failing open");
                        s.allow(Stage::RateLimit, format!("rate limit store unavailable ({e}); failed open"));
                        s.audit.force = true;
                    }
                },
            }
        }
        if let Some((_, l, v)) = tightest {
            s.ext.insert(Allowed(l.headers.headers(&v)));
        }
        Ok(Flow::Continue)
    }

    fn response_filter(&self, s: &Session, resp: &mut http::response::Parts) {
        if let Some(Allowed(h)) = s.ext.get::<Allowed>() {
            for (n, v) in h {
                resp.headers.insert(n.clone(), v.clone());
            }
        }
    }
}
