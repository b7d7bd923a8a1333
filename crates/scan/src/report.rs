//! Matching inventories against the database and the report model: one section per target with its
//! packages and findings (severity first, then package, then id), rendered as a plain-text table (ANSI
//! colour only when asked) or JSON, and the `--fail-on` exit code.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cvss::Severity;
use crate::db::Database;
use crate::inventory::{Distro, Inventory, Package};
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
}

impl TargetKind {
    fn label(self) -> &'static str {
        match self {
            TargetKind::Image => "image",
            TargetKind::Filesystem => "filesystem",
            TargetKind::Lockfile => "lockfile",
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
}

/// The result of [`scan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// One section per target, in the order given.
    pub targets: Vec<TargetReport>,
}

/// Matches every package of every target against `db`. A package whose version is not valid in its
/// ecosystem (a git or path dependency, say) is noted on its target, not an error.
pub fn scan(targets: Vec<Target>, db: &Database) -> Report {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let mut notes = t.inventory.notes;
        let mut findings = Vec::new();
        let distro = t.inventory.distro;
        for p in &t.inventory.packages {
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
        out.push(TargetReport { name: t.name, kind: t.kind, distro, packages: t.inventory.packages, findings, notes });
    }
    Report { targets: out }
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
    /// Findings (informational ones excluded) at or above `threshold`, over all targets.
    pub fn count_at_or_above(&self, threshold: Severity) -> usize {
        self.targets
            .iter()
            .flat_map(|t| &t.findings)
            .filter(|f| f.informational.is_none() && f.severity >= threshold)
            .count()
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

    /// A table per target: severity, package, installed version, fixed version, id, summary; notes after.
    pub fn render_table(&self, use_colour: bool) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let distro = t.distro.as_ref().map(|d| format!(", {} {}", d.id, d.version_id)).unwrap_or_default();
            let _ = writeln!(
                out,
                "{} ({}{distro}): {} packages, {} findings",
                t.name,
                t.kind.label(),
                t.packages.len(),
                t.findings.len()
            );
            if t.findings.is_empty() {
                let _ = writeln!(out, "  no known vulnerabilities");
            } else {
                let rows: Vec<[String; 6]> = t
                    .findings
                    .iter()
                    .map(|f| {
                        let sev = match &f.informational {
                            Some(kind) => format!("{} ({kind})", severity_label(f.severity)),
                            None => severity_label(f.severity).to_owned(),
                        };
                        let fixed = if f.fixed.is_empty() { "-".to_owned() } else { f.fixed.join(", ") };
                        [
                            sev,
                            f.package.clone(),
                            f.version.clone(),
                            truncate(&fixed, 40),
                            f.id.clone(),
                            truncate(&f.summary, 60),
                        ]
                    })
                    .collect();
                let header = ["SEVERITY", "PACKAGE", "VERSION", "FIXED", "ID", "SUMMARY"];
                let mut widths = header.map(|h| h.chars().count());
                for r in &rows {
                    for (w, c) in widths.iter_mut().zip(r) {
                        *w = (*w).max(c.chars().count());
                    }
                }
                let line = |cells: &[String], out: &mut String, paint: Option<Severity>| {
                    let mut s = String::from("  ");
                    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
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
                line(&header.map(str::to_owned), &mut out, None);
                for (r, f) in rows.iter().zip(&t.findings) {
                    line(r, &mut out, use_colour.then_some(f.severity));
                }
            }
            for n in &t.notes {
                let _ = writeln!(out, "  note: {n}");
            }
            out.push('\n');
        }
        out
    }
}
