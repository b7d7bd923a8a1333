//! Palisade scanner, first slice: per-ecosystem version orderings, advisory readers (OSV JSON/YAML, RustSec
//! advisory-db, Alpine secdb) and a local indexed vulnerability database that answers "which advisories affect
//! package P at version V".
//!
//! Not here (yet): lockfile and image inventories, config lint, secret detection, SARIF/CycloneDX output.
//! This crate does no network I/O: advisory data comes from local files the operator fetched.

pub mod version;

pub use version::{compare, Ecosystem, VersionError};
