//! The ciphertext format: `pal:v<N>:<base64url>` where N is the key version and the decoded bytes
//! are `format(1) || alg(1) || key_id(4) || context_check(4) || nonce || ciphertext || tag`.
//! The header, the key name and version and the caller's context are all authenticated as
//! associated data, so changing any of them fails decryption; the header only lets us say *why*.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;
use ring::aead::{Aad, Nonce, NONCE_LEN};
use ring::hmac;
use zeroize::Zeroizing;

use crate::error::VaultError;
use crate::keys::{random_bytes, Primitive, VersionKey};

pub(crate) const FORMAT: u8 = 1;
const HEADER_LEN: usize = 10;
const TAG_LEN: usize = 16;

const ALG_GCM: u8 = 1;
const ALG_XCHACHA: u8 = 2;
const ALG_SIV: u8 = 3;
const ALG_SIV_DET: u8 = 4;

/// Longest `pal:v…:` text accepted, so hostile input cannot make us decode megabytes of base64
/// per item (64 MiB of plaintext is far past any sensible single value).
pub(crate) const MAX_TEXT: usize = 96 << 20;

/// Split `pal:v<N>:<payload>` into the version and the decoded payload.
pub(crate) fn parse(text: &str) -> Result<(u32, Vec<u8>), VaultError> {
    if text.len() > MAX_TEXT {
        return Err(VaultError::Malformed("too long"));
    }
    let rest = text.strip_prefix("pal:v").ok_or(VaultError::Malformed("does not start with pal:v"))?;
    let (num, b64) = rest.split_once(':').ok_or(VaultError::Malformed("no ':' after the version"))?;
    if num.is_empty() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) || num.starts_with('0') {
        return Err(VaultError::Malformed("version is not a positive number"));
    }
    let version: u32 = num.parse().map_err(|_| VaultError::Malformed("version is not a positive number"))?;
    let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| VaultError::Malformed("payload is not base64url"))?;
    Ok((version, bytes))
}

pub(crate) fn format(version: u32, payload: &[u8]) -> String {
    format!("pal:v{version}:{}", URL_SAFE_NO_PAD.encode(payload))
}

/// A keyed check of the context, mixed with the nonce so that two ciphertexts do not reveal
/// whether they share a context.
fn context_check(check: &hmac::Key, nonce: &[u8], context: &[u8]) -> [u8; 4] {
    let mut ctx = hmac::Context::with_key(check);
    ctx.update(nonce);
    ctx.update(context);
    let tag = ctx.sign();
    let mut out = [0u8; 4];
    out.copy_from_slice(tag.as_ref().get(..4).unwrap_or(&[0; 4]));
    out
}

fn aad(name: &str, version: u32, header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(24 + name.len() + header.len() + context.len());
    a.extend_from_slice(b"palisade-vault/v1\0");
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_be_bytes());
    a.extend_from_slice(header);
    a.extend_from_slice(context);
    a
}

