//! The per-request proxy logic: limits, routing, filters, upstream selection with retries,
//! and the response path. Errors become responses in exactly one place (`error::error_response`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::audit;
use crate::body::{BodyOutcome, InFlight, RequestBody, ResponseBody, BODY_BAD_FRAMING, BODY_TOO_LARGE};
use crate::error::{error_response, ProxyError};
use crate::filter::{Flow, Session};
use crate::framing::ConnState;
use crate::headers::{self, X_REQUEST_ID};
use crate::identity::PeerCert;
use crate::metrics::{Metrics, RouteMetrics};
use crate::route::{normalize_host, CompiledRoute};
use crate::runtime::Runtime;
use crate::upstream::Endpoint;
use palisade_core::audit::Stage;
use palisade_core::config::LISTENER_HTTP;

pub(crate) struct Shared {
    pub(crate) runtime: ArcSwap<Runtime>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) draining: AtomicBool,
    pub(crate) unrouted: RouteMetrics,
    /// The HTTPS listener's bound port (differs from the config when it says port 0).
    pub(crate) https_port: u16,
}

pub(crate) struct ConnInfo {
    pub(crate) https_port: u16,
    /// Name of the listener the connection came in on (`http`, `https`, `mesh` or a local name).
    pub(crate) listener: Arc<str>,
    pub(crate) client: SocketAddr,
    /// `client`'s address as a header value, for `X-Forwarded-For`.
    pub(crate) client_ip_value: HeaderValue,
    pub(crate) https: bool,
    pub(crate) state: Arc<ConnState>,
    /// The verified client certificate, when the client sent one.
    pub(crate) peer_cert: Option<Arc<PeerCert>>,
}

#[derive(Default)]
struct Outcome {
    route: Option<Arc<CompiledRoute>>,
    session: Option<Session>,
    endpoint: Option<Arc<Endpoint>>,
}

struct ConnRequest(Arc<ConnState>);

impl Drop for ConnRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    conn.state.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = ConnRequest(conn.state.clone());
    let start = Instant::now();
    let rt = shared.runtime.load_full();
    let request_id = match req.headers().get(X_REQUEST_ID) {
        Some(v) if headers::valid_request_id(v) => v.to_str().unwrap_or_default().to_owned(),
        _ => headers::new_request_id(),
    };
    let method = req.method().clone();
    let version = req.version();
    let path = if rt.access_log { req.uri().path().to_owned() } else { String::new() };
    let mut out = Outcome::default();
    let mut resp = match proxy(&rt, &conn, req, &request_id, &mut out).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, ProxyError::UpstreamConnect | ProxyError::UpstreamFailed | ProxyError::UpstreamTimeout) {
                tracing::warn!(request_id = %request_id, endpoint = out.endpoint.as_ref().map_or("", |e| e.address.as_str()), error = %e, "upstream error");
            }
            error_response(&e, &request_id)
        }
    };
    // The response-body phase, for filters that asked for this response's body.
    if let (Some(route), Some(s)) = (&out.route, &mut out.session) {
        if method != Method::HEAD {
            resp = response_body_phase(route, s, resp, &request_id).await;
        }
    }
    // Response filters see every response of a matched route: the upstream's and the gateway's own.
    if let (Some(route), Some(s)) = (&out.route, &out.session) {
        if !route.filters.is_empty() {
            let (mut parts, body) = resp.into_parts();
            for f in &route.filters {
                f.response_filter(s, &mut parts);
            }
            resp = Response::from_parts(parts, body);
        }
    }
    if version == Version::HTTP_2 {
        resp.headers_mut().remove(header::CONNECTION);
    }
    let status = resp.status();
    let elapsed = start.elapsed();
    if let (Some(sink), Some(route), Some(s)) = (&rt.audit, &out.route, &mut out.session) {
        audit::emit(&**sink, route, s, status, elapsed);
    }
    match &out.route {
        Some(route) => {
            route.metrics.record(status.as_u16(), elapsed.as_secs_f64());
            if let Some(s) = &out.session {
                for f in &route.filters {
                    f.logging(s, status);
                }
            }
        }
        None => shared.unrouted.record(status.as_u16(), elapsed.as_secs_f64()),
    }
    if rt.access_log {
        tracing::info!(
            target: "palisade::access",
            request_id = %request_id,
            client = %conn.client.ip(),
            method = %method,
            path = %path,
            proto = ?version,
            status = status.as_u16(),
            route = out.route.as_ref().map(|r| &*r.name).unwrap_or(""),
            upstream = out.endpoint.as_ref().map_or("", |e| e.address.as_str()),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
        );
    }
    Ok(resp)
}

