//! The HTTP API in-process (tower's oneshot): exact statuses and bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::BodyExt;
use palisade_core::audit::{AuditEvent, Decision, Stage};
use palisade_vault::{router, Authenticator};
use serde_json::{json, Value};
use std::sync::Arc;
use support::*;
use tower::ServiceExt;

/// `Authorization: Bearer <name>` authenticates `User::"<name>"`.
struct BearerName;

#[async_trait::async_trait]
impl Authenticator for BearerName {
    async fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let v = headers.get("authorization")?.to_str().ok()?;
        let name = v.strip_prefix("Bearer ")?;
        Some(format!("User::\"{name}\""))
    }
}

async fn call(app: &Router, method: &str, uri: &str, who: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(w) = who {
        req = req.header("authorization", format!("Bearer {w}"));
    }
    let body = match body {
        Some(b) => Body::from(serde_json::to_vec(&b).unwrap()),
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.header("content-type", "application/json").body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, v)
}

async fn raw(app: &Router, uri: &str, body: &'static str) -> (StatusCode, Value) {
    let req = Request::builder().method("POST").uri(uri).header("authorization", "Bearer alice").body(Body::from(body));
    let resp = app.clone().oneshot(req.unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

#[tokio::test]
async fn authentication_and_key_management() {
    let f = fixture().await;
    let app = router(f.vault.clone(), Arc::new(BearerName));
    let (s, b) = call(&app, "GET", "/vault/v1/keys", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b, json!({"error": "unauthorized", "error_description": "authentication required"}));

    let (s, b) = call(&app, "POST", "/vault/v1/keys/orders", Some("alice"), Some(json!({"type": "aes256-gcm"}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["name"], "orders");
    assert_eq!(b["type"], "aes256-gcm");
    assert_eq!(b["latest_version"], 1);
    assert_eq!(b["exportable"], false);
    assert_eq!(b["versions"][0]["version"], 1);
    assert!(b.get("deletion_at").is_none());
    let (s, b) = call(&app, "POST", "/vault/v1/keys/orders", Some("alice"), Some(json!({"type": "aes256-gcm"}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b, json!({"error": "key_exists", "error_description": "a key named \"orders\" already exists"}));
    let (s, b) = call(&app, "POST", "/vault/v1/keys/x", Some("alice"), Some(json!({"type": "des"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "invalid_request");
    let (s, b) = call(&app, "GET", "/vault/v1/keys/missing", Some("alice"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b, json!({"error": "unknown_key", "error_description": "no key named \"missing\""}));

    let (s, b) = call(&app, "POST", "/vault/v1/keys/orders/rotate", Some("alice"), None).await;
    assert_eq!((s, &b["latest_version"]), (StatusCode::OK, &json!(2)));
    let cfg = json!({"min_decryption_version": 2, "disabled": true});
    let (s, b) = call(&app, "POST", "/vault/v1/keys/orders/config", Some("alice"), Some(cfg)).await;
    assert_eq!((s, &b["min_decryption_version"], &b["disabled"]), (StatusCode::OK, &json!(2), &json!(true)));
    let (s, b) = call(&app, "GET", "/vault/v1/keys", Some("alice"), None).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"keys": ["orders"]})));
    let (s, b) = call(&app, "GET", "/vault/v1/export/orders", Some("alice"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(b, json!({"error": "not_exportable", "error_description": "key \"orders\" is not exportable"}));

    let (s, b) = call(&app, "DELETE", "/vault/v1/keys/orders", Some("alice"), Some(json!({"grace_seconds": 60}))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b["deletion_at"].as_i64().unwrap() >= palisade_store::now() + 59);
    let (s, b) = call(&app, "POST", "/vault/v1/keys/orders/cancel-deletion", Some("alice"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.get("deletion_at").is_none());
    let (s, _) = call(&app, "DELETE", "/vault/v1/keys/orders", Some("alice"), Some(json!({"grace_seconds": 0}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(&app, "GET", "/vault/v1/keys/orders", Some("alice"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"], "key_deleted");
}

#[tokio::test]
async fn encrypt_decrypt_rewrap_single_and_batch() {
    let f = fixture().await;
    let app = router(f.vault.clone(), Arc::new(BearerName));
    call(&app, "POST", "/vault/v1/keys/k", Some("alice"), Some(json!({"type": "xchacha20-poly1305"}))).await;
    let (s, b) = call(
        &app,
        "POST",
        "/vault/v1/encrypt/k",
        Some("alice"),
        Some(json!({"plaintext": b64("hello"), "context": b64("tenant-1")})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["key_version"], 1);
    let ct = b["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct.starts_with("pal:v1:"));
    let (s, b) = call(
        &app,
        "POST",
        "/vault/v1/decrypt/k",
        Some("alice"),
        Some(json!({"ciphertext": ct, "context": b64("tenant-1")})),
    )
    .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"plaintext": b64("hello")})));
    let (s, b) = call(
        &app,
        "POST",
        "/vault/v1/decrypt/k",
        Some("alice"),
        Some(json!({"ciphertext": ct, "context": b64("tenant-2")})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({"error": "wrong_context", "error_description": "the context (associated data) differs from the one the ciphertext was made with"})
    );

    // Batch: order kept, a bad item does not spoil the others.
    let batch = json!({"batch": [
        {"plaintext": b64("one")},
        {"plaintext": "%%%"},
        {"plaintext": b64("three"), "context": b64("c")}
    ]});
    let (s, b) = call(&app, "POST", "/vault/v1/encrypt/k", Some("alice"), Some(batch)).await;
    assert_eq!(s, StatusCode::OK);
    let items = b["batch"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[1],
        json!({"error": "invalid_request", "error_description": "invalid input: plaintext is not base64"})
    );
    let c0 = items[0]["ciphertext"].as_str().unwrap();
    let c2 = items[2]["ciphertext"].as_str().unwrap();
    let dbatch = json!({"batch": [{"ciphertext": c2, "context": b64("c")}, {"ciphertext": c0}, {"ciphertext": c2}]});
    let (s, b) = call(&app, "POST", "/vault/v1/decrypt/k", Some("alice"), Some(dbatch)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["batch"][0], json!({"plaintext": b64("three")}));
    assert_eq!(b["batch"][1], json!({"plaintext": b64("one")}));
    assert_eq!(b["batch"][2]["error"], "wrong_context");

    call(&app, "POST", "/vault/v1/keys/k/rotate", Some("alice"), None).await;
    let (s, b) = call(&app, "POST", "/vault/v1/rewrap/k", Some("alice"), Some(json!({"ciphertext": c0}))).await;
    assert_eq!((s, &b["key_version"]), (StatusCode::OK, &json!(2)));
    assert!(b["ciphertext"].as_str().unwrap().starts_with("pal:v2:"));

    // Tampered, malformed JSON, unknown fields, unknown key.
    // Change a full 6-bit character inside the tag.
    let mut chars: Vec<char> = ct.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let (s, b) = call(
        &app,
        "POST",
        "/vault/v1/decrypt/k",
        Some("alice"),
        Some(json!({"ciphertext": tampered, "context": b64("tenant-1")})),
    )
    .await;
    assert_eq!((s, &b["error"]), (StatusCode::BAD_REQUEST, &json!("tampered")));
    let (s, b) = raw(&app, "/vault/v1/encrypt/k", "{\"plaintext\": ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "invalid_request");
    assert_eq!(b["error_description"], "invalid input: malformed JSON body (Eof error at line 1 column 14)");
    let (s, b) = raw(&app, "/vault/v1/encrypt/k", "{\"plaintext\": \"aGk=\", \"secret\": \"TOPSECRET\"}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error_description"], "invalid input: malformed request (Data)");
    let (s, b) =
        call(&app, "POST", "/vault/v1/encrypt/nope", Some("alice"), Some(json!({"plaintext": b64("x")}))).await;
    assert_eq!((s, &b["error"]), (StatusCode::NOT_FOUND, &json!("unknown_key")));
}

#[tokio::test]
async fn datakeys_signatures_hmacs() {
    let f = fixture().await;
    let app = router(f.vault.clone(), Arc::new(BearerName));
    call(&app, "POST", "/vault/v1/keys/dek", Some("alice"), Some(json!({"type": "aes256-gcm-siv"}))).await;
    let (s, b) = call(&app, "POST", "/vault/v1/datakey/plaintext/dek", Some("alice"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(STANDARD.decode(b["plaintext"].as_str().unwrap()).unwrap().len(), 32);
    let (_, d) =
        call(&app, "POST", "/vault/v1/decrypt/dek", Some("alice"), Some(json!({"ciphertext": b["ciphertext"]}))).await;
    assert_eq!(d["plaintext"], b["plaintext"]);
    let (s, b) = call(&app, "POST", "/vault/v1/datakey/wrapped/dek", Some("alice"), Some(json!({"bits": 128}))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.get("plaintext").is_none() && b["ciphertext"].is_string());
    let (s, b) = call(&app, "POST", "/vault/v1/datakey/other/dek", Some("alice"), None).await;
    assert_eq!(
        (s, &b["error_description"]),
        (StatusCode::BAD_REQUEST, &json!("invalid input: the data key kind is plaintext or wrapped"))
    );

    call(&app, "POST", "/vault/v1/keys/signer", Some("alice"), Some(json!({"type": "ed25519"}))).await;
    let (s, b) = call(&app, "POST", "/vault/v1/sign/signer", Some("alice"), Some(json!({"input": b64("doc")}))).await;
    assert_eq!(s, StatusCode::OK);
    let sig = b["signature"].as_str().unwrap().to_owned();
    let body = json!({"batch": [{"input": b64("doc"), "signature": sig}, {"input": b64("dox"), "signature": sig}]});
    let (s, b) = call(&app, "POST", "/vault/v1/verify/signer", Some("alice"), Some(body)).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"batch": [{"valid": true}, {"valid": false}]})));
    let (s, b) = call(&app, "POST", "/vault/v1/sign/dek", Some("alice"), Some(json!({"input": b64("doc")}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({"error": "unsupported_operation", "error_description": "a aes256-gcm-siv key does not support sign"})
    );

    call(&app, "POST", "/vault/v1/keys/mac", Some("alice"), Some(json!({"type": "hmac-sha256"}))).await;
    let (s, b) = call(&app, "POST", "/vault/v1/hmac/mac", Some("alice"), Some(json!({"input": b64("m")}))).await;
    assert_eq!(s, StatusCode::OK);
    let tag = b["hmac"].as_str().unwrap().to_owned();
    let (s, b) =
        call(&app, "POST", "/vault/v1/verify/mac", Some("alice"), Some(json!({"input": b64("m"), "hmac": tag}))).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"valid": true})));
}

#[tokio::test]
async fn tokenize_and_forbidden_detokenize() {
    let f = fixture().await;
    let app = router(f.vault.clone(), Arc::new(BearerName));
    call(&app, "POST", "/vault/v1/keys/pan", Some("alice"), Some(json!({"type": "ff1-aes256"}))).await;
    let (s, b) = call(
        &app,
        "POST",
        "/vault/v1/tokenize/pan",
        Some("bob"),
        Some(json!({"value": "4111 1111 1111 1111", "format": "card"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let tok = b["token"].as_str().unwrap().to_owned();
    assert!(tok.ends_with(" 1111") && tok.len() == 19 && tok != "4111 1111 1111 1111");
    let req = json!({"token": tok, "format": "card"});
    let (s, b) = call(&app, "POST", "/vault/v1/detokenize/pan", Some("bob"), Some(req.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(b, json!({"error": "forbidden", "error_description": "User::\"bob\" may not detokenize with \"pan\""}));
    let ev = f.events.last();
    assert_eq!(
        (ev.decision, ev.stage, ev.status, ev.reason.as_str()),
        (Decision::Deny, Stage::Authz, 403, "vault:detokenize:pan:v?: forbidden")
    );
    let (s, b) = call(&app, "POST", "/vault/v1/detokenize/pan", Some("alice"), Some(req)).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"value": "4111 1111 1111 1111"})));

    let body = json!({"batch": [
        {"value": "123-45-6789", "format": "ssn", "mode": "vault", "deterministic": true},
        {"value": "123-45-6789", "format": "ssn", "mode": "vault", "deterministic": true},
        {"value": "12", "format": "digits"},
        {"value": "123456", "format": "zip"}
    ]});
    let (s, b) = call(&app, "POST", "/vault/v1/tokenize/pan", Some("alice"), Some(body)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["batch"][0], b["batch"][1]);
    assert_eq!(
        b["batch"][2],
        json!({"error": "invalid_request", "error_description": "invalid input: a digits value has 6 to 64 digits, not 2"})
    );
    assert_eq!(b["batch"][3]["error_description"], "invalid input: format is one of card, ssn, phone, digits");
    let t = b["batch"][0]["token"].as_str().unwrap();
    let (s, b) = call(
        &app,
        "POST",
        "/vault/v1/detokenize/pan",
        Some("alice"),
        Some(json!({"token": t, "format": "ssn", "mode": "vault"})),
    )
    .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"value": "123-45-6789"})));
    // No audit event carries the value or the token. (The latency is zeroed first: its digits
    // once held "6789" by chance.)
    let events: Vec<_> = f.events.all().into_iter().map(|e| AuditEvent { latency_ms: 0.0, ..e }).collect();
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains("4111") && !all.contains("6789") && !all.contains(t), "{all}");
}
