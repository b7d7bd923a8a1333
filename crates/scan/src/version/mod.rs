//! Version orderings per package ecosystem: SemVer (crates.io, npm), Go module versions, PEP 440 (PyPI),
//! dpkg (Debian, Ubuntu) and apk (Alpine). Every comparator parses both sides fully first, so malformed input
//! is a [`VersionError`] and never a panic; numbers of any length compare as digit strings (no overflow).

mod apk;
mod dpkg;
mod pep440;
mod semver;

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest version string any comparator accepts; real versions are far shorter, and the cap keeps
/// hostile input from costing more than a bounded amount of work.
pub const MAX_VERSION_LEN: usize = 256;

/// A package ecosystem, i.e. a naming scope plus a version ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Ecosystem {
    /// crates.io (SemVer 2.0.0).
    CratesIo,
    /// npm registry (SemVer 2.0.0, a leading `v` or `=` tolerated).
    Npm,
    /// Go modules (SemVer with a required-or-optional `v`, `+incompatible`, pseudo-versions).
    Go,
    /// PyPI (PEP 440).
    PyPI,
    /// Debian packages (dpkg ordering).
    Debian,
    /// Ubuntu packages (dpkg ordering).
    Ubuntu,
    /// Alpine packages (apk ordering).
    Alpine,
}

impl Ecosystem {
    /// All ecosystems, in a fixed order.
    pub const ALL: [Ecosystem; 7] = [
        Ecosystem::CratesIo,
        Ecosystem::Npm,
        Ecosystem::Go,
        Ecosystem::PyPI,
        Ecosystem::Debian,
        Ecosystem::Ubuntu,
        Ecosystem::Alpine,
    ];

    /// The OSV name of the ecosystem (`crates.io`, `npm`, `Go`, `PyPI`, `Debian`, `Ubuntu`, `Alpine`).
    pub fn osv_name(self) -> &'static str {
        match self {
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "Go",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Debian => "Debian",
            Ecosystem::Ubuntu => "Ubuntu",
            Ecosystem::Alpine => "Alpine",
        }
    }

    /// Parses an OSV `affected[].package.ecosystem` value into the ecosystem and its release as
    /// [`Distro::release`](crate::Distro::release) spells it for a rootfs: `Alpine:v3.16` gives
    /// `(Alpine, "v3.16")`, `Debian:12` gives `(Debian, "12")`, `crates.io` gives `(CratesIo, "")`.
    /// Ubuntu's data marks long-term releases with a `:LTS` suffix that `os-release` does not carry, so
    /// `Ubuntu:22.04:LTS` gives `(Ubuntu, "22.04")`, like `Ubuntu:23.10` gives `"23.10"`. Ubuntu Pro
    /// streams keep their prefix (`Ubuntu:Pro:18.04:LTS` gives `"Pro:18.04"`, `Ubuntu:Pro:FIPS:20.04:LTS`
    /// gives `"Pro:FIPS:20.04"`): their fixes are ESM packages, so they never match a plain release.
    /// `None` when the ecosystem is not one this crate knows.
    pub fn from_osv(value: &str) -> Option<(Ecosystem, &str)> {
        let (name, release) = value.split_once(':').unwrap_or((value, ""));
        let eco = Ecosystem::ALL.into_iter().find(|e| e.osv_name() == name)?;
        let release = match eco {
            Ecosystem::Ubuntu => release.strip_suffix(":LTS").unwrap_or(release),
            _ => release,
        };
        Some((eco, release))
    }

    /// Checks that `version` is a valid version in this ecosystem.
    pub fn parse_check(self, version: &str) -> Result<(), VersionError> {
        compare(self, version, version).map(|_| ())
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.osv_name())
    }
}

