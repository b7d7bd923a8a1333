//! The data API under `/ui/api`: JSON views of [`DashboardData`](crate::DashboardData) and the
//! live SSE stream. Every route authenticates first (401 JSON otherwise); the one state-changing
//! route (ack) also requires the session's CSRF token. Query parameters are parsed strictly:
//! an unknown name or a bad value is a 400 that names it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::{AppState, EventQuery, LiveItem};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const MAX_FILTER_LEN: usize = 512;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/api/graph", get(graph))
        .route("/ui/api/events", get(events))
        .route("/ui/api/events/stream", get(stream))
        .route("/ui/api/alerts", get(alerts))
        .route("/ui/api/alerts/{id}/ack", post(ack))
        .route("/ui/api/certs", get(certs))
        .route("/ui/api/policies", get(policies))
        .route("/ui/api/top-denied", get(top_denied))
        .route("/ui/api/{*rest}", any(unknown))
}

fn caller(app: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    auth::authenticate(app, headers).ok_or_else(ApiError::unauthorized)
}

type ApiResult = Result<Response, ApiError>;

async fn graph(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    caller(&app, &headers)?;
    Ok(Json(app.data.graph().await).into_response())
}

/// Filters shared by `events` and `events/stream`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) principal: Option<String>,
    pub(crate) decision: Option<String>,
    pub(crate) source: Option<String>,
}

impl Filter {
    /// Does an audit record (JSON object) pass? Decisions compare case-insensitively.
    pub(crate) fn matches(&self, ev: &Value) -> bool {
        let field = |k: &str| ev.get(k).and_then(Value::as_str);
        self.decision.as_deref().is_none_or(|d| field("decision").is_some_and(|v| v.eq_ignore_ascii_case(d)))
            && self.principal.as_deref().is_none_or(|p| field("principal") == Some(p))
            && self.source.as_deref().is_none_or(|s| field("source") == Some(s))
    }
}

/// Parse `events` parameters; with `stream`, only the filters are allowed.
pub(crate) fn parse_query(q: &str, stream: bool) -> Result<(Filter, EventQuery), ApiError> {
    let mut f = Filter::default();
    let mut eq = EventQuery { limit: DEFAULT_LIMIT, ..EventQuery::default() };
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if v.len() > MAX_FILTER_LEN {
            return Err(ApiError::bad_request(format!("{k} is longer than {MAX_FILTER_LEN} bytes")));
        }
        // Empty form fields mean "no filter".
        let val = (!v.is_empty()).then(|| v.clone().into_owned());
        match (k.as_ref(), stream) {
            ("principal", _) => f.principal = val,
            ("source", _) => f.source = val,
            ("decision", _) => {
                f.decision = match val.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None => None,
                    Some(d @ ("allow" | "deny")) => Some(d.to_owned()),
                    Some(_) => return Err(ApiError::bad_request("decision must be allow or deny")),
                }
            }
            ("limit", false) => {
                eq.limit = match val {
                    None => DEFAULT_LIMIT,
                    Some(s) => {
                        s.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                            ApiError::bad_request(format!("limit must be an integer in 1..={MAX_LIMIT}"))
                        })?
                    }
                }
            }
            ("since_ms", false) => {
                eq.since_ms = match val {
                    None => None,
                    Some(s) => Some(s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request("since_ms must be a non-negative integer (Unix milliseconds)")
                    })?),
                }
            }
            (other, _) => {
                let name: String = other.chars().take(64).collect();
                return Err(ApiError::bad_request(format!("unknown query parameter {name:?}")));
            }
        }
    }
    eq.principal = f.principal.clone();
    eq.decision = f.decision.clone();
    eq.source = f.source.clone();
    Ok((f, eq))
}

async fn events(State(app): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    caller(&app, &headers)?;
    let (_, query) = parse_query(q.as_deref().unwrap_or(""), false)?;
    Ok(Json(app.data.events(query).await).into_response())
}

/// An SSE event id must not contain line breaks or NUL (axum panics on them); ids that do are
/// left off rather than trusted.
fn safe_id(v: &Value) -> Option<String> {
    let id = match v.get("id")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (id.len() <= 256 && !id.chars().any(|c| matches!(c, '\n' | '\r' | '\0'))).then_some(id)
}

