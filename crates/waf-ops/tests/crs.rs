//! Every operator and transformation the CRS (v4 in /work/shared/data/crs, 3.3 in /usr/share/modsecurity-crs)
//! uses must parse, and every @rx must compile.
#![allow(clippy::unwrap_used)]

use palisade_waf_ops::{MacroEnv, Operator, Transform};
use std::path::{Path, PathBuf};

struct NoMacros;
impl MacroEnv for NoMacros {
    fn expand(&self, t: &str) -> std::sync::Arc<[u8]> {
        t.as_bytes().into()
    }
}

/// (operator text, actions text) of each SecRule, with Apache's `\"` unescaping inside quotes.
fn rules(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let joined = text.replace("\\\n", "");
    let mut out = vec![];
    for line in joined.lines() {
        let l = line.trim_start();
        let Some(rest) = l.strip_prefix("SecRule ") else { continue };
        let toks = tokens(rest);
        assert!(toks.len() >= 2, "{l}");
        out.push((toks[1].clone(), toks.get(2).cloned().unwrap_or_default()));
    }
    out
}

fn tokens(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = vec![];
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let mut t = Vec::new();
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'"' {
                    i += 1;
                }
                t.push(b[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != b' ' {
                t.push(b[i]);
                i += 1;
            }
        }
        out.push(String::from_utf8(t).unwrap());
    }
    out
}

fn conf_files() -> Vec<PathBuf> {
    let mut v = vec![];
    for dir in ["/work/shared/data/crs/rules", "/usr/share/modsecurity-crs/rules"] {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "conf") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn every_crs_operator_parses_and_every_rx_compiles() {
    let files = conf_files();
    assert!(files.iter().any(|f| f.starts_with("/work/shared/data/crs/rules")), "CRS v4 rules missing");
    let (mut ops, mut rx) = (0, 0);
    let mut failures = vec![];
    for f in &files {
        for (op, _) in rules(f) {
            ops += 1;
            if !op.trim_start_matches('!').starts_with('@') || op.trim_start_matches('!').starts_with("@rx") {
                rx += 1;
            }
            match Operator::parse(&op, f.parent().unwrap()) {
                Ok(o) => {
                    // Exercise it once on a hostile-looking value.
                    let mut caps = vec![];
                    let _ = o.matches(b"\xff\x00<script>' or 1=1--%u0041../../etc/passwd", &NoMacros, Some(&mut caps));
                }
                Err(e) => failures.push(format!("{}: {op:.120}: {e}", f.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(ops > 1000 && rx > 500, "only {ops} operators / {rx} regexes found");
}

#[test]
fn every_crs_transformation_parses() {
    let mut n = 0;
    let mut failures = vec![];
    for f in conf_files() {
        for (_, actions) in rules(&f) {
            for a in actions.split(',') {
                if let Some(t) = a.trim().strip_prefix("t:") {
                    n += 1;
                    if let Err(e) = Transform::parse(t) {
                        failures.push(format!("{}: {e}", f.display()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(n > 1000, "only {n} transformations found");
}
