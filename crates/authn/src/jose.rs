//! JOSE building blocks shared by bearer JWTs and DPoP proofs: the asymmetric algorithms we
//! accept, public JWK parsing (private members refused, RSA ≥ 2048 bits), ring signature
//! verification and RFC 7638 thumbprints. No symmetric algorithm exists in this module at all,
//! so no code path can verify an HMAC with a public key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::AuthnError;

/// JWS algorithms (RFC 7518 §3.1, RFC 8037). All asymmetric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    ES256,
    ES384,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    EdDSA,
}

pub(crate) const ALL_ALGS: [Alg; 9] =
    [Alg::ES256, Alg::ES384, Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512, Alg::EdDSA];

impl Alg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Parse a header `alg`. Names are case-sensitive (RFC 7515 §4.1.1), but `none` and `HS*`
    /// are recognised in any casing so that they get their precise error.
    pub(crate) fn from_header(name: &str) -> Result<Alg, AuthnError> {
        if let Some(a) = ALL_ALGS.iter().find(|a| a.name() == name) {
            return Ok(*a);
        }
        if name.eq_ignore_ascii_case("none") {
            return Err(AuthnError::AlgNone);
        }
        if name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("HS")) {
            return Err(AuthnError::AlgSymmetric);
        }
        Err(AuthnError::AlgNotAllowed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

/// A public key taken from a JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// `point` is the uncompressed SEC1 point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    /// Big-endian, without leading zero bytes.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

/// JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4;
/// RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

const MIN_RSA_BITS: usize = 2048;
/// ring's upper bound for RSA verification.
const MAX_RSA_BITS: usize = 8192;

pub(crate) fn b64(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part).ok()
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, &'static str> {
    jwk.get(name).and_then(Value::as_str).ok_or("a required JWK member is missing")
}

fn fixed(jwk: &Map<String, Value>, name: &str, len: usize) -> Result<Vec<u8>, &'static str> {
    let v = b64(member(jwk, name)?).ok_or("a JWK member is not base64url")?;
    if v.len() != len {
        return Err("a JWK coordinate has the wrong length");
    }
    Ok(v)
}

