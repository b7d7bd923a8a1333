//! Matching inventories against the database and the report model: one section per target with its
//! packages, vulnerability findings (severity first, then package, then id), misconfigurations and
//! secrets, rendered as a plain-text table (ANSI colour only when asked), JSON, SARIF or CycloneDX
//! (see `sarif.rs`, `cyclonedx.rs`); the ignore file and the `--fail-on` exit code apply to all kinds.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::content::ContentScan;
use crate::cvss::Severity;
use crate::db::Database;
use crate::ignore::{Date, ExpiredIgnore, IgnoreFile};
use crate::inventory::{Distro, Inventory, Package};
use crate::lint::Misconfiguration;
use crate::rules::rule;
use crate::secrets::SecretFinding;
use crate::version::Ecosystem;

/// What kind of thing a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A container image.
    Image,
    /// A directory tree.
    Filesystem,
    /// A single lockfile or package database.
    Lockfile,
    /// Config files (Dockerfiles, Kubernetes manifests) only.
    Config,
}

impl TargetKind {
    fn label(self) -> &'static str {
        match self {
            TargetKind::Image => "image",
            TargetKind::Filesystem => "filesystem",
            TargetKind::Lockfile => "lockfile",
            TargetKind::Config => "config",
        }
    }
}

/// One thing to scan, already inventoried.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Display name (the path given).
    pub name: String,
    /// Kind of target.
    pub kind: TargetKind,
    /// Its packages.
    pub inventory: Inventory,
    /// Misconfigurations and secrets found in its files, when they were searched.
    pub content: Option<ContentScan>,
}

impl Target {
    /// A target with packages only.
    pub fn new(name: impl Into<String>, kind: TargetKind, inventory: Inventory) -> Target {
        Target { name: name.into(), kind, inventory, content: None }
    }

    /// Adds the result of a content scan.
    pub fn with_content(mut self, content: ContentScan) -> Target {
        self.content = Some(content);
        self
    }
}

/// One vulnerable package occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReportFinding {
    /// Package name (binary package for OS packages).
    pub package: String,
    /// Installed or locked version.
    pub version: String,
    /// The package's ecosystem (OSV name).
    pub ecosystem: String,
    /// File the package was found in.
    pub source_file: String,
    /// Image layer digest, for images.
    pub layer: Option<String>,
    /// Advisory id (database-native first).
    pub id: String,
    /// Other ids of the same vulnerability.
    pub aliases: Vec<String>,
    /// Severity.
    pub severity: Severity,
    /// CVSS v3 base score when known.
    pub cvss_score: Option<f32>,
    /// Fixed versions or patched requirements.
    pub fixed: Vec<String>,
    /// One-line summary.
    pub summary: String,
    /// RustSec informational kind (`unmaintained`, `unsound`, …): a warning, not a vulnerability.
    pub informational: Option<String>,
}

/// Results for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TargetReport {
    /// Display name.
    pub name: String,
    /// Kind of target.
    pub kind: TargetKind,
    /// Distribution, when the target is a rootfs or an image.
    pub distro: Option<Distro>,
    /// Every package found.
    pub packages: Vec<Package>,
    /// Findings, most severe first.
    pub findings: Vec<ReportFinding>,
    /// Files skipped, lines not understood, versions that could not be matched.
    pub notes: Vec<String>,
    /// Whether packages were matched against a vulnerability database.
    #[serde(default)]
    pub vulnerabilities_checked: bool,
    /// Whether files were searched for misconfigurations and secrets.
    #[serde(default)]
    pub content_checked: bool,
    /// Files read by the content scan.
    #[serde(default)]
    pub files_scanned: usize,
    /// Config-lint findings, most severe first.
    #[serde(default)]
    pub misconfigurations: Vec<Misconfiguration>,
    /// Secrets, most severe first.
    #[serde(default)]
    pub secrets: Vec<SecretFinding>,
    /// Findings of any kind suppressed by the ignore file.
    #[serde(default)]
    pub suppressed: usize,
}

