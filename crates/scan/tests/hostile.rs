//! Hostile and malformed input: every case is an error or a reported failure, never a panic.

use std::io::Write;

use palisade_scan::{alpine, load, osv, rustsec, Database, DbError, Ecosystem, ParseError};

#[test]
fn bad_rustsec_front_matter() {
    assert!(matches!(rustsec::parse("# no front matter"), Err(ParseError::NotAdvisory(_))));
    assert!(matches!(rustsec::parse("```toml\n[advisory]\nid = \"X\"\n"), Err(ParseError::Invalid(_))));
    assert!(matches!(rustsec::parse("```toml\n[advisory\nid = 1\n```\n"), Err(ParseError::Toml(_))));
    assert!(matches!(
        rustsec::parse("```toml\n[advisory]\nid = \"RUSTSEC-0000-0000\"\n```\n"),
        Err(ParseError::Toml(_))
    ));
    assert!(matches!(
        rustsec::parse("```toml\n[advisory]\nid = \"\"\npackage = \"x\"\n```\n"),
        Err(ParseError::MissingField("advisory.id"))
    ));
    let bad_req = "```toml\n[advisory]\nid = \"RUSTSEC-0000-0000\"\npackage = \"x\"\n[versions]\npatched = [\">= 1.0 <<\"]\n```\n";
    assert!(matches!(rustsec::parse(bad_req), Err(ParseError::Rule(_))));
    let huge = "```toml\n[advisory]\nid = \"RUSTSEC-0000-0000\"\npackage = \"x\"\n[versions]\npatched = [\">= 99999999999999999999999.0.0\"]\n```\n";
    assert!(matches!(rustsec::parse(huge), Err(ParseError::Rule(_))));
}

#[test]
fn bad_osv_documents() {
    assert!(matches!(osv::parse_json(b"{"), Err(ParseError::Json(_))));
    assert!(matches!(osv::parse_json(b"[]"), Err(ParseError::Json(_))));
    assert!(matches!(osv::parse_json(b"{\"id\": \"\"}"), Err(ParseError::MissingField("id"))));
    let two = br#"{"id":"X-1","affected":[{"package":{"ecosystem":"npm","name":"a"},
        "ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1.0.0"}]}]}]}"#;
    assert!(matches!(osv::parse_json(two), Err(ParseError::Invalid(_))));
    assert!(matches!(osv::parse_yaml("id: [unclosed"), Err(ParseError::Yaml(_))));
    // Unknown ecosystems and GIT ranges leave nothing to match, which is not an error.
    let other = br#"{"id":"X-2","affected":[{"package":{"ecosystem":"Maven","name":"a:b"},"versions":["1"]}]}"#;
    assert!(osv::parse_json(other).unwrap().affected.is_empty());
    assert!(alpine::parse_secdb("distroversion: [").is_err());
}

#[test]
fn huge_numbers_in_versions() {
    let big = "9".repeat(200);
    for eco in Ecosystem::ALL {
        let v = format!("{big}.0.0");
        // Long digit runs compare without overflow where the grammar allows them.
        let _ = palisade_scan::compare(eco, &v, "1.0.0");
        let _ = palisade_scan::compare(eco, &format!("{big}:{big}"), "1.0.0");
        let _ = palisade_scan::compare(eco, &format!("1.0_rc{big}-r{big}"), "1.0");
        let _ = palisade_scan::compare(eco, &format!("{big}!{big}.post{big}.dev{big}+{big}"), "1.0");
    }
    assert!(palisade_scan::compare(Ecosystem::Debian, &format!("{big}:1.0"), "1.0").is_err());
    assert!(palisade_scan::compare(Ecosystem::PyPI, &"9".repeat(300), "1.0").is_err());
}

fn osv_doc(id: &str, withdrawn: bool) -> String {
    let w = if withdrawn { r#""withdrawn":"2024-01-01T00:00:00Z","# } else { "" };
    format!(
        r#"{{"id":"{id}",{w}"aliases":["CVE-2099-{}"],"summary":"test {id}","database_specific":{{"severity":"MODERATE"}},
        "affected":[{{"package":{{"ecosystem":"npm","name":"left-pad"}},
        "ranges":[{{"type":"SEMVER","events":[{{"introduced":"0"}},{{"fixed":"1.3.0"}}]}}]}}]}}"#,
        id.len()
    )
}

