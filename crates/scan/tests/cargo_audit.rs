//! Parity with cargo-audit on the same RustSec snapshot. This test installs nothing: when `cargo-audit` is
//! not on PATH it is skipped with a message, unless `PALISADE_REQUIRE_CARGO_AUDIT` is set (CI installs it
//! and sets the variable), in which case its absence fails the test.
//!
//! The snapshot is copied into a temporary git repository (cargo-audit opens its database with git) and
//! `cargo audit --db <dir> --no-fetch --json --file <lock>` runs on several real lockfiles. Its
//! vulnerabilities and its advisory warnings (unmaintained, unsound, notice) must equal Palisade's
//! findings and informational findings as sets of (crate, version, advisory id).
//!
//! Documented differences, excluded from the comparison and nowhere else:
//! 1. Yanked-crate warnings: cargo-audit looks releases up in the crates.io index; they carry no advisory
//!    and Palisade has no index. (Warnings without an advisory id are dropped from cargo-audit's side.)
//! 2. Packages whose `source` is crates.io's sparse index (`sparse+https://index.crates.io/`): Palisade
//!    matches them like any crates.io package; current cargo-audit admits them but its query drops every
//!    advisory (rustsec/rustsec#1694). They are dropped from Palisade's side (`Cargo.sources.lock` has
//!    one, `time 0.1.43`, whose RUSTSEC-2020-0071 Palisade reports and `tests/report.rs` asserts).
//!
//! Packages from outside crates.io (workspace members, path and git dependencies, other registries) are not
//! a difference: neither tool matches them (`Cargo.sources.lock` has one of each, with advisories on
//! crates.io for their names and versions).
//!
//! Withdrawn advisories are not a difference: both leave them out (asserted below for three of them).

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_scan::{scan, scan_file, Database, FileKind, Target, TargetKind};

type Triple = (String, String, String);

fn rustsec() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/advisories/rustsec");
    if local.exists() {
        local
    } else {
        PathBuf::from("/work/shared/data/advisories/rustsec")
    }
}

fn lockfiles() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        dir.join("../../Cargo.lock"),
        dir.join("tests/fixtures/cargo-audit/vulnerable.Cargo.lock"),
        dir.join("tests/fixtures/Cargo.v1.lock"),
        dir.join("tests/fixtures/Cargo.v4.lock"),
        dir.join("tests/fixtures/Cargo.sources.lock"),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if ft.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .args(["-c", "user.name=palisade", "-c", "user.email=test@palisade.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

/// Crates whose source is crates.io's sparse index (difference 2).
fn sparse_crates_io(lock: &Path) -> BTreeSet<(String, String)> {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(lock).unwrap()).unwrap();
    let packages = v.get("package").and_then(|p| p.as_array()).cloned().unwrap_or_default();
    packages
        .iter()
        .filter(|p| p.get("source").and_then(|s| s.as_str()) == Some("sparse+https://index.crates.io/"))
        .map(|p| {
            let s = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
            (s("name"), s("version"))
        })
        .collect()
}

/// Palisade's (vulnerabilities, informational) sets for one lockfile.
fn ours(db: &Database, lock: &Path) -> (BTreeSet<Triple>, BTreeSet<Triple>) {
    let sparse = sparse_crates_io(lock);
    let inv = scan_file(lock, FileKind::CargoLock).unwrap();
    let report = scan(vec![Target::new(lock.display().to_string(), TargetKind::Lockfile, inv)], db);
    let (mut vulns, mut warns) = (BTreeSet::new(), BTreeSet::new());
    for f in &report.targets[0].findings {
        if sparse.contains(&(f.package.clone(), f.version.clone())) {
            continue;
        }
        let t = (f.package.clone(), f.version.clone(), f.id.clone());
        if f.informational.is_some() {
            warns.insert(t);
        } else {
            vulns.insert(t);
        }
    }
    (vulns, warns)
}

fn theirs(db_dir: &Path, lock: &Path, work: &Path) -> (BTreeSet<Triple>, BTreeSet<Triple>) {
    let out = Command::new("cargo-audit")
        .args(["audit", "--db"])
        .arg(db_dir)
        .args(["--no-fetch", "--json", "--file"])
        .arg(lock)
        .current_dir(work)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("cargo audit output for {}: {e}: {}", lock.display(), String::from_utf8_lossy(&out.stderr))
    });
    let triple = |w: &serde_json::Value| -> Option<Triple> {
        let s = |p: &str| w.pointer(p).and_then(|x| x.as_str()).map(str::to_owned);
        Some((s("/package/name")?, s("/package/version")?, s("/advisory/id")?))
    };
    let vulns =
        json.pointer("/vulnerabilities/list").and_then(|l| l.as_array()).unwrap().iter().filter_map(triple).collect();
    // Difference 1: yanked warnings have no advisory, so `triple` drops them.
    let warns = json
        .get("warnings")
        .and_then(|w| w.as_object())
        .map(|m| m.values().filter_map(|l| l.as_array()).flatten().filter_map(triple).collect())
        .unwrap_or_default();
    (vulns, warns)
}

