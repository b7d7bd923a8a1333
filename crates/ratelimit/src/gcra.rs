//! Quotas and the GCRA decision shared by every store.
//!
//! Invariants: all times are integer microseconds since the Unix epoch, below [`MAX_TIME_US`] (2^53, so the
//! Redis Lua script, whose numbers are doubles, computes exactly the same values); `gcra` is the single
//! reference implementation: `LocalStore` calls it directly and `RedisStore` re-derives its verdict with it
//! from what the script saw, so the two stores cannot drift apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bound of every time value (µs): 2^53, exactly representable as an IEEE double (Lua's number).
pub(crate) const MAX_TIME_US: u64 = 1 << 53;
/// How far behind the clock that wrote a TAT `now` may be before it counts as a clock step (µs). The Redis
/// script has the same constant.
pub(crate) const CLOCK_STEP_US: u64 = 1_000_000;
/// Upper bound of an emission interval plus tolerance (µs), ~35 years: keeps `now + T + τ` below 2^53
/// for any wall-clock time before the year 2200.
const MAX_SPAN_US: u64 = 1 << 50;

/// A rate limit: `limit` requests per `period`, plus `burst` extra requests back-to-back.
///
/// Semantics (GCRA, virtual scheduling): the emission interval is `T = period / limit` (truncated to whole
/// microseconds, so a quota is at most 1 µs per request more lenient than written) and the tolerance is
/// `τ = T × burst`. A request at `now` is allowed when the key's theoretical arrival time `TAT ≤ now + τ`;
/// it then moves `TAT` to `max(TAT, now) + T`. Consequences, all tested:
/// - an idle key accepts `burst + 1` requests back-to-back, then one every `T`;
/// - under sustained overload over a window `W`, the accepted count is `floor(W / T) + burst + 1`;
/// - `burst = 0` means strictly spaced requests (one per `T`), never two at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    period: Duration,
    burst: u32,
    interval_us: u64,
    tolerance_us: u64,
}

/// Why a quota was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// `limit` was 0: a quota that allows nothing is a deny rule, not a rate limit.
    #[error("rate limit quota: limit must be at least 1 request per period")]
    ZeroLimit,
    /// `period / limit` is below one microsecond, the resolution of the stores.
    #[error("rate limit quota: period / limit is below 1 microsecond (more than 1,000,000 requests per second)")]
    TooFast,
    /// `period / limit × (burst + 1)` exceeds ~35 years, beyond what the stores represent exactly.
    #[error("rate limit quota: period / limit x (burst + 1) is too long (over 2^50 microseconds)")]
    TooLong,
}

impl Quota {
    /// A quota of `limit` requests per `period` with `burst` extra back-to-back requests.
    pub fn new(limit: u32, period: Duration, burst: u32) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        let period_us = u64::try_from(period.as_micros()).map_err(|_| QuotaError::TooLong)?;
        let interval_us = period_us / u64::from(limit);
        if interval_us == 0 {
            return Err(QuotaError::TooFast);
        }
        let tolerance_us = interval_us.checked_mul(u64::from(burst)).ok_or(QuotaError::TooLong)?;
        if tolerance_us.checked_add(interval_us).is_none_or(|span| span > MAX_SPAN_US) {
            return Err(QuotaError::TooLong);
        }
        Ok(Self { limit, period, burst, interval_us, tolerance_us })
    }

    /// Requests per period (the steady rate).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The period `limit` is counted over.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Extra requests allowed back-to-back on top of the steady rate.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The emission interval `T = period / limit` (whole microseconds).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    pub(crate) fn interval_us(&self) -> u64 {
        self.interval_us
    }

    pub(crate) fn tolerance_us(&self) -> u64 {
        self.tolerance_us
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request conforms and was counted.
    Allowed {
        /// Further requests that would be allowed right now, back-to-back (0..=burst).
        remaining: u32,
        /// Time until the key is back to its full burst if no further request comes.
        reset: Duration,
    },
    /// The request exceeds the quota and was not counted.
    Limited {
        /// Earliest time from now at which a request would be allowed.
        retry_after: Duration,
        /// Time until the key is back to its full burst if no further request comes.
        reset: Duration,
    },
}

impl Verdict {
    /// True for [`Verdict::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }
}

/// One GCRA step: the verdict, and the TAT to store (`None`: leave the stored state as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) verdict: Verdict,
    pub(crate) new_tat: Option<u64>,
}

