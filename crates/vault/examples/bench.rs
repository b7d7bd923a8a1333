//! Rough throughput of the library calls (no HTTP): `cargo run --release -p palisade-vault
//! --example bench [seconds-per-case]`. Prints ops/s for encrypt and decrypt (single and in
//! batches of 1000), FF1 card tokens and vault tokens. The lead's benchmark measures the server.
// A benchmark's output is its purpose.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_core::audit::{AuditEvent, AuditSink};
use palisade_crypto::MasterKey;
use palisade_store::Store;
use palisade_vault::*;
use zeroize::Zeroizing;

struct Discard;
impl AuditSink for Discard {
    fn record(&self, _event: AuditEvent) {}
}

struct AllowAll;
impl DetokenizeAuthorizer for AllowAll {
    fn may_detokenize(&self, _principal: &str, _template: &str) -> bool {
        true
    }
}

fn report(name: &str, ops: usize, elapsed: Duration) {
    println!(
        "{name:<40} {:>12.0} ops/s  ({ops} ops in {:.2} s)",
        ops as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let budget = Duration::from_secs_f64(secs);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&palisade_store::sqlite_url(dir.path())).await.unwrap();
    let master = Arc::new(MasterKey::load_or_create(&dir.path().join("master.key")).unwrap());
    let vault = Vault::new(&store, master, Arc::new(Discard), Arc::new(AllowAll));
    let who = Caller::new("Bench");

    for t in [KeyType::Aes256Gcm, KeyType::XChaCha20Poly1305, KeyType::Aes256GcmSiv] {
        let name = t.as_str();
        vault.create_key(&who, name, KeyOptions::new(t)).await.unwrap();
        let item =
            EncryptItem { plaintext: Zeroizing::new(vec![7u8; 256]), context: b"ctx".to_vec(), key_version: None };
        let ct = vault.encrypt(&who, name, item.clone()).await.unwrap().ciphertext;

        let (mut n, start) = (0usize, Instant::now());
        while start.elapsed() < budget {
            vault.encrypt(&who, name, item.clone()).await.unwrap();
            n += 1;
        }
        report(&format!("{name} encrypt 256 B"), n, start.elapsed());

        let d = DecryptItem { ciphertext: ct, context: b"ctx".to_vec() };
        let (mut n, start) = (0usize, Instant::now());
        while start.elapsed() < budget {
            vault.decrypt(&who, name, d.clone()).await.unwrap();
            n += 1;
        }
        report(&format!("{name} decrypt 256 B"), n, start.elapsed());

        let batch: Vec<EncryptItem> = (0..1000).map(|_| item.clone()).collect();
        let (mut n, start) = (0usize, Instant::now());
        let mut cts = Vec::new();
        while start.elapsed() < budget {
            cts = vault.encrypt_batch(&who, name, &batch).await.unwrap();
            n += batch.len();
        }
        report(&format!("{name} encrypt batch x1000"), n, start.elapsed());

        let dbatch: Vec<DecryptItem> = cts
            .into_iter()
            .map(|r| DecryptItem { ciphertext: r.unwrap().ciphertext, context: b"ctx".to_vec() })
            .collect();
        let (mut n, start) = (0usize, Instant::now());
        while start.elapsed() < budget {
            vault.decrypt_batch(&who, name, &dbatch).await.unwrap();
            n += dbatch.len();
        }
        report(&format!("{name} decrypt batch x1000"), n, start.elapsed());
    }

    vault.create_key(&who, "pan", KeyOptions::new(KeyType::Ff1Aes256)).await.unwrap();
    let cards: Vec<TokenizeItem> =
        (0..1000).map(|_| TokenizeItem::new("4111 1111 1111 1111", TokenFormat::Card, TokenMode::Fpe)).collect();
    let (mut n, start) = (0usize, Instant::now());
    while start.elapsed() < budget {
        vault.tokenize_batch(&who, "pan", &cards).await.unwrap();
        n += cards.len();
    }
    report("ff1 card tokenize (batch x1000)", n, start.elapsed());

    let vt = TokenizeItem::new("123-45-6789", TokenFormat::Ssn, TokenMode::Vault { deterministic: false });
    let (mut n, start) = (0usize, Instant::now());
    while start.elapsed() < budget {
        vault.tokenize(&who, "pan", vt.clone()).await.unwrap();
        n += 1;
    }
    report("vault token tokenize (SQLite insert)", n, start.elapsed());
}
