//! The normalised advisory model every reader produces and the database stores, and the matching rules:
//! OSV `ranges`/`versions` (events sorted by the ecosystem's ordering, introduced "0" below everything) and
//! RustSec's Cargo requirements (a version is affected unless a `patched` or `unaffected` requirement matches).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::cvss::Severity;
use crate::version::{compare, Ecosystem, VersionError};

/// One advisory as read from a source, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Advisory {
    /// Primary id (`RUSTSEC-…`, `GO-…`, `PYSEC-…`, `GHSA-…`, `CVE-…`).
    pub id: String,
    /// Other ids of the same vulnerability.
    pub aliases: Vec<String>,
    /// One-line summary (the title, or the first line of the details).
    pub summary: String,
    /// Severity from a CVSS v3 vector or the database's own rating.
    pub severity: Severity,
    /// CVSS v3 base score when a vector was given.
    pub cvss_score: Option<f32>,
    /// RustSec `informational` kind (`unmaintained`, `unsound`, `notice`), if any.
    pub informational: Option<String>,
    /// The advisory was withdrawn and must not be reported.
    pub withdrawn: bool,
    /// Affected packages.
    pub affected: Vec<Affected>,
}

/// One affected package of an advisory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Affected {
    /// Ecosystem of the package.
    pub ecosystem: Ecosystem,
    /// Distribution release (`v3.11` for `Alpine:v3.11`), empty when the ecosystem has none.
    pub release: String,
    /// Package name as published in the advisory.
    pub package: String,
    /// Which versions are affected.
    pub rule: Rule,
}

/// Which versions of a package an advisory affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// OSV: affected if listed in `versions` or inside any of the `ranges` (each a list of events).
    Osv {
        /// SEMVER and ECOSYSTEM ranges (GIT ranges are not kept: they name commits, not versions).
        ranges: Vec<Vec<Event>>,
        /// Explicitly listed affected versions.
        versions: Vec<String>,
    },
    /// RustSec: affected unless a `patched` or `unaffected` Cargo requirement matches.
    Cargo {
        /// Requirements satisfied by fixed versions, e.g. `>= 0.9.1`.
        patched: Vec<String>,
        /// Requirements satisfied by versions that never had the flaw.
        unaffected: Vec<String>,
    },
}

/// An OSV range event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Versions from here on are affected (`"0"` means from the first version).
    Introduced(String),
    /// Versions from here on are not affected.
    Fixed(String),
    /// Versions after this one are not affected.
    LastAffected(String),
    /// Upper bound of the range, exclusive.
    Limit(String),
}

impl Event {
    fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

/// Why an advisory's rule could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A version (queried or in the advisory) is not valid in the ecosystem.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// A RustSec requirement is not valid Cargo syntax.
    #[error("invalid Cargo version requirement {req:?}: {reason}")]
    Requirement {
        /// The requirement text (at most 64 characters).
        req: String,
        /// The parser's message.
        reason: String,
    },
}

fn is_zero(v: &str) -> bool {
    v.trim() == "0"
}

