//! Each inventory parser on hand-written fixtures in the formats' real layouts, with exact package lists.

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use palisade_scan::{scan_dir, scan_file, scan_lockfile, FileKind, Inventory};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn list(inv: &Inventory) -> Vec<String> {
    inv.packages.iter().map(|p| format!("{} {} {}", p.ecosystem, p.name, p.version)).collect()
}

fn file(name: &str, kind: FileKind) -> Inventory {
    scan_file(&fixture(name), kind).unwrap()
}

#[test]
fn cargo_lock_v1_and_v4() {
    assert_eq!(
        list(&file("Cargo.v1.lock", FileKind::CargoLock)),
        ["crates.io abi_stable 0.9.0", "crates.io demo 0.1.0", "crates.io libc 0.2.80"]
    );
    assert_eq!(list(&file("Cargo.v4.lock", FileKind::CargoLock)), ["crates.io demo 0.1.0", "crates.io smallvec 0.6.9"]);
}

/// Which packages are crates.io's: the `source` field, as cargo-audit reads it.
#[test]
fn cargo_lock_sources() {
    let inv = file("Cargo.sources.lock", FileKind::CargoLock);
    let got: Vec<String> = inv
        .packages
        .iter()
        .map(|p| format!("{} {} {}", p.name, p.version, p.non_registry_source.as_deref().unwrap_or("crates.io")))
        .collect();
    assert_eq!(
        got,
        [
            "abi_stable 0.9.0 path",
            "demo 0.1.0 path",
            "hyper 0.14.9 git+https://github.com/hyperium/hyper?tag=v0.14.9#e0ec5cad9ae3eaa5d9fffeeb636b1363029fcb9c",
            "smallvec 0.6.9 crates.io",
            "smallvec 1.6.0 sparse+https://crates.internal.example/index/",
            "time 0.1.43 crates.io",
        ]
    );
    // v1: the workspace package has no source either.
    let v1 = file("Cargo.v1.lock", FileKind::CargoLock);
    let sources: Vec<Option<&str>> = v1.packages.iter().map(|p| p.non_registry_source.as_deref()).collect();
    assert_eq!(sources, [None, Some("path"), None]);
}

#[test]
fn repo_cargo_lock_has_every_package() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = text.lines().filter(|l| l.trim() == "[[package]]").count();
    let inv = scan_lockfile(&path).unwrap();
    assert!(expected > 100);
    // Same name and version twice cannot happen in a Cargo.lock, so nothing is deduplicated away.
    assert_eq!(inv.packages.len(), expected);
    assert!(inv.packages.iter().any(|p| p.name == "palisade-scan"));
    assert!(inv.packages.iter().all(|p| p.source_file == path.display().to_string()));
}

#[test]
fn package_lock_v1_tree_and_v3_packages() {
    let want =
        ["npm @babel/code-frame 7.12.13", "npm express 4.17.1", "npm lodash 4.17.20", "npm qs 6.7.0", "npm qs 6.9.4"];
    assert_eq!(list(&file("package-lock.v1.json", FileKind::PackageLock)), want);
    assert_eq!(list(&file("package-lock.v3.json", FileKind::PackageLock)), want);
}

#[test]
fn yarn_classic_and_berry() {
    assert_eq!(
        list(&file("yarn.v1.lock", FileKind::YarnLock)),
        ["npm @babel/code-frame 7.12.13", "npm lodash 4.17.20", "npm minimist 1.2.5"]
    );
    // Workspace and patch entries are not registry packages.
    assert_eq!(
        list(&file("yarn.berry.lock", FileKind::YarnLock)),
        ["npm @babel/code-frame 7.12.13", "npm lodash 4.17.20"]
    );
}

#[test]
fn pnpm_v5_v6_v9() {
    let want = ["npm @babel/core 7.12.3", "npm react 17.0.2", "npm react-dom 17.0.2"];
    assert_eq!(list(&file("pnpm-lock.v5.yaml", FileKind::PnpmLock)), want);
    assert_eq!(
        list(&file("pnpm-lock.v6.yaml", FileKind::PnpmLock)),
        ["npm @babel/core 7.12.3", "npm react 17.0.2", "npm react-dom 17.0.2", "npm thing 1.0.0"]
    );
    assert_eq!(list(&file("pnpm-lock.v9.yaml", FileKind::PnpmLock)), want);
}

#[test]
fn requirements_pins_only_with_notes() {
    let inv = scan_lockfile(&fixture("requirements.txt")).unwrap();
    assert_eq!(list(&inv), ["PyPI Django 3.2.4", "PyPI Jinja2 2.11.2", "PyPI requests 2.25.1", "PyPI urllib3 1.26.4"]);
    let notes: Vec<&str> = inv.notes.iter().map(|n| n.rsplit_once("requirements.txt:").unwrap().1).collect();
    assert_eq!(
        notes,
        [
            "2: included file not followed: -r base-requirements.txt",
            "10: not pinned with ==: flask>=1.0",
            "11: not pinned: numpy",
            "12: not pinned with ==: pyyaml==5.*",
            "13: editable requirement skipped",
            "14: URL requirement skipped: pip @ https://github.com/pypa/pip/archive/1.3.1.zip",
            "15: not pinned with ==: zope.interface===4.7.1",
        ]
    );
}

#[test]
fn poetry_and_pipfile() {
    assert_eq!(list(&scan_lockfile(&fixture("poetry.lock")).unwrap()), ["PyPI jinja2 2.11.2", "PyPI markupsafe 1.1.1"]);
    assert_eq!(list(&scan_lockfile(&fixture("Pipfile.lock")).unwrap()), ["PyPI django 3.2.4", "PyPI pytest 6.2.4"]);
}

