//! The HTTP API under `/ca/v1/` (a fixed contract the SVID client codes against). Errors are
//! JSON `{"error", "error_description"}`: 400 `invalid_request`, 401 `invalid_token`, 403
//! `access_denied`, 413 for bodies over 64 KiB, 500 `server_error` (details only in the log).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{header, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::{Attestation, Ca, CaError, SvidRequest};

/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;

pub(crate) fn router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route("/ca/v1/svid", post(svid))
        .route("/ca/v1/bundle", get(bundle_pem))
        .route("/ca/v1/bundle.json", get(bundle_json))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ca)
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut resp = (status, Json(json!({ "error": code, "error_description": description }))).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

impl IntoResponse for CaError {
    fn into_response(self) -> Response {
        match &self {
            CaError::InvalidRequest(d) => error(StatusCode::BAD_REQUEST, "invalid_request", d),
            CaError::InvalidToken(d) => {
                tracing::warn!(reason = %d, "SVID request refused");
                error(StatusCode::UNAUTHORIZED, "invalid_token", d)
            }
            CaError::AccessDenied(d) => {
                tracing::warn!(reason = %d, "SVID renewal refused");
                error(StatusCode::FORBIDDEN, "access_denied", d)
            }
            other => {
                tracing::error!(error = %other, "CA request failed");
                error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error; see the server log")
            }
        }
    }
}

#[derive(Deserialize)]
struct SvidBody {
    csr: Option<String>,
    join_token: Option<String>,
    k8s_token: Option<String>,
    svid: Option<String>,
    proof: Option<String>,
}

pub(crate) fn parse_request(body: &[u8]) -> Result<SvidRequest, CaError> {
    let bad = |why: &str| CaError::InvalidRequest(why.to_owned());
    let b: SvidBody = serde_json::from_slice(body).map_err(|_| bad("the body must be a JSON object"))?;
    let csr_pem = b.csr.ok_or_else(|| bad("csr is missing"))?;
    let attestation = match (b.join_token, b.k8s_token, b.svid, b.proof) {
        (Some(t), None, None, None) => Attestation::JoinToken(t),
        (None, Some(t), None, None) => Attestation::K8sToken(t),
        (None, None, Some(svid_pem), Some(proof)) => Attestation::Renewal { svid_pem, proof },
        (None, None, Some(_), None) | (None, None, None, Some(_)) => {
            return Err(bad("renewal needs both svid and proof"));
        }
        _ => return Err(bad("give exactly one of join_token, k8s_token, or svid with proof")),
    };
    Ok(SvidRequest { csr_pem, attestation })
}

/// One audit event per SVID request: who was attested (or why not), from where.
fn audit(
    ca: &Ca,
    peer: Option<std::net::SocketAddr>,
    principal: String,
    deny: bool,
    status: StatusCode,
    reason: String,
) {
    use palisade_core::audit::{now_rfc3339, AuditEvent, Decision, Stage};
    let Some(sink) = ca.audit.get() else { return };
    sink.record(AuditEvent {
        time: now_rfc3339(),
        source: "ca".into(),
        service: None,
        request_id: String::new(),
        decision: if deny { Decision::Deny } else { Decision::Allow },
        stage: Stage::Ca,
        reason,
        principal,
        client_id: None,
        auth_method: None,
        route: "ca".into(),
        method: "POST".into(),
        path: "/ca/v1/svid".into(),
        client_ip: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        policy_ids: Vec::new(),
        status: status.as_u16(),
        latency_ms: 0.0,
        waf: Vec::new(),
    });
}

async fn svid(
    State(ca): State<Arc<Ca>>,
    peer: Option<axum::Extension<std::net::SocketAddr>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let peer = peer.map(|p| p.0);
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the request body is larger than 64 KiB");
        }
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid_request", "cannot read the request body"),
    };
    let result = match parse_request(&body) {
        Ok(req) => ca.issue(&req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => {
            audit(
                &ca,
                peer,
                format!("Service::\"{}\"", s.spiffe_id.as_str()),
                false,
                StatusCode::OK,
                "SVID issued".into(),
            );
            let mut resp = Json(json!({
                "spiffe_id": s.spiffe_id.as_str(),
                "svid": s.chain_pem,
                "bundle": s.bundle_pem,
                "not_before": s.not_before,
                "not_after": s.not_after,
                "serial": s.serial,
            }))
            .into_response();
            resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            let reason = e.to_string();
            let resp = e.into_response();
            audit(&ca, peer, "Anonymous".into(), true, resp.status(), reason);
            resp
        }
    }
}

async fn bundle_pem(State(ca): State<Arc<Ca>>) -> Response {
    match ca.bundle_pem().await {
        Ok(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn bundle_json(State(ca): State<Arc<Ca>>) -> Response {
    match ca.bundle_json().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
