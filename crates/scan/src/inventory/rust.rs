//! `Cargo.lock`, every format version: v1 (with or without the old `[root]` table and `[metadata]`
//! checksums) through v4 all list packages as `[[package]]` tables with `name`, `version` and, for
//! packages not built from the workspace's own tree, `source`. Only crates.io packages (either spelling of
//! its index) are crates.io's: the others are marked with their source and never matched, since RustSec
//! advisories name crates.io crates and a git fork or a private crate may merely share the name.

use serde::Deserialize;

use super::{parse_err, InventoryError, Package};
use crate::version::Ecosystem;

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<Entry>,
    root: Option<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    version: String,
    #[serde(default)]
    source: Option<String>,
}

/// crates.io as `Cargo.lock` spells it: the git index, and the sparse index (Cargo 1.68+ with
/// `registries.crates-io.protocol = "sparse"` written through a source replacement).
const CRATES_IO: [&str; 2] =
    ["registry+https://github.com/rust-lang/crates.io-index", "sparse+https://index.crates.io/"];

/// `None` for crates.io; else the source: `path` when there is none (workspace members and path
/// dependencies), the `git+…` URL, or another registry's `registry+…`/`sparse+…` URL.
fn non_registry(source: Option<&str>) -> Option<String> {
    match source {
        None => Some("path".to_owned()),
        Some(s) if CRATES_IO.contains(&s) => None,
        Some(s) => Some(s.chars().take(512).collect()),
    }
}

pub(crate) fn cargo_lock(path: &str, text: &str) -> Result<Vec<Package>, InventoryError> {
    let lock: Lock = toml::from_str(text).map_err(|e| parse_err(path, format!("invalid Cargo.lock: {e}")))?;
    Ok(lock
        .root
        .into_iter()
        .chain(lock.package)
        .map(|e| {
            let mut p = Package::new(Ecosystem::CratesIo, &e.name, &e.version, path);
            p.non_registry_source = non_registry(e.source.as_deref());
            p
        })
        .collect())
}
