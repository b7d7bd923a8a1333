//! CRS 3.3 (Debian's modsecurity-crs) loads as written and scores a classic attack; skipped where not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};

use palisade_waf::{RequestHead, RuleSet};

#[test]
fn crs_3_3_loads_and_blocks_sqli() {
    let rules_dir = Path::new("/usr/share/modsecurity-crs/rules");
    let setup = Path::new("/etc/modsecurity/crs/crs-setup.conf");
    if !rules_dir.is_dir() || !setup.is_file() {
        return;
    }
    let mut files: Vec<PathBuf> = vec![setup.to_path_buf()];
    let mut rules: Vec<PathBuf> = std::fs::read_dir(rules_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    rules.sort();
    files.extend(rules);
    let rs = match RuleSet::load(&files, "SecRuleEngine On\nSecRequestBodyAccess On") {
        Ok(r) => r,
        Err(e) => panic!("CRS 3.3 failed to load: {e}"),
    };
    assert!(rs.rule_count() > 500, "{}", rs.rule_count());
    let head = RequestHead {
        method: "GET",
        uri: b"/?id=1%27%20OR%20%271%27=%271",
        protocol: "HTTP/1.1",
        headers: vec![(b"Host", b"localhost"), (b"User-Agent", b"Mozilla/5.0"), (b"Accept", b"*/*")],
    };
    let mut tx = rs.transaction("t", "127.0.0.1".parse().unwrap());
    let mut iv = tx.process_request_headers(&head);
    if iv.is_none() {
        iv = tx.process_request_body(b"");
    }
    let iv = iv.expect("a SQL injection must be blocked at PL1");
    assert_eq!((iv.status, iv.rule_id), (403, 949110));
    assert!(tx.matches().iter().any(|m| m.id == 942100), "{:?}", tx.matches().iter().map(|m| m.id).collect::<Vec<_>>());
    let mut tx = rs.transaction("t", "127.0.0.1".parse().unwrap());
    let benign = RequestHead { uri: b"/index.html?page=2", ..head };
    assert_eq!(tx.process_request_headers(&benign), None);
    assert_eq!(tx.process_request_body(b""), None);
}
