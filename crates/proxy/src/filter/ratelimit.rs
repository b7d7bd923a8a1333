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

impl Limit {
    /// The store key of this limit for the request, written into `k` (emptied first).
    fn write_key(&self, route: &str, s: &Session, k: &mut String) {
        k.clear();
        k.push_str(route);
        k.push('\u{1f}');
        k.push_str(&self.name);
        let id = s.identity.as_deref();
        for p in &self.key {
            k.push('\u{1f}');
            match p {
                KeyPart::Principal => match id {
                    Some(i) => k.push_str(i.principal_str()),
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
    }
}

impl RateLimitFilter {
    /// One limit's verdict: `Err` ends the request (limited, or the store failed closed);
    /// otherwise the limit with the fewest requests left so far is kept in `tightest`.
    fn apply(
        &self,
        s: &mut Session,
        (index, l): (usize, &Limit),
        checked: Result<Verdict, palisade_ratelimit::StoreError>,
        tightest: &mut Option<(u32, usize, Verdict)>,
    ) -> Result<(), ProxyError> {
        match checked {
            Ok(v @ Verdict::Limited { .. }) => {
                let headers = l.headers.headers(&v);
                s.deny(Stage::RateLimit, format!("rate limit {} exceeded", l.name));
                Err(ProxyError::Rejected {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: "rate limit exceeded".into(),
                    headers,
                })
            }
            Ok(v @ Verdict::Allowed { remaining, .. }) => {
                if tightest.as_ref().is_none_or(|t| remaining < t.0) {
                    *tightest = Some((remaining, index, v));
                }
                Ok(())
            }
            Err(e) => match l.on_error {
                OnError::FailClosed => {
                    tracing::warn!(limit = %l.name, error = %e, "rate limit store unavailable: failing closed");
                    s.deny(Stage::RateLimit, format!("rate limit store unavailable ({e}); failed closed"));
                    Err(ProxyError::Rejected {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        message: "rate limiting is unavailable".into(),
                        headers: vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))],
                    })
                }
                OnError::FailOpen => {
                    tracing::warn!(limit = %l.name, error = %e, "rate limit store unavailable: failing open");
                    s.allow(Stage::RateLimit, format!("rate limit store unavailable ({e}); failed open"));
                    s.audit.force = true;
                    Ok(())
                }
            },
        }
    }

    /// The allowed request's response will carry the tightest limit's headers.
    fn finish(&self, s: &mut Session, tightest: Option<(u32, usize, Verdict)>) -> Flow {
        s.rate_limit = tightest.map(|(_, index, v)| (index, v));
        Flow::Continue
    }
}

#[async_trait::async_trait]
impl Filter for RateLimitFilter {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    async fn request_filter(&self, s: &mut Session) -> Result<Flow, ProxyError> {
        let mut tightest = None;
        let mut key = String::new();
        for (i, l) in self.limits.iter().enumerate() {
            l.write_key(&self.route, s, &mut key);
            let checked = l.store.check(&key, &l.quota, SystemTime::now()).await;
            self.apply(s, (i, l), checked, &mut tightest)?;
        }
        Ok(self.finish(s, tightest))
    }

    /// Every limit in this process's memory (the usual case): checked without a future.
    fn request_filter_now(&self, s: &mut Session) -> Option<Result<Flow, ProxyError>> {
        if !self.limits.iter().all(|l| l.store.local().is_some()) {
            return None;
        }
        // The key is written into a buffer of this thread's: the store copies it only when new.
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let mut tightest = None;
        let now = SystemTime::now();
        for (i, l) in self.limits.iter().enumerate() {
            let store = l.store.local()?;
            let verdict = KEY.with_borrow_mut(|key| {
                l.write_key(&self.route, s, key);
                store.check_at(key, &l.quota, now)
            });
            if let Err(e) = self.apply(s, (i, l), Ok(verdict), &mut tightest) {
                return Some(Err(e));
            }
        }
        Some(Ok(self.finish(s, tightest)))
    }

