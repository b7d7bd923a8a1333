//! Alert manager: deduplication by key, suppression of re-notification, acknowledgement, metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use palisade_monitor::{AckError, Alert, AlertKind, AlertManager, ManagedAlert, ManagerConfig, Metrics, Severity};
use prometheus_client::registry::Registry;

fn t(secs: u64) -> SystemTime {
    // 2026-03-02T10:00:00Z plus `secs`.
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_445_600 + secs)
}

fn alert(id: &str, key: &str, ids: &[&str], at: u64, severity: Severity) -> Alert {
    Alert {
        id: id.into(),
        kind: AlertKind::BruteForce,
        severity,
        summary: format!("summary of {id}"),
        key: key.into(),
        event_ids: ids.iter().map(|s| s.to_string()).collect(),
        first_seen: t(at),
        last_seen: t(at),
        count: ids.len() as u64,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn same_key_updates_the_open_alert_and_suppression_holds_back_renotification() {
    let metrics = Metrics::default();
    let mut registry = Registry::with_prefix("palisade");
    metrics.register(&mut registry);
    let mut mgr = AlertManager::new(ManagerConfig::default(), metrics);
    let k = "brute_force:ip:198.51.100.7";

    let first = mgr.ingest(alert("a-1", k, &["e1", "e2"], 0, Severity::Medium), t(0)).unwrap();
    assert_eq!((first.id.as_str(), first.count), ("a-1", 2));
    // A continuation a second later: merged, not notified (suppression: 1 hour).
    assert_eq!(mgr.ingest(alert("a-2", k, &["e2", "e3"], 1, Severity::High), t(1)), None);
    let open = mgr.open();
    assert_eq!(open.len(), 1);
    let a = &open[0].alert;
    assert_eq!((a.id.as_str(), a.count, a.severity), ("a-1", 4, Severity::High));
    assert_eq!(a.event_ids, strings(&["e1", "e2", "e3"]));
    assert_eq!((a.first_seen, a.last_seen), (t(0), t(1)));
    assert!(mgr.get("a-2").is_none());

    // Still within the hour: merged silently.
    assert_eq!(mgr.ingest(alert("a-3", k, &["e4"], 3599, Severity::High), t(3599)), None);
    // An hour after the notification: the ongoing alert is notified again, as it stands now.
    let again = mgr.ingest(alert("a-4", k, &["e5"], 3600, Severity::High), t(3600)).unwrap();
    assert_eq!((again.id.as_str(), again.count), ("a-1", 6));
    assert_eq!(again.event_ids, strings(&["e1", "e2", "e3", "e4", "e5"]));

    // Another key is independent.
    let other = mgr.ingest(alert("b-1", "waf_burst:ip:192.0.2.66", &["w1"], 10, Severity::Medium), t(3601));
    assert_eq!(other.map(|a| a.id), Some("b-1".to_owned()));
    assert_eq!(mgr.open().iter().map(|m| m.alert.id.as_str()).collect::<Vec<_>>(), vec!["a-1", "b-1"]);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("palisade_monitor_alerts_total{kind=\"brute_force\",severity=\"medium\"} 2\n"), "{text}");
    assert!(text.contains("palisade_monitor_notifications_total{kind=\"brute_force\",severity=\"medium\"} 2\n"));
    assert!(text.contains("palisade_monitor_notifications_total{kind=\"brute_force\",severity=\"high\"} 1\n"));
}

#[test]
fn acknowledged_alerts_leave_the_open_list_and_the_next_one_opens_anew() {
    let mut mgr = AlertManager::new(ManagerConfig::default(), Metrics::default());
    let k = "token_misuse:Anonymous@192.0.2.99";
    assert!(mgr.ingest(alert("a-1", k, &["e1"], 0, Severity::High), t(0)).is_some());

    assert_eq!(mgr.ack("nope", "oncall", t(5)), Err(AckError::NotFound));
    assert_eq!(mgr.ack("a-1", "oncall@example.com", t(5)), Ok(()));
    assert_eq!(mgr.ack("a-1", "oncall@example.com", t(6)), Err(AckError::AlreadyAcked));
    assert!(mgr.open().is_empty());
    let acked = mgr.acked();
    assert_eq!(acked.len(), 1);
    let ack = acked[0].ack.as_ref().unwrap();
    assert_eq!((ack.by.as_str(), ack.at), ("oncall@example.com", t(5)));

    // Same key after the ack: a new open alert, but within the suppression window: not notified.
    assert_eq!(mgr.ingest(alert("a-2", k, &["e2"], 60, Severity::High), t(60)), None);
    assert_eq!(mgr.open().iter().map(|m| (m.alert.id.as_str(), m.alert.count)).collect::<Vec<_>>(), vec![("a-2", 1)]);
    assert_eq!(mgr.get("a-1").unwrap().alert.count, 1, "the acknowledged alert is not updated");
    // Serialized for an API: the ack is part of it.
    let json = serde_json::to_value(mgr.get("a-1").unwrap()).unwrap();
    assert_eq!(json["ack"]["by"], "oncall@example.com");
    assert_eq!(json["ack"]["at"], "2026-03-02T10:00:05.000Z");
    assert_eq!(json["alert"]["kind"], "brute_force");
}

#[test]
fn the_store_is_bounded_and_evicts_acknowledged_alerts_first() {
    let cfg = ManagerConfig { max_alerts: 3, max_event_ids: 2, ..ManagerConfig::default() };
    let mut mgr = AlertManager::new(cfg, Metrics::default());
    for i in 0..3u64 {
        mgr.ingest(alert(&format!("a-{i}"), &format!("k{i}"), &["x", "y", "z"], i, Severity::Low), t(i));
    }
    assert_eq!(mgr.get("a-0").unwrap().alert.event_ids, strings(&["x", "y"]), "event ids capped");
    mgr.ack("a-1", "me", t(10)).unwrap();
    mgr.ingest(alert("a-3", "k3", &["w"], 11, Severity::Low), t(11));
    assert!(mgr.get("a-1").is_none(), "the acknowledged alert went first");
    mgr.ingest(alert("a-4", "k4", &["w"], 12, Severity::Low), t(12));
    assert_eq!(mgr.open().iter().map(|m| m.alert.id.as_str()).collect::<Vec<_>>(), vec!["a-2", "a-3", "a-4"]);
    // The evicted open alert's key opens a new alert rather than updating a ghost.
    mgr.ingest(alert("a-5", "k0", &["v"], 13, Severity::Low), t(13));
    assert_eq!(mgr.open().iter().map(|m| m.alert.id.as_str()).collect::<Vec<_>>(), vec!["a-3", "a-4", "a-5"]);
}

#[test]
fn a_snapshot_restores_open_and_acknowledged_alerts_and_their_suppression() {
    let mut mgr = AlertManager::new(ManagerConfig::default(), Metrics::default());
    assert!(mgr.ingest(alert("a1", "bf:ip:1", &["e1"], 100, Severity::High), t(100)).is_some());
    assert!(mgr.ingest(alert("a2", "bf:ip:2", &["e2"], 110, Severity::High), t(110)).is_some());
    mgr.ack("a2", "admin", t(120)).unwrap();
    let snap = mgr.snapshot();
    assert_eq!(snap.iter().map(|m| m.alert.id.as_str()).collect::<Vec<_>>(), ["a1", "a2"]);
    // Through JSON, as the server keeps it.
    let snap: Vec<ManagedAlert> = serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();

    let mut back = AlertManager::new(ManagerConfig::default(), Metrics::default());
    back.restore(snap.clone());
    assert_eq!(back.snapshot(), snap);
    assert_eq!(back.open().len(), 1);
    assert_eq!(back.acked()[0].ack.as_ref().unwrap().by, "admin");
    // The open alert absorbs a follow-up without a new notification inside the suppression window...
    assert!(back.ingest(alert("a3", "bf:ip:1", &["e3"], 200, Severity::High), t(200)).is_none());
    assert_eq!(back.get("a1").unwrap().alert.count, 2);
    // ...and notifies again once the window has passed since its last_seen.
    assert!(back.ingest(alert("a4", "bf:ip:1", &["e4"], 3800, Severity::High), t(3800)).is_some());
}
