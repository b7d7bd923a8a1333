//! palisade-ratelimit
mod gcra;
mod headers;
mod local;
mod store;
pub use gcra::{Quota, QuotaError, Verdict};
pub use headers::{response_headers, RATELIMIT, RATELIMIT_POLICY};
pub use local::LocalStore;
pub use store::{Store, StoreError};