    fn response_filter(&self, s: &Session, resp: &mut http::response::Parts) {
        if let Some((l, v)) = s.rate_limit.and_then(|(i, v)| Some((self.limits.get(i)?, v))) {
            l.headers.insert(&v, &mut resp.headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use palisade_ratelimit::{LocalStore, StoreError};

    use super::*;
    use crate::filter::tests::test_session;

    /// A store that must be awaited (like Redis): counts its checks, allows everything.
    #[derive(Default)]
    struct Remote(AtomicUsize);

    #[async_trait::async_trait]
    impl Store for Remote {
        async fn check(&self, _key: &str, quota: &Quota, _now: SystemTime) -> Result<Verdict, StoreError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Verdict::Allowed { remaining: quota.limit() - 1, reset: Duration::ZERO })
        }
    }

    fn limit(name: &str, n: u32, store: Arc<dyn Store>) -> Limit {
        let quota = Quota::new(n, Duration::from_secs(60), n).unwrap();
        Limit {
            name: name.into(),
            headers: PolicyHeaders::new(&quota, name),
            quota,
            key: vec![KeyPart::ClientIp],
            store,
            on_error: OnError::FailClosed,
        }
    }

    fn session() -> Session {
        test_session(http::Request::new(()).into_parts().0)
    }

    /// The response carries the headers of the limit with the fewest requests left, whichever
    /// place it has in the list, and nothing once no request was checked.
    #[test]
    fn the_tightest_limit_names_the_response_headers() {
        for names in [["wide", "tight"], ["tight", "wide"]] {
            let n = |name: &str| if name == "tight" { 3 } else { 100 };
            let f = RateLimitFilter {
                route: "r".into(),
                limits: names.iter().map(|&name| limit(name, n(name), Arc::new(LocalStore::new(64)))).collect(),
            };
            let mut s = session();
            assert!(matches!(f.request_filter_now(&mut s), Some(Ok(Flow::Continue))));
            let (mut resp, ()) = http::Response::new(()).into_parts();
            f.response_filter(&s, &mut resp);
            let header = |h: &str| resp.headers[h].to_str().unwrap().to_owned();
            assert_eq!(header("ratelimit-policy"), "\"tight\";q=3;w=60", "{names:?}");
            // Burst 3: four requests in all, one used; the full burst is back one interval (20 s) on.
            assert_eq!(header("ratelimit"), "\"tight\";r=3;t=20", "{names:?}");
            let (mut untouched, ()) = http::Response::new(()).into_parts();
            f.response_filter(&session(), &mut untouched);
            assert!(untouched.headers.is_empty());
        }
    }

    #[tokio::test]
    async fn local_limits_are_checked_without_a_future_and_remote_ones_are_awaited() {
        // The same sequence of answers whether checked now or awaited (each on a fresh store):
        // the allowed ones with their `RateLimit` header, then 429 with the audit stage.
        let fresh =
            || RateLimitFilter { route: "r".into(), limits: vec![limit("a", 2, Arc::new(LocalStore::new(1024)))] };
        let answer = |f: &RateLimitFilter, s: &mut Session, r: Option<Result<Flow, ProxyError>>| match r {
            Some(Ok(Flow::Continue)) => {
                let (mut resp, ()) = http::Response::new(()).into_parts();
                f.response_filter(s, &mut resp);
                resp.headers["ratelimit"].to_str().unwrap().to_owned()
            }
            Some(Err(ProxyError::Rejected { status, .. })) => {
                assert_eq!(s.audit.decision.map(|d| d.1), Some(Stage::RateLimit));
                status.to_string()
            }
            _ => panic!("no answer"),
        };
        let (now, awaited) = (fresh(), fresh());
        let mut by_now = Vec::new();
        let mut by_await = Vec::new();
        for _ in 0..5 {
            let mut s = session();
            let r = now.request_filter_now(&mut s);
            by_now.push(answer(&now, &mut s, r));
            let mut s = session();
            let r = Some(awaited.request_filter(&mut s).await);
            by_await.push(answer(&awaited, &mut s, r));
        }
        assert_eq!(by_now, by_await);
        assert!(by_now[0].starts_with("\"a\";r="), "{by_now:?}");
        assert_eq!(by_now[4], "429 Too Many Requests", "{by_now:?}");

        // One remote limit beside a local one: no synchronous answer, and nothing was counted.
        let remote = Arc::new(Remote::default());
        let other_local: Arc<dyn Store> = Arc::new(LocalStore::new(1024));
        let mixed = RateLimitFilter {
            route: "r".into(),
            limits: vec![limit("b", 1, other_local.clone()), limit("c", 5, remote.clone())],
        };
        let mut s = session();
        assert!(mixed.request_filter_now(&mut s).is_none());
        assert!(matches!(mixed.request_filter(&mut s).await, Ok(Flow::Continue)));
        assert_eq!(remote.0.load(Ordering::SeqCst), 1);
        // "b" counted exactly one request, the awaited one: its next verdict is a fresh store's second.
        let b = &mixed.limits[0];
        let mut key = String::from("left over");
        b.write_key("r", &session(), &mut key);
        let at = SystemTime::now();
        let reference = LocalStore::new(1024);
        reference.check_at(&key, &b.quota, at);
        let local = other_local.local().unwrap();
        let remaining = |v: Verdict| match v {
            Verdict::Allowed { remaining, .. } => Some(remaining),
            Verdict::Limited { .. } => None,
        };
        assert_eq!(remaining(local.check_at(&key, &b.quota, at)), remaining(reference.check_at(&key, &b.quota, at)));
    }
}
