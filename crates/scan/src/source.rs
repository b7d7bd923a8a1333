//! Reads advisory sources from disk: single files, directory trees and `.zip` archives (as OSV publishes
//! per ecosystem). The format follows the file: `.md` RustSec, `.json` OSV, `.yaml`/`.yml` OSV or Alpine
//! secdb. Every file either yields advisories, is skipped with a reason, or is a failure with a reason;
//! sizes are capped so a hostile archive cannot exhaust memory.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::advisory::Advisory;
use crate::{alpine, osv, rustsec, ParseError};

/// Largest advisory file (or zip entry) read.
const MAX_FILE: u64 = 64 << 20;
/// Largest total of uncompressed bytes read from one zip.
const MAX_ZIP_TOTAL: u64 = 4 << 30;
/// Most entries read from one zip.
const MAX_ZIP_ENTRIES: usize = 1_000_000;
/// Deepest directory nesting followed.
const MAX_DEPTH: usize = 32;

/// A file that was skipped or failed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIssue {
    /// The file (for zip entries `archive.zip!entry`).
    pub path: String,
    /// Why it was skipped or failed.
    pub reason: String,
}

/// What reading a set of sources produced.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LoadReport {
    /// Advisories read (withdrawn ones included, flagged).
    pub advisories: Vec<Advisory>,
    /// Advisory files read (including skipped and failed ones).
    pub files_read: usize,
    /// Files that are not advisories or have nothing this crate can match.
    pub skipped: Vec<SourceIssue>,
    /// Files that should have been advisories but could not be parsed.
    pub failures: Vec<SourceIssue>,
}

/// A source path that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist or cannot be read.
    #[error("cannot read advisory source {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

enum Kind {
    RustSec,
    OsvJson,
    Yaml,
    Zip,
}

fn kind_of(name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".md") {
        Some(Kind::RustSec)
    } else if lower.ends_with(".json") {
        Some(Kind::OsvJson)
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        Some(Kind::Yaml)
    } else if lower.ends_with(".zip") {
        Some(Kind::Zip)
    } else {
        None
    }
}

/// Reads every advisory under `paths` (files, directories or zips).
pub fn load(paths: &[impl AsRef<Path>]) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    for p in paths {
        let p = p.as_ref();
        let meta = fs::metadata(p).map_err(|source| LoadError::Io { path: p.display().to_string(), source })?;
        if meta.is_dir() {
            walk(p, 0, &mut report);
        } else {
            load_file(p, &mut report);
        }
    }
    Ok(report)
}

fn walk(dir: &Path, depth: usize, report: &mut LoadReport) {
    let label = dir.display().to_string();
    if depth > MAX_DEPTH {
        report.skipped.push(SourceIssue { path: label, reason: "directory nested too deep".into() });
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.failures.push(SourceIssue { path: label, reason: format!("cannot list directory: {e}") });
            return;
        }
    };
    let mut paths: Vec<_> = entries.filter_map(Result::ok).collect();
    paths.sort_by_key(|e| e.file_name());
    for entry in paths {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // Symlinks are not followed: a loop or a link out of the tree is never read.
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&entry.path(), depth + 1, report);
        } else if ft.is_file() {
            load_file(&entry.path(), report);
        }
    }
}

/// RustSec keeps toolchain advisories (std, cargo, rustdoc) in `rust/<package>/`; they are not crates.io
/// packages, and a crate named like them must not match.
fn in_rust_collection(path: &Path) -> bool {
    path.parent().and_then(Path::parent).and_then(Path::file_name).is_some_and(|n| n == "rust")
}

fn load_file(path: &Path, report: &mut LoadReport) {
    let label = path.display().to_string();
    let Some(kind) = kind_of(&label) else { return };
    if let Kind::Zip = kind {
        load_zip(path, report);
        return;
    }
    report.files_read += 1;
    if matches!(kind, Kind::RustSec) && in_rust_collection(path) {
        report
            .skipped
            .push(SourceIssue { path: label, reason: "RustSec toolchain collection (rust/), not crates.io".into() });
        return;
    }
    let bytes = match read_capped(fs::File::open(path), MAX_FILE) {
        Ok(b) => b,
        Err(reason) => {
            report.failures.push(SourceIssue { path: label, reason });
            return;
        }
    };
    parse_into(&label, &kind, &bytes, report);
}