/// Encrypt under one version. `deterministic` selects the synthetic nonce (GCM-SIV only; the
/// caller checked the key allows it).
pub(crate) fn seal(
    name: &str,
    key_id: u32,
    vk: &VersionKey,
    deterministic: bool,
    plaintext: &[u8],
    context: &[u8],
) -> Result<String, VaultError> {
    let alg = match (&vk.prim, deterministic) {
        (Primitive::Gcm(_), false) => ALG_GCM,
        (Primitive::XChaCha(_), false) => ALG_XCHACHA,
        (Primitive::Siv { .. }, false) => ALG_SIV,
        (Primitive::Siv { .. }, true) => ALG_SIV_DET,
        _ => return Err(VaultError::InvalidInput("deterministic encryption needs an aes256-gcm-siv key".into())),
    };
    let nonce: Vec<u8> = match &vk.prim {
        Primitive::Gcm(_) => random_bytes::<NONCE_LEN>()?.to_vec(),
        Primitive::XChaCha(_) => random_bytes::<24>()?.to_vec(),
        Primitive::Siv { nonce_key, .. } if deterministic => {
            // Synthetic nonce: a PRF of everything that varies, so equal plaintext and context
            // give equal ciphertexts and nothing else collides.
            let mut ctx = hmac::Context::with_key(nonce_key);
            ctx.update(&(context.len() as u64).to_be_bytes());
            ctx.update(context);
            ctx.update(plaintext);
            ctx.sign().as_ref().get(..12).unwrap_or(&[0; 12]).to_vec()
        }
        _ => random_bytes::<12>()?.to_vec(),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + nonce.len() + plaintext.len() + TAG_LEN);
    out.push(FORMAT);
    out.push(alg);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&context_check(&vk.check, &nonce, context));
    let ad = aad(name, vk.version, &out, context);
    out.extend_from_slice(&nonce);
    let fail = || VaultError::InvalidInput("plaintext too long".into());
    match &vk.prim {
        Primitive::Gcm(k) => {
            let n = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| VaultError::Rng)?;
            let mut body = plaintext.to_vec();
            k.seal_in_place_append_tag(n, Aad::from(&ad[..]), &mut body).map_err(|_| fail())?;
            out.extend_from_slice(&body);
        }
        Primitive::XChaCha(k) => {
            let ct = k.encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &ad }).map_err(|_| fail())?;
            out.extend_from_slice(&ct);
        }
        Primitive::Siv { aead, .. } => {
            let payload = aes_gcm_siv::aead::Payload { msg: plaintext, aad: &ad };
            let ct = aead.encrypt(aes_gcm_siv::Nonce::from_slice(&nonce), payload).map_err(|_| fail())?;
            out.extend_from_slice(&ct);
        }
        _ => return Err(VaultError::Unsupported { key_type: "non-AEAD", op: "encrypt" }),
    }
    Ok(format(vk.version, &out))
}

/// The header fields needed before a key version is chosen.
pub(crate) struct Header {
    pub(crate) key_id: u32,
}