impl PublicKey {
    /// Parse a public JWK. Keys carrying private members are refused: a JWKS or a DPoP header
    /// that contains one is a leak, and we will not treat it as a public key.
    pub(crate) fn from_jwk(jwk: &Map<String, Value>) -> Result<PublicKey, &'static str> {
        if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
            return Err("the JWK contains private key material");
        }
        match jwk.get("kty").and_then(Value::as_str) {
            Some("EC") => {
                let (curve, len) = match jwk.get("crv").and_then(Value::as_str) {
                    Some("P-256") => (Curve::P256, 32),
                    Some("P-384") => (Curve::P384, 48),
                    _ => return Err("unsupported EC curve"),
                };
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&fixed(jwk, "x", len)?);
                point.extend_from_slice(&fixed(jwk, "y", len)?);
                Ok(PublicKey::Ec { curve, point })
            }
            Some("RSA") => {
                let n = b64(member(jwk, "n")?).ok_or("a JWK member is not base64url")?;
                let e = b64(member(jwk, "e")?).ok_or("a JWK member is not base64url")?;
                let n = strip_zeros(&n).to_vec();
                let e = strip_zeros(&e).to_vec();
                let bits = bit_len(&n);
                if bits < MIN_RSA_BITS {
                    return Err("RSA key is shorter than 2048 bits");
                }
                if bits > MAX_RSA_BITS {
                    return Err("RSA key is longer than 8192 bits");
                }
                if e.is_empty() || e.len() > 4 {
                    return Err("RSA public exponent is out of range");
                }
                Ok(PublicKey::Rsa { n, e })
            }
            Some("OKP") => match jwk.get("crv").and_then(Value::as_str) {
                Some("Ed25519") => Ok(PublicKey::Ed25519(fixed(jwk, "x", 32)?)),
                _ => Err("unsupported OKP curve"),
            },
            _ => Err("unsupported JWK key type"),
        }
    }

    /// Whether `alg` is a signature algorithm for this kind of key (RFC 8725 §3.1: the key
    /// decides the algorithm family, never the token alone).
    pub(crate) fn fits(&self, alg: Alg) -> bool {
        match self {
            PublicKey::Ec { curve: Curve::P256, .. } => alg == Alg::ES256,
            PublicKey::Ec { curve: Curve::P384, .. } => alg == Alg::ES384,
            PublicKey::Rsa { .. } => {
                matches!(alg, Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512)
            }
            PublicKey::Ed25519(_) => alg == Alg::EdDSA,
        }
    }

    /// Verify a JWS signature. ring rejects ECDSA signatures with r or s equal to zero
    /// (CVE-2022-21449) and RSA moduli outside 2048..=8192 bits.
    pub(crate) fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        let rsa = |params: &'static signature::RsaParameters, n: &[u8], e: &[u8]| {
            RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok()
        };
        match (self, alg) {
            (PublicKey::Ec { curve: Curve::P256, point }, Alg::ES256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(message, sig).is_ok()
            }
            (PublicKey::Ec { curve: Curve::P384, point }, Alg::ES384) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(message, sig).is_ok()
            }
            (PublicKey::Rsa { n, e }, Alg::RS256) => rsa(&signature::RSA_PKCS1_2048_8192_SHA256, n, e),
            (PublicKey::Rsa { n, e }, Alg::RS384) => rsa(&signature::RSA_PKCS1_2048_8192_SHA384, n, e),
            (PublicKey::Rsa { n, e }, Alg::RS512) => rsa(&signature::RSA_PKCS1_2048_8192_SHA512, n, e),
            (PublicKey::Rsa { n, e }, Alg::PS256) => rsa(&signature::RSA_PSS_2048_8192_SHA256, n, e),
            (PublicKey::Rsa { n, e }, Alg::PS384) => rsa(&signature::RSA_PSS_2048_8192_SHA384, n, e),
            (PublicKey::Rsa { n, e }, Alg::PS512) => rsa(&signature::RSA_PSS_2048_8192_SHA512, n, e),
            (PublicKey::Ed25519(x), Alg::EdDSA) => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(message, sig).is_ok()
            }
            _ => false,
        }
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url): the required members in lexicographic
    /// order, no whitespace. Values are re-encoded from the key bytes, which equals the
    /// members as sent because base64url decoding here is canonical (no padding, no stray bits).
    pub(crate) fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicKey::Ec { curve, point } => {
                let (crv, len) = match curve {
                    Curve::P256 => ("P-256", 32),
                    Curve::P384 => ("P-384", 48),
                };
                let coords = point.get(1..).unwrap_or_default();
                let (x, y) = coords.split_at(len.min(coords.len()));
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#, b64_encode(x), b64_encode(y))
            }
            PublicKey::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64_encode(e), b64_encode(n))
            }
            PublicKey::Ed25519(x) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64_encode(x)),
        };
        b64_encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or_default()
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// A compact JWS split and decoded, nothing verified yet.
pub(crate) struct Compact<'t> {
    pub(crate) header: Map<String, Value>,
    pub(crate) payload: Map<String, Value>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: what was signed.
    pub(crate) signing_input: &'t str,
    pub(crate) signature: Vec<u8>,
}

/// Split a compact JWS (RFC 7515 §7.1) into exactly three parts and decode them. JSON nesting
/// is bounded by serde_json's recursion limit; duplicate members keep the last value, as
/// RFC 7515 §4 permits.
pub(crate) fn split_compact(token: &str) -> Result<Compact<'_>, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("the token is not a compact JWS (three dot-separated parts)");
    };
    let header = b64(h).ok_or("the token header is not base64url")?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| "the token header is not a JSON object")?;
    let payload = b64(p).ok_or("the token payload is not base64url")?;
    let payload: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| "the token payload is not a JSON object")?;
    // An empty signature decodes to an empty vector: callers refuse it after checking `alg`,
    // so that `alg: none` tokens get their own error.
    let signature = b64(s).ok_or("the token signature is not base64url")?;
    // h and p are ASCII base64url, so this slice is on a char boundary.
    let signing_input = token.get(..h.len() + 1 + p.len()).ok_or("the token is not a compact JWS")?;
    Ok(Compact { header, payload, signing_input, signature })
}

/// `typ` values are media types: compare case-insensitively, with the `application/` prefix
/// optional (RFC 7515 §4.1.9).
pub(crate) fn normalize_typ(typ: &str) -> String {
    let t = typ.trim();
    let t = match t.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => t.get(12..).unwrap_or_default(),
        _ => t,
    };
    t.to_ascii_lowercase()
}

