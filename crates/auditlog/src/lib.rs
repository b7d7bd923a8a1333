//! Palisade's tamper-evident audit log: an append-only directory of segment files in which every
//! record is chained to the previous one with SHA-256 and the chain is signed with Ed25519 at
//! checkpoints, at every segment boundary and in a small head file after every batch.
//! [`verify`] walks a log and names the first modified, deleted, inserted, reordered or truncated
//! record, bad signature or missing segment; retention deletes whole oldest segments only, behind a
//! signed marker, so what remains still verifies.
//!
//! For: the server's write-once store of audit records (`palisade_core::audit::AuditRecord`
//! serialized by the caller; to this crate each is an opaque one-line JSON object, hashed as
//! given), its index rebuild ([`read_from`]) and offline checking. Not for: parsing or
//! querying events, shipping them, or keeping the signing seed (the caller unseals it and passes
//! it to [`AuditLog::open`]); not a defence against someone holding the seed, nor against a
//! rollback of the whole tail plus head file to an older signed state (ship checkpoints to a
//! witness for that). One writer per directory; the crate takes no lock.
//!
//! Checkpoints: a signed line opens every segment (anchoring the previous record's seq and hash,
//! which is what lets retention drop older segments), follows every record whose seq is a
//! multiple of `checkpoint_every`, closes a full segment, and marks each close and reopen.
//!
//! Layout of the directory: `000001.log`, `000002.log`, ... (one line per record or checkpoint),
//! `head.json` (signed seq and hash of the last durable record, replaced atomically) and, after
//! retention, `retention.json` (signed anchor of the first kept segment).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use palisade_auditlog::{verify, AuditLog, LogConfig};
//! let seed = [7u8; 32]; // in the server: unsealed with the master key
//! let (mut log, _report) = AuditLog::open(LogConfig::new("./data/audit"), &seed)?;
//! let seqs = log.append_batch(&[br#"{"decision":"deny"}"#])?;
//! assert_eq!(seqs, 1..2);
//! let pk = log.public_key();
//! log.close()?;
//! let report = verify(std::path::Path::new("./data/audit"), &pk)?;
//! assert_eq!(report.last_seq, 1);
//! # Ok(()) }
//! ```

mod error;
mod format;
mod log;
mod read;
mod verify;

pub use error::{AuditLogError, Problem, ProblemKind, VerifyError};
pub use log::{AuditLog, Fsync, LogConfig, OpenReport, Retention, RetentionReport, TornTail};
pub use read::{read_from, Records};
pub use verify::{verify, VerifyReport};

#[cfg(test)]
mod tests;
