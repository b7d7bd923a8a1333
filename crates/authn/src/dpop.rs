//! DPoP proofs (RFC 9449 §4.3): a JWS signed by the key in its own `jwk` header, naming the
//! request (`htm`, `htu`), fresh (`iat`), unique (`jti`, remembered in a bounded replay cache
//! that fails closed when full) and tied to the access token (`ath`) and its `cnf.jkt`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::jose::{self, Alg, PublicKey};
use crate::AuthnError;

/// Proofs are small: a header with one public key and five short claims.
const MAX_PROOF_BYTES: usize = 8192;
const MAX_JTI_BYTES: usize = 256;

/// Verifies DPoP proofs and remembers their `jti`s. `Send + Sync`; one per listener.
#[derive(Debug)]
pub struct DpopVerifier {
    iat_window: u64,
    replay_ttl: u64,
    max_entries: usize,
    seen: Mutex<ReplayCache>,
}

#[derive(Debug, Default)]
struct ReplayCache {
    /// SHA-256(jkt || 0 || jti) → expiry (Unix seconds).
    entries: HashMap<[u8; 32], u64>,
    /// Insertion order, for expiry; `now` only grows in practice, so the front expires first.
    order: VecDeque<(u64, [u8; 32])>,
}

impl ReplayCache {
    fn evict(&mut self, now: u64) {
        while let Some((expiry, key)) = self.order.front().copied() {
            if expiry > now {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&key) == Some(&expiry) {
                self.entries.remove(&key);
            }
        }
    }
}

impl DpopVerifier {
    /// `iat_window`: how far `iat` may be from now, either way. `replay_ttl`: how long a `jti`
    /// is remembered; at least the window on both sides (2 × `iat_window`) is used, since a
    /// proof stays acceptable that long. `max_entries`: replay cache bound; when full, proofs
    /// are refused (fail closed) until entries expire.
    pub fn new(iat_window: Duration, replay_ttl: Duration, max_entries: usize) -> Self {
        let iat_window = iat_window.as_secs();
        DpopVerifier {
            iat_window,
            replay_ttl: replay_ttl.as_secs().max(iat_window.saturating_mul(2)),
            max_entries,
            seen: Mutex::new(ReplayCache::default()),
        }
    }

    /// Verify `proof` for a request `method htu` carrying `access_token`; `expected_jkt` is the
    /// token's `cnf.jkt`. Returns the proof key's RFC 7638 thumbprint.
    pub fn verify(
        &self,
        proof: &str,
        method: &str,
        htu: &str,
        access_token: &str,
        expected_jkt: Option<&str>,
        now: u64,
    ) -> Result<String, AuthnError> {
        if proof.len() > MAX_PROOF_BYTES {
            return Err(AuthnError::DpopInvalid("the DPoP proof is too large"));
        }
        let c = jose::split_compact(proof).map_err(|_| AuthnError::DpopInvalid("the DPoP proof is not a JWS"))?;
        let typ = c.header.get("typ").and_then(Value::as_str).map(jose::normalize_typ);
        if typ.as_deref() != Some("dpop+jwt") {
            return Err(AuthnError::DpopInvalid("the DPoP proof typ must be dpop+jwt"));
        }
        let alg = c.header.get("alg").and_then(Value::as_str).unwrap_or_default();
        let alg = Alg::from_header(alg)
            .map_err(|_| AuthnError::DpopInvalid("the DPoP proof alg is not an accepted asymmetric alg"))?;
        if c.header.contains_key("crit") {
            return Err(AuthnError::DpopInvalid("the DPoP proof has a crit header"));
        }
        let jwk = c.header.get("jwk").and_then(Value::as_object).ok_or(AuthnError::DpopInvalid("the DPoP proof has no jwk"))?;
        let key = PublicKey::from_jwk(jwk).map_err(|why| {
            if why == "the JWK contains private key material" {
                AuthnError::DpopInvalid("the DPoP jwk contains private key material")
            } else {
                AuthnError::DpopInvalid("the DPoP jwk is not a supported public key")
            }
        })?;
        if !key.fits(alg) {
            return Err(AuthnError::DpopInvalid("the DPoP proof alg does not match its jwk"));
        }
        if !key.verify(alg, c.signing_input.as_bytes(), &c.signature) {
            return Err(AuthnError::DpopInvalid("the DPoP proof signature is invalid"));
        }
        let claims = &c.payload;
        let claim = |name: &str| claims.get(name).and_then(Value::as_str);
        if claim("htm") != Some(method) {
            return Err(AuthnError::DpopInvalid("the DPoP proof htm does not match the request method"));
        }
        let proof_htu = claim("htu").and_then(normalize_htu);
        if proof_htu.is_none() || proof_htu != normalize_htu(htu) {
            return Err(AuthnError::DpopInvalid("the DPoP proof htu does not match the request URI"));
        }
        let iat = claims
            .get("iat")
            .and_then(jose::numeric_date)
            .ok_or(AuthnError::DpopInvalid("the DPoP proof has no valid iat"))?;
        if iat.abs_diff(now) > self.iat_window {
            return Err(AuthnError::DpopInvalid("the DPoP proof iat is outside the accepted window"));
        }
        let jti = claim("jti").filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES);
        let jti = jti.ok_or(AuthnError::DpopInvalid("the DPoP proof has no valid jti"))?;
        let ath = claim("ath").ok_or(AuthnError::DpopInvalid("the DPoP proof has no ath"))?;
        let expected_ath = jose::b64_encode(ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes()).as_ref());
        if !bool::from(ath.as_bytes().ct_eq(expected_ath.as_bytes())) {
            return Err(AuthnError::DpopInvalid("the DPoP proof ath does not match the access token"));
        }
        let jkt = key.thumbprint();
        if let Some(expected) = expected_jkt {
            if !bool::from(jkt.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(AuthnError::DpopKeyMismatch);
            }
        }
        // Remember the jti last, so that invalid proofs cannot fill the cache. The key includes
        // the jkt: a jti is only unique per signer, and nobody can burn another key's jti.
        self.remember(&jkt, jti, now)?;
        Ok(jkt)
    }

    fn remember(&self, jkt: &str, jti: &str, now: u64) -> Result<(), AuthnError> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(jkt.as_bytes());
        ctx.update(&[0]);
        ctx.update(jti.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        let mut cache = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        cache.evict(now);
        if cache.entries.get(&key).is_some_and(|expiry| *expiry > now) {
            return Err(AuthnError::DpopReplay);
        }
        if cache.entries.len() >= self.max_entries {
            return Err(AuthnError::DpopReplayCacheFull);
        }
        let expiry = now.saturating_add(self.replay_ttl);
        cache.entries.insert(key, expiry);
        cache.order.push_back((expiry, key));
        Ok(())
    }
}

/// `htu` comparison form (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2–6.2.3): no query or fragment,
/// scheme and host lowercased, default port dropped, empty path as `/`, percent-encodings in
/// upper case. `None` for anything that is not an absolute http(s) URI.
pub(crate) fn normalize_htu(uri: &str) -> Option<String> {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    let uri = uri.get(..end)?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let slash = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(slash);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    let mut out = format!("{scheme}://{authority}");
    if path.is_empty() {
        out.push('/');
    }
    let mut chars = path.chars();
    while let Some(ch) = chars.next() {
        out.push(ch);
        if ch == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_uppercase());
                }
            }
        }
    }
    Some(out)
}
