//! Palisade scanner: per-ecosystem version orderings, advisory readers (OSV JSON/YAML, RustSec advisory-db,
//! Alpine secdb), a local indexed vulnerability database that answers "which advisories affect package P at
//! version V", package inventories (lockfiles, dpkg/apk databases, Go binaries, directory trees, docker-archive
//! and OCI images) and the report that matches them ([`scan`]); config lint of Dockerfiles and Kubernetes
//! manifests ([`lint_config`], rules in [`RULES`]), secret detection ([`find_secrets`]) over trees and image
//! layers ([`scan_content`], [`scan_image_with`]), the ignore file ([`IgnoreFile`]), and output as a table,
//! JSON, SARIF 2.1.0 ([`Report::to_sarif`]) or a CycloneDX 1.5 SBOM ([`Report::to_cyclonedx`]).
//!
//! Not here: fetching advisory data, printing, progress display (callers get a callback).
//! This crate does no network I/O: advisory data comes from local files the operator fetched.
//!
//! ```no_run
//! use palisade_scan::{Database, Ecosystem};
//! # fn main() -> Result<(), palisade_scan::DbError> {
//! let report = Database::import(&["advisory-db/crates", "osv/Go.zip"], "vulns.db".as_ref())?;
//! let db = Database::open(&report.path)?;
//! for f in db.query(Ecosystem::CratesIo, "smallvec", "0.6.9")? {
//!     let _ = (f.id, f.aliases, f.severity, f.fixed);
//! }
//! # Ok(()) }
//! ```

pub mod advisory;
pub mod alpine;
mod content;
mod cvss;
mod cyclonedx;
mod db;
pub mod ignore;
pub mod image;
pub mod inventory;
pub mod lint;
pub mod osv;
mod report;
pub mod rules;
pub mod rustsec;
mod sarif;
pub mod secrets;
mod source;
pub mod version;
mod zstd;

pub use advisory::{Advisory, Affected, Event, Rule, RuleError};
pub use content::{scan_content, ContentOptions, ContentScan};
pub use cvss::{base_score_v3, Severity};
pub use cyclonedx::purl;
pub use db::{normalize_name, Database, DbError, DbStatus, Finding, ImportReport};
pub use ignore::{Date, ExpiredIgnore, IgnoreEntry, IgnoreError, IgnoreFile, IGNORE_FILE_NAME};
pub use image::{scan_image, scan_image_with, ImageInventory, Limits};
pub use inventory::{
    detect, go_build_info, scan_dir, scan_file, scan_lockfile, Distro, FileKind, GoBuildInfo, Inventory,
    InventoryError, Package,
};
pub use lint::{config_kind, lint_config, ConfigKind, Misconfiguration};
pub use report::{
    build_report, parse_severity, scan, Report, ReportFinding, Target, TargetKind, TargetReport, EXIT_ERROR,
    EXIT_FINDINGS,
};
pub use rules::{rule, RuleInfo, RULES};
pub use sarif::SARIF_SCHEMA;
pub use secrets::{find_secrets, SecretFinding};
pub use source::{load, LoadError, LoadReport, SourceIssue};
pub use version::{compare, Ecosystem, VersionError};

/// Why one advisory document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Malformed JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Malformed YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// Malformed TOML front matter.
    #[error("invalid TOML front matter: {0}")]
    Toml(String),
    /// A required field is missing or empty.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// The document is structurally wrong.
    #[error("{0}")]
    Invalid(&'static str),
    /// A version or requirement in the document is invalid.
    #[error("{0}")]
    Rule(String),
    /// The file is not an advisory at all (e.g. a README in the tree).
    #[error("not an advisory: {0}")]
    NotAdvisory(&'static str),
}
