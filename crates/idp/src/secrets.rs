//! Secrets: random values, SHA-256 lookup hashes, argon2id password/secret hashes, and
//! constant-time comparison. Verified client secrets are remembered (as a keyed MAC, never in
//! clear) so a confidential client does not pay an argon2id run on every token request.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // SystemRandom only fails when the OS has no entropy source at all; fail closed.
    if SystemRandom::new().fill(&mut buf).is_err() {
        std::process::abort();
    }
    URL_SAFE_NO_PAD.encode(buf)
}

/// Lowercase hex SHA-256: how refresh tokens, codes, sessions and CSRF values are stored.
pub fn sha256_hex(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// base64url(SHA-256(bytes)).
pub fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// argon2id (RFC 9106 second recommended profile defaults of the `argon2` crate: m=19 MiB, t=2, p=1).
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(random_token(16).as_bytes()).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Constant-time verification against a PHC string; a malformed hash never verifies.
pub fn verify_secret(phc: &str, secret: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(secret.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user or client does not exist, so the answer takes the
/// same time either way.
pub fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_secret(&random_token(16)).unwrap_or_default())
}

/// Remembers successful verifications: `(stored hash, HMAC(process key, secret))` per client.
/// A changed stored hash (rotation) or a different secret misses and falls back to argon2id.
pub struct VerifiedCache {
    key: ring::hmac::Key,
    entries: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        VerifiedCache {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, random_token(32).as_bytes()),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl VerifiedCache {
    fn mac(&self, secret: &str) -> Vec<u8> {
        ring::hmac::sign(&self.key, secret.as_bytes()).as_ref().to_vec()
    }

    pub fn hit(&self, id: &str, phc: &str, secret: &str) -> bool {
        let mac = self.mac(secret);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(id).is_some_and(|(h, m)| h == phc && ct_eq(m, &mac))
    }

    pub fn remember(&self, id: &str, phc: &str, secret: &str) {
        let mac = self.mac(secret);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= 10_000 {
            entries.clear();
        }
        entries.insert(id.to_owned(), (phc.to_owned(), mac));
    }

    pub fn forget(&self, id: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Verify a secret off the async workers (argon2id is deliberately slow).
pub async fn verify_secret_blocking(phc: String, secret: String) -> bool {
    tokio::task::spawn_blocking(move || verify_secret(&phc, &secret)).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_secret("hunter2").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_secret(&h, "hunter2"));
        assert!(!verify_secret(&h, "hunter3"));
        assert!(!verify_secret("not a hash", "hunter2"));
    }

    #[test]
    fn cache_misses_on_other_secret_or_rotated_hash() {
        let c = VerifiedCache::default();
        c.remember("cli", "$h1", "s1");
        assert!(c.hit("cli", "$h1", "s1"));
        assert!(!c.hit("cli", "$h1", "s2"));
        assert!(!c.hit("cli", "$h2", "s1"));
        assert!(!c.hit("other", "$h1", "s1"));
        c.forget("cli");
        assert!(!c.hit("cli", "$h1", "s1"));
    }

    #[test]
    fn hashes() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // RFC 7636 appendix B.
        assert_eq!(
            sha256_b64(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(random_token(32).len(), 43);
    }
}
