//! OSV reader (ossf osv-schema 1.x) for JSON and YAML documents. Affected entries of unknown ecosystems and
//! GIT ranges are dropped (they cannot be matched against package versions); an advisory with no entry left
//! is reported as skipped by the caller, not as a failure.

use serde::Deserialize;

use crate::advisory::{Advisory, Affected, Event, Rule};
use crate::cvss::{base_score_v3, Severity};
use crate::version::Ecosystem;
use crate::ParseError;

/// A scalar that YAML may have typed as a number (`introduced: 0`); kept as its text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl From<Scalar> for String {
    fn from(s: Scalar) -> String {
        match s {
            Scalar::Str(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::UInt(u) => u.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct Doc {
    id: String,
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    withdrawn: Option<Scalar>,
    #[serde(default)]
    severity: Option<Vec<SeverityEntry>>,
    #[serde(default)]
    affected: Option<Vec<AffectedEntry>>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SeverityEntry {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Deserialize)]
struct AffectedEntry {
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    ranges: Option<Vec<Range>>,
    #[serde(default)]
    versions: Option<Vec<Scalar>>,
    #[serde(default)]
    severity: Option<Vec<SeverityEntry>>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
    #[serde(default)]
    ecosystem_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Package {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<EventEntry>,
}

#[derive(Deserialize)]
struct EventEntry {
    #[serde(default)]
    introduced: Option<Scalar>,
    #[serde(default)]
    fixed: Option<Scalar>,
    #[serde(default)]
    last_affected: Option<Scalar>,
    #[serde(default)]
    limit: Option<Scalar>,
}

/// Parses one OSV advisory from JSON.
pub fn parse_json(bytes: &[u8]) -> Result<Advisory, ParseError> {
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    convert(doc)
}

/// Parses one OSV advisory from YAML (the PyPA advisory-database layout).
pub fn parse_yaml(text: &str) -> Result<Advisory, ParseError> {
    let doc: Doc = serde_yaml_ng::from_str(text).map_err(|e| ParseError::Yaml(e.to_string()))?;
    convert(doc)
}

/// First line of the details, cut at 200 characters, when there is no summary.
pub(crate) fn summary_of(summary: Option<String>, details: Option<&str>) -> String {
    match summary.filter(|s| !s.trim().is_empty()) {
        Some(s) => s.trim().to_owned(),
        None => details
            .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    }
}

fn label_of(v: Option<&serde_json::Value>) -> Option<Severity> {
    v?.get("severity")?.as_str().and_then(Severity::from_label)
}

fn convert(doc: Doc) -> Result<Advisory, ParseError> {
    if doc.id.trim().is_empty() {
        return Err(ParseError::MissingField("id"));
    }
    let mut score = None;
    let mut vectors: Vec<&SeverityEntry> = doc.severity.iter().flatten().collect();
    let affected_in = doc.affected.unwrap_or_default();
    vectors.extend(affected_in.iter().flat_map(|a| a.severity.iter().flatten()));
    for s in vectors {
        if s.kind == "CVSS_V3" {
            if let Some(v) = base_score_v3(&s.score) {
                score = Some(score.map_or(v, |old: f32| old.max(v)));
            }
        }
    }
    let mut severity = score.map(Severity::from_score).unwrap_or_default();
    if severity == Severity::Unknown {
        severity = label_of(doc.database_specific.as_ref())
            .or_else(|| {
                affected_in.iter().find_map(|a| {
                    label_of(a.database_specific.as_ref()).or_else(|| label_of(a.ecosystem_specific.as_ref()))
                })
            })
            .unwrap_or_default();
    }
    let mut affected = Vec::new();
    for entry in affected_in {
        let Some(pkg) = entry.package else { continue };
        let Some((ecosystem, release)) = Ecosystem::from_osv(&pkg.ecosystem) else { continue };
        let mut ranges = Vec::new();
        for range in entry.ranges.unwrap_or_default() {
            if range.kind != "SEMVER" && range.kind != "ECOSYSTEM" {
                continue;
            }
            let mut events = Vec::new();
            for e in range.events {
                let event = match (e.introduced, e.fixed, e.last_affected, e.limit) {
                    (Some(v), None, None, None) => Event::Introduced(v.into()),
                    (None, Some(v), None, None) => Event::Fixed(v.into()),
                    (None, None, Some(v), None) => Event::LastAffected(v.into()),
                    (None, None, None, Some(v)) => Event::Limit(v.into()),
                    _ => {
                        return Err(ParseError::Invalid(
                            "a range event must have exactly one of introduced, fixed, last_affected, limit",
                        ))
                    }
                };
                events.push(event);
            }
            if !events.is_empty() {
                ranges.push(events);
            }
        }
        let versions: Vec<String> = entry.versions.unwrap_or_default().into_iter().map(String::from).collect();
        if ranges.is_empty() && versions.is_empty() {
            continue;
        }
        affected.push(Affected {
            ecosystem,
            release: release.to_owned(),
            package: pkg.name,
            rule: Rule::Osv { ranges, versions },
        });
    }
    let informational =
        doc.database_specific.as_ref().and_then(|d| d.get("informational")).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(Advisory {
        summary: summary_of(doc.summary, doc.details.as_deref()),
        id: doc.id,
        aliases: doc.aliases.unwrap_or_default(),
        severity,
        cvss_score: score,
        informational,
        withdrawn: doc.withdrawn.is_some(),
        affected,
    })
}
