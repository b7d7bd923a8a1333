//! Walking a directory tree (a source tree or an unpacked rootfs). Symlinks are never followed (so nothing
//! outside the root is read), `.git` and `node_modules` are skipped, and so is a Cargo `target/` directory
//! (one beside a `Cargo.toml`). Files that fail to parse become notes: one bad lockfile does not hide the rest.

use std::fs;
use std::io::Read;
use std::path::Path;

use super::{
    detect, looks_executable, parse, FileKind, Inventory, InventoryError, MAX_BINARY_BYTES, MAX_MANIFEST_BYTES,
};

/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 64;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InventoryError + '_ {
    move |error| InventoryError::Io { path: path.display().to_string(), error }
}

/// Inventories a single lockfile or package database, classified by its file name.
pub fn scan_lockfile(path: &Path) -> Result<Inventory, InventoryError> {
    let display = path.display().to_string();
    // Rootfs databases are recognised by their place in the tree, wherever the tree is.
    let kind = detect(&display)
        .or_else(|| {
            ["/var/lib/dpkg/", "/lib/apk/db/", "/etc/os-release", "/usr/lib/os-release"]
                .iter()
                .find_map(|anchor| display.rfind(anchor).and_then(|i| detect(display.get(i + 1..)?)))
        })
        .ok_or_else(|| InventoryError::Unknown(display.clone()))?;
    scan_file(path, kind)
}

/// Inventories one file read as `kind`, whatever its name.
pub fn scan_file(path: &Path, kind: FileKind) -> Result<Inventory, InventoryError> {
    let display = path.display().to_string();
    let cap = if kind == FileKind::GoBinary { MAX_BINARY_BYTES } else { MAX_MANIFEST_BYTES };
    let data = read_capped(path, cap)?;
    let parsed = parse(kind, &display, &data)?;
    let mut inv = Inventory { packages: parsed.packages, distro: parsed.distro, notes: parsed.notes };
    inv.finish();
    Ok(inv)
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, InventoryError> {
    let f = fs::File::open(path).map_err(io(path))?;
    let mut data = Vec::new();
    f.take(cap + 1).read_to_end(&mut data).map_err(io(path))?;
    if data.len() as u64 > cap {
        return Err(super::parse_err(&path.display().to_string(), format!("larger than {cap} bytes")));
    }
    Ok(data)
}

/// Inventories every known file under `root` (paths in the result are relative to it).
pub fn scan_dir(root: &Path) -> Result<Inventory, InventoryError> {
    let meta = fs::symlink_metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        return Err(InventoryError::Io {
            path: root.display().to_string(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        });
    }
    let mut inv = Inventory::default();
    let mut found: Vec<(String, FileKind, std::path::PathBuf)> = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            inv.notes.push(format!("{rel}: deeper than {MAX_DEPTH} levels, not walked"));
            continue;
        }
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                inv.notes.push(format!("{}: {e}", if rel.is_empty() { "." } else { &rel }));
                continue;
            }
        };
        let has_cargo_toml = dir.join("Cargo.toml").is_file();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            // file_type() does not follow symlinks.
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if name == ".git" || name == "node_modules" || (name == "target" && has_cargo_toml) {
                    continue;
                }
                stack.push((entry.path(), child_rel, depth + 1));
            } else if ft.is_file() {
                if let Some(kind) = detect(&child_rel) {
                    found.push((child_rel, kind, entry.path()));
                } else if is_candidate_binary(&entry) {
                    found.push((child_rel, FileKind::GoBinary, entry.path()));
                }
            }
        }
    }
    found.sort();
    // go.sum adds nothing when its go.mod is there (and lists modules not in the build).
    let go_mods: Vec<String> = found
        .iter()
        .filter(|(_, k, _)| *k == FileKind::GoMod)
        .map(|(r, _, _)| r.trim_end_matches("go.mod").to_owned())
        .collect();
    for (rel, kind, path) in found {
        if kind == FileKind::GoSum && go_mods.contains(&rel.trim_end_matches("go.sum").to_owned()) {
            continue;
        }
        let cap = if kind == FileKind::GoBinary { MAX_BINARY_BYTES } else { MAX_MANIFEST_BYTES };
        let result = read_capped(&path, cap).and_then(|data| parse(kind, &rel, &data));
        match result {
            Ok(p) => {
                inv.packages.extend(p.packages);
                inv.notes.extend(p.notes);
                if p.distro.is_some() && (inv.distro.is_none() || rel == "etc/os-release") {
                    inv.distro = p.distro;
                }
            }
            Err(e) => inv.notes.push(format!("skipped: {e}")),
        }
    }
    inv.finish();
    Ok(inv)
}

fn is_candidate_binary(entry: &fs::DirEntry) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = entry.metadata() else { return false };
    if meta.permissions().mode() & 0o111 == 0 || meta.len() > MAX_BINARY_BYTES || meta.len() < 64 {
        return false;
    }
    let mut head = [0u8; 4];
    fs::File::open(entry.path()).and_then(|mut f| f.read_exact(&mut head)).is_ok() && looks_executable(&head)
}
