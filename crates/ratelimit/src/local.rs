//! In-process store: sharded maps from key to TAT behind `std::sync::Mutex`es, locked only for the few
//! hundred nanoseconds of one GCRA step (never across an await).
//!
//! Invariants: a shard never holds more than its cap of keys; removing a key whose TAT is not in the future
//! changes no verdict (see `gcra`), so expired keys are swept lazily, with amortized O(1) cost per new key.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::gcra::{gcra, unix_micros, Quota, Verdict, CLOCK_STEP_US};
use crate::store::{Store, StoreError};

/// Below this many keys a shard is not swept at all: sweeping a tiny map costs more than it saves.
const MIN_SWEEP_LEN: usize = 64;
/// Default number of shards: enough to make lock contention between a handful of worker threads rare.
const DEFAULT_SHARDS: usize = 16;

/// A rate-limit store local to this process.
///
/// Memory is bounded by `max_keys` (enforced per shard: each of the `n` shards holds at most
/// `ceil(max_keys / n)` keys). When a shard is full of keys that still matter, the keys closest to having
/// their full burst back (lowest TAT) are forgotten first, an eighth of the shard at a time; a forgotten key
/// starts again with its full burst. So the cap can make the limiter more lenient for some keys (those
/// nearest to idle) but never denies a request that would otherwise be allowed, and a flood of one-off keys
/// evicts itself before it evicts busy clients.
#[derive(Debug)]
pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: usize,
    shard_cap: usize,
    /// Picks the shard; the shards' maps hash with their own seeds. Keys can be chosen by clients
    /// (`client_ip`, headers), so both are seeded per process.
    hasher: RandomState,
}

/// foldhash with a per-process random seed: several times cheaper than SipHash for keys of a few
/// dozen bytes, and an outsider cannot predict which keys collide.
type RandomState = foldhash::quality::RandomState;

#[derive(Debug, Default)]
struct Shard {
    /// Key -> theoretical arrival time (µs since the Unix epoch).
    tats: HashMap<Box<str>, u64, RandomState>,
    /// Sweep expired keys when inserting a new key would make the map this large.
    sweep_at: usize,
    /// The latest time (µs) a check of this shard ran at; see [`Shard::now`].
    clock: u64,
}

impl Shard {
    /// The time a check runs at: the caller's clock reading, or the shard's latest when the reading is
    /// behind it by at most [`CLOCK_STEP_US`]. A caller that read the clock and was then preempted (or
    /// waited for the lock) would otherwise be judged in the past, against a TAT that later requests have
    /// already advanced, and be limited although the limit was never reached. A reading further behind is
    /// a clock step, which [`gcra`] handles, and becomes the shard's time.
    fn now(&mut self, reading: u64) -> u64 {
        if reading < self.clock && self.clock - reading <= CLOCK_STEP_US {
            return self.clock;
        }
        self.clock = reading;
        reading
    }
}

impl LocalStore {
    /// A store holding at most about `max_keys` keys (at least 1), in 16 shards.
    pub fn new(max_keys: usize) -> Self {
        Self::with_shards(max_keys, DEFAULT_SHARDS)
    }

    /// A store holding at most `ceil(max_keys / shards) * shards` keys in `shards` shards (rounded up to a
    /// power of two, at least 1).
    pub fn with_shards(max_keys: usize, shards: usize) -> Self {
        let n = shards.clamp(1, 1 << 16).next_power_of_two();
        let shard_cap = max_keys.max(1).div_ceil(n);
        let sweep_at = MIN_SWEEP_LEN.min(shard_cap);
        Self {
            shards: (0..n).map(|_| Mutex::new(Shard { tats: HashMap::default(), sweep_at, clock: 0 })).collect(),
            shard_mask: n - 1,
            shard_cap,
            hasher: RandomState::default(),
        }
    }

    /// The synchronous check behind [`Store::check`]; infallible.
    pub fn check_at(&self, key: &str, quota: &Quota, now: SystemTime) -> Verdict {
        let now = unix_micros(now);
        // Truncating the hash to usize is fine: only the low bits pick the shard.
        let index = (self.hasher.hash_one(key) as usize) & self.shard_mask;
        let Some(shard) = self.shards.get(index) else {
            // Unreachable (index is masked by len - 1); allowing is the harmless answer.
            return gcra(None, now, quota).verdict;
        };
        // A panic while holding the lock cannot leave a shard inconsistent (each update is one insert),
        // so a poisoned lock is used as is.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let now = shard.now(now);
        if let Some(tat) = shard.tats.get_mut(key) {
            let decision = gcra(Some(*tat), now, quota);
            if let Some(new_tat) = decision.new_tat {
                *tat = new_tat;
            }
            return decision.verdict;
        }
        let decision = gcra(None, now, quota);
        if let Some(new_tat) = decision.new_tat {
            shard.make_room(now, self.shard_cap);
            shard.tats.insert(Box::from(key), new_tat);
        }
        decision.verdict
    }

