#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The audit service end to end on SQLite: ingest over HTTP, deduplication, atomic batches,
//! queries, the signed log verifying with the key derived from the master key, detectors raising
//! alerts that reach a webhook and the dashboard's data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_audit::{AuditService, AuditServiceConfig, MonitorFile, Query};
use palisade_core::audit::{AuditEvent, AuditRecord, Decision, Stage};
use palisade_crypto::MasterKey;
use palisade_store::Store;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "ingest-token-0123456789abcdef";

fn sha(t: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
    d.as_ref().try_into().unwrap()
}

fn event(principal: &str, ip: &str, decision: Decision, stage: Stage, status: u16) -> AuditEvent {
    AuditEvent {
        time: palisade_core::audit::now_rfc3339(),
        source: "gateway".into(),
        service: None,
        request_id: "r".into(),
        decision,
        stage,
        reason: "test".into(),
        principal: principal.into(),
        client_id: None,
        auth_method: None,
        route: "orders".into(),
        method: "GET".into(),
        path: "/orders".into(),
        client_ip: ip.into(),
        policy_ids: vec![],
        status,
        latency_ms: 1.0,
        waf: Vec::new(),
    }
}

fn ndjson(records: &[AuditRecord]) -> String {
    records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    master: MasterKey,
    svc: AuditService,
    log_dir: std::path::PathBuf,
}

async fn env(file: MonitorFile) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&palisade_store::sqlite_url(dir.path())).await.unwrap();
    let master = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
    let log_dir = dir.path().join("audit/log");
    let svc = AuditService::open(
        &store,
        &master,
        AuditServiceConfig { dir: log_dir.clone(), file, token_sha256: vec![sha(TOKEN)] },
    )
    .await
    .unwrap();
    Env { _dir: dir, store, master, svc, log_dir }
}