/// The result of [`scan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// One section per target, in the order given.
    pub targets: Vec<TargetReport>,
    /// Ignore-file entries past their expiry date (they no longer suppress anything).
    #[serde(default)]
    pub expired_ignores: Vec<ExpiredIgnore>,
}

/// Matches every package of every target against `db`, except packages from outside their ecosystem's
/// registry ([`Package::non_registry_source`]: a git or path dependency, a private registry's crate).
/// A package whose version is not valid in its ecosystem is noted on its target, not an error.
pub fn scan(targets: Vec<Target>, db: &Database) -> Report {
    build_report(targets, Some(db))
}

/// [`scan`] when `db` is given; without one, packages are listed but not matched (config and secret
/// scans need no database).
pub fn build_report(targets: Vec<Target>, db: Option<&Database>) -> Report {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let mut notes = t.inventory.notes;
        let mut findings = Vec::new();
        let distro = t.inventory.distro;
        let Some(db) = db else {
            out.push(target_report(t.name, t.kind, distro, t.inventory.packages, findings, notes, t.content, false));
            continue;
        };
        for p in t.inventory.packages.iter().filter(|p| p.non_registry_source.is_none()) {
            let release = match (p.ecosystem, &distro) {
                (Ecosystem::Alpine | Ecosystem::Debian | Ecosystem::Ubuntu, Some(d)) => d.release(),
                _ => None,
            };
            let (name, version) = p.match_key();
            match db.query_release(p.ecosystem, release.as_deref(), name, version) {
                Ok(found) => findings.extend(found.into_iter().map(|f| ReportFinding {
                    package: p.name.clone(),
                    version: p.version.clone(),
                    ecosystem: p.ecosystem.osv_name().to_owned(),
                    source_file: p.source_file.clone(),
                    layer: p.layer.clone(),
                    id: f.id,
                    aliases: f.aliases,
                    severity: f.severity,
                    cvss_score: f.cvss_score,
                    fixed: f.fixed,
                    summary: f.summary,
                    informational: f.informational,
                })),
                Err(e) => notes.push(format!("{} {} ({}): not matched: {e}", p.name, p.version, p.source_file)),
            }
        }
        findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.package.cmp(&b.package))
                .then_with(|| a.version.cmp(&b.version))
                .then_with(|| a.id.cmp(&b.id))
                .then_with(|| a.source_file.cmp(&b.source_file))
        });
        findings.dedup_by(|a, b| {
            a.id == b.id
                && a.package == b.package
                && a.version == b.version
                && a.ecosystem == b.ecosystem
                && a.source_file == b.source_file
        });
        out.push(target_report(t.name, t.kind, distro, t.inventory.packages, findings, notes, t.content, true));
    }
    Report { targets: out, expired_ignores: Vec::new() }
}

#[allow(clippy::too_many_arguments)]
fn target_report(
    name: String,
    kind: TargetKind,
    distro: Option<Distro>,
    packages: Vec<Package>,
    findings: Vec<ReportFinding>,
    mut notes: Vec<String>,
    content: Option<ContentScan>,
    vulnerabilities_checked: bool,
) -> TargetReport {
    let content_checked = content.is_some();
    let mut c = content.unwrap_or_default();
    notes.append(&mut c.notes);
    c.misconfigurations
        .sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| (&a.file, a.line).cmp(&(&b.file, b.line))));
    c.secrets.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| (&a.file, a.line).cmp(&(&b.file, b.line))));
    TargetReport {
        name,
        kind,
        distro,
        packages,
        findings,
        notes,
        vulnerabilities_checked,
        content_checked,
        files_scanned: c.files_scanned,
        misconfigurations: c.misconfigurations,
        secrets: c.secrets,
        suppressed: 0,
    }
}

/// `name/path` for a finding path inside a directory target, `path` otherwise.
pub(crate) fn joined_path(target: &str, kind: TargetKind, path: &str) -> String {
    let is_dir = matches!(kind, TargetKind::Filesystem | TargetKind::Config) && std::path::Path::new(target).is_dir();
    let name = target.trim_end_matches('/');
    if is_dir && name != "." && !path.starts_with('/') {
        format!("{name}/{path}")
    } else {
        path.to_owned()
    }
}