    /// Removes every key whose TAT is not in the future (this changes no verdict). The store also does this
    /// by itself as it grows; call it from a timer to give memory back after a burst of keys.
    pub fn purge_expired(&self, now: SystemTime) {
        let now = unix_micros(now);
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.sweep(now, self.shard_cap);
        }
    }

    /// Number of keys currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len()).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    /// Ensures one more key fits under `cap`, sweeping only when the map has doubled since the last sweep
    /// (or nears the cap), so the cost is amortized O(1) per new key.
    fn make_room(&mut self, now: u64, cap: usize) {
        if self.tats.len() < self.sweep_at {
            return;
        }
        self.sweep(now, cap);
        // Keep an eighth of the cap free so that the next sweep is at least cap / 8 new keys away.
        let slack = (cap / 8).max(1);
        let target = cap.saturating_sub(slack);
        if self.tats.len() > target {
            self.evict_lowest(self.tats.len() - target);
        }
        self.sweep_at = self.tats.len().saturating_mul(2).max(MIN_SWEEP_LEN).min(cap);
    }

    fn sweep(&mut self, now: u64, cap: usize) {
        self.tats.retain(|_, tat| *tat > now);
        if self.tats.capacity() > self.tats.len().saturating_mul(4).max(MIN_SWEEP_LEN) {
            self.tats.shrink_to(self.tats.len().saturating_mul(2));
        }
        self.sweep_at = self.tats.len().saturating_mul(2).max(MIN_SWEEP_LEN).min(cap);
    }

    /// Forgets the `count` keys with the lowest TAT (ties may forget a few more).
    fn evict_lowest(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let mut tats: Vec<u64> = self.tats.values().copied().collect();
        let Some(nth) = count.checked_sub(1).filter(|&i| i < tats.len()) else {
            self.tats.clear();
            return;
        };
        let (_, threshold, _) = tats.select_nth_unstable(nth);
        let threshold = *threshold;
        self.tats.retain(|_, tat| *tat > threshold);
    }
}

#[async_trait::async_trait]
impl Store for LocalStore {
    async fn check(&self, key: &str, quota: &Quota, now: SystemTime) -> Result<Verdict, StoreError> {
        Ok(self.check_at(key, quota, now))
    }

