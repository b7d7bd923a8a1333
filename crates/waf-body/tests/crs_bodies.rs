//! Every request body in the CRS regression tests (/work/shared/data/crs/tests/regression/tests), through the
//! processor its Content-Type selects.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use palisade_waf_body as body;

fn crs_tests() -> PathBuf {
    // CI lays shared/ beside the clone; sessions have it at /work/shared.
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/crs/tests/regression/tests");
    if local.exists() {
        local
    } else {
        PathBuf::from("/work/shared/data/crs/tests/regression/tests")
    }
}

/// (file, test_id, content type, body) for every stage with a string `data` and a Content-Type header.
fn bodies() -> Vec<(String, String, String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![crs_tests()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for t in doc["tests"].as_sequence().into_iter().flatten() {
            let id = format!("{:?}", t["test_id"]);
            for s in t["stages"].as_sequence().into_iter().flatten() {
                let input = &s["input"];
                let Some(data) = input["data"].as_str() else { continue };
                let Some(headers) = input["headers"].as_mapping() else { continue };
                let ct = headers.iter().find_map(|(k, v)| {
                    (k.as_str()?.eq_ignore_ascii_case("content-type")).then(|| v.as_str().unwrap_or("").to_owned())
                });
                if let Some(ct) = ct {
                    out.push((name.clone(), id.clone(), ct, data.as_bytes().to_vec()));
                }
            }
        }
    }
    out
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Tally {
    ok: usize,
    errors: Vec<String>,
}

fn tally(kind: &str) -> Tally {
    let mut t = Tally::default();
    for (file, id, ct, data) in bodies() {
        let lc = ct.to_ascii_lowercase();
        let res = match kind {
            "multipart" if lc.starts_with("multipart/form-data") => {
                body::parse_multipart(&data, ct.as_bytes()).map(drop)
            }
            "json" if lc.contains("json") => body::parse_json(&data, 512).map(drop),
            "xml" if lc.contains("xml") => body::parse_xml(&data).map(drop),
            "urlencoded" if lc.starts_with("application/x-www-form-urlencoded") => {
                let (args, flags) = body::parse_urlencoded(&data);
                assert!(!flags.args_limit_exceeded, "{file} {id}");
                assert!(!args.is_empty() || data.is_empty(), "{file} {id}");
                Ok(())
            }
            _ => continue,
        };
        match res {
            Ok(()) => t.ok += 1,
            Err(e) => t.errors.push(format!("{file} {id}: {e}")),
        }
    }
    t
}

/// All CRS multipart bodies parse, except the five that ModSecurity rejects too (templated or header-less parts).
#[test]
fn crs_multipart_bodies() {
    let t = tally("multipart");
    assert_eq!(t.ok, 151);
    assert_eq!(
        t.errors,
        vec![
            "920400.yaml Number(1): Multipart: Invalid part header (colon missing).",
            "920400.yaml Number(2): Multipart: Invalid part header (colon missing).",
            "922130.yaml Number(5): Multipart: Part missing Content-Disposition header.",
            "922130.yaml Number(8): Multipart: Invalid part header (colon missing).",
            "932180.yaml Number(3): Multipart: Part missing Content-Disposition header.",
        ]
    );
}

/// CRS JSON bodies: only the deliberately invalid `test` body fails.
#[test]
fn crs_json_bodies() {
    let t = tally("json");
    assert_eq!(t.errors, vec!["920420.yaml Number(9): JSON parsing error at byte 0: invalid literal"]);
    assert!(t.ok > 0);
}

/// CRS XML bodies: the invalid `test` body and one SOAP body with backslash-escaped quotes (not XML) fail.
#[test]
fn crs_xml_bodies() {
    let t = tally("xml");
    assert!(t.ok > 0);
    assert_eq!(
        t.errors,
        vec![
            "920240.yaml Number(4): XML parsing error at 1:35: invalid character",
            "920420.yaml Number(10): XML parsing error at 1:1: malformed XML",
        ]
    );
}

#[test]
fn crs_urlencoded_bodies() {
    assert!(tally("urlencoded").ok > 100);
}

fn json(data: &str) -> Vec<(String, String)> {
    body::parse_json(data.as_bytes(), 512)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

fn p(n: &str, v: &str) -> (String, String) {
    (n.to_owned(), v.to_owned())
}

/// JSON bodies from the CRS 932 tests, with the names their rules read (`^(?:json\.)?` in 932240-style rules).
#[test]
fn crs_932_json_fixtures() {
    assert_eq!(json(r#"{ "() { :; }":"foo" }"#), vec![p("json.() { :; }", "foo")]);
    assert_eq!(json(r#"{"foo" : ";+cat+/e\\t\\*/pa\\?s\\wd"}"#), vec![p("json.foo", r";+cat+/e\t\*/pa\?s\wd")]);
    assert_eq!(
        json(
            r#"{"commit_message":"test","branch":"main","actions":[{"action":"create","file_path":"example.txt","last_commit_id":"example","content":"example","encoding":"base64"}]}"#
        ),
        vec![
            p("json.commit_message", "test"),
            p("json.branch", "main"),
            p("json.actions.0.action", "create"),
            p("json.actions.0.file_path", "example.txt"),
            p("json.actions.0.last_commit_id", "example"),
            p("json.actions.0.content", "example"),
            p("json.actions.0.encoding", "base64"),
            p("json.actions", "1"),
        ]
    );
    assert_eq!(
        json(r#"{"array":["php","test"]}"#),
        vec![p("json.array.0", "php"), p("json.array.1", "test"), p("json.array", "2")]
    );
    assert_eq!(json(r#"{"password__isnull":true}"#), vec![p("json.password__isnull", "true")]);
}
