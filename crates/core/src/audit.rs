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

/// A new field goes into [`AuditEventView`] too (its `write_members`, `to_event` and
/// [`AuditEvent::view`]; the tests compare the view's JSON with serde's output).
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
    /// To the microsecond (see [`latency_ms`]).
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

impl Decision {
    /// The JSON name (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl Stage {
    /// The JSON name (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Authn => "authn",
            Stage::Authz => "authz",
            Stage::RateLimit => "rate_limit",
            Stage::Validation => "validation",
            Stage::Cors => "cors",
            Stage::Waf => "waf",
            Stage::Proxy => "proxy",
            Stage::Login => "login",
            Stage::Token => "token",
            Stage::Ca => "ca",
            Stage::Other => "other",
        }
    }
}

impl AuditEvent {
    /// Append the event as one JSON object: the same bytes as `serde_json::to_writer` (tested),
    /// written faster (see [`AuditEventView::write_json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.view().write_json(out);
    }

    /// The members of [`AuditEvent::write_json`]'s object without its braces (`"time":…,…`), for a
    /// caller that puts a member of its own first (the shipper's record id).
    pub fn write_members(&self, out: &mut Vec<u8>) {
        self.view().write_members(out);
    }

    /// The event, borrowed.
    pub fn view(&self) -> AuditEventView<'_> {
        AuditEventView {
            time: &self.time,
            source: &self.source,
            service: self.service.as_deref(),
            request_id: &self.request_id,
            decision: self.decision,
            stage: self.stage,
            reason: &self.reason,
            principal: &self.principal,
            client_id: self.client_id.as_deref(),
            auth_method: self.auth_method.as_deref(),
            route: &self.route,
            method: &self.method,
            path: &self.path,
            client_ip: &self.client_ip,
            policy_ids: &self.policy_ids,
            status: self.status,
            latency_ms: self.latency_ms,
            waf: &self.waf,
        }
    }
}

/// An [`AuditEvent`] whose fields are borrowed: what a request path builds, so that a sink that
/// only serializes (the audit file) costs no allocation per event. [`AuditEventView::to_event`]
/// makes the owned event for a sink that keeps it.
#[derive(Debug, Clone, Copy)]
pub struct AuditEventView<'a> {
    pub time: &'a str,
    pub source: &'a str,
    pub service: Option<&'a str>,
    pub request_id: &'a str,
    pub decision: Decision,
    pub stage: Stage,
    pub reason: &'a str,
    pub principal: &'a str,
    pub client_id: Option<&'a str>,
    pub auth_method: Option<&'a str>,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub client_ip: &'a str,
    pub policy_ids: &'a [String],
    pub status: u16,
    pub latency_ms: f64,
    pub waf: &'a [WafHit],
}

impl AuditEventView<'_> {
    pub fn to_event(&self) -> AuditEvent {
        AuditEvent {
            time: self.time.to_owned(),
            source: Cow::Owned(self.source.to_owned()),
            service: self.service.map(str::to_owned),
            request_id: self.request_id.to_owned(),
            decision: self.decision,
            stage: self.stage,
            reason: self.reason.to_owned(),
            principal: self.principal.to_owned(),
            client_id: self.client_id.map(str::to_owned),
            auth_method: self.auth_method.map(|m| Cow::Owned(m.to_owned())),
            route: self.route.to_owned(),
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            client_ip: self.client_ip.to_owned(),
            policy_ids: self.policy_ids.to_vec(),
            status: self.status,
            latency_ms: self.latency_ms,
            waf: self.waf.to_vec(),
        }
    }

    /// Append the event as one JSON object: the same bytes as `serde_json::to_writer` of the
    /// [`AuditEvent`] (tested), written faster. serde_json escapes strings byte by byte (~12
    /// instructions per byte), while here a string with nothing to escape, nearly every one, is
    /// checked and copied whole.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.write_members(out);
        out.push(b'}');
    }

    /// The members of the object without its braces.
    pub fn write_members(&self, out: &mut Vec<u8>) {
        out.reserve(512);
        out.extend_from_slice(b"\"time\":");
        json_str(out, self.time);
        member(out, "source", self.source);
        if let Some(service) = self.service {
            member(out, "service", service);
        }
        member(out, "request_id", self.request_id);
        member(out, "decision", self.decision.as_str());
        member(out, "stage", self.stage.as_str());
        member(out, "reason", self.reason);
        member(out, "principal", self.principal);
        if let Some(client_id) = self.client_id {
            member(out, "client_id", client_id);
        }
        if let Some(auth_method) = self.auth_method {
            member(out, "auth_method", auth_method);
        }
        member(out, "route", self.route);
        member(out, "method", self.method);
        member(out, "path", self.path);
        member(out, "client_ip", self.client_ip);
        if !self.policy_ids.is_empty() {
            out.extend_from_slice(b",\"policy_ids\":[");
            for (i, id) in self.policy_ids.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, id);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b",\"latency_ms\":");
        // serde_json's own float formatting (and `null` for a non-finite value); a Vec takes any write.
        let _ = serde_json::to_writer(&mut *out, &self.latency_ms);
        if !self.waf.is_empty() {
            out.extend_from_slice(b",\"waf\":");
            let _ = serde_json::to_writer(&mut *out, &self.waf);
        }
    }
}

