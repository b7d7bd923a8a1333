//! The library API on a real store (SQLite; also PostgreSQL when PALISADE_TEST_PG_URL is set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use palisade_core::audit::{Decision, Stage};
use palisade_store::Store;
use palisade_vault::*;
use support::*;
use zeroize::Zeroizing;

fn enc(pt: &[u8], ctx: &[u8]) -> EncryptItem {
    EncryptItem { plaintext: Zeroizing::new(pt.to_vec()), context: ctx.to_vec(), key_version: None }
}

fn dec(ct: &str, ctx: &[u8]) -> DecryptItem {
    DecryptItem { ciphertext: ct.to_owned(), context: ctx.to_vec() }
}

#[tokio::test]
async fn rotation_rewrap_and_min_decryption_version() {
    let f = fixture().await;
    let v = &f.vault;
    let info = v.create_key(&alice(), "orders", KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap();
    assert_eq!((info.latest_version, info.min_decryption_version, info.deleted), (1, 1, false));
    let c1 = v.encrypt(&alice(), "orders", enc(b"card 4111", b"tenant-1")).await.unwrap();
    assert!(c1.ciphertext.starts_with("pal:v1:"), "{}", c1.ciphertext);
    assert_eq!(c1.key_version, 1);

    let info = v.rotate(&alice(), "orders").await.unwrap();
    assert_eq!(info.latest_version, 2);
    assert_eq!(info.versions.iter().map(|x| x.version).collect::<Vec<_>>(), vec![1, 2]);
    // The old ciphertext still decrypts; new ones use v2.
    assert_eq!(&v.decrypt(&alice(), "orders", dec(&c1.ciphertext, b"tenant-1")).await.unwrap()[..], b"card 4111");
    let c2 = v.encrypt(&alice(), "orders", enc(b"x", b"")).await.unwrap();
    assert!(c2.ciphertext.starts_with("pal:v2:"));

    // Rewrap moves v1 to v2 without the caller seeing the plaintext.
    let r = v.rewrap(&alice(), "orders", dec(&c1.ciphertext, b"tenant-1")).await.unwrap();
    assert_eq!(r.key_version, 2);
    assert!(r.ciphertext.starts_with("pal:v2:"));
    assert_eq!(&v.decrypt(&alice(), "orders", dec(&r.ciphertext, b"tenant-1")).await.unwrap()[..], b"card 4111");

    let cfg = KeyConfig { min_decryption_version: Some(2), ..KeyConfig::default() };
    assert_eq!(v.configure(&alice(), "orders", cfg).await.unwrap().min_decryption_version, 2);
    let e = v.decrypt(&alice(), "orders", dec(&c1.ciphertext, b"tenant-1")).await.unwrap_err();
    assert_eq!(e.to_string(), "key \"orders\" version 1 is below its min_decryption_version 2");
    assert_eq!((e.code(), e.status()), ("version_below_min_decryption_version", 400));
    assert!(matches!(
        v.rewrap(&alice(), "orders", dec(&c1.ciphertext, b"tenant-1")).await,
        Err(VaultError::VersionTooOld { version: 1, min: 2, .. })
    ));
    // Asking to encrypt with an old version is refused too.
    let mut old = enc(b"x", b"");
    old.key_version = Some(1);
    assert!(matches!(
        v.encrypt(&alice(), "orders", old).await,
        Err(VaultError::EncryptionVersionTooOld { version: 1, min: 2, .. })
    ));
    // A version that never existed.
    let bogus = r.ciphertext.replacen("pal:v2:", "pal:v7:", 1);
    let e = v.decrypt(&alice(), "orders", dec(&bogus, b"tenant-1")).await.unwrap_err();
    assert_eq!(e.to_string(), "key \"orders\" has no version 7");
    // Bad config values.
    let bad = KeyConfig { min_decryption_version: Some(3), ..KeyConfig::default() };
    assert_eq!(
        v.configure(&alice(), "orders", bad).await.unwrap_err().to_string(),
        "invalid input: min_decryption_version must be between 1 and the latest version 2"
    );
}

#[tokio::test]
async fn tampering_wrong_context_and_wrong_key_have_their_own_errors() {
    let f = fixture().await;
    let v = &f.vault;
    for t in [KeyType::Aes256Gcm, KeyType::XChaCha20Poly1305, KeyType::Aes256GcmSiv] {
        let (a, b) = (format!("a-{t}"), format!("b-{t}"));
        v.create_key(&alice(), &a, KeyOptions::new(t)).await.unwrap();
        v.create_key(&alice(), &b, KeyOptions::new(t)).await.unwrap();
        let c = v.encrypt(&alice(), &a, enc(b"secret", b"ctx")).await.unwrap().ciphertext;
        let e = v.decrypt(&alice(), &a, dec(&c, b"other")).await.unwrap_err();
        assert_eq!(e.to_string(), "the context (associated data) differs from the one the ciphertext was made with");
        let e = v.decrypt(&alice(), &b, dec(&c, b"ctx")).await.unwrap_err();
        assert_eq!(e.to_string(), format!("the ciphertext was made with another key, not {b:?}"));
        // Flip one bit of the body (the last base64url character carries tag bits).
        let mut chars: Vec<char> = c.chars().collect();
        let i = chars.len() - 3;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        let e = v.decrypt(&alice(), &a, dec(&tampered, b"ctx")).await.unwrap_err();
        assert_eq!(e.to_string(), "the ciphertext failed authentication: it was altered or is corrupt");
        assert_eq!(e.code(), "tampered");
        let e = v.decrypt(&alice(), &a, dec("vault:v1:abc", b"ctx")).await.unwrap_err();
        assert_eq!(e.to_string(), "malformed ciphertext: does not start with pal:v");
        let e = v.decrypt(&alice(), "nope", dec(&c, b"ctx")).await.unwrap_err();
        assert_eq!((e.to_string().as_str(), e.status()), ("no key named \"nope\"", 404));
    }
}

#[tokio::test]
async fn convergent_keys_are_deterministic_and_others_are_not() {
    let f = fixture().await;
    let v = &f.vault;
    let opts = KeyOptions { key_type: KeyType::Aes256GcmSiv, exportable: false, convergent: true };
    v.create_key(&alice(), "emails", opts).await.unwrap();
    let a = v.encrypt(&alice(), "emails", enc(b"a@example.com", b"users")).await.unwrap();
    let b = v.encrypt(&alice(), "emails", enc(b"a@example.com", b"users")).await.unwrap();
    let c = v.encrypt(&alice(), "emails", enc(b"a@example.com", b"orders")).await.unwrap();
    let d = v.encrypt(&alice(), "emails", enc(b"b@example.com", b"users")).await.unwrap();
    assert_eq!(a, b);
    assert_ne!(a.ciphertext, c.ciphertext);
    assert_ne!(a.ciphertext, d.ciphertext);
    assert_eq!(&v.decrypt(&alice(), "emails", dec(&a.ciphertext, b"users")).await.unwrap()[..], b"a@example.com");
    v.create_key(&alice(), "random", KeyOptions::new(KeyType::Aes256GcmSiv)).await.unwrap();
    let x = v.encrypt(&alice(), "random", enc(b"same", b"")).await.unwrap();
    let y = v.encrypt(&alice(), "random", enc(b"same", b"")).await.unwrap();
    assert_ne!(x, y);
    let bad = KeyOptions { key_type: KeyType::Aes256Gcm, exportable: false, convergent: true };
    assert_eq!(
        v.create_key(&alice(), "bad", bad).await.unwrap_err().to_string(),
        "invalid input: convergent (deterministic) encryption needs an aes256-gcm-siv key"
    );
}

#[tokio::test]
async fn batches_keep_order_and_report_per_item() {
    let f = fixture().await;
    let v = &f.vault;
    v.create_key(&alice(), "k", KeyOptions::new(KeyType::XChaCha20Poly1305)).await.unwrap();
    let items: Vec<EncryptItem> = (0..5).map(|i| enc(format!("item {i}").as_bytes(), b"c")).collect();
    let out = v.encrypt_batch(&alice(), "k", &items).await.unwrap();
    let cts: Vec<String> = out.into_iter().map(|r| r.unwrap().ciphertext).collect();
    let mut ds: Vec<DecryptItem> = cts.iter().map(|c| dec(c, b"c")).collect();
    ds[2].context = b"wrong".to_vec();
    ds[3].ciphertext = "garbage".into();
    let out = v.decrypt_batch(&alice(), "k", &ds).await.unwrap();
    assert_eq!(&out[0].as_ref().unwrap()[..], b"item 0");
    assert!(matches!(out[2], Err(VaultError::WrongContext)));
    assert!(matches!(out[3], Err(VaultError::Malformed(_))));
    assert_eq!(&out[4].as_ref().unwrap()[..], b"item 4");
    assert_eq!(f.events.last().reason, "vault:decrypt:k:v1 items=5 failed=2");
    let rw = v.rewrap_batch(&alice(), "k", &ds[..2]).await.unwrap();
    assert!(rw.iter().all(|r| r.as_ref().unwrap().key_version == 1));
    let dks = v
        .datakey_batch(&alice(), "k", &[DataKeyItem::default(), DataKeyItem { context: vec![], bits: Some(9) }], false)
        .await
        .unwrap();
    assert!(dks[0].as_ref().unwrap().plaintext.is_none());
    assert_eq!(dks[1].as_ref().err().unwrap().to_string(), "invalid input: bits is 128, 256 or 512");
}

#[tokio::test]
async fn data_keys_signatures_and_hmacs() {
    let f = fixture().await;
    let v = &f.vault;
    v.create_key(&alice(), "dek", KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap();
    let dk = v.datakey(&alice(), "dek", DataKeyItem { context: b"file-7".to_vec(), bits: None }, true).await.unwrap();
    let pt = dk.plaintext.unwrap();
    assert_eq!(pt.len(), 32);
    assert_eq!(v.decrypt(&alice(), "dek", dec(&dk.ciphertext, b"file-7")).await.unwrap(), pt);

    let info = v.create_key(&alice(), "signer", KeyOptions::new(KeyType::Ed25519)).await.unwrap();
    let pk = STANDARD.decode(info.versions[0].public_key.as_ref().unwrap()).unwrap();
    let sig = v.sign(&alice(), "signer", b"release 1.0".to_vec()).await.unwrap();
    assert!(sig.value.starts_with("pal:v1:"));
    // Anyone with the public key can check it (ring, independently of the vault).
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&sig.value["pal:v1:".len()..]).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &pk).verify(b"release 1.0", &raw).unwrap();
    let a = alice();
    let ok = v.verify(&a, "signer", VerifyItem { input: b"release 1.0".to_vec(), tag: sig.value.clone() });
    assert!(ok.await.unwrap());
    let bad = v.verify(&a, "signer", VerifyItem { input: b"release 2.0".to_vec(), tag: sig.value.clone() });
    assert!(!bad.await.unwrap());
    let e = v.sign(&alice(), "dek", b"x".to_vec()).await.unwrap_err();
    assert_eq!(e.to_string(), "a aes256-gcm key does not support sign");

    v.create_key(&alice(), "mac", KeyOptions::new(KeyType::HmacSha256)).await.unwrap();
    let m = v.hmac(&alice(), "mac", b"msg".to_vec()).await.unwrap();
    assert_eq!(m.value.len(), "pal:v1:".len() + 43);
    assert_eq!(v.hmac(&alice(), "mac", b"msg".to_vec()).await.unwrap(), m);
    assert!(v.verify_hmac(&alice(), "mac", VerifyItem { input: b"msg".to_vec(), tag: m.value.clone() }).await.unwrap());
    assert!(!v
        .verify_hmac(&alice(), "mac", VerifyItem { input: b"msh".to_vec(), tag: m.value.clone() })
        .await
        .unwrap());
    v.rotate(&alice(), "mac").await.unwrap();
    let cfg = KeyConfig { min_decryption_version: Some(2), ..KeyConfig::default() };
    v.configure(&alice(), "mac", cfg).await.unwrap();
    assert!(matches!(
        v.verify_hmac(&alice(), "mac", VerifyItem { input: b"msg".to_vec(), tag: m.value }).await,
        Err(VaultError::VersionTooOld { .. })
    ));
}

