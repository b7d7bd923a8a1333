//! API keys: 256-bit random secrets shown once, stored only as `sha256:<hex>`.
//!
//! Why SHA-256 and not argon2: password hashes are slow to make guessing a *low-entropy*
//! secret expensive. A key drawn from 32 random bytes cannot be guessed (2^256 tries), so a
//! slow hash would only cost us CPU on every request; a single SHA-256 preimage-resists just as
//! well here and lets the lookup be one hash plus one `HashMap` probe. The lookup itself is not
//! constant-time, but its timing can only reveal bits of the *hash* of a key, which gives
//! nothing toward a key. At most two keys per client, so a rotation overlaps exactly one old
//! and one new key.

use std::collections::HashMap;

use crate::jose::b64_encode;
use crate::AuthnError;

/// Keys longer than this are refused without hashing (ours are 46 characters).
const MAX_PRESENTED_BYTES: usize = 512;
const MAX_KEYS_PER_CLIENT: usize = 2;

/// Generate a new key: `(key, hash)`. Give the key to the client once; store only the hash.
pub fn generate_api_key() -> Result<(String, String), AuthnError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthnError::Config("the system random generator failed".into()))?;
    let key = format!("pk_{}", b64_encode(&bytes));
    let hash = hash_api_key(&key);
    Ok((key, hash))
}

/// `sha256:` followed by the lowercase hex SHA-256 of the key's bytes.
pub fn hash_api_key(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: [u8; 16] = *b"0123456789abcdef";

/// One configured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyEntry {
    pub client: String,
    /// `sha256:<64 lowercase hex>`, as made by [`hash_api_key`].
    pub hash: String,
    pub scopes: Vec<String>,
}

/// Who presented a known key. Only [`ApiKeyStore::lookup`] hands one out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyIdentity {
    client: String,
    scopes: Vec<String>,
    key_id: String,
}

impl ApiKeyIdentity {
    pub fn client(&self) -> &str {
        &self.client
    }

    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The first 8 hex digits of the key's hash: names the key in logs without revealing it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// The configured keys, indexed by hash.
#[derive(Debug)]
pub struct ApiKeyStore {
    by_hash: HashMap<String, ApiKeyIdentity>,
}

impl ApiKeyStore {
    /// Refuses malformed hashes, a hash listed twice, and more than two keys for one client.
    pub fn new(entries: Vec<ApiKeyEntry>) -> Result<Self, AuthnError> {
        let mut by_hash = HashMap::with_capacity(entries.len());
        let mut per_client: HashMap<String, usize> = HashMap::new();
        for e in entries {
            let hex = e.hash.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(AuthnError::Config(format!(
                    "API key of client {}: hash must be sha256: and 64 lowercase hex digits",
                    e.client
                )));
            }
            if e.client.is_empty() {
                return Err(AuthnError::Config("API key with an empty client name".into()));
            }
            let count = per_client.entry(e.client.clone()).or_insert(0);
            *count += 1;
            if *count > MAX_KEYS_PER_CLIENT {
                return Err(AuthnError::Config(format!(
                    "client {} has more than {MAX_KEYS_PER_CLIENT} API keys (two overlap during a rotation)",
                    e.client
                )));
            }
            let key_id = hex.get(..8).unwrap_or_default().to_owned();
            let identity = ApiKeyIdentity { client: e.client, scopes: e.scopes, key_id };
            if let Some(previous) = by_hash.insert(e.hash, identity) {
                return Err(AuthnError::Config(format!(
                    "an API key hash is listed twice (clients {} and another entry)",
                    previous.client
                )));
            }
        }
        Ok(ApiKeyStore { by_hash })
    }

    /// The identity of a presented key, if it is one of ours.
    pub fn lookup(&self, presented: &str) -> Option<&ApiKeyIdentity> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_BYTES {
            return None;
        }
        self.by_hash.get(&hash_api_key(presented))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: &str, hash: &str) -> ApiKeyEntry {
        ApiKeyEntry { client: client.into(), hash: hash.into(), scopes: vec!["orders:read".into()] }
    }

    #[test]
    fn hash_is_sha256_hex() {
        // FIPS 180-2 SHA-256("abc").
        assert_eq!(hash_api_key("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_are_distinct() {
        let (key, hash) = generate_api_key().unwrap();
        let (key2, _) = generate_api_key().unwrap();
        assert!(key.starts_with("pk_"));
        assert_eq!(key.len(), 3 + 43); // 32 bytes in unpadded base64url
        assert_ne!(key, key2);
        assert_eq!(hash, hash_api_key(&key));
    }

    #[test]
    fn lookup_finds_the_client_and_nothing_else() {
        let (k1, h1) = generate_api_key().unwrap();
        let (k2, h2) = generate_api_key().unwrap();
        let (k3, h3) = generate_api_key().unwrap();
        let store = ApiKeyStore::new(vec![entry("billing", &h1), entry("billing", &h2), entry("ci", &h3)]).unwrap();
        assert_eq!(store.len(), 3);
        let id = store.lookup(&k1).unwrap();
        assert_eq!(id.client(), "billing");
        assert_eq!(id.scopes(), ["orders:read"]);
        assert_eq!(id.key_id(), &h1[7..15]);
        assert_eq!(store.lookup(&k2).unwrap().client(), "billing");
        assert_eq!(store.lookup(&k3).unwrap().client(), "ci");
        assert!(store.lookup(&h1).is_none(), "the hash itself is not a key");
        assert!(store.lookup(&k1[..k1.len() - 1]).is_none());
        assert!(store.lookup("").is_none());
        assert!(store.lookup(&"x".repeat(10_000)).is_none());
    }

    #[test]
    fn store_rejects_a_third_key_duplicates_and_malformed_hashes() {
        let hs: Vec<String> = (0..3).map(|_| generate_api_key().unwrap().1).collect();
        let e = ApiKeyStore::new(hs.iter().map(|h| entry("billing", h)).collect()).unwrap_err();
        assert_eq!(
            e,
            AuthnError::Config("client billing has more than 2 API keys (two overlap during a rotation)".into())
        );
        assert!(ApiKeyStore::new(vec![entry("a", &hs[0]), entry("b", &hs[0])]).is_err());
        for bad in [
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "sha256:ba7816bf",
            "sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ] {
            assert!(matches!(ApiKeyStore::new(vec![entry("a", bad)]), Err(AuthnError::Config(_))), "{bad}");
        }
        assert!(ApiKeyStore::new(vec![entry("", &hs[0])]).is_err());
        assert!(ApiKeyStore::new(vec![]).unwrap().is_empty());
    }
}
