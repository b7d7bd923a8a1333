//! Login throttling with exponential backoff, per username and per client IP. After
//! `threshold` consecutive failures a key is locked for 1 s, then 2 s, 4 s, … up to 15 min;
//! a success clears the username's count. Counts are per server process (in memory).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_LOCK: Duration = Duration::from_secs(900);
/// A key with no failure for this long starts over.
const FORGET_AFTER: Duration = Duration::from_secs(900);
pub const USER_THRESHOLD: u32 = 5;
pub const IP_THRESHOLD: u32 = 20;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Throttle {
    map: Mutex<HashMap<String, Entry>>,
}

impl Throttle {
    /// How long until the first of `keys` that is locked opens again.
    pub fn locked(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| map.get(*k))
            .filter_map(|e| e.locked_until.and_then(|u| u.checked_duration_since(now)))
            .filter(|d| !d.is_zero())
            .max()
    }

    pub fn failure(&self, key: &str, threshold: u32, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER);
        }
        let e = map.entry(key.to_owned()).or_insert(Entry { failures: 0, last: now, locked_until: None });
        if now.duration_since(e.last) >= FORGET_AFTER {
            *e = Entry { failures: 0, last: now, locked_until: None };
        }
        e.failures += 1;
        e.last = now;
        if e.failures >= threshold {
            let exp = (e.failures - threshold).min(20);
            let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCK);
            e.locked_until = Some(now + lock);
        }
    }

    pub fn success(&self, key: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.failure("user:a", 5, now);
        }
        assert_eq!(t.locked(&["user:a"], now), None);
        t.failure("user:a", 5, now);
        assert_eq!(t.locked(&["user:a"], now), Some(Duration::from_secs(1)));
        t.failure("user:a", 5, now);
        assert_eq!(t.locked(&["user:a"], now), Some(Duration::from_secs(2)));
        t.failure("user:a", 5, now);
        assert_eq!(t.locked(&["ip:x", "user:a"], now), Some(Duration::from_secs(4)));
        for _ in 0..30 {
            t.failure("user:a", 5, now);
        }
        assert_eq!(t.locked(&["user:a"], now), Some(MAX_LOCK));
        assert_eq!(t.locked(&["user:a"], now + MAX_LOCK), None);
        t.success("user:a");
        assert_eq!(t.locked(&["user:a"], now), None);
    }

    #[test]
    fn old_failures_are_forgotten() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.failure("k", 5, now);
        }
        t.failure("k", 5, now + FORGET_AFTER);
        assert_eq!(t.locked(&["k"], now + FORGET_AFTER), None);
    }
}
