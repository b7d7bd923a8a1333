//! Errors: what went wrong writing or opening a log ([`AuditLogError`]) and where a log fails
//! verification ([`Problem`], [`VerifyError`]). No message ever carries key material.

use std::fmt;
use std::path::PathBuf;

/// The kind of damage found in a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record's bytes do not match its hash, or the chain or a checkpoint disagrees with them.
    Modified,
    /// One or more records are missing where a later one stands.
    Deleted,
    /// A line appears that does not belong (a copy of another record or checkpoint).
    Inserted,
    /// Records appear in the wrong order.
    Reordered,
    /// A file ends in the middle of a line, or records after the signed head are gone.
    Truncated,
    /// A checkpoint, head or retention marker whose signature is missing or does not verify.
    BadSignature,
    /// A line or file that is not in the log's format.
    Malformed,
    /// A whole segment file is missing.
    MissingSegment,
    /// A required checkpoint (segment opening, periodic, segment end) or the head file is missing.
    MissingCheckpoint,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Modified => "modified",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Truncated => "truncated",
            ProblemKind::BadSignature => "bad signature",
            ProblemKind::Malformed => "malformed",
            ProblemKind::MissingSegment => "missing segment",
            ProblemKind::MissingCheckpoint => "missing checkpoint",
        })
    }
}

/// The first bad place in a log.
///
/// `segment` is a file name in the log directory (a segment, `head.json` or `retention.json`);
/// `line` is 1-based (none for a whole missing file). `seq` is the record concerned: the one whose
/// bytes changed (`modified`), the first missing one (`deleted`, `truncated`, `missing segment`),
/// the one the out-of-place line claims (`inserted`, `reordered`), or the checkpoint's seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub segment: String,
    pub line: Option<u64>,
    pub seq: Option<u64>,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}: {}", self.kind, self.detail)
    }
}

/// Why [`crate::verify`] rejected a log.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("audit log damaged: {0}")]
    Damaged(Box<Problem>),
    #[error("reading audit log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("an audit log public key is 32 bytes (Ed25519), got {0}")]
    BadPublicKey(usize),
}

impl VerifyError {
    /// The damage found, if that is why verification failed.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            VerifyError::Damaged(p) => Some(p),
            _ => None,
        }
    }
}

/// Errors from opening, appending to, reading or pruning a log.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("audit log: {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("audit log config: {0}")]
    Config(&'static str),
    #[error("audit log seed rejected as an Ed25519 key")]
    BadSeed,
    #[error("audit record {index} of the batch rejected: {reason}")]
    InvalidRecord { index: usize, reason: &'static str },
    /// Found at open or while reading: the log is not fixed silently, run [`crate::verify`].
    #[error("audit log damaged: {0}")]
    Damaged(Box<Problem>),
    #[error("audit log: an earlier write failed; reopen the log (open cuts a torn line) before appending")]
    Poisoned,
    #[error("audit log: sequence numbers exhausted")]
    SeqExhausted,
}

pub(crate) fn damaged(
    kind: ProblemKind,
    segment: &str,
    line: Option<u64>,
    seq: Option<u64>,
    detail: impl Into<String>,
) -> Box<Problem> {
    Box::new(Problem { kind, segment: segment.to_owned(), line, seq, detail: detail.into() })
}
