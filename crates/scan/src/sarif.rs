//! SARIF 2.1.0 output: one run whose driver lists a rule per advisory id and per Palisade rule that has
//! results, each with `properties.security-severity` (the CVSS score, or a score standing for the
//! severity) as code-scanning UIs expect. Vulnerabilities are located in the lockfile or package database
//! that declared the package, at the package's line when the file can be read; secrets carry their
//! fingerprint in `partialFingerprints`.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};

use crate::cvss::Severity;
use crate::report::{joined_path, Report, TargetKind};
use crate::rules::rule;

/// The JSON schema URI written into `$schema`.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::None | Severity::Unknown => "note",
    }
}

/// GitHub's bands: ≥ 9.0 critical, 7.0–8.9 high, 4.0–6.9 medium, 0.1–3.9 low.
fn severity_score(s: Severity) -> Option<&'static str> {
    match s {
        Severity::Critical => Some("9.5"),
        Severity::High => Some("8.0"),
        Severity::Medium => Some("5.5"),
        Severity::Low => Some("2.0"),
        Severity::None => Some("0.0"),
        Severity::Unknown => None,
    }
}

/// A relative or `file://` URI reference for a path, percent-encoding what RFC 3986 does not allow.
pub(crate) fn path_uri(path: &str) -> String {
    let p = path.trim_start_matches("./");
    let mut out = String::with_capacity(p.len() + 8);
    if p.starts_with('/') {
        out.push_str("file://");
    }
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The 1-based line declaring `name` at `version` in a lockfile's text: the first line naming the package
/// with the version on it or on one of the next five lines.
pub(crate) fn locate_package(text: &str, name: &str, version: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let named = |l: &str| {
        l.match_indices(name).any(|(i, _)| {
            let before = l.get(..i).and_then(|b| b.chars().last());
            let after = l.get(i + name.len()..).and_then(|a| a.chars().next());
            let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            boundary(before) && boundary(after)
        })
    };
    lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| (named(l) && lines.iter().skip(i).take(6).any(|n| n.contains(version))).then_some(i + 1))
}

const MAX_LOCATE_BYTES: u64 = 64 << 20;

fn read_text(path: &str) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut data = Vec::new();
    f.take(MAX_LOCATE_BYTES).read_to_end(&mut data).ok()?;
    String::from_utf8(data).ok()
}

fn location(uri: &str, line: usize) -> Value {
    json!({
        "physicalLocation": {
            "artifactLocation": { "uri": path_uri(uri) },
            "region": { "startLine": line.max(1) }
        }
    })
}

struct Rules {
    list: Vec<Value>,
    index: BTreeMap<String, usize>,
}

impl Rules {
    fn add(&mut self, id: &str, make: impl FnOnce() -> Value) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.list.len();
        self.list.push(make());
        self.index.insert(id.to_owned(), i);
        i
    }
}

fn catalog_rule(id: &str, kind: &str) -> Value {
    let r = rule(id);
    let sev = r.map(|r| r.severity).unwrap_or_default();
    let mut props = json!({ "tags": ["security", kind] });
    if let Some(s) = severity_score(sev) {
        props["security-severity"] = json!(s);
    }
    json!({
        "id": id,
        "name": id.replace('-', ""),
        "shortDescription": { "text": r.map(|r| r.title).unwrap_or(id) },
        "fullDescription": { "text": r.map(|r| r.why).unwrap_or(id) },
        "help": {
            "text": r.map(|r| r.fix).unwrap_or_default(),
            "markdown": format!("**{}**\n\n{}\n\nFix: {}", r.map(|r| r.title).unwrap_or(id), r.map(|r| r.why).unwrap_or_default(), r.map(|r| r.fix).unwrap_or_default()),
        },
        "defaultConfiguration": { "level": level(sev) },
        "properties": props,
    })
}

