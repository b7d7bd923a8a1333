//! End to end: a crafted Cargo.lock with a known-vulnerable crate against a database imported from the real
//! RustSec advisory-db snapshot; findings, table, JSON and `--fail-on` exit codes.

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use palisade_scan::{parse_severity, scan, scan_lockfile, Database, Severity, Target, TargetKind};

const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

fn rustsec() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/advisories/rustsec");
    if local.exists() {
        local
    } else {
        PathBuf::from("/work/shared/data/advisories/rustsec")
    }
}

#[test]
fn vulnerable_cargo_lock_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("scan.db");
    Database::import(&[rustsec()], &db_path).unwrap();
    let db = Database::open(&db_path).unwrap();
    let lock = dir.path().join("Cargo.lock");
    std::fs::write(
        &lock,
        format!(
            "version = 3\n\n[[package]]\nname = \"abi_stable\"\nversion = \"0.9.0\"\nsource = \"{CRATES_IO}\"\n\n\
             [[package]]\nname = \"abi_stable\"\nversion = \"0.9.1\"\nsource = \"{CRATES_IO}\"\n\n\
             [[package]]\nname = \"demo\"\nversion = \"0.1.0\"\n\n\
             [[package]]\nname = \"weird\"\nversion = \"not-a-version\"\nsource = \"{CRATES_IO}\"\n"
        ),
    )
    .unwrap();
    let inv = scan_lockfile(&lock).unwrap();
    assert_eq!(inv.packages.len(), 4);
    let report = scan(vec![Target::new("Cargo.lock", TargetKind::Lockfile, inv)], &db);
    let t = &report.targets[0];
    let got: Vec<(&str, &str, &str)> =
        t.findings.iter().map(|f| (f.package.as_str(), f.version.as_str(), f.id.as_str())).collect();
    assert_eq!(got, [("abi_stable", "0.9.0", "RUSTSEC-2020-0105")]);
    let f = &t.findings[0];
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.fixed, [">= 0.9.1"]);
    assert_eq!(f.summary, "Update unsound DrainFilter and RString::retain");
    assert_eq!(f.source_file, lock.display().to_string());
    assert_eq!(t.notes.len(), 1);
    assert!(t.notes[0].starts_with("weird not-a-version"), "{}", t.notes[0]);

    assert_eq!(report.exit_code(None), 0);
    assert_eq!(report.exit_code(parse_severity("low")), 1);
    assert_eq!(report.exit_code(parse_severity("high")), 1);
    assert_eq!(report.exit_code(parse_severity("critical")), 0);
    assert_eq!(parse_severity("moderate"), Some(Severity::Medium));
    assert_eq!(parse_severity("severe"), None);

    let table = report.render_table(false);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "Cargo.lock (lockfile): 4 packages, 1 findings");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["SEVERITY", "PACKAGE", "VERSION", "FIXED", "ID", "SUMMARY"]
    );
    assert!(
        lines[2].starts_with("  HIGH      abi_stable  0.9.0    >= 0.9.1  RUSTSEC-2020-0105  Update unsound"),
        "{}",
        lines[2]
    );
    assert!(!table.contains('\x1b'));
    assert!(report.render_table(true).contains("\x1b[31mHIGH\x1b[0m"));

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["targets"][0]["kind"], "lockfile");
    assert_eq!(json["targets"][0]["findings"][0]["id"], "RUSTSEC-2020-0105");
    assert_eq!(json["targets"][0]["findings"][0]["severity"], "High");
    assert_eq!(json["targets"][0]["packages"].as_array().unwrap().len(), 4);
}

/// Packages from outside crates.io (path, git, another registry) are listed but not matched, as cargo-audit
/// does; crates.io's sparse spelling is crates.io (cargo-audit currently drops those advisories, see
/// rustsec/rustsec#1694).
#[test]
fn non_registry_cargo_packages_are_not_matched() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("scan.db");
    Database::import(&[rustsec()], &db_path).unwrap();
    let db = Database::open(&db_path).unwrap();
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/Cargo.sources.lock");
    let inv = palisade_scan::scan_file(&lock, palisade_scan::FileKind::CargoLock).unwrap();
    assert_eq!(inv.packages.len(), 6);
    // Every one of these name/version pairs is vulnerable on crates.io.
    for (name, version) in
        [("abi_stable", "0.9.0"), ("hyper", "0.14.9"), ("smallvec", "0.6.9"), ("smallvec", "1.6.0"), ("time", "0.1.43")]
    {
        assert!(!db.query(palisade_scan::Ecosystem::CratesIo, name, version).unwrap().is_empty(), "{name} {version}");
    }
    let report = scan(vec![Target::new("Cargo.lock", TargetKind::Lockfile, inv)], &db);
    let t = &report.targets[0];
    let got: Vec<(&str, &str, &str)> =
        t.findings.iter().map(|f| (f.package.as_str(), f.version.as_str(), f.id.as_str())).collect();
    // Only the two crates.io packages (git-index and sparse spellings), most severe first.
    assert_eq!(
        got,
        [
            ("smallvec", "0.6.9", "RUSTSEC-2019-0009"),
            ("smallvec", "0.6.9", "RUSTSEC-2019-0012"),
            ("smallvec", "0.6.9", "RUSTSEC-2021-0003"),
            ("time", "0.1.43", "RUSTSEC-2020-0071"),
            ("smallvec", "0.6.9", "RUSTSEC-2018-0018"),
        ]
    );
    assert_eq!(t.packages.len(), 6, "non-registry packages stay in the inventory (SBOM)");
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}
