//! Key types, fresh key material, and the ready-to-use primitive of one key version. Material
//! exists in clear only inside a [`VersionKey`] (built right after unsealing) and during export.
//! Auxiliary keys (context check, synthetic nonce, token lookup) are derived with HMAC-SHA256 of
//! a fixed label under the version's material, so one stored secret serves each version.

use aes::Aes256;
use aes_gcm_siv::Aes256GcmSiv;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use fpe::ff1::FF1;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::VaultError;

/// The kind of a named key; fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// AES-256-GCM, random 96-bit nonces.
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
    /// XChaCha20-Poly1305, random 192-bit nonces.
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    /// AES-256-GCM-SIV (RFC 8452), nonce-misuse resistant; deterministic when created `convergent`.
    #[serde(rename = "aes256-gcm-siv")]
    Aes256GcmSiv,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "ed25519")]
    Ed25519,
    /// FF1 (NIST SP 800-38G) over AES-256, for format-preserving and vault tokens.
    #[serde(rename = "ff1-aes256")]
    Ff1Aes256,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm => "aes256-gcm",
            KeyType::XChaCha20Poly1305 => "xchacha20-poly1305",
            KeyType::Aes256GcmSiv => "aes256-gcm-siv",
            KeyType::HmacSha256 => "hmac-sha256",
            KeyType::Ed25519 => "ed25519",
            KeyType::Ff1Aes256 => "ff1-aes256",
        }
    }

    pub fn parse(s: &str) -> Option<KeyType> {
        [
            KeyType::Aes256Gcm,
            KeyType::XChaCha20Poly1305,
            KeyType::Aes256GcmSiv,
            KeyType::HmacSha256,
            KeyType::Ed25519,
            KeyType::Ff1Aes256,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Whether the type encrypts (encrypt, decrypt, rewrap, data keys).
    pub fn is_aead(self) -> bool {
        matches!(self, KeyType::Aes256Gcm | KeyType::XChaCha20Poly1305 | KeyType::Aes256GcmSiv)
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| VaultError::Rng)?;
    Ok(b)
}

pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), VaultError> {
    SystemRandom::new().fill(buf).map_err(|_| VaultError::Rng)
}

/// Fresh material for a new version: 32 random bytes, or an Ed25519 PKCS#8 v2 document.
pub(crate) fn generate_material(t: KeyType) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    match t {
        KeyType::Ed25519 => {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| VaultError::Rng)?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
        _ => Ok(Zeroizing::new(random_bytes::<32>()?.to_vec())),
    }
}

/// Labels of derived keys; distinct so no derived key equals another.
const LABEL_CHECK: &[u8] = b"palisade-vault/context-check";
const LABEL_SIV_NONCE: &[u8] = b"palisade-vault/siv-nonce";
const LABEL_TOKEN_ENC: &[u8] = b"palisade-vault/token-encryption";
const LABEL_TOKEN_LOOKUP: &[u8] = b"palisade-vault/token-lookup";

fn derive(material: &[u8], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, material), label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_ref());
    out
}

pub(crate) enum Primitive {
    Gcm(LessSafeKey),
    XChaCha(Box<XChaCha20Poly1305>),
    Siv { aead: Box<Aes256GcmSiv>, nonce_key: hmac::Key },
    Hmac(hmac::Key),
    Ed25519(Ed25519KeyPair),
    Ff1 { ff1: Box<FF1<Aes256>>, token_enc: LessSafeKey, lookup: hmac::Key },
}

/// One usable key version.
pub(crate) struct VersionKey {
    pub(crate) version: u32,
    pub(crate) prim: Primitive,
    /// Keyed check of the context, written into ciphertext headers so a wrong context is told
    /// apart from tampering.
    pub(crate) check: hmac::Key,
}

fn bad_material() -> VaultError {
    VaultError::Master("stored key material has the wrong size for its type".into())
}

