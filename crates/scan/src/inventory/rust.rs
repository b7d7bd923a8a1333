//! `Cargo.lock`, every format version: v1 (with or without the old `[root]` table and `[metadata]`
//! checksums) through v4 all list packages as `[[package]]` tables with `name` and `version`.

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
}

pub(crate) fn cargo_lock(path: &str, text: &str) -> Result<Vec<Package>, InventoryError> {
    let lock: Lock = toml::from_str(text).map_err(|e| parse_err(path, format!("invalid Cargo.lock: {e}")))?;
    Ok(lock
        .root
        .into_iter()
        .chain(lock.package)
        .map(|e| Package::new(Ecosystem::CratesIo, &e.name, &e.version, path))
        .collect())
}
