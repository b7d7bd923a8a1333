//! In-memory views that keep the token path off the database:
//! - [`Revoked`]: revoked access-token `jti`s and grant ids. Revocations made by this process
//!   apply at once; those made by another `server` replica arrive with the next sync (every
//!   second).
//! - [`Clients`]: client registrations, re-read after one second, dropped at once when this
//!   process changes them. A change made elsewhere (the CLI, another replica) applies within a
//!   second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::model::Client;
use crate::repo::{DbResult, Repo};

pub const CLIENT_TTL: Duration = Duration::from_secs(1);
/// Rows are fetched from a little before the last sync, so a revocation committed with a
/// slightly older timestamp (clock skew between replicas, a slow commit) is not missed.
const SYNC_OVERLAP: i64 = 10;

#[derive(Default)]
pub struct Revoked {
    ids: RwLock<HashMap<String, i64>>,
    last_sync: Mutex<Option<i64>>,
}

impl Revoked {
    pub fn contains(&self, id: &str, now: i64) -> bool {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).get(id).is_some_and(|exp| *exp > now)
    }

    pub fn insert(&self, id: &str, expires_at: i64) {
        self.ids.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), expires_at);
    }

    /// Pull revocations recorded since the last sync (all of them the first time) and forget
    /// the expired ones.
    pub async fn sync(&self, repo: &Repo) -> DbResult<()> {
        let now = palisade_store::now();
        let since = self.last_sync.lock().unwrap_or_else(|p| p.into_inner()).map_or(0, |t| t - SYNC_OVERLAP);
        let rows = repo.revocations_since(since, now).await?;
        {
            let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
            ids.retain(|_, exp| *exp > now);
            ids.extend(rows);
        }
        *self.last_sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(())
    }
}

/// Access tokens whose signature was already verified, keyed by SHA-256 of the whole token,
/// kept until the token expires. A hit skips only the signature check: expiry, the signing key
/// still being published, and revocation are checked on every use.
struct Entry {
    exp: i64,
    kid: String,
    claims: Arc<Map<String, Value>>,
}

#[derive(Default)]
pub struct Verified {
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Verified {
    pub fn key(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        k
    }

    /// `(kid, claims)` of a verified, unexpired token.
    pub fn get(&self, key: &[u8; 32], now: i64) -> Option<(String, Arc<Map<String, Value>>)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|e| e.exp > now).map(|e| (e.kid.clone(), e.claims.clone()))
    }

    pub fn insert(&self, key: [u8; 32], kid: String, claims: Arc<Map<String, Value>>, now: i64) {
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 50_000 {
            map.retain(|_, e| e.exp > now);
            if map.len() >= 50_000 {
                map.clear();
            }
        }
        map.insert(key, Entry { exp, kid, claims });
    }
}

#[derive(Default)]
pub struct Clients {
    map: Mutex<HashMap<String, (Instant, Arc<Client>)>>,
}

impl Clients {
    pub async fn get(&self, repo: &Repo, id: &str) -> DbResult<Option<Arc<Client>>> {
        if let Some((at, c)) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            if at.elapsed() < CLIENT_TTL {
                return Ok(Some(c.clone()));
            }
        }
        let Some(c) = repo.client(id).await? else {
            self.forget(id);
            return Ok(None);
        };
        let c = Arc::new(c);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 10_000 {
            map.clear();
        }
        map.insert(id.to_owned(), (Instant::now(), c.clone()));
        Ok(Some(c))
    }

    pub fn forget(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_ids_expire() {
        let r = Revoked::default();
        r.insert("a", 100);
        assert!(r.contains("a", 99));
        assert!(!r.contains("a", 100));
        assert!(!r.contains("b", 0));
    }
}
