//! Content scanning of a file or directory tree: config lint of Dockerfiles and Kubernetes YAML, and
//! secret detection in every text file. The walk follows the inventory walk's rules (no symlinks, `.git`,
//! `node_modules` and a Cargo `target/` skipped; so is the ignore file) and reads each file at most once,
//! up to a size cap.

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::inventory::InventoryError;
use crate::lint::{config_kind, lint_config, ConfigKind, Misconfiguration};
use crate::secrets::{find_secrets, is_binary, SecretFinding};

/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 64;

/// What to look for, and how much of each file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContentOptions {
    /// Lint Dockerfiles and Kubernetes manifests.
    pub config: bool,
    /// Look for secrets.
    pub secrets: bool,
    /// Files larger than this are not read (noted instead when they are config files).
    pub max_file_bytes: u64,
}

impl Default for ContentOptions {
    fn default() -> Self {
        ContentOptions { config: true, secrets: true, max_file_bytes: 2 << 20 }
    }
}

impl ContentOptions {
    /// Only config lint.
    pub fn config_only() -> ContentOptions {
        ContentOptions { secrets: false, ..ContentOptions::default() }
    }

    /// Only secrets.
    pub fn secrets_only() -> ContentOptions {
        ContentOptions { config: false, ..ContentOptions::default() }
    }
}

/// What a content scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContentScan {
    /// Config-lint findings, by file then line.
    pub misconfigurations: Vec<Misconfiguration>,
    /// Secrets, by file then line.
    pub secrets: Vec<SecretFinding>,
    /// Files read.
    pub files_scanned: usize,
    /// Files skipped and why.
    pub notes: Vec<String>,
}

impl ContentScan {
    pub(crate) fn sort(&mut self) {
        self.misconfigurations
            .sort_by(|a, b| (&a.file, a.line, &a.rule_id, &a.message).cmp(&(&b.file, b.line, &b.rule_id, &b.message)));
        self.secrets.sort_by(|a, b| (&a.file, a.line, &a.rule_id).cmp(&(&b.file, b.line, &b.rule_id)));
    }

    /// Scans one file's contents, `name` being how findings name it.
    pub fn add_file(&mut self, name: &str, data: &[u8], opts: &ContentOptions) {
        self.files_scanned += 1;
        if opts.config {
            if let Some(kind) = config_kind(name) {
                let text = String::from_utf8_lossy(data);
                match lint_config(kind, name, &text) {
                    Ok(found) => self.misconfigurations.extend(found),
                    // Helm chart sources and other templates are not YAML; only say so for manifests.
                    Err(e) if kind == ConfigKind::Yaml && text.contains("apiVersion") => {
                        self.notes.push(format!("{name}: not valid YAML, not linted ({e})"));
                    }
                    Err(_) => {}
                }
            }
        }
        if opts.secrets {
            self.secrets.extend(find_secrets(name, data));
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InventoryError + '_ {
    move |error| InventoryError::Io { path: path.display().to_string(), error }
}

/// Scans a file (named as given) or every file under a directory (named relative to it). `progress`
/// is called with the number of files read so far, after each file.
pub fn scan_content(
    path: &Path,
    opts: &ContentOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<ContentScan, InventoryError> {
    let meta = fs::symlink_metadata(path).map_err(io(path))?;
    let mut out = ContentScan::default();
    if meta.is_file() {
        let data = read_capped(path, opts.max_file_bytes)?;
        out.add_file(&path.display().to_string(), &data, opts);
        progress(out.files_scanned);
        out.sort();
        return Ok(out);
    }
    if !meta.is_dir() {
        return Err(InventoryError::Io {
            path: path.display().to_string(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file or directory"),
        });
    }
    let mut stack = vec![(path.to_path_buf(), String::new(), 0usize)];
    let mut files = Vec::new();
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            out.notes.push(format!("{rel}: deeper than {MAX_DEPTH} levels, not walked"));
            continue;
        }
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                out.notes.push(format!("{}: {e}", if rel.is_empty() { "." } else { &rel }));
                continue;
            }
        };
        let has_cargo_toml = dir.join("Cargo.toml").is_file();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if name == ".git" || name == "node_modules" || (name == "target" && has_cargo_toml) {
                    continue;
                }
                stack.push((entry.path(), child, depth + 1));
            } else if ft.is_file() && name != crate::ignore::IGNORE_FILE_NAME {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                files.push((child, entry.path(), len));
            }
        }
    }
    files.sort();
    for (rel, p, len) in files {
        let wanted = (opts.config && config_kind(&rel).is_some()) || opts.secrets;
        if !wanted {
            continue;
        }
        if len > opts.max_file_bytes {
            if opts.config && config_kind(&rel).is_some() {
                out.notes.push(format!("{rel}: larger than {} bytes, not read", opts.max_file_bytes));
            }
            continue;
        }
        match read_capped(&p, opts.max_file_bytes) {
            Ok(data) if is_binary(&data) => {}
            Ok(data) => {
                out.add_file(&rel, &data, opts);
                progress(out.files_scanned);
            }
            Err(e) => out.notes.push(format!("skipped: {e}")),
        }
    }
    out.sort();
    Ok(out)
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, InventoryError> {
    let f = fs::File::open(path).map_err(io(path))?;
    let mut data = Vec::new();
    f.take(cap + 1).read_to_end(&mut data).map_err(io(path))?;
    if data.len() as u64 > cap {
        return Err(InventoryError::Parse {
            path: path.display().to_string(),
            reason: format!("larger than {cap} bytes, not read"),
        });
    }
    Ok(data)
}
