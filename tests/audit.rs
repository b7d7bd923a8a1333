//! Security monitoring end to end with real processes: a gateway ships its audit events to
//! `palisade server` through its spool; the server is killed and restarted, the gateway is killed
//! and restarted, and every event still arrives exactly once. Then `palisade audit verify` passes
//! on the untouched log and names the first bad record of an edited, deleted, inserted,
//! reordered or truncated copy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_port, get_raw, spawn_logged, Backend, Gw, BIN};
use serde_json::Value;

fn server(data: &Path, port: u16, log: &Path, extra: &[&str]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("PALISADE_DATABASE_URL")
        .env_remove("PALISADE_MASTER_KEY")
        .env_remove("PALISADE_ADMIN_TOKEN");
    spawn_logged(cmd, log)
}

async fn wait_listening(port: u16, child: &mut tokio::process::Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("server exited ({s}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if let Some((200, _)) = get_raw(port, "/ca/v1/bundle").await {
            return;
        }
        assert!(Instant::now() < deadline, "server not ready: {}", std::fs::read_to_string(log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server on a fixed free port (so a restart keeps its address) with its data under `tmp/data`:
/// (data dir, port, process, log file).
async fn started(tmp: &Path, extra: &[&str]) -> (PathBuf, u16, tokio::process::Child, PathBuf) {
    let (data, log, port) = (tmp.join("data"), tmp.join("server.log"), free_port());
    let mut srv = server(&data, port, &log, extra);
    wait_listening(port, &mut srv, &log).await;
    (data, port, srv, log)
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every indexed event id (queried with the CLI straight from the store).
fn stored_ids(data: &Path) -> Vec<String> {
    let (code, out, err) =
        cli(&["audit", "--data-dir", data.to_str().unwrap(), "query", "--since", "1h", "--limit", "10000"]);
    assert_eq!(code, 0, "{err}");
    out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned()).collect()
}

async fn wait_count(data: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = stored_ids(data);
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn send(gw: &Gw, n: usize) {
    for _ in 0..n {
        assert_eq!(get_raw(gw.http, "/items").await.map(|r| r.0), Some(401));
    }
}

const GATEWAY: &str = r#"
listeners: { http: { address: "127.0.0.1:{HTTP}" } }
admin: { address: "127.0.0.1:{ADMIN}" }
authentication: { jwt_issuers: [ { issuer: "http://127.0.0.1:SERVER", jwks_uri: "http://127.0.0.1:SERVER/oauth2/jwks" } ] }
audit: { ship: { server: "http://127.0.0.1:SERVER", token: "file:TOKEN", spool_dir: "SPOOL" } }
upstreams: { app: { endpoints: ["BACKEND"] } }
routes:
  - { name: app, match: { path: { prefix: / } }, upstream: app, authn: { methods: [jwt] } }
"#;

fn verify(dir: &Path, key: &str) -> (i32, String) {
    let (code, out, err) = cli(&["audit", "verify", dir.to_str().unwrap(), "--public-key", key]);
    (code, out + &err)
}

fn copy_log(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Line numbers (0-based) of the record lines of a segment.
fn record_lines(text: &str) -> Vec<usize> {
    text.lines().enumerate().filter(|(_, l)| l.contains("\"event\":")).map(|(i, _)| i).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_across_outages_and_the_log_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, port, mut srv, slog) = started(tmp.path(), &[]).await;
    let backend = Backend::start("app").await;
    let gateway = GATEWAY
        .replace("SERVER", &port.to_string())
        .replace("TOKEN", data.join("audit-ingest.token").to_str().unwrap())
        .replace("SPOOL", tmp.path().join("spool").to_str().unwrap())
        .replace("BACKEND", &backend.endpoint());

    // Server up: 30 rejected requests, 30 events.
    let mut gw = Gw::start(&gateway).await;
    send(&gw, 30).await;
    assert_eq!(wait_count(&data, 30).await.len(), 30);

    // Server killed: the gateway keeps answering; its events wait in the spool.
    srv.kill().await.unwrap();
    send(&gw, 40).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored_ids(&data).len(), 30);
    // The gateway is killed too, with events still unsent, and comes back on the same spool.
    gw.child.kill().await.unwrap();
    let gw = Gw::start(&gateway).await;
    send(&gw, 10).await;
    let mut srv = server(&data, port, &slog, &[]);
    wait_listening(port, &mut srv, &slog).await;
    let ids = wait_count(&data, 80).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids_after = stored_ids(&data);
    assert_eq!(ids_after.len(), 80, "every event once, none twice (got {})", ids.len());
    let mut unique = ids_after.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 80);
    // All 80 have the shipper's one instance id (the spool survived the gateway's restart).
    let instances: std::collections::BTreeSet<&str> = ids_after.iter().map(|i| i.rsplit_once('-').unwrap().0).collect();
    assert_eq!(instances.len(), 1, "{instances:?}");
    // The restarted gateway's shipper counters: it spooled its 10, sent the 40 left unsent by the
    // first process from the spool (and perhaps its own 10: they were durable before the server
    // came back), and the server acknowledged all 50.
    let m = gw.metrics().await;
    let value = |name: &str| -> u64 {
        let line = m.lines().find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name));
        line.and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}:\n{m}"))
    };
    assert_eq!(value("palisade_audit_shipper_spooled_events_total"), 10);
    assert_eq!(value("palisade_audit_shipper_acknowledged_events_total"), 50);
    assert_eq!(value("palisade_audit_shipper_pending_events"), 0);
    let from_spool = value("palisade_audit_shipper_read_from_spool_events_total");
    assert!((40..=50).contains(&from_spool), "{from_spool}");
    for reason in ["queue_full", "spool_full", "io_error"] {
        assert_eq!(value(&format!("palisade_audit_shipper_dropped_{reason}_events_total")), 0);
    }
    assert_eq!(value("palisade_audit_shipper_skipped_spool_lines_total"), 0);
    let deny = cli(&["audit", "--data-dir", data.to_str().unwrap(), "query", "--decision", "deny", "--limit", "5"]);
    assert_eq!(deny.1.lines().count(), 5);
    let first: Value = serde_json::from_str(deny.1.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["source"].as_str(), first["status"].as_u64(), first["stage"].as_str()),
        (Some("gateway"), Some(401), Some("authn"))
    );

    // The untouched log verifies, with the key derived from the master key and with the exported key.
    srv.kill().await.unwrap();
    let (code, out, err) = cli(&["audit", "--data-dir", data.to_str().unwrap(), "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: 80 records in 1 segments (seq 1..80)"), "{out}");
    let (code, key, _) = cli(&["audit", "--data-dir", data.to_str().unwrap(), "public-key"]);
    assert_eq!(code, 0);
    let key = key.trim().to_owned();
    let log = data.join("audit/log");
    assert_eq!(verify(&log, &key).0, 0);
    let wrong = "00".repeat(32);
    let (code, out) = verify(&log, &wrong);
    assert_eq!(code, 1, "{out}");

    // Each tampering on its own copy: exit 1 and the first bad record named.
    let seg = "000001.log";
    let text = std::fs::read_to_string(log.join(seg)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let recs = record_lines(&text);
    assert_eq!(recs.len(), 80);
    let (r3, r4, r5) = (recs[2], recs[3], recs[4]);
    let cases: Vec<(&str, String)> = vec![
        ("modified", {
            let mut l = lines.clone();
            let edited = l[r3].replace("\"status\":401", "\"status\":200");
            assert_ne!(edited, l[r3]);
            l[r3] = &*Box::leak(edited.into_boxed_str());
            l.join("\n") + "\n"
        }),
        ("deleted", {
            let mut l = lines.clone();
            l.remove(r4);
            l.join("\n") + "\n"
        }),
        ("inserted", {
            let mut l = lines.clone();
            l.insert(r5 + 1, lines[r3]);
            l.join("\n") + "\n"
        }),
        ("reordered", {
            let mut l = lines.clone();
            l.swap(r3, r4);
            l.join("\n") + "\n"
        }),
        ("truncated", text[..text.len() - 40].to_owned()),
    ];
    for (kind, content) in cases {
        let copy = tmp.path().join(format!("tampered-{kind}"));
        copy_log(&log, &copy);
        std::fs::write(copy.join(seg), content).unwrap();
        let (code, out) = verify(&copy, &key);
        assert_eq!(code, 1, "{kind}: {out}");
        assert!(out.starts_with(&format!("FAILED: {seg} line ")), "{kind}: {out}");
        assert!(out.contains(&format!(": {kind}: ")), "{kind}: {out}");
    }
    drop(gw);
}

