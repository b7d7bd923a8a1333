//! Alpine secdb reader (alpine-secdb `v3.x/{main,community}.yaml`): for each package, `secfixes` maps the
//! first fixed package version to the CVE ids it fixes. Each (CVE, package, release) becomes one advisory
//! affecting versions below the fix; a fix version of `0` means the release was never affected, so it is kept
//! out.

use serde::Deserialize;

use crate::advisory::{Advisory, Affected, Event, Rule};
use crate::cvss::Severity;
use crate::version::Ecosystem;
use crate::ParseError;

#[derive(Deserialize)]
struct SecDb {
    distroversion: String,
    #[serde(default)]
    packages: Vec<PkgEntry>,
}

#[derive(Deserialize)]
struct PkgEntry {
    pkg: Pkg,
}

#[derive(Deserialize)]
struct Pkg {
    name: String,
    #[serde(default)]
    secfixes: Option<serde_yaml_ng::Mapping>,
}

fn scalar_text(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a YAML document looks like a secdb file rather than an OSV advisory.
pub(crate) fn looks_like_secdb(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("distroversion:")) && text.lines().any(|l| l.starts_with("packages:"))
}

/// A secfixes entry left out because its version is not a valid apk version (the secdb has typos such as
/// `4.8.0.-r1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEntry {
    /// Package name.
    pub package: String,
    /// The rejected fix version.
    pub version: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Parses one secdb YAML file into advisories, plus the entries whose fix version could not be parsed.
pub fn parse_secdb(text: &str) -> Result<(Vec<Advisory>, Vec<InvalidEntry>), ParseError> {
    let db: SecDb = serde_yaml_ng::from_str(text).map_err(|e| ParseError::Yaml(e.to_string()))?;
    let release = db.distroversion.trim().to_owned();
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    for entry in db.packages {
        let Some(fixes) = entry.pkg.secfixes else { continue };
        for (version, ids) in fixes {
            let version = scalar_text(&version).ok_or(ParseError::Invalid("secfixes key is not a version"))?;
            if version.trim() == "0" {
                continue;
            }
            if let Err(e) = Ecosystem::Alpine.parse_check(&version) {
                invalid.push(InvalidEntry { package: entry.pkg.name.clone(), version, reason: e.to_string() });
                continue;
            }
            let ids: Vec<String> = match ids {
                serde_yaml_ng::Value::Sequence(items) => items.iter().filter_map(scalar_text).collect(),
                serde_yaml_ng::Value::Null => Vec::new(),
                _ => return Err(ParseError::Invalid("secfixes value is not a list")),
            };
            // Entries are usually one id, sometimes "CVE-A CVE-B" or an id followed by a note.
            for id in ids.iter().flat_map(|s| s.split_whitespace()) {
                let id = id.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
                if !id.contains('-') || !id.starts_with(|c: char| c.is_ascii_uppercase()) {
                    continue;
                }
                out.push(Advisory {
                    id: id.to_owned(),
                    aliases: Vec::new(),
                    summary: format!("{id} fixed in {} {version} (Alpine {release})", entry.pkg.name),
                    severity: Severity::Unknown,
                    cvss_score: None,
                    informational: None,
                    withdrawn: false,
                    affected: vec![Affected {
                        ecosystem: Ecosystem::Alpine,
                        release: release.clone(),
                        package: entry.pkg.name.clone(),
                        rule: Rule::Osv {
                            ranges: vec![vec![Event::Introduced("0".into()), Event::Fixed(version.clone())]],
                            versions: Vec::new(),
                        },
                    }],
                });
            }
        }
    }
    Ok((out, invalid))
}
