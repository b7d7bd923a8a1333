//! The local vulnerability database: one file holding a header (format version, build time, sources,
//! counts, and an index of (ecosystem, package) groups) and a body of per-group advisory records. Opening
//! reads the file and the index only; a query decodes just the groups of one package. The file is written
//! to a temporary name and renamed, so readers never see a half-written database.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::advisory::Rule;
use crate::cvss::Severity;
use crate::source::{self, LoadError, SourceIssue};
use crate::version::{Ecosystem, VersionError};

const MAGIC: &[u8; 8] = b"PALSCDB\0";
/// Format 2: Ubuntu releases stored without the `:LTS` suffix (a format-1 file would silently miss them).
const FORMAT: u32 = 2;
/// Largest database file opened.
const MAX_DB: u64 = 2 << 30;

/// Errors of building, opening or querying the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Reading the advisory sources failed.
    #[error(transparent)]
    Source(#[from] LoadError),
    /// File I/O on the database failed.
    #[error("database {path}: {source}")]
    Io {
        /// The database path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a database of this format.
    #[error("database {path} is not a valid palisade scan database: {reason}")]
    Format {
        /// The database path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The queried version is not valid in its ecosystem.
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// One vulnerability affecting a queried package version; advisories that share an id or alias are merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// Preferred id (database-native ids such as RUSTSEC/GO/PYSEC before GHSA, GHSA before CVE).
    pub id: String,
    /// Every other id of the vulnerability, sorted.
    pub aliases: Vec<String>,
    /// One-line summary.
    pub summary: String,
    /// Highest severity any merged advisory gives.
    pub severity: Severity,
    /// Highest CVSS v3 base score, when known.
    pub cvss_score: Option<f32>,
    /// Fixed versions (OSV) or patched requirements (RustSec), deduplicated.
    pub fixed: Vec<String>,
    /// RustSec informational kind (`unmaintained`, `unsound`, …); such findings are warnings, not vulnerabilities.
    pub informational: Option<String>,
}

/// Result of [`Database::import`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportReport {
    /// Where the database was written.
    pub path: PathBuf,
    /// Advisory files read.
    pub files_read: usize,
    /// Advisories stored (one per source record; the same vulnerability from two sources counts twice).
    pub advisories: usize,
    /// Advisories left out because they (or an advisory with the same id) are withdrawn.
    pub withdrawn: usize,
    /// Stored advisory records per ecosystem.
    pub per_ecosystem: BTreeMap<Ecosystem, usize>,
    /// Distinct (ecosystem, release, package) groups.
    pub packages: usize,
    /// Files skipped, with reasons.
    pub skipped: Vec<SourceIssue>,
    /// Files or advisories that failed, with reasons.
    pub failures: Vec<SourceIssue>,
    /// Size of the written file.
    pub bytes: u64,
}

/// What [`Database::status`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DbStatus {
    /// Format version of the file.
    pub format: u32,
    /// When it was built.
    pub built_at: SystemTime,
    /// How long ago it was built (zero if the clock is behind the build time).
    pub age: Duration,
    /// The source paths it was built from.
    pub sources: Vec<String>,
    /// Stored advisory records per ecosystem.
    pub per_ecosystem: BTreeMap<Ecosystem, usize>,
    /// Total advisory records.
    pub advisories: usize,
    /// Distinct (ecosystem, release, package) groups.
    pub packages: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    aliases: Vec<String>,
    summary: String,
    severity: Severity,
    cvss_score: Option<f32>,
    informational: Option<String>,
    rule: Rule,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    ecosystem: Ecosystem,
    release: String,
    name: String,
    offset: u64,
    len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    built_at: u64,
    sources: Vec<String>,
    per_ecosystem: BTreeMap<Ecosystem, usize>,
    advisories: usize,
    index: Vec<IndexEntry>,
}

/// An opened database.
#[derive(Debug)]
pub struct Database {
    header: Header,
    body: Vec<u8>,
    lookup: HashMap<(Ecosystem, String), Vec<usize>>,
}