/// The identity provider and the CA record their decisions in the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_and_ca_decisions_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, port, _srv, slog) = started(tmp.path(), &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..3 {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "nobody:wrong-secret"])
            .args(["-d", "grant_type=client_credentials", &format!("{base}/oauth2/token")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    }
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "content-type: application/json"])
        .args(["-d", r#"{"csr": "not a csr", "join_token": "bogus"}"#, &format!("{base}/ca/v1/svid")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");
    let query = |source: &str| {
        let (code, out, err) =
            cli(&["audit", "--data-dir", data.to_str().unwrap(), "query", "--source", source, "--limit", "100"]);
        assert_eq!(code, 0, "{err}");
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while (query("idp").len() < 3 || query("ca").is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idp = query("idp");
    assert_eq!(idp.len(), 3, "{idp:?}");
    assert!(idp.iter().all(|e| e["stage"] == "token" && e["decision"] == "deny" && e["status"] == 401), "{idp:?}");
    assert!(idp.iter().all(|e| e["principal"] == "Client::\"nobody\"" || e["principal"] == "Anonymous"), "{idp:?}");
    assert!(idp[0]["reason"].as_str().unwrap().starts_with("invalid_client"), "{idp:?}");
    let ca = query("ca");
    assert_eq!(ca.len(), 1, "{ca:?}");
    assert_eq!(
        (ca[0]["stage"].as_str(), ca[0]["decision"].as_str(), ca[0]["status"].as_u64()),
        (Some("ca"), Some("deny"), Some(400))
    );
    assert_eq!(ca[0]["client_ip"], "127.0.0.1");
    let text = std::fs::read_to_string(&slog).unwrap();
    assert!(!text.contains("wrong-secret"), "a secret reached the log");
}

/// The same pipeline over PostgreSQL: ingest over HTTP (a re-sent batch is counted as duplicates),
/// the query API and CLI read the PostgreSQL index, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_index_works_on_postgresql() {
    let db = common::idp::pg_database();
    let tmp = tempfile::tempdir().unwrap();
    let (data, port, mut srv, _) = started(tmp.path(), &["--database-url", &db]).await;
    let token = std::fs::read_to_string(data.join("audit-ingest.token")).unwrap().trim().to_owned();
    let batch: String = (1..=12)
        .map(|i| {
            let deny = i % 3 == 0;
            format!(
                "{{\"id\":\"pg-{i}\",\"time\":\"2026-11-26T04:00:{i:02}.000Z\",\"source\":\"sidecar\",\"service\":\"spiffe://palisade.local/ns/demo/sa/payments\",\"request_id\":\"r{i}\",\"decision\":\"{}\",\"stage\":\"authz\",\"reason\":\"mesh policy\",\"principal\":\"Service::\\\"spiffe://palisade.local/ns/demo/sa/orders\\\"\",\"route\":\"inbound\",\"method\":\"POST\",\"path\":\"/payments/charge\",\"client_ip\":\"10.0.0.2\",\"status\":{},\"latency_ms\":0.3}}\n",
                if deny { "deny" } else { "allow" },
                if deny { 403 } else { 200 }
            )
        })
        .collect();
    let post = |body: String| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-H", &format!("Authorization: Bearer {token}"), "-H", "content-type: application/x-ndjson"])
            .args(["--data-binary", &body, &format!("http://127.0.0.1:{port}/audit/v1/events")])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(post(batch.clone()), serde_json::json!({"accepted": 12, "duplicates": 0}));
    assert_eq!(post(batch), serde_json::json!({"accepted": 0, "duplicates": 12}));
    let out = std::process::Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{port}/audit/v1/events?decision=deny&since=2026-11-26T00:00:00Z"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["pg-12", "pg-9", "pg-6", "pg-3"]);
    let (code, out, err) = cli(&[
        "audit",
        "--data-dir",
        data.to_str().unwrap(),
        "--database-url",
        &db,
        "query",
        "--since",
        "2026-11-26T00:00:00Z",
        "--principal",
        "spiffe://palisade.local/ns/demo/sa/orders",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 12);
    srv.kill().await.unwrap();
    let (code, out, err) = cli(&["audit", "--data-dir", data.to_str().unwrap(), "--database-url", &db, "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: 12 records"), "{out}");
}
