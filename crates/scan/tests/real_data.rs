//! Parsing and matching on the real advisory snapshots in /work/shared/data/advisories (see its README).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use palisade_scan::{load, Database, Ecosystem, Event, ImportReport, Rule, Severity};

fn data(sub: &str) -> PathBuf {
    // CI lays shared/ beside the clone; sessions have it at /work/shared.
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/advisories").join(sub);
    if local.exists() {
        local
    } else {
        Path::new("/work/shared/data/advisories").join(sub)
    }
}

fn all_sources() -> Vec<PathBuf> {
    ["rustsec", "rustsec-osv/crates", "pypa/vulns", "go/data/osv", "alpine"].iter().map(|s| data(s)).collect()
}

struct Built {
    _dir: tempfile::TempDir,
    report: ImportReport,
    db: Database,
}

// A helper shared by tests: a failure here is a test failure.
#[allow(clippy::unwrap_used)]
fn built() -> &'static Built {
    static DB: OnceLock<Built> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vulns.db");
        let report = Database::import(&all_sources(), &path).unwrap();
        let db = Database::open(&path).unwrap();
        Built { _dir: dir, report, db }
    })
}

#[test]
fn rustsec_markdown_parses_without_failures() {
    let r = load(&[data("rustsec")]).unwrap();
    assert_eq!(r.files_read, 1225);
    assert_eq!(r.advisories.len(), 1205);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    // The 20 toolchain advisories (std, cargo, rustdoc) are skipped, each with its reason.
    assert_eq!(r.skipped.len(), 20);
    assert!(r.skipped.iter().all(|s| s.reason.contains("toolchain")));
    assert_eq!(r.advisories.iter().filter(|a| a.withdrawn).count(), 13);
    let abi = r.advisories.iter().find(|a| a.id == "RUSTSEC-2020-0105").unwrap();
    assert_eq!(abi.summary, "Update unsound DrainFilter and RString::retain");
    assert_eq!(abi.cvss_score, Some(7.5));
    assert_eq!(abi.severity, Severity::High);
    assert_eq!(abi.affected[0].package, "abi_stable");
    assert_eq!(abi.affected[0].rule, Rule::Cargo { patched: vec![">= 0.9.1".into()], unaffected: vec![] });
}

#[test]
fn osv_json_and_yaml_parse_without_failures() {
    let r = load(&[data("rustsec-osv/crates")]).unwrap();
    assert_eq!((r.files_read, r.advisories.len(), r.failures.len(), r.skipped.len()), (1206, 1206, 0, 0));
    assert_eq!(r.advisories.iter().filter(|a| a.withdrawn).count(), 13);

    let r = load(&[data("go/data/osv")]).unwrap();
    assert_eq!((r.files_read, r.advisories.len(), r.failures.len(), r.skipped.len()), (4291, 4291, 0, 0));
    assert_eq!(r.advisories.iter().filter(|a| a.withdrawn).count(), 17);

    let r = load(&[data("pypa/vulns")]).unwrap();
    assert_eq!((r.files_read, r.advisories.len(), r.failures.len()), (2661, 2660, 0));
    // One PyPA file lists no affected package with ranges or versions.
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.skipped[0].reason, "no affected package in a supported ecosystem");
    let oslo = r.advisories.iter().find(|a| a.id == "PYSEC-2018-104").unwrap();
    assert_eq!(oslo.aliases, ["CVE-2017-2592", "GHSA-xcp8-hh74-f6mc"]);
}

#[test]
fn alpine_secdb_parses_with_explained_failures() {
    let r = load(&[data("alpine")]).unwrap();
    assert_eq!(r.files_read, 18);
    // Every failure is one secfixes entry whose fix version is not an apk version (typos in the secdb
    // such as "4.8.0.-r1"); the rest of the file is kept.
    let mut versions: Vec<&str> =
        r.failures.iter().map(|f| f.path.rsplit(' ').next().unwrap().trim_end_matches(')')).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(
        versions,
        [
            "0.12.5.-r0",
            "0.8.21.r2",
            "1.0.4.-r0",
            "1.11-20-r0",
            "1.18.-r2",
            "1.7.5.-r1",
            "10.2.22.r0",
            "10.2.24.r0",
            "10.2.26.r0",
            "2.15.r-r1",
            "2.7.16-33",
            "4.10-1-r1",
            "4.8.0.-r1",
            "57-1-r2",
            "6.6.2p1-r0"
        ]
    );
    assert!(r.failures.iter().all(|f| f.reason.starts_with("invalid Alpine version")), "{:?}", r.failures);
    assert!(r.advisories.len() > 1500, "{}", r.advisories.len());
}

