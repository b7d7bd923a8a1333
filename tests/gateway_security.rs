//! Gateway security end to end: JWT bearer authentication against a JWKS discovered from a test
//! issuer (with the attack suite of RFC 8725's threats), tokens minted by Python PyJWT, Cedar
//! authorization from route shortcuts and policy files, API keys, mTLS client identities,
//! identity-header forwarding, and the audit file. The real `palisade` binary, real curl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly by design

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use serde_json::{json, Value};

use common::issuer::{self, EcKey};
use common::*;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token issuer: discovery document and JWKS over HTTP on loopback.
struct Issuer {
    url: String,
    key: EcKey,
}

impl Issuer {
    async fn start() -> Issuer {
        let key = EcKey::new("key-1");
        let url = issuer::serve_metadata(json!({"keys": [key.jwk()]})).await;
        Issuer { url, key }
    }

    fn claims(&self, scope: &str) -> Value {
        json!({"iss": self.url, "sub": "svc", "client_id": "svc", "aud": "api", "scope": scope,
               "iat": now(), "exp": now() + 300, "jti": format!("j{}", fastrand_u64())})
    }

    fn header(&self) -> Value {
        json!({"alg": "ES256", "typ": "at+jwt", "kid": self.key.kid})
    }

    fn token(&self, scope: &str) -> String {
        self.key.sign(&self.header(), &self.claims(scope))
    }
}

fn fastrand_u64() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

const PLAIN: &str =
    "listeners:\n  http: { address: \"127.0.0.1:{HTTP}\" }\nadmin: { address: \"127.0.0.1:{ADMIN}\" }\n";

fn jwt_config(iss: &Issuer, b: &Backend) -> String {
    format!(
        r#"{PLAIN}audit:
  file: audit.jsonl
authentication:
  jwt_issuers:
    - issuer: {url}
      audiences: [api]
      algorithms: [ES256]
      typ: [at+jwt]
      leeway: 5s
upstreams:
  app:
    endpoints: ["{ep}"]
routes:
  - name: api
    match: {{ path: {{ prefix: /api }} }}
    upstream: app
    authn: {{ methods: [jwt] }}
    authz:
      require:
        - {{ methods: [GET, HEAD], scopes: [api:read] }}
        - {{ methods: [POST], scopes: [api:write] }}
  - name: open
    match: {{ path: {{ prefix: / }} }}
    upstream: app
"#,
        url = iss.url,
        ep = b.endpoint()
    )
}