/// A NumericDate (RFC 7519 §2) as whole seconds; fractions are truncated.
pub(crate) fn numeric_date(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // u64::MAX as f64 rounds up, so use a bound that is exactly representable and below it.
    if f.is_finite() && (0.0..1.0e19).contains(&f) {
        Some(f as u64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rfc7638_thumbprint_vector() {
        // RFC 7638 §3.1.
        let jwk = obj(json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }));
        let key = PublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(key.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn rfc9449_example_jwk_thumbprint() {
        // The EC key of the DPoP proof examples in RFC 9449 §4.1 and its jkt (§6.1).
        let jwk = obj(json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        }));
        let key = PublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(key.thumbprint(), "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    }

    #[test]
    fn jwk_parsing_rejects_private_short_and_unknown_keys() {
        let ec = json!({"kty": "EC", "crv": "P-256", "x": b64_encode(&[1; 32]), "y": b64_encode(&[2; 32])});
        assert!(PublicKey::from_jwk(&obj(ec.clone())).is_ok());
        let mut private = ec.clone();
        private["d"] = json!(b64_encode(&[3; 32]));
        assert_eq!(PublicKey::from_jwk(&obj(private)), Err("the JWK contains private key material"));
        let mut short = ec.clone();
        short["x"] = json!(b64_encode(&[1; 31]));
        assert_eq!(PublicKey::from_jwk(&obj(short)), Err("a JWK coordinate has the wrong length"));
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(PublicKey::from_jwk(&obj(oct)), Err("the JWK contains private key material"));
        let mut n = vec![0u8; 1]; // a leading zero is tolerated and stripped
        n.extend_from_slice(&[0xff; 255]); // 2040 bits
        let rsa = json!({"kty": "RSA", "n": b64_encode(&n), "e": "AQAB"});
        assert_eq!(PublicKey::from_jwk(&obj(rsa)), Err("RSA key is shorter than 2048 bits"));
        n.push(0xff);
        let rsa = json!({"kty": "RSA", "n": b64_encode(&n), "e": "AQAB"});
        let PublicKey::Rsa { n: parsed, .. } = PublicKey::from_jwk(&obj(rsa)).unwrap() else { unreachable!() };
        assert_eq!(parsed.len(), 256);
        let x25519 = json!({"kty": "OKP", "crv": "X25519", "x": b64_encode(&[1; 32])});
        assert_eq!(PublicKey::from_jwk(&obj(x25519)), Err("unsupported OKP curve"));
    }

    #[test]
    fn alg_names_are_exact_and_none_or_hmac_are_named() {
        assert_eq!(Alg::from_header("ES256"), Ok(Alg::ES256));
        assert_eq!(Alg::from_header("es256"), Err(AuthnError::AlgNotAllowed));
        for none in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(Alg::from_header(none), Err(AuthnError::AlgNone));
        }
        for hs in ["HS256", "hs384", "Hs512"] {
            assert_eq!(Alg::from_header(hs), Err(AuthnError::AlgSymmetric));
        }
        assert_eq!(Alg::from_header(""), Err(AuthnError::AlgNotAllowed));
        assert_eq!(Alg::from_header("H"), Err(AuthnError::AlgNotAllowed));
    }

    #[test]
    fn typ_normalization_and_numeric_dates() {
        assert_eq!(normalize_typ("application/AT+JWT"), "at+jwt");
        assert_eq!(normalize_typ("JWT"), "jwt");
        assert_eq!(normalize_typ("app"), "app");
        assert_eq!(numeric_date(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(numeric_date(&json!(1.5)), Some(1));
        assert_eq!(numeric_date(&json!(-1)), None);
        assert_eq!(numeric_date(&json!(1e300)), None);
        assert_eq!(numeric_date(&json!("1")), None);
    }

    #[test]
    fn split_compact_requires_three_parts_and_a_signature() {
        let h = b64_encode(br#"{"alg":"ES256"}"#);
        let p = b64_encode(br#"{"a":1}"#);
        assert!(split_compact(&format!("{h}.{p}")).is_err());
        assert!(split_compact(&format!("{h}.{p}.c2ln.x")).is_err());
        assert!(split_compact(&format!("{h}.{p}.")).unwrap().signature.is_empty());
        assert_eq!(split_compact(&format!("{h}.{p}.c2ln=")).err(), Some("the token signature is not base64url"));
        let token = format!("{h}.{p}.c2ln");
        let c = split_compact(&token).unwrap();
        assert_eq!(c.signing_input, format!("{h}.{p}"));
        assert_eq!(c.signature, b"sig");
        assert_eq!(c.payload["a"], 1);
    }
}