/// The RustSec Markdown and its OSV export must agree on every boundary version they name.
#[test]
fn rustsec_markdown_and_osv_export_agree() {
    let md = load(&[data("rustsec")]).unwrap().advisories;
    let osv = load(&[data("rustsec-osv/crates")]).unwrap().advisories;
    let osv: HashMap<&str, &Rule> = osv.iter().map(|a| (a.id.as_str(), &a.affected[0].rule)).collect();
    let (mut compared, mut probes) = (0, 0);
    let mut disagreements = Vec::new();
    for a in &md {
        let Some(other) = osv.get(a.id.as_str()) else { continue };
        compared += 1;
        let Rule::Osv { ranges, .. } = other else { panic!("{} is not an OSV rule", a.id) };
        for e in ranges.iter().flatten() {
            let v = match e {
                Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
            };
            if v == "0" || v == "0.0.0-0" {
                continue;
            }
            probes += 1;
            let x = a.affected[0].rule.affects(Ecosystem::CratesIo, v).unwrap();
            let y = other.affects(Ecosystem::CratesIo, v).unwrap();
            if x != y {
                disagreements.push(format!("{} at {v}: markdown {x}, osv {y}", a.id));
            }
        }
    }
    assert_eq!(compared, 1205);
    assert_eq!(probes, 1461);
    // The OSV export turns `> 0.7.19` into `fixed: 0.7.20-0`. Cargo requirements never match a pre-release
    // unless they name one, so RustSec (and cargo-audit) call 0.7.20-0 affected while the OSV range does
    // not. That synthetic pre-release boundary is the only place the two disagree.
    assert_eq!(disagreements.len(), 23, "{disagreements:#?}");
    assert!(disagreements.iter().all(|d| d.contains("-0: markdown true, osv false")), "{disagreements:#?}");
}

#[test]
fn import_counts_and_status() {
    let b = built();
    let r = &b.report;
    assert_eq!(r.files_read, 1225 + 1206 + 2661 + 4291 + 18);
    // 13 + 13 + 9 + 17 withdrawn advisory records dropped.
    assert_eq!(r.withdrawn, 52);
    let outside_alpine: Vec<String> = r
        .failures
        .iter()
        .filter(|f| !f.path.contains("/alpine/"))
        .map(|f| format!("{}: {}", f.path, f.reason))
        .collect();
    // Two PyPA advisories give their only ECOSYSTEM range a non-PEP 440 version (a build tag, a date); with
    // the GIT range ignored nothing matchable is left, so they are left out, each with its reason.
    assert_eq!(
        outside_alpine,
        [
            "PYSEC-2021-371 (PyPI binderhub): left out: invalid PyPI version \"0.2.0-n653\": unexpected characters",
            "PYSEC-2019-125 (PyPI steam): left out: invalid PyPI version \"2019-09-12\": unexpected characters",
        ]
    );
    let status = b.db.status();
    assert_eq!(status.advisories, r.advisories);
    assert_eq!(status.packages, r.packages);
    assert_eq!(status.per_ecosystem, r.per_ecosystem);
    assert!(status.age.as_secs() < 3600);
    assert_eq!(status.sources.len(), 5);
    let counts: BTreeMap<Ecosystem, usize> = status.per_ecosystem.clone();
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [Ecosystem::CratesIo, Ecosystem::Go, Ecosystem::PyPI, Ecosystem::Alpine]
    );
}

#[test]
fn rustsec_vulnerable_and_patched_with_alias_merge() {
    let db = &built().db;
    let f = db.query(Ecosystem::CratesIo, "abi_stable", "0.9.0").unwrap();
    assert_eq!(f.len(), 1, "the Markdown advisory and its OSV export are one finding: {f:#?}");
    assert_eq!(f[0].id, "RUSTSEC-2020-0105");
    assert_eq!(f[0].aliases, ["CVE-2020-36212", "CVE-2020-36213", "GHSA-vq23-5h4f-vwpv", "GHSA-wqxc-qrq4-w5v4"]);
    assert_eq!(f[0].severity, Severity::High);
    assert_eq!(f[0].cvss_score, Some(7.5));
    assert_eq!(f[0].fixed, [">= 0.9.1", "0.9.1"]);
    assert!(db.query(Ecosystem::CratesIo, "abi_stable", "0.9.1").unwrap().is_empty());
    assert!(db.query(Ecosystem::CratesIo, "abi_stable", "1.0.0").unwrap().is_empty());
}

