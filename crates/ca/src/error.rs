//! The CA's error type. Messages name what was wrong, never a token, key or certificate body;
//! the HTTP layer maps the first three kinds to 400/401/403 and everything else to 500.

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A malformed request: bad JSON, bad CSR, not exactly one attestation (HTTP 400).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A join token or Kubernetes token that is unknown, used, expired or does not verify (HTTP 401).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A renewal SVID that is not trusted, expired, or whose proof does not verify (HTTP 403).
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Bad settings or bad input to an administrative operation (import, join token, flags).
    #[error("{0}")]
    Config(String),
    /// The database holds CAs of another trust domain than the one configured.
    #[error("the CA store belongs to trust domain {stored:?}, not {configured:?}; use --trust-domain {stored}")]
    TrustDomainMismatch { stored: String, configured: String },
    /// No CA can sign now (none active, or the active one has expired).
    #[error("no usable signing CA: {0}")]
    NoSigner(String),
    #[error("cannot unseal the private key of CA {0} (wrong master key?)")]
    Unseal(String),
    #[error("certificate error: {0}")]
    Certificate(String),
    #[error("database error: {0}")]
    Db(#[from] palisade_store::sqlx::Error),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Certificate(e.to_string())
    }
}
