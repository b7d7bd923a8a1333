//! palisade-ratelimit
mod gcra;
mod headers;
mod local;
mod redis_store;
mod store;
pub use gcra::{Quota, QuotaError, Verdict};
pub use headers::{response_headers, RATELIMIT, RATELIMIT_POLICY};
pub use local::LocalStore;
pub use redis_store::{RedisClock, RedisOptions, RedisStore};
pub use store::{Store, StoreError};
