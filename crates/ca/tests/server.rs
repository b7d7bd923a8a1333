//! The workload CA server side against SQLite in a tempdir: issuance profile, attestation
//! (join tokens, Kubernetes tokens, renewal), rotation and the bundle, and the HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_ca::{Attestation, Ca, CaConfig, CaError, K8sConfig, SvidRequest};
use palisade_crypto::MasterKey;
use palisade_store::Store;
use rcgen::{CertificateParams, KeyPair, SanType};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tower::ServiceExt;
use x509_parser::prelude::*;

const TD: &str = "palisade.test";

fn master() -> MasterKey {
    MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    ca: Arc<Ca>,
}

async fn env_with(cfg: CaConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&palisade_store::sqlite_url(dir.path())).await.unwrap();
    let ca = Ca::open(&store, master(), cfg).await.unwrap();
    assert!(ca.ensure_authority().await.unwrap().is_some());
    assert!(ca.ensure_authority().await.unwrap().is_none(), "a second start makes no CA");
    Env { _dir: dir, store, ca }
}

async fn env() -> Env {
    env_with(CaConfig::new(TD)).await
}

/// A P-256 CSR that asks for names and CA rights the CA must ignore.
fn csr() -> (KeyPair, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::URI("spiffe://evil.test/ns/x/sa/admin".try_into().unwrap()));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

fn pem_der_all(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()).map(|p| p.unwrap().contents).collect()
}

fn pem_der(pem: &str) -> Vec<u8> {
    pem_der_all(pem).remove(0)
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let body: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", body.join("\n"))
}

/// base64url ECDSA P-256 SHA-256 (ASN.1 DER) signature of `msg` with an rcgen key.
fn proof(key: &KeyPair, msg: &[u8]) -> String {
    let rng = SystemRandom::new();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der(), &rng).unwrap();
    URL_SAFE_NO_PAD.encode(kp.sign(&rng, msg).unwrap().as_ref())
}

async fn call(ca: &Arc<Ca>, req: Request<Body>) -> (StatusCode, Vec<u8>, Option<String>) {
    let resp = ca.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body, ct)
}

