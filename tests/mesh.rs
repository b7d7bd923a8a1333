//! Kubernetes attestation end to end: `palisade server` trusts a cluster's service-account issuer
//! (a JWKS file), a sidecar attests with a projected token file signed by the test, gets
//! `spiffe://<td>/ns/<namespace>/sa/<serviceaccount>`, and a second sidecar (join token) reaches it
//! over mTLS only because it proves exactly that identity. The SVIDs live 3 s, so the requests after
//! a few seconds go over renewed SVIDs. A token for the wrong audience is refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{free_port, get_raw, spawn_logged, Backend, BIN};
use serde_json::{json, Value};

const TD: &str = "k8s.test";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A projected service-account token as the kubelet writes it (ES256).
fn sa_token(key: &rcgen::KeyPair, ns: &str, sa: &str, aud: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "iss": ISSUER, "aud": [aud], "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "iat": now, "nbf": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "7d0c6a9e"}, "pod": {"name": "p", "uid": "u"}},
    });
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("cluster-key".into());
    jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der())).unwrap()
}

fn spawn(dir: &Path, log: &str, args: &[&str]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args);
    spawn_logged(cmd, &dir.join(format!("{log}.log")))
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

async fn ready(dir: &Path, name: &str, admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_raw(admin, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "{name} not ready:\n{}", log(dir, name));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_attests_with_a_kubernetes_service_account_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = rcgen::KeyPair::generate().unwrap();
    let point = key.public_key_raw(); // 0x04 || X || Y
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "cluster-key",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    }]});
    std::fs::write(d.join("jwks.json"), jwks.to_string()).unwrap();
    let server = free_port();
    let mut children = vec![spawn(
        d,
        "server",
        &[
            "server",
            "--listen",
            &format!("127.0.0.1:{server}"),
            "--data-dir",
            d.join("data").to_str().unwrap(),
            "--trust-domain",
            TD,
            "--svid-ttl",
            "3s",
            "--bundle-refresh",
            "1s",
            "--k8s-jwks",
            d.join("jwks.json").to_str().unwrap(),
            "--k8s-issuer",
            ISSUER,
        ],
    )];
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_raw(server, "/ca/v1/bundle").await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "server not ready:\n{}", log(d, "server"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Sidecar A: the orders pod, attested by its service-account token.
    let app = Backend::start("orders").await;
    std::fs::write(d.join("orders.jwt"), sa_token(&key, "shop", "orders", "palisade")).unwrap();
    std::fs::write(
        d.join("mesh.yaml"),
        format!("trust_domain: {TD}\nallow:\n  - {{ from: shop/frontend, to: shop/orders, methods: [GET] }}\n"),
    )
    .unwrap();
    let (a_mesh, a_admin) = (free_port(), free_port());
    let a = format!(
        "mesh: {{ server: \"http://127.0.0.1:{server}\", trust_domain: {TD}, k8s_token_file: orders.jwt }}\n\
listeners: {{ mesh: {{ address: \"127.0.0.1:{a_mesh}\" }} }}\n\
admin: {{ address: \"127.0.0.1:{a_admin}\" }}\n\
authorization: {{ mesh_policy: mesh.yaml }}\n\
upstreams: {{ app: {{ endpoints: [\"{}\"] }} }}\n\
routes:\n  - {{ name: inbound, match: {{ listeners: [mesh] }}, upstream: app, authn: {{ methods: [mtls] }}, authz: {{}} }}\n",
        app.endpoint()
    );
    std::fs::write(d.join("a.yaml"), a).unwrap();
    children.push(spawn(d, "a", &["sidecar", "--config", d.join("a.yaml").to_str().unwrap()]));

    // Sidecar B: the frontend, with a join token; it accepts the upstream only as shop/orders.
    let out = std::process::Command::new(BIN)
        .args(["ca", "--data-dir", d.join("data").to_str().unwrap(), "--trust-domain", TD, "join-token"])
        .args(["--ns", "shop", "--service", "frontend"])
        .output()
        .unwrap();
    let token: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(d.join("frontend.token"), token["token"].as_str().unwrap()).unwrap();
    let (b_local, b_admin) = (free_port(), free_port());
    let b = format!(
        "mesh: {{ server: \"http://127.0.0.1:{server}\", trust_domain: {TD}, join_token: \"file:frontend.token\" }}\n\
listeners: {{ local: [{{ name: to-orders, address: \"127.0.0.1:{b_local}\" }}] }}\n\
admin: {{ address: \"127.0.0.1:{b_admin}\" }}\n\
upstreams: {{ orders: {{ endpoints: [\"127.0.0.1:{a_mesh}\"], mesh: true, identity: \"spiffe://{TD}/ns/shop/sa/orders\" }} }}\n\
routes:\n  - {{ name: to-orders, match: {{ listeners: [to-orders] }}, upstream: orders }}\n"
    );
    std::fs::write(d.join("b.yaml"), b).unwrap();
    children.push(spawn(d, "b", &["sidecar", "--config", d.join("b.yaml").to_str().unwrap()]));
    ready(d, "a", a_admin).await;
    ready(d, "b", b_admin).await;

    let a_log = log(d, "a");
    let issued: Value = a_log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "SVID issued")
        .unwrap_or_else(|| panic!("{a_log}"));
    assert_eq!(issued["spiffe_id"], format!("spiffe://{TD}/ns/shop/sa/orders"));

    // Requests over 7 s (more than two 3-second SVID lifetimes): every one reaches the app, whose
    // request shows the verified caller.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(7) {
        let (status, body) = get_raw(b_local, "/hello").await.unwrap();
        assert_eq!(status, 200, "request {n}: {body}\n{}", log(d, "a"));
        let echo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echo["headers"]["x-palisade-principal"][0],
            format!("Service::\"spiffe://{TD}/ns/shop/sa/frontend\"")
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 30, "{n}");
    let out = std::process::Command::new(BIN)
        .args(["ca", "--data-dir", d.join("data").to_str().unwrap(), "--trust-domain", TD, "status"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Two first SVIDs and at least two renewals each.
    assert!(status["authorities"][0]["svids_issued"].as_i64().unwrap() >= 6, "{status}");

    // A token for another audience is refused: the sidecar does not start.
    let bad_token = sa_token(&key, "shop", "orders", "someone-else");
    std::fs::write(d.join("bad.jwt"), &bad_token).unwrap();
    let bad = std::fs::read_to_string(d.join("a.yaml")).unwrap().replace("orders.jwt", "bad.jwt");
    std::fs::write(d.join("bad.yaml"), bad.replace(&a_mesh.to_string(), &free_port().to_string())).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["sidecar", "--config", d.join("bad.yaml").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("the CA refused this proxy's attestation"), "{text}");
    let signature = bad_token.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "the token was logged: {text}");
    drop(children);
}