/// Whether two buffers are the same bytes object (a filter that replaced a body made a new one).
fn same_bytes(a: &bytes::Bytes, b: &bytes::Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// Buffer the response body for the filters that ask for it (up to the largest size asked) and
/// let them rewrite it. Bodies that cannot have content, or are larger than asked (by
/// `Content-Length` or once read that far), go on unchanged.
async fn response_body_phase(
    route: &CompiledRoute,
    s: &mut Session,
    resp: Response<ResponseBody>,
    request_id: &str,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let limit = route.filters.iter().filter_map(|f| f.wants_response_body(s, &parts)).max();
    let status = parts.status;
    let declared: Option<u64> =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let Some(limit) = limit else { return Response::from_parts(parts, body) };
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || declared.is_some_and(|n| n > limit)
    {
        return Response::from_parts(parts, body);
    }
    let original = match crate::body::collect_response(body, limit).await {
        Ok(crate::body::Collected::Whole(b)) => b,
        Ok(crate::body::Collected::TooLarge(body)) => return Response::from_parts(parts, body),
        Err(_) => return error_response(&ProxyError::UpstreamFailed, request_id),
    };
    let mut bytes = original.clone();
    for f in &route.filters {
        if f.wants_response_body(s, &parts).is_some() {
            if let Err(e) = f.response_body_filter(s, &mut parts, &mut bytes).await {
                return error_response(&e, request_id);
            }
        }
    }
    if !same_bytes(&bytes, &original) {
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    Response::from_parts(parts, ResponseBody::full(bytes))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

fn redirect(host: &str, port: u16, pq: &str) -> Response<ResponseBody> {
    let location = if port == 443 { format!("https://{host}{pq}") } else { format!("https://{host}:{port}{pq}") };
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn proxy(
    rt: &Runtime,
    conn: &ConnInfo,
    req: Request<Incoming>,
    request_id: &str,
    out: &mut Outcome,
) -> Result<Response<ResponseBody>, ProxyError> {
    if let Some(v) = conn.state.violation() {
        return Err(ProxyError::Ambiguous(v.message()));
    }
    let (parts, body) = req.into_parts();
    let pq_len = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let limits = &rt.limits;
    if headers::head_size(&parts.headers, pq_len) > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge(limits.max_header_bytes));
    }
    let host_value = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let host = normalize_host(host_value.as_ref().and_then(|h| h.to_str().ok()).unwrap_or_default());
    if let (Some(port), LISTENER_HTTP) = (rt.redirect_port, &*conn.listener) {
        let port = if port == 0 { conn.https_port } else { port };
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        return Ok(redirect(&host, port, pq));
    }
    if let Some(cl) = parts.headers.get(header::CONTENT_LENGTH) {
        let n: u64 = cl.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
        if n > limits.max_body_bytes {
            return Err(ProxyError::BodyTooLarge(limits.max_body_bytes));
        }
    }
    let route =
        rt.router.find(&conn.listener, &host, parts.uri.path(), &parts.method).ok_or(ProxyError::NoRoute)?.clone();
    out.route = Some(route.clone());
    let mut parts = parts;
    crate::filter::authn::strip_identity_headers(&mut parts.headers);
    let client_ip = rt.client_ip(conn.client.ip(), &parts.headers);
    let body_expected = !http_body::Body::is_end_stream(&body);
    let session = out.session.insert(Session {
        request: parts,
        client_addr: conn.client,
        client_ip,
        request_id: request_id.to_owned(),
        route: route.name.clone(),
        tls: conn.https,
        body_expected,
        peer_cert: conn.peer_cert.clone(),
        identity: None,
        audit: Default::default(),
        ext: http::Extensions::new(),
        rate_limit: None,
    });
    for f in &route.filters {
        let flow = match f.request_filter_now(session) {
            Some(flow) => flow?,
            None => f.request_filter(session).await?,
        };
        if let Flow::Respond(r) = flow {
            return Ok(r);
        }
    }

    let pool = &route.pool;
    let has_body = body_expected;
    let (has_body, outcome, mut body) = match route.body_limit {
        Some(limit) if has_body => {
            let original = crate::body::collect(body, limit.min(limits.max_body_bytes)).await?;
            let mut bytes = original.clone();
            for f in &route.filters {
                if f.wants_body().is_some() {
                    f.request_body_filter(session, &mut bytes).await?;
                }
            }
            if !same_bytes(&bytes, &original) {
                // A filter replaced the body (e.g. tokenized fields): the framing follows it.
                session.request.headers.remove(header::TRANSFER_ENCODING);
                session.request.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            }
            (!bytes.is_empty(), None, Some(RequestBody::buffered(bytes)))
        }
        _ => {
            let outcome = has_body.then(|| Arc::new(BodyOutcome::default()));
            let body = outcome.as_ref().map(|o| RequestBody::limited(body, limits.max_body_bytes, o.clone()));
            (has_body, outcome, body)
        }
    };
    if route.protected && session.audit.decision.is_none() {
        session.allow(Stage::Proxy, "every filter passed");
    }
    let retries = if is_idempotent(&session.request.method) && !has_body { pool.config.retries } else { 0 };

    let mut up_headers = std::mem::take(&mut session.request.headers);
    headers::strip_hop_by_hop(&mut up_headers);
    headers::set_forwarded(&mut up_headers, &conn.client_ip_value, conn.https, host_value.as_ref());
    let request_id_value = HeaderValue::from_str(request_id).ok();
    if let Some(v) = &request_id_value {
        up_headers.insert(X_REQUEST_ID, v.clone());
    }
    if !up_headers.contains_key(header::HOST) {
        if let Some(h) = &host_value {
            up_headers.insert(header::HOST, h.clone());
        }
    }

    let mut attempt = 0;
    let mut exclude = None;
    loop {
        let idx = pool.select(exclude).ok_or(ProxyError::NoHealthyEndpoint)?;
        let ep = pool.acquire(idx);
        out.endpoint = Some(ep.clone());
        let guard = InFlight(Some(ep));
        let uri =
            session.request.uri.path_and_query().map_or_else(|| http::Uri::from_static("/"), |pq| pq.clone().into());
        let last = attempt >= retries;
        let mut up = Request::new(body.take().unwrap_or_else(RequestBody::empty));
        *up.method_mut() = session.request.method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = if last { std::mem::take(&mut up_headers) } else { up_headers.clone() };
        let (mut up_parts, up_body) = up.into_parts();
        for f in &route.filters {
            f.upstream_request_filter(session, &mut up_parts);
        }
        // Boxed: the exchange's state is large, and the timeout and this future would each move it.
        let exchange = Box::pin(pool.send(idx, Request::from_parts(up_parts, up_body)));
        let sent = tokio::time::timeout(pool.config.request_timeout.0, exchange).await;
        let body_problem = || -> Option<ProxyError> {
            match outcome.as_ref().map(|o| o.get()) {
                Some(BODY_TOO_LARGE) => Some(ProxyError::BodyTooLarge(limits.max_body_bytes)),
                Some(BODY_BAD_FRAMING) => Some(ProxyError::BadFraming),
                _ => conn.state.violation().map(|v| ProxyError::Ambiguous(v.message())),
            }
        };
        match sent {
            Err(_elapsed) => {
                pool.report(idx, false);
                return Err(ProxyError::UpstreamTimeout);
            }
            Ok(Err(e)) => {
                if let Some(p) = body_problem() {
                    return Err(p);
                }
                pool.report(idx, false);
                let err = if e.is_connect() { ProxyError::UpstreamConnect } else { ProxyError::UpstreamFailed };
                if err.retryable() && !last {
                    attempt += 1;
                    exclude = Some(idx);
                    continue;
                }
                return Err(err);
            }
            Ok(Ok(resp)) => {
                let bad = matches!(resp.status().as_u16(), 502..=504);
                pool.report(idx, !bad);
                if bad && !last {
                    attempt += 1;
                    exclude = Some(idx);
                    continue;
                }
                if let Some(p) = body_problem() {
                    return Err(p);
                }
                let (mut rp, rb) = resp.into_parts();
                headers::strip_hop_by_hop(&mut rp.headers);
                if let Some(v) = request_id_value {
                    rp.headers.insert(X_REQUEST_ID, v);
                }
                return Ok(Response::from_parts(rp, ResponseBody::Upstream { body: rb, guard }));
            }
        }
    }
}
