//! Where the master key comes from: a 0600 file, an environment variable (base64), or a 32-byte
//! root key kept in a file wrapped by an AES key inside a PKCS#11 token (as Vault's PKCS#11
//! auto-unseal does). The HSM key never leaves the token (sensitive, not extractable); the root
//! key is in clear only in memory.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use palisade_crypto::{write_secret_file, MasterKey};
use zeroize::Zeroizing;

use crate::error::VaultError;
use crate::keys::random_bytes;

/// Where to get the master key.
#[derive(Debug)]
pub enum MasterKeySource {
    /// A key file (base64 of 32 bytes, mode 0600), created on first use.
    File(PathBuf),
    /// The name of an environment variable holding base64 of 32 bytes.
    Env(String),
    /// A root key wrapped by an HSM key.
    Pkcs11(Pkcs11Config),
}

/// The PKCS#11 provider's settings.
pub struct Pkcs11Config {
    /// The module (`/usr/lib/softhsm/libsofthsm2.so`, a vendor's library).
    pub module: PathBuf,
    /// The label of the token to use.
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    /// The label of the AES-256 wrapping key in the token.
    pub key_label: String,
    /// Create the wrapping key in the token when none has this label.
    pub generate_key: bool,
    /// The wrapped root key (created, mode 0600, on first use).
    pub wrapped_key_file: PathBuf,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"[redacted]")
            .field("key_label", &self.key_label)
            .field("generate_key", &self.generate_key)
            .field("wrapped_key_file", &self.wrapped_key_file)
            .finish()
    }
}

/// Load (or on first use create) the master key.
pub fn load_master_key(src: &MasterKeySource) -> Result<MasterKey, VaultError> {
    match src {
        MasterKeySource::File(p) => MasterKey::load_or_create(p).map_err(|e| VaultError::Master(e.to_string())),
        MasterKeySource::Env(var) => from_env(var, |v| std::env::var(v).ok()),
        MasterKeySource::Pkcs11(cfg) => load_pkcs11(cfg),
    }
}

fn from_env(var: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<MasterKey, VaultError> {
    let text = Zeroizing::new(
        lookup(var).ok_or_else(|| VaultError::Master(format!("environment variable {var} is not set")))?,
    );
    MasterKey::from_base64(&text).map_err(|e| VaultError::Master(format!("{var}: {e}")))
}

/// Header of the wrapped root key file, then IV (12) and AES-GCM ciphertext+tag (48).
const WRAP_MAGIC: &[u8] = b"palisade-vault-pkcs11-v1\n";
const WRAP_AAD: &[u8] = b"palisade-vault root key";

fn hsm(what: &str) -> impl Fn(cryptoki::error::Error) -> VaultError + '_ {
    move |e| VaultError::Hsm(format!("{what}: {e}"))
}

fn open_session(cfg: &Pkcs11Config) -> Result<(Pkcs11, Session), VaultError> {
    let ctx = Pkcs11::new(&cfg.module).map_err(hsm("loading the PKCS#11 module"))?;
    ctx.initialize(CInitializeArgs::OsThreads).map_err(hsm("initializing the PKCS#11 module"))?;
    let slots = ctx.get_slots_with_token().map_err(hsm("listing slots"))?;
    let slot = slots
        .into_iter()
        .find(|s| ctx.get_token_info(*s).map(|t| t.label().trim_end() == cfg.token_label).unwrap_or(false))
        .ok_or_else(|| VaultError::Hsm(format!("no token labelled {:?}", cfg.token_label)))?;
    let session = ctx.open_rw_session(slot).map_err(hsm("opening a session"))?;
    session
        .login(UserType::User, Some(&AuthPin::new(cfg.pin.as_str().to_owned())))
        .map_err(hsm("logging in to the token"))?;
    Ok((ctx, session))
}

