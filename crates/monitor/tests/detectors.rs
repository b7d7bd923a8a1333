//! Detector behaviour outside the replay fixtures: configuration, expiry, eviction under hostile
//! input, rate drops, deny spikes, clock handling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use palisade_core::audit::{AuditEvent, AuditRecord, Decision, Stage};
use palisade_monitor::{AlertKind, ConfigError, DetectorConfig, Detectors, Severity};

const T0: u64 = 1_772_445_600; // 2026-03-02T10:00:00Z

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0 * 1000 + ms)
}

fn rec(id: &str, ms: u64, decision: Decision, stage: Stage, principal: &str, ip: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        event: AuditEvent {
            time: humantime::format_rfc3339_millis(at(ms)).to_string(),
            source: "gateway".into(),
            service: None,
            request_id: format!("req-{id}"),
            decision,
            stage,
            reason: "denied".into(),
            principal: principal.into(),
            client_id: None,
            auth_method: None,
            route: "r".into(),
            method: "GET".into(),
            path: "/".into(),
            client_ip: ip.into(),
            policy_ids: vec![],
            status: if decision == Decision::Deny { 401 } else { 200 },
            latency_ms: 1.0,
            waf: Vec::new(),
        },
    }
}

fn cfg(json: &str) -> DetectorConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn configuration_errors_are_precise() {
    let e = serde_json::from_str::<DetectorConfig>(r#"{"brute_force": {"windw": "1m"}}"#).unwrap_err();
    assert!(e.to_string().starts_with("unknown field `windw`"), "{e}");
    let e = serde_json::from_str::<DetectorConfig>(r#"{"brute_force": {"window": "soon"}}"#).unwrap_err();
    assert!(e.to_string().starts_with("expected a duration like \"60s\" or \"24h\""), "{e}");
    let bad = cfg(r#"{"rate_anomaly": {"alpha": 0.0}}"#);
    let e = Detectors::new(bad).unwrap_err();
    assert_eq!(e, ConfigError { field: "rate_anomaly.alpha", reason: "must be in (0, 1]" });
    assert_eq!(e.to_string(), "monitor configuration: rate_anomaly.alpha: must be in (0, 1]");
    let e = Detectors::new(cfg(r#"{"expiry": {"warning": "1d", "critical": "2d"}}"#)).unwrap_err();
    assert_eq!(e.field, "expiry.critical");
    let e = Detectors::new(cfg(r#"{"brute_force": {"per_ip": 0}}"#)).unwrap_err();
    assert_eq!(e.field, "brute_force.per_ip");
    // Defaults, as documented.
    let d = DetectorConfig::default();
    assert_eq!(
        (d.brute_force.window, d.brute_force.per_principal, d.brute_force.per_ip),
        (Duration::from_secs(60), 10, 20)
    );
    assert_eq!(d.token_misuse.reasons, vec!["replay", "already used", "revoked"]);
}

#[test]
fn a_disabled_detector_stays_quiet() {
    let mut det = Detectors::new(cfg(r#"{"brute_force": {"enabled": false}}"#)).unwrap();
    for i in 0..30 {
        let r = rec(&format!("e{i}"), i * 100, Decision::Deny, Stage::Authn, "User::\"alice\"", "192.0.2.1");
        assert_eq!(det.observe(&r, at(i * 100)), vec![]);
    }
}

#[test]
fn the_per_ip_threshold_counts_every_principal() {
    let mut det = Detectors::new(DetectorConfig::default()).unwrap();
    let mut raised = Vec::new();
    for i in 0..20u64 {
        let r = rec(&format!("e{i}"), i * 1000, Decision::Deny, Stage::Authn, "Anonymous", "192.0.2.1");
        raised.extend(det.observe(&r, at(i * 1000)));
    }
    assert_eq!(raised.len(), 1);
    assert_eq!(
        (raised[0].kind, raised[0].key.as_str(), raised[0].count),
        (AlertKind::BruteForce, "brute_force:ip:192.0.2.1", 20)
    );
    // The window slides: 20 failures spread over more than a minute never alert.
    let mut det = Detectors::new(DetectorConfig::default()).unwrap();
    for i in 0..40u64 {
        let r = rec(&format!("e{i}"), i * 3200, Decision::Deny, Stage::Authn, "Anonymous", "192.0.2.1");
        assert_eq!(det.observe(&r, at(i * 3200)), vec![], "event {i}");
    }
}

#[test]
fn keys_past_the_cap_evict_the_least_recently_seen() {
    let mut det =
        Detectors::new(cfg(r#"{"max_keys": 2, "brute_force": {"per_ip": 3, "per_principal": 1000}}"#)).unwrap();
    let fail = |id: &str, ms: u64, ip: &str| rec(id, ms, Decision::Deny, Stage::Authn, "Anonymous", ip);
    assert!(det.observe(&fail("a1", 0, "192.0.2.1"), at(0)).is_empty());
    assert!(det.observe(&fail("a2", 1, "192.0.2.1"), at(1)).is_empty());
    assert!(det.observe(&fail("b1", 2, "192.0.2.2"), at(2)).is_empty());
    assert!(det.observe(&fail("c1", 3, "192.0.2.3"), at(3)).is_empty()); // evicts 192.0.2.1
    assert!(det.observe(&fail("a3", 4, "192.0.2.1"), at(4)).is_empty(), "192.0.2.1 starts over");
    // Without eviction the same sequence alerts.
    let mut roomy = Detectors::new(cfg(r#"{"brute_force": {"per_ip": 3, "per_principal": 1000}}"#)).unwrap();
    let mut n = 0;
    for (id, ms, ip) in [
        ("a1", 0, "192.0.2.1"),
        ("a2", 1, "192.0.2.1"),
        ("b1", 2, "192.0.2.2"),
        ("c1", 3, "192.0.2.3"),
        ("a3", 4, "192.0.2.1"),
    ] {
        n += roomy.observe(&fail(id, ms, ip), at(ms)).len();
    }
    assert_eq!(n, 1);
}

#[test]
fn hostile_fields_do_not_panic_and_are_cleaned() {
    let mut det = Detectors::new(cfg(r#"{"brute_force": {"per_principal": 2}}"#)).unwrap();
    let long = format!("User::\"{}\"", "é".repeat(5000));
    let mut raised = Vec::new();
    for i in 0..3u64 {
        let mut r = rec(&"x".repeat(10_000), i, Decision::Deny, Stage::Login, &long, "192.0.2.7\n\rFAKE LINE");
        if i == 1 {
            r.event.time = "not a time".into();
        }
        raised.extend(det.observe(&r, at(i)));
    }
    let a = raised.iter().find(|a| a.key.starts_with("brute_force:principal:")).unwrap();
    assert!(a.summary.chars().count() < 300, "{}", a.summary);
    assert!(a.event_ids.iter().all(|id| id.len() == 128));
    let mut det = Detectors::new(DetectorConfig::default()).unwrap();
    let mut r = rec("t1", 0, Decision::Deny, Stage::Authn, "Anonymous", "192.0.2.7\nFAKE");
    r.event.reason = "token revoked".into();
    let alerts = det.observe(&r, at(0));
    assert_eq!(alerts[0].key, "token_misuse:Anonymous@192.0.2.7FAKE");
}

#[test]
fn an_event_time_in_the_future_is_not_trusted() {
    let mut det = Detectors::new(DetectorConfig::default()).unwrap();
    let mut r = rec("t1", 0, Decision::Deny, Stage::Authn, "Anonymous", "192.0.2.7");
    r.event.reason = "refresh token revoked".into();
    r.event.time = "2100-01-01T00:00:00.000Z".into();
    let alerts = det.observe(&r, at(0));
    assert_eq!(alerts[0].first_seen, at(0));
    // Within the skew (5 minutes), the event's own time counts.
    r.event.time = humantime::format_rfc3339_millis(at(120_000)).to_string();
    assert_eq!(det.observe(&r, at(0))[0].first_seen, at(120_000));
    // And the clock never goes back.
    r.event.time = humantime::format_rfc3339_millis(at(1_000)).to_string();
    assert_eq!(det.observe(&r, at(0))[0].first_seen, at(120_000));
}

#[test]
fn a_route_going_silent_is_a_rate_drop() {
    let mut det = Detectors::new(DetectorConfig::default()).unwrap();
    let mut raised = Vec::new();
    // 40 requests a minute for 13 minutes (the first partial), none in minute 13, one in minute 14.
    for minute in 0..13u64 {
        for i in 0..40u64 {
            let ms = minute * 60_000 + i * 1_500;
            let r = rec(&format!("m{minute}-{i}"), ms, Decision::Allow, Stage::Proxy, "Anonymous", "192.0.2.1");
            raised.extend(det.observe(&r, at(ms)));
        }
    }
    assert_eq!(raised, vec![]);
    let ms = 14 * 60_000;
    let alerts = det.observe(&rec("late", ms, Decision::Allow, Stage::Proxy, "Anonymous", "192.0.2.1"), at(ms));
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!((a.kind, a.severity, a.key.as_str()), (AlertKind::RateDrop, Severity::Low, "rate_drop:route:r"));
    assert_eq!((a.first_seen, a.last_seen, a.event_ids.len()), (at(13 * 60_000), at(14 * 60_000), 0));
    assert_eq!(a.summary, "Route r received 0 requests in one 60s interval, far below its mean of 40.0 (z = -6.3)");
}

#[test]
fn a_deny_spike_needs_the_floor_and_the_ratio() {
    let mut det =
        Detectors::new(cfg(r#"{"deny_spike": {"floor": 10, "ratio": 0.5}, "brute_force": {"enabled": false}}"#))
            .unwrap();
    let mut raised = Vec::new();
    // 30 allowed, then denies: the 10th deny is 10/40 = 25 %; the ratio is reached at deny 30.
    for i in 0..30u64 {
        raised.extend(det.observe(
            &rec(&format!("ok{i}"), i * 100, Decision::Allow, Stage::Proxy, "Anonymous", "192.0.2.1"),
            at(i * 100),
        ));
    }
    for i in 1..=35u64 {
        let ms = 3_000 + i * 100;
        raised.extend(
            det.observe(&rec(&format!("d{i}"), ms, Decision::Deny, Stage::Authz, "Anonymous", "192.0.2.1"), at(ms)),
        );
    }
    assert_eq!(raised.len(), 1, "{raised:?}");
    let a = &raised[0];
    assert_eq!((a.kind, a.key.as_str(), a.count), (AlertKind::DenySpike, "deny_spike:source:gateway", 30));
    assert_eq!(a.event_ids, (1..=20).map(|i| format!("d{i}")).collect::<Vec<_>>());
    assert_eq!(a.summary, "Spike in denies from gateway: 30 of 60 events (50%) within 1m");
}

#[test]
fn certificate_expiry_warns_then_turns_critical() {
    let mut det = Detectors::new(DetectorConfig::default()).unwrap();
    let now = at(0);
    let day = Duration::from_secs(86_400);
    assert_eq!(det.observe_expiry("gateway TLS certificate", now + day * 31, now), None);
    let warn = det.observe_expiry("gateway TLS certificate", now + day * 20 + Duration::from_secs(7200), now).unwrap();
    assert_eq!(
        (warn.kind, warn.severity, warn.key.as_str()),
        (AlertKind::CertExpiry, Severity::Medium, "cert_expiry:gateway TLS certificate")
    );
    assert_eq!(warn.summary, "gateway TLS certificate expires in 20d 2h (at 2026-03-22T12:00:00Z)");
    let crit = det.observe_expiry("gateway TLS certificate", now + day * 7, now).unwrap();
    assert_eq!(crit.severity, Severity::Critical);
    let gone = det.observe_expiry("CA key", now - day, now).unwrap();
    assert_eq!((gone.severity, gone.summary.as_str()), (Severity::Critical, "CA key expired at 2026-03-01T10:00:00Z"));
    assert_ne!(warn.id, crit.id);
}
