//! The one error type of the crate and its mapping to an HTTP status and a stable code. Messages
//! name keys, versions and principals, never plaintext, ciphertext, tokens or key material.

use std::fmt;

/// What went wrong, precisely. [`VaultError::code`] is the stable `error` field of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("no key named {0:?}")]
    UnknownKey(String),
    /// The audit pipeline could not take this operation's event (its queue is full): the
    /// operation's result is withheld, as nothing happens in the vault unaudited.
    #[error("the audit log cannot record this operation now; retry")]
    AuditUnavailable,
    #[error("a key named {0:?} already exists")]
    KeyExists(String),
    #[error("key {0:?} is disabled: it decrypts and verifies but does not encrypt, sign, tokenize or issue")]
    KeyDisabled(String),
    #[error("key {0:?} is scheduled for deletion: it decrypts and verifies until then but does nothing new")]
    DeletionScheduled(String),
    #[error("key {0:?} was deleted; nothing it protected can be recovered")]
    KeyDeleted(String),
    #[error("the ciphertext was made with another key, not {0:?}")]
    WrongKey(String),
    #[error("the context (associated data) differs from the one the ciphertext was made with")]
    WrongContext,
    #[error("the ciphertext failed authentication: it was altered or is corrupt")]
    Tampered,
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    #[error("key {name:?} version {version} is below its min_decryption_version {min}")]
    VersionTooOld { name: String, version: u32, min: u32 },
    #[error("key {name:?} version {version} is below its min_encryption_version {min}")]
    EncryptionVersionTooOld { name: String, version: u32, min: u32 },
    #[error("key {name:?} has no version {version}")]
    UnknownVersion { name: String, version: u32 },
    #[error("a {key_type} key does not support {op}")]
    Unsupported { key_type: &'static str, op: &'static str },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("{principal} may not detokenize with {template:?}")]
    Forbidden { principal: String, template: String },
    #[error("key {0:?} is not exportable")]
    NotExportable(String),
    #[error("not a {0} token")]
    NotAToken(&'static str),
    #[error("no such token for key {0:?}")]
    UnknownToken(String),
    #[error("key {0:?} changed concurrently; retry")]
    Conflict(String),
    #[error("sealed key material of {0:?} does not open under this master key")]
    Unseal(String),
    #[error("storage: {0}")]
    Db(#[from] palisade_store::sqlx::Error),
    #[error("master key: {0}")]
    Master(String),
    #[error("hsm: {0}")]
    Hsm(String),
    #[error("the system random number generator failed")]
    Rng,
}

/// Coarse class of an error, for the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    BadRequest,
    Forbidden,
    NotFound,
    Conflict,
    Internal,
    Unavailable,
}

impl VaultError {
    /// A stable snake_case code (`unknown_key`, `tampered`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            VaultError::UnknownKey(_) => "unknown_key",
            VaultError::AuditUnavailable => "audit_unavailable",
            VaultError::KeyExists(_) => "key_exists",
            VaultError::KeyDisabled(_) => "key_disabled",
            VaultError::DeletionScheduled(_) => "deletion_scheduled",
            VaultError::KeyDeleted(_) => "key_deleted",
            VaultError::WrongKey(_) => "wrong_key",
            VaultError::WrongContext => "wrong_context",
            VaultError::Tampered => "tampered",
            VaultError::Malformed(_) => "malformed_ciphertext",
            VaultError::VersionTooOld { .. } => "version_below_min_decryption_version",
            VaultError::EncryptionVersionTooOld { .. } => "version_below_min_encryption_version",
            VaultError::UnknownVersion { .. } => "unknown_version",
            VaultError::Unsupported { .. } => "unsupported_operation",
            VaultError::InvalidInput(_) => "invalid_request",
            VaultError::Forbidden { .. } => "forbidden",
            VaultError::NotExportable(_) => "not_exportable",
            VaultError::NotAToken(_) => "not_a_token",
            VaultError::UnknownToken(_) => "unknown_token",
            VaultError::Conflict(_) => "conflict",
            VaultError::Unseal(_) | VaultError::Db(_) | VaultError::Master(_) | VaultError::Hsm(_) => "internal_error",
            VaultError::Rng => "internal_error",
        }
    }

    pub(crate) fn class(&self) -> Class {
        match self {
            VaultError::UnknownKey(_) | VaultError::KeyDeleted(_) | VaultError::UnknownToken(_) => Class::NotFound,
            VaultError::KeyExists(_)
            | VaultError::KeyDisabled(_)
            | VaultError::DeletionScheduled(_)
            | VaultError::Conflict(_) => Class::Conflict,
            VaultError::Forbidden { .. } | VaultError::NotExportable(_) => Class::Forbidden,
            VaultError::WrongKey(_)
            | VaultError::WrongContext
            | VaultError::Tampered
            | VaultError::Malformed(_)
            | VaultError::VersionTooOld { .. }
            | VaultError::EncryptionVersionTooOld { .. }
            | VaultError::UnknownVersion { .. }
            | VaultError::Unsupported { .. }
            | VaultError::InvalidInput(_)
            | VaultError::NotAToken(_) => Class::BadRequest,
            VaultError::Unseal(_)
            | VaultError::Db(_)
            | VaultError::Master(_)
            | VaultError::Hsm(_)
            | VaultError::Rng => Class::Internal,
            VaultError::AuditUnavailable => Class::Unavailable,
        }
    }

    /// The HTTP status the API answers this error with.
    pub fn status(&self) -> u16 {
        match self.class() {
            Class::BadRequest => 400,
            Class::Forbidden => 403,
            Class::NotFound => 404,
            Class::Conflict => 409,
            Class::Internal => 500,
            Class::Unavailable => 503,
        }
    }

    /// The description shown to API callers: internal errors are not detailed (they may name
    /// storage internals); the server logs them.
    pub fn public_description(&self) -> String {
        match self.class() {
            Class::Internal => "internal error".to_owned(),
            _ => self.to_string(),
        }
    }
}

pub(crate) fn invalid(msg: impl fmt::Display) -> VaultError {
    VaultError::InvalidInput(msg.to_string())
}
