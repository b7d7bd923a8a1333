//! Palisade's workload CA and its client.
//!
//! Server side (inside `palisade server`): a CA keypair sealed under the master key, SPIFFE
//! X.509-SVIDs issued from CSRs after attestation (one-time join tokens, Kubernetes
//! service-account tokens, or renewal with the current SVID), CA rotation with an overlapping
//! trust bundle, and the HTTP API under `/ca/v1/` ([`Ca::router`]). Client side ([`client`]):
//! what a sidecar or gateway uses to get its SVID, renew it at half life and keep its trust
//! bundle fresh.
//!
//! Not here: TLS with SVIDs (`palisade-proxy::mesh`), mesh policy (`palisade-policy`), command
//! line parsing (`palisade` binary). Nothing here prints; no token or key is logged.

mod api;
mod attest;
mod ca;
pub mod client;
mod error;
mod pki;
mod repo;

pub use attest::K8sConfig;
pub use ca::{Attestation, Bundle, Ca, CaConfig, CaInfo, CaStatus, IssuedSvid, JoinToken, SvidRequest};
pub use error::CaError;

impl Ca {
    /// The HTTP API: `POST /ca/v1/svid`, `GET /ca/v1/bundle` (PEM), `GET /ca/v1/bundle.json`
    /// (SPIFFE bundle). Bodies over 64 KiB get 413.
    pub fn router(self: &std::sync::Arc<Self>) -> axum::Router {
        api::router(std::sync::Arc::clone(self))
    }
}

/// Entry points for the cargo-fuzz target `mesh`; not an API.
#[doc(hidden)]
pub mod fuzzing;
