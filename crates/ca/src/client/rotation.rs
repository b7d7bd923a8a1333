//! The rotation task: renews the SVID in an [`SvidCell`] at half of the life it had when received,
//! retries failures with capped exponential backoff, re-attests when renewal is refused or too
//! late, and refreshes the trust bundle at the server's hint. Invariant: the cell only ever gets
//! an SVID or bundle that passed validation; a failure leaves the cell as it was.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::mesh::{SvidCell, SvidSource};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{validate, Attestation, SvidClient};

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Floor on any renewal delay, so an SVID that arrives nearly expired cannot make the task spin.
const MIN_RENEW_DELAY: Duration = Duration::from_millis(100);
const MIN_BUNDLE_REFRESH: Duration = Duration::from_secs(1);
/// Ceiling on any sleep: a server hint or a validity years long never overflows a deadline.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

/// Keep `cell` current until the returned task is aborted (or the runtime shuts down).
///
/// `cell` holds the SVID just obtained with [`SvidClient::fetch`]; its renewal is scheduled at
/// half the life left now. On failure the current SVID stays in the cell: a `warn!` once less
/// than a quarter of its life is left, an `error!` once it has expired. A refused renewal (401/403)
/// or an expired SVID re-attests with `attestation` if it can be reused (a Kubernetes token
/// file); a join token cannot, so renewal is retried and an error logged. The trust bundle is
/// refreshed at the server's `spiffe_refresh_hint` (at least 1 s apart), replacing only the
/// cell's `bundle`.
pub fn spawn_rotation(
    client: SvidClient,
    attestation: Attestation,
    cell: Arc<SvidCell>,
) -> tokio::task::JoinHandle<()> {
    let current = cell.current();
    let received = SystemTime::now();
    let mut task = Rotation {
        client,
        attestation,
        lifetime: remaining(current.not_after, received),
        renew_at: deadline(renew_delay(current.not_after, received)),
        cell,
        refused: false,
        backoff: Backoff::new(),
        bundle_at: Instant::now(),
        bundle_backoff: Backoff::new(),
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(task.renew_at) => task.renew().await,
                () = tokio::time::sleep_until(task.bundle_at) => task.refresh_bundle().await,
            }
        }
    })
}

/// Time from `at` until `not_after` (Unix seconds); zero once past.
pub(crate) fn remaining(not_after: u64, at: SystemTime) -> Duration {
    match UNIX_EPOCH.checked_add(Duration::from_secs(not_after)) {
        Some(end) => end.duration_since(at).unwrap_or(Duration::ZERO),
        // Beyond what SystemTime can hold: as good as never expiring.
        None => Duration::MAX,
    }
}

/// Delay from receipt to renewal: half the life left at receipt. Measured from receipt, not from
/// `not_before`, which the CA backdates for clock skew.
pub(crate) fn renew_delay(not_after: u64, received: SystemTime) -> Duration {
    (remaining(not_after, received) / 2).max(MIN_RENEW_DELAY)
}

/// When to retry after a failure: the backoff step, but not after the SVID expires (if it has not yet).
pub(crate) fn retry_delay(step: Duration, until_expiry: Duration) -> Duration {
    if until_expiry.is_zero() {
        step
    } else {
        step.min(until_expiry)
    }
}

fn deadline(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay.min(MAX_SLEEP)).unwrap_or(now)
}

/// 250 ms, doubling, capped at 30 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: FIRST_RETRY }
    }

    pub(crate) fn step(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        step
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

struct Rotation {
    client: SvidClient,
    attestation: Attestation,
    cell: Arc<SvidCell>,
    /// Life of the current SVID from its receipt, for the quarter-life warning.
    lifetime: Duration,
    renew_at: Instant,
    /// The last renewal was refused: re-attest next if the attestation allows it.
    refused: bool,
    backoff: Backoff,
    bundle_at: Instant,
    bundle_backoff: Backoff,
}

impl Rotation {
    async fn renew(&mut self) {
        let current = self.cell.current();
        let now = SystemTime::now();
        let left = remaining(current.not_after, now);
        let reattest = (self.refused || left.is_zero()) && self.attestation.is_reusable();
        let result =
            if reattest { self.client.fetch(&self.attestation).await } else { self.client.renew(&current).await };
        match result {
            Ok(svid) => {
                let received = SystemTime::now();
                if svid.spiffe_id != current.spiffe_id {
                    warn!(old = %current.spiffe_id, new = %svid.spiffe_id, "re-attestation returned a different SPIFFE ID");
                }
                info!(
                    spiffe_id = %svid.spiffe_id,
                    not_after = svid.not_after,
                    how = if reattest { "re-attested" } else { "renewed" },
                    "SVID rotated"
                );
                self.lifetime = remaining(svid.not_after, received);
                self.renew_at = deadline(renew_delay(svid.not_after, received));
                self.cell.set(svid);
                self.refused = false;
                self.backoff.reset();
            }
            Err(e) => {
                if e.is_refused() {
                    self.refused = true;
                }
                let stuck = (self.refused || left.is_zero()) && !self.attestation.is_reusable();
                let remedy = if stuck { "; the join token is single-use: restart with a new join token" } else { "" };
                let id = &current.spiffe_id;
                if left.is_zero() {
                    let expired_ago = now
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .saturating_sub(Duration::from_secs(current.not_after));
                    error!(spiffe_id = %id, error = %e, "SVID expired {} s ago and could not be renewed{remedy}", expired_ago.as_secs());
                } else if left < self.lifetime / 4 {
                    warn!(spiffe_id = %id, error = %e, "SVID renewal failed, {} s of life left{remedy}", left.as_secs());
                } else if stuck {
                    error!(spiffe_id = %id, error = %e, "SVID renewal failed{remedy}");
                } else {
                    info!(spiffe_id = %id, error = %e, "SVID renewal failed, {} s of life left; retrying", left.as_secs());
                }
                self.renew_at = deadline(retry_delay(self.backoff.step(), left));
            }
        }
    }

    async fn refresh_bundle(&mut self) {
        match self.client.bundle().await {
            Ok((certs, hint)) => {
                self.bundle_backoff.reset();
                self.bundle_at = deadline(hint.max(MIN_BUNDLE_REFRESH));
                let current = self.cell.current();
                if current.bundle == certs {
                    return;
                }
                let still_chains = validate::chain_verifies(&current.chain, &certs).is_ok();
                let mut svid = (*current).clone();
                svid.bundle = certs;
                info!(spiffe_id = %svid.spiffe_id, ca_certs = svid.bundle.len(), "trust bundle updated");
                self.cell.set(svid);
                if !still_chains {
                    // The CA that signed our SVID left the bundle: peers will reject it, renew now.
                    warn!("the current SVID does not chain to the new trust bundle; renewing now");
                    self.renew_at = Instant::now();
                }
            }
            Err(e) => {
                warn!(error = %e, "trust bundle refresh failed; keeping the current bundle");
                self.bundle_at = deadline(self.bundle_backoff.step());
            }
        }
    }
}