pub(crate) fn header(payload: &[u8]) -> Result<Header, VaultError> {
    let h = payload.get(..HEADER_LEN).ok_or(VaultError::Malformed("shorter than its header"))?;
    if h.first() != Some(&FORMAT) {
        return Err(VaultError::Malformed("unknown format byte"));
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(h.get(2..6).ok_or(VaultError::Malformed("shorter than its header"))?);
    Ok(Header { key_id: u32::from_be_bytes(id) })
}

/// Decrypt a payload already matched to its key (id) and version.
pub(crate) fn open(
    name: &str,
    vk: &VersionKey,
    payload: &[u8],
    context: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let (head, body) = payload.split_at_checked(HEADER_LEN).ok_or(VaultError::Malformed("shorter than its header"))?;
    let alg = head.get(1).copied().unwrap_or(0);
    let ok_alg = matches!(
        (&vk.prim, alg),
        (Primitive::Gcm(_), ALG_GCM)
            | (Primitive::XChaCha(_), ALG_XCHACHA)
            | (Primitive::Siv { .. }, ALG_SIV)
            | (Primitive::Siv { .. }, ALG_SIV_DET)
    );
    if !ok_alg {
        return Err(VaultError::Malformed("algorithm byte does not match the key type"));
    }
    let ad = aad(name, vk.version, head, context);
    let result = match &vk.prim {
        Primitive::Gcm(k) => {
            let (nonce, ct) = body.split_at_checked(NONCE_LEN).ok_or(VaultError::Malformed("truncated"))?;
            if ct.len() < TAG_LEN {
                return Err(VaultError::Malformed("truncated"));
            }
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Malformed("truncated"))?;
            let mut buf = Zeroizing::new(ct.to_vec());
            match k.open_in_place(nonce, Aad::from(&ad[..]), &mut buf) {
                Ok(pt) => {
                    let n = pt.len();
                    buf.truncate(n);
                    Ok(buf)
                }
                Err(_) => Err(()),
            }
        }
        Primitive::XChaCha(k) => {
            let (nonce, ct) = body.split_at_checked(24).ok_or(VaultError::Malformed("truncated"))?;
            if ct.len() < TAG_LEN {
                return Err(VaultError::Malformed("truncated"));
            }
            k.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &ad }).map(Zeroizing::new).map_err(|_| ())
        }
        Primitive::Siv { aead, .. } => {
            let (nonce, ct) = body.split_at_checked(12).ok_or(VaultError::Malformed("truncated"))?;
            if ct.len() < TAG_LEN {
                return Err(VaultError::Malformed("truncated"));
            }
            aead.decrypt(aes_gcm_siv::Nonce::from_slice(nonce), aes_gcm_siv::aead::Payload { msg: ct, aad: &ad })
                .map(Zeroizing::new)
                .map_err(|_| ())
        }
        _ => return Err(VaultError::Unsupported { key_type: "non-AEAD", op: "decrypt" }),
    };
    match result {
        Ok(pt) => Ok(pt),
        Err(()) => {
            let nonce_len = if alg == ALG_XCHACHA { 24 } else { 12 };
            let nonce = body.get(..nonce_len).unwrap_or_default();
            if head.get(6..10) == Some(&context_check(&vk.check, nonce, context)[..]) {
                Err(VaultError::Tampered)
            } else {
                Err(VaultError::WrongContext)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyType;

    #[test]
    fn parse_rejects_bad_prefixes_and_versions() {
        assert!(matches!(parse("vault:v1:AAAA"), Err(VaultError::Malformed("does not start with pal:v"))));
        assert!(matches!(parse("pal:v0:AAAA"), Err(VaultError::Malformed("version is not a positive number"))));
        assert!(matches!(parse("pal:v01:AAAA"), Err(VaultError::Malformed("version is not a positive number"))));
        assert!(matches!(parse("pal:v99999999999:AAAA"), Err(VaultError::Malformed(_))));
        assert!(matches!(parse("pal:v4294967296:AAAA"), Err(VaultError::Malformed(_))));
        assert!(matches!(parse("pal:v1AAAA"), Err(VaultError::Malformed("no ':' after the version"))));
        assert!(matches!(parse("pal:v1:A+/="), Err(VaultError::Malformed("payload is not base64url"))));
        assert_eq!(parse("pal:v12:AQI").unwrap(), (12, vec![1, 2]));
    }

    #[test]
    fn every_aead_round_trips_and_reports_why_it_fails() {
        for (t, det) in [
            (KeyType::Aes256Gcm, false),
            (KeyType::XChaCha20Poly1305, false),
            (KeyType::Aes256GcmSiv, false),
            (KeyType::Aes256GcmSiv, true),
        ] {
            let vk = VersionKey::new(t, 3, &[9u8; 32]).unwrap();
            let ct = seal("k", 77, &vk, det, b"hello", b"ctx").unwrap();
            assert!(ct.starts_with("pal:v3:"), "{ct}");
            let (v, payload) = parse(&ct).unwrap();
            assert_eq!(v, 3);
            assert_eq!(header(&payload).unwrap().key_id, 77);
            assert_eq!(&open("k", &vk, &payload, b"ctx").unwrap()[..], b"hello");
            assert!(matches!(open("k", &vk, &payload, b"other"), Err(VaultError::WrongContext)), "{t}");
            let mut bad = payload.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(matches!(open("k", &vk, &bad, b"ctx"), Err(VaultError::Tampered)), "{t}");
            // The key name is bound too.
            assert!(matches!(open("other", &vk, &payload, b"ctx"), Err(VaultError::Tampered)), "{t}");
            assert!(matches!(open("k", &vk, &payload[..12], b"ctx"), Err(VaultError::Malformed("truncated"))));
            let again = seal("k", 77, &vk, det, b"hello", b"ctx").unwrap();
            assert_eq!(again == ct, det, "{t} deterministic={det}");
            // The context check does not link ciphertexts that share a context.
            let (_, p2) = parse(&again).unwrap();
            assert_eq!(p2[6..10] == payload[6..10], det, "{t}");
        }
    }
}
