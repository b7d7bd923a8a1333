//! Versioned signing keys with overlap-safe rotation.
//!
//! Timeline of a rotation at `t` with `activate_after = d` and the longest token lifetime `L`:
//! the new key is published in the JWKS at `t`, signs from `t + d` (relying parties have had `d`
//! to refresh their JWKS cache), and the previous key stays published until `t + d + L`, so every
//! token it signed can still be verified until it expires.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use std::sync::OnceLock;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rsa::pkcs1::der::Decode;
use rsa::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::{CryptoError, MasterKey};

/// Signature algorithms. ES256 is the default (RFC 9068 access tokens, OIDC ID tokens);
/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys) is for relying parties that only
/// support the OIDC baseline algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    ES256,
    EdDSA,
    RS256,
}

/// Modulus size of generated RSA keys.
const RSA_BITS: usize = 2048;

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

/// One key version. The private key never leaves this type except sealed.
pub struct KeyVersion {
    pub kid: String,
    pub alg: Alg,
    pkcs8: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
    /// Unix seconds.
    pub created_at: u64,
    /// Signs from this time on (until a newer key activates).
    pub activate_at: u64,
    /// No longer published (nor accepted) from this time on.
    pub retire_at: Option<u64>,
    /// Parsed once, on first use: parsing a PKCS#8 key costs as much as a signature.
    signer: OnceLock<Signer>,
    decoder: OnceLock<jsonwebtoken::DecodingKey>,
}

enum Signer {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersion")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("activate_at", &self.activate_at)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

impl KeyVersion {
    fn generate(alg: Alg, now: u64, activate_at: u64) -> Result<KeyVersion, CryptoError> {
        let rng = SystemRandom::new();
        let (pkcs8, public) = match alg {
            Alg::ES256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| CryptoError::KeyGeneration)?;
                let public = public_of(alg, doc.as_ref())?;
                (Zeroizing::new(doc.as_ref().to_vec()), public)
            }
            Alg::EdDSA => {
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| CryptoError::KeyGeneration)?;
                let public = public_of(alg, doc.as_ref())?;
                (Zeroizing::new(doc.as_ref().to_vec()), public)
            }
            Alg::RS256 => {
                // ring cannot generate RSA keys: generate with RustCrypto `rsa`, then hand the
                // PKCS#8 document to ring, which validates it and does all signing.
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                    .map_err(|_| CryptoError::KeyGeneration)?;
                let doc = key.to_pkcs8_der().map_err(|_| CryptoError::KeyGeneration)?;
                let public = public_of(alg, doc.as_bytes())?;
                (Zeroizing::new(doc.as_bytes().to_vec()), public)
            }
        };
        let mut k = KeyVersion {
            kid: String::new(),
            alg,
            pkcs8,
            public,
            created_at: now,
            activate_at,
            retire_at: None,
            signer: OnceLock::new(),
            decoder: OnceLock::new(),
        };
        k.kid = k.thumbprint();
        Ok(k)
    }

    /// The public key as a JWK (RFC 7517).
    pub fn jwk(&self) -> Value {
        let mut v = self.jwk_members();
        v["kid"] = json!(self.kid);
        v["alg"] = json!(self.alg.name());
        v["use"] = json!("sig");
        v
    }

    /// Required members only, in the lexicographic order RFC 7638 thumbprints need.
    fn jwk_members(&self) -> Value {
        match self.alg {
            Alg::ES256 => {
                // Uncompressed point: 0x04 || X(32) || Y(32).
                let (x, y) = self.public.get(1..).map(|p| p.split_at(32)).unwrap_or((&[], &[]));
                json!({"crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
            }
            Alg::EdDSA => json!({"crv": "Ed25519", "kty": "OKP", "x": URL_SAFE_NO_PAD.encode(&self.public)}),
            Alg::RS256 => {
                // `public` is ring's DER RSAPublicKey; DER integers carry no leading zero bytes
                // beyond a sign byte, which `as_bytes` strips, so n and e come out minimal.
                let (n, e) = rsa::pkcs1::RsaPublicKey::from_der(&self.public)
                    .map(|k| (k.modulus.as_bytes(), k.public_exponent.as_bytes()))
                    .unwrap_or((&[], &[]));
                json!({"e": URL_SAFE_NO_PAD.encode(e), "kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n)})
            }
        }
    }

    /// RFC 7638 JWK thumbprint (SHA-256), used as the `kid`.
    fn thumbprint(&self) -> String {
        // Canonical form: required members only, keys in lexicographic order, no whitespace.
        // Sorted explicitly so the kid does not depend on serde_json's `preserve_order` feature.
        let members = self.jwk_members();
        let sorted: std::collections::BTreeMap<&String, &Value> =
            members.as_object().map(|m| m.iter().collect()).unwrap_or_default();
        let canonical = serde_json::to_string(&sorted).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
    }

    fn signer(&self) -> Result<&Signer, CryptoError> {
        if let Some(s) = self.signer.get() {
            return Ok(s);
        }
        let rng = SystemRandom::new();
        let s = match self.alg {
            Alg::ES256 => Signer::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8, &rng)
                    .map_err(|_| CryptoError::Malformed)?,
            ),
            Alg::EdDSA => Signer::Ed(Ed25519KeyPair::from_pkcs8(&self.pkcs8).map_err(|_| CryptoError::Malformed)?),
            Alg::RS256 => Signer::Rsa(RsaKeyPair::from_pkcs8(&self.pkcs8).map_err(|_| CryptoError::Malformed)?),
        };
        Ok(self.signer.get_or_init(|| s))
    }

    /// The JWS signature of `message` (ES256: `r || s`, RFC 7518 §3.4; EdDSA: RFC 8037;
    /// RS256: RSASSA-PKCS1-v1_5 with SHA-256).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rng = SystemRandom::new();
        match self.signer()? {
            Signer::Ec(k) => k.sign(&rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| CryptoError::Signing),
            Signer::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| CryptoError::Signing)?;
                Ok(sig)
            }
        }
    }

    /// A jsonwebtoken signing key, for tests that forge tokens with our keys.
    #[cfg(test)]
    pub(crate) fn encoding_key(&self) -> Result<jsonwebtoken::EncodingKey, CryptoError> {
        Ok(match self.alg {
            Alg::ES256 => jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
            Alg::EdDSA => jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
            // jsonwebtoken wants the PKCS#1 RSAPrivateKey: the octet string inside PKCS#8.
            Alg::RS256 => {
                let info = rsa::pkcs8::PrivateKeyInfo::try_from(&self.pkcs8[..]).map_err(|_| CryptoError::Malformed)?;
                jsonwebtoken::EncodingKey::from_rsa_der(info.private_key)
            }
        })
    }

    pub(crate) fn decoding_key(&self) -> Result<&jsonwebtoken::DecodingKey, CryptoError> {
        if let Some(d) = self.decoder.get() {
            return Ok(d);
        }
        let v = self.jwk_members();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let d = match self.alg {
            Alg::ES256 => jsonwebtoken::DecodingKey::from_ec_components(&s("x"), &s("y")),
            Alg::EdDSA => jsonwebtoken::DecodingKey::from_ed_components(&s("x")),
            Alg::RS256 => jsonwebtoken::DecodingKey::from_rsa_components(&s("n"), &s("e")),
        }
        .map_err(|e| CryptoError::Token(e.to_string()))?;
        Ok(self.decoder.get_or_init(|| d))
    }
}