/// Why a version string could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The version string is empty (after trimming).
    #[error("{ecosystem} version is empty")]
    Empty {
        /// Ecosystem whose rules were applied.
        ecosystem: Ecosystem,
    },
    /// The version string is longer than [`MAX_VERSION_LEN`].
    #[error("{ecosystem} version is {len} bytes long, more than the {MAX_VERSION_LEN} allowed")]
    TooLong {
        /// Ecosystem whose rules were applied.
        ecosystem: Ecosystem,
        /// Length of the rejected input.
        len: usize,
    },
    /// The version string does not follow the ecosystem's grammar.
    #[error("invalid {ecosystem} version {version:?}: {reason}")]
    Invalid {
        /// Ecosystem whose rules were applied.
        ecosystem: Ecosystem,
        /// The rejected input (at most 64 characters of it).
        version: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl VersionError {
    pub(crate) fn invalid(ecosystem: Ecosystem, version: &str, reason: &'static str) -> Self {
        VersionError::Invalid { ecosystem, version: version.chars().take(64).collect(), reason }
    }
}

/// Compares two versions under the ordering of `ecosystem`.
///
/// Both versions are validated; equal precedence gives `Ordering::Equal` even when the strings differ
/// (SemVer build metadata, PEP 440 normalisation such as `1.0RC1` and `1.0rc1`, dpkg `1.0` and `1.0-0`).
pub fn compare(ecosystem: Ecosystem, a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (a, b) = (a.trim(), b.trim());
    for v in [a, b] {
        if v.is_empty() {
            return Err(VersionError::Empty { ecosystem });
        }
        if v.len() > MAX_VERSION_LEN {
            return Err(VersionError::TooLong { ecosystem, len: v.len() });
        }
    }
    match ecosystem {
        Ecosystem::CratesIo => semver::compare(semver::Flavor::Cargo, a, b),
        Ecosystem::Npm => semver::compare(semver::Flavor::Npm, a, b),
        Ecosystem::Go => semver::compare(semver::Flavor::Go, a, b),
        Ecosystem::PyPI => pep440::compare(a, b),
        Ecosystem::Debian | Ecosystem::Ubuntu => dpkg::compare(ecosystem, a, b),
        Ecosystem::Alpine => apk::compare(a, b),
    }
}

/// Compares two strings of ASCII digits as unbounded non-negative integers.
pub(crate) fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// An unbounded non-negative integer kept as its digits, ordered numerically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digits(String);

impl Digits {
    pub(crate) fn new(s: &str) -> Self {
        let t = s.trim_start_matches('0');
        Digits(t.to_owned())
    }
    pub(crate) fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
}

impl Ord for Digits {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digits(&self.0, &other.0)
    }
}

impl PartialOrd for Digits {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_compare_without_overflow() {
        assert_eq!(cmp_digits("0010", "9"), Ordering::Greater);
        assert_eq!(cmp_digits("99999999999999999999999999", "100000000000000000000000000"), Ordering::Less);
        assert_eq!(cmp_digits("000", ""), Ordering::Equal);
    }

    #[test]
    fn ecosystem_from_osv() {
        assert_eq!(Ecosystem::from_osv("crates.io"), Some((Ecosystem::CratesIo, "")));
        assert_eq!(Ecosystem::from_osv("Alpine:v3.16"), Some((Ecosystem::Alpine, "v3.16")));
        assert_eq!(Ecosystem::from_osv("Debian:11"), Some((Ecosystem::Debian, "11")));
        assert_eq!(Ecosystem::from_osv("Debian"), Some((Ecosystem::Debian, "")));
        assert_eq!(Ecosystem::from_osv("Ubuntu:22.04:LTS"), Some((Ecosystem::Ubuntu, "22.04")));
        assert_eq!(Ecosystem::from_osv("Ubuntu:23.10"), Some((Ecosystem::Ubuntu, "23.10")));
        assert_eq!(Ecosystem::from_osv("Ubuntu:Pro:18.04:LTS"), Some((Ecosystem::Ubuntu, "Pro:18.04")));
        assert_eq!(
            Ecosystem::from_osv("Ubuntu:Pro:FIPS-updates:20.04:LTS"),
            Some((Ecosystem::Ubuntu, "Pro:FIPS-updates:20.04"))
        );
        // Only Ubuntu has the suffix; elsewhere the release is kept verbatim.
        assert_eq!(Ecosystem::from_osv("Debian:12:LTS"), Some((Ecosystem::Debian, "12:LTS")));
        assert_eq!(Ecosystem::from_osv("Maven"), None);
    }

    #[test]
    fn empty_and_too_long_are_errors() {
        assert_eq!(compare(Ecosystem::PyPI, " ", "1"), Err(VersionError::Empty { ecosystem: Ecosystem::PyPI }));
        let long = "1".repeat(MAX_VERSION_LEN + 1);
        for eco in Ecosystem::ALL {
            assert_eq!(compare(eco, &long, "1.0.0"), Err(VersionError::TooLong { ecosystem: eco, len: 257 }));
        }
    }

    #[test]
    fn huge_numbers_compare_in_every_ecosystem() {
        let big = "123456789012345678901234567890";
        let cases = [
            (Ecosystem::CratesIo, format!("{big}.0.0"), "1.0.0".to_owned()),
            (Ecosystem::Npm, format!("1.{big}.0"), "1.2.0".to_owned()),
            (Ecosystem::Go, format!("v1.0.{big}"), "v1.0.1".to_owned()),
            (Ecosystem::PyPI, format!("{big}!1.0"), "99!1.0".to_owned()),
            (Ecosystem::Debian, format!("1.{big}"), "1.2".to_owned()),
            (Ecosystem::Alpine, format!("1.{big}-r0"), "1.2-r0".to_owned()),
        ];
        for (eco, a, b) in cases {
            assert_eq!(compare(eco, &a, &b), Ok(Ordering::Greater), "{eco}");
        }
    }
}
