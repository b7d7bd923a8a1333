//! Palisade's workload CA and its client.
//!
//! Server side (inside `palisade server`): a CA keypair sealed under the master key, SPIFFE
//! X.509-SVIDs issued from CSRs after attestation, CA rotation with an overlapping trust bundle,
//! and the HTTP API under `/ca/v1/`. Client side ([`client`]): what a sidecar or gateway uses to
//! get its SVID, renew it at half life and keep its trust bundle fresh.
//!
//! Not here: TLS with SVIDs (`palisade-proxy::mesh`) and mesh policy (`palisade-policy`).

pub mod client;
