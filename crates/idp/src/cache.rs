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