impl VersionKey {
    pub(crate) fn new(t: KeyType, version: u32, material: &[u8]) -> Result<VersionKey, VaultError> {
        let check = hmac::Key::new(hmac::HMAC_SHA256, derive(material, LABEL_CHECK).as_ref());
        let need32 = || if material.len() == 32 { Ok(()) } else { Err(bad_material()) };
        let prim = match t {
            KeyType::Aes256Gcm => {
                need32()?;
                Primitive::Gcm(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).map_err(|_| bad_material())?))
            }
            KeyType::XChaCha20Poly1305 => {
                Primitive::XChaCha(Box::new(XChaCha20Poly1305::new_from_slice(material).map_err(|_| bad_material())?))
            }
            KeyType::Aes256GcmSiv => Primitive::Siv {
                aead: Box::new(Aes256GcmSiv::new_from_slice(material).map_err(|_| bad_material())?),
                nonce_key: hmac::Key::new(hmac::HMAC_SHA256, derive(material, LABEL_SIV_NONCE).as_ref()),
            },
            KeyType::HmacSha256 => {
                need32()?;
                Primitive::Hmac(hmac::Key::new(hmac::HMAC_SHA256, material))
            }
            KeyType::Ed25519 => Primitive::Ed25519(Ed25519KeyPair::from_pkcs8(material).map_err(|_| bad_material())?),
            KeyType::Ff1Aes256 => {
                need32()?;
                let ff1 = FF1::<Aes256>::new(material, 10).map_err(|_| bad_material())?;
                let enc = derive(material, LABEL_TOKEN_ENC);
                Primitive::Ff1 {
                    ff1: Box::new(ff1),
                    token_enc: LessSafeKey::new(
                        UnboundKey::new(&AES_256_GCM, enc.as_ref()).map_err(|_| bad_material())?,
                    ),
                    lookup: hmac::Key::new(hmac::HMAC_SHA256, derive(material, LABEL_TOKEN_LOOKUP).as_ref()),
                }
            }
        };
        Ok(VersionKey { version, prim, check })
    }

    /// The Ed25519 public key, for metadata.
    pub(crate) fn public_key(&self) -> Option<Vec<u8>> {
        match &self.prim {
            Primitive::Ed25519(kp) => Some(kp.public_key().as_ref().to_vec()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, Payload};
    use ring::aead::{Aad, Nonce};

    fn h(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The primitive each key type builds from its material, checked against published vectors.
    #[test]
    fn aes256_gcm_known_answer_gcm_spec_test_case_16() {
        let k = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let vk = VersionKey::new(KeyType::Aes256Gcm, 1, &k).unwrap();
        let Primitive::Gcm(key) = &vk.prim else { panic!("not GCM") };
        let mut buf = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let iv: [u8; 12] = h("cafebabefacedbaddecaf888").try_into().unwrap();
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut buf).unwrap();
        assert_eq!(
            buf,
            h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
               76fc6ece0f4e1768cddf8853bb2d551b")
        );
    }

    #[test]
    fn xchacha20_poly1305_known_answer_draft_irtf_cfrg_xchacha_a_3_1() {
        let k = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let vk = VersionKey::new(KeyType::XChaCha20Poly1305, 1, &k).unwrap();
        let Primitive::XChaCha(aead) = &vk.prim else { panic!("not XChaCha") };
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aad = h("50515253c0c1c2c3c4c5c6c7");
        let nonce = h("404142434445464748494a4b4c4d4e4f5051525354555657");
        let ct = aead.encrypt(chacha20poly1305::XNonce::from_slice(&nonce), Payload { msg: pt, aad: &aad }).unwrap();
        assert_eq!(
            ct,
            h("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39\
               ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
               21f9664c97637da9768812f615c68b13b52ec0875924c1c7987947deafd8780acf49")
        );
    }

    #[test]
    fn aes256_gcm_siv_known_answers_rfc8452_c2() {
        let k = h("0100000000000000000000000000000000000000000000000000000000000000");
        let vk = VersionKey::new(KeyType::Aes256GcmSiv, 1, &k).unwrap();
        let Primitive::Siv { aead, .. } = &vk.prim else { panic!("not SIV") };
        let nonce = h("030000000000000000000000");
        for (pt, aad, want) in [
            ("", "", "07f5f4169bbf55a8400cd47ea6fd400f"),
            ("0100000000000000", "", "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28"),
            ("010000000000000000000000", "", "9aab2aeb3faa0a34aea8e2b18ca50da9ae6559e48fd10f6e5c9ca17e"),
            ("0200000000000000", "01", "1de22967237a813291213f267e3b452f02d01ae33e4ec854"),
        ] {
            let ct = aead
                .encrypt(
                    aes_gcm_siv::Nonce::from_slice(&nonce),
                    aes_gcm_siv::aead::Payload { msg: &h(pt), aad: &h(aad) },
                )
                .unwrap();
            assert_eq!(ct, h(want), "pt {pt}");
        }
    }

    #[test]
    fn material_has_the_right_shape() {
        for t in [
            KeyType::Aes256Gcm,
            KeyType::XChaCha20Poly1305,
            KeyType::Aes256GcmSiv,
            KeyType::HmacSha256,
            KeyType::Ff1Aes256,
        ] {
            let m = generate_material(t).unwrap();
            assert_eq!(m.len(), 32);
            VersionKey::new(t, 1, &m).unwrap();
            assert!(VersionKey::new(t, 1, &m[..31]).is_err(), "{t}");
        }
        let m = generate_material(KeyType::Ed25519).unwrap();
        let vk = VersionKey::new(KeyType::Ed25519, 1, &m).unwrap();
        assert_eq!(vk.public_key().unwrap().len(), 32);
        assert_eq!(KeyType::parse("ff1-aes256"), Some(KeyType::Ff1Aes256));
        assert_eq!(KeyType::parse("aes128-gcm"), None);
    }
}