fn audit_events(gw: &Gw) -> Vec<Value> {
    std::fs::read_to_string(gw.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Audit events are written by a background thread: wait until `n` are there.
async fn wait_audit(gw: &Gw, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let ev = audit_events(gw);
        if ev.len() >= n {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    audit_events(gw)
}

async fn bearer(gw: &Gw, token: &str, method: &str, path: &str) -> Curl {
    curl(&["-X", method, "-H", &format!("Authorization: Bearer {token}")], &gw.url(path)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_is_forwarded_with_identity_and_audited() {
    let iss = Issuer::start().await;
    let b = Backend::start("app").await;
    let gw = Gw::start(&jwt_config(&iss, &b)).await;

    let t = iss.token("api:read");
    let r = curl(
        &["-H", &format!("Authorization: Bearer {t}"), "-H", "X-Palisade-Principal: User::\"root\""],
        &gw.url("/api/items"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &r.json()["headers"];
    assert_eq!(h["x-palisade-principal"], json!(["Client::\"svc\""]), "the forged header is replaced");
    assert_eq!(h["x-palisade-client-id"], json!(["svc"]));
    assert_eq!(h["x-palisade-scopes"], json!(["api:read"]));
    assert_eq!(h["x-palisade-auth-method"], json!(["jwt"]));
    // Identity headers are stripped on routes without authentication too.
    let r = curl(&["-H", "X-Palisade-Principal: User::\"root\""], &gw.url("/open")).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("x-palisade-principal").is_none());

    // Scope api:read may GET, not POST: 403 with a body that names no policy.
    let r = bearer(&gw, &t, "POST", "/api/items").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "access denied");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 2, "the denied POST never reached the app");
    let r = bearer(&gw, &iss.token("api:write"), "POST", "/api/items").await;
    assert_eq!(r.status, 200);

    let ev = wait_audit(&gw, 3).await;
    assert_eq!(ev.len(), 3, "one event per request on the protected route, none for /open: {ev:?}");
    assert_eq!((ev[0]["decision"].as_str(), ev[0]["stage"].as_str()), (Some("allow"), Some("authz")));
    assert_eq!(ev[0]["policy_ids"], json!(["route:api:require[0]"]));
    assert_eq!(ev[0]["principal"], "Client::\"svc\"");
    assert_eq!(ev[0]["status"], 200);
    assert_eq!((ev[1]["decision"].as_str(), ev[1]["stage"].as_str()), (Some("deny"), Some("authz")));
    assert_eq!(ev[1]["status"], 403);
    assert_eq!(ev[1]["method"], "POST");
    assert_eq!(ev[1]["path"], "/api/items");
    assert_eq!(ev[2]["policy_ids"], json!(["route:api:require[1]"]));
    let text = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).unwrap();
    assert!(!text.contains(&t[..40]), "no token in the audit log");

    // A token presented again is answered from the token caches; each token keeps its own
    // identity, and forged identity headers are replaced every time.
    let t2 = iss.token("api:read extra:scope");
    for (tok, scopes) in
        [(&t, "api:read"), (&t2, "api:read extra:scope"), (&t, "api:read"), (&t2, "api:read extra:scope")]
    {
        let r = curl(
            &["-H", &format!("Authorization: Bearer {tok}"), "-H", "X-Palisade-Scopes: admin"],
            &gw.url("/api/items"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["headers"]["x-palisade-scopes"], json!([scopes]));
        assert_eq!(r.json()["headers"]["x-palisade-principal"], json!(["Client::\"svc\""]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_suite_is_refused_with_401() {
    let iss = Issuer::start().await;
    let b = Backend::start("app").await;
    let gw = Gw::start(&jwt_config(&iss, &b)).await;
    let good = iss.token("api:read");
    assert_eq!(bearer(&gw, &good, "GET", "/api/x").await.status, 200);

    let attacker = EcKey::new("key-1");
    let claims = iss.claims("api:read");
    let hdr = iss.header();
    let with = |k: &str, v: Value| {
        let mut h = hdr.clone();
        h[k] = v;
        h
    };
    let claim = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let payload = B64.encode(claims.to_string());
    let hmac = |key: &[u8]| {
        let h = B64.encode(json!({"alg": "HS256", "typ": "at+jwt", "kid": "key-1"}).to_string());
        let input = format!("{h}.{payload}");
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        format!("{input}.{}", B64.encode(ring::hmac::sign(&k, input.as_bytes()).as_ref()))
    };
    let mut cases: Vec<(&str, String)> = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = B64.encode(json!({"alg": none, "typ": "at+jwt", "kid": "key-1"}).to_string());
        cases.push(("alg none", format!("{h}.{payload}.")));
    }
    cases.push(("HS256 keyed with the public JWK", hmac(iss.key.jwk().to_string().as_bytes())));
    cases.push(("HS256 keyed with the public point", hmac(iss.key.public_point())));
    let (h, p) = (B64.encode(hdr.to_string()), payload.clone());
    cases.push(("ECDSA r=s=0 (CVE-2022-21449)", format!("{h}.{p}.{}", B64.encode([0u8; 64]))));
    cases.push(("stripped signature", format!("{h}.{p}.")));
    cases.push(("two parts", format!("{h}.{p}")));
    cases.push(("wrong key", attacker.sign(&hdr, &claims)));
    cases.push(("kid path traversal", attacker.sign(&with("kid", json!("../../../../etc/passwd")), &claims)));
    cases.push(("kid SQL", attacker.sign(&with("kid", json!("' OR 1=1 --")), &claims)));
    cases.push(("jku elsewhere", attacker.sign(&with("jku", json!("http://127.0.0.1:1/jwks")), &claims)));
    cases.push(("x5u elsewhere", attacker.sign(&with("x5u", json!("http://127.0.0.1:1/cert")), &claims)));
    cases.push(("embedded jwk", attacker.sign(&with("jwk", attacker.jwk()), &claims)));
    cases.push(("expired", iss.key.sign(&hdr, &claim("exp", json!(now() - 60)))));
    cases.push(("nbf in the future", iss.key.sign(&hdr, &claim("nbf", json!(now() + 120)))));
    cases.push(("wrong iss", iss.key.sign(&hdr, &claim("iss", json!("http://127.0.0.1:1")))));
    cases.push(("wrong aud", iss.key.sign(&hdr, &claim("aud", json!("other")))));
    cases.push(("unknown crit", iss.key.sign(&with("crit", json!(["exp"])), &claims)));
    cases.push(("wrong typ", iss.key.sign(&with("typ", json!("dpop+jwt")), &claims)));
    cases.push(("oversized", iss.key.sign(&hdr, &claim("pad", json!("x".repeat(9000))))));
    for (name, token) in &cases {
        let r = bearer(&gw, token, "GET", "/api/x").await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.starts_with("Bearer realm=\"palisade\", error=\"invalid_token\""), "{name}: {www}");
        assert!(!r.body.contains(&token[..20.min(token.len())]), "{name}: the token is echoed");
    }
    // Token in the query string when the route does not allow it.
    let r = curl(&[], &gw.url(&format!("/api/x?access_token={good}"))).await;
    assert_eq!(r.status, 401);
    // No credentials at all: a challenge without an error code (RFC 6750 §3.1).
    let r = curl(&[], &gw.url("/api/x")).await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer realm=\"palisade\"")));
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "only the good token reached the app");
    let ev = wait_audit(&gw, cases.len() + 3).await;
    let denies = ev.iter().filter(|e| e["decision"] == "deny" && e["stage"] == "authn").count();
    assert_eq!(denies, cases.len() + 2, "one authn deny event per refused request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_minted_by_pyjwt_are_accepted() {
    let py = std::env::var("PALISADE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("PALISADE_TEST_PYTHON is not set: run the suite with scripts/test.sh (it builds the venv with PyJWT)")
    });
    let iss = Issuer::start().await;
    let b = Backend::start("app").await;
    let gw = Gw::start(&jwt_config(&iss, &b)).await;
    let script = r#"
import sys, time, jwt
pem, iss, kid, scope = sys.argv[1:5]
now = int(time.time())
print(jwt.encode({"iss": iss, "sub": "alice", "aud": ["api", "other"], "scope": scope, "iat": now, "exp": now + 120},
                 pem, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"}))
"#;
    let mint = |scope: &str| {
        let out = std::process::Command::new(&py)
            .args(["-c", script, &iss.key.pem(), &iss.url, &iss.key.kid, scope])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let r = bearer(&gw, &mint("api:read"), "GET", "/api/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-palisade-principal"], json!(["User::\"alice\""]));
    assert_eq!(bearer(&gw, &mint("api:read"), "POST", "/api/x").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cedar_policy_files_and_api_keys() {
    let b = Backend::start("app").await;
    let key = "pk_test_0123456789abcdef0123456789abcdef";
    let hash: String = ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("billing.cedar"),
        r#"@id("billing-may-read")
permit (principal == Client::"billing", action == Action::"GET", resource == Route::"reports");
@id("no-deletes")
forbid (principal, action == Action::"DELETE", resource);
"#,
    )
    .unwrap();
    let cfg = format!(
        r#"{PLAIN}audit: {{ file: audit.jsonl }}
authentication:
  api_keys:
    header: x-api-key
    keys:
      - {{ client: billing, hash: "sha256:{hash}", scopes: [reports] }}
authorization:
  policies: [billing.cedar]
upstreams:
  app: {{ endpoints: ["{ep}"] }}
routes:
  - name: reports
    match: {{ path: {{ prefix: /reports }} }}
    upstream: app
    authn: {{ methods: [api_key] }}
    authz: {{}}
"#,
        ep = b.endpoint()
    );
    let gw = Gw::start_in(dir, &cfg).await;
    let r = curl(&["-H", &format!("x-api-key: {key}")], &gw.url("/reports/q3")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-palisade-client-id"], json!(["billing"]));
    let r = curl(&["-X", "DELETE", "-H", &format!("x-api-key: {key}")], &gw.url("/reports/q3")).await;
    assert_eq!(r.status, 403);
    let r = curl(&["-H", "x-api-key: pk_wrong"], &gw.url("/reports/q3")).await;
    assert_eq!(r.status, 401);
    let r = curl(&[], &gw.url("/reports/q3")).await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("ApiKey realm=\"palisade\"")));
    let ev = wait_audit(&gw, 4).await;
    assert_eq!(ev[0]["policy_ids"], json!(["billing-may-read"]));
    assert_eq!(ev[0]["auth_method"], "api_key");
    assert_eq!(ev[1]["policy_ids"], json!(["no-deletes"]), "the forbid that decided");
    assert_eq!((ev[2]["stage"].as_str(), ev[2]["status"].as_u64()), (Some("authn"), Some(401)));
    assert!(!std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).unwrap().contains(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_client_certificate_with_a_spiffe_id_is_the_principal() {
    let b = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let server_pki = Pki::new("server ca");
    server_pki.write_leaf(dir.path(), "server", &["localhost"]);
    std::fs::write(dir.path().join("server-ca.pem"), &server_pki.ca_pem).unwrap();
    // The client CA, and a client certificate carrying one SPIFFE URI SAN.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "workload ca");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.path().join("client-ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI("spiffe://shop.test/ns/shop/sa/frontend".try_into().unwrap())];
    p.distinguished_name.push(rcgen::DnType::CommonName, "frontend");
    let k = rcgen::KeyPair::generate().unwrap();
    let c = p.signed_by(&k, &issuer).unwrap();
    std::fs::write(dir.path().join("client.pem"), c.pem()).unwrap();
    std::fs::write(dir.path().join("client-key.pem"), k.serialize_pem()).unwrap();
    let iss = Issuer::start().await;
    let cfg = format!(
        r#"listeners:
  https:
    address: "127.0.0.1:{{HTTPS}}"
    certificates: [{{ cert: server.pem, key: "file:server-key.pem" }}]
    client_auth: {{ ca: client-ca.pem }}
admin: {{ address: "127.0.0.1:{{ADMIN}}" }}
authentication:
  jwt_issuers: [{{ issuer: "{url}", audiences: [api], algorithms: [ES256] }}]
upstreams:
  app: {{ endpoints: ["{ep}"] }}
routes:
  - name: bound
    match: {{ path: {{ prefix: /bound }} }}
    upstream: app
    authn: {{ methods: [jwt] }}
  - name: orders
    upstream: app
    authn: {{ methods: [mtls] }}
    authz:
      require: [{{ methods: [GET] }}]
"#,
        ep = b.endpoint(),
        url = iss.url,
    );
    let gw = Gw::start_in(dir, &cfg).await;
    let d = gw.dir.path();
    let url = format!("https://localhost:{}/orders", gw.https);
    let ca = d.join("server-ca.pem");
    let (cert, key) = (d.join("client.pem"), d.join("client-key.pem"));
    let r = curl(
        &["--cacert", ca.to_str().unwrap(), "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()],
        &url,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &r.json()["headers"];
    assert_eq!(h["x-palisade-principal"], json!(["Service::\"spiffe://shop.test/ns/shop/sa/frontend\""]));
    assert_eq!(h["x-palisade-auth-method"], json!(["mtls"]));
    // Without a client certificate the handshake succeeds (client_auth is optional) but the route refuses.
    let r = curl(&["--cacert", ca.to_str().unwrap()], &url).await;
    assert_eq!(r.status, 401);

    // Certificate-bound access tokens (RFC 8705): `cnf.x5t#S256` must be the thumbprint of the
    // certificate the client presents on this connection.
    let thumbprint = B64.encode(ring::digest::digest(&ring::digest::SHA256, c.der()).as_ref());
    let bound_to = |x5t: &str| {
        let mut claims = iss.claims("api:read");
        claims["cnf"] = json!({ "x5t#S256": x5t });
        iss.key.sign(&iss.header(), &claims)
    };
    let bound_url = format!("https://localhost:{}/bound", gw.https);
    let with_cert =
        ["--cacert", ca.to_str().unwrap(), "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let good = format!("Authorization: Bearer {}", bound_to(&thumbprint));
    let mut args = with_cert.to_vec();
    args.extend(["-H", &good]);
    let r = curl(&args, &bound_url).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-palisade-auth-method"], json!(["jwt"]));
    // The same token without the certificate, and a token bound to another certificate: 401.
    let r = curl(&["--cacert", ca.to_str().unwrap(), "-H", &good], &bound_url).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").unwrap_or_default().contains("invalid_token"), "{:?}", r.headers);
    let other = format!("Authorization: Bearer {}", bound_to(&B64.encode([7u8; 32])));
    let mut args = with_cert.to_vec();
    args.extend(["-H", &other]);
    let r = curl(&args, &bound_url).await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_cli_checks_explains_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let orders = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies/orders.cedar");
    std::fs::write(d.join("bad.cedar"), "permit (principal, action, resource)\nwhen { context.nope == 1 };\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).current_dir(d).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = run(&["policy", "check", orders]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["policy", "check", "bad.cedar"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("bad.cedar:2:"), "the error names the line: {out}");

    let explain = |method: &str, scope: &str| {
        run(&[
            "policy",
            "explain",
            "--policies",
            orders,
            "--route",
            "orders",
            "--principal",
            "Client::\"demo\"",
            "--method",
            method,
            "--path",
            "/orders",
            "--scope",
            scope,
        ])
    };
    let (code, out) = explain("GET", "orders:read");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ALLOW") && out.contains("orders-read"), "{out}");
    let (code, out) = explain("POST", "orders:read");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("DENY"), "{out}");

    std::fs::write(
        d.join("cases.yaml"),
        r#"
- { name: reader reads, principal: 'Client::"a"', method: GET, route: orders, path: /orders, scopes: [orders:read], expect: allow }
- { name: reader writes, principal: 'Client::"a"', method: POST, route: orders, path: /orders, scopes: [orders:read], expect: deny }
- { name: writer writes, principal: 'Client::"a"', method: POST, route: orders, path: /orders, scopes: [orders:write], expect: allow }
"#,
    )
    .unwrap();
    let (code, out) = run(&["policy", "test", "--policies", orders, "cases.yaml"]);
    assert_eq!(code, Some(0), "{out}");
    std::fs::write(
        d.join("wrong.yaml"),
        "- { name: anonymous reads, principal: anonymous, method: GET, route: orders, path: /orders, expect: allow }\n",
    )
    .unwrap();
    let (code, out) = run(&["policy", "test", "--policies", orders, "wrong.yaml"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("anonymous reads"), "{out}");

    let (code, out) = run(&["apikey", "generate", "--client", "billing", "--scope", "reports"]);
    assert_eq!(code, Some(0));
    let key = out.lines().next().unwrap().strip_prefix("key: ").unwrap();
    let hash: String = ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    assert!(out.contains(&format!("sha256:{hash}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_cors_and_security_headers() {
    let b = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("order.json"),
        r#"{"type": "object", "required": ["item", "qty"], "additionalProperties": false,
            "properties": {"item": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}"#,
    )
    .unwrap();
    let cfg = format!(
        r#"{PLAIN}audit: {{ file: audit.jsonl }}
security_headers: {{ csp: "default-src 'none'" }}
upstreams:
  app: {{ endpoints: ["{ep}"] }}
routes:
  - name: orders
    match: {{ path: {{ prefix: /orders }} }}
    upstream: app
    validate:
      content_types: [application/json]
      json_schema: order.json
      max_json_depth: 8
      max_body_bytes: 4096
    cors:
      allow_origins: ["https://shop.example"]
      allow_methods: [GET, POST]
      allow_headers: [authorization, content-type]
      max_age: 10m
"#,
        ep = b.endpoint()
    );
    let gw = Gw::start_in(dir, &cfg).await;
    let post = |body: &'static str, ct: &'static str| {
        let url = gw.url("/orders");
        async move { curl(&["-X", "POST", "-H", &format!("content-type: {ct}"), "--data-binary", body], &url).await }
    };
    let r = post(r#"{"item":"pen","qty":2}"#, "application/json").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["body_len"], 22, "the buffered body reaches the app whole");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("content-security-policy"), Some("default-src 'none'"));
    assert_eq!(r.header("strict-transport-security"), None, "no HSTS over plain HTTP");

    let r = post(r#"{"item":"pen","qty":0}"#, "application/json").await;
    assert_eq!(r.status, 400);
    let e = r.json()["error"].as_str().unwrap().to_owned();
    assert!(e.contains("/qty"), "the error names the JSON pointer: {e}");
    let r = post(r#"{"item":"pen","qty":1,"x":[[[[[[[[[[1]]]]]]]]]]}"#, "application/json").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post("item=pen", "application/x-www-form-urlencoded").await;
    assert_eq!(r.status, 415, "{}", r.body);
    let r = post("{not json", "application/json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "gateway errors get the headers too");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "only the valid order reached the app");

    // CORS: an allowed preflight is answered by the gateway; a foreign origin is refused.
    let pre = |origin: &'static str| {
        let url = gw.url("/orders");
        async move {
            curl(
                &[
                    "-X",
                    "OPTIONS",
                    "-H",
                    &format!("Origin: {origin}"),
                    "-H",
                    "Access-Control-Request-Method: POST",
                    "-H",
                    "Access-Control-Request-Headers: content-type",
                ],
                &url,
            )
            .await
        }
    };
    let r = pre("https://shop.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://shop.example"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.header("access-control-allow-methods").unwrap_or_default().contains("POST"));
    assert_eq!(pre("https://evil.example").await.status, 403);
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "preflights never reach the app");
    let r = curl(&["-H", "Origin: https://shop.example"], &gw.url("/orders")).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("https://shop.example"));
    assert!(r.header("vary").unwrap_or_default().contains("Origin"));
    let r = curl(&["-H", "Origin: https://evil.example"], &gw.url("/orders")).await;
    assert_eq!(r.header("access-control-allow-origin"), None);

    let ev = wait_audit(&gw, 5).await;
    let stages: Vec<&str> = ev.iter().filter_map(|e| e["stage"].as_str()).collect();
    assert_eq!(stages.iter().filter(|s| **s == "validation").count(), 4, "{ev:?}");
    assert_eq!(stages.iter().filter(|s| **s == "cors").count(), 1, "the refused preflight: {ev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_tokens_need_a_fresh_proof_of_the_bound_key() {
    let iss = Issuer::start().await;
    let b = Backend::start("app").await;
    let gw = Gw::start(&jwt_config(&iss, &b)).await;
    let client = EcKey::new("client");
    let mut jwk = client.jwk();
    let thumb_input = json!({"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}).to_string();
    let jkt = B64.encode(ring::digest::digest(&ring::digest::SHA256, thumb_input.as_bytes()));
    let mut claims = iss.claims("api:read");
    claims["cnf"] = json!({"jkt": jkt});
    let token = iss.key.sign(&iss.header(), &claims);
    let ath = B64.encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    for k in ["kid", "alg", "use"] {
        jwk.as_object_mut().unwrap().remove(k);
    }
    let htu = gw.url("/api/items");
    let proof = |signer: &EcKey, htm: &str, htu: &str, iat: u64| {
        let h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
        let c = json!({"jti": format!("p{}", fastrand_u64()), "htm": htm, "htu": htu, "iat": iat, "ath": ath});
        signer.sign(&h, &c)
    };
    let send = |scheme: &'static str, proof: Option<String>| {
        let (url, token) = (htu.clone(), token.clone());
        async move {
            let mut args = vec!["-H".to_string(), format!("Authorization: {scheme} {token}")];
            if let Some(p) = proof {
                args.extend(["-H".to_string(), format!("DPoP: {p}")]);
            }
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>(), &url).await
        }
    };
    let good = proof(&client, "GET", &htu, now());
    let r = send("DPoP", Some(good.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send("DPoP", Some(good)).await;
    assert_eq!(r.status, 401, "a replayed proof");
    assert!(r.header("www-authenticate").unwrap_or_default().contains("invalid_dpop_proof"), "{:?}", r.headers);
    assert_eq!(send("Bearer", None).await.status, 401, "a bound token used as a bearer token");
    assert_eq!(send("DPoP", None).await.status, 401, "no proof");
    assert_eq!(send("DPoP", Some(proof(&client, "POST", &htu, now()))).await.status, 401, "wrong htm");
    let other = gw.url("/api/other");
    assert_eq!(send("DPoP", Some(proof(&client, "GET", &other, now()))).await.status, 401, "wrong htu");
    assert_eq!(send("DPoP", Some(proof(&client, "GET", &htu, now() - 600))).await.status, 401, "stale iat");
    let thief = EcKey::new("thief");
    assert_eq!(send("DPoP", Some(proof(&thief, "GET", &htu, now()))).await.status, 401, "signed by another key");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}
