//! palisade-ratelimit
mod gcra;
mod local;
mod store;
pub use gcra::{Quota, QuotaError, Verdict};
pub use local::LocalStore;
pub use store::{Store, StoreError};
