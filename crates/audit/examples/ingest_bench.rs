#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! Ingest cost driver: 100,000 events through `AuditService::ingest` in batches of 500 on a
//! temporary SQLite store; prints the process CPU and wall time per event. For profiling
//! (`perf record -g`) a release build: `cargo run --release -p palisade-audit --example ingest_bench`.

use std::time::Instant;

use palisade_audit::{AuditService, AuditServiceConfig, MonitorFile};
use palisade_core::audit::{AuditEvent, AuditRecord, Decision, Stage};
use palisade_crypto::MasterKey;
use palisade_store::Store;

/// User + system CPU seconds of this process, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        time: palisade_core::audit::now_rfc3339(),
        source: "gateway".into(),
        service: None,
        request_id: format!("req-{i}"),
        decision: if i.is_multiple_of(10) { Decision::Deny } else { Decision::Allow },
        stage: Stage::Authz,
        reason: "policy".into(),
        principal: format!("User::\"user{}\"", i % 50),
        client_id: None,
        auth_method: Some("jwt".into()),
        route: "orders".into(),
        method: "GET".into(),
        path: "/orders/42".into(),
        client_ip: format!("10.0.{}.{}", (i / 250) % 4, i % 250),
        policy_ids: vec!["p1".into()],
        status: if i.is_multiple_of(10) { 403 } else { 200 },
        latency_ms: 1.5,
        waf: Vec::new(),
    }
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch: u64 = 500;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::sqlite_url(dir.path())).await.unwrap();
        let master = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let svc = AuditService::open(
            &store,
            &master,
            AuditServiceConfig {
                dir: dir.path().join("audit/log"),
                file: MonitorFile::default(),
                token_sha256: vec![],
            },
        )
        .await
        .unwrap();
        let batches: Vec<Vec<AuditRecord>> = (0..n / batch)
            .map(|b| {
                (0..batch)
                    .map(|k| {
                        let i = b * batch + k;
                        AuditRecord { id: format!("gw-0123456789abcdef-{i}"), event: event(i) }
                    })
                    .collect()
            })
            .collect();
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let mut accepted = 0;
        for b in batches {
            accepted += svc.ingest(b).await.unwrap().0;
        }
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        assert_eq!(accepted as u64, n / batch * batch);
        let per = 1e6 / accepted as f64;
        println!(
            "{accepted} events: {:.2} us CPU/event, {:.2} us wall/event ({:.0} events/s)",
            cpu * per,
            wall * per,
            accepted as f64 / wall
        );
        svc.close().await;
    });
}