fn public_of(alg: Alg, pkcs8: &[u8]) -> Result<Vec<u8>, CryptoError> {
    match alg {
        Alg::ES256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &SystemRandom::new())
            .map(|k| k.public_key().as_ref().to_vec())
            .map_err(|_| CryptoError::Malformed),
        Alg::EdDSA => Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(|k| k.public_key().as_ref().to_vec())
            .map_err(|_| CryptoError::Malformed),
        // ring accepts 2048..=4096-bit moduli and checks the key's consistency.
        Alg::RS256 => {
            RsaKeyPair::from_pkcs8(pkcs8).map(|k| k.public_key().as_ref().to_vec()).map_err(|_| CryptoError::Malformed)
        }
    }
}

/// All versions of one signing key.
#[derive(Debug, Default)]
pub struct Keyset {
    versions: Vec<KeyVersion>,
}

impl Keyset {
    /// A keyset with one key that signs from `now`.
    pub fn generate(alg: Alg, now: u64) -> Result<Keyset, CryptoError> {
        Ok(Keyset { versions: vec![KeyVersion::generate(alg, now, now)?] })
    }

    /// Add a new key: published now, signing from `now + activate_after`. The key signing
    /// until then retires `max_token_lifetime` after the switch.
    pub fn rotate(
        &mut self,
        alg: Alg,
        now: u64,
        activate_after: u64,
        max_token_lifetime: u64,
    ) -> Result<&KeyVersion, CryptoError> {
        let activate_at = now.checked_add(activate_after).ok_or(CryptoError::KeyGeneration)?;
        let retire_at = activate_at.checked_add(max_token_lifetime).ok_or(CryptoError::KeyGeneration)?;
        for v in self.versions.iter_mut() {
            if v.retire_at.is_none() {
                v.retire_at = Some(retire_at);
            }
        }
        self.versions.push(KeyVersion::generate(alg, now, activate_at)?);
        self.versions.last().ok_or(CryptoError::KeyGeneration)
    }

