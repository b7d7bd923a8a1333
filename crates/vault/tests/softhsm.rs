//! The PKCS#11 master key provider against a real SoftHSM2 token created in a temp dir. Skipped
//! (with a message) only when softhsm2 is not installed and PALISADE_REQUIRE_SOFTHSM is unset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_vault::*;
use support::*;
use zeroize::Zeroizing;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn cfg(dir: &Path, pin: &str, generate: bool, label: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: PathBuf::from(MODULE),
        token_label: "palisade-test".into(),
        pin: Zeroizing::new(pin.into()),
        key_label: label.into(),
        generate_key: generate,
        wrapped_key_file: dir.join("root.wrapped"),
    }
}

// The only test in this binary, so changing the environment races with nothing; SoftHSM reads
// its configuration path from SOFTHSM2_CONF.
#[allow(clippy::disallowed_methods)]
#[tokio::test]
async fn softhsm_wraps_and_unwraps_the_root_key() {
    if !Path::new(MODULE).exists() || which("softhsm2-util").is_none() {
        if std::env::var_os("PALISADE_REQUIRE_SOFTHSM").is_some() {
            panic!("PALISADE_REQUIRE_SOFTHSM is set but softhsm2 is not installed ({MODULE})");
        }
        eprintln!(
            "SKIPPED softhsm_wraps_and_unwraps_the_root_key: softhsm2 is not installed (apt-get install softhsm2)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "palisade-test", "--pin", "1234", "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));

    // First start: the HSM key is generated and the root key is wrapped into a 0600 file.
    let m1 = load_master_key(&MasterKeySource::Pkcs11(cfg(dir.path(), "1234", true, "palisade-root"))).unwrap();
    let wrapped = dir.path().join("root.wrapped");
    let bytes = std::fs::read(&wrapped).unwrap();
    assert!(bytes.starts_with(b"palisade-vault-pkcs11-v1\n"));
    assert_eq!(bytes.len(), 25 + 12 + 32 + 16);
    assert_eq!(std::fs::metadata(&wrapped).unwrap().permissions().mode() & 0o777, 0o600);

    // Vault keys sealed under it survive a restart that unwraps the same root key.
    let f = fixture().await;
    let events = Arc::new(Events::default());
    let v1 = Vault::new(&f.store, Arc::new(m1), events.clone(), Arc::new(AliceOnly));
    v1.create_key(&alice(), "hsm-backed", KeyOptions::new(KeyType::Aes256Gcm)).await.unwrap();
    let item = EncryptItem { plaintext: Zeroizing::new(b"under the hsm".to_vec()), context: vec![], key_version: None };
    let c = v1.encrypt(&alice(), "hsm-backed", item).await.unwrap();
    let m2 = load_master_key(&MasterKeySource::Pkcs11(cfg(dir.path(), "1234", false, "palisade-root"))).unwrap();
    let v2 = Vault::new(&f.store, Arc::new(m2), events, Arc::new(AliceOnly));
    let pt = v2.decrypt(&alice(), "hsm-backed", DecryptItem { ciphertext: c.ciphertext, context: vec![] }).await;
    assert_eq!(&pt.unwrap()[..], b"under the hsm");

    // Wrong PIN, missing HSM key, altered wrapped file: clear errors, no key.
    let e = load_master_key(&MasterKeySource::Pkcs11(cfg(dir.path(), "0000", false, "palisade-root"))).unwrap_err();
    assert!(e.to_string().starts_with("hsm: logging in to the token:"), "{e}");
    let e = load_master_key(&MasterKeySource::Pkcs11(cfg(dir.path(), "1234", false, "other"))).unwrap_err();
    assert_eq!(e.to_string(), "hsm: no key labelled \"other\" in the token");
    let mut altered = bytes.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    std::fs::write(&wrapped, &altered).unwrap();
    let e = load_master_key(&MasterKeySource::Pkcs11(cfg(dir.path(), "1234", false, "palisade-root"))).unwrap_err();
    assert!(e.to_string().starts_with("hsm: unwrapping the root key (wrong HSM key or altered file)"), "{e}");
    let mut wrong_label = cfg(dir.path(), "1234", false, "palisade-root");
    wrong_label.token_label = "absent".into();
    let e = load_master_key(&MasterKeySource::Pkcs11(wrong_label)).unwrap_err();
    assert_eq!(e.to_string(), "hsm: no token labelled \"absent\"");
    // The PIN never shows in Debug output.
    let dbg = format!("{:?}", cfg(dir.path(), "1234", false, "x"));
    assert!(dbg.contains("[redacted]") && !dbg.contains("1234"), "{dbg}");
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.exists())
}