impl Rule {
    /// Whether `version` is affected, under `ecosystem`'s ordering.
    pub fn affects(&self, ecosystem: Ecosystem, version: &str) -> Result<bool, RuleError> {
        match self {
            Rule::Osv { ranges, versions } => {
                for listed in versions {
                    if listed == version || compare(ecosystem, listed, version).ok() == Some(Ordering::Equal) {
                        return Ok(true);
                    }
                }
                for events in ranges {
                    if range_affects(ecosystem, events, version)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Rule::Cargo { patched, unaffected } => {
                let v = semver::Version::parse(version.trim()).map_err(|_| {
                    RuleError::Version(VersionError::invalid(ecosystem, version, "not a SemVer version"))
                })?;
                for req in patched.iter().chain(unaffected) {
                    if parse_req(req)?.matches(&v) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Versions (or requirements) that fix the flaw, for display.
    pub fn fixed(&self) -> Vec<String> {
        match self {
            Rule::Osv { ranges, .. } => ranges
                .iter()
                .flatten()
                .filter_map(|e| match e {
                    Event::Fixed(v) => Some(v.clone()),
                    _ => None,
                })
                .collect(),
            Rule::Cargo { patched, .. } => patched.clone(),
        }
    }

    /// Checks every version and requirement of the rule against `ecosystem`, returning the first problem.
    pub fn validate(&self, ecosystem: Ecosystem) -> Result<(), RuleError> {
        match self {
            Rule::Osv { ranges, .. } => {
                for e in ranges.iter().flatten() {
                    if !(matches!(e, Event::Introduced(_)) && is_zero(e.version())) {
                        ecosystem.parse_check(e.version())?;
                    }
                }
                Ok(())
            }
            Rule::Cargo { patched, unaffected } => {
                for req in patched.iter().chain(unaffected) {
                    parse_req(req)?;
                }
                Ok(())
            }
        }
    }
}

impl Rule {
    /// Drops OSV ranges holding a version the ecosystem cannot parse (legacy non-PEP 440 versions in PyPA
    /// data, for instance), keeping the other ranges and the `versions` list; returns the problems found.
    /// Cargo rules are all-or-nothing: a bad requirement is returned and the rule left as is.
    pub(crate) fn retain_valid(&mut self, ecosystem: Ecosystem) -> Vec<RuleError> {
        let mut problems = Vec::new();
        match self {
            Rule::Osv { ranges, .. } => ranges.retain(|events| {
                let one = Rule::Osv { ranges: vec![events.clone()], versions: vec![] };
                match one.validate(ecosystem) {
                    Ok(()) => true,
                    Err(e) => {
                        problems.push(e);
                        false
                    }
                }
            }),
            Rule::Cargo { .. } => problems.extend(self.validate(ecosystem).err()),
        }
        problems
    }

    /// Whether the rule can match anything at all.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Rule::Osv { ranges, versions } if ranges.is_empty() && versions.is_empty())
    }
}

pub(crate) fn parse_req(req: &str) -> Result<semver::VersionReq, RuleError> {
    semver::VersionReq::parse(req)
        .map_err(|e| RuleError::Requirement { req: req.chars().take(64).collect(), reason: e.to_string() })
}

/// Compares two event versions; introduced "0" sorts below everything.
fn event_cmp(eco: Ecosystem, a: &Event, b: &Event) -> Result<Ordering, VersionError> {
    let za = matches!(a, Event::Introduced(_)) && is_zero(a.version());
    let zb = matches!(b, Event::Introduced(_)) && is_zero(b.version());
    match (za, zb) {
        (true, true) => Ok(Ordering::Equal),
        (true, false) => Ok(Ordering::Less),
        (false, true) => Ok(Ordering::Greater),
        (false, false) => compare(eco, a.version(), b.version()),
    }
}

/// OSV's range evaluation (ossf osv-schema, "Evaluation"): walk the events in version order; an introduced
/// at or below the version opens the range, a fixed at or below / last_affected below closes it. A limit
/// is an exclusive upper bound on the whole range.
fn range_affects(eco: Ecosystem, events: &[Event], version: &str) -> Result<bool, RuleError> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    // Validate first so the sort comparator cannot meet an error half-way.
    for e in &sorted {
        if !(matches!(e, Event::Introduced(_)) && is_zero(e.version())) {
            eco.parse_check(e.version())?;
        }
    }
    sorted.sort_by(|a, b| event_cmp(eco, a, b).unwrap_or(Ordering::Equal));
    let mut affected = false;
    for e in sorted {
        match e {
            Event::Introduced(v) => {
                if is_zero(v) || compare(eco, version, v)? != Ordering::Less {
                    affected = true;
                }
            }
            Event::Fixed(v) => {
                if compare(eco, version, v)? != Ordering::Less {
                    affected = false;
                }
            }
            Event::LastAffected(v) => {
                if compare(eco, version, v)? == Ordering::Greater {
                    affected = false;
                }
            }
            Event::Limit(v) => {
                if compare(eco, version, v)? != Ordering::Less {
                    return Ok(false);
                }
            }
        }
    }
    Ok(affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn osv(events: Vec<Event>) -> Rule {
        Rule::Osv { ranges: vec![events], versions: vec![] }
    }

    #[test]
    fn osv_range_events() {
        use Event::*;
        let r = osv(vec![Introduced("0".into()), Fixed("1.2.0".into())]);
        assert!(r.affects(Ecosystem::CratesIo, "1.1.9").unwrap());
        assert!(!r.affects(Ecosystem::CratesIo, "1.2.0").unwrap());
        assert!(r.affects(Ecosystem::CratesIo, "1.2.0-rc.1").unwrap());

        // Several intervals, events given out of order (as in PYSEC-2018-104).
        let r = osv(vec![
            Introduced("3.9.0".into()),
            Fixed("3.19.1".into()),
            Introduced("0".into()),
            Fixed("3.8.1".into()),
        ]);
        let got: Vec<bool> = ["3.8.0", "3.8.1", "3.8.5", "3.9.0", "3.19.0", "3.19.1", "4.0"]
            .iter()
            .map(|v| r.affects(Ecosystem::PyPI, v).unwrap())
            .collect();
        assert_eq!(got, [true, false, false, true, true, false, false]);

        let r = osv(vec![Introduced("1.0.0".into()), LastAffected("1.4.2".into())]);
        assert!(!r.affects(Ecosystem::Go, "v0.9.0").unwrap());
        assert!(r.affects(Ecosystem::Go, "v1.4.2").unwrap());
        assert!(!r.affects(Ecosystem::Go, "v1.4.3").unwrap());

        let r = osv(vec![Introduced("0".into()), Limit("2.0.0".into())]);
        assert!(r.affects(Ecosystem::Npm, "1.9.9").unwrap());
        assert!(!r.affects(Ecosystem::Npm, "2.0.0").unwrap());

        let r = Rule::Osv { ranges: vec![], versions: vec!["1.0".into(), "1.1".into()] };
        assert!(r.affects(Ecosystem::PyPI, "1.0.0").unwrap(), "listed versions compare by PEP 440 equality");
        assert!(!r.affects(Ecosystem::PyPI, "1.2").unwrap());

        let r = osv(vec![Introduced("0".into()), Fixed("not a version".into())]);
        assert!(r.affects(Ecosystem::CratesIo, "1.0.0").is_err());
        assert!(r.validate(Ecosystem::CratesIo).is_err());
    }

    #[test]
    fn cargo_requirements() {
        let r = Rule::Cargo { patched: vec![">= 0.9.1".into()], unaffected: vec!["< 0.2.0".into()] };
        assert!(r.affects(Ecosystem::CratesIo, "0.9.0").unwrap());
        assert!(!r.affects(Ecosystem::CratesIo, "0.9.1").unwrap());
        assert!(!r.affects(Ecosystem::CratesIo, "0.1.5").unwrap());
        let r = Rule::Cargo { patched: vec!["^1.2.3".into(), ">= 2.0.1".into()], unaffected: vec![] };
        let got: Vec<bool> = ["1.2.2", "1.2.3", "1.9.0", "2.0.0", "2.0.1"]
            .iter()
            .map(|v| r.affects(Ecosystem::CratesIo, v).unwrap())
            .collect();
        assert_eq!(got, [true, false, false, true, false]);
        let bad = Rule::Cargo { patched: vec![">= 1.0 <<".into()], unaffected: vec![] };
        assert!(matches!(bad.validate(Ecosystem::CratesIo), Err(RuleError::Requirement { .. })));
        assert!(r.affects(Ecosystem::CratesIo, "1.2").is_err());
    }
}