    /// The key that signs at `now`: the newest activated key that has not retired.
    pub fn signing_key(&self, now: u64) -> Option<&KeyVersion> {
        self.published(now).filter(|v| v.activate_at <= now).max_by_key(|v| v.activate_at)
    }

    /// Keys in the JWKS at `now` (activated or pending, not retired).
    pub fn published(&self, now: u64) -> impl Iterator<Item = &KeyVersion> {
        self.versions.iter().filter(move |v| v.retire_at.is_none_or(|r| r > now))
    }

    pub fn find(&self, kid: &str, now: u64) -> Option<&KeyVersion> {
        self.published(now).find(|v| v.kid == kid)
    }

    /// `{"keys": [...]}` for `/jwks.json`.
    pub fn jwks(&self, now: u64) -> Value {
        json!({ "keys": self.published(now).map(KeyVersion::jwk).collect::<Vec<_>>() })
    }

    /// Drop versions retired at `now`; returns how many.
    pub fn prune(&mut self, now: u64) -> usize {
        let before = self.versions.len();
        self.versions.retain(|v| v.retire_at.is_none_or(|r| r > now));
        before - self.versions.len()
    }

    /// The storable form: private keys sealed with the master key, bound to their kid.
    pub fn seal(&self, master: &MasterKey) -> Result<SealedKeyset, CryptoError> {
        let versions = self
            .versions
            .iter()
            .map(|v| {
                Ok(SealedVersion {
                    kid: v.kid.clone(),
                    alg: v.alg,
                    sealed_pkcs8: STANDARD.encode(master.seal(&v.pkcs8, v.kid.as_bytes())?),
                    created_at: v.created_at,
                    activate_at: v.activate_at,
                    retire_at: v.retire_at,
                })
            })
            .collect::<Result<_, CryptoError>>()?;
        Ok(SealedKeyset { versions })
    }
}

/// A keyset as stored: serializable, private keys encrypted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SealedKeyset {
    versions: Vec<SealedVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SealedVersion {
    kid: String,
    alg: Alg,
    sealed_pkcs8: String,
    created_at: u64,
    activate_at: u64,
    retire_at: Option<u64>,
}

