//! RustSec advisory-db reader: Markdown files whose front matter is a ```toml fence with `[advisory]` and
//! `[versions]`; the title is the first `# ` heading after it. Advisories of the `rust/` collection (the
//! toolchain itself, not crates.io packages) are skipped by the loader, as cargo-audit does.

use serde::Deserialize;

use crate::advisory::{parse_req, Advisory, Affected, Rule};
use crate::cvss::{base_score_v3, Severity};
use crate::version::Ecosystem;
use crate::ParseError;

#[derive(Deserialize)]
struct Front {
    advisory: Meta,
    #[serde(default)]
    versions: Option<Versions>,
}

#[derive(Deserialize)]
struct Meta {
    id: String,
    package: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    cvss: Option<String>,
    #[serde(default)]
    informational: Option<String>,
    #[serde(default)]
    withdrawn: Option<toml::Value>,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize, Default)]
struct Versions {
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
}

/// Splits a RustSec Markdown file into its TOML front matter and the Markdown body.
fn split(text: &str) -> Result<(&str, &str), ParseError> {
    let start = text.find("```toml").ok_or(ParseError::NotAdvisory("no ```toml front matter"))?;
    let rest = text.get(start + "```toml".len()..).unwrap_or("");
    let end = rest.find("\n```").ok_or(ParseError::Invalid("unterminated ```toml fence"))?;
    Ok((rest.get(..end).unwrap_or(""), rest.get(end + 4..).unwrap_or("")))
}

/// Parses one RustSec advisory (Markdown with TOML front matter).
pub fn parse(text: &str) -> Result<Advisory, ParseError> {
    let (front, body) = split(text)?;
    let front: Front = toml::from_str(front).map_err(|e| ParseError::Toml(e.to_string()))?;
    let meta = front.advisory;
    if meta.id.trim().is_empty() {
        return Err(ParseError::MissingField("advisory.id"));
    }
    if meta.package.trim().is_empty() {
        return Err(ParseError::MissingField("advisory.package"));
    }
    let versions = front.versions.unwrap_or_default();
    for req in versions.patched.iter().chain(&versions.unaffected) {
        parse_req(req).map_err(|e| ParseError::Rule(e.to_string()))?;
    }
    let title = meta
        .title
        .or_else(|| body.lines().map(str::trim).find_map(|l| l.strip_prefix("# ")).map(|t| t.trim().to_owned()));
    let score = meta.cvss.as_deref().and_then(base_score_v3);
    Ok(Advisory {
        summary: crate::osv::summary_of(title, Some(body)),
        id: meta.id,
        aliases: meta.aliases,
        severity: score.map(Severity::from_score).unwrap_or_default(),
        cvss_score: score,
        informational: meta.informational,
        withdrawn: meta.withdrawn.is_some(),
        affected: vec![Affected {
            ecosystem: Ecosystem::CratesIo,
            release: String::new(),
            package: meta.package,
            rule: Rule::Cargo { patched: versions.patched, unaffected: versions.unaffected },
        }],
    })
}
