//! The master key and sealing. Sealed format: `0x01 || nonce(12) || ciphertext || tag(16)`,
//! with caller-chosen associated data binding the blob to its purpose (e.g. a key id).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::CryptoError;

const VERSION: u8 = 1;

/// Write a file only its owner can read (mode 0600), atomically: a temporary file is written,
/// synced and renamed, so a crash never leaves half a secret behind.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub struct MasterKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::InvalidMasterKey("need 32 bytes"))?;
        Ok(MasterKey { key: LessSafeKey::new(unbound) })
    }

    /// Build the key from its 32 raw bytes (a root key unwrapped by an HSM, for instance).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<MasterKey, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::InvalidMasterKey("need 32 bytes"));
        }
        Self::from_bytes(bytes)
    }

    /// Parse the base64 text form (as stored in the key file or an environment variable).
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes =
            Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| CryptoError::InvalidMasterKey("not base64"))?);
        if bytes.len() != 32 {
            return Err(CryptoError::InvalidMasterKey("need 32 bytes (base64 of 32 random bytes)"));
        }
        Self::from_bytes(&bytes)
    }

    /// Load the key file, or create it (mode 0600, written atomically) if it does not exist.
    /// An existing file readable by group or others is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let err = |reason: String| CryptoError::MasterKeyFile { path: path.display().to_string(), reason };
        match std::fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(err("permissions are too open; run chmod 600 on it".into()));
                }
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
                Self::from_base64(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                SystemRandom::new().fill(bytes.as_mut()).map_err(|_| err("no randomness".into()))?;
                let text = Zeroizing::new(STANDARD.encode(bytes.as_ref()) + "\n");
                write_secret_file(path, text.as_bytes()).map_err(|e| err(e.to_string()))?;
                Self::from_bytes(bytes.as_ref())
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Encrypt and authenticate `plaintext`, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| CryptoError::KeyGeneration)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Malformed)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypt what [`seal`](Self::seal) produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
        if version != VERSION || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Malformed)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self.key.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(|_| CryptoError::Unauthentic)?.len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let a = MasterKey::load_or_create(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = a.seal(b"secret", b"kid-1").unwrap();
        let b = MasterKey::load_or_create(&p).unwrap();
        assert_eq!(&b.open(&sealed, b"kid-1").unwrap()[..], b"secret");
    }

    #[test]
    fn open_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        MasterKey::load_or_create(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterKey::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("permissions are too open"), "{e}");
    }

    #[test]
    fn tampering_wrong_aad_and_wrong_key_fail() {
        let k = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let mut sealed = k.seal(b"secret", b"a").unwrap();
        assert!(matches!(k.open(&sealed, b"b"), Err(CryptoError::Unauthentic)));
        let other = MasterKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(matches!(other.open(&sealed, b"a"), Err(CryptoError::Unauthentic)));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(k.open(&sealed, b"a"), Err(CryptoError::Unauthentic)));
        assert!(matches!(k.open(&[1, 2, 3], b"a"), Err(CryptoError::Malformed)));
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn nonces_differ() {
        let k = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        assert_ne!(k.seal(b"x", b"").unwrap(), k.seal(b"x", b"").unwrap());
    }
}