/// Exit code when findings are at or above the `--fail-on` severity.
pub const EXIT_FINDINGS: i32 = 1;
/// Exit code for a scan that could not be done (bad input, unreadable database).
pub const EXIT_ERROR: i32 = 2;

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Unknown => "UNKNOWN",
        Severity::None => "NONE",
        Severity::Low => "LOW",
        Severity::Medium => "MEDIUM",
        Severity::High => "HIGH",
        Severity::Critical => "CRITICAL",
    }
}

fn colour(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "\x1b[1;31m",
        Severity::High => "\x1b[31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
        Severity::None | Severity::Unknown => "\x1b[2m",
    }
}

/// Parses a `--fail-on` value (`low`, `medium`/`moderate`, `high`, `critical`, `none`, `unknown`).
pub fn parse_severity(s: &str) -> Option<Severity> {
    if s.eq_ignore_ascii_case("unknown") {
        return Some(Severity::Unknown);
    }
    Severity::from_label(s)
}

fn truncate(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let mut t: String = line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

impl Report {
    /// Findings of every kind (informational advisories excluded) at or above `threshold`, over all targets.
    pub fn count_at_or_above(&self, threshold: Severity) -> usize {
        self.targets
            .iter()
            .map(|t| {
                t.findings.iter().filter(|f| f.informational.is_none() && f.severity >= threshold).count()
                    + t.misconfigurations.iter().filter(|f| f.severity >= threshold).count()
                    + t.secrets.iter().filter(|f| f.severity >= threshold).count()
            })
            .sum()
    }

    /// Removes the findings an unexpired entry of `ignores` suppresses (counted in each target's
    /// `suppressed`) and records the expired entries. A path matches as reported or joined to the target.
    pub fn apply_ignores(&mut self, ignores: &IgnoreFile, today: Date) {
        for t in &mut self.targets {
            let (name, kind) = (t.name.clone(), t.kind);
            let hit = |ids: &[&str], path: &str| {
                ignores.suppressing(ids, path, today).is_some()
                    || ignores.suppressing(ids, &joined_path(&name, kind, path), today).is_some()
            };
            let before = t.findings.len() + t.misconfigurations.len() + t.secrets.len();
            t.findings.retain(|f| {
                let mut ids: Vec<&str> = vec![f.id.as_str()];
                ids.extend(f.aliases.iter().map(String::as_str));
                !hit(&ids, &f.source_file)
            });
            t.misconfigurations.retain(|f| !hit(&[f.rule_id.as_str()], &f.file));
            t.secrets.retain(|f| !hit(&[f.rule_id.as_str(), f.fingerprint.as_str()], &f.file));
            let after = t.findings.len() + t.misconfigurations.len() + t.secrets.len();
            t.suppressed += before.saturating_sub(after);
        }
        self.expired_ignores = ignores.expired(today);
    }

    /// 0 without `fail_on` or when no finding reaches it, [`EXIT_FINDINGS`] otherwise.
    pub fn exit_code(&self, fail_on: Option<Severity>) -> i32 {
        match fail_on {
            Some(t) if self.count_at_or_above(t) > 0 => EXIT_FINDINGS,
            _ => 0,
        }
    }

    /// JSON of the whole report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A table per target: severity, package, installed version, fixed version, id, summary; then
    /// misconfigurations (with each rule's fix once) and secrets (redacted); notes and expired ignores after.
    pub fn render_table(&self, use_colour: bool) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let distro = t.distro.as_ref().map(|d| format!(", {} {}", d.id, d.version_id)).unwrap_or_default();
            let mut parts = Vec::new();
            if t.vulnerabilities_checked || !t.packages.is_empty() {
                parts.push(format!("{} packages, {} findings", t.packages.len(), t.findings.len()));
            }
            if t.content_checked {
                parts.push(format!(
                    "{} files, {} misconfigurations, {} secrets",
                    t.files_scanned,
                    t.misconfigurations.len(),
                    t.secrets.len()
                ));
            }
            if t.suppressed > 0 {
                parts.push(format!("{} ignored", t.suppressed));
            }
            let _ = writeln!(out, "{} ({}{distro}): {}", t.name, t.kind.label(), parts.join(", "));
            if t.vulnerabilities_checked && t.findings.is_empty() {
                let _ = writeln!(out, "  no known vulnerabilities");
            } else if !t.findings.is_empty() {
                let rows = t
                    .findings
                    .iter()
                    .map(|f| {
                        let sev = match &f.informational {
                            Some(kind) => format!("{} ({kind})", severity_label(f.severity)),
                            None => severity_label(f.severity).to_owned(),
                        };
                        let fixed = if f.fixed.is_empty() { "-".to_owned() } else { f.fixed.join(", ") };
                        let cells = vec![
                            sev,
                            f.package.clone(),
                            f.version.clone(),
                            truncate(&fixed, 40),
                            f.id.clone(),
                            truncate(&f.summary, 60),
                        ];
                        (f.severity, cells)
                    })
                    .collect();
                table(&mut out, &["SEVERITY", "PACKAGE", "VERSION", "FIXED", "ID", "SUMMARY"], rows, use_colour);
            }
            if !t.misconfigurations.is_empty() {
                let _ = writeln!(out, "  misconfigurations:");
                let rows = t
                    .misconfigurations
                    .iter()
                    .map(|m| {
                        let cells = vec![
                            severity_label(m.severity).to_owned(),
                            m.rule_id.clone(),
                            format!("{}:{}", m.file, m.line),
                            truncate(&m.resource, 50),
                            truncate(&m.message, 70),
                        ];
                        (m.severity, cells)
                    })
                    .collect();
                table(&mut out, &["SEVERITY", "RULE", "LOCATION", "RESOURCE", "MESSAGE"], rows, use_colour);
                let mut seen: Vec<&str> = Vec::new();
                for m in &t.misconfigurations {
                    if !seen.contains(&m.rule_id.as_str()) {
                        seen.push(&m.rule_id);
                    }
                }
                seen.sort_unstable();
                for id in seen {
                    if let Some(r) = rule(id) {
                        let _ = writeln!(out, "  {id} {}: {} Fix: {}", r.title, r.why, r.fix);
                    }
                }
            }
            if !t.secrets.is_empty() {
                let _ = writeln!(out, "  secrets:");
                let rows = t
                    .secrets
                    .iter()
                    .map(|f| {
                        let loc = match &f.layer {
                            Some(l) => format!("{}:{} (layer {})", f.file, f.line, truncate(l, 20)),
                            None => format!("{}:{}", f.file, f.line),
                        };
                        let cells = vec![
                            severity_label(f.severity).to_owned(),
                            f.rule_id.clone(),
                            loc,
                            f.redacted.clone(),
                            f.title.clone(),
                            f.fingerprint.clone(),
                        ];
                        (f.severity, cells)
                    })
                    .collect();
                table(&mut out, &["SEVERITY", "RULE", "LOCATION", "VALUE", "KIND", "FINGERPRINT"], rows, use_colour);
            }
            for n in &t.notes {
                let _ = writeln!(out, "  note: {n}");
            }
            out.push('\n');
        }
        for e in &self.expired_ignores {
            let _ = writeln!(
                out,
                "expired ignore: {} (expired {}, reason: {}) no longer suppresses findings",
                e.id, e.expires, e.reason
            );
        }
        out
    }
}

/// Appends an aligned table, colouring the first column by severity when asked.
fn table(out: &mut String, header: &[&str], rows: Vec<(Severity, Vec<String>)>, use_colour: bool) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (_, r) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String], out: &mut String, paint: Option<Severity>| {
        let mut s = String::from("  ");
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(w.saturating_sub(c.chars().count()));
            match (i, paint) {
                (0, Some(sev)) => {
                    let _ = write!(s, "{}{c}\x1b[0m{pad}  ", colour(sev));
                }
                _ => {
                    let _ = write!(s, "{c}{pad}  ");
                }
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    line(&head, out, None);
    for (sev, r) in &rows {
        line(r, out, use_colour.then_some(*sev));
    }
}