#[test]
fn withdrawn_advisory_ignored() {
    let db = &built().db;
    // RUSTSEC-2021-0147 (daemonize unmaintained) was withdrawn; RUSTSEC-2025-0069 replaced it.
    let f = db.query(Ecosystem::CratesIo, "daemonize", "0.5.0").unwrap();
    let ids: Vec<&str> = f.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["RUSTSEC-2025-0069"]);
    assert_eq!(f[0].informational.as_deref(), Some("unmaintained"));
}

#[test]
fn go_module_match() {
    let db = &built().db;
    let ids = |v: &str| -> Vec<String> {
        db.query(Ecosystem::Go, "github.com/coder/coder/v2", v).unwrap().into_iter().map(|f| f.id).collect()
    };
    assert!(ids("v2.14.3").contains(&"GO-2024-3228".to_owned()));
    assert!(!ids("v2.14.4").contains(&"GO-2024-3228".to_owned()));
    assert!(ids("v2.15.0").contains(&"GO-2024-3228".to_owned()));
    assert!(!ids("v2.15.3").contains(&"GO-2024-3228".to_owned()));
    assert!(!ids("v2.3.0").contains(&"GO-2024-3228".to_owned()));
    let f = db.query(Ecosystem::Go, "github.com/coder/coder/v2", "v2.14.3").unwrap();
    let g = f.iter().find(|f| f.id == "GO-2024-3228").unwrap();
    assert_eq!(g.aliases, ["GHSA-wcx9-ccpj-hx3c"]);
    assert_eq!(g.fixed, ["2.14.4", "2.15.3", "2.16.1"]);
}

#[test]
fn pypi_match_with_name_normalisation() {
    let db = &built().db;
    let has =
        |name: &str, v: &str| db.query(Ecosystem::PyPI, name, v).unwrap().iter().any(|f| f.id == "PYSEC-2018-104");
    assert!(has("oslo-middleware", "3.8.0"));
    assert!(has("Oslo_Middleware", "3.8.0"));
    assert!(!has("oslo-middleware", "3.8.1"));
    assert!(has("oslo.middleware", "3.19.0"));
    assert!(!has("oslo-middleware", "3.19.1"));
    assert!(!has("oslo-middleware", "4.0.0"));
    let f = db.query(Ecosystem::PyPI, "oslo-middleware", "3.8.0").unwrap();
    let p = f.iter().find(|f| f.id == "PYSEC-2018-104").unwrap();
    assert_eq!(p.aliases, ["CVE-2017-2592", "GHSA-xcp8-hh74-f6mc"]);
}

#[test]
fn alpine_match_per_release() {
    let db = &built().db;
    let ids = |v: &str| -> Vec<String> {
        db.query_release(Ecosystem::Alpine, Some("v3.11"), "ansible", v).unwrap().into_iter().map(|f| f.id).collect()
    };
    assert!(ids("2.9.2-r0").contains(&"CVE-2019-14904".to_owned()));
    assert!(!ids("2.9.3-r0").contains(&"CVE-2019-14904".to_owned()));
    assert!(ids("2.8.5-r0").contains(&"CVE-2019-14846".to_owned()));
    assert!(ids("2.9.3-r0").is_empty());
}

#[test]
fn reopened_database_gives_the_same_answers() {
    let b = built();
    let again = Database::open(&b.report.path).unwrap();
    for (eco, name, v) in [
        (Ecosystem::CratesIo, "abi_stable", "0.9.0"),
        (Ecosystem::CratesIo, "daemonize", "0.5.0"),
        (Ecosystem::Go, "github.com/coder/coder/v2", "v2.14.3"),
        (Ecosystem::PyPI, "oslo-middleware", "3.8.0"),
        (Ecosystem::Alpine, "ansible", "2.8.0-r0"),
    ] {
        let x = b.db.query(eco, name, v).unwrap();
        assert!(!x.is_empty(), "{name}");
        assert_eq!(x, again.query(eco, name, v).unwrap(), "{name}");
    }
    assert!(matches!(b.db.query(Ecosystem::CratesIo, "abi_stable", "zero"), Err(palisade_scan::DbError::Version(_))));
}
