//! CycloneDX 1.5 JSON SBOM: every package of every target as a component identified by its package URL
//! (`pkg:cargo`, `pkg:npm`, `pkg:pypi`, `pkg:golang`, `pkg:deb/debian|ubuntu`, `pkg:apk/alpine`), which is
//! also its `bom-ref` (unique: duplicates across targets are merged), and every vulnerability finding
//! as a `vulnerabilities` entry whose `affects` point at those refs. Ignored findings are left out.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::cvss::Severity;
use crate::ignore::Date;
use crate::inventory::{Distro, Package};
use crate::report::{Report, TargetKind};
use crate::version::Ecosystem;

/// Percent-encodes a purl component: everything but unreserved characters (and `/` when `keep_slash`).
fn enc(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The package URL of a package (purl spec: type, namespace, name, version, qualifiers).
pub fn purl(ecosystem: Ecosystem, name: &str, version: &str, distro: Option<&Distro>) -> String {
    let v = enc(version, false);
    match ecosystem {
        Ecosystem::CratesIo => format!("pkg:cargo/{}@{v}", enc(name, false)),
        Ecosystem::Npm => match name.strip_prefix('@').and_then(|n| n.split_once('/')) {
            Some((scope, n)) => format!("pkg:npm/%40{}/{}@{v}", enc(scope, false), enc(n, false)),
            None => format!("pkg:npm/{}@{v}", enc(name, false)),
        },
        Ecosystem::PyPI => format!("pkg:pypi/{}@{v}", enc(&name.to_ascii_lowercase().replace('_', "-"), false)),
        Ecosystem::Go => format!("pkg:golang/{}@{v}", enc(name, true)),
        Ecosystem::Debian | Ecosystem::Ubuntu | Ecosystem::Alpine => {
            let (ty, ns) = match ecosystem {
                Ecosystem::Debian => ("deb", "debian"),
                Ecosystem::Ubuntu => ("deb", "ubuntu"),
                _ => ("apk", "alpine"),
            };
            let q = distro
                .filter(|d| !d.version_id.is_empty())
                .map(|d| {
                    if ecosystem == Ecosystem::Alpine {
                        format!("?distro={}", enc(&d.version_id, false))
                    } else {
                        format!("?distro={}-{}", enc(&d.id, false), enc(&d.version_id, false))
                    }
                })
                .unwrap_or_default();
            format!("pkg:{ty}/{ns}/{}@{v}{q}", enc(name, false))
        }
    }
}

fn ecosystem_of(osv_name: &str) -> Option<Ecosystem> {
    Ecosystem::ALL.into_iter().find(|e| e.osv_name() == osv_name)
}

fn cdx_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::None => "none",
        Severity::Unknown => "unknown",
    }
}

