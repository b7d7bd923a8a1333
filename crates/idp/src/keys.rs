//! The signing keyset: stored sealed in the database (shared by every `server` replica),
//! opened with the master key, re-read every few seconds so a rotation made by
//! `palisade keys rotate` (or another replica) is picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_crypto::{Alg, Keyset, MasterKey, SealedKeyset};

use crate::repo::Repo;

pub const KEYSET_NAME: &str = "idp";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Crypto(#[from] palisade_crypto::CryptoError),
    #[error("stored keyset is not valid JSON: {0}")]
    Format(#[from] serde_json::Error),
    #[error("the keyset changed during the rotation; try again")]
    Conflict,
}

pub struct Keys {
    repo: Repo,
    master: MasterKey,
    current: ArcSwap<(String, Keyset)>,
}

fn now_u64() -> u64 {
    u64::try_from(palisade_store::now()).unwrap_or(0)
}

impl Keys {
    /// Load the keyset, creating it (one `alg` key signing from now) on first start.
    pub async fn load(repo: Repo, master: MasterKey, alg: Alg) -> Result<Keys, KeyError> {
        let (sealed, keyset) = match Self::read(&repo, &master).await? {
            Some(found) => found,
            None => {
                let keyset = Keyset::generate(alg, now_u64())?;
                let sealed = serde_json::to_string(&keyset.seal(&master)?)?;
                if repo.insert_keyset(KEYSET_NAME, &sealed, palisade_store::now()).await? {
                    tracing::info!(alg = alg.name(), "created the signing keyset");
                    (sealed, keyset)
                } else {
                    Self::read(&repo, &master).await?.ok_or(KeyError::Conflict)?
                }
            }
        };
        Ok(Keys { repo, master, current: ArcSwap::from_pointee((sealed, keyset)) })
    }

    async fn read(repo: &Repo, master: &MasterKey) -> Result<Option<(String, Keyset)>, KeyError> {
        let Some((sealed, _)) = repo.keyset(KEYSET_NAME).await? else { return Ok(None) };
        let keyset = serde_json::from_str::<SealedKeyset>(&sealed)?.open(master)?;
        Ok(Some((sealed, keyset)))
    }

    pub fn keyset(&self) -> Arc<(String, Keyset)> {
        self.current.load_full()
    }

    /// Re-read the stored keyset if it changed.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let Some((sealed, _)) = self.repo.keyset(KEYSET_NAME).await? else { return Ok(()) };
        if sealed != self.current.load().0 {
            let keyset = serde_json::from_str::<SealedKeyset>(&sealed)?.open(&self.master)?;
            tracing::info!("signing keyset changed; reloaded");
            self.current.store(Arc::new((sealed, keyset)));
        }
        Ok(())
    }

    /// Poll for changes until the task is dropped.
    pub async fn refresh_loop(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot refresh the signing keyset; keeping the loaded one");
            }
        }
    }
}

/// Rotate the stored keyset: the new key is published now and signs from `now + activate_after`;
/// older keys stay published for `max_token_lifetime` after that. Returns the new kid and its
/// activation time.
pub async fn rotate(
    repo: &Repo,
    master: &MasterKey,
    alg: Alg,
    activate_after: u64,
    max_token_lifetime: u64,
) -> Result<(String, u64), KeyError> {
    let now = now_u64();
    let (previous, mut keyset) = match Keys::read(repo, master).await? {
        Some(found) => found,
        None => {
            let keyset = Keyset::generate(alg, now)?;
            let sealed = serde_json::to_string(&keyset.seal(master)?)?;
            if !repo.insert_keyset(KEYSET_NAME, &sealed, palisade_store::now()).await? {
                return Err(KeyError::Conflict);
            }
            (sealed, keyset)
        }
    };
    keyset.prune(now);
    let (kid, activate_at) = {
        let v = keyset.rotate(alg, now, activate_after, max_token_lifetime)?;
        (v.kid.clone(), v.activate_at)
    };
    let sealed = serde_json::to_string(&keyset.seal(master)?)?;
    if !repo.replace_keyset(KEYSET_NAME, &previous, &sealed, palisade_store::now()).await? {
        return Err(KeyError::Conflict);
    }
    Ok((kid, activate_at))
}

/// Default delay between publishing a new key and signing with it: long enough for relying
/// parties that cache the JWKS for a few minutes.
pub const DEFAULT_ACTIVATE_AFTER: u64 = 600;

impl Keys {
    /// Rotate the stored keyset and load the result at once.
    pub async fn rotate(
        &self,
        alg: Alg,
        activate_after: u64,
        max_token_lifetime: u64,
    ) -> Result<(String, u64), KeyError> {
        let r = rotate(&self.repo, &self.master, alg, activate_after, max_token_lifetime).await?;
        self.refresh().await?;
        Ok(r)
    }
}
