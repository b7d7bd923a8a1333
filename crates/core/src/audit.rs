//! Audit events: one structured record per security decision, sent through one [`AuditSink`].
//! An event never carries a token, secret, key or password: only who, what, the decision and why.

use std::borrow::Cow;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// The filter stage that made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Authn,
    Authz,
    RateLimit,
    Validation,
    Cors,
    /// The WAF (injection protection) matched the request.
    Waf,
    /// Every stage passed; the request went upstream.
    Proxy,
    /// The identity provider: a login (password check) at `/authorize`.
    Login,
    /// The identity provider's token endpoint (grants, refresh, revocation, introspection).
    Token,
    /// The workload CA: an SVID request (attestation and issuance).
    Ca,
    /// A stage this build does not know (an event from a newer version).
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    /// `gateway`, `sidecar`, `idp`, `ca`, ...
    pub source: Cow<'static, str>,
    /// The emitting workload's own identity (a sidecar's SPIFFE ID), when it has one: with a
    /// `Service::"spiffe://..."` principal this makes the service-to-service edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub request_id: String,
    pub decision: Decision,
    pub stage: Stage,
    pub reason: String,
    /// `User::"alice"`, `Client::"billing"`, `Service::"spiffe://..."` or `Anonymous`.
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<Cow<'static, str>>,
    pub route: String,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub client_ip: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_ids: Vec<String>,
    pub status: u16,
    pub latency_ms: f64,
    /// The WAF rules that matched this request (never the matched data itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waf: Vec<WafHit>,
}

/// One WAF rule that matched: its id, its message and the variable it matched in (`ARGS:id`).
/// The matched value is not kept: it is the attacker's payload, or a user's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WafHit {
    pub rule: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub var: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
}

/// An event as shipped to and stored by the server: the event plus an id unique across all
/// sources (the shipper's instance id and its sequence number), so a re-sent batch is recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

pub fn now_rfc3339() -> String {
    // Formatted once per millisecond per thread: a busy gateway makes many events per millisecond.
    thread_local! {
        static LAST: std::cell::RefCell<(u128, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    LAST.with_borrow_mut(|(at, text)| {
        if *at != ms || text.is_empty() {
            *at = ms;
            *text = humantime::format_rfc3339_millis(now).to_string();
        }
        text.clone()
    })
}

/// Where audit events go. `record` must not block the request path.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);

    /// Record, or return false when the sink cannot take the event now (a full queue). A caller
    /// whose operation must not happen unaudited refuses the operation then (fails closed).
    fn try_record(&self, event: AuditEvent) -> bool {
        self.record(event);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shipped_record_round_trips_through_json() {
        let record = AuditRecord {
            id: "4f1c-17".into(),
            event: AuditEvent {
                time: "2026-11-26T03:00:00.000Z".into(),
                source: "sidecar".into(),
                service: Some("spiffe://shop.local/ns/shop/sa/payments".into()),
                request_id: "r1".into(),
                decision: Decision::Deny,
                stage: Stage::Authz,
                reason: "no policy allows".into(),
                principal: "Service::\"spiffe://shop.local/ns/shop/sa/gateway\"".into(),
                client_id: None,
                auth_method: Some("mtls".into()),
                route: "inbound".into(),
                method: "POST".into(),
                path: "/payments/charge".into(),
                client_ip: "10.0.0.2".into(),
                policy_ids: vec![],
                status: 403,
                latency_ms: 0.25,
                waf: vec![],
            },
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.starts_with(r#"{"id":"4f1c-17","time":"2026-11-26T03:00:00.000Z","source":"sidecar","#), "{line}");
        assert!(!line.contains("policy_ids") && !line.contains("client_id") && !line.contains("waf"), "{line}");
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, record);
        let newer = line.replace(r#""stage":"authz""#, r#""stage":"quantum""#);
        assert_eq!(serde_json::from_str::<AuditRecord>(&newer).unwrap().event.stage, Stage::Other);
    }

    #[test]
    fn event_times_follow_the_clock_to_the_millisecond() {
        let parse = |t: &str| humantime::parse_rfc3339(t).unwrap();
        let mut last = parse(&now_rfc3339());
        for _ in 0..50 {
            let before = SystemTime::now();
            let t = now_rfc3339();
            let after = SystemTime::now();
            assert_eq!(t.len(), "2026-11-26T03:00:00.000Z".len(), "{t}");
            let at = parse(&t);
            // Millisecond precision: within the millisecond around the reading.
            assert!(at + std::time::Duration::from_millis(1) > before && at <= after, "{t}");
            assert!(at >= last, "never backwards: {t}");
            last = at;
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
}