    fn local(&self) -> Option<&LocalStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const BASE: Duration = Duration::from_secs(1_700_000_000);

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + BASE + Duration::from_millis(ms)
    }

    fn allowed(remaining: u32, reset_ms: u64) -> Verdict {
        Verdict::Allowed { remaining, reset: Duration::from_millis(reset_ms) }
    }

    #[test]
    fn keys_are_independent_and_follow_gcra() {
        let store = LocalStore::new(1000);
        let quota = Quota::new(10, Duration::from_secs(1), 1).unwrap();
        assert_eq!(store.check_at("a", &quota, at(0)), allowed(1, 100));
        assert_eq!(store.check_at("a", &quota, at(0)), allowed(0, 200));
        assert_eq!(
            store.check_at("a", &quota, at(0)),
            Verdict::Limited { retry_after: Duration::from_millis(100), reset: Duration::from_millis(200) }
        );
        assert_eq!(store.check_at("b", &quota, at(0)), allowed(1, 100));
        assert_eq!(store.check_at("a", &quota, at(100)), allowed(0, 200));
        assert_eq!(store.len(), 2);
    }

    /// A caller whose clock reading is older than the shard's latest (it was preempted between reading
    /// the clock and taking the lock) is judged at the shard's time, not limited by requests that came
    /// after its reading. A reading over a clock step behind is a clock step: it becomes the time.
    #[test]
    fn stale_readings_are_judged_at_the_latest_time() {
        let store = LocalStore::with_shards(100, 1);
        let quota = Quota::new(1000, Duration::from_secs(1), 1).unwrap(); // T = 1 ms, tau = 1 ms
        for ms in 0..10 {
            assert!(store.check_at("k", &quota, at(ms)).is_allowed());
        }
        // At 9 ms the TAT is 10 ms; a reading taken at 5 ms would be 5 ms ahead of it (> tau) and limited.
        assert_eq!(store.check_at("k", &quota, at(5)), allowed(0, 2));
        // The key's next request at the latest time finds the slot just taken.
        assert!(!store.check_at("k", &quota, at(9)).is_allowed());
        // Two seconds back is a clock step: the TAT is clamped and the step becomes the shard's time.
        assert!(!store.check_at("k", &quota, at(0).checked_sub(Duration::from_secs(2)).unwrap()).is_allowed());
        assert_eq!(store.shards[0].lock().unwrap().clock, unix_micros(at(0)) - 2_000_000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn trait_object_check() {
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(10));
        let quota = Quota::new(1, Duration::from_secs(1), 0).unwrap();
        assert_eq!(store.check("k", &quota, at(0)).await, Ok(allowed(0, 1000)));
        assert!(!store.check("k", &quota, at(1)).await.unwrap().is_allowed());
    }

    /// Two threads hammer the same key in lockstep over a simulated second (a barrier per millisecond),
    /// each at 5x the rate: the accepted count is exactly floor(999 ms / 1 ms) + burst + 1, no lost update.
    #[test]
    fn concurrent_checks_from_two_threads_are_exact() {
        let store = Arc::new(LocalStore::new(10_000));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let quota = Quota::new(1000, Duration::from_secs(1), 99).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|thread| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut accepted = 0u32;
                    for ms in 0..1000u64 {
                        barrier.wait();
                        for _ in 0..5 {
                            if store.check_at("shared", &quota, at(ms)).is_allowed() {
                                accepted += 1;
                            }
                        }
                        // A private key per thread is unaffected by the other thread.
                        assert!(store.check_at(&format!("own-{thread}"), &quota, at(ms)).is_allowed());
                    }
                    accepted
                })
            })
            .collect();
        let total: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 999 + 99 + 1);
    }

    #[test]
    fn concurrent_single_instant_admits_exactly_burst_plus_one() {
        let store = Arc::new(LocalStore::new(100));
        let quota = Quota::new(1, Duration::from_secs(60), 49).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..1000).filter(|_| store.check_at("k", &quota, at(5)).is_allowed()).count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 50);
    }

    #[test]
    fn expired_keys_are_swept_when_the_map_grows() {
        let store = LocalStore::with_shards(10_000, 1);
        let quota = Quota::new(1, Duration::from_secs(1), 0).unwrap();
        for i in 0..MIN_SWEEP_LEN {
            store.check_at(&format!("old-{i}"), &quota, at(0));
        }
        assert_eq!(store.len(), MIN_SWEEP_LEN);
        // One second later every old key's TAT (= 1000 ms) is not in the future: the next new key sweeps them.
        store.check_at("new", &quota, at(1000));
        assert_eq!(store.len(), 1);
        // And a swept key behaves exactly as before the sweep would have: full burst.
        assert_eq!(store.check_at("old-0", &quota, at(1000)), allowed(0, 1000));
    }

    #[test]
    fn purge_expired_keeps_live_keys() {
        let store = LocalStore::new(100);
        let quota = Quota::new(1, Duration::from_secs(1), 0).unwrap();
        store.check_at("early", &quota, at(0));
        store.check_at("late", &quota, at(500));
        store.purge_expired(at(999));
        assert_eq!(store.len(), 2);
        store.purge_expired(at(1000));
        assert_eq!(store.len(), 1);
        assert!(!store.check_at("late", &quota, at(1000)).is_allowed());
        store.purge_expired(at(1500));
        assert!(store.is_empty());
    }

    #[test]
    fn cap_evicts_the_keys_nearest_to_idle_first() {
        let store = LocalStore::with_shards(16, 1);
        let quota = Quota::new(1, Duration::from_secs(1000), 100).unwrap();
        // A busy key: TAT far in the future.
        for _ in 0..50 {
            assert!(store.check_at("busy", &quota, at(0)).is_allowed());
        }
        // 40 one-off keys at the same instant (TAT = now + 1000 s each, all still live).
        for i in 0..40 {
            assert!(store.check_at(&format!("flood-{i}"), &quota, at(0)).is_allowed());
            assert!(store.len() <= 16, "len {} after {i}", store.len());
        }
        // The busy key kept its state: this is its 51st request of 101, so 50 remain.
        assert_eq!(
            store.check_at("busy", &quota, at(0)),
            Verdict::Allowed { remaining: 50, reset: Duration::from_secs(51_000) }
        );
        // The most recent flood key is still there (its second request of 101: 99 remain)...
        assert_eq!(
            store.check_at("flood-39", &quota, at(0)),
            Verdict::Allowed { remaining: 99, reset: Duration::from_secs(2000) }
        );
        // ...while the first was forgotten: it starts again with its full burst.
        assert_eq!(
            store.check_at("flood-0", &quota, at(0)),
            Verdict::Allowed { remaining: 100, reset: Duration::from_secs(1000) }
        );
    }

    #[test]
    fn cap_is_total_over_shards() {
        let store = LocalStore::with_shards(64, 4);
        let quota = Quota::new(1, Duration::from_secs(1000), 0).unwrap();
        for i in 0..1000 {
            store.check_at(&format!("k{i}"), &quota, at(i));
        }
        assert!(store.len() <= 64, "len {}", store.len());
        assert!(store.len() >= 4 * 14 - 4, "len {}", store.len());
    }
}
