//! Palisade audit shipping, the client side of the audit pipeline: gateway, sidecars, idp and CA
//! hand [`AuditEvent`](palisade_core::audit::AuditEvent)s to a [`ShippingSink`], which keeps them
//! in an on-disk spool and sends them in batches (HTTP POST, NDJSON) to the audit server's
//! `/audit/v1/events`, so that no event is lost across a server outage or a restart and none is
//! stored twice (each gets a unique, stable id the server deduplicates by).
//!
//! Not for: the server side (storing, querying), reading config YAML or resolving secret
//! references (the caller passes the token value), or metrics export ([`ShippingSink::stats`]
//! gives the numbers).
//!
//! Wire format: `POST <server>/audit/v1/events` with `Content-Type: application/x-ndjson`,
//! `Authorization: Bearer <token>` and one [`AuditRecord`](palisade_core::audit::AuditRecord)
//! JSON object per line (`{"id":"<instance>-<seq>", ...event fields}`), in seq order; any 2xx
//! (body `{"accepted":n,"duplicates":m}`) acknowledges the whole batch; anything else is retried.

mod config;
mod sender;
mod sink;
mod spool;

use std::path::PathBuf;

pub use config::ShipperConfig;
pub use sink::{ShippingSink, Stats};

/// Why a shipper could not start. Messages never hold the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipperError {
    /// The configuration is unusable (server URL, limits, token format, CA file).
    #[error("audit shipper configuration: {0}")]
    Config(String),
    /// A spool file or directory could not be used.
    #[error("audit spool {}: {what}: {source}", path.display())]
    Spool {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A spool file holds something this shipper never writes.
    #[error("audit spool file {} is damaged: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// Another shipper has the spool directory open.
    #[error("audit spool {} is in use by another shipper", .0.display())]
    Locked(PathBuf),
    /// The system random generator failed (making the instance id).
    #[error("the system random generator failed")]
    Random,
    /// [`ShippingSink::open`] was called outside a tokio runtime.
    #[error("the audit shipper must be started inside a tokio runtime")]
    NoRuntime,
}