fn read_capped(file: std::io::Result<fs::File>, cap: u64) -> Result<Vec<u8>, String> {
    let file = file.map_err(|e| format!("cannot open: {e}"))?;
    let mut buf = Vec::new();
    file.take(cap + 1).read_to_end(&mut buf).map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() as u64 > cap {
        return Err(format!("larger than {cap} bytes"));
    }
    Ok(buf)
}

fn parse_into(label: &str, kind: &Kind, bytes: &[u8], report: &mut LoadReport) {
    let result: Result<Vec<Advisory>, ParseError> = match kind {
        Kind::RustSec => std::str::from_utf8(bytes)
            .map_err(|_| ParseError::Invalid("not UTF-8"))
            .and_then(rustsec::parse)
            .map(|a| vec![a]),
        Kind::OsvJson => osv::parse_json(bytes).map(|a| vec![a]),
        Kind::Yaml => std::str::from_utf8(bytes).map_err(|_| ParseError::Invalid("not UTF-8")).and_then(|text| {
            if alpine::looks_like_secdb(text) {
                alpine::parse_secdb(text).map(|(advisories, invalid)| {
                    for e in invalid {
                        report.failures.push(SourceIssue {
                            path: format!("{label} ({} {})", e.package, e.version),
                            reason: e.reason,
                        });
                    }
                    advisories
                })
            } else {
                osv::parse_yaml(text).map(|a| vec![a])
            }
        }),
        Kind::Zip => Ok(Vec::new()),
    };
    match result {
        Ok(advisories) => {
            if advisories.iter().all(|a| a.affected.is_empty()) && !advisories.is_empty() {
                report.skipped.push(SourceIssue {
                    path: label.to_owned(),
                    reason: "no affected package in a supported ecosystem".into(),
                });
            }
            report.advisories.extend(advisories.into_iter().filter(|a| !a.affected.is_empty()));
        }
        Err(ParseError::NotAdvisory(why)) => {
            report.skipped.push(SourceIssue { path: label.to_owned(), reason: why.to_owned() });
        }
        Err(e) => report.failures.push(SourceIssue { path: label.to_owned(), reason: e.to_string() }),
    }
}

fn load_zip(path: &Path, report: &mut LoadReport) {
    let label = path.display().to_string();
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report.failures.push(SourceIssue { path: label, reason: format!("cannot open: {e}") });
            return;
        }
    };
    let mut archive = match zip::ZipArchive::new(file) {
        Ok(a) => a,
        Err(e) => {
            report.failures.push(SourceIssue { path: label, reason: format!("not a readable zip: {e}") });
            return;
        }
    };
    if archive.len() > MAX_ZIP_ENTRIES {
        report.failures.push(SourceIssue { path: label, reason: format!("more than {MAX_ZIP_ENTRIES} entries") });
        return;
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                report.failures.push(SourceIssue { path: format!("{label}!#{i}"), reason: format!("bad entry: {e}") });
                continue;
            }
        };
        if entry.is_dir() {
            continue;
        }
        let name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(e) => {
                report
                    .failures
                    .push(SourceIssue { path: format!("{label}!#{i}"), reason: format!("bad entry name: {e}") });
                continue;
            }
        };
        let entry_label = format!("{label}!{name}");
        let Some(kind) = kind_of(&name) else { continue };
        if matches!(kind, Kind::Zip) {
            report.skipped.push(SourceIssue { path: entry_label, reason: "nested zip not read".into() });
            continue;
        }
        report.files_read += 1;
        // The declared size may lie; the read itself is capped too.
        let mut buf = Vec::new();
        match (&mut entry).take(MAX_FILE + 1).read_to_end(&mut buf) {
            Ok(_) if buf.len() as u64 > MAX_FILE => {
                report
                    .failures
                    .push(SourceIssue { path: entry_label, reason: format!("larger than {MAX_FILE} bytes") });
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                report.failures.push(SourceIssue { path: entry_label, reason: format!("cannot decompress: {e}") });
                continue;
            }
        }
        total = total.saturating_add(buf.len() as u64);
        if total > MAX_ZIP_TOTAL {
            report
                .failures
                .push(SourceIssue { path: label, reason: format!("more than {MAX_ZIP_TOTAL} bytes uncompressed") });
            return;
        }
        parse_into(&entry_label, &kind, &buf, report);
    }
}