/// Package names as the ecosystem treats them: PyPI names are case- and separator-insensitive (PEP 503);
/// the others are compared as given.
pub fn normalize_name(ecosystem: Ecosystem, name: &str) -> String {
    match ecosystem {
        Ecosystem::PyPI => {
            let mut out = String::with_capacity(name.len());
            let mut sep = false;
            for c in name.trim().chars() {
                if matches!(c, '-' | '_' | '.') {
                    sep = true;
                } else {
                    if sep && !out.is_empty() {
                        out.push('-');
                    }
                    sep = false;
                    out.extend(c.to_lowercase());
                }
            }
            out
        }
        _ => name.trim().to_owned(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DbError + '_ {
    move |source| DbError::Io { path: path.display().to_string(), source }
}

impl Database {
    /// Reads every advisory under `sources` and writes a database to `out` (atomically: temp file + rename).
    ///
    /// Files that fail to parse are listed in the report, not fatal; only unreadable source paths and
    /// write errors are.
    pub fn import(sources: &[impl AsRef<Path>], out: &Path) -> Result<ImportReport, DbError> {
        let loaded = source::load(sources)?;
        let mut failures = loaded.failures;
        // An id withdrawn in any source is withdrawn everywhere (the OSV export of a withdrawn RustSec
        // advisory must not resurrect it).
        let withdrawn_ids: BTreeSet<&str> =
            loaded.advisories.iter().filter(|a| a.withdrawn).map(|a| a.id.as_str()).collect();
        let mut withdrawn = 0usize;
        let mut groups: BTreeMap<(Ecosystem, String, String), Vec<Record>> = BTreeMap::new();
        let mut advisories = 0usize;
        for adv in &loaded.advisories {
            if withdrawn_ids.contains(adv.id.as_str()) {
                withdrawn += 1;
                continue;
            }
            let mut stored = false;
            for aff in &adv.affected {
                let mut rule = aff.rule.clone();
                let problems = rule.retain_valid(aff.ecosystem);
                let unusable = matches!(rule, Rule::Cargo { .. }) && !problems.is_empty() || rule.is_empty();
                for e in problems {
                    failures.push(SourceIssue {
                        path: format!("{} ({} {})", adv.id, aff.ecosystem, aff.package),
                        reason: if unusable { format!("left out: {e}") } else { format!("range dropped: {e}") },
                    });
                }
                if unusable {
                    continue;
                }
                let key = (aff.ecosystem, aff.release.clone(), normalize_name(aff.ecosystem, &aff.package));
                groups.entry(key).or_default().push(Record {
                    id: adv.id.clone(),
                    aliases: adv.aliases.clone(),
                    summary: adv.summary.clone(),
                    severity: adv.severity,
                    cvss_score: adv.cvss_score,
                    informational: adv.informational.clone(),
                    rule,
                });
                stored = true;
            }
            if stored {
                advisories += 1;
            }
        }
        let mut body = Vec::new();
        let mut index = Vec::with_capacity(groups.len());
        let mut per_ecosystem: BTreeMap<Ecosystem, usize> = BTreeMap::new();
        for ((ecosystem, release, name), records) in &groups {
            *per_ecosystem.entry(*ecosystem).or_default() += records.len();
            let offset = body.len() as u64;
            serde_json::to_writer(&mut body, records).map_err(|e| DbError::Format {
                path: out.display().to_string(),
                reason: format!("cannot encode records: {e}"),
            })?;
            index.push(IndexEntry {
                ecosystem: *ecosystem,
                release: release.clone(),
                name: name.clone(),
                offset,
                len: body.len() as u64 - offset,
            });
        }
        let built_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let header = Header {
            built_at,
            sources: sources.iter().map(|p| p.as_ref().display().to_string()).collect(),
            per_ecosystem: per_ecosystem.clone(),
            advisories,
            index,
        };
        let header_bytes = serde_json::to_vec(&header).map_err(|e| DbError::Format {
            path: out.display().to_string(),
            reason: format!("cannot encode header: {e}"),
        })?;
        let tmp = out.with_file_name(format!(
            ".{}.tmp{}",
            out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&FORMAT.to_le_bytes())?;
            f.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
            f.write_all(&header_bytes)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, out)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(out)(e));
        }
        let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        Ok(ImportReport {
            path: out.to_path_buf(),
            files_read: loaded.files_read,
            advisories,
            withdrawn,
            per_ecosystem,
            packages: groups.len(),
            skipped: loaded.skipped,
            failures,
            bytes,
        })
    }

    /// Opens a database written by [`Database::import`], validating its header and index.
    pub fn open(path: &Path) -> Result<Database, DbError> {
        let bad = |reason: &str| DbError::Format { path: path.display().to_string(), reason: reason.to_owned() };
        let len = fs::metadata(path).map_err(io_err(path))?.len();
        if len > MAX_DB {
            return Err(bad("file too large"));
        }
        let data = fs::read(path).map_err(io_err(path))?;
        if data.get(..8) != Some(MAGIC.as_slice()) {
            return Err(bad("bad magic"));
        }
        let format = data.get(8..12).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes);
        if format != Some(FORMAT) {
            return Err(bad(&format!(
                "unsupported format version {} (this build reads {FORMAT}; rebuild it with `palisade scan db import`)",
                format.map_or_else(|| "(missing)".to_owned(), |f| f.to_string())
            )));
        }
        let hlen = data
            .get(12..20)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| bad("truncated header"))?;
        let hend = 20usize.checked_add(hlen).ok_or_else(|| bad("header length overflows"))?;
        let header_bytes = data.get(20..hend).ok_or_else(|| bad("truncated header"))?;
        let header: Header = serde_json::from_slice(header_bytes).map_err(|e| bad(&format!("header: {e}")))?;
        let body = data.get(hend..).map(<[u8]>::to_vec).unwrap_or_default();
        let mut lookup: HashMap<(Ecosystem, String), Vec<usize>> = HashMap::new();
        for (i, entry) in header.index.iter().enumerate() {
            let end = entry.offset.checked_add(entry.len).ok_or_else(|| bad("index entry overflows"))?;
            if end > body.len() as u64 {
                return Err(bad("index entry points past the end of the file"));
            }
            lookup.entry((entry.ecosystem, entry.name.clone())).or_default().push(i);
        }
        Ok(Database { header, body, lookup })
    }

    /// Age and counts of the database.
    pub fn status(&self) -> DbStatus {
        let built_at = UNIX_EPOCH + Duration::from_secs(self.header.built_at);
        DbStatus {
            format: FORMAT,
            built_at,
            age: SystemTime::now().duration_since(built_at).unwrap_or_default(),
            sources: self.header.sources.clone(),
            per_ecosystem: self.header.per_ecosystem.clone(),
            advisories: self.header.advisories,
            packages: self.header.index.len(),
        }
    }

    /// Vulnerabilities affecting `name` at `version`, across all releases of the ecosystem.
    pub fn query(&self, ecosystem: Ecosystem, name: &str, version: &str) -> Result<Vec<Finding>, DbError> {
        self.query_release(ecosystem, None, name, version)
    }

    /// Like [`Database::query`], restricted to one distribution release (`Some("v3.11")` for Alpine 3.11)
    /// plus advisories that name no release.
    pub fn query_release(
        &self,
        ecosystem: Ecosystem,
        release: Option<&str>,
        name: &str,
        version: &str,
    ) -> Result<Vec<Finding>, DbError> {
        ecosystem.parse_check(version)?;
        let key = (ecosystem, normalize_name(ecosystem, name));
        let mut matched: Vec<Record> = Vec::new();
        for &i in self.lookup.get(&key).map(Vec::as_slice).unwrap_or_default() {
            let Some(entry) = self.header.index.get(i) else { continue };
            if let Some(r) = release {
                if !entry.release.is_empty() && entry.release != r {
                    continue;
                }
            }
            let bytes = usize::try_from(entry.offset)
                .ok()
                .zip(usize::try_from(entry.len).ok())
                .and_then(|(o, l)| self.body.get(o..o.checked_add(l)?))
                .unwrap_or_default();
            let records: Vec<Record> = serde_json::from_slice(bytes).map_err(|e| DbError::Format {
                path: String::from("(open database)"),
                reason: format!("group {} {}: {e}", entry.ecosystem, entry.name),
            })?;
            for rec in records {
                // A record whose own data does not evaluate (checked at import, so only on a hand-edited
                // file) is not a match rather than a failed query.
                if rec.rule.affects(ecosystem, version).unwrap_or(false) {
                    matched.push(rec);
                }
            }
        }
        Ok(merge(matched))
    }
}