async fn post(ca: &Arc<Ca>, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::post("/ca/v1/svid").header("content-type", "application/json").body(body.into()).unwrap();
    let (status, body, _) = call(ca, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post_json(ca: &Arc<Ca>, v: Value) -> (StatusCode, Value) {
    post(ca, v.to_string()).await
}

fn err(code: &str, description: &str) -> Value {
    json!({ "error": code, "error_description": description })
}

async fn join_token(ca: &Ca, ns: &str, svc: &str) -> String {
    ca.create_join_token(ns, svc, Duration::from_secs(600)).await.unwrap().token
}

/// Issue an SVID with a fresh join token; returns the key and the response.
async fn issue_joined(ca: &Arc<Ca>) -> (KeyPair, Value) {
    let (key, pem) = csr();
    let token = join_token(ca, "shop", "orders").await;
    let (status, body) = post_json(ca, json!({ "csr": pem, "join_token": token })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (key, body)
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => format!("other:{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn issues_an_svid_with_the_spiffe_profile_and_ignores_csr_names() {
    let env = env().await;
    let (key, body) = issue_joined(&env.ca).await;
    assert_eq!(body["spiffe_id"], "spiffe://palisade.test/ns/shop/sa/orders");
    let chain = pem_der_all(body["svid"].as_str().unwrap());
    assert_eq!(chain.len(), 2, "leaf then the signing CA");
    let bundle = pem_der_all(body["bundle"].as_str().unwrap());
    assert_eq!(bundle, vec![chain[1].clone()]);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, ca) = X509Certificate::from_der(&chain[1]).unwrap();
    // Exactly one URI SAN, the attested ID; the CSR's DNS name and URI are gone.
    assert_eq!(uris(&leaf), vec!["spiffe://palisade.test/ns/shop/sa/orders".to_string()]);
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical);
    assert!(!bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert_eq!(ku.value.flags, 1, "digitalSignature only");
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing && eku.other.is_empty());
    // Validity: 5 s backdated, TTL 1 h.
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    assert_eq!(na - nb, 3600 + 5);
    assert_eq!(body["not_before"].as_i64().unwrap(), nb);
    assert_eq!(body["not_after"].as_i64().unwrap(), na);
    assert!((palisade_store::now() - 5 - nb).abs() <= 2);
    // 16-byte random serial, positive, never shortened by a leading zero, and
    // the one the response reports.
    let serial = leaf.raw_serial();
    assert_eq!(serial.len(), 16, "{serial:?}");
    assert_eq!(serial[0] & 0xc0, 0x40, "{serial:?}");
    let serial_hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(body["serial"], serial_hex.as_str());
    // The SVID carries the CSR's key, signed by the CA.
    assert_eq!(leaf.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());

    let status = env.ca.status().await.unwrap();
    assert_eq!(status.authorities.len(), 1);
    assert_eq!(status.authorities[0].svids_issued, 1);
    assert_eq!(status.authorities[0].svids_valid, 1);
}

#[tokio::test]
async fn the_root_ca_has_the_ca_profile_and_its_key_is_sealed_at_rest() {
    let env = env().await;
    let pem = env.ca.bundle_pem().await.unwrap();
    let der = pem_der(&pem);
    let (_, ca) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(ca.subject().iter_common_name().next().unwrap().as_str().unwrap(), "Palisade workload CA");
    assert_eq!(uris(&ca), vec!["spiffe://palisade.test".to_string()]);
    let bc = ca.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = ca.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign() && !ku.value.digital_signature());
    let days = (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 365);
    ca.verify_signature(None).unwrap();

    use palisade_store::sqlx::Row;
    let row = palisade_store::sqlx::query("SELECT id, cert_pem, sealed_key FROM ca_authorities")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    let id: String = row.get("id");
    let sealed: String = row.get("sealed_key");
    let cert_pem: String = row.get("cert_pem");
    assert!(!sealed.contains("PRIVATE KEY") && !cert_pem.contains("PRIVATE KEY"));
    let blob = STANDARD.decode(&sealed).unwrap();
    assert!(KeyPair::try_from(blob.as_slice()).is_err(), "the stored blob is not a usable key");
    // It opens only under the master key with the CA id as associated data.
    assert!(master().open(&blob, b"another-id").is_err());
    let key = KeyPair::try_from(master().open(&blob, id.as_bytes()).unwrap().as_slice()).unwrap();
    assert_eq!(key.public_key_raw(), ca.public_key().subject_public_key.data.as_ref());
}

#[tokio::test]
async fn a_csr_with_a_bad_signature_is_refused_and_the_token_kept() {
    let env = env().await;
    let (_, pem) = csr();
    let mut der = pem_der(&pem);
    let last = der.len() - 3;
    der[last] ^= 0x01;
    let token = join_token(&env.ca, "shop", "orders").await;
    let (status, body) =
        post_json(&env.ca, json!({ "csr": to_pem("CERTIFICATE REQUEST", &der), "join_token": token })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, err("invalid_request", "csr: the request's signature does not verify"));
    let (status, body) = post_json(&env.ca, json!({ "csr": "not a csr", "join_token": token })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, err("invalid_request", "csr: not a PEM CERTIFICATE REQUEST"));
    // A P-384 key is refused.
    let k384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384 = CertificateParams::default().serialize_request(&k384).unwrap().pem().unwrap();
    let (status, body) = post_json(&env.ca, json!({ "csr": p384, "join_token": token })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, err("invalid_request", "csr: the key must be ECDSA P-256"));
    // The token was not spent on refused CSRs.
    let (_, good) = csr();
    let (status, _) = post_json(&env.ca, json!({ "csr": good, "join_token": token })).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn join_tokens_are_one_time_even_when_raced() {
    let env = env().await;
    let token = env.ca.create_join_token("shop", "payments", Duration::from_secs(60)).await.unwrap();
    assert_eq!(token.spiffe_id, "spiffe://palisade.test/ns/shop/sa/payments");
    assert!((token.expires_at - palisade_store::now() - 60).abs() <= 1);
    let (_, a) = csr();
    let (_, b) = csr();
    let ((sa, ba), (sb, bb)) = tokio::join!(
        post_json(&env.ca, json!({ "csr": a, "join_token": token.token })),
        post_json(&env.ca, json!({ "csr": b, "join_token": token.token })),
    );
    let mut statuses = [sa, sb];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
    let (ok, refused) = if sa == StatusCode::OK { (ba, bb) } else { (bb, ba) };
    assert_eq!(refused, err("invalid_token", "unknown, used or expired join token"));
    assert_eq!(ok["spiffe_id"], "spiffe://palisade.test/ns/shop/sa/payments");
    // Unknown token.
    let (_, c) = csr();
    let (status, body) = post_json(&env.ca, json!({ "csr": c, "join_token": "nope" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, err("invalid_token", "unknown, used or expired join token"));
    // Only the hash is stored.
    use palisade_store::sqlx::Row;
    let rows =
        palisade_store::sqlx::query("SELECT token_hash FROM ca_join_tokens").fetch_all(env.store.pool()).await.unwrap();
    assert_eq!(rows.len(), 1);
    let h: String = rows[0].get("token_hash");
    assert_ne!(h, token.token);
    assert_eq!(h.len(), 64);
    // Bad names are refused.
    assert!(matches!(env.ca.create_join_token("a/b", "x", Duration::from_secs(60)).await, Err(CaError::Config(_))));
    assert!(matches!(env.ca.create_join_token("a", "x", Duration::ZERO).await, Err(CaError::Config(_))));
}

#[tokio::test]
async fn an_expired_join_token_is_refused() {
    let env = env().await;
    let token = env.ca.create_join_token("shop", "orders", Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, pem) = csr();
    let (status, body) = post_json(&env.ca, json!({ "csr": pem, "join_token": token.token })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, err("invalid_token", "unknown, used or expired join token"));
}

// ---- Kubernetes service-account tokens

struct K8sKey {
    kp: EcdsaKeyPair,
    jwk: Value,
}

fn k8s_key(kid: &str) -> K8sKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = kp.public_key().as_ref().to_vec();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    K8sKey { kp, jwk }
}

fn jwt(header: &Value, claims: &Value, key: Option<&EcdsaKeyPair>) -> String {
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = match key {
        Some(k) => URL_SAFE_NO_PAD.encode(k.sign(&SystemRandom::new(), input.as_bytes()).unwrap().as_ref()),
        None => String::new(),
    };
    format!("{input}.{sig}")
}

const ISS: &str = "https://kubernetes.default.svc.cluster.local";

fn sa_claims(now: i64) -> Value {
    json!({
        "iss": ISS, "aud": ["palisade"], "exp": now + 600, "nbf": now - 10, "iat": now - 10,
        "sub": "system:serviceaccount:shop:orders",
        "kubernetes.io": { "namespace": "shop", "serviceaccount": { "name": "orders", "uid": "u-1" },
                           "pod": { "name": "orders-1", "uid": "p-1" } },
    })
}

#[tokio::test]
async fn kubernetes_service_account_tokens_are_verified() {
    let key = k8s_key("k1");
    let other = k8s_key("k1");
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({ "keys": [key.jwk] }).to_string()).unwrap();
    let mut cfg = CaConfig::new(TD);
    cfg.k8s = Some(K8sConfig {
        issuer: ISS.into(),
        audience: "palisade".into(),
        jwks_json: std::fs::read_to_string(&jwks_path).unwrap(),
        leeway: Duration::from_secs(5),
    });
    let env = env_with(cfg).await;
    let now = palisade_store::now();
    let es = json!({ "alg": "ES256", "kid": "k1", "typ": "JWT" });

    let good = jwt(&es, &sa_claims(now), Some(&key.kp));
    let (_, pem) = csr();
    let (status, body) = post_json(&env.ca, json!({ "csr": pem, "k8s_token": good })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://palisade.test/ns/shop/sa/orders");

    // Identity from `sub` when the kubernetes.io claim is absent.
    let mut claims = sa_claims(now);
    claims.as_object_mut().unwrap().remove("kubernetes.io");
    claims["sub"] = json!("system:serviceaccount:billing:invoicer");
    let (_, pem) = csr();
    let (status, body) = post_json(&env.ca, json!({ "csr": pem, "k8s_token": jwt(&es, &claims, Some(&key.kp)) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://palisade.test/ns/billing/sa/invoicer");

    let mut wrong_aud = sa_claims(now);
    wrong_aud["aud"] = json!(["kubernetes"]);
    let mut wrong_iss = sa_claims(now);
    wrong_iss["iss"] = json!("https://evil.example");
    let mut expired = sa_claims(now);
    expired["exp"] = json!(now - 60);
    let mut not_yet = sa_claims(now);
    not_yet["nbf"] = json!(now + 600);
    let mut no_identity = sa_claims(now);
    no_identity.as_object_mut().unwrap().remove("kubernetes.io");
    no_identity["sub"] = json!("alice");
    let hs_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "k1"}).to_string()),
        URL_SAFE_NO_PAD.encode(sa_claims(now).to_string())
    );
    let hs_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.jwk["x"].as_str().unwrap().as_bytes());
    let hs = format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(ring::hmac::sign(&hs_key, hs_input.as_bytes()).as_ref()));
    let cases = [
        (jwt(&es, &wrong_aud, Some(&key.kp)), "Kubernetes token: wrong audience"),
        (jwt(&es, &wrong_iss, Some(&key.kp)), "Kubernetes token: wrong issuer"),
        (jwt(&es, &expired, Some(&key.kp)), "Kubernetes token: expired"),
        (jwt(&es, &not_yet, Some(&key.kp)), "Kubernetes token: not yet valid (nbf)"),
        (jwt(&es, &sa_claims(now), Some(&other.kp)), "Kubernetes token: signature does not verify"),
        (jwt(&json!({"alg": "none"}), &sa_claims(now), None), "Kubernetes token: malformed or unsupported header"),
        (hs, "Kubernetes token: alg must be RS256 or ES256"),
        (
            jwt(&json!({"alg": "ES256", "kid": "k9"}), &sa_claims(now), Some(&key.kp)),
            "Kubernetes token: no key in the JWKS matches the token's kid and alg",
        ),
        (jwt(&es, &no_identity, Some(&key.kp)), "Kubernetes token: no service account identity"),
        ("a.b.c".to_string(), "Kubernetes token: malformed or unsupported header"),
    ];
    for (token, description) in cases {
        let (_, pem) = csr();
        let (status, body) = post_json(&env.ca, json!({ "csr": pem, "k8s_token": token })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{description}");
        assert_eq!(body, err("invalid_token", description));
    }
}

#[tokio::test]
async fn kubernetes_tokens_are_refused_when_not_configured() {
    let env = env().await;
    let key = k8s_key("k1");
    let token = jwt(&json!({ "alg": "ES256", "kid": "k1" }), &sa_claims(palisade_store::now()), Some(&key.kp));
    let (_, pem) = csr();
    let (status, body) = post_json(&env.ca, json!({ "csr": pem, "k8s_token": token })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, err("invalid_token", "Kubernetes attestation is not configured"));
}

// ---- renewal

#[tokio::test]
async fn renewal_with_a_valid_proof_keeps_the_id() {
    let env = env().await;
    let (old_key, issued) = issue_joined(&env.ca).await;
    let (_, new_pem) = csr();
    let der = pem_der(&new_pem);
    let svid = issued["svid"].as_str().unwrap();
    let (status, body) =
        post_json(&env.ca, json!({ "csr": new_pem, "svid": svid, "proof": proof(&old_key, &der) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://palisade.test/ns/shop/sa/orders");
    assert_ne!(body["svid"], issued["svid"]);

    // A proof made with another key (here the new CSR's own key) is refused.
    let (new_key, new_pem) = csr();
    let der = pem_der(&new_pem);
    let (status, body) =
        post_json(&env.ca, json!({ "csr": new_pem, "svid": svid, "proof": proof(&new_key, &der) })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, err("access_denied", "the proof does not verify with the SVID's key"));
    // A proof over other bytes is refused.
    let (_, pem3) = csr();
    let (status, _) = post_json(&env.ca, json!({ "csr": pem3, "svid": svid, "proof": proof(&old_key, &der) })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Garbage proof.
    let (status, body) = post_json(&env.ca, json!({ "csr": pem3, "svid": svid, "proof": "!!" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, err("access_denied", "the proof is not base64url"));
    // The CA certificate itself is not an SVID.
    let ca_pem = env.ca.bundle_pem().await.unwrap();
    let (status, body) = post_json(&env.ca, json!({ "csr": pem3, "svid": ca_pem, "proof": "AA" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, err("access_denied", "the SVID is a CA certificate"));
}

#[tokio::test]
async fn renewal_with_another_cas_svid_is_refused() {
    let env = env().await;
    let other = self::env().await;
    let (key, issued) = issue_joined(&other.ca).await;
    let (_, pem) = csr();
    let der = pem_der(&pem);
    let (status, body) =
        post_json(&env.ca, json!({ "csr": pem, "svid": issued["svid"], "proof": proof(&key, &der) })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, err("access_denied", "the SVID was not issued by a CA in the current trust bundle"));
}

#[tokio::test]
async fn renewal_with_an_expired_svid_is_refused() {
    let mut cfg = CaConfig::new(TD);
    cfg.svid_ttl = Duration::from_secs(1);
    let env = env_with(cfg).await;
    let (key, issued) = issue_joined(&env.ca).await;
    assert_eq!(issued["not_after"].as_i64().unwrap() - issued["not_before"].as_i64().unwrap(), 6);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, pem) = csr();
    let der = pem_der(&pem);
    let (status, body) =
        post_json(&env.ca, json!({ "csr": pem, "svid": issued["svid"], "proof": proof(&key, &der) })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, err("access_denied", "the SVID is expired or not yet valid"));
}

// ---- rotation and bundle

#[tokio::test]
async fn rotation_publishes_first_signs_later_and_drops_the_old_ca_after_its_last_svid() {
    let mut cfg = CaConfig::new(TD);
    cfg.svid_ttl = Duration::from_secs(3);
    let env = env_with(cfg).await;
    let first = env.ca.status().await.unwrap().authorities[0].id.clone();
    assert_eq!(env.ca.bundle().await.unwrap().sequence, 1);
    let (_, a) = issue_joined(&env.ca).await;

    let new = env.ca.rotate(Duration::from_secs(1)).await.unwrap();
    assert_eq!(new.state, "pending");
    assert!(new.in_bundle);
    let bundle = env.ca.bundle().await.unwrap();
    assert_eq!(bundle.certs.len(), 2, "the pending CA is published at once");
    assert_eq!(bundle.sequence, 2);
    // Still signed by the first CA.
    let (_, b) = issue_joined(&env.ca).await;
    let signer = |v: &Value| pem_der_all(v["svid"].as_str().unwrap())[1].clone();
    assert_eq!(signer(&a), signer(&b));
    assert_eq!(pem_der_all(b["bundle"].as_str().unwrap()).len(), 2);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, c) = issue_joined(&env.ca).await;
    assert_ne!(signer(&c), signer(&a), "the new CA signs after activate_after");
    let status = env.ca.status().await.unwrap();
    let states: Vec<(&str, &str, bool)> =
        status.authorities.iter().map(|a| (a.id.as_str(), a.state.as_str(), a.in_bundle)).collect();
    assert_eq!(states, vec![(first.as_str(), "retired", true), (new.id.as_str(), "active", true)]);
    assert_eq!(status.authorities[0].svids_issued, 2);
    assert_eq!(status.authorities[1].svids_issued, 1);
    assert_eq!(env.ca.bundle().await.unwrap().sequence, 2);

    // The first CA's last SVID expires 3 s after issuance; then the CA leaves the bundle.
    let last = b["not_after"].as_i64().unwrap();
    while palisade_store::now() <= last {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bundle = env.ca.bundle().await.unwrap();
    assert_eq!(bundle.certs, vec![signer(&c)]);
    assert_eq!(bundle.sequence, 3);
    let status = env.ca.status().await.unwrap();
    assert!(!status.authorities[0].in_bundle);
    assert_eq!(status.authorities[0].svids_valid, 0);
}

#[tokio::test]
async fn bundle_endpoints_serve_pem_and_the_spiffe_format() {
    let mut cfg = CaConfig::new(TD);
    cfg.bundle_refresh = Duration::from_secs(1);
    let env = env_with(cfg).await;
    let (status, body, ct) = call(&env.ca, Request::get("/ca/v1/bundle").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/x-pem-file"));
    let pem = String::from_utf8(body).unwrap();
    let der = pem_der(&pem);
    assert_eq!(pem_der_all(&pem).len(), 1);

    let (status, body, ct) = call(&env.ca, Request::get("/ca/v1/bundle.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/json"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["spiffe_sequence"], 1);
    assert_eq!(v["spiffe_refresh_hint"], 1);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    let mut names: Vec<&String> = k.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["crv", "kty", "use", "x", "x5c", "y"]);
    assert_eq!(k["use"], "x509-svid");
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["x5c"], json!([STANDARD.encode(&der)]));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let point = cert.public_key().subject_public_key.data.as_ref();
    assert_eq!(k["x"], URL_SAFE_NO_PAD.encode(&point[1..33]));
    assert_eq!(k["y"], URL_SAFE_NO_PAD.encode(&point[33..65]));
}

// ---- HTTP request errors

#[tokio::test]
async fn http_request_errors_have_exact_codes_and_bodies() {
    let env = env().await;
    let (_, pem) = csr();
    let bad = |d: &str| err("invalid_request", d);
    let cases = [
        ("{".to_string(), bad("the body must be a JSON object")),
        ("[]".to_string(), bad("the body must be a JSON object")),
        (json!({ "join_token": "x" }).to_string(), bad("csr is missing")),
        (json!({ "csr": pem }).to_string(), bad("give exactly one of join_token, k8s_token, or svid with proof")),
        (
            json!({ "csr": pem, "join_token": "x", "k8s_token": "y" }).to_string(),
            bad("give exactly one of join_token, k8s_token, or svid with proof"),
        ),
        (json!({ "csr": pem, "svid": "x" }).to_string(), bad("renewal needs both svid and proof")),
        (json!({ "csr": pem, "svid": "x", "proof": "y" }).to_string(), bad("svid: no CERTIFICATE block found")),
    ];
    for (body, expected) in cases {
        let (status, got) = post(&env.ca, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(got, expected, "{body}");
    }
    let big = json!({ "csr": "x".repeat(64 * 1024), "join_token": "t" }).to_string();
    let (status, got) = post(&env.ca, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(got, err("invalid_request", "the request body is larger than 64 KiB"));
    // Wrong method.
    let (status, _, _) = call(&env.ca, Request::get("/ca/v1/svid").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

// ---- administration

#[tokio::test]
async fn a_store_of_another_trust_domain_is_refused() {
    let env = env().await;
    let err = Ca::open(&env.store, master(), CaConfig::new("other.test")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the CA store belongs to trust domain \"palisade.test\", not \"other.test\"; use --trust-domain palisade.test"
    );
    assert!(matches!(Ca::open(&env.store, master(), CaConfig::new("Bad Domain")).await, Err(CaError::Config(_))));
    let mut cfg = CaConfig::new(TD);
    cfg.svid_ttl = Duration::from_millis(500);
    assert_eq!(Ca::open(&env.store, master(), cfg).await.unwrap_err().to_string(), "the SVID TTL must be at least 1s");
}

#[tokio::test]
async fn an_imported_intermediate_signs_and_its_chain_is_sent() {
    let env = env().await;
    // An external root and an intermediate it signed.
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_params = CertificateParams::default();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);
    let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut inter_params = CertificateParams::default();
    inter_params.distinguished_name.push(rcgen::DnType::CommonName, "Corp intermediate");
    inter_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    inter_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    inter_params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let chain = format!("{}{}", inter.pem(), root.pem());

    // Refused: a key that does not match, a leaf certificate, a chain out of order.
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let e = env.ca.import(&chain, &other_key.serialize_pem(), Duration::ZERO).await.unwrap_err();
    assert_eq!(e.to_string(), "imported CA: the private key does not belong to the first certificate");
    let leaf = CertificateParams::new(vec!["x.example".to_string()]).unwrap().self_signed(&other_key).unwrap();
    let e = env.ca.import(&leaf.pem(), &other_key.serialize_pem(), Duration::ZERO).await.unwrap_err();
    assert_eq!(e.to_string(), "imported CA: the first certificate is not a CA certificate (basicConstraints CA=true)");
    let reversed = format!("{}{}", inter.pem(), other_key_cert(&other_key));
    let e = env.ca.import(&reversed, &inter_key.serialize_pem(), Duration::ZERO).await.unwrap_err();
    assert_eq!(e.to_string(), "imported CA: the certificate chain is out of order or broken");

    let info = env.ca.import(&chain, &inter_key.serialize_pem(), Duration::ZERO).await.unwrap();
    assert_eq!(info.state, "active", "activate_after 0: it signs at once");
    let (_, issued) = issue_joined(&env.ca).await;
    let svid = pem_der_all(issued["svid"].as_str().unwrap());
    assert_eq!(svid.len(), 3, "leaf, intermediate, root");
    assert_eq!(svid[1], inter.der().to_vec());
    assert_eq!(svid[2], root.der().to_vec());
    let (_, leaf) = X509Certificate::from_der(&svid[0]).unwrap();
    let (_, inter_cert) = X509Certificate::from_der(&svid[1]).unwrap();
    leaf.verify_signature(Some(inter_cert.public_key())).unwrap();
    // The bundle holds the signing certificate; the old root signed nothing, so it left at once.
    let bundle = pem_der_all(issued["bundle"].as_str().unwrap());
    assert_eq!(bundle, vec![inter.der().to_vec()]);
    let states: Vec<(String, bool)> =
        env.ca.status().await.unwrap().authorities.into_iter().map(|a| (a.state, a.in_bundle)).collect();
    assert_eq!(states, vec![("retired".to_string(), false), ("active".to_string(), true)]);
}

fn other_key_cert(key: &KeyPair) -> String {
    let mut p = CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(key).unwrap().pem()
}

#[tokio::test]
async fn the_library_api_issues_without_http() {
    let env = env().await;
    let (_, pem) = csr();
    let token = join_token(&env.ca, "ns1", "svc1").await;
    let req = SvidRequest { csr_pem: pem.clone(), attestation: Attestation::JoinToken(token.clone()) };
    let svid = env.ca.issue(&req).await.unwrap();
    assert_eq!(svid.spiffe_id.as_str(), "spiffe://palisade.test/ns/ns1/sa/svc1");
    assert_eq!(svid.ca_id, env.ca.status().await.unwrap().authorities[0].id);
    assert_eq!(svid.serial.len(), 32);
    assert!(matches!(env.ca.issue(&req).await, Err(CaError::InvalidToken(_))));
}
