//! SARIF 2.1.0 and CycloneDX 1.5 output of a real report (a vulnerable Cargo.lock against the RustSec
//! snapshot, plus a tree with a misconfigured Dockerfile and a secret), validated against the published
//! JSON schemas bundled in tests/schemas/ (see its README for where each file comes from).

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use jsonschema::{Draft, Resource};
use palisade_scan::{
    build_report, scan_content, scan_dir, scan_lockfile, ContentOptions, Database, Report, Target, TargetKind,
};
use serde_json::Value;

fn rustsec() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/advisories/rustsec");
    if local.exists() {
        local
    } else {
        PathBuf::from("/work/shared/data/advisories/rustsec")
    }
}

fn schema(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path)).collect()
}

const LOCK: &str = "version = 3\n\n\
[[package]]\nname = \"demo\"\nversion = \"0.1.0\"\n\n\
[[package]]\nname = \"smallvec\"\nversion = \"0.6.9\"\n\
source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n\
[[package]]\nname = \"abi_stable\"\nversion = \"0.9.0\"\n\
source = \"registry+https://github.com/rust-lang/crates.io-index\"\n";

/// A lockfile target and a source-tree target (with packages, a Dockerfile and a secret).
fn report(dir: &Path) -> Report {
    let db_path = dir.join("scan.db");
    Database::import(&[rustsec()], &db_path).unwrap();
    let db = Database::open(&db_path).unwrap();
    let lock = dir.join("Cargo.lock");
    std::fs::write(&lock, LOCK).unwrap();
    let tree = dir.join("src tree");
    std::fs::create_dir_all(tree.join("web")).unwrap();
    std::fs::write(
        tree.join("web/package-lock.json"),
        r#"{"lockfileVersion":3,"packages":{"node_modules/@babel/core":{"version":"7.0.0"},"node_modules/qs":{"version":"6.7.0"}}}"#,
    )
    .unwrap();
    std::fs::write(tree.join("Dockerfile"), "FROM python\nRUN curl -sSL https://x.example/i.sh | sh\n").unwrap();
    std::fs::write(tree.join("settings.py"), "API_KEY = \"q7Zp2Lx9Vw4Rt8Ny3Bc6\"\n").unwrap();
    let content = scan_content(&tree, &ContentOptions::default(), &mut |_| {}).unwrap();
    let targets = vec![
        Target::new(lock.display().to_string(), TargetKind::Lockfile, scan_lockfile(&lock).unwrap()),
        Target::new(tree.display().to_string(), TargetKind::Filesystem, scan_dir(&tree).unwrap()).with_content(content),
    ];
    build_report(targets, Some(&db))
}

#[test]
fn sarif_is_valid_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let report = report(dir.path());
    let sarif: Value = serde_json::from_str(&report.to_sarif()).unwrap();
    let validator = jsonschema::options().with_draft(Draft::Draft4).build(&schema("sarif-schema-2.1.0.json")).unwrap();
    assert_eq!(errors(&validator, &sarif), Vec::<String>::new());

    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "palisade");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    // Every result points at its rule by id and index.
    for r in results {
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], r["ruleId"]);
        assert!(r["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    let by_rule = |id: &str| results.iter().find(|r| r["ruleId"] == id).unwrap();
    let rule = |id: &str| rules.iter().find(|r| r["id"] == id).unwrap();

    // The vulnerable crate is located at its `name = ` line in the lockfile.
    let abi = by_rule("RUSTSEC-2020-0105");
    assert_eq!(abi["level"], "error");
    let loc = &abi["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], format!("file://{}/Cargo.lock", dir.path().display()));
    assert_eq!(loc["region"]["startLine"], 13);
    assert_eq!(rule("RUSTSEC-2020-0105")["shortDescription"]["text"], "Update unsound DrainFilter and RString::retain");
    assert!(
        rule("RUSTSEC-2020-0105")["properties"]["security-severity"].as_str().unwrap().parse::<f32>().unwrap() >= 7.0
    );

    let pipe = by_rule("PAL-DF-006");
    assert_eq!(pipe["level"], "error");
    let uri = pipe["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap();
    assert!(uri.ends_with("/src%20tree/Dockerfile"), "{uri}");
    assert_eq!(pipe["locations"][0]["physicalLocation"]["region"]["startLine"], 2);
    assert_eq!(rule("PAL-DF-006")["properties"]["security-severity"], "8.0");
    assert_eq!(
        rule("PAL-DF-006")["help"]["text"],
        "Download to a file, verify its checksum or signature, then run it."
    );

    let secret = by_rule("PAL-SEC-010");
    assert_eq!(secret["message"]["text"], "Hard-coded secret (q7Zp…)");
    assert!(secret["partialFingerprints"]["palisadeSecret/v1"].as_str().unwrap().starts_with("sha256:"));
    assert!(!report.to_sarif().contains("q7Zp2Lx9"));
}

#[test]
fn cyclonedx_is_valid_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let report = report(dir.path());
    let text = report.to_cyclonedx();
    let bom: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::options()
        .with_draft(Draft::Draft7)
        .with_resource(
            "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json",
            Resource::from_contents(schema("spdx.schema.json")).unwrap(),
        )
        .with_resource(
            "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json",
            Resource::from_contents(schema("jsf-0.82.schema.json")).unwrap(),
        )
        .build(&schema("bom-1.5.schema.json"))
        .unwrap();
    assert_eq!(errors(&validator, &bom), Vec::<String>::new());
    // The validator does check: a wrong specVersion type and a bad serial number are refused.
    let mut bad = bom.clone();
    bad["serialNumber"] = "not-a-urn".into();
    bad["components"][0]["type"] = "gadget".into();
    assert_eq!(errors(&validator, &bad).len(), 2);

    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert!(bom["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
    let purls: Vec<&str> = bom["components"].as_array().unwrap().iter().map(|c| c["purl"].as_str().unwrap()).collect();
    assert_eq!(
        purls,
        [
            "pkg:cargo/abi_stable@0.9.0",
            "pkg:cargo/demo@0.1.0",
            "pkg:cargo/smallvec@0.6.9",
            "pkg:npm/%40babel/core@7.0.0",
            "pkg:npm/qs@6.7.0",
        ]
    );
    let vulns = bom["vulnerabilities"].as_array().unwrap();
    let ids: Vec<&str> = vulns.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"RUSTSEC-2020-0105"), "{ids:?}");
    let abi = vulns.iter().find(|v| v["id"] == "RUSTSEC-2020-0105").unwrap();
    assert_eq!(abi["affects"][0]["ref"], "pkg:cargo/abi_stable@0.9.0");
    assert_eq!(abi["ratings"][0]["severity"], "high");
    assert_eq!(abi["source"]["name"], "RustSec");
    // Two BOMs of the same report differ only in serial number and timestamp.
    let again: Value = serde_json::from_str(&report.to_cyclonedx()).unwrap();
    assert_ne!(again["serialNumber"], bom["serialNumber"]);
    assert_eq!(again["components"], bom["components"]);
}
