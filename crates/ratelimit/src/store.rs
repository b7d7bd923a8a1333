//! The store abstraction: where each key's GCRA state (its theoretical arrival time) lives.
//!
//! Invariant: every store applies `gcra::gcra` to the same state, so a `Quota` means the same thing whichever
//! store enforces it; a store error is never turned into a verdict here (fail-open or fail-closed is the
//! caller's policy).

use std::time::SystemTime;

use crate::gcra::{Quota, Verdict};

/// Why a store could not give a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing server did not answer in time or the connection is down; the store keeps reconnecting
    /// in the background, so a later call may succeed.
    #[error("rate limit store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this crate does not understand (wrong key type, script error, ...).
    #[error("rate limit store error: {0}")]
    Backend(String),
    /// The store could not be set up (bad URL, unsupported scheme, ...).
    #[error("rate limit store configuration: {0}")]
    Config(String),
}

/// A place to keep per-key GCRA state. Implementations are shared by all gateway workers (each its own
/// single-threaded tokio runtime), so `check` must not block a runtime for long and must not rely on the
/// runtime that created the store.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Counts one request for `key` against `quota` at `now` and says whether it is allowed.
    ///
    /// The state is per `key` only: callers that apply several quotas must put the policy in the key.
    /// Stores that use their own clock (the Redis store by default) ignore `now`.
    async fn check(&self, key: &str, quota: &Quota, now: SystemTime) -> Result<Verdict, StoreError>;

    /// The store itself when it keeps its state in this process and answers without waiting (a
    /// caller may then check synchronously, with [`crate::LocalStore::check_at`]).
    fn local(&self) -> Option<&crate::LocalStore> {
        None
    }
}