/// The SSE frame of a live item, if it passes the filter (alerts always pass).
pub(crate) fn to_sse(item: &LiveItem, f: &Filter) -> Option<Event> {
    let (name, v) = match item {
        LiveItem::Event(v) if f.matches(v) => ("audit", v),
        LiveItem::Event(_) => return None,
        LiveItem::Alert(v) => ("alert", v),
    };
    // Compact JSON never holds a raw CR or LF, so `data` emits exactly one line.
    let data = serde_json::to_string(v).ok()?;
    let ev = Event::default().event(name).data(data);
    Some(match safe_id(v) {
        Some(id) => ev.id(id),
        None => ev,
    })
}

async fn stream(State(app): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    caller(&app, &headers)?;
    let (filter, _) = parse_query(q.as_deref().unwrap_or(""), true)?;
    let rx = app.data.subscribe();
    let frames = futures_util::stream::unfold((rx, filter), |(mut rx, f)| async move {
        loop {
            match rx.recv().await {
                Ok(item) => {
                    if let Some(ev) = to_sse(&item, &f) {
                        return Some((Ok::<Event, Infallible>(ev), (rx, f)));
                    }
                }
                // A slow client skipped items; tell it (a comment) and carry on.
                Err(RecvError::Lagged(n)) => {
                    return Some((Ok(Event::default().comment(format!("lagged {n}"))), (rx, f)))
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let mut r = Sse::new(frames).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response();
    r.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    Ok(r)
}

async fn alerts(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    caller(&app, &headers)?;
    Ok(Json(app.data.alerts().await).into_response())
}

async fn ack(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&app, &headers)?;
    if !auth::csrf_ok(&who, &headers) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "missing or wrong X-Palisade-CSRF header"));
    }
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::bad_request("alert id must be 1 to 256 bytes"));
    }
    match app.data.ack(&id, who.name()).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(ApiError::not_found("no such alert")),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: acknowledging an alert failed");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the alert could not be acknowledged"))
        }
    }
}

async fn certs(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    caller(&app, &headers)?;
    Ok(Json(app.data.certs().await).into_response())
}

async fn policies(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    caller(&app, &headers)?;
    Ok(Json(app.data.policies().await).into_response())
}

async fn top_denied(State(app): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    caller(&app, &headers)?;
    let mut limit = 10usize;
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| ApiError::bad_request("limit must be an integer in 1..=100"))?
            }
            other => {
                let name: String = other.chars().take(64).collect();
                return Err(ApiError::bad_request(format!("unknown query parameter {name:?}")));
            }
        }
    }
    let rows: Vec<Value> = app
        .data
        .top_denied(limit)
        .await
        .into_iter()
        .take(limit)
        .map(|(principal, denies)| json!({ "principal": principal, "denies": denies }))
        .collect();
    Ok(Json(rows).into_response())
}

async fn unknown(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    caller(&app, &headers)?;
    Err(ApiError::not_found("no such dashboard API endpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_is_strict_and_empty_means_unset() {
        let (f, q) = parse_query("decision=DENY&principal=alice&source=&limit=5&since_ms=17", false).unwrap();
        assert_eq!(f.decision.as_deref(), Some("deny"));
        assert_eq!(q.principal.as_deref(), Some("alice"));
        assert_eq!(q.source, None);
        assert_eq!(q.limit, 5);
        assert_eq!(q.since_ms, Some(17));
        assert_eq!(parse_query("", false).unwrap().1.limit, 100);
        let e = parse_query("limit=0", false).unwrap_err();
        assert_eq!(
            (e.status, e.description.as_str()),
            (StatusCode::BAD_REQUEST, "limit must be an integer in 1..=1000")
        );
        assert_eq!(parse_query("decision=maybe", false).unwrap_err().description, "decision must be allow or deny");
        assert_eq!(parse_query("limit=5", true).unwrap_err().description, "unknown query parameter \"limit\"");
        assert_eq!(parse_query("since_ms=-1", false).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn filter_and_sse_framing() {
        let f = Filter { decision: Some("deny".into()), ..Filter::default() };
        let deny = json!({"id": "e1", "decision": "Deny", "principal": "bob"});
        let allow = json!({"id": "e2", "decision": "allow"});
        assert!(to_sse(&LiveItem::Event(allow), &f).is_none());
        assert!(to_sse(&LiveItem::Event(deny.clone()), &f).is_some());
        assert!(to_sse(&LiveItem::Alert(json!({"id": "a\n1"})), &f).is_some());
        assert_eq!(safe_id(&json!({"id": "a\n1"})), None);
        assert_eq!(safe_id(&json!({"id": 7})).as_deref(), Some("7"));
    }
}
