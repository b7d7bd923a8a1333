//! Python: `requirements*.txt` (only `==` pins count; everything else is a note), `poetry.lock` and
//! `Pipfile.lock`. Names are kept as written; the database normalises them (PEP 503) at query time.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{parse_err, InventoryError, Package};
use crate::version::Ecosystem;

/// Parses a requirements file. Returns the pinned packages and a note per line that is not a pin.
pub(crate) fn requirements(path: &str, text: &str) -> (Vec<Package>, Vec<String>) {
    let mut packages = Vec::new();
    let mut notes = Vec::new();
    // Join `\` continuations first, keeping the number of the first physical line.
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        let line = raw.trim_end();
        if let Some(stripped) = line.strip_suffix('\\') {
            acc.push_str(stripped);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(line);
            logical.push((start, acc));
        }
    }
    logical.extend(pending);
    for (lineno, line) in logical {
        // A comment starts at `#` at the beginning of the line or after whitespace (pip's rule).
        let mut cut = line.len();
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'#' && (i == 0 || bytes.get(i.wrapping_sub(1)).is_some_and(u8::is_ascii_whitespace)) {
                cut = i;
                break;
            }
        }
        let line = line.get(..cut).unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('-') {
            let opt = line.split_whitespace().next().unwrap_or(line);
            if matches!(opt, "-r" | "--requirement" | "-c" | "--constraint") {
                notes.push(format!("{path}:{lineno}: included file not followed: {line}"));
            } else if matches!(opt, "-e" | "--editable") {
                notes.push(format!("{path}:{lineno}: editable requirement skipped"));
            }
            continue;
        }
        // Drop the environment marker and per-requirement options such as --hash.
        let spec = line.split(';').next().unwrap_or_default();
        let spec = spec.split(" -").next().unwrap_or_default().trim();
        if spec.contains("://") || spec.contains(" @ ") {
            notes.push(format!("{path}:{lineno}: URL requirement skipped: {spec}"));
            continue;
        }
        let Some(at) = spec.find(['=', '<', '>', '!', '~', '[', ' ', '(']) else {
            notes.push(format!("{path}:{lineno}: not pinned: {spec}"));
            continue;
        };
        let name = spec.get(..at).unwrap_or_default().trim();
        let mut rest = spec.get(at..).unwrap_or_default().trim();
        if rest.starts_with('[') {
            rest = rest.split_once(']').map(|(_, r)| r.trim()).unwrap_or_default();
        }
        let version = rest.strip_prefix("==").filter(|v| !v.starts_with('=')).map(str::trim);
        match version {
            Some(v) if !name.is_empty() && !v.is_empty() && !v.contains([',', '*', '<', '>', '!']) => {
                packages.push(Package::new(Ecosystem::PyPI, name, v, path));
            }
            _ => notes.push(format!("{path}:{lineno}: not pinned with ==: {spec}")),
        }
    }
    (packages, notes)
}

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default)]
    package: Vec<PoetryEntry>,
}

#[derive(Deserialize)]
struct PoetryEntry {
    name: String,
    version: String,
}

pub(crate) fn poetry_lock(path: &str, text: &str) -> Result<Vec<Package>, InventoryError> {
    let lock: PoetryLock = toml::from_str(text).map_err(|e| parse_err(path, format!("invalid poetry.lock: {e}")))?;
    Ok(lock.package.iter().map(|e| Package::new(Ecosystem::PyPI, &e.name, &e.version, path)).collect())
}

#[derive(Deserialize)]
struct PipfileLock {
    #[serde(default)]
    default: BTreeMap<String, PipfileEntry>,
    #[serde(default)]
    develop: BTreeMap<String, PipfileEntry>,
}

#[derive(Deserialize)]
struct PipfileEntry {
    version: Option<String>,
}

pub(crate) fn pipfile_lock(path: &str, text: &str) -> Result<Vec<Package>, InventoryError> {
    let lock: PipfileLock =
        serde_json::from_str(text).map_err(|e| parse_err(path, format!("invalid Pipfile.lock: {e}")))?;
    Ok(lock
        .default
        .iter()
        .chain(&lock.develop)
        .filter_map(|(name, e)| {
            let v = e.version.as_deref()?.strip_prefix("==")?;
            Some(Package::new(Ecosystem::PyPI, name, v.trim(), path))
        })
        .collect())
}