fn wrapping_key(session: &Session, cfg: &Pkcs11Config) -> Result<ObjectHandle, VaultError> {
    let label = cfg.key_label.as_bytes().to_vec();
    let found = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.clone())])
        .map_err(hsm("finding the wrapping key"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] if cfg.generate_key => session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(CkKeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label),
                ],
            )
            .map_err(hsm("generating the wrapping key")),
        [] => Err(VaultError::Hsm(format!("no key labelled {:?} in the token", cfg.key_label))),
        _ => Err(VaultError::Hsm(format!("several keys labelled {:?} in the token", cfg.key_label))),
    }
}

fn load_pkcs11(cfg: &Pkcs11Config) -> Result<MasterKey, VaultError> {
    let (_ctx, session) = open_session(cfg)?;
    let key = wrapping_key(&session, cfg)?;
    let root = match std::fs::read(&cfg.wrapped_key_file) {
        Ok(bytes) => unwrap_root(&session, key, &bytes, &cfg.wrapped_key_file)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let root = Zeroizing::new(random_bytes::<32>()?.to_vec());
            let mut iv = random_bytes::<12>()?;
            let params = GcmParams::new(&mut iv, WRAP_AAD, 128u64.into()).map_err(hsm("GCM parameters"))?;
            let ct = session.encrypt(&Mechanism::AesGcm(params), key, &root).map_err(hsm("wrapping the root key"))?;
            let mut file = WRAP_MAGIC.to_vec();
            file.extend_from_slice(&iv);
            file.extend_from_slice(&ct);
            write_secret_file(&cfg.wrapped_key_file, &file)
                .map_err(|e| VaultError::Master(format!("{}: {e}", cfg.wrapped_key_file.display())))?;
            root
        }
        Err(e) => return Err(VaultError::Master(format!("{}: {e}", cfg.wrapped_key_file.display()))),
    };
    let _ = session.logout();
    MasterKey::from_secret_bytes(&root).map_err(|e| VaultError::Master(e.to_string()))
}

fn unwrap_root(
    session: &Session,
    key: ObjectHandle,
    bytes: &[u8],
    path: &Path,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let bad = || VaultError::Master(format!("{}: not a wrapped root key", path.display()));
    let rest = bytes.strip_prefix(WRAP_MAGIC).ok_or_else(bad)?;
    let (iv, ct) = rest.split_at_checked(12).ok_or_else(bad)?;
    let mut iv = iv.to_vec();
    let params = GcmParams::new(&mut iv, WRAP_AAD, 128u64.into()).map_err(hsm("GCM parameters"))?;
    let root = Zeroizing::new(
        session
            .decrypt(&Mechanism::AesGcm(params), key, ct)
            .map_err(|e| VaultError::Hsm(format!("unwrapping the root key (wrong HSM key or altered file): {e}")))?,
    );
    if root.len() != 32 {
        return Err(bad());
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn file_provider_creates_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let a = load_master_key(&MasterKeySource::File(p.clone())).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = a.seal(b"x", b"ad").unwrap();
        let b = load_master_key(&MasterKeySource::File(p)).unwrap();
        assert_eq!(&b.open(&sealed, b"ad").unwrap()[..], b"x");
    }

    #[test]
    fn env_provider_reads_base64() {
        let text = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let k = from_env("PALISADE_MASTER_KEY", |v| (v == "PALISADE_MASTER_KEY").then(|| text.clone())).unwrap();
        let same = MasterKey::from_secret_bytes(&[5u8; 32]).unwrap();
        assert_eq!(&same.open(&k.seal(b"x", b"").unwrap(), b"").unwrap()[..], b"x");
        let e = from_env("NOPE", |_| None).unwrap_err();
        assert_eq!(e.to_string(), "master key: environment variable NOPE is not set");
        let e = from_env("K", |_| Some("c2hvcnQ=".into())).unwrap_err();
        assert_eq!(e.to_string(), "master key: K: invalid master key: need 32 bytes (base64 of 32 random bytes)");
        assert!(MasterKey::from_secret_bytes(&[1u8; 31]).is_err());
    }
}
