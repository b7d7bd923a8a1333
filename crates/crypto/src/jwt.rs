//! JWS/JWT signing and verification with a [`Keyset`] (RFC 7515/7519, following RFC 8725):
//! the `alg` must be the one registered for the `kid` (never `none`, never chosen by the
//! token), `typ` is checked, and `exp`/`nbf`/`iss`/`aud` are validated.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{CryptoError, Keyset};

/// What a verified token must satisfy.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: Option<&'a str>,
    /// Required `typ` header, e.g. `at+jwt` (RFC 9068) or `JWT`.
    pub typ: &'a str,
    /// Clock skew tolerated on exp/nbf, in seconds.
    pub leeway: u64,
}

/// Sign `claims` with the key that signs at `now`; the header carries `kid` and `typ`.
pub fn sign<T: Serialize>(keyset: &Keyset, now: u64, typ: &str, claims: &T) -> Result<String, CryptoError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let key = keyset.signing_key(now).ok_or(CryptoError::NoSigningKey)?;
    let header = serde_json::json!({ "alg": key.alg.name(), "kid": key.kid, "typ": typ });
    let header = serde_json::to_vec(&header).map_err(|e| CryptoError::Token(e.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|e| CryptoError::Token(e.to_string()))?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

/// Verify a compact JWS against the keys published at `now` and decode its claims.
pub fn verify<T: DeserializeOwned>(
    keyset: &Keyset,
    now: u64,
    token: &str,
    expect: &Expect<'_>,
) -> Result<T, CryptoError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| CryptoError::Token(e.to_string()))?;
    let kid = header.kid.as_deref().ok_or_else(|| CryptoError::Token("missing kid".into()))?;
    let key = keyset.find(kid, now).ok_or_else(|| CryptoError::Token("unknown kid".into()))?;
    if header.alg != key.alg.jwt() {
        return Err(CryptoError::Token("alg does not match the key".into()));
    }
    if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(expect.typ)) {
        return Err(CryptoError::Token(format!("typ must be {}", expect.typ)));
    }
    let mut v = jsonwebtoken::Validation::new(key.alg.jwt());
    v.leeway = expect.leeway;
    v.validate_nbf = true;
    v.set_issuer(&[expect.issuer]);
    v.set_required_spec_claims(&["exp", "iss"]);
    match expect.audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    jsonwebtoken::decode::<T>(token, key.decoding_key()?, &v)
        .map(|d| d.claims)
        .map_err(|e| CryptoError::Token(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Alg;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::{json, Value};

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    const EXPECT: Expect<'static> =
        Expect { issuer: "https://idp.test", audience: Some("orders"), typ: "at+jwt", leeway: 5 };

    fn claims(exp: u64) -> Value {
        json!({"iss": "https://idp.test", "aud": "orders", "sub": "alice", "exp": exp, "scope": "orders:read"})
    }

    const ALGS: [Alg; 3] = [Alg::ES256, Alg::EdDSA, Alg::RS256];

    fn b64json(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn sign_and_verify_every_algorithm() {
        for alg in ALGS {
            let ks = Keyset::generate(alg, now()).unwrap();
            let t = sign(&ks, now(), "at+jwt", &claims(now() + 300)).unwrap();
            let header = b64json(t.split('.').next().unwrap());
            assert_eq!(header["alg"], alg.name());
            assert_eq!(header["typ"], "at+jwt");
            let c: Value = verify(&ks, now(), &t, &EXPECT).unwrap();
            assert_eq!(c["sub"], "alice");
        }
    }

    #[test]
    fn rejects_expired_wrong_audience_issuer_typ_and_alg_none() {
        let ks = Keyset::generate(Alg::ES256, now()).unwrap();
        let expired = sign(&ks, now(), "at+jwt", &claims(now() - 60)).unwrap();
        assert!(verify::<Value>(&ks, now(), &expired, &EXPECT).is_err());
        let t = sign(&ks, now(), "at+jwt", &claims(now() + 300)).unwrap();
        assert!(verify::<Value>(&ks, now(), &t, &Expect { audience: Some("payments"), ..EXPECT }).is_err());
        assert!(verify::<Value>(&ks, now(), &t, &Expect { issuer: "https://evil", ..EXPECT }).is_err());
        assert!(verify::<Value>(&ks, now(), &t, &Expect { typ: "JWT", ..EXPECT }).is_err());
        // alg=none with the right kid
        let kid = ks.signing_key(now()).unwrap().kid.clone();
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": kid, "typ": "at+jwt"}).to_string());
        let p = URL_SAFE_NO_PAD.encode(claims(now() + 300).to_string());
        assert!(verify::<Value>(&ks, now(), &format!("{h}.{p}."), &EXPECT).is_err());
        // tampered payload
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], p.replace('A', "B"), parts[2]);
        assert!(verify::<Value>(&ks, now(), &forged, &EXPECT).is_err());
    }

    #[test]
    fn rs256_signature_is_pkcs1_v1_5_with_a_2048_bit_key() {
        let ks = Keyset::generate(Alg::RS256, now()).unwrap();
        let t = sign(&ks, now(), "at+jwt", &claims(now() + 300)).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 256);
        // Verify independently of jsonwebtoken, with ring and the published n/e.
        let jwk = &ks.jwks(now())["keys"][0];
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
        let msg = format!("{}.{}", parts[0], parts[1]);
        public.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, msg.as_bytes(), &sig).unwrap();
        // PKCS#1 v1.5 is deterministic.
        assert_eq!(sign(&ks, now(), "at+jwt", &claims(now() + 300)).unwrap().split('.').nth(2), Some(parts[2]));
    }

    #[test]
    fn rejects_a_token_whose_alg_is_not_the_one_registered_for_its_kid() {
        let t0 = now();
        // An ES256 and an RS256 key published together, as after a rotation between algorithms.
        let mut ks = Keyset::generate(Alg::ES256, t0).unwrap();
        ks.rotate(Alg::RS256, t0, 0, 300).unwrap();
        let key = |alg: Alg| ks.published(t0).find(|k| k.alg == alg).unwrap();
        let (es, rs) = (key(Alg::ES256), key(Alg::RS256));
        let forge = |alg: jsonwebtoken::Algorithm, kid: &str, key: &jsonwebtoken::EncodingKey| {
            let mut h = jsonwebtoken::Header::new(alg);
            h.kid = Some(kid.to_owned());
            h.typ = Some("at+jwt".into());
            jsonwebtoken::encode(&h, &claims(t0 + 300), key).unwrap()
        };
        let rs_signed = forge(jsonwebtoken::Algorithm::RS256, &rs.kid, &rs.encoding_key().unwrap());
        assert!(verify::<Value>(&ks, t0, &rs_signed, &EXPECT).is_ok());
        // A valid RS256 signature presented under the ES256 kid.
        let t = forge(jsonwebtoken::Algorithm::RS256, &es.kid, &rs.encoding_key().unwrap());
        let e = verify::<Value>(&ks, t0, &t, &EXPECT).unwrap_err().to_string();
        assert!(e.contains("alg does not match"), "{e}");
        // ES256 under the RS256 kid.
        let t = forge(jsonwebtoken::Algorithm::ES256, &rs.kid, &es.encoding_key().unwrap());
        assert!(verify::<Value>(&ks, t0, &t, &EXPECT).is_err());
        // HS256 keyed with the public RSA modulus (the classic RS/HS confusion).
        let n = rs.jwk()["n"].as_str().unwrap().to_owned();
        let t = forge(jsonwebtoken::Algorithm::HS256, &rs.kid, &jsonwebtoken::EncodingKey::from_secret(n.as_bytes()));
        assert!(verify::<Value>(&ks, t0, &t, &EXPECT).is_err());
        // The RS256 header and signature, but swapped onto the ES256 kid by editing the header.
        let mut h = b64json(rs_signed.split('.').next().unwrap());
        h["kid"] = json!(es.kid);
        let rest = rs_signed.split_once('.').unwrap().1;
        let t = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(h.to_string()));
        assert!(verify::<Value>(&ks, t0, &t, &EXPECT).is_err());
    }

    #[test]
    fn tokens_survive_rotation_until_the_old_key_retires() {
        for (from, to) in [(Alg::ES256, Alg::ES256), (Alg::ES256, Alg::RS256), (Alg::RS256, Alg::EdDSA)] {
            rotation_overlap(from, to);
        }
    }

    fn rotation_overlap(from: Alg, to: Alg) {
        let t0 = now();
        let mut ks = Keyset::generate(from, t0 - 100).unwrap();
        let old_token = sign(&ks, t0, "at+jwt", &claims(t0 + 300)).unwrap();
        ks.rotate(to, t0, 0, 300).unwrap();
        let new_token = sign(&ks, t0, "at+jwt", &claims(t0 + 300)).unwrap();
        assert_ne!(old_token.split('.').next(), new_token.split('.').next(), "new kid signs after activation");
        assert!(verify::<Value>(&ks, t0, &old_token, &EXPECT).is_ok());
        assert!(verify::<Value>(&ks, t0, &new_token, &EXPECT).is_ok());
        // Once the old key retires, its tokens (expired by then) are refused by kid.
        assert!(verify::<Value>(&ks, t0 + 301, &old_token, &EXPECT).is_err());
    }
}
