//! Two sidecars in one process: A takes plain HTTP on a local listener and calls B over mesh
//! mTLS; B's mesh listener authenticates A by its SVID and Cedar decides. Real sockets, real
//! handshakes, rcgen-made SVIDs in `SvidCell`s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::{SpiffeId, SvidCell, SvidSource};
use palisade_proxy::{Gateway, Metrics, StartError};
use support::pki::Ca;

const A: &str = "spiffe://td/ns/shop/sa/a";
const B: &str = "spiffe://td/ns/shop/sa/b";
const C: &str = "spiffe://td/ns/shop/sa/c";

const MESH: &str = r#"
mesh:
  server: http://127.0.0.1:1
  trust_domain: td
  join_token: "file:join-token"
workers: 1
admin: { address: "127.0.0.1:0" }
access_log: { enabled: false }
"#;

/// A new empty directory for a gateway's files, removed when dropped (keep it as long as the
/// gateway runs).
fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("palisade-mesh-test-").tempdir().unwrap()
}

/// A backend answering `<path> <principal header>`.
async fn backend() -> SocketAddr {
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let principal =
            req.headers().get("x-palisade-principal").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        format!("{} {principal}", req.uri().path())
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

async fn start(dir: &std::path::Path, yaml: &str, source: Option<Arc<SvidCell>>) -> Result<Gateway, StartError> {
    let loaded = palisade_core::parse_str("gw.yaml", yaml, dir).unwrap_or_else(|e| panic!("{e}"));
    Gateway::start_with(&loaded, Arc::new(Metrics::new()), source.map(|s| s as Arc<dyn SvidSource>)).await
}

/// Sidecar B: the mesh listener reaches `inbound` (mTLS + Cedar); `open` has no `listeners`, so
/// it is served on B's local listener only.
async fn sidecar_b(cell: Arc<SvidCell>) -> (Gateway, TempDir) {
    let app = backend().await;
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("mesh.cedar"),
        format!(
            "@id(\"a-may-get\")\npermit (principal == Service::\"{A}\", action == Action::\"GET\", resource == Route::\"inbound\");\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("app-endpoint"), app.to_string()).unwrap();
    (start(dir.path(), &b_yaml(&app.to_string()), Some(cell)).await.unwrap(), dir)
}

fn b_yaml(app: &str) -> String {
    format!(
        r#"{MESH}
listeners:
  mesh: {{ address: "127.0.0.1:0" }}
  local: [{{ name: plain, address: "127.0.0.1:0" }}]
audit: {{ file: audit.jsonl }}
authorization: {{ policies: [mesh.cedar] }}
upstreams:
  app: {{ endpoints: ["{app}"] }}
routes:
  - name: open
    match: {{ path: {{ prefix: /open }} }}
    upstream: app
  - name: inbound
    match: {{ listeners: [mesh] }}
    upstream: app
    authn: {{ methods: [mtls] }}
    authz: {{}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_mesh_and_applies_new_policies() {
    let ca = Ca::new("td ca");
    let (b_cell, c_cell) = (Arc::new(SvidCell::new(ca.svid(B))), Arc::new(SvidCell::new(ca.svid(C))));
    let (b, dir) = sidecar_b(b_cell).await;
    let (c, _c_dir) = sidecar_a(c_cell, b.mesh_addr.unwrap(), B, true).await;
    assert_eq!(send("GET", local(&c, "to-b"), "/x").await.0, 403);
    std::fs::write(
        dir.path().join("mesh.cedar"),
        format!("permit (principal == Service::\"{C}\", action, resource == Route::\"inbound\");\n"),
    )
    .unwrap();
    let app = std::fs::read_to_string(dir.path().join("app-endpoint")).unwrap();
    let loaded = palisade_core::parse_str("gw.yaml", &b_yaml(&app), dir.path()).unwrap();
    b.reload(&loaded).unwrap();
    assert_eq!(send("GET", local(&c, "to-b"), "/x").await, (200, format!("/x Service::\"{C}\"")));
    // A config that needs the mesh cannot be loaded into a gateway started without a source.
    let plain_dir = temp_dir();
    let plain = start(
        plain_dir.path(),
        "listeners: { local: [{ name: l, address: \"127.0.0.1:0\" }] }\nadmin: { address: \"127.0.0.1:0\" }\n",
        None,
    )
    .await
    .unwrap();
    let e = plain.reload(&loaded).unwrap_err().to_string();
    assert!(e.contains("listeners.mesh: the gateway was started without the mesh SVID source"), "{e}");
}

/// A client sidecar: local listener `to-b` → mesh upstream at `b` that must be `identity`.
async fn sidecar_a(cell: Arc<SvidCell>, b: SocketAddr, identity: &str, pooled: bool) -> (Gateway, TempDir) {
    let idle = if pooled { 16 } else { 0 };
    let yaml = format!(
        r#"{MESH}
listeners:
  local: [{{ name: to-b, address: "127.0.0.1:0" }}]
upstreams:
  b:
    endpoints: ["{b}"]
    mesh: true
    identity: "{identity}"
    max_idle_per_endpoint: {idle}
    passive_ejection: {{ consecutive_failures: 0 }}
routes:
  - name: to-b
    match: {{ listeners: [to-b] }}
    upstream: b
"#
    );
    let dir = temp_dir();
    (start(dir.path(), &yaml, Some(cell)).await.unwrap(), dir)
}

fn local(gw: &Gateway, name: &str) -> SocketAddr {
    gw.local_addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a).unwrap()
}

async fn send(method: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::builder().method(method).uri(format!("http://{addr}{path}")).body(Empty::new()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn audit_events(dir: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
        let ev: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if ev.len() >= n || Instant::now() > deadline {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_b_over_mesh_mtls_and_cedar_decides() {
    let ca = Ca::new("td ca");
    let (a_cell, b_cell, c_cell) =
        (Arc::new(SvidCell::new(ca.svid(A))), Arc::new(SvidCell::new(ca.svid(B))), Arc::new(SvidCell::new(ca.svid(C))));
    let (b, b_dir) = sidecar_b(b_cell).await;
    let b_mesh = b.mesh_addr.unwrap();
    let (a, _a_dir) = sidecar_a(a_cell, b_mesh, B, true).await;

    // A → B: authenticated as A's SPIFFE ID, permitted by the policy.
    let r = send("GET", local(&a, "to-b"), "/orders/1").await;
    assert_eq!(r, (200, format!("/orders/1 Service::\"{A}\"")));
    // The policy permits GET only.
    assert_eq!(send("POST", local(&a, "to-b"), "/orders").await.0, 403);

    // C has a valid SVID of the trust domain, but no policy permits it.
    let (c, _c_dir) = sidecar_a(c_cell, b_mesh, B, true).await;
    assert_eq!(send("GET", local(&c, "to-b"), "/orders/1").await.0, 403);

    // An upstream that is not the expected identity: the handshake is refused, 502.
    let (wrong, _wrong_dir) = sidecar_a(Arc::new(SvidCell::new(ca.svid(A))), b_mesh, C, true).await;
    assert_eq!(send("GET", local(&wrong, "to-b"), "/orders/1").await.0, 502);

    // Routes without `listeners` are not reachable from the mesh, only from B's other listeners.
    let r = send("GET", local(&a, "to-b"), "/open").await;
    assert_eq!(r, (200, format!("/open Service::\"{A}\"")), "on the mesh, /open goes to inbound");
    assert_eq!(send("GET", local(&b, "plain"), "/open").await, (200, "/open ".to_string()));
    assert_eq!(send("GET", local(&b, "plain"), "/orders/1").await.0, 404, "inbound is mesh-only");

    let ev = audit_events(b_dir.path(), 4).await;
    assert_eq!(ev.len(), 4, "{ev:?}");
    assert_eq!(
        (ev[0]["principal"].as_str(), ev[0]["status"].as_u64()),
        (Some(&*format!("Service::\"{A}\"")), Some(200))
    );
    assert_eq!(ev[0]["policy_ids"], serde_json::json!(["a-may-get"]));
    assert_eq!(ev[0]["auth_method"], "mtls");
    assert_eq!((ev[1]["stage"].as_str(), ev[1]["status"].as_u64()), (Some("authz"), Some(403)));
    assert_eq!(
        (ev[2]["principal"].as_str(), ev[2]["status"].as_u64()),
        (Some(&*format!("Service::\"{C}\"")), Some(403))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_listener_refuses_clients_without_an_svid() {
    let ca = Ca::new("td ca");
    let (b, _dir) = sidecar_b(Arc::new(SvidCell::new(ca.svid(B)))).await;
    let addr = b.mesh_addr.unwrap();
    // A TLS client that trusts B but has no certificate to present.
    let mut no_cert = ca.svid(A);
    no_cert.chain.clear();
    let cfg = palisade_proxy::mesh::client_config(Arc::new(SvidCell::new(no_cert)), SpiffeId::parse(B).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("b").unwrap();
    let outcome = async {
        let mut tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut tls, b"GET / HTTP/1.1\r\nhost: b\r\n\r\n").await?;
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let err = tokio::time::timeout(Duration::from_secs(10), outcome).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    // Plain HTTP on the mesh port gets no HTTP answer either.
    let r = Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>()
        .get(format!("http://{addr}/orders").parse().unwrap())
        .await;
    assert!(r.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_config_without_a_source_does_not_start() {
    let yaml = format!("{MESH}\nlisteners:\n  mesh: {{ address: \"127.0.0.1:0\" }}\n");
    let e = start(temp_dir().path(), &yaml, None).await.err().unwrap();
    assert!(matches!(e, StartError::NoSvidSource), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_rotating_every_500ms_cause_no_failures() {
    let ca = Ca::new("td ca");
    let (a_cell, b_cell) = (Arc::new(SvidCell::new(ca.svid(A))), Arc::new(SvidCell::new(ca.svid(B))));
    let (b, _dir) = sidecar_b(b_cell.clone()).await;
    // No upstream keep-alive: every request is a new mTLS handshake.
    let (a, _a_dir) = sidecar_a(a_cell.clone(), b.mesh_addr.unwrap(), B, false).await;
    let to_b = local(&a, "to-b");
    let rotations = tokio::spawn(async move {
        let mut n = 0;
        let mut served = Vec::new();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            a_cell.set(ca.svid(A));
            b_cell.set(ca.svid(B));
            served.push(b_cell.current().chain[0].clone());
            n += 1;
        }
        (n, served)
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut ok, mut failed) = (0, Vec::new());
    while Instant::now() < deadline {
        let r = send("GET", to_b, "/r").await;
        if r == (200, format!("/r Service::\"{A}\"")) {
            ok += 1;
        } else {
            failed.push(r);
        }
    }
    let (n, served) = rotations.await.unwrap();
    assert_eq!(n, 6);
    assert_eq!(served.iter().collect::<std::collections::HashSet<_>>().len(), 6, "six distinct SVIDs");
    assert!(failed.is_empty(), "{} failures: {:?}", failed.len(), &failed[..failed.len().min(3)]);
    assert!(ok >= 30, "only {ok} requests in 3 s");
}