/// The GCRA step, the one reference implementation (mirrored line by line by the Redis Lua script).
///
/// `stored_tat` is the key's theoretical arrival time (µs) or `None` for an unknown/expired key, which is
/// exactly equivalent to any `TAT ≤ now` (that is why evicting such keys loses nothing). A stored TAT
/// beyond `now + τ + T` cannot be produced by this function at the current time: it means that `now` is
/// behind the clock that set it. Up to [`CLOCK_STEP_US`] behind is a stale reading (the local store moves
/// such readings up to its latest time first; Redis reads its own clock) and is honoured; more means the
/// clock stepped back, and the TAT is clamped to
/// `now + τ + T` (and stored), which bounds the harm of a clock step to one emission interval.
///
/// Hand-written rather than `governor` because both stores must share the exact arithmetic (Redis runs it in
/// Lua with the server's clock) and we report `remaining`/`reset`, which governor's keyed limiter does not
/// expose with these semantics; governor's keyed store also has no key cap.
pub(crate) fn gcra(stored_tat: Option<u64>, now: u64, quota: &Quota) -> Decision {
    let t = quota.interval_us;
    let tau = quota.tolerance_us;
    let max_tat = now.saturating_add(tau).saturating_add(t);
    let tat = match stored_tat {
        Some(stored) if stored > max_tat.saturating_add(CLOCK_STEP_US) => max_tat,
        Some(stored) => stored.max(now),
        None => now,
    };
    let ahead = tat - now; // tat >= now by the clamp above
    if ahead > tau {
        return Decision {
            verdict: Verdict::Limited {
                retry_after: Duration::from_micros(ahead - tau),
                reset: Duration::from_micros(ahead),
            },
            // Persist a clamped (clock went backwards) TAT so the key recovers after one interval.
            new_tat: (stored_tat != Some(tat)).then_some(tat),
        };
    }
    // Requests still conforming after this one: k >= 0 with (tat + T) + k*T <= now + τ, i.e. (τ - ahead) / T.
    let remaining = u32::try_from((tau - ahead) / t).unwrap_or(u32::MAX);
    Decision {
        verdict: Verdict::Allowed { remaining, reset: Duration::from_micros(ahead + t) },
        new_tat: Some(tat.saturating_add(t)),
    }
}