impl Report {
    /// The report as a SARIF 2.1.0 log.
    pub fn to_sarif(&self) -> String {
        let mut rules = Rules { list: Vec::new(), index: BTreeMap::new() };
        let mut results = Vec::new();
        let mut texts: BTreeMap<String, Option<String>> = BTreeMap::new();
        for t in &self.targets {
            for f in &t.findings {
                let idx = rules.add(&f.id, || {
                    let summary = if f.summary.is_empty() { f.id.clone() } else { f.summary.clone() };
                    let score = f.cvss_score.map(|s| format!("{s:.1}")).or_else(|| severity_score(f.severity).map(str::to_owned));
                    let mut props = json!({ "tags": ["security", "vulnerability", f.ecosystem] });
                    if let Some(s) = score {
                        props["security-severity"] = json!(s);
                    }
                    let aliases = if f.aliases.is_empty() { String::new() } else { format!(" Aliases: {}.", f.aliases.join(", ")) };
                    json!({
                        "id": f.id,
                        "shortDescription": { "text": summary },
                        "fullDescription": { "text": format!("{summary}.{aliases}") },
                        "help": {
                            "text": format!("Upgrade the affected package to a fixed version. {}{aliases}", f.id),
                            "markdown": format!("**{}**: {summary}\n\nUpgrade the affected package to a fixed version.{aliases}", f.id),
                        },
                        "defaultConfiguration": { "level": level(f.severity) },
                        "properties": props,
                    })
                });
                // A package inside an image has no file on this machine; lockfiles and trees do.
                let uri = match t.kind {
                    TargetKind::Image => f.source_file.clone(),
                    _ => joined_path(&t.name, t.kind, &f.source_file),
                };
                let line = if t.kind == TargetKind::Image {
                    None
                } else {
                    texts
                        .entry(uri.clone())
                        .or_insert_with(|| read_text(&uri))
                        .as_deref()
                        .and_then(|text| locate_package(text, &f.package, &f.version))
                };
                let fixed = if f.fixed.is_empty() {
                    "no fixed version known".to_owned()
                } else {
                    format!("fixed: {}", f.fixed.join(", "))
                };
                let lvl = if f.informational.is_some() { "note" } else { level(f.severity) };
                let layer = f.layer.as_deref().map(|l| format!(" (layer {l})")).unwrap_or_default();
                results.push(json!({
                    "ruleId": f.id,
                    "ruleIndex": idx,
                    "level": lvl,
                    "message": { "text": format!("{} {} ({}) is affected by {}: {}; {fixed}{layer}", f.package, f.version, f.ecosystem, f.id, f.summary) },
                    "locations": [location(&uri, line.unwrap_or(1))],
                }));
            }
            for m in &t.misconfigurations {
                let idx = rules.add(&m.rule_id, || catalog_rule(&m.rule_id, "misconfiguration"));
                results.push(json!({
                    "ruleId": m.rule_id,
                    "ruleIndex": idx,
                    "level": level(m.severity),
                    "message": { "text": format!("{}: {}. Fix: {}", m.resource, m.message, m.fix) },
                    "locations": [location(&joined_path(&t.name, t.kind, &m.file), m.line)],
                }));
            }
            for s in &t.secrets {
                let idx = rules.add(&s.rule_id, || catalog_rule(&s.rule_id, "secret"));
                let uri = match t.kind {
                    TargetKind::Image => s.file.clone(),
                    _ => joined_path(&t.name, t.kind, &s.file),
                };
                let layer = s.layer.as_deref().map(|l| format!(" in layer {l}")).unwrap_or_default();
                results.push(json!({
                    "ruleId": s.rule_id,
                    "ruleIndex": idx,
                    "level": level(s.severity),
                    "message": { "text": format!("{} ({}){layer}", s.title, s.redacted) },
                    "locations": [location(&uri, s.line)],
                    "partialFingerprints": { "palisadeSecret/v1": s.fingerprint },
                }));
            }
        }
        let log = json!({
            "$schema": SARIF_SCHEMA,
            "version": "2.1.0",
            "runs": [{
                "tool": {
                    "driver": {
                        "name": "palisade",
                        "semanticVersion": env!("CARGO_PKG_VERSION"),
                        "rules": rules.list,
                    }
                },
                "results": results,
                "columnKind": "unicodeCodePoints",
            }]
        });
        serde_json::to_string_pretty(&log).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(path_uri("./deploy/a b.yaml"), "deploy/a%20b.yaml");
        assert_eq!(path_uri("/work/x/Cargo.lock"), "file:///work/x/Cargo.lock");
        assert_eq!(path_uri("a%b#c"), "a%25b%23c");
    }

    #[test]
    fn package_lines() {
        let lock = "[[package]]\nname = \"smallvec-x\"\nversion = \"0.6.9\"\n\n[[package]]\nname = \"smallvec\"\nversion = \"0.6.9\"\n";
        assert_eq!(locate_package(lock, "smallvec", "0.6.9"), Some(6));
        assert_eq!(locate_package(lock, "smallvec", "1.0.0"), None);
        assert_eq!(locate_package("requests==2.19.0\n", "requests", "2.19.0"), Some(1));
    }
}
