//! Package inventories: which packages (ecosystem, name, version) a lockfile, an OS package database, a Go
//! binary, a directory tree or an image holds. Parsers take bytes and a display path and never touch the
//! disk; the directory walker reads only regular files under the root and never follows a symlink.

mod golang;
mod npm;
mod os;
mod python;
mod rust;
mod walk;

use serde::{Deserialize, Serialize};

use crate::version::Ecosystem;

pub use golang::{go_build_info, GoBuildInfo};
pub use os::Distro;
pub use walk::{scan_dir, scan_file, scan_lockfile};

/// Largest lockfile or package database read (larger ones are reported, not read).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Largest executable inspected for Go build info.
pub const MAX_BINARY_BYTES: u64 = 256 << 20;

/// One installed or locked package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Package {
    /// Ecosystem whose advisories apply.
    pub ecosystem: Ecosystem,
    /// Package name as the ecosystem spells it (binary package name for OS packages).
    pub name: String,
    /// Installed or locked version (dpkg epoch and revision kept).
    pub version: String,
    /// The file it was found in, relative to the scanned root (or as given for a single lockfile).
    pub source_file: String,
    /// Digest of the image layer the file came from; `None` outside images.
    pub layer: Option<String>,
    /// Source package (dpkg `Source:`, apk origin `o:`) when it differs from `name`; distribution
    /// advisories are keyed by it.
    pub source_name: Option<String>,
    /// Version of the source package when dpkg gives one in `Source: name (version)`.
    pub source_version: Option<String>,
    /// Where the package comes from when that is not the ecosystem's public registry (so far for
    /// `Cargo.lock`: `path` for workspace members and path dependencies, else the `git+…` or other
    /// registry's source URL). Such packages are listed but never matched against advisories, which name
    /// registry packages; cargo-audit does the same.
    pub non_registry_source: Option<String>,
}

impl Package {
    pub(crate) fn new(ecosystem: Ecosystem, name: &str, version: &str, source_file: &str) -> Package {
        Package {
            ecosystem,
            name: name.to_owned(),
            version: version.to_owned(),
            source_file: source_file.to_owned(),
            layer: None,
            source_name: None,
            source_version: None,
            non_registry_source: None,
        }
    }

    /// The (name, version) advisories are matched on: the source package for OS packages, else the package.
    pub fn match_key(&self) -> (&str, &str) {
        match &self.source_name {
            Some(src) => (src, self.source_version.as_deref().unwrap_or(&self.version)),
            None => (&self.name, &self.version),
        }
    }
}

/// Everything found in one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Inventory {
    /// Packages, sorted and deduplicated.
    pub packages: Vec<Package>,
    /// The distribution release from `etc/os-release`, when the target is a rootfs.
    pub distro: Option<Distro>,
    /// Files skipped or lines not understood, one line each.
    pub notes: Vec<String>,
}

impl Inventory {
    /// Sorts, deduplicates and applies the distribution to OS packages (dpkg packages are Ubuntu's when
    /// os-release says so).
    pub(crate) fn finish(&mut self) {
        if let Some(eco) = self.distro.as_ref().and_then(Distro::ecosystem) {
            for p in &mut self.packages {
                if matches!(p.ecosystem, Ecosystem::Debian | Ecosystem::Ubuntu)
                    && matches!(eco, Ecosystem::Debian | Ecosystem::Ubuntu)
                {
                    p.ecosystem = eco;
                }
            }
        }
        self.packages.sort();
        self.packages.dedup();
    }
}

/// Why a target could not be inventoried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// Reading a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error (not a `source`: the message already carries it).
        error: std::io::Error,
    },
    /// A file is not valid in its format.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The file name is not one of the known lockfile or database names.
    #[error("{0}: not a known lockfile or package database")]
    Unknown(String),
    /// An image or archive is malformed.
    #[error("image {path}: {reason}")]
    Image {
        /// The image path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An archive entry names a path outside the root.
    #[error("image {image}: entry {entry:?} escapes the root (path traversal refused)")]
    Traversal {
        /// The image path.
        image: String,
        /// The entry path (at most 200 characters).
        entry: String,
    },
    /// An archive exceeds one of the limits.
    #[error("image {image}: {what} exceeds the limit of {limit}")]
    Limit {
        /// The image path.
        image: String,
        /// Which limit, e.g. `entry "usr/bin/x" size 10737418240 bytes`.
        what: String,
        /// The limit, in its unit.
        limit: u64,
    },
}

pub(crate) fn parse_err(path: &str, reason: impl Into<String>) -> InventoryError {
    InventoryError::Parse { path: path.to_owned(), reason: reason.into() }
}

/// Which kind of file a path is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FileKind {
    /// `Cargo.lock`.
    CargoLock,
    /// `package-lock.json`, `npm-shrinkwrap.json` or `node_modules/.package-lock.json`.
    PackageLock,
    /// `yarn.lock`.
    YarnLock,
    /// `pnpm-lock.yaml`.
    PnpmLock,
    /// `requirements*.txt`.
    Requirements,
    /// `poetry.lock`.
    PoetryLock,
    /// `Pipfile.lock`.
    PipfileLock,
    /// `go.mod`.
    GoMod,
    /// `go.sum`.
    GoSum,
    /// `var/lib/dpkg/status`.
    DpkgStatus,
    /// A file of distroless `var/lib/dpkg/status.d/`.
    DpkgStatusD,
    /// `lib/apk/db/installed`.
    ApkInstalled,
    /// `etc/os-release` or `usr/lib/os-release`.
    OsRelease,
    /// An executable carrying Go build info.
    GoBinary,
}

