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
    let key = keyset.signing_key(now).ok_or(CryptoError::NoSigningKey)?;
    let mut header = jsonwebtoken::Header::new(key.alg.jwt());
    header.kid = Some(key.kid.clone());
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding_key()).map_err(|e| CryptoError::Token(e.to_string()))
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
    jsonwebtoken::decode::<T>(token, &key.decoding_key()?, &v)
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

    #[test]
    fn sign_and_verify_both_algorithms() {
        for alg in [Alg::ES256, Alg::EdDSA] {
            let ks = Keyset::generate(alg, now()).unwrap();
            let t = sign(&ks, now(), "at+jwt", &claims(now() + 300)).unwrap();
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
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
    fn tokens_survive_rotation_until_the_old_key_retires() {
        let t0 = now();
        let mut ks = Keyset::generate(Alg::ES256, t0 - 100).unwrap();
        let old_token = sign(&ks, t0, "at+jwt", &claims(t0 + 300)).unwrap();
        ks.rotate(Alg::ES256, t0, 0, 300).unwrap();
        let new_token = sign(&ks, t0, "at+jwt", &claims(t0 + 300)).unwrap();
        assert_ne!(old_token.split('.').next(), new_token.split('.').next(), "new kid signs after activation");
        assert!(verify::<Value>(&ks, t0, &old_token, &EXPECT).is_ok());
        assert!(verify::<Value>(&ks, t0, &new_token, &EXPECT).is_ok());
        // Once the old key retires, its tokens (expired by then) are refused by kid.
        assert!(verify::<Value>(&ks, t0 + 301, &old_token, &EXPECT).is_err());
    }
}
