//! The one error type of this crate. `Display` is for logs (may name an issuer or a URL);
//! [`AuthnError::description`] is for clients (RFC 6750 `error_description`). Neither ever
//! contains a token, a key, a proof or an API key.

/// Why a credential was refused, or why the authenticator could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthnError {
    /// Invalid settings given to a constructor (never caused by a request).
    #[error("invalid authentication settings: {0}")]
    Config(String),

    // --- JWT structure and header ---
    #[error("token is larger than the configured limit")]
    TokenTooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token uses alg \"none\"")]
    AlgNone,
    #[error("token uses a symmetric (HMAC) alg")]
    AlgSymmetric,
    #[error("token alg is not allowed for this issuer")]
    AlgNotAllowed,
    #[error("token header has a crit parameter")]
    CritUnsupported,
    #[error("token typ is not accepted")]
    TypNotAccepted,
    #[error("token issuer is not trusted")]
    UnknownIssuer,

    // --- keys and signature ---
    #[error("signing keys of issuer {issuer} are not available")]
    KeysUnavailable { issuer: String },
    #[error("fetching the keys of issuer {issuer} failed: {reason}")]
    KeyFetch { issuer: String, reason: String },
    #[error("no signing key matches the token's kid and alg")]
    UnknownKey,
    #[error("token has no kid and several keys could have signed it")]
    AmbiguousKey,
    #[error("token alg does not match the key its kid names")]
    KeyAlgMismatch,
    #[error("token signature is invalid")]
    BadSignature,

    // --- claims ---
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("token claim {0} is malformed")]
    InvalidClaim(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("token audience is not accepted")]
    AudienceMismatch,

    // --- certificate-bound tokens (RFC 8705) ---
    #[error("token is bound to a client certificate but none was presented")]
    CertificateRequired,
    #[error("client certificate does not match the token's cnf.x5t#S256")]
    CertificateMismatch,

    // --- DPoP (RFC 9449) ---
    #[error("invalid DPoP proof: {0}")]
    DpopInvalid(&'static str),
    #[error("DPoP proof was already used (jti replay)")]
    DpopReplay,
    #[error("DPoP replay cache is full")]
    DpopReplayCacheFull,
    #[error("DPoP key does not match the token's cnf.jkt")]
    DpopKeyMismatch,

    // --- mTLS client certificates ---
    #[error("invalid client certificate: {0}")]
    InvalidCertificate(&'static str),
}

impl AuthnError {
    /// Text safe to send to a client as RFC 6750 / RFC 9449 `error_description`.
    pub fn description(&self) -> &str {
        match self {
            AuthnError::Config(_) | AuthnError::KeyFetch { .. } => "authentication is misconfigured or unavailable",
            AuthnError::TokenTooLarge => "the token is too large",
            AuthnError::Malformed(why) => why,
            AuthnError::AlgNone => "unsigned tokens (alg none) are not accepted",
            AuthnError::AlgSymmetric => "HMAC-signed tokens are not accepted",
            AuthnError::AlgNotAllowed => "the token's signature algorithm is not accepted",
            AuthnError::CritUnsupported => "the token header has unsupported critical parameters",
            AuthnError::TypNotAccepted => "the token type (typ) is not accepted",
            AuthnError::UnknownIssuer => "the token issuer is not trusted",
            AuthnError::KeysUnavailable { .. } => "the issuer's signing keys are not available",
            AuthnError::UnknownKey => "no signing key matches the token",
            AuthnError::AmbiguousKey => "the token has no kid and the issuer has several keys",
            AuthnError::KeyAlgMismatch => "the token's algorithm does not match its key",
            AuthnError::BadSignature => "the token signature is invalid",
            AuthnError::MissingClaim(c) => match *c {
                "exp" => "the token has no expiry (exp)",
                "aud" => "the token has no audience (aud)",
                _ => "the token lacks a required claim",
            },
            AuthnError::InvalidClaim(_) => "the token has a malformed claim",
            AuthnError::Expired => "the token expired",
            AuthnError::NotYetValid => "the token is not valid yet",
            AuthnError::IssuedInFuture => "the token was issued in the future",
            AuthnError::AudienceMismatch => "the token is not intended for this audience",
            AuthnError::CertificateRequired => "the token requires a client certificate",
            AuthnError::CertificateMismatch => "the client certificate does not match the token",
            AuthnError::DpopInvalid(why) => why,
            AuthnError::DpopReplay => "the DPoP proof was already used",
            AuthnError::DpopReplayCacheFull => "DPoP proofs cannot be checked right now",
            AuthnError::DpopKeyMismatch => "the DPoP key does not match the token",
            AuthnError::InvalidCertificate(why) => why,
        }
    }

    /// The OAuth error code for a `WWW-Authenticate` challenge: `invalid_token` (RFC 6750),
    /// `invalid_dpop_proof` (RFC 9449), or `temporarily_unavailable` when the failure is ours.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            AuthnError::DpopInvalid(_) | AuthnError::DpopReplay => "invalid_dpop_proof",
            AuthnError::Config(_)
            | AuthnError::KeyFetch { .. }
            | AuthnError::KeysUnavailable { .. }
            | AuthnError::DpopReplayCacheFull => "temporarily_unavailable",
            _ => "invalid_token",
        }
    }
}
