//! npm lockfiles: `package-lock.json` v1 (nested `dependencies`) and v2/v3 (`packages` keyed by
//! `node_modules/…` paths, nested and scoped), `yarn.lock` (classic v1 and berry), `pnpm-lock.yaml`
//! (v5 `/name/version_peer` keys, v6 `/name@version(peer)`, v9 `name@version`). Workspace links, local,
//! git and patch entries are not registry packages and are left out.

use serde_json::Value;

use super::{parse_err, InventoryError, Package};
use crate::version::Ecosystem;

/// Nesting depth of a v1 `dependencies` tree followed (real trees are far shallower).
const MAX_DEPTH: usize = 64;

pub(crate) fn package_lock(path: &str, text: &str) -> Result<Vec<Package>, InventoryError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| parse_err(path, format!("invalid JSON: {e}")))?;
    let mut out = Vec::new();
    if let Some(packages) = doc.get("packages").and_then(Value::as_object) {
        for (key, entry) in packages {
            let Some(idx) = key.rfind("node_modules/") else { continue };
            if entry.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let Some(version) = entry.get("version").and_then(Value::as_str) else { continue };
            let key_name = key.get(idx + "node_modules/".len()..).unwrap_or_default();
            // An aliased install (`"foo": "npm:bar@1"`) has the real name in `name`.
            let name = entry.get("name").and_then(Value::as_str).unwrap_or(key_name);
            if !name.is_empty() {
                out.push(Package::new(Ecosystem::Npm, name, version, path));
            }
        }
    } else if let Some(deps) = doc.get("dependencies").and_then(Value::as_object) {
        v1_tree(path, deps, 0, &mut out)?;
    }
    Ok(out)
}

fn v1_tree(
    path: &str,
    deps: &serde_json::Map<String, Value>,
    depth: usize,
    out: &mut Vec<Package>,
) -> Result<(), InventoryError> {
    if depth > MAX_DEPTH {
        return Err(parse_err(path, format!("dependencies nested deeper than {MAX_DEPTH}")));
    }
    for (name, entry) in deps {
        if let Some(version) = entry.get("version").and_then(Value::as_str) {
            // v1 aliases: `"version": "npm:real@1.2.3"`; `file:`/git versions are not registry packages.
            if let Some(alias) = version.strip_prefix("npm:") {
                if let Some((real, v)) = split_name_at(alias) {
                    out.push(Package::new(Ecosystem::Npm, real, v, path));
                }
            } else if !version.contains(':') && !version.contains('/') {
                out.push(Package::new(Ecosystem::Npm, name, version, path));
            }
        }
        if let Some(nested) = entry.get("dependencies").and_then(Value::as_object) {
            v1_tree(path, nested, depth + 1, out)?;
        }
    }
    Ok(())
}

/// Splits `name@rest` where a scoped name starts with `@`.
fn split_name_at(spec: &str) -> Option<(&str, &str)> {
    let at = spec.get(1..)?.find('@')? + 1;
    Some((spec.get(..at)?, spec.get(at + 1..)?))
}

pub(crate) fn yarn_lock(path: &str, text: &str) -> Result<Vec<Package>, InventoryError> {
    let mut out = Vec::new();
    let mut current: Option<(String, bool)> = None; // (name, is registry entry)
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            current = None;
            let Some(key) = line.strip_suffix(':') else { continue };
            let first = key.split(", ").next().unwrap_or_default().trim_matches('"');
            if first == "__metadata" {
                continue;
            }
            let Some((name, range)) = split_name_at(first) else { continue };
            // Berry prefixes the range with a protocol; only `npm:` ones come from the registry.
            let registry = match range.split_once(':') {
                Some((proto, _)) => proto == "npm",
                None => true,
            };
            current = Some((name.to_owned(), registry));
            continue;
        }
        let trimmed = line.trim();
        let version = trimmed
            .strip_prefix("version ")
            .or_else(|| trimmed.strip_prefix("version:"))
            .map(|v| v.trim().trim_matches('"'));
        if let (Some(v), Some((name, true))) = (version, &current) {
            out.push(Package::new(Ecosystem::Npm, name, v, path));
            current = None;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub(crate) fn pnpm_lock(path: &str, text: &str) -> Result<Vec<Package>, InventoryError> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| parse_err(path, format!("invalid YAML: {e}")))?;
    let lock_version = match doc.get("lockfileVersion") {
        Some(serde_yaml_ng::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(serde_yaml_ng::Value::String(s)) => s.parse().unwrap_or(0.0),
        _ => return Err(parse_err(path, "missing lockfileVersion")),
    };
    let mut out = Vec::new();
    let Some(packages) = doc.get("packages").and_then(|p| p.as_mapping()) else { return Ok(out) };
    for (key, entry) in packages {
        let Some(key) = key.as_str() else { continue };
        let field = |f: &str| entry.get(f).and_then(|v| v.as_str());
        let parsed = if lock_version < 6.0 { pnpm_v5_key(key) } else { pnpm_v6_key(key) };
        let (name, version) = match (field("name"), field("version"), parsed) {
            // Tarball and git entries carry name and version as fields.
            (Some(n), Some(v), _) => (n.to_owned(), v.to_owned()),
            (_, _, Some((n, v))) => (n, v),
            _ => continue,
        };
        if version.contains(':') || version.contains('/') {
            continue;
        }
        out.push(Package::new(Ecosystem::Npm, &name, &version, path));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// v5: `/name/1.0.0`, `/@scope/name/1.0.0_peer@2.0.0`, possibly `registry.host/name/1.0.0`.
fn pnpm_v5_key(key: &str) -> Option<(String, String)> {
    let (name_part, version) = key.rsplit_once('/')?;
    let version = version.split('_').next()?;
    let name = match name_part.rfind("/@") {
        Some(i) => name_part.get(i + 1..)?,
        None => name_part.rsplit('/').next()?,
    };
    (!name.is_empty() && !version.is_empty()).then(|| (name.to_owned(), version.to_owned()))
}

/// v6+: `/name@1.0.0(peer@2.0.0)` (v6) or `name@1.0.0` (v9); peer suffixes cut.
fn pnpm_v6_key(key: &str) -> Option<(String, String)> {
    let key = key.trim_start_matches('/');
    let key = key.split('(').next()?;
    let (name, version) = split_name_at(key)?;
    (!name.is_empty() && !version.is_empty()).then(|| (name.to_owned(), version.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pnpm_keys() {
        assert_eq!(pnpm_v5_key("/@babel/core/7.12.3"), Some(("@babel/core".into(), "7.12.3".into())));
        assert_eq!(pnpm_v5_key("/foo/1.0.0_react@17.0.2"), Some(("foo".into(), "1.0.0".into())));
        assert_eq!(pnpm_v5_key("registry.example.com/foo/2.0.0"), Some(("foo".into(), "2.0.0".into())));
        assert_eq!(
            pnpm_v6_key("/@babel/core@7.12.3(supports-color@8.0.0)"),
            Some(("@babel/core".into(), "7.12.3".into()))
        );
        assert_eq!(pnpm_v6_key("lodash@4.17.21"), Some(("lodash".into(), "4.17.21".into())));
        assert_eq!(pnpm_v6_key("@"), None);
    }
}
