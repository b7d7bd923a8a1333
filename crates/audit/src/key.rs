//! The audit log's Ed25519 signing seed: 32 random bytes made on first start, stored in the
//! store (`monitor_state`) sealed under the master key, so checkpoints can only be signed, and
//! the verifying key only be derived, by someone holding the master key.

use base64::Engine;
use palisade_crypto::MasterKey;
use palisade_store::sqlx::AnyPool;
use ring::signature::KeyPair;
use zeroize::Zeroizing;

use crate::{index, AuditError};

/// The `monitor_state` row holding the sealed seed.
pub(crate) const LOG_KEY_STATE: &str = "audit_log_key";
const AAD: &[u8] = b"palisade audit log signing seed v1";

pub(crate) async fn log_seed(pool: &AnyPool, master: &MasterKey) -> Result<Zeroizing<[u8; 32]>, AuditError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(sealed) = index::load_state(pool, LOG_KEY_STATE).await? {
        let sealed = b64.decode(sealed.trim()).map_err(|_| AuditError::Key("the stored seed is not base64".into()))?;
        let plain = master.open(&sealed, AAD).map_err(|_| {
            AuditError::Key("the stored seed does not open with this master key (a different master key?)".into())
        })?;
        let mut seed = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(AuditError::Key("the stored seed has the wrong length".into()));
        }
        seed.copy_from_slice(&plain);
        return Ok(seed);
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), seed.as_mut())
        .map_err(|_| AuditError::Key("no randomness".into()))?;
    let sealed = master.seal(seed.as_ref(), AAD).map_err(|e| AuditError::Key(e.to_string()))?;
    index::insert_state_if_absent(pool, LOG_KEY_STATE, &b64.encode(sealed)).await?;
    // Another server replica may have won the race: use what is stored.
    Box::pin(log_seed(pool, master)).await
}

/// The log's verifying key (Ed25519, 32 bytes), for `palisade audit verify`.
pub async fn log_public_key(pool: &AnyPool, master: &MasterKey) -> Result<[u8; 32], AuditError> {
    let seed = log_seed(pool, master).await?;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
        .map_err(|_| AuditError::Key("the seed is not an Ed25519 key".into()))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(pair.public_key().as_ref());
    Ok(out)
}
