//! palisade-ratelimit
mod gcra;
pub use gcra::{Quota, QuotaError, Verdict};