/// `,"name":"value"` (`name` is one of our field names: nothing in it needs escaping).
fn member(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    json_str(out, value);
}

/// A JSON string: copied whole when nothing in it needs escaping (serde_json escapes only control
/// characters, `"` and `\\`), else written by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether `s` holds a byte serde_json escapes (a control character, `"` or `\\`), checked eight
/// bytes at a time: a byte `b` of a word `x` is below `n` exactly when the high bit of
/// `(x - 0x01..01 * n) & !x` is set in some byte (the classic SWAR "has less" test; exact for
/// `n <= 0x80` as a presence test), and equal to `c` when `x ^ (0x01..01 * c)` has a zero byte.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    fn word(x: u64) -> u64 {
        let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
        below(x, 0x20) | below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1)
    }
    let mut chunks = s.chunks_exact(8);
    let mut found = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        found |= word(u64::from_le_bytes(w));
    }
    // The tail, padded with a byte that needs no escape.
    let mut w = [b'a'; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    found |= word(u64::from_le_bytes(w));
    found != 0
}

/// A duration in milliseconds, rounded down to the microsecond: `0.275`, not the
/// `0.27553099999999997` of full precision, which no reader needs and every line would carry.
pub fn latency_ms(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// The time now as RFC 3339 with milliseconds (`2026-11-27T08:00:00.000Z`), on the stack.
#[derive(Clone, Copy)]
pub struct Rfc3339Millis {
    text: [u8; 32],
    len: usize,
}

impl Rfc3339Millis {
    pub fn now() -> Rfc3339Millis {
        let mut text = [0u8; 32];
        let len = with_now_text(|t| {
            // 24 bytes until the year 10000.
            let n = t.len().min(text.len());
            text[..n].copy_from_slice(&t.as_bytes()[..n]);
            n
        });
        Rfc3339Millis { text, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..self.len]).unwrap_or_default()
    }
}

pub fn now_rfc3339() -> String {
    with_now_text(str::to_owned)
}

fn with_now_text<R>(f: impl FnOnce(&str) -> R) -> R {
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
        f(text)
    })
}