/// Classifies a path (relative, `/`-separated) by its name; Go binaries are found by content instead.
pub fn detect(path: &str) -> Option<FileKind> {
    let path = path.trim_start_matches("./").trim_start_matches('/');
    let name = path.rsplit('/').next().unwrap_or(path);
    let kind = match name {
        "Cargo.lock" => FileKind::CargoLock,
        "package-lock.json" | "npm-shrinkwrap.json" => FileKind::PackageLock,
        "yarn.lock" => FileKind::YarnLock,
        "pnpm-lock.yaml" => FileKind::PnpmLock,
        "poetry.lock" => FileKind::PoetryLock,
        "Pipfile.lock" => FileKind::PipfileLock,
        "go.mod" => FileKind::GoMod,
        "go.sum" => FileKind::GoSum,
        _ if (name.starts_with("requirements") && name.ends_with(".txt")) || name.ends_with("-requirements.txt") => {
            FileKind::Requirements
        }
        _ => match path {
            "var/lib/dpkg/status" => FileKind::DpkgStatus,
            "lib/apk/db/installed" => FileKind::ApkInstalled,
            "etc/os-release" | "usr/lib/os-release" => FileKind::OsRelease,
            _ if path.starts_with("var/lib/dpkg/status.d/")
                && !name.contains('.')
                && path.matches('/').count() == 4 =>
            {
                FileKind::DpkgStatusD
            }
            _ => return None,
        },
    };
    Some(kind)
}

/// What one file yielded.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Parsed {
    pub packages: Vec<Package>,
    pub notes: Vec<String>,
    pub distro: Option<Distro>,
}

/// Parses one file of a known kind. `path` is used for `source_file` and in messages.
pub(crate) fn parse(kind: FileKind, path: &str, data: &[u8]) -> Result<Parsed, InventoryError> {
    let text = || std::str::from_utf8(data).map_err(|_| parse_err(path, "not UTF-8 text"));
    let mut out = Parsed::default();
    match kind {
        FileKind::CargoLock => out.packages = rust::cargo_lock(path, text()?)?,
        FileKind::PackageLock => out.packages = npm::package_lock(path, text()?)?,
        FileKind::YarnLock => out.packages = npm::yarn_lock(path, text()?)?,
        FileKind::PnpmLock => out.packages = npm::pnpm_lock(path, text()?)?,
        FileKind::Requirements => (out.packages, out.notes) = python::requirements(path, text()?),
        FileKind::PoetryLock => out.packages = python::poetry_lock(path, text()?)?,
        FileKind::PipfileLock => out.packages = python::pipfile_lock(path, text()?)?,
        FileKind::GoMod => (out.packages, out.notes) = golang::go_mod(path, text()?),
        FileKind::GoSum => out.packages = golang::go_sum(path, text()?),
        FileKind::DpkgStatus => out.packages = os::dpkg_status(path, text()?, true),
        FileKind::DpkgStatusD => out.packages = os::dpkg_status(path, text()?, false),
        FileKind::ApkInstalled => out.packages = os::apk_installed(path, text()?),
        FileKind::OsRelease => out.distro = os::os_release(text()?),
        FileKind::GoBinary => match golang::go_build_info(data) {
            Ok(Some(info)) => out.packages = info.packages(path),
            Ok(None) => {}
            Err(reason) => out.notes.push(format!("{path}: Go build info unreadable: {reason}")),
        },
    }
    Ok(out)
}

/// Whether `data` starts like an executable worth searching for Go build info (ELF, Mach-O, PE).
pub(crate) fn looks_executable(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
        || head.starts_with(b"MZ")
        || head.starts_with(&[0xcf, 0xfa, 0xed, 0xfe])
        || head.starts_with(&[0xfe, 0xed, 0xfa, 0xcf])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_by_name() {
        assert_eq!(detect("app/Cargo.lock"), Some(FileKind::CargoLock));
        assert_eq!(detect("./var/lib/dpkg/status"), Some(FileKind::DpkgStatus));
        assert_eq!(detect("var/lib/dpkg/status.d/libc6"), Some(FileKind::DpkgStatusD));
        assert_eq!(detect("var/lib/dpkg/status.d/libc6.md5sums"), None);
        assert_eq!(detect("lib/apk/db/installed"), Some(FileKind::ApkInstalled));
        assert_eq!(detect("srv/lib/apk/db/installed"), None);
        assert_eq!(detect("requirements-dev.txt"), Some(FileKind::Requirements));
        assert_eq!(detect("dev-requirements.txt"), Some(FileKind::Requirements));
        assert_eq!(detect("notes.txt"), None);
        assert_eq!(detect("etc/os-release"), Some(FileKind::OsRelease));
    }
}