#[tokio::test]
async fn disable_export_and_deletion_lifecycle() {
    let f = fixture().await;
    let v = &f.vault;
    v.create_key(&alice(), "k", KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap();
    let c = v.encrypt(&alice(), "k", enc(b"p", b"")).await.unwrap().ciphertext;
    v.configure(&alice(), "k", KeyConfig { disabled: Some(true), ..KeyConfig::default() }).await.unwrap();
    let e = v.encrypt(&alice(), "k", enc(b"p", b"")).await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("key_disabled", 409));
    assert_eq!(&v.decrypt(&alice(), "k", dec(&c, b"")).await.unwrap()[..], b"p");
    v.configure(&alice(), "k", KeyConfig { disabled: Some(false), ..KeyConfig::default() }).await.unwrap();
    v.encrypt(&alice(), "k", enc(b"p", b"")).await.unwrap();

    let e = v.export(&alice(), "k").await.unwrap_err();
    assert_eq!((e.to_string().as_str(), e.status()), ("key \"k\" is not exportable", 403));
    let opts = KeyOptions { key_type: KeyType::HmacSha256, exportable: true, convergent: false };
    v.create_key(&alice(), "x", opts).await.unwrap();
    v.rotate(&alice(), "x").await.unwrap();
    let ex = v.export(&alice(), "x").await.unwrap();
    assert_eq!(ex.versions.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    // The exported key computes the same HMAC as the vault.
    let raw = STANDARD.decode(&ex.versions[&2]).unwrap();
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw), b"m");
    let ours = v.hmac(&alice(), "x", b"m".to_vec()).await.unwrap().value;
    assert_eq!(ours, format!("pal:v2:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())));

    // Scheduled deletion: reads still work, nothing new; cancel restores.
    let info = v.schedule_deletion(&alice(), "k", Duration::from_secs(3600)).await.unwrap();
    assert!(info.deletion_at.is_some());
    assert_eq!(v.encrypt(&alice(), "k", enc(b"p", b"")).await.unwrap_err().code(), "deletion_scheduled");
    assert_eq!(&v.decrypt(&alice(), "k", dec(&c, b"")).await.unwrap()[..], b"p");
    assert!(v.cancel_deletion(&alice(), "k").await.unwrap().deletion_at.is_none());
    v.encrypt(&alice(), "k", enc(b"p", b"")).await.unwrap();
    // Zero grace: gone at once, for good.
    v.schedule_deletion(&alice(), "k", Duration::ZERO).await.unwrap();
    let e = v.decrypt(&alice(), "k", dec(&c, b"")).await.unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), e.status()),
        ("key \"k\" was deleted; nothing it protected can be recovered", 404)
    );
    assert_eq!(v.key_info(&alice(), "k").await.unwrap_err().code(), "key_deleted");
    assert_eq!(
        v.create_key(&alice(), "k", KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap_err().code(),
        "key_exists"
    );
    assert_eq!(v.list_keys(&alice()).await.unwrap(), vec!["x".to_owned()]);
    let rows: i64 = palisade_store::sqlx::query_scalar("SELECT COUNT(*) FROM vault_key_versions WHERE name = 'k'")
        .fetch_one(f.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0, "material is destroyed");
}

