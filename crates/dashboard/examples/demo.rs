//! A stand-alone dashboard with made-up data, for looking at the UI and for browser tests:
//! `cargo run -p palisade-dashboard --example demo -- 127.0.0.1:9480` then open
//! `http://127.0.0.1:9480/ui/login` and sign in with the admin token `demo-admin-token`.
//! An audit event is broadcast every 700 ms; every tenth denied event raises an alert.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a demo program, not library code

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use palisade_dashboard::{
    CertInfo, DashboardConfig, DashboardData, DataError, Edge, EventQuery, Graph, LiveItem, Node, NodeKind, PolicyInfo,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;

struct Demo {
    tx: broadcast::Sender<LiveItem>,
    events: Mutex<Vec<Value>>,
    alerts: Mutex<Vec<Value>>,
    requests: AtomicU64,
    denies: AtomicU64,
}

fn node(id: &str, kind: NodeKind) -> Node {
    Node { id: id.into(), label: id.into(), kind }
}

#[async_trait]
impl DashboardData for Demo {
    async fn graph(&self) -> Graph {
        let r = self.requests.load(Ordering::Relaxed);
        let d = self.denies.load(Ordering::Relaxed);
        Graph {
            nodes: vec![
                node("internet", NodeKind::External),
                node("gateway", NodeKind::Gateway),
                node("web", NodeKind::Service),
                node("payments", NodeKind::Service),
                node("ledger", NodeKind::Service),
                node("legacy-reports", NodeKind::Service),
            ],
            edges: vec![
                Edge { from: "internet".into(), to: "gateway".into(), requests: r, denies: d, mtls: false },
                Edge { from: "gateway".into(), to: "web".into(), requests: r - d, denies: 0, mtls: true },
                Edge { from: "web".into(), to: "payments".into(), requests: r / 3, denies: d / 4, mtls: true },
                Edge { from: "payments".into(), to: "ledger".into(), requests: r / 4, denies: 0, mtls: true },
                Edge { from: "web".into(), to: "legacy-reports".into(), requests: r / 9, denies: 1, mtls: false },
            ],
        }
    }
    async fn events(&self, q: EventQuery) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .rev()
            .filter(|e| q.decision.as_deref().is_none_or(|d| e["decision"] == d))
            .filter(|e| q.principal.as_deref().is_none_or(|p| e["principal"] == p))
            .filter(|e| q.source.as_deref().is_none_or(|s| e["source"] == s))
            .take(q.limit)
            .cloned()
            .collect()
    }
    fn subscribe(&self) -> broadcast::Receiver<LiveItem> {
        self.tx.subscribe()
    }
    async fn alerts(&self) -> Vec<Value> {
        self.alerts.lock().unwrap().clone()
    }
    async fn ack(&self, id: &str, by: &str) -> Result<bool, DataError> {
        let mut alerts = self.alerts.lock().unwrap();
        let Some(a) = alerts.iter_mut().find(|a| a["id"] == id) else { return Ok(false) };
        a["acked_by"] = json!(by);
        a["acked_at"] = json!(now_ms());
        let _ = self.tx.send(LiveItem::Alert(a.clone()));
        Ok(true)
    }
    async fn certs(&self) -> Vec<CertInfo> {
        let cert = |name: &str, kind: &str, days: i64| CertInfo {
            name: name.into(),
            kind: kind.into(),
            subject: format!("CN={name}"),
            not_after: "2026-01-01T00:00:00Z".into(),
            seconds_left: days * 86_400 + 3600,
        };
        vec![
            cert("workload-ca", "ca", 3600),
            cert("spiffe://demo/ns/prod/sa/payments", "svid", 20),
            cert("gateway-listener", "server", 5),
            cert("legacy-client", "client", -2),
        ]
    }
    async fn policies(&self) -> Vec<PolicyInfo> {
        vec![
            PolicyInfo {
                id: "payments-read".into(),
                source: "policies/mesh.cedar".into(),
                text:
                    "permit(principal == Service::\"web\", action == Action::\"GET\", resource in Route::\"payments\");"
                        .into(),
            },
            PolicyInfo {
                id: "deny-legacy".into(),
                source: "policies/mesh.cedar".into(),
                text: "forbid(principal, action, resource) when { resource.legacy };".into(),
            },
        ]
    }
    async fn top_denied(&self, limit: usize) -> Vec<(String, u64)> {
        let mut counts = std::collections::HashMap::<String, u64>::new();
        for e in self.events.lock().unwrap().iter().filter(|e| e["decision"] == "deny") {
            *counts.entry(e["principal"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        v
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn generate(demo: Arc<Demo>) {
    let principals = ["alice", "bob", "svc-web", "mallory", "eve"];
    let paths = ["/api/payments", "/api/ledger/42", "/login", "/admin", "/api/reports"];
    for i in 0u64.. {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let deny = i % 3 == 0;
        let principal = principals[(i as usize * 7) % principals.len()];
        let ev = json!({
            "id": format!("e{i}"), "time": now_ms(), "source": if i % 2 == 0 { "gateway" } else { "sidecar" },
            "service": "payments", "principal": principal, "decision": if deny { "deny" } else { "allow" },
            "stage": "authorize", "reason": if deny { "policy forbids" } else { "" }, "route": "payments",
            "method": "GET", "path": paths[i as usize % paths.len()], "client_ip": "203.0.113.7",
            "status": if deny { 403 } else { 200 },
        });
        demo.requests.fetch_add(1, Ordering::Relaxed);
        if deny {
            demo.denies.fetch_add(1, Ordering::Relaxed);
        }
        demo.events.lock().unwrap().push(ev.clone());
        let _ = demo.tx.send(LiveItem::Event(ev));
        if deny && i % 10 == 0 {
            let a = json!({
                "id": format!("a{i}"), "kind": if i % 20 == 0 { "brute_force" } else { "deny_spike" },
                "severity": if i % 20 == 0 { "high" } else { "medium" },
                "summary": format!("{principal}: repeated denied requests"), "count": 5 + i / 10,
                "first_seen": now_ms() - 60_000, "last_seen": now_ms(), "event_ids": [format!("e{i}")],
                "acked_by": null, "acked_at": null,
            });
            demo.alerts.lock().unwrap().push(a.clone());
            let _ = demo.tx.send(LiveItem::Alert(a));
        }
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9480".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let public = format!("http://{}", listener.local_addr().unwrap());
    let mut cfg = DashboardConfig::new("http://127.0.0.1:9400", "palisade-ui", &public);
    let digest = ring::digest::digest(&ring::digest::SHA256, b"demo-admin-token");
    cfg.admin_token_sha256 = Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect());
    let demo = Arc::new(Demo {
        tx: broadcast::channel(256).0,
        events: Mutex::default(),
        alerts: Mutex::default(),
        requests: AtomicU64::new(0),
        denies: AtomicU64::new(0),
    });
    tokio::spawn(generate(demo.clone()));
    println!("dashboard demo on {public}/ui/login (admin token: demo-admin-token)");
    axum::serve(listener, palisade_dashboard::router(cfg, demo)).await.expect("serve");
}
