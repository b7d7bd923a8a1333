//! Secret references. A secret in the config is never inline: it is `${ENV_VAR}` or
//! `file:PATH`, resolved when the config is compiled. Resolved values never print.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, Error as _};

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "${{{v}}}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        if let Some(rest) = s.strip_prefix("${") {
            let name = rest.strip_suffix('}').ok_or("unterminated ${...} reference")?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            return Ok(SecretRef::Env(name.to_string()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("empty file: reference".into());
            }
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        Err("secrets must be a reference, ${ENV_VAR} or file:PATH; inline secret values are not accepted".into())
    }

    /// Read the secret. Relative file paths are relative to `base` (the config file's directory).
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => match std::env::var_os(name) {
                Some(v) if !v.is_empty() => Ok(Secret(v.into_encoded_bytes())),
                _ => Err(format!("environment variable {name} is not set")),
            },
            SecretRef::File(p) => {
                let path = base.join(p);
                std::fs::read(&path).map(Secret).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
            }
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(D::Error::custom)
    }
}

/// A resolved secret value. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_rejects_inline() {
        assert_eq!(SecretRef::parse("${TLS_KEY}").ok(), Some(SecretRef::Env("TLS_KEY".into())));
        assert_eq!(SecretRef::parse("file:k.pem").ok(), Some(SecretRef::File("k.pem".into())));
        assert!(SecretRef::parse("-----BEGIN PRIVATE KEY-----").is_err());
        assert!(SecretRef::parse("${BAD NAME}").is_err());
        assert!(SecretRef::parse("${OPEN").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret(b"hunter2".to_vec())), "[redacted]");
    }
}
