//! Ubuntu OSV release mapping: Ubuntu's records name releases `Ubuntu:22.04:LTS` (long-term) or
//! `Ubuntu:23.10` (interim), and Pro streams `Ubuntu:Pro:18.04:LTS`, while a rootfs says `VERSION_ID="22.04"`.
//! The records below are written in the shape of Ubuntu's OSV export (UBUNTU-CVE ids, source package names,
//! one ECOSYSTEM range per release); the glibc versions are those of USN-6409-1 (CVE-2023-4911).

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use palisade_scan::{scan, scan_dir, Database, Ecosystem, Target, TargetKind};

fn record(id: &str, affected: &[(&str, &str, Option<&str>)]) -> String {
    let affected: Vec<serde_json::Value> = affected
        .iter()
        .map(|(eco, name, fixed)| {
            let mut events = vec![serde_json::json!({"introduced": "0"})];
            if let Some(f) = fixed {
                events.push(serde_json::json!({"fixed": f}));
            }
            serde_json::json!({
                "package": {"ecosystem": eco, "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            })
        })
        .collect();
    serde_json::json!({"schema_version": "1.6.0", "id": id, "modified": "2024-01-01T00:00:00Z", "affected": affected})
        .to_string()
}

fn database(dir: &Path) -> Database {
    let osv = dir.join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    let docs = [
        (
            "UBUNTU-CVE-2023-4911",
            vec![
                ("Ubuntu:22.04:LTS", "glibc", Some("2.35-0ubuntu3.4")),
                ("Ubuntu:23.04", "glibc", Some("2.37-0ubuntu2.1")),
            ],
        ),
        // A Pro (ESM) stream only: a plain 22.04 system does not get these fixes, and is not matched.
        ("UBUNTU-CVE-2099-0001", vec![("Ubuntu:Pro:22.04:LTS", "openssl", Some("3.0.2-0ubuntu1.99+esm1"))]),
        // Another LTS release: never matched on 22.04 even though unfixed.
        ("UBUNTU-CVE-2099-0002", vec![("Ubuntu:20.04:LTS", "glibc", None)]),
    ];
    for (id, affected) in docs {
        std::fs::write(osv.join(format!("{id}.json")), record(id, &affected)).unwrap();
    }
    let db_path = dir.join("ubuntu.db");
    let report = Database::import(&[osv], &db_path).unwrap();
    assert_eq!((report.advisories, report.failures.len()), (3, 0));
    Database::open(&db_path).unwrap()
}

fn rootfs(dir: &Path, version_id: &str, libc: &str) -> std::path::PathBuf {
    let root = dir.join(format!("rootfs-{version_id}-{libc}"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(root.join("etc/os-release"), format!("NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"{version_id}\"\n"))
        .unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        format!(
            "Package: libc6\nStatus: install ok installed\nSource: glibc\nVersion: {libc}\n\n\
             Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.2-0ubuntu1.10\n"
        ),
    )
    .unwrap();
    root
}

fn findings(db: &Database, root: &Path) -> Vec<(String, String, String)> {
    let inv = scan_dir(root).unwrap();
    assert!(inv.packages.iter().all(|p| p.ecosystem == Ecosystem::Ubuntu));
    let report = scan(vec![Target::new(root.display().to_string(), TargetKind::Filesystem, inv)], db);
    report.targets[0].findings.iter().map(|f| (f.package.clone(), f.version.clone(), f.id.clone())).collect()
}

fn f(p: &str, v: &str, id: &str) -> (String, String, String) {
    (p.to_owned(), v.to_owned(), id.to_owned())
}

#[test]
fn ubuntu_lts_and_interim_releases_match_os_release() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    // 22.04 (LTS record `Ubuntu:22.04:LTS`): vulnerable below 2.35-0ubuntu3.4 only; the Pro-only and the
    // 20.04-only records are not reported.
    assert_eq!(
        findings(&db, &rootfs(dir.path(), "22.04", "2.35-0ubuntu3.1")),
        [f("libc6", "2.35-0ubuntu3.1", "UBUNTU-CVE-2023-4911")]
    );
    assert_eq!(findings(&db, &rootfs(dir.path(), "22.04", "2.35-0ubuntu3.4")), []);
    // 23.04 (interim record `Ubuntu:23.04`, no suffix).
    assert_eq!(
        findings(&db, &rootfs(dir.path(), "23.04", "2.37-0ubuntu2")),
        [f("libc6", "2.37-0ubuntu2", "UBUNTU-CVE-2023-4911")]
    );
    assert_eq!(findings(&db, &rootfs(dir.path(), "23.04", "2.37-0ubuntu2.1")), []);
    // 20.04: its own unfixed record, not the 22.04 one.
    assert_eq!(
        findings(&db, &rootfs(dir.path(), "20.04", "2.31-0ubuntu9.9")),
        [f("libc6", "2.31-0ubuntu9.9", "UBUNTU-CVE-2099-0002")]
    );
    // A release no record names: nothing.
    assert_eq!(findings(&db, &rootfs(dir.path(), "24.04", "2.35-0ubuntu3.1")), []);
}

#[test]
fn ubuntu_releases_as_stored_and_queried() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let ids = |release: Option<&str>, name: &str, version: &str| -> Vec<String> {
        db.query_release(Ecosystem::Ubuntu, release, name, version).unwrap().into_iter().map(|f| f.id).collect()
    };
    assert_eq!(ids(Some("22.04"), "glibc", "2.35-0ubuntu3.1"), ["UBUNTU-CVE-2023-4911"]);
    // The suffix is not part of the stored release.
    assert!(ids(Some("22.04:LTS"), "glibc", "2.35-0ubuntu3.1").is_empty());
    // Pro streams keep their prefix.
    assert_eq!(ids(Some("Pro:22.04"), "openssl", "3.0.2-0ubuntu1.10"), ["UBUNTU-CVE-2099-0001"]);
    assert!(ids(Some("22.04"), "openssl", "3.0.2-0ubuntu1.10").is_empty());
    // Without a release every record of the ecosystem applies.
    assert_eq!(ids(None, "glibc", "2.31-0ubuntu9.9"), ["UBUNTU-CVE-2023-4911", "UBUNTU-CVE-2099-0002"]);
}