#[tokio::test]
async fn tokenization_fpe_vault_and_authorization() {
    let f = fixture().await;
    let v = &f.vault;
    v.create_key(&alice(), "cards", KeyOptions::new(KeyType::Ff1Aes256)).await.unwrap();
    let card = "4111-1111-1111-1111";
    let t = v.tokenize(&alice(), "cards", TokenizeItem::new(card, TokenFormat::Card, TokenMode::Fpe)).await.unwrap();
    assert_eq!(t.len(), card.len());
    assert!(t.ends_with("-1111"));
    assert_ne!(t, card);
    let back = v.detokenize(&alice(), "cards", DetokenizeItem::new(&t, TokenFormat::Card, TokenMode::Fpe)).await;
    assert_eq!(back.unwrap().as_str(), card);

    // Bob may not: a typed error and an audit event (deny, authz, 403), without the token.
    let e =
        v.detokenize(&bob(), "cards", DetokenizeItem::new(&t, TokenFormat::Card, TokenMode::Fpe)).await.unwrap_err();
    assert_eq!(e.to_string(), "User::\"bob\" may not detokenize with \"cards\"");
    assert_eq!(e.status(), 403);
    let ev = f.events.last();
    assert_eq!((ev.decision, ev.stage, ev.status), (Decision::Deny, Stage::Authz, 403));
    assert_eq!(ev.reason, "vault:detokenize:cards:v?: forbidden");
    assert_eq!(ev.principal, "User::\"bob\"");

    // Vault tokens: random unless deterministic; stored encrypted.
    let rnd = TokenMode::Vault { deterministic: false };
    let a = v.tokenize(&alice(), "cards", TokenizeItem::new("123-45-6789", TokenFormat::Ssn, rnd)).await.unwrap();
    let b = v.tokenize(&alice(), "cards", TokenizeItem::new("123-45-6789", TokenFormat::Ssn, rnd)).await.unwrap();
    assert_ne!(a, b);
    assert_eq!((&a[3..4], &a[6..7]), ("-", "-"));
    let det = TokenMode::Vault { deterministic: true };
    let c = v.tokenize(&alice(), "cards", TokenizeItem::new("123-45-6789", TokenFormat::Ssn, det)).await.unwrap();
    let d = v.tokenize(&alice(), "cards", TokenizeItem::new("123-45-6789", TokenFormat::Ssn, det)).await.unwrap();
    assert_eq!(c, d);
    for tok in [&a, &b, &c] {
        let got = v.detokenize(&alice(), "cards", DetokenizeItem::new(tok, TokenFormat::Ssn, rnd)).await.unwrap();
        assert_eq!(got.as_str(), "123-45-6789");
    }
    let stored: Vec<String> = palisade_store::sqlx::query_scalar("SELECT sealed_value FROM vault_tokens")
        .fetch_all(f.store.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|s| !s.contains("6789")));
    let e =
        v.detokenize(&alice(), "cards", DetokenizeItem::new("000-00-0000", TokenFormat::Ssn, rnd)).await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("unknown_token", 404));

    // Batch, order kept, per-item errors.
    let items = vec![
        TokenizeItem::new("5555555555554444", TokenFormat::Card, TokenMode::Fpe),
        TokenizeItem::new("5555555555554445", TokenFormat::Card, TokenMode::Fpe),
        TokenizeItem::new("+1 415 555 0100", TokenFormat::Phone, TokenMode::Fpe),
    ];
    let out = v.tokenize_batch(&alice(), "cards", &items).await.unwrap();
    assert!(out[0].as_ref().unwrap().ends_with("4444"));
    assert_eq!(out[1].as_ref().unwrap_err().to_string(), "invalid input: the card number does not pass the Luhn check");
    assert_eq!(out[2].as_ref().unwrap().len(), 15);
    assert!(f.events.all().iter().all(|e| !e.reason.contains("4111") && !e.reason.contains("6789")));
}