#[test]
fn go_mod_with_replaces_and_go_sum() {
    let inv = scan_lockfile(&fixture("go.mod")).unwrap();
    assert_eq!(
        list(&inv),
        [
            "Go github.com/gin-gonic/gin v1.6.2",
            "Go github.com/new/lib v1.2.0",
            "Go golang.org/x/net v0.0.0-20200226121028-0de0cce0169b",
            // The replace names v0.3.5 only, so the required v0.3.0 stays.
            "Go golang.org/x/text v0.3.0",
        ]
    );
    assert_eq!(inv.notes.len(), 1);
    assert!(inv.notes[0].contains("github.com/local/dep is replaced by a local directory"));
    assert_eq!(
        list(&scan_lockfile(&fixture("go.sum")).unwrap()),
        ["Go github.com/gin-gonic/gin v1.6.2", "Go golang.org/x/text v0.3.0"]
    );
}

#[test]
fn dpkg_status_with_sources_and_distro() {
    let inv = scan_dir(&fixture("rootfs-debian")).unwrap();
    assert_eq!(
        list(&inv),
        [
            "Debian bsdutils 1:2.36.1-8+deb11u1",
            "Debian libc6 2.31-13+deb11u5",
            "Debian libssl1.1 1.1.1n-0+deb11u3",
            "Debian tzdata 2021a-1+deb11u8",
        ]
    );
    let src: Vec<(Option<&str>, Option<&str>)> =
        inv.packages.iter().map(|p| (p.source_name.as_deref(), p.source_version.as_deref())).collect();
    assert_eq!(
        src,
        [(Some("util-linux"), Some("2.36.1-8+deb11u1")), (Some("glibc"), None), (Some("openssl"), None), (None, None)]
    );
    assert_eq!(inv.packages[0].match_key(), ("util-linux", "2.36.1-8+deb11u1"));
    assert_eq!(inv.packages[1].match_key(), ("glibc", "2.31-13+deb11u5"));
    assert_eq!(inv.packages[0].source_file, "var/lib/dpkg/status");
    let d = inv.distro.unwrap();
    assert_eq!((d.id.as_str(), d.release().as_deref()), ("debian", Some("11")));
}

#[test]
fn distroless_status_d() {
    let inv = scan_dir(&fixture("distroless")).unwrap();
    assert_eq!(list(&inv), ["Debian base-files 12.4+deb12u5", "Debian libc6 2.36-9+deb12u4"]);
    assert_eq!(inv.packages[1].source_file, "var/lib/dpkg/status.d/libc6");
}

#[test]
fn apk_installed_with_origin() {
    let inv = scan_dir(&fixture("rootfs-alpine")).unwrap();
    assert_eq!(list(&inv), ["Alpine busybox 1.31.1-r9", "Alpine libcrypto1.1 1.1.1d-r3", "Alpine musl 1.1.24-r2"]);
    assert_eq!(inv.packages[1].match_key(), ("openssl", "1.1.1d-r3"));
    assert_eq!(inv.distro.unwrap().release().as_deref(), Some("v3.11"));
}

#[test]
fn dir_walk_skips_vendored_trees_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("app/node_modules/x")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::create_dir_all(root.join("svc/target/debug")).unwrap();
    std::fs::copy(fixture("Cargo.v4.lock"), root.join("svc/Cargo.lock")).unwrap();
    std::fs::write(root.join("svc/Cargo.toml"), "[package]\nname='demo'\n").unwrap();
    std::fs::copy(fixture("Cargo.v1.lock"), root.join("svc/target/debug/Cargo.lock")).unwrap();
    std::fs::copy(fixture("package-lock.v3.json"), root.join("app/node_modules/x/package-lock.json")).unwrap();
    std::fs::copy(fixture("yarn.v1.lock"), root.join(".git/yarn.lock")).unwrap();
    std::fs::copy(fixture("go.mod"), root.join("app/go.mod")).unwrap();
    std::fs::copy(fixture("go.sum"), root.join("app/go.sum")).unwrap();
    // A symlink to a lockfile outside the root, and a symlinked directory: neither is followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("poetry.lock"), outside.path().join("poetry.lock")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("poetry.lock"), root.join("poetry.lock")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("linked")).unwrap();
    let inv = scan_dir(root).unwrap();
    let files: std::collections::BTreeSet<&str> = inv.packages.iter().map(|p| p.source_file.as_str()).collect();
    assert_eq!(files.into_iter().collect::<Vec<_>>(), ["app/go.mod", "svc/Cargo.lock"]);
    assert_eq!(inv.packages.len(), 6);
}

#[test]
fn unknown_and_broken_files_are_errors() {
    assert!(matches!(
        scan_lockfile(&fixture("rootfs-debian/etc/os-release")),
        Ok(inv) if inv.packages.is_empty()
    ));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "x").unwrap();
    assert_eq!(
        scan_lockfile(&p).unwrap_err().to_string(),
        format!("{}: not a known lockfile or package database", p.display())
    );
    let p = dir.path().join("Cargo.lock");
    std::fs::write(&p, "[[package]]\nname = 1\n").unwrap();
    assert!(scan_lockfile(&p).unwrap_err().to_string().contains("invalid Cargo.lock"));
    let p = dir.path().join("package-lock.json");
    std::fs::write(&p, "{").unwrap();
    assert!(scan_lockfile(&p).unwrap_err().to_string().contains("invalid JSON"));
}