fn t(c: &str, v: &str, id: &str) -> Triple {
    (c.to_owned(), v.to_owned(), id.to_owned())
}

#[test]
fn same_findings_as_cargo_audit() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("scan.db");
    Database::import(&[rustsec()], &db_path).unwrap();
    let db = Database::open(&db_path).unwrap();

    // Without cargo-audit, Palisade's side is still checked on known cases.
    let fixture = &lockfiles()[1];
    let (v, w) = ours(&db, fixture);
    for want in [
        t("abi_stable", "0.9.0", "RUSTSEC-2020-0105"),
        t("smallvec", "0.6.9", "RUSTSEC-2019-0009"),
        t("smallvec", "1.6.0", "RUSTSEC-2021-0003"),
        t("time", "0.1.43", "RUSTSEC-2020-0071"),
        t("hyper", "0.14.9", "RUSTSEC-2021-0078"),
    ] {
        assert!(v.contains(&want), "{want:?} missing from {v:?}");
    }
    assert!(w.contains(&t("ansi_term", "0.12.1", "RUSTSEC-2021-0139")));
    assert!(w.contains(&t("atty", "0.2.14", "RUSTSEC-2021-0145")));
    // Withdrawn advisories (git2 RUSTSEC-2023-0002, daemonize RUSTSEC-2021-0147, dirs RUSTSEC-2020-0053).
    for (c, id) in [("git2", "RUSTSEC-2023-0002"), ("daemonize", "RUSTSEC-2021-0147"), ("dirs", "RUSTSEC-2020-0053")] {
        assert!(!v.iter().chain(&w).any(|x| x.0 == c && x.2 == id), "withdrawn {id} reported");
    }

    let found = Command::new("sh").args(["-c", "command -v cargo-audit"]).output().map(|o| o.status.success());
    if found.ok() != Some(true) {
        if std::env::var_os("PALISADE_REQUIRE_CARGO_AUDIT").is_some() {
            panic!("PALISADE_REQUIRE_CARGO_AUDIT is set but cargo-audit is not on PATH");
        }
        eprintln!(
            "SKIPPED: cargo-audit parity (cargo-audit not on PATH; install it with `cargo install cargo-audit --locked` \
             or set PALISADE_REQUIRE_CARGO_AUDIT=1 to make its absence a failure)"
        );
        return;
    }
    let db_dir = dir.path().join("advisory-db");
    copy_dir(&rustsec(), &db_dir);
    git(&db_dir, &["init", "-q"]);
    git(&db_dir, &["add", "-A"]);
    git(&db_dir, &["commit", "-q", "-m", "snapshot"]);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    let mut compared = 0;
    for lock in lockfiles() {
        let (ov, ow) = ours(&db, &lock);
        let (tv, tw) = theirs(&db_dir, &lock, &work);
        let diff = |a: &BTreeSet<Triple>, b: &BTreeSet<Triple>| a.difference(b).cloned().collect::<Vec<_>>();
        assert_eq!(
            (diff(&ov, &tv), diff(&tv, &ov)),
            (vec![], vec![]),
            "vulnerabilities (only Palisade, only cargo-audit) for {}",
            lock.display()
        );
        assert_eq!(
            (diff(&ow, &tw), diff(&tw, &ow)),
            (vec![], vec![]),
            "warnings (only Palisade, only cargo-audit) for {}",
            lock.display()
        );
        compared += ov.len() + ow.len();
    }
    // The comparison is not vacuous: the fixture alone has dozens of findings.
    assert!(compared >= 40, "only {compared} findings compared");
}
