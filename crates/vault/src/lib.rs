//! Palisade's data-protection layer, run inside `palisade server` (issue #8): named keys with
//! versions, sealed under the master key, and what applications do with them without ever
//! holding them — encrypt/decrypt with a context (AES-256-GCM, XChaCha20-Poly1305,
//! AES-256-GCM-SIV with optional deterministic "convergent" mode), rewrap, data keys, Ed25519
//! signatures, HMAC-SHA256, and tokenization (FF1 format-preserving tokens, random vault tokens
//! kept encrypted in the store). Modelled on Tink keysets (key ids in ciphertexts, misuse-resistant
//! defaults) and Vault's transit and transform engines; [`router`] is the HTTP API.
//!
//! Not for: the gateway's transform filter or Cedar policies (the server supplies a
//! [`DetokenizeAuthorizer`] and an [`Authenticator`]), nor config parsing.
//!
//! Ciphertexts, signatures and HMACs are `pal:v<N>:<base64url>` (N: key version). Every call is
//! audited once through the [`palisade_core::audit::AuditSink`] with `source: "vault"`,
//! `route: "vault"` and `reason: "vault:<op>:<key>:v<versions>"` (plus ` items=N failed=M` for
//! batches, `: <error code>` for refusals); events never carry plaintext, ciphertext, tokens or keys.
//!
//! Invariant: key material is stored only sealed by the master key with
//! `palisade-vault:key:<name>:v<version>` as associated data, so a sealed blob cannot be moved to
//! another key or version.

mod envelope;
mod error;
mod http;
mod keys;
mod provider;
mod repo;
mod tokenize;
mod vault;

pub use error::VaultError;
pub use http::{router, Authenticator, DEFAULT_DELETION_GRACE, MAX_BODY_BYTES};
pub use keys::KeyType;
pub use provider::{load_master_key, MasterKeySource, Pkcs11Config};
pub use tokenize::{mask, FormatSpec, TokenFormat};
pub use vault::{
    valid_key_name, Caller, DataKey, DataKeyItem, DecryptItem, DenyAllDetokenize, DetokenizeAuthorizer, DetokenizeItem,
    EncryptItem, Encrypted, ExportedKey, KeyConfig, KeyInfo, KeyOptions, Tag, TokenMode, TokenizeItem, Vault,
    VerifyItem, VersionInfo, MAX_BATCH_ITEMS,
};