async fn post(svc: &AuditService, body: String, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::post("/audit/v1/events").header("content-type", "application/x-ndjson");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = svc.router().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn ingest_dedups_is_atomic_queries_and_the_log_verifies() {
    let e = env(MonitorFile::default()).await;
    let records: Vec<AuditRecord> = (1..=20)
        .map(|i| AuditRecord {
            id: format!("inst-{i}"),
            event: event(
                if i % 2 == 0 { "User::\"alice\"" } else { "User::\"bob\"" },
                "10.0.0.1",
                if i % 4 == 0 { Decision::Deny } else { Decision::Allow },
                Stage::Authz,
                if i % 4 == 0 { 403 } else { 200 },
            ),
        })
        .collect();

    let (s, v) = post(&e.svc, ndjson(&records), None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    let (s, _) = post(&e.svc, ndjson(&records), Some("wrong-token-0123456789")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, v) = post(&e.svc, ndjson(&records[..15]), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, serde_json::json!({"accepted": 15, "duplicates": 0}));
    // A re-sent batch overlapping the first: only the new five are taken.
    let (s, v) = post(&e.svc, ndjson(&records[10..]), Some(TOKEN)).await;
    assert_eq!((s, v), (StatusCode::OK, serde_json::json!({"accepted": 5, "duplicates": 5})));

    // One bad line rejects the whole batch, naming the line; nothing of it is kept.
    let mut bad = ndjson(&[AuditRecord { id: "inst-21".into(), event: records[0].event.clone() }]);
    bad.push_str("{\"id\": \"inst-22\"}\n");
    let (s, v) = post(&e.svc, bad, Some(TOKEN)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error_description"].as_str().unwrap().starts_with("line 2: missing field"), "{v}");

    let all = e.svc.query(&Query { limit: 100, ..Query::default() }).await.unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(all.iter().filter(|v| v["id"] == "inst-21").count(), 0);
    let denies = e
        .svc
        .query(&Query {
            principal: Some("alice".into()),
            decision: Some("deny".into()),
            limit: 100,
            ..Query::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<&str> = denies.iter().map(|v| v["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["inst-12", "inst-16", "inst-20", "inst-4", "inst-8"]);

    // The query API over HTTP, with the same filters.
    let req = Request::get("/audit/v1/events?since=1h&principal=bob&limit=3")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = e.svc.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 3);
    assert!(v["events"].as_array().unwrap().iter().all(|x| x["principal"] == "User::\"bob\""));
    let req = Request::get("/audit/v1/events?since=yesterdayish")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(e.svc.router().oneshot(req).await.unwrap().status(), StatusCode::BAD_REQUEST);

    // The log holds exactly the 20 records and verifies with the key the master key yields.
    e.svc.close().await;
    let key = palisade_audit::log_public_key(e.store.pool(), &e.master).await.unwrap();
    let report = palisade_auditlog::verify(&e.log_dir, &key).unwrap();
    assert_eq!((report.records, report.first_seq, report.last_seq), (20, Some(1), 20));
}

#[tokio::test]
async fn the_index_catches_up_with_the_log_after_a_crash_between_the_two_writes() {
    let e = env(MonitorFile::default()).await;
    let records: Vec<AuditRecord> = (1..=5)
        .map(|i| AuditRecord {
            id: format!("c-{i}"),
            event: event("User::\"alice\"", "10.0.0.9", Decision::Allow, Stage::Proxy, 200),
        })
        .collect();
    assert_eq!(e.svc.ingest(records).await.unwrap(), (5, 0));
    e.svc.close().await;
    // Lose the index rows (as if the process died after the log append).
    palisade_store::sqlx::query("DELETE FROM audit_events WHERE id IN ('c-4', 'c-5')")
        .execute(e.store.pool())
        .await
        .unwrap();
    let svc = AuditService::open(
        &e.store,
        &e.master,
        AuditServiceConfig { dir: e.log_dir.clone(), file: MonitorFile::default(), token_sha256: vec![] },
    )
    .await
    .unwrap();
    let all = svc.query(&Query { limit: 100, ..Query::default() }).await.unwrap();
    assert_eq!(all.len(), 5);
    // The re-sent tail is a duplicate, not a second copy in the log.
    let again = vec![AuditRecord {
        id: "c-5".into(),
        event: event("User::\"alice\"", "10.0.0.9", Decision::Allow, Stage::Proxy, 200),
    }];
    assert_eq!(svc.ingest(again).await.unwrap(), (0, 1));
    svc.close().await;
    let key = palisade_audit::log_public_key(e.store.pool(), &e.master).await.unwrap();
    assert_eq!(palisade_auditlog::verify(&e.log_dir, &key).unwrap().records, 5);
}

#[tokio::test]
async fn a_brute_force_raises_one_alert_on_the_webhook_and_in_the_dashboard() {
    // A webhook receiver.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let file = MonitorFile::parse(
        &format!("webhooks:\n  targets: [{{ url: \"http://{addr}/hook\" }}]\n  base_delay: 10ms\ndetectors:\n  brute_force: {{ per_ip: 5, per_principal: 100 }}\n"),
        std::path::Path::new("monitor.yaml"),
    )
    .unwrap();
    let e = env(file).await;
    let data = e.svc.dashboard_data();
    let mut live = data.subscribe();
    let records: Vec<AuditRecord> = (1..=7)
        .map(|i| AuditRecord {
            id: format!("bf-{i}"),
            event: event("Anonymous", "203.0.113.7", Decision::Deny, Stage::Authn, 401),
        })
        .collect();
    let (s, _) = post(&e.svc, ndjson(&records), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);

    let alerts = data.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["kind"], "brute_force");
    assert_eq!(a["count"], 7);
    let ids: Vec<&str> = a["event_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ids, ["bf-1", "bf-2", "bf-3", "bf-4", "bf-5", "bf-6", "bf-7"]);
    assert_eq!(a["acked_by"], Value::Null);

    // The live stream saw the seven events, then the alert.
    let mut kinds = Vec::new();
    while let Ok(item) = live.try_recv() {
        kinds.push(match item {
            palisade_dashboard::LiveItem::Event(_) => "event",
            palisade_dashboard::LiveItem::Alert(_) => "alert",
        });
    }
    assert_eq!(kinds.iter().filter(|k| **k == "event").count(), 7);
    assert_eq!(kinds.last(), Some(&"alert"));

    // Exactly one webhook call (the follow-ups are merged and suppressed).
    for _ in 0..100 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = got.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["kind"], "brute_force");

    // The alert is counted in the Prometheus metrics.
    let mut registry = prometheus_client::registry::Registry::with_prefix("palisade");
    e.svc.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("palisade_monitor_alerts_total{kind=\"brute_force\",severity=\"high\"} 1"), "{text}");

    let id = a["id"].as_str().unwrap().to_owned();
    assert!(data.ack(&id, "admin").await.unwrap());
    assert!(!data.ack("no-such-alert", "admin").await.unwrap());
    assert_eq!(data.alerts().await[0]["acked_by"], "admin");
    // The alert and its acknowledgement survive a restart of the service.
    e.svc.close().await;
    let svc = AuditService::open(
        &e.store,
        &e.master,
        AuditServiceConfig { dir: e.log_dir.clone(), file: MonitorFile::default(), token_sha256: vec![] },
    )
    .await
    .unwrap();
    let kept = svc.dashboard_data().alerts().await;
    assert_eq!(
        (kept.len(), kept[0]["id"].as_str(), kept[0]["acked_by"].as_str()),
        (1, Some(id.as_str()), Some("admin"))
    );
    assert_eq!(data.top_denied(5).await, vec![("Anonymous".to_owned(), 7)]);
    let g = data.graph().await;
    assert_eq!(g.edges.len(), 1);
    assert_eq!(
        (g.edges[0].from.as_str(), g.edges[0].to.as_str(), g.edges[0].requests, g.edges[0].denies),
        ("clients", "gateway", 7, 7)
    );
}