/// Where audit events go. `record` must not block the request path.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);

    /// Record a borrowed event: a sink that only serializes it needs no owned copy (the default
    /// makes one).
    fn record_view(&self, event: &AuditEventView<'_>) {
        self.record(event.to_event());
    }

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

    /// The word-at-a-time check agrees with a byte loop for every byte value at every position of
    /// strings of 1 to 19 bytes (whole words, tails, both), around bytes that need no escape.
    #[test]
    fn needs_escape_finds_every_escaped_byte() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in 1..20 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'a', 0x7f, 0xff, b' ', b'!', b'#', b'[', b']'] {
                        let mut s = vec![fill; len];
                        s[pos] = b;
                        assert_eq!(needs_escape(&s), naive(&s), "{s:?}");
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
    }

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
    fn write_json_writes_what_serde_json_writes() {
        let base = AuditEvent {
            time: "2026-11-26T03:00:00.000Z".into(),
            source: "gateway".into(),
            service: None,
            request_id: "9d3117d33731b16c197fb85125028fc5".into(),
            decision: Decision::Allow,
            stage: Stage::Authz,
            reason: "permitted by policy".into(),
            principal: "Client::\"bench\"".into(),
            client_id: Some("bench".into()),
            auth_method: Some("jwt".into()),
            route: "orders".into(),
            method: "GET".into(),
            path: "/orders".into(),
            client_ip: "127.0.0.1".into(),
            policy_ids: vec!["read".into()],
            status: 200,
            latency_ms: 0.171966,
            waf: vec![],
        };
        let awkward = [
            "",
            "plain",
            "quote \" and backslash \\ inside",
            "control \u{0} \u{1f} \t \n \r \u{8} \u{c}",
            "DEL \u{7f} stays",
            "ünïcødé ✓ 😀 and \u{2028}",
            "/orders/<script>alert(1)</script>?a=b&c=%22",
            "ends with a backslash \\",
        ];
        let mut events = vec![base.clone()];
        for (i, text) in awkward.iter().enumerate() {
            let mut e = base.clone();
            e.time = (*text).into();
            e.source = text.to_string().into();
            e.service = (i % 2 == 0).then(|| text.to_string());
            e.request_id = (*text).into();
            e.reason = (*text).into();
            e.principal = (*text).into();
            e.client_id = (i % 3 != 0).then(|| text.to_string());
            e.auth_method = (i % 2 == 1).then(|| text.to_string().into());
            e.route = (*text).into();
            e.method = (*text).into();
            e.path = (*text).into();
            e.client_ip = (*text).into();
            e.policy_ids = awkward.iter().take(i).map(|t| t.to_string()).collect();
            e.waf = (0..i)
                .map(|n| WafHit {
                    rule: 942100 + n as u32,
                    msg: (*text).into(),
                    var: if n % 2 == 0 { String::new() } else { format!("ARGS:{text}") },
                    severity: (n % 3 != 0).then_some(n as u8),
                })
                .collect();
            events.push(e);
        }
        let decisions = [Decision::Allow, Decision::Deny];
        let stages = [
            Stage::Authn,
            Stage::Authz,
            Stage::RateLimit,
            Stage::Validation,
            Stage::Cors,
            Stage::Waf,
            Stage::Proxy,
            Stage::Login,
            Stage::Token,
            Stage::Ca,
            Stage::Other,
        ];
        let latencies =
            [0.0, -0.0, 1.0, 0.1 + 0.2, 1e-9, 123456.789, 1e300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        for (i, stage) in stages.iter().enumerate() {
            let mut e = base.clone();
            e.stage = *stage;
            e.decision = decisions[i % 2];
            e.status = [0, 200, 403, 429, 65535][i % 5];
            e.latency_ms = latencies[i % latencies.len()];
            events.push(e);
        }
        for (i, latency) in latencies.iter().enumerate() {
            let mut e = base.clone();
            e.latency_ms = *latency;
            e.status = i as u16 * 101;
            events.push(e);
        }
        for e in &events {
            let mut ours = b"prefix".to_vec();
            e.write_json(&mut ours);
            let theirs = serde_json::to_vec(e).unwrap();
            assert_eq!(
                ours.strip_prefix(b"prefix").map(String::from_utf8_lossy),
                Some(String::from_utf8_lossy(&theirs)),
                "{e:?}"
            );
        }
        assert_eq!(events.len(), 1 + awkward.len() + stages.len() + latencies.len());
    }

    #[test]
    fn a_view_is_the_event_borrowed() {
        let ev = AuditEvent {
            time: "2026-11-27T08:00:00.000Z".into(),
            source: "sidecar".into(),
            service: Some("spiffe://shop.local/ns/shop/sa/payments".into()),
            request_id: "r1".into(),
            decision: Decision::Deny,
            stage: Stage::Waf,
            reason: "blocked \"by\" rule".into(),
            principal: "Anonymous".into(),
            client_id: Some("c".into()),
            auth_method: Some("mtls".into()),
            route: "inbound".into(),
            method: "POST".into(),
            path: "/p".into(),
            client_ip: "::1".into(),
            policy_ids: vec!["a".into(), "b".into()],
            status: 403,
            latency_ms: 1.5,
            waf: vec![WafHit { rule: 942100, msg: "SQL Injection".into(), var: "ARGS:id".into(), severity: Some(2) }],
        };
        assert_eq!(ev.view().to_event(), ev);
        let mut a = Vec::new();
        ev.view().write_json(&mut a);
        assert_eq!(String::from_utf8(a).unwrap(), serde_json::to_string(&ev).unwrap());
        let t = Rfc3339Millis::now();
        assert_eq!(t.as_str().len(), 24);
        assert!(humantime::parse_rfc3339(t.as_str()).is_ok(), "{}", t.as_str());
    }

    #[test]
    fn latencies_are_kept_to_the_microsecond() {
        use std::time::Duration;
        assert_eq!(latency_ms(Duration::from_nanos(275_531)), 0.275);
        assert_eq!(latency_ms(Duration::from_nanos(1_999)), 0.001);
        assert_eq!(latency_ms(Duration::from_millis(1500)), 1500.0);
        // As written in an event line: three decimals at most.
        assert_eq!(serde_json::to_string(&latency_ms(Duration::from_nanos(275_531))).unwrap(), "0.275");
        assert_eq!(serde_json::to_string(&latency_ms(Duration::from_nanos(12_345_678))).unwrap(), "12.345");
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
