//! Palisade's key material. A [`MasterKey`] (a 0600 file created on first run, or given through
//! the environment) seals every private key at rest with AES-256-GCM. Signing keys live in
//! versioned [`Keyset`]s with `kid`s and rotate with overlap: a new key is published in the JWKS
//! before it signs, and an old public key stays published until every token it signed has
//! expired. [`jwt`] signs and verifies JWS/JWT with them.
//!
//! This crate depends on no other palisade crate, prints nothing, and never logs key bytes.
//! AES-256-GCM and ECDSA/Ed25519/RSA signing come from `ring`, the provider rustls already uses
//! here, so the binary carries one audited implementation; JWT encoding is `jsonwebtoken`. ring
//! cannot generate RSA keys, so RS256 keys are generated with RustCrypto `rsa` and handed to ring
//! as PKCS#8 (stored sealed like every other key).

pub mod jwt;
mod keyset;
mod master;

pub use keyset::{Alg, KeyVersion, Keyset, SealedKeyset};
pub use master::{write_secret_file, MasterKey};

/// Errors of this crate. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key file {path}: {reason}")]
    MasterKeyFile { path: String, reason: String },
    #[error("invalid master key: {0}")]
    InvalidMasterKey(&'static str),
    #[error("sealed data is malformed")]
    Malformed,
    #[error("sealed data failed authentication (wrong master key or tampered)")]
    Unauthentic,
    #[error("key generation failed")]
    KeyGeneration,
    #[error("signing failed")]
    Signing,
    #[error("no key in the keyset may sign at this time")]
    NoSigningKey,
    #[error("token rejected: {0}")]
    Token(String),
}