/// Keys written by one instance are read by another (no shared cache), on SQLite and, when
/// PALISADE_TEST_PG_URL is set, PostgreSQL.
async fn storage_round_trip(store: &Store, name: &str) {
    let events = Arc::new(Events::default());
    let one = Vault::new(store, master(), events.clone(), Arc::new(AliceOnly));
    one.create_key(&alice(), name, KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap();
    one.rotate(&alice(), name).await.unwrap();
    let c = one.encrypt(&alice(), name, enc(b"persisted", b"ctx")).await.unwrap();
    let two = Vault::new(store, master(), events.clone(), Arc::new(AliceOnly));
    assert_eq!(&two.decrypt(&alice(), name, dec(&c.ciphertext, b"ctx")).await.unwrap()[..], b"persisted");
    let info = two.key_info(&alice(), name).await.unwrap();
    assert_eq!((info.latest_version, info.versions.len()), (2, 2));
    // Another master key cannot open the stored material.
    let other = Arc::new(palisade_crypto::MasterKey::from_base64(&STANDARD.encode([1u8; 32])).unwrap());
    let three = Vault::new(store, other, events, Arc::new(AliceOnly));
    let e = three.decrypt(&alice(), name, dec(&c.ciphertext, b"ctx")).await.unwrap_err();
    assert_eq!(e.to_string(), format!("sealed key material of {name:?} does not open under this master key"));
    // A racing rotation from a stale instance loses cleanly.
    let vt = one.tokenize(&alice(), name, TokenizeItem::new("123456", TokenFormat::Digits, TokenMode::Fpe)).await;
    assert_eq!(vt.unwrap_err().to_string(), "a aes256-gcm key does not support tokenize");
}

#[tokio::test]
async fn storage_sqlite_and_optionally_postgres() {
    let f = fixture().await;
    storage_round_trip(&f.store, "persist").await;
    if let Ok(url) = std::env::var("PALISADE_TEST_PG_URL") {
        let pg = Store::open(&url).await.unwrap();
        let name = format!("persist-{}", std::process::id());
        storage_round_trip(&pg, &name).await;
    }
}

#[tokio::test]
async fn audit_events_name_op_key_version_and_principal_only() {
    let f = fixture().await;
    let v = &f.vault;
    v.create_key(&alice(), "orders", KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap();
    let c = v.encrypt(&alice(), "orders", enc(b"TOPSECRET", b"ctx")).await.unwrap();
    v.decrypt(&alice(), "orders", dec(&c.ciphertext, b"nope")).await.unwrap_err();
    let evs = f.events.all();
    assert_eq!(
        f.events.reasons(),
        vec!["vault:create:orders:v1", "vault:encrypt:orders:v1", "vault:decrypt:orders:v?: wrong_context"]
    );
    assert_eq!((evs[1].decision, evs[1].stage, evs[1].status), (Decision::Allow, Stage::Other, 200));
    assert_eq!((evs[2].decision, evs[2].status), (Decision::Deny, 400));
    assert!(evs.iter().all(|e| e.source == "vault" && e.route == "vault" && e.principal == "User::\"alice\""));
    let all = serde_json::to_string(&evs).unwrap();
    assert!(!all.contains("TOPSECRET") && !all.contains(&c.ciphertext[7..]), "{all}");
}

/// Nothing happens unaudited: when the audit pipeline cannot take the event (a full queue), the
/// operation's result is withheld with a 503-class error, and works again once it can.
#[tokio::test]
async fn a_full_audit_queue_withholds_results() {
    let f = fixture().await;
    let v = &f.vault;
    v.create_key(&alice(), "k", KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap();
    let ct = v.encrypt(&alice(), "k", enc(b"secret", b"")).await.unwrap().ciphertext;
    f.events.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = f.events.all().len();
    let e = v.encrypt(&alice(), "k", enc(b"secret", b"")).await.unwrap_err();
    assert!(matches!(e, VaultError::AuditUnavailable), "{e:?}");
    assert_eq!((e.status(), e.code()), (503, "audit_unavailable"));
    assert!(matches!(v.decrypt(&alice(), "k", dec(&ct, b"")).await, Err(VaultError::AuditUnavailable)));
    assert_eq!(f.events.all().len(), before, "nothing was recorded while full");
    f.events.1.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(&*v.decrypt(&alice(), "k", dec(&ct, b"")).await.unwrap(), b"secret");
}