/// The workload CA over PostgreSQL: the CA is made and sealed there, a join token from the CLI
/// attests exactly once, and `palisade ca status` counts the SVID issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_works_on_postgresql() {
    let db = common::idp::pg_database();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let port = free_port();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["server", "--listen", &format!("127.0.0.1:{port}"), "--trust-domain", "pg.test", "--data-dir"])
        .arg(&data)
        .args(["--database-url", &db])
        .env_remove("PALISADE_MASTER_KEY");
    let mut srv = spawn_logged(cmd, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_raw(port, "/ca/v1/bundle").await.map(|r| r.0) != Some(200) {
        assert!(srv.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = |args: &[&str]| -> Value {
        let out = std::process::Command::new(BIN)
            .args(["ca", "--data-dir", data.to_str().unwrap(), "--database-url", &db, "--trust-domain", "pg.test"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    let token = ca(&["join-token", "--ns", "shop", "--service", "orders"])["token"].as_str().unwrap().to_owned();
    let key = tmp.path().join("w.key");
    let csr = tmp.path().join("w.csr");
    let ok = std::process::Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=w"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let body = json!({ "csr": std::fs::read_to_string(&csr).unwrap(), "join_token": token }).to_string();
    let post = || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H", "content-type: application/json", "--data-binary", &body])
            .arg(format!("http://127.0.0.1:{port}/ca/v1/svid"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (json, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), serde_json::from_str::<Value>(json).unwrap_or(Value::Null))
    };
    let (code, v) = post();
    assert_eq!(code, "200", "{v}");
    assert_eq!(v["spiffe_id"], "spiffe://pg.test/ns/shop/sa/orders");
    let (code, v) = post();
    assert_eq!((code.as_str(), v["error"].as_str()), ("401", Some("invalid_token")), "a join token works once");
    let status = ca(&["status"]);
    assert_eq!(status["trust_domain"], "pg.test");
    let auths = status["authorities"].as_array().unwrap();
    assert_eq!(auths.len(), 1);
    assert_eq!((auths[0]["state"].as_str(), auths[0]["svids_issued"].as_i64()), (Some("active"), Some(1)));
    srv.kill().await.unwrap();
}
