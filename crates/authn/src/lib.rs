//! Request authentication for Palisade's gateway: who is calling, proven how.
//!
//! - [`jwt`]: bearer JWTs from trusted issuers, keys discovered and cached from their JWKS
//!   (served from cache while an issuer is down, fail-closed before the first fetch), checked
//!   per RFC 8725.
//! - [`check_cnf_x5t`] and [`DpopVerifier`]: sender-constrained tokens (RFC 8705 certificate
//!   binding, RFC 9449 DPoP).
//! - [`apikey`]: API keys stored as SHA-256 hashes.
//! - [`client_identity`]: the SPIFFE ID, subject and thumbprint of an mTLS client certificate.
//!
//! Not for: authorization (scopes and roles are exposed, not enforced), TLS chain verification
//! (done by rustls in the listener), HTTP parsing or responses (callers map [`AuthnError`] to
//! `WWW-Authenticate` with [`AuthnError::description`]), or configuration files. The crate knows
//! nothing of the proxy; it prints nothing and never logs or returns a credential.

pub mod apikey;
mod binding;
mod dpop;
mod error;
mod fetch;
mod jose;
pub mod jwt;
mod mtls;
#[cfg(test)]
mod testkit;

pub use apikey::{generate_api_key, hash_api_key, ApiKeyEntry, ApiKeyIdentity, ApiKeyStore};
pub use binding::{cert_thumbprint_s256, check_cnf_x5t};
pub use dpop::DpopVerifier;
pub use error::AuthnError;
pub use jwt::{IssuerSettings, JwtAuthenticator, VerifiedToken};
pub use mtls::{client_identity, CertIdentity};
