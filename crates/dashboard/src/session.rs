//! Server-side sessions and pending OIDC sign-ins, in memory. The browser holds only a random
//! 32-byte id; the map is keyed by its SHA-256, so a memory dump does not yield usable cookies.
//! A session ends after 8 hours, or after an hour without a request, whichever comes first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// A sign-in must come back from the IdP within this.
pub(crate) const PENDING_TTL: Duration = Duration::from_secs(600);
/// Caps on entries, so unauthenticated `GET /ui/login/oidc` cannot grow memory without bound.
const MAX_PENDING: usize = 1024;
const MAX_SESSIONS: usize = 10_000;

/// How a session was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    AdminToken,
    Oidc,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Who acknowledges alerts: `preferred_username` (else `sub`) or `admin-token`.
    pub(crate) subject: String,
    /// Per-session anti-CSRF token, given to the shell in a `<meta>` tag.
    pub(crate) csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// PKCE verifier and nonce of one sign-in in flight, keyed by `state`.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) verifier: String,
    pub(crate) nonce: String,
    created: Instant,
}

pub(crate) struct Sessions {
    rng: SystemRandom,
    live: Mutex<HashMap<[u8; 32], Session>>,
    pending: Mutex<HashMap<String, Pending>>,
}

fn digest(id: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, id);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Sessions {
    pub(crate) fn new() -> Sessions {
        Sessions { rng: SystemRandom::new(), live: Mutex::default(), pending: Mutex::default() }
    }

    /// 32 random bytes, base64url without padding (43 characters).
    pub(crate) fn random_token(&self) -> Option<String> {
        let mut b = [0u8; 32];
        self.rng.fill(&mut b).ok()?;
        Some(URL_SAFE_NO_PAD.encode(b))
    }

    /// Start a session; returns the cookie value. `None` only if the system RNG fails.
    pub(crate) fn create(&self, subject: &str, via: Via, now: Instant) -> Option<(String, Session)> {
        let id = self.random_token()?;
        let csrf = self.random_token()?;
        let session = Session { subject: subject.to_owned(), csrf, created: now, last_seen: now };
        tracing::debug!(via = ?via, "dashboard: session created");
        let mut live = self.live.lock().ok()?;
        live.retain(|_, s| s.alive(now));
        if live.len() >= MAX_SESSIONS {
            // Drop the least recently used: a flood of logins must not lock everyone out forever.
            if let Some(k) = live.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                live.remove(&k);
            }
        }
        live.insert(digest(id.as_bytes()), session.clone());
        Some((id, session))
    }

    /// The live session of a cookie value, touched (idle timer restarted).
    pub(crate) fn get(&self, cookie: &str, now: Instant) -> Option<Session> {
        if cookie.len() != 43 {
            return None;
        }
        let key = digest(cookie.as_bytes());
        let mut live = self.live.lock().ok()?;
        let s = live.get_mut(&key)?;
        if !s.alive(now) {
            live.remove(&key);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    pub(crate) fn remove(&self, cookie: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&digest(cookie.as_bytes()));
        }
    }

    /// Remember a sign-in in flight; returns `(state, pending)`.
    pub(crate) fn begin(&self, now: Instant) -> Option<(String, Pending)> {
        let state = self.random_token()?;
        let pending = Pending { verifier: self.random_token()?, nonce: self.random_token()?, created: now };
        let mut map = self.pending.lock().ok()?;
        map.retain(|_, p| now.saturating_duration_since(p.created) < PENDING_TTL);
        if map.len() >= MAX_PENDING {
            if let Some(k) = map.iter().min_by_key(|(_, p)| p.created).map(|(k, _)| k.clone()) {
                map.remove(&k);
            }
        }
        map.insert(state.clone(), pending.clone());
        Some((state, pending))
    }

    /// Take (one use only) the sign-in of `state` if it has not expired.
    pub(crate) fn finish(&self, state: &str, now: Instant) -> Option<Pending> {
        let p = self.pending.lock().ok()?.remove(state)?;
        (now.saturating_duration_since(p.created) < PENDING_TTL).then_some(p)
    }
}

impl Session {
    fn alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < SESSION_TTL
            && now.saturating_duration_since(self.last_seen) < IDLE_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expires_when_idle_and_after_eight_hours() {
        let s = Sessions::new();
        let t0 = Instant::now();
        let (id, _) = s.create("alice", Via::Oidc, t0).unwrap();
        assert_eq!(id.len(), 43);
        assert_eq!(s.get(&id, t0 + Duration::from_secs(3599)).unwrap().subject, "alice");
        // Touched at 3599 s, so still alive at 7000 s.
        assert!(s.get(&id, t0 + Duration::from_secs(7000)).is_some());
        // Idle for an hour: gone, and stays gone.
        assert!(s.get(&id, t0 + Duration::from_secs(7000 + 3600)).is_none());
        assert!(s.get(&id, t0 + Duration::from_secs(7001)).is_none());

        let (id, _) = s.create("bob", Via::AdminToken, t0).unwrap();
        let mut t = t0;
        for _ in 0..16 {
            t += Duration::from_secs(1800);
            if t.duration_since(t0) < SESSION_TTL {
                assert!(s.get(&id, t).is_some(), "alive at {:?}", t.duration_since(t0));
            }
        }
        assert!(s.get(&id, t0 + SESSION_TTL).is_none());
    }

    #[test]
    fn session_lookup_needs_the_exact_id_and_removal_works() {
        let s = Sessions::new();
        let t0 = Instant::now();
        let (id, sess) = s.create("alice", Via::Oidc, t0).unwrap();
        assert_ne!(id, sess.csrf);
        let mut other = id.clone();
        other.replace_range(0..1, if id.starts_with('A') { "B" } else { "A" });
        assert!(s.get(&other, t0).is_none());
        assert!(s.get("short", t0).is_none());
        s.remove(&id);
        assert!(s.get(&id, t0).is_none());
    }

    #[test]
    fn pending_sign_in_is_single_use_and_expires() {
        let s = Sessions::new();
        let t0 = Instant::now();
        let (state, p) = s.begin(t0).unwrap();
        assert_eq!(p.verifier.len(), 43);
        assert_eq!(s.finish(&state, t0).unwrap().nonce, p.nonce);
        assert!(s.finish(&state, t0).is_none());
        let (state, _) = s.begin(t0).unwrap();
        assert!(s.finish(&state, t0 + PENDING_TTL).is_none());
    }
}
