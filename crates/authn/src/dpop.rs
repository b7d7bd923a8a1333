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
        let jwk = c
            .header
            .get("jwk")
            .and_then(Value::as_object)
            .ok_or(AuthnError::DpopInvalid("the DPoP proof has no jwk"))?;
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
        let expected_ath =
            jose::b64_encode(ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes()).as_ref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{compact, TestKey};
    use serde_json::json;

    /// RFC 9449 §7.1, Figure 13: a proof for a protected resource request, its access token
    /// and the key's thumbprint (§6.1).
    const RFC_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6Ik",
        "VDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCR",
        "nMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JE",
        "QSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIj",
        "oiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0Z",
        "WRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNF",
        "c05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71E",
        "OptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA",
    );
    const RFC_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    const RFC_HTU: &str = "https://resource.example.org/protectedresource";

    const NOW: u64 = 1_700_000_000;
    const TOKEN: &str = "access-token-value";
    const HTU: &str = "https://api.example.com/orders/1";

    fn verifier() -> DpopVerifier {
        DpopVerifier::new(Duration::from_secs(60), Duration::from_secs(300), 1000)
    }

    fn ath(token: &str) -> String {
        jose::b64_encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
    }

    fn proof_with(key: &TestKey, header: impl FnOnce(&mut Value), claims: impl FnOnce(&mut Value)) -> String {
        let mut h = json!({"typ": "dpop+jwt", "alg": key.alg, "jwk": key.public});
        header(&mut h);
        let mut c =
            json!({"jti": format!("{:x}", rand_u64()), "htm": "GET", "htu": HTU, "iat": NOW, "ath": ath(TOKEN)});
        claims(&mut c);
        key.sign(&h, &c)
    }

    fn rand_u64() -> u64 {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 8];
        ring::rand::SystemRandom::new().fill(&mut b).unwrap();
        u64::from_le_bytes(b)
    }

    fn jkt(key: &TestKey) -> String {
        PublicKey::from_jwk(key.public.as_object().unwrap()).unwrap().thumbprint()
    }

    #[test]
    fn rfc9449_resource_request_proof_verifies() {
        let v = verifier();
        let got = v.verify(RFC_PROOF, "GET", RFC_HTU, RFC_TOKEN, Some(RFC_JKT), 1_562_262_618).unwrap();
        assert_eq!(got, RFC_JKT);
        assert_eq!(ath(RFC_TOKEN), "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        // Replaying the RFC's proof is refused.
        let e = v.verify(RFC_PROOF, "GET", RFC_HTU, RFC_TOKEN, Some(RFC_JKT), 1_562_262_618).unwrap_err();
        assert_eq!(e, AuthnError::DpopReplay);
        assert_eq!(e.oauth_error(), "invalid_dpop_proof");
    }

    #[test]
    fn valid_proofs_from_each_key_type() {
        let v = verifier();
        for key in [TestKey::es256(), TestKey::es384(), TestKey::eddsa(), TestKey::rsa("PS256"), TestKey::rsa("RS256")]
        {
            let p = proof_with(&key, |_| {}, |_| {});
            let expected = jkt(&key);
            assert_eq!(v.verify(&p, "GET", HTU, TOKEN, Some(&expected), NOW).unwrap(), expected, "{}", key.alg);
            // Without an expected jkt the thumbprint is still returned.
            let p = proof_with(&key, |_| {}, |_| {});
            assert_eq!(v.verify(&p, "GET", HTU, TOKEN, None, NOW).unwrap(), expected);
        }
    }

    #[test]
    fn each_violation_is_refused() {
        let v = verifier();
        let key = TestKey::es256();
        let other = TestKey::es256();
        let check = |p: &str| v.verify(p, "GET", HTU, TOKEN, Some(&jkt(&key)), NOW).unwrap_err();
        let invalid = |why: &'static str| AuthnError::DpopInvalid(why);

        let p = proof_with(&key, |_| {}, |_| {});
        v.verify(&p, "GET", HTU, TOKEN, None, NOW).unwrap();
        assert_eq!(check(&p), AuthnError::DpopReplay);
        assert_eq!(
            check(&proof_with(&key, |_| {}, |c| c["htm"] = json!("POST"))),
            invalid("the DPoP proof htm does not match the request method")
        );
        assert_eq!(
            check(&proof_with(&key, |_| {}, |c| c["htm"] = json!("get"))),
            invalid("the DPoP proof htm does not match the request method")
        );
        let htu_mismatch = invalid("the DPoP proof htu does not match the request URI");
        for htu in ["https://api.example.com/orders/2", "http://api.example.com/orders/1", "https://evil.test/orders/1"]
        {
            assert_eq!(check(&proof_with(&key, |_| {}, |c| c["htu"] = json!(htu))), htu_mismatch, "{htu}");
        }
        assert_eq!(check(&proof_with(&key, |_| {}, |c| c["htu"] = json!(5))), htu_mismatch);
        let stale = invalid("the DPoP proof iat is outside the accepted window");
        assert_eq!(check(&proof_with(&key, |_| {}, |c| c["iat"] = json!(NOW - 61))), stale);
        assert_eq!(check(&proof_with(&key, |_| {}, |c| c["iat"] = json!(NOW + 61))), stale);
        assert_eq!(
            check(&proof_with(&key, |_| {}, |c| _ = c.as_object_mut().unwrap().remove("iat"))),
            invalid("the DPoP proof has no valid iat")
        );
        assert_eq!(
            check(&proof_with(&key, |_| {}, |c| c["ath"] = json!(ath("another-token")))),
            invalid("the DPoP proof ath does not match the access token")
        );
        assert_eq!(
            check(&proof_with(&key, |_| {}, |c| _ = c.as_object_mut().unwrap().remove("ath"))),
            invalid("the DPoP proof has no ath")
        );
        for jti in [json!(""), json!(1), json!("x".repeat(257))] {
            assert_eq!(
                check(&proof_with(&key, |_| {}, |c| c["jti"] = jti)),
                invalid("the DPoP proof has no valid jti")
            );
        }
        // A jwk header carrying the private key.
        let leaked = proof_with(&key, |h| h["jwk"]["d"] = json!(jose::b64_encode(&[7; 32])), |_| {});
        assert_eq!(check(&leaked), invalid("the DPoP jwk contains private key material"));
        // Another key than the one the token is bound to.
        assert_eq!(check(&proof_with(&other, |_| {}, |_| {})), AuthnError::DpopKeyMismatch);
        // Header rules.
        for typ in [json!("jwt"), json!("at+jwt"), json!(null)] {
            assert_eq!(
                check(&proof_with(&key, |h| h["typ"] = typ, |_| {})),
                invalid("the DPoP proof typ must be dpop+jwt")
            );
        }
        let bad_alg = invalid("the DPoP proof alg is not an accepted asymmetric alg");
        for alg in ["none", "HS256", "NONE"] {
            let h = json!({"typ": "dpop+jwt", "alg": alg, "jwk": key.public});
            let c = json!({"jti": "j", "htm": "GET", "htu": HTU, "iat": NOW, "ath": ath(TOKEN)});
            assert_eq!(check(&compact(&h, &c, b"")), bad_alg);
        }
        assert_eq!(
            check(&proof_with(&key, |h| h["alg"] = json!("EdDSA"), |_| {})),
            invalid("the DPoP proof alg does not match its jwk")
        );
        assert_eq!(
            check(&proof_with(&key, |h| h["jwk"] = other.public.clone(), |_| {})),
            invalid("the DPoP proof signature is invalid")
        );
        assert_eq!(
            check(&proof_with(&key, |h| h["crit"] = json!(["htm"]), |_| {})),
            invalid("the DPoP proof has a crit header")
        );
        assert_eq!(
            check(&proof_with(&key, |h| _ = h.as_object_mut().unwrap().remove("jwk"), |_| {})),
            invalid("the DPoP proof has no jwk")
        );
        assert_eq!(check("a.b"), invalid("the DPoP proof is not a JWS"));
        assert_eq!(check(&"a".repeat(9000)), invalid("the DPoP proof is too large"));
    }

    #[test]
    fn replay_cache_expires_and_fails_closed_when_full() {
        let v = DpopVerifier::new(Duration::from_secs(60), Duration::from_secs(300), 2);
        let key = TestKey::es256();
        let p1 = proof_with(&key, |_| {}, |_| {});
        let p2 = proof_with(&key, |_| {}, |_| {});
        let p3 = proof_with(&key, |_| {}, |_| {});
        v.verify(&p1, "GET", HTU, TOKEN, None, NOW).unwrap();
        v.verify(&p2, "GET", HTU, TOKEN, None, NOW).unwrap();
        assert_eq!(v.verify(&p3, "GET", HTU, TOKEN, None, NOW).unwrap_err(), AuthnError::DpopReplayCacheFull);
        // The cache is not full of *invalid* proofs: the failure above did not add p3.
        assert_eq!(v.seen.lock().unwrap().entries.len(), 2);
        // After the ttl, entries expire and new proofs are accepted again (iat still in window).
        let later = NOW + 300;
        let p4 = proof_with(&key, |_| {}, |c| c["iat"] = json!(later));
        v.verify(&p4, "GET", HTU, TOKEN, None, later).unwrap();
        // p4 is the only live entry: one more fits.
        let p5 = proof_with(&key, |_| {}, |c| c["iat"] = json!(later));
        v.verify(&p5, "GET", HTU, TOKEN, None, later).unwrap();
        assert_eq!(v.verify(&p5, "GET", HTU, TOKEN, None, later).unwrap_err(), AuthnError::DpopReplay);
        // A jti is only remembered per key: another key may use the same jti.
        let v = verifier();
        let other = TestKey::es256();
        let a = proof_with(&key, |_| {}, |c| c["jti"] = json!("same"));
        let b = proof_with(&other, |_| {}, |c| c["jti"] = json!("same"));
        v.verify(&a, "GET", HTU, TOKEN, None, NOW).unwrap();
        v.verify(&b, "GET", HTU, TOKEN, None, NOW).unwrap();
        let a2 = proof_with(&key, |_| {}, |c| c["jti"] = json!("same"));
        assert_eq!(v.verify(&a2, "GET", HTU, TOKEN, None, NOW).unwrap_err(), AuthnError::DpopReplay);
        // The ttl is at least the iat window on both sides.
        let short = DpopVerifier::new(Duration::from_secs(60), Duration::from_secs(1), 10);
        assert_eq!(short.replay_ttl, 120);
    }

    #[test]
    fn htu_normalization() {
        let n = |u: &str| normalize_htu(u);
        assert_eq!(n("HTTPS://API.Example.COM:443/a/%7eb?q=1#f").as_deref(), Some("https://api.example.com/a/%7Eb"));
        assert_eq!(n("http://h:80").as_deref(), Some("http://h/"));
        assert_eq!(n("http://h:8080/x").as_deref(), Some("http://h:8080/x"));
        assert_eq!(n("https://h/Path").as_deref(), Some("https://h/Path"));
        assert_eq!(n("ftp://h/x"), None);
        assert_eq!(n("https://user@h/x"), None);
        assert_eq!(n("/relative"), None);
        assert_eq!(n("https:///x"), None);
        // Query and fragment are ignored on both sides.
        let v = verifier();
        let key = TestKey::es256();
        let p = proof_with(&key, |_| {}, |c| c["htu"] = json!("https://API.example.com:443/orders/1"));
        assert!(v.verify(&p, "GET", "https://api.example.com/orders/1?page=2", TOKEN, None, NOW).is_ok());
    }
}
