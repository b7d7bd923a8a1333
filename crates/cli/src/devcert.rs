//! The self-signed development certificate `palisade up` serves on :8443. Generated once into
//! the data directory; the key file is created with mode 0600 and never logged.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct DevCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ensure(dir: &Path) -> anyhow::Result<DevCert> {
    let cert = dir.join("dev-cert.pem");
    let key = dir.join("dev-key.pem");
    if cert.exists() && key.exists() {
        return Ok(DevCert { cert, key });
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).context("generating the dev certificate")?;
    // Write the key first, atomically, so a crash never leaves a cert without its key.
    palisade_crypto::write_secret_file(&key, ck.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&cert, ck.cert.pem())?;
    Ok(DevCert { cert, key })
}
