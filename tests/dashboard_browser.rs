//! Browser end-to-end test of the dashboard: a real `palisade up` with a webhook, demo traffic
//! through the gateway and the mesh, then Playwright (playwright-core driving the system chromium,
//! tests/browser/dashboard.mjs) signs in through our IdP, checks the graph and the live events,
//! runs a brute force with the page open and acknowledges the alert it raises. The webhook must
//! receive exactly that alert, and the audit log must verify after `up` stops.
//!
//! Needs node, `PALISADE_TEST_NODE_DIR` (tests/interop with playwright-core installed) and
//! `PALISADE_TEST_CHROMIUM` (scripts/test-env.sh sets both). Without them the test passes with a
//! message, unless `PALISADE_REQUIRE_BROWSER` is set (test-env.sh sets it), when it fails.
//!
//! `palisade up` binds fixed ports, like `up_serves_demo_services` in tests/cli.rs: the nextest
//! test group `fixed-ports` (.config/nextest.toml) runs the two one at a time, and `cargo test`
//! runs test binaries one after the other anyway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)] // tests fail loudly by design

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/browser/dashboard.mjs");
const ISSUER: &str = "http://127.0.0.1:9400";
const GATEWAY: &str = "http://127.0.0.1:8080";

/// What the browser run needs, or why it is not there.
struct BrowserEnv {
    chromium: String,
    node_dir: String,
}

fn browser_env() -> Result<BrowserEnv, String> {
    let chromium = std::env::var("PALISADE_TEST_CHROMIUM").map_err(|_| "PALISADE_TEST_CHROMIUM is not set")?;
    if !Path::new(&chromium).is_file() {
        return Err(format!("PALISADE_TEST_CHROMIUM={chromium} does not exist"));
    }
    let node_dir = std::env::var("PALISADE_TEST_NODE_DIR").map_err(|_| "PALISADE_TEST_NODE_DIR is not set")?;
    if !Path::new(&node_dir).join("node_modules/playwright-core/package.json").is_file() {
        return Err(format!("playwright-core is not installed in {node_dir}/node_modules"));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(BrowserEnv { chromium, node_dir }),
        _ => Err("node is not on PATH".to_owned()),
    }
}

