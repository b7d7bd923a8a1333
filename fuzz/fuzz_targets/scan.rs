//! Untrusted scanner input: version strings of every ecosystem, advisory files (RustSec, OSV JSON
//! and YAML, Alpine secdb), lockfiles and package databases, Go binaries, container images (as a
//! docker-archive tar), Dockerfiles and Kubernetes YAML, files searched for secrets, and ignore
//! files. The first byte picks the parser. Must never panic; version comparison must be a total
//! order on what parses (antisymmetric, reflexive).
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use palisade_scan::{compare, Ecosystem, FileKind};

const KINDS: [(FileKind, &str); 14] = [
    (FileKind::CargoLock, "Cargo.lock"),
    (FileKind::PackageLock, "package-lock.json"),
    (FileKind::YarnLock, "yarn.lock"),
    (FileKind::PnpmLock, "pnpm-lock.yaml"),
    (FileKind::Requirements, "requirements.txt"),
    (FileKind::PoetryLock, "poetry.lock"),
    (FileKind::PipfileLock, "Pipfile.lock"),
    (FileKind::GoMod, "go.mod"),
    (FileKind::GoSum, "go.sum"),
    (FileKind::DpkgStatus, "status"),
    (FileKind::DpkgStatusD, "pkg"),
    (FileKind::ApkInstalled, "installed"),
    (FileKind::OsRelease, "os-release"),
    (FileKind::GoBinary, "app"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = std::str::from_utf8(rest).ok();
    match selector % 10 {
        0 => {
            // Two versions split at the first newline, compared in every ecosystem.
            let Some(t) = text else { return };
            let (a, b) = t.split_once('\n').unwrap_or((t, t));
            for eco in Ecosystem::ALL {
                if let (Ok(ab), Ok(ba)) = (compare(eco, a, b), compare(eco, b, a)) {
                    assert_eq!(ab, ba.reverse(), "{eco:?}: {a:?} vs {b:?}");
                }
                if let Ok(aa) = compare(eco, a, a) {
                    assert_eq!(aa, Ordering::Equal, "{eco:?}: {a:?}");
                }
            }
        }
        1 => {
            if let Some(t) = text {
                let _ = palisade_scan::rustsec::parse(t);
                let _ = palisade_scan::osv::parse_yaml(t);
                let _ = palisade_scan::alpine::parse_secdb(t);
            }
            let _ = palisade_scan::osv::parse_json(rest);
        }
        2 | 3 => {
            // A lockfile or package database of the kind the next byte names.
            let Some((&k, body)) = rest.split_first() else { return };
            let (kind, name) = KINDS[usize::from(k) % KINDS.len()];
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join(name);
            std::fs::write(&path, body).expect("write");
            let _ = palisade_scan::scan_file(&path, kind);
        }
        4 => {
            let _ = palisade_scan::go_build_info(rest);
        }
        5 => {
            // A docker-archive tar, with small limits (a bomb must be an error, not a full disk).
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("image.tar");
            std::fs::write(&path, rest).expect("write");
            let _ = palisade_scan::scan_image(&path, &palisade_scan::Limits::new(1 << 20, 4 << 20, 1000));
        }
        6 | 7 => {
            if let Some(t) = text {
                let kind = if selector % 10 == 6 { palisade_scan::ConfigKind::Dockerfile } else { palisade_scan::ConfigKind::Yaml };
                let _ = palisade_scan::lint_config(kind, "fuzz", t);
            }
        }
        8 => {
            for f in palisade_scan::find_secrets("fuzz.env", rest) {
                // Never the whole secret: at most 4 characters and an ellipsis are shown.
                assert!(f.redacted.chars().count() <= 5, "{}", f.redacted);
            }
        }
        _ => {
            if let Some(t) = text {
                let _ = palisade_scan::IgnoreFile::parse(".palisadeignore.yaml", t);
            }
        }
    }
});