#[test]
fn zip_of_osv_files_and_hostile_entries() {
    let dir = tempfile::tempdir().unwrap();
    let zpath = dir.path().join("npm.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zpath).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("GHSA-aaaa-bbbb-cccc.json", opts).unwrap();
    z.write_all(osv_doc("GHSA-aaaa-bbbb-cccc", false).as_bytes()).unwrap();
    z.start_file("GHSA-dddd-eeee-ffff.json", opts).unwrap();
    z.write_all(osv_doc("GHSA-dddd-eeee-ffff", true).as_bytes()).unwrap();
    z.start_file("broken.json", opts).unwrap();
    z.write_all(b"{not json").unwrap();
    z.start_file("README.txt", opts).unwrap();
    z.write_all(b"ignored").unwrap();
    z.finish().unwrap();

    let report = load(&[&zpath]).unwrap();
    assert_eq!(report.files_read, 3);
    assert_eq!(report.advisories.len(), 2);
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].path.ends_with("npm.zip!broken.json"));

    let db_path = dir.path().join("db");
    let r = Database::import(&[&zpath], &db_path).unwrap();
    assert_eq!((r.advisories, r.withdrawn, r.packages), (1, 1, 1));
    let db = Database::open(&db_path).unwrap();
    let f = db.query(Ecosystem::Npm, "left-pad", "1.2.9").unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, "GHSA-aaaa-bbbb-cccc");
    assert_eq!(f[0].aliases, ["CVE-2099-19"]);
    assert_eq!(f[0].severity, palisade_scan::Severity::Medium);
    assert_eq!(f[0].fixed, ["1.3.0"]);
    assert!(db.query(Ecosystem::Npm, "left-pad", "v1.3.0").unwrap().is_empty());
    assert!(db.query(Ecosystem::Npm, "right-pad", "1.0.0").unwrap().is_empty());

    // Not a zip at all.
    let fake = dir.path().join("fake.zip");
    std::fs::write(&fake, b"PK\x03\x04 garbage").unwrap();
    let r = load(&[&fake]).unwrap();
    assert_eq!(r.failures.len(), 1);
    assert!(r.failures[0].reason.starts_with("not a readable zip"));
}

#[test]
fn corrupt_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    assert!(matches!(Database::open(&p), Err(DbError::Io { .. })));
    for bytes in [
        &b""[..],
        b"PALSCDB\0",
        b"PALSCDB\0\x02\0\0\0",
        b"PALSCDB\0\x02\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff",
        b"PALSCDB\0\x02\0\0\0\x04\0\0\0\0\0\0\0{}{}",
        b"XXXXXXXX\x01\0\0\0\x02\0\0\0\0\0\0\0{}",
    ] {
        std::fs::write(&p, bytes).unwrap();
        assert!(matches!(Database::open(&p), Err(DbError::Format { .. })), "{bytes:?}");
    }
    // A format-1 file (Ubuntu releases stored with their `:LTS` suffix) is refused with a hint; the same
    // header under format 2 opens.
    let header = br#"{"built_at":0,"sources":[],"per_ecosystem":{},"advisories":0,"index":[]}"#;
    for (version, ok) in [(1u32, false), (2, true)] {
        let mut f = b"PALSCDB\0".to_vec();
        f.extend_from_slice(&version.to_le_bytes());
        f.extend_from_slice(&(header.len() as u64).to_le_bytes());
        f.extend_from_slice(header);
        std::fs::write(&p, &f).unwrap();
        match Database::open(&p) {
            Ok(_) => assert!(ok),
            Err(e) => assert_eq!(
                (ok, e.to_string()),
                (
                    false,
                    format!(
                        "database {} is not a valid palisade scan database: unsupported format version 1 (this build \
                     reads 2; rebuild it with `palisade scan db import`)",
                        p.display()
                    )
                )
            ),
        }
    }
    // An index entry pointing past the body.
    let header = br#"{"built_at":0,"sources":[],"per_ecosystem":{},"advisories":0,"index":[{"ecosystem":"Npm","release":"","name":"a","offset":0,"len":99}]}"#;
    let mut f = b"PALSCDB\0\x02\0\0\0".to_vec();
    f.extend_from_slice(&(header.len() as u64).to_le_bytes());
    f.extend_from_slice(header);
    std::fs::write(&p, &f).unwrap();
    assert!(matches!(Database::open(&p), Err(DbError::Format { .. })));
    // A group whose body is not valid records fails the query with a format error.
    let header = br#"{"built_at":0,"sources":[],"per_ecosystem":{},"advisories":0,"index":[{"ecosystem":"Npm","release":"","name":"a","offset":0,"len":3}]}"#;
    let mut f = b"PALSCDB\0\x02\0\0\0".to_vec();
    f.extend_from_slice(&(header.len() as u64).to_le_bytes());
    f.extend_from_slice(header);
    f.extend_from_slice(b"[{x");
    std::fs::write(&p, &f).unwrap();
    let db = Database::open(&p).unwrap();
    assert!(matches!(db.query(Ecosystem::Npm, "a", "1.0.0"), Err(DbError::Format { .. })));
    assert!(matches!(db.query(Ecosystem::Npm, "a", "not-a-version"), Err(DbError::Version(_))));
}

#[test]
fn import_missing_source_is_an_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    assert!(matches!(Database::import(&[dir.path().join("nope")], &out), Err(DbError::Source(_))));
    assert!(!out.exists());
}