impl SealedKeyset {
    /// Decrypt with the master key. Fails if any key was tampered with or swapped between kids.
    pub fn open(&self, master: &MasterKey) -> Result<Keyset, CryptoError> {
        let versions = self
            .versions
            .iter()
            .map(|s| {
                let sealed = STANDARD.decode(&s.sealed_pkcs8).map_err(|_| CryptoError::Malformed)?;
                let pkcs8 = master.open(&sealed, s.kid.as_bytes())?;
                let public = public_of(s.alg, &pkcs8)?;
                let v = KeyVersion {
                    kid: s.kid.clone(),
                    alg: s.alg,
                    pkcs8,
                    public,
                    created_at: s.created_at,
                    activate_at: s.activate_at,
                    retire_at: s.retire_at,
                    signer: OnceLock::new(),
                    decoder: OnceLock::new(),
                };
                if v.thumbprint() != v.kid {
                    return Err(CryptoError::Malformed);
                }
                Ok(v)
            })
            .collect::<Result<_, CryptoError>>()?;
        Ok(Keyset { versions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([3u8; 32])).unwrap()
    }

    #[test]
    fn alg_names_and_serde_form() {
        for (alg, name) in [(Alg::ES256, "ES256"), (Alg::EdDSA, "EdDSA"), (Alg::RS256, "RS256")] {
            assert_eq!(alg.name(), name);
            assert_eq!(serde_json::to_value(alg).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<Alg>(json!(name)).unwrap(), alg);
            assert_eq!(format!("{:?}", alg.jwt()), name);
        }
    }

    #[test]
    fn rotation_publishes_before_signing_and_retires_after_expiry() {
        // Also switches algorithm on rotation (ES256 -> RS256).
        let mut ks = Keyset::generate(Alg::ES256, 1000).unwrap();
        let old = ks.signing_key(1000).unwrap().kid.clone();
        let new = ks.rotate(Alg::RS256, 2000, 300, 900).unwrap().kid.clone();
        assert_ne!(old, new);
        assert_eq!(ks.signing_key(2300).unwrap().alg, Alg::RS256);
        // Published at once, not yet signing.
        assert_eq!(ks.jwks(2000)["keys"].as_array().unwrap().len(), 2);
        assert_eq!(ks.signing_key(2299).unwrap().kid, old);
        // Signing from activation; the old key stays published for the token lifetime.
        assert_eq!(ks.signing_key(2300).unwrap().kid, new);
        assert!(ks.find(&old, 3199).is_some());
        assert!(ks.find(&old, 3200).is_none());
        assert_eq!(ks.jwks(3200)["keys"].as_array().unwrap().len(), 1);
        assert_eq!(ks.prune(3200), 1);
    }

    #[test]
    fn jwks_members_and_thumbprint_kid() {
        let ks = Keyset::generate(Alg::ES256, 0).unwrap();
        let jwk = &ks.jwks(0)["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap().len(), 32);
        assert!(jwk.get("d").is_none(), "no private member in a JWKS");
        let ed = Keyset::generate(Alg::EdDSA, 0).unwrap();
        let jwk = &ed.jwks(0)["keys"][0];
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
        assert_eq!(jwk["kid"].as_str().unwrap().len(), 43);
        let rs = Keyset::generate(Alg::RS256, 0).unwrap();
        let jwk = &rs.jwks(0)["keys"][0];
        let mut members: Vec<&str> = jwk.as_object().unwrap().keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "e", "kid", "kty", "n", "use"], "public members only: {jwk}");
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str(), jwk["use"].as_str()),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        assert_eq!(jwk["e"], "AQAB");
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "2048-bit modulus, no leading zero byte");
        assert!(n[0] & 0x80 != 0);
        assert_eq!(jwk["kid"].as_str().unwrap(), rs.versions[0].thumbprint());
        assert!(rs.versions[0].jwk_members().to_string().starts_with(r#"{"e":"AQAB","kty":"RSA","n":""#));
    }

    #[test]
    fn thumbprint_matches_rfc7638_rsa_vector() {
        use rsa::pkcs1::der::{asn1::UintRef, Encode};
        // RFC 7638 section 3.1. n starts with 0xd2, so its DER INTEGER carries a 0x00 sign byte
        // that must not reach the JWK.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZ\
                 CiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJ\
                 ZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBn\
                 iIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let (nb, eb) = (URL_SAFE_NO_PAD.decode(n).unwrap(), URL_SAFE_NO_PAD.decode("AQAB").unwrap());
        let public = rsa::pkcs1::RsaPublicKey {
            modulus: UintRef::new(&nb).unwrap(),
            public_exponent: UintRef::new(&eb).unwrap(),
        }
        .to_der()
        .unwrap();
        let v = KeyVersion {
            kid: String::new(),
            alg: Alg::RS256,
            pkcs8: Zeroizing::new(Vec::new()),
            public,
            created_at: 0,
            activate_at: 0,
            retire_at: None,
            signer: OnceLock::new(),
            decoder: OnceLock::new(),
        };
        assert_eq!(v.jwk_members(), json!({"e": "AQAB", "kty": "RSA", "n": n}));
        assert_eq!(v.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn thumbprint_matches_rfc8037_vector() {
        // RFC 8037 Appendix A.3: the RFC 7638 thumbprint of the A.2 Ed25519 public key.
        let public = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let v = KeyVersion {
            kid: String::new(),
            alg: Alg::EdDSA,
            pkcs8: Zeroizing::new(Vec::new()),
            public,
            created_at: 0,
            activate_at: 0,
            retire_at: None,
            signer: OnceLock::new(),
            decoder: OnceLock::new(),
        };
        assert_eq!(v.thumbprint(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let es = Keyset::generate(Alg::ES256, 0).unwrap();
        assert!(es.versions[0].jwk_members().to_string().starts_with(r#"{"crv":"P-256","kty":"EC","x":""#));
    }

    #[test]
    fn sealed_keyset_round_trips_and_detects_swaps() {
        let m = master();
        let mut ks = Keyset::generate(Alg::EdDSA, 0).unwrap();
        ks.rotate(Alg::ES256, 10, 0, 100).unwrap();
        ks.rotate(Alg::RS256, 20, 0, 100).unwrap();
        let sealed = ks.seal(&m).unwrap();
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("PRIVATE"));
        assert!(text.contains(r#""alg":"RS256""#));
        let back: SealedKeyset = serde_json::from_str(&text).unwrap();
        let opened = back.open(&m).unwrap();
        assert_eq!(opened.jwks(20)["keys"].as_array().unwrap().len(), 3);
        assert_eq!(opened.jwks(20), ks.jwks(20));
        for (a, b) in opened.versions.iter().zip(&ks.versions) {
            assert_eq!(a.pkcs8, b.pkcs8);
        }
        // Swapping the sealed private keys of two kids fails authentication.
        let mut swapped = sealed.clone();
        let a = swapped.versions[0].sealed_pkcs8.clone();
        swapped.versions[0].sealed_pkcs8 = swapped.versions[1].sealed_pkcs8.clone();
        swapped.versions[1].sealed_pkcs8 = a;
        assert!(matches!(swapped.open(&m), Err(CryptoError::Unauthentic)));
        let wrong = MasterKey::from_base64(&STANDARD.encode([4u8; 32])).unwrap();
        assert!(sealed.open(&wrong).is_err());
    }
}