/// Rank of an id prefix for choosing the displayed id: database-native ids first, CVE last.
fn id_rank(id: &str) -> u8 {
    let prefix = id.split('-').next().unwrap_or("");
    match prefix {
        "RUSTSEC" | "GO" | "PYSEC" => 0,
        "GHSA" => 1,
        "CVE" => 3,
        _ => 2,
    }
}

/// Groups records that share any id (union-find over ids and aliases) into one finding each.
fn merge(records: Vec<Record>) -> Vec<Finding> {
    let n = records.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while let Some(&p) = parent.get(i) {
            if p == i {
                break;
            }
            let gp = parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = parent.get_mut(i) {
                *slot = gp;
            }
            i = p;
        }
        i
    }
    // Each cluster's own record ids by namespace (`RUSTSEC`, `GHSA`, …): two different advisories of one
    // database are never merged, even when their alias lists overlap (RUSTSEC-2019-0036 and -2020-0036 both
    // list CVE-2019-25010; cargo-audit reports both).
    let namespace = |id: &str| id.split('-').next().unwrap_or(id).to_owned();
    let mut own: Vec<BTreeMap<String, String>> =
        records.iter().map(|r| BTreeMap::from([(namespace(&r.id), r.id.clone())])).collect();
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, rec) in records.iter().enumerate() {
        for id in std::iter::once(&rec.id).chain(&rec.aliases) {
            if let Some(&j) = owner.get(id.as_str()) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a == b {
                    continue;
                }
                let ma = own.get(a).cloned().unwrap_or_default();
                let conflict = own.get(b).is_some_and(|mb| ma.iter().any(|(ns, x)| mb.get(ns).is_some_and(|y| y != x)));
                if conflict {
                    continue;
                }
                if let Some(mb) = own.get_mut(b) {
                    mb.extend(ma);
                }
                if let Some(slot) = parent.get_mut(a) {
                    *slot = b;
                }
            } else {
                owner.insert(id.as_str(), i);
            }
        }
    }
    let mut clusters: BTreeMap<usize, Vec<&Record>> = BTreeMap::new();
    for (i, rec) in records.iter().enumerate() {
        let root = find(&mut parent, i);
        clusters.entry(root).or_default().push(rec);
    }
    let mut out: Vec<Finding> = clusters
        .into_values()
        .filter_map(|recs| {
            let primary = recs.iter().min_by(|a, b| (id_rank(&a.id), &a.id).cmp(&(id_rank(&b.id), &b.id)))?;
            let mut ids: BTreeSet<&str> = BTreeSet::new();
            let mut fixed: Vec<String> = Vec::new();
            for r in &recs {
                ids.insert(&r.id);
                ids.extend(r.aliases.iter().map(String::as_str));
                for f in r.rule.fixed() {
                    if !fixed.contains(&f) {
                        fixed.push(f);
                    }
                }
            }
            ids.remove(primary.id.as_str());
            let summary = std::iter::once(*primary)
                .chain(recs.iter().copied())
                .map(|r| r.summary.as_str())
                .find(|s| !s.is_empty())
                .unwrap_or("")
                .to_owned();
            Some(Finding {
                id: primary.id.clone(),
                aliases: ids.into_iter().map(str::to_owned).collect(),
                summary,
                severity: recs.iter().map(|r| r.severity).max().unwrap_or_default(),
                cvss_score: recs.iter().filter_map(|r| r.cvss_score).reduce(f32::max),
                fixed,
                informational: recs.iter().find_map(|r| r.informational.clone()),
            })
        })
        .collect();
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pypi_names_normalise() {
        assert_eq!(normalize_name(Ecosystem::PyPI, "Oslo_Middleware"), "oslo-middleware");
        assert_eq!(normalize_name(Ecosystem::PyPI, "zope.interface"), "zope-interface");
        assert_eq!(normalize_name(Ecosystem::PyPI, "a--_b"), "a-b");
        assert_eq!(normalize_name(Ecosystem::CratesIo, "Serde_json"), "Serde_json");
    }

    fn rec(id: &str, aliases: &[&str], sev: Severity) -> Record {
        Record {
            id: id.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            summary: String::new(),
            severity: sev,
            cvss_score: None,
            informational: None,
            rule: Rule::Osv { ranges: vec![], versions: vec![] },
        }
    }

    #[test]
    fn distinct_advisories_of_one_database_stay_apart() {
        let out = merge(vec![
            rec("RUSTSEC-2019-0036", &["CVE-2019-25010"], Severity::High),
            rec("RUSTSEC-2020-0036", &["CVE-2019-25010", "GHSA-b"], Severity::Critical),
            rec("GHSA-b", &["RUSTSEC-2020-0036"], Severity::Critical),
        ]);
        let ids: Vec<(&str, Vec<String>)> = out.iter().map(|f| (f.id.as_str(), f.aliases.clone())).collect();
        assert_eq!(
            ids,
            [
                ("RUSTSEC-2020-0036", vec!["CVE-2019-25010".to_owned(), "GHSA-b".to_owned()]),
                ("RUSTSEC-2019-0036", vec!["CVE-2019-25010".to_owned()]),
            ]
        );
    }

    #[test]
    fn merge_is_transitive_over_aliases() {
        let out = merge(vec![
            rec("CVE-2020-1", &[], Severity::Unknown),
            rec("GHSA-aaaa", &["CVE-2020-1"], Severity::High),
            rec("RUSTSEC-2020-0001", &["GHSA-aaaa"], Severity::Medium),
            rec("RUSTSEC-2021-0002", &[], Severity::Low),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "RUSTSEC-2020-0001");
        assert_eq!(out[0].aliases, ["CVE-2020-1", "GHSA-aaaa"]);
        assert_eq!(out[0].severity, Severity::High);
        assert_eq!(out[1].id, "RUSTSEC-2021-0002");
    }
}