/// RFC 3339 UTC timestamp of now.
fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let date = Date::from_unix_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let s = secs % 86_400;
    format!("{date}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

fn component(p: &Package, purl: &str) -> Value {
    let mut props = vec![json!({ "name": "palisade:source_file", "value": p.source_file })];
    if let Some(l) = &p.layer {
        props.push(json!({ "name": "palisade:layer", "value": l }));
    }
    if let Some(src) = &p.source_name {
        props.push(json!({ "name": "palisade:source_package", "value": src }));
    }
    if let Some(src) = &p.non_registry_source {
        props.push(json!({ "name": "palisade:non_registry_source", "value": src }));
    }
    json!({
        "type": "library",
        "bom-ref": purl,
        "name": p.name,
        "version": p.version,
        "purl": purl,
        "properties": props,
    })
}

fn source_of(id: &str) -> Value {
    let (name, url) = if id.starts_with("RUSTSEC-") {
        ("RustSec", format!("https://rustsec.org/advisories/{id}.html"))
    } else if id.starts_with("GHSA-") {
        ("GitHub", format!("https://github.com/advisories/{id}"))
    } else if id.starts_with("CVE-") {
        ("NVD", format!("https://nvd.nist.gov/vuln/detail/{id}"))
    } else {
        ("OSV", format!("https://osv.dev/vulnerability/{id}"))
    };
    json!({ "name": name, "url": url })
}

impl Report {
    /// The report as a CycloneDX 1.5 JSON BOM with a fresh `urn:uuid` serial number.
    pub fn to_cyclonedx(&self) -> String {
        let mut components: BTreeMap<String, Value> = BTreeMap::new();
        // advisory id → (vulnerability object without affects, affected refs)
        let mut vulns: BTreeMap<String, (Value, Vec<(String, String)>)> = BTreeMap::new();
        for t in &self.targets {
            for p in &t.packages {
                let pu = purl(p.ecosystem, &p.name, &p.version, t.distro.as_ref());
                components.entry(pu.clone()).or_insert_with(|| component(p, &pu));
            }
            for f in &t.findings {
                let Some(eco) = ecosystem_of(&f.ecosystem) else { continue };
                let pu = purl(eco, &f.package, &f.version, t.distro.as_ref());
                let entry = vulns.entry(f.id.clone()).or_insert_with(|| {
                    let mut rating = json!({ "severity": cdx_severity(f.severity) });
                    if let Some(s) = f.cvss_score {
                        rating["score"] = json!(s);
                        rating["method"] = json!("CVSSv3");
                    }
                    let mut v = json!({
                        "bom-ref": format!("vuln:{}", f.id),
                        "id": f.id,
                        "source": source_of(&f.id),
                        "ratings": [rating],
                        "description": f.summary,
                    });
                    if !f.aliases.is_empty() {
                        v["references"] =
                            f.aliases.iter().map(|a| json!({ "id": a, "source": source_of(a) })).collect::<Value>();
                    }
                    if !f.fixed.is_empty() {
                        v["recommendation"] = json!(format!("Upgrade to a fixed version: {}", f.fixed.join(", ")));
                    }
                    if let Some(kind) = &f.informational {
                        v["properties"] = json!([{ "name": "palisade:informational", "value": kind }]);
                    }
                    (v, Vec::new())
                });
                if !entry.1.iter().any(|(r, _)| *r == pu) {
                    entry.1.push((pu, f.version.clone()));
                }
            }
        }
        let vulnerabilities: Vec<Value> = vulns
            .into_values()
            .map(|(mut v, affects)| {
                v["affects"] = affects
                    .into_iter()
                    .map(|(r, ver)| json!({ "ref": r, "versions": [{ "version": ver, "status": "affected" }] }))
                    .collect::<Value>();
                v
            })
            .collect();
        let (name, kind) = match self.targets.as_slice() {
            [one] => (one.name.clone(), one.kind),
            _ => (format!("{} targets", self.targets.len()), TargetKind::Filesystem),
        };
        let subject_type = match kind {
            TargetKind::Image => "container",
            TargetKind::Lockfile | TargetKind::Config => "file",
            TargetKind::Filesystem => "application",
        };
        let bom = json!({
            "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "serialNumber": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "version": 1,
            "metadata": {
                "timestamp": timestamp(),
                "tools": { "components": [{ "type": "application", "name": "palisade", "version": env!("CARGO_PKG_VERSION") }] },
                "component": { "type": subject_type, "bom-ref": "subject", "name": name },
            },
            "components": components.into_values().collect::<Vec<_>>(),
            "vulnerabilities": vulnerabilities,
        });
        serde_json::to_string_pretty(&bom).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls() {
        let deb = Distro { id: "debian".into(), version_id: "12".into() };
        let alp = Distro { id: "alpine".into(), version_id: "3.19.1".into() };
        assert_eq!(purl(Ecosystem::CratesIo, "serde", "1.0.0", None), "pkg:cargo/serde@1.0.0");
        assert_eq!(purl(Ecosystem::Npm, "@babel/core", "7.0.0", None), "pkg:npm/%40babel/core@7.0.0");
        assert_eq!(purl(Ecosystem::PyPI, "Django_X", "4.2.1+local", None), "pkg:pypi/django-x@4.2.1%2Blocal");
        assert_eq!(
            purl(Ecosystem::Go, "github.com/gin-gonic/gin", "v1.9.0", None),
            "pkg:golang/github.com/gin-gonic/gin@v1.9.0"
        );
        assert_eq!(
            purl(Ecosystem::Debian, "libc6", "2.36-9+deb12u4", Some(&deb)),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?distro=debian-12"
        );
        assert_eq!(purl(Ecosystem::Debian, "perl", "1:5.36", None), "pkg:deb/debian/perl@1%3A5.36");
        assert_eq!(
            purl(Ecosystem::Alpine, "musl", "1.2.4-r2", Some(&alp)),
            "pkg:apk/alpine/musl@1.2.4-r2?distro=3.19.1"
        );
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes().get(10) == Some(&b'T'));
    }
}