/// Wall-clock time as µs since the Unix epoch, clamped to `[0, MAX_TIME_US - 2^50]` so that
/// `now + T + τ` stays below 2^53.
pub(crate) fn unix_micros(now: SystemTime) -> u64 {
    let us = now.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    us.min(MAX_TIME_US - MAX_SPAN_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: u32, period_ms: u64, burst: u32) -> Quota {
        Quota::new(limit, Duration::from_millis(period_ms), burst).unwrap()
    }

    /// Drives one key through `gcra` like a store would.
    struct Sim {
        tat: Option<u64>,
        quota: Quota,
    }

    impl Sim {
        fn at(&mut self, now_us: u64) -> Verdict {
            let d = gcra(self.tat, now_us, &self.quota);
            if let Some(t) = d.new_tat {
                self.tat = Some(t);
            }
            d.verdict
        }
    }

    const MS: u64 = 1000;
    const BASE: u64 = 1_700_000_000_000_000;

    fn allowed(remaining: u32, reset_ms: u64) -> Verdict {
        Verdict::Allowed { remaining, reset: Duration::from_millis(reset_ms) }
    }

    fn limited(retry_ms: u64, reset_ms: u64) -> Verdict {
        Verdict::Limited { retry_after: Duration::from_millis(retry_ms), reset: Duration::from_millis(reset_ms) }
    }

    #[test]
    fn quota_validation() {
        assert_eq!(Quota::new(0, Duration::from_secs(1), 0), Err(QuotaError::ZeroLimit));
        assert_eq!(Quota::new(10, Duration::from_micros(9), 0), Err(QuotaError::TooFast));
        assert_eq!(Quota::new(1, Duration::from_secs(u64::MAX), 0), Err(QuotaError::TooLong));
        assert_eq!(Quota::new(1, Duration::from_secs(3600), u32::MAX), Err(QuotaError::TooLong));
        let quota = q(3, 1000, 2);
        assert_eq!(quota.emission_interval(), Duration::from_micros(333_333));
        assert_eq!(quota.tolerance_us(), 666_666);
        assert_eq!((quota.limit(), quota.period(), quota.burst()), (3, Duration::from_secs(1), 2));
        assert_eq!(Quota::new(1_000_000, Duration::from_secs(1), 0).unwrap().interval_us(), 1);
    }

    #[test]
    fn burst_then_steady_rate() {
        // 10/s (T = 100 ms), burst 2 (τ = 200 ms): 3 back-to-back, then one per 100 ms.
        let mut s = Sim { tat: None, quota: q(10, 1000, 2) };
        assert_eq!(s.at(BASE), allowed(2, 100));
        assert_eq!(s.at(BASE), allowed(1, 200));
        assert_eq!(s.at(BASE), allowed(0, 300));
        assert_eq!(s.at(BASE), limited(100, 300));
        assert_eq!(s.at(BASE + 40 * MS), limited(60, 260));
        assert_eq!(
            s.at(BASE + 99_999),
            Verdict::Limited { retry_after: Duration::from_micros(1), reset: Duration::from_micros(200_001) }
        );
        assert_eq!(s.at(BASE + 100 * MS), allowed(0, 300));
        assert_eq!(s.at(BASE + 150 * MS), limited(50, 250));
        // Idle long enough: full burst again.
        assert_eq!(s.at(BASE + 400 * MS), allowed(2, 100));
        // Partially refilled: TAT = 500 ms, at 350 ms... at 450 ms ahead = 50 ms -> remaining (200-50)/100 = 1.
        assert_eq!(s.at(BASE + 450 * MS), allowed(1, 150));
    }

    #[test]
    fn zero_burst_is_strict_spacing() {
        let mut s = Sim { tat: None, quota: q(2, 1000, 0) };
        assert_eq!(s.at(BASE), allowed(0, 500));
        assert_eq!(s.at(BASE), limited(500, 500));
        assert_eq!(s.at(BASE + 499 * MS), limited(1, 1));
        assert_eq!(s.at(BASE + 500 * MS), allowed(0, 500));
    }

    #[test]
    fn limited_requests_are_not_counted() {
        let mut s = Sim { tat: None, quota: q(1, 1000, 0) };
        assert!(s.at(BASE).is_allowed());
        for i in 1..100 {
            assert!(!s.at(BASE + i * MS).is_allowed());
        }
        assert_eq!(s.at(BASE + 1000 * MS), allowed(0, 1000));
    }

    #[test]
    fn clock_going_backwards_costs_at_most_one_interval() {
        let quota = q(10, 1000, 2);
        // A TAT one hour ahead of now (clock stepped back by an hour) is clamped to now + τ + T.
        let mut s = Sim { tat: Some(BASE + 3_600_000 * MS), quota };
        assert_eq!(s.at(BASE), limited(100, 300));
        assert_eq!(s.tat, Some(BASE + 300 * MS));
        assert_eq!(s.at(BASE + 100 * MS), allowed(0, 300));
        // Less than a second behind the writer's clock: honoured, not clamped.
        let d = gcra(Some(BASE + 800 * MS), BASE, &quota);
        assert_eq!(d, Decision { verdict: limited(600, 800), new_tat: None });
        // A limited request on a sane TAT stores nothing.
        assert_eq!(gcra(Some(BASE + 300 * MS), BASE, &quota), Decision { verdict: limited(100, 300), new_tat: None });
    }

    /// Offered load 2x the rate for 10 s (simulated): accepted = floor(W/T) + burst + 1, within ±2 % of
    /// rate × time + burst.
    #[test]
    fn accuracy_under_sustained_overload() {
        for (limit, period_ms, burst) in
            [(100u32, 1000u64, 10u32), (50, 1000, 0), (7, 100, 5), (1000, 1000, 50), (3, 1000, 0)]
        {
            let quota = q(limit, period_ms, burst);
            let mut s = Sim { tat: None, quota };
            let window_us = 10_000 * MS;
            let mut accepted = 0u64;
            let mut offered = 0u64;
            loop {
                let t = offered * quota.interval_us() / 2; // 2x the rate
                if t >= window_us {
                    break;
                }
                offered += 1;
                if s.at(BASE + t).is_allowed() {
                    accepted += 1;
                }
            }
            let expected_exact = (window_us - 1) / quota.interval_us() + u64::from(burst) + 1;
            assert_eq!(accepted, expected_exact, "quota {limit}/{period_ms}ms burst {burst}, offered {offered}");
            let ideal = f64::from(limit) * 10_000.0 / period_ms as f64 + f64::from(burst);
            let err = (accepted as f64 - ideal).abs() / ideal;
            // The `+ 1` alone is over 2 % of the tiny (3/s) quota's 30 requests: exact formula only there.
            assert!(
                limit == 3 || err <= 0.02,
                "quota {limit}/{period_ms}ms burst {burst}: accepted {accepted}, ideal {ideal}"
            );
        }
    }

    #[test]
    fn time_conversion_clamps() {
        assert_eq!(unix_micros(UNIX_EPOCH), 0);
        assert_eq!(unix_micros(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(unix_micros(UNIX_EPOCH + Duration::from_micros(BASE)), BASE);
        assert_eq!(unix_micros(UNIX_EPOCH + Duration::from_secs(1 << 62)), MAX_TIME_US - MAX_SPAN_US);
    }
}
