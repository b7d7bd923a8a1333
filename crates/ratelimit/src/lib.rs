//! Rate limiting for the Palisade gateway: GCRA quotas ([`Quota`]) checked against a [`Store`] (in-process
//! [`LocalStore`] or shared [`RedisStore`]), giving a [`Verdict`] that [`response_headers`] turns into the
//! IETF `RateLimit-Policy` / `RateLimit` and `Retry-After` headers.
//!
//! Not for: choosing keys (client id, IP, route...), policy configuration, or what to do when a store is
//! unavailable (fail open or closed): the caller decides those. Knows nothing of the proxy or of YAML.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use palisade_ratelimit::{LocalStore, Quota, Verdict};
//!
//! let quota = Quota::new(100, Duration::from_secs(60), 10)?; // 100/min, 10 extra back-to-back
//! let store = LocalStore::new(100_000);
//! let verdict = store.check_at("policy-a:client-42", &quota, SystemTime::now());
//! assert!(matches!(verdict, Verdict::Allowed { remaining: 10, .. }));
//! let headers = palisade_ratelimit::response_headers(&quota, &verdict, "policy-a");
//! assert_eq!(headers.len(), 2);
//! # Ok::<(), palisade_ratelimit::QuotaError>(())
//! ```

mod gcra;
mod headers;
mod local;
mod redis_store;
mod store;

pub use gcra::{Quota, QuotaError, Verdict};
pub use headers::{response_headers, PolicyHeaders, RATELIMIT, RATELIMIT_POLICY};
pub use local::LocalStore;
pub use redis_store::{RedisClock, RedisOptions, RedisStore};
pub use store::{Store, StoreError};
