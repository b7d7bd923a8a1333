//! Replays of recorded audit streams (tests/fixtures/*.jsonl, written by gen.py): each attack
//! raises exactly the expected alerts with the events behind them; normal traffic raises none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::SystemTime;

use palisade_core::audit::AuditRecord;
use palisade_monitor::{event_time, Alert, AlertKind, AlertManager, DetectorConfig, Detectors, ManagerConfig, Metrics};

fn load(name: &str) -> Vec<AuditRecord> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The defaults, with a 10 minute learning period so the lateral fixture fits in 15 minutes.
fn config() -> DetectorConfig {
    serde_json::from_str(r#"{"lateral_movement": {"learning_period": "10m"}}"#).unwrap()
}

fn at(rec: &AuditRecord) -> SystemTime {
    event_time(&rec.event.time).unwrap()
}

/// Every alert the detectors raise over the fixture, and the manager fed with them.
fn replay(name: &str) -> (Vec<Alert>, AlertManager) {
    let mut det = Detectors::new(config()).unwrap();
    let mut mgr = AlertManager::new(ManagerConfig::default(), Metrics::default());
    let mut all = Vec::new();
    for rec in load(name) {
        for a in det.observe(&rec, at(&rec)) {
            mgr.ingest(a.clone(), at(&rec));
            all.push(a);
        }
    }
    (all, mgr)
}

type Brief = (AlertKind, String, Vec<String>, u64);

fn brief(a: &Alert) -> Brief {
    (a.kind, a.key.clone(), a.event_ids.clone(), a.count)
}

fn ids(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

fn open(mgr: &AlertManager) -> Vec<Brief> {
    mgr.open().iter().map(|m| brief(&m.alert)).collect()
}

#[test]
fn brute_force_on_one_user() {
    let (alerts, mgr) = replay("brute_force.jsonl");
    let key = r#"brute_force:principal:User::"alice""#.to_owned();
    assert_eq!(
        alerts.iter().map(brief).collect::<Vec<_>>(),
        vec![
            (AlertKind::BruteForce, key.clone(), ids("bf-", 1..=10), 10),
            (AlertKind::BruteForce, key.clone(), ids("bf-", 11..=11), 1),
            (AlertKind::BruteForce, key.clone(), ids("bf-", 12..=12), 1),
        ]
    );
    assert_eq!(
        alerts[0].summary,
        r#"Brute force suspected: at least 10 authentication failures for User::"alice" within 1m"#
    );
    assert_eq!(humantime::format_rfc3339_millis(alerts[0].first_seen).to_string(), "2026-03-02T10:00:07.000Z");
    assert_eq!(humantime::format_rfc3339_millis(alerts[0].last_seen).to_string(), "2026-03-02T10:00:25.000Z");
    assert_eq!(open(&mgr), vec![(AlertKind::BruteForce, key, ids("bf-", 1..=12), 12)]);
}

#[test]
fn credential_stuffing_from_one_ip() {
    let (alerts, mgr) = replay("credential_stuffing.jsonl");
    let key = "credential_stuffing:ip:203.0.113.50".to_owned();
    assert_eq!(
        alerts.iter().map(brief).collect::<Vec<_>>(),
        vec![
            (AlertKind::CredentialStuffing, key.clone(), ids("cs-", 1..=5), 5),
            (AlertKind::CredentialStuffing, key.clone(), ids("cs-", 6..=6), 1),
        ]
    );
    assert_eq!(open(&mgr), vec![(AlertKind::CredentialStuffing, key, ids("cs-", 1..=6), 6)]);
}

#[test]
fn a_new_edge_after_learning_alerts_once() {
    let (alerts, _) = replay("lateral_movement.jsonl");
    assert_eq!(
        alerts.iter().map(brief).collect::<Vec<_>>(),
        vec![(
            AlertKind::LateralMovement,
            "lateral_movement:spiffe://shop.local/ns/shop/sa/orders->spiffe://shop.local/ns/shop/sa/users-db"
                .to_owned(),
            vec!["lm-new-1".to_owned()],
            1
        )]
    );
    assert_eq!(
        alerts[0].summary,
        "New service-to-service edge: spiffe://shop.local/ns/shop/sa/orders called \
         spiffe://shop.local/ns/shop/sa/users-db, not in the learned baseline"
    );
}

#[test]
fn the_baseline_survives_a_restart() {
    let records = load("lateral_movement.jsonl");
    let (learning, after): (Vec<_>, Vec<_>) = records.iter().partition(|r| r.event.time.as_str() < "2026-03-02T10:10");
    let mut det = Detectors::new(config()).unwrap();
    for rec in &learning {
        assert_eq!(det.observe(rec, at(rec)), vec![]);
    }
    let saved = serde_json::to_string(&det.baseline()).unwrap();
    assert!(saved.starts_with(r#"{"learning_started":"2026-03-02T10:00:01.000Z","edges":[{"#), "{saved}");
    assert_eq!(det.baseline().edges.len(), 3, "the denied probe is not learned: {saved}");

    let lateral = |det: &mut Detectors| -> Vec<Vec<String>> {
        let mut raised = Vec::new();
        for rec in &after {
            for a in det.observe(rec, at(rec)) {
                assert_eq!(a.kind, AlertKind::LateralMovement);
                raised.push(a.event_ids);
            }
        }
        raised
    };
    // Restarted with the saved baseline: learning is over, only the new edge alerts.
    let mut restarted = Detectors::new(config()).unwrap();
    restarted.import_baseline(serde_json::from_str(&saved).unwrap());
    assert_eq!(lateral(&mut restarted), vec![vec!["lm-new-1".to_owned()]]);
    // Restarted without it: learning starts over and takes the new edge in.
    let mut amnesiac = Detectors::new(config()).unwrap();
    assert_eq!(lateral(&mut amnesiac), Vec::<Vec<String>>::new());
}

#[test]
fn a_rate_spike_on_one_route() {
    let (alerts, _) = replay("rate_spike.jsonl");
    let expected: Vec<String> = (1..=20).map(|i| format!("rs-api-orders-15-{i:03}")).collect();
    assert_eq!(
        alerts.iter().map(brief).collect::<Vec<_>>(),
        vec![(AlertKind::RateSpike, "rate_spike:route:api-orders".to_owned(), expected, 1)]
    );
    assert!(alerts[0].summary.starts_with("Route api-orders received "), "{}", alerts[0].summary);
}

#[test]
fn a_waf_burst_from_one_ip() {
    let (alerts, mgr) = replay("waf_burst.jsonl");
    let key = "waf_burst:ip:192.0.2.66".to_owned();
    let mut expected = vec![(AlertKind::WafBurst, key.clone(), ids("waf-", 1..=20), 20)];
    expected.extend((21..=25).map(|i| (AlertKind::WafBurst, key.clone(), vec![format!("waf-{i}")], 1)));
    assert_eq!(alerts.iter().map(brief).collect::<Vec<_>>(), expected);
    assert_eq!(open(&mgr), vec![(AlertKind::WafBurst, key, ids("waf-", 1..=25), 25)]);
}

#[test]
fn a_replayed_dpop_token() {
    let (alerts, _) = replay("token_replay.jsonl");
    assert_eq!(
        alerts.iter().map(brief).collect::<Vec<_>>(),
        vec![(
            AlertKind::TokenMisuse,
            "token_misuse:Anonymous@192.0.2.99".to_owned(),
            vec!["dpop-replay-1".to_owned()],
            1
        )]
    );
    assert_eq!(
        alerts[0].summary,
        "Replayed or revoked token refused for Anonymous from 192.0.2.99 on route api-orders \
         (DPoP proof replayed: jti Already Used)"
    );
}

#[test]
fn a_5xx_spike_from_one_source() {
    let (alerts, _) = replay("error_spike.jsonl");
    assert_eq!(
        alerts.iter().map(brief).collect::<Vec<_>>(),
        vec![(AlertKind::ErrorSpike, "error_spike:source:gateway".to_owned(), ids("err-", 1..=20), 50)]
    );
    assert_eq!(alerts[0].summary, "Spike in 5xx responses from gateway: 50 of 77 events (64%) within 1m");
}

#[test]
fn normal_traffic_raises_nothing() {
    let records = load("normal_traffic.jsonl");
    assert_eq!(records.len(), 5342);
    let (alerts, mgr) = replay("normal_traffic.jsonl");
    assert_eq!(alerts, vec![]);
    assert!(mgr.open().is_empty());
}