/// A webhook target that records every POST body to `/hook` as JSON.
async fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let v = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| Value::String(format!("not JSON ({e}): {}", String::from_utf8_lossy(&body))));
                seen.lock().unwrap().push(v);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, got)
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn credential(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} missing from the credentials file"))
        .trim()
        .trim_matches(['"', '\''])
        .to_owned()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    assert!(bytes.len() > 10_000, "{} is suspiciously small: {} bytes", path.display(), bytes.len());
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_graph_events_and_a_live_brute_force_alert() {
    let env = match browser_env() {
        Ok(env) => env,
        Err(why) if std::env::var_os("PALISADE_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty()) => {
            panic!("PALISADE_REQUIRE_BROWSER is set but the browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED dashboard browser test: {why} (source scripts/test-env.sh to run it)");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("up.log");
    let (hook_port, hooks) = webhook_receiver().await;

    let mut up = tokio::process::Command::new(BIN)
        .args(["up", "--data-dir", data.to_str().unwrap(), "--webhook", &format!("http://127.0.0.1:{hook_port}/hook")])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(up.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            banner.push_str(&l);
            banner.push('\n');
            if l.contains("Press Ctrl-C to stop.") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(started, Ok(true)), "no banner from palisade up: {banner}\n{}", log_tail(&log));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert!(banner.contains(&format!("dashboard {ISSUER}/ui")), "{banner}");

    // Demo traffic: a token, then orders (which charges payments through the mesh) and the
    // gateway -> payments call the payments sidecar refuses.
    let creds = std::fs::read_to_string(data.join("demo-credentials.txt")).unwrap();
    let basic = format!("{}:{}", credential(&creds, "CLIENT_ID"), credential(&creds, "CLIENT_SECRET"));
    let r = curl(&["-u", &basic, "-d", "grant_type=client_credentials"], &format!("{ISSUER}/oauth2/token")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let bearer = format!("Authorization: Bearer {}", r.json()["access_token"].as_str().unwrap());
    let r = curl(&["-H", &bearer], &format!("{GATEWAY}/orders")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["orders"][0]["id"], "ord_1001");
    for item in ["mouse", "keyboard"] {
        let body = format!("{{\"item\":\"{item}\"}}");
        let r = curl(
            &["-X", "POST", "-H", &bearer, "-H", "content-type: application/json", "-d", &body],
            &format!("{GATEWAY}/orders"),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["payment"]["status"], "captured", "{}", r.body);
    }
    let r = curl(
        &["-X", "POST", "-H", "content-type: application/json", "-d", "{\"order\":\"ord_1001\",\"amount_cents\":4900}"],
        &format!("{GATEWAY}/payments/charge"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(hooks.lock().unwrap().is_empty(), "alerts before the brute force: {:?}", hooks.lock().unwrap());

    // The browser part.
    let target =
        Path::new(BIN).parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| dir.path().into());
    let shot: PathBuf = target.join("dashboard.png");
    let shot_graph: PathBuf = target.join("dashboard-graph.png");
    for p in [&shot, &shot_graph] {
        let _ = std::fs::remove_file(p);
    }
    let t0 = Instant::now();
    let run = tokio::process::Command::new("node")
        .arg(SCRIPT)
        .current_dir(&env.node_dir)
        .env("PALISADE_TEST_NODE_DIR", &env.node_dir)
        .env("PALISADE_TEST_CHROMIUM", &env.chromium)
        .env("DASHBOARD_BASE", ISSUER)
        .env("GATEWAY", GATEWAY)
        .env("ADMIN_USER", credential(&creds, "ADMIN_USER"))
        .env("ADMIN_PASSWORD", credential(&creds, "ADMIN_PASSWORD"))
        .env("SCREENSHOT", &shot)
        .env("SCREENSHOT_GRAPH", &shot_graph)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run).await.expect("the browser script timed out").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser script failed ({}):\n{stdout}\n{stderr}\n--- palisade up log\n{}",
        out.status,
        log_tail(&log)
    );
    eprintln!("browser script took {:?}:\n{stderr}", t0.elapsed());
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no summary ({e}): {stdout}"));
    assert_eq!(
        summary["nodes"],
        serde_json::json!(["clients", "demo/gateway", "demo/orders", "demo/payments"]),
        "{summary}"
    );
    // Outside callers reach the gateway without mTLS; every hop inside the mesh is mTLS.
    assert_eq!(
        summary["edges"],
        serde_json::json!([
            "clients -> demo/gateway",
            "demo/gateway -> demo/orders mTLS",
            "demo/gateway -> demo/payments mTLS",
            "demo/orders -> demo/payments mTLS"
        ]),
        "{summary}"
    );
    assert!(summary["live_denies"].as_u64().unwrap() >= 20, "{summary}");
    assert_eq!(summary["badge"], "1 open", "{summary}");
    assert_eq!(summary["alert"]["severity"], "high", "{summary}");
    let alert_id = summary["alert"]["id"].as_str().unwrap().to_owned();
    assert_png(&shot);
    assert_png(&shot_graph);

    // The webhook got the same alert, once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hooks.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // a second delivery would show up by now

    let pid = up.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(20), up.wait()).await.expect("up did not stop").unwrap();
    assert!(status.success(), "palisade up exited with {status}:\n{}", log_tail(&log));

    let got = hooks.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "webhook calls: {got:?}");
    let alert = &got[0];
    assert_eq!(alert["id"], alert_id.as_str(), "{alert}");
    assert_eq!(alert["kind"], "brute_force", "{alert}");
    assert_eq!(alert["severity"], "high", "{alert}");
    assert_eq!(alert["key"], "brute_force:ip:127.0.0.1", "{alert}");
    assert!(alert["count"].as_u64().unwrap() >= 20, "{alert}");
    let ids: Vec<&str> = alert["event_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!ids.is_empty() && ids.iter().all(|i| !i.is_empty()), "{alert}");

    // The events behind the alert are denies in the audit log, and the log verifies.
    let data_arg = data.to_str().unwrap();
    let (code, out) =
        cli(&["audit", "--data-dir", data_arg, "query", "--decision", "deny", "--since", "1h", "--limit", "1000"]);
    assert_eq!(code, 0, "{out}");
    let denies: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for id in &ids {
        let ev = denies.iter().find(|e| e["id"] == *id).unwrap_or_else(|| panic!("event {id} is not a stored deny"));
        assert_eq!(ev["stage"], "authn", "{ev}");
        assert_eq!(ev["client_ip"], "127.0.0.1", "{ev}");
    }
    let (code, out) = cli(&["audit", "--data-dir", data_arg, "verify"]);
    assert_eq!(code, 0, "audit verify: {out}");
}
