//! Audit events: one structured record per security decision, sent through one [`AuditSink`].
//! An event never carries a token, secret, key or password: only who, what, the decision and why.

use std::time::SystemTime;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// The filter stage that made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Authn,
    Authz,
    RateLimit,
    Validation,
    Cors,
    /// Every stage passed; the request went upstream.
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    /// `gateway`, `sidecar`, `idp`, ...
    pub source: &'static str,
    pub request_id: String,
    pub decision: Decision,
    pub stage: Stage,
    pub reason: String,
    /// `User::"alice"`, `Client::"billing"`, `Service::"spiffe://..."` or `Anonymous`.
    pub principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'static str>,
    pub route: String,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub client_ip: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_ids: Vec<String>,
    pub status: u16,
    pub latency_ms: f64,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Where audit events go. `record` must not block the request path.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);
}
