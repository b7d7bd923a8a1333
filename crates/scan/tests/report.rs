//! End to end: a crafted Cargo.lock with a known-vulnerable crate against a database imported from the real
//! RustSec advisory-db snapshot; findings, table, JSON and `--fail-on` exit codes.

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use palisade_scan::{parse_severity, scan, scan_lockfile, Database, Severity, Target, TargetKind};

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
        "version = 3\n\n[[package]]\nname = \"abi_stable\"\nversion = \"0.9.0\"\n\n\
         [[package]]\nname = \"abi_stable\"\nversion = \"0.9.1\"\n\n\
         [[package]]\nname = \"demo\"\nversion = \"0.1.0\"\n\n\
         [[package]]\nname = \"weird\"\nversion = \"not-a-version\"\n",
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
