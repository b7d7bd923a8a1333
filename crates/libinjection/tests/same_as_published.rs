//! This copy decides as the published `libinjectionrs` 0.1.1 does: the same SQLi verdict and fingerprint, the same
//! XSS verdict (and the same panics, which the WAF catches), on every line of the CRS regression tests (raw and
//! percent-decoded: SQLi, XSS and every other attack the CRS tests), on libinjection's whole keyword table alone
//! and in pairs, and on random strings built from SQL and HTML pieces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

const CRS_TESTS: &str = "/work/shared/data/crs/tests/regression/tests";

type Verdicts = (Option<(bool, Vec<u8>)>, Option<bool>);

fn ours(input: &[u8]) -> Verdicts {
    let sqli = catch_unwind(AssertUnwindSafe(|| {
        let r = palisade_libinjection::detect_sqli(input);
        (r.is_injection(), r.fingerprint.map(|f| f.as_bytes().to_vec()).unwrap_or_default())
    }));
    let xss = catch_unwind(AssertUnwindSafe(|| palisade_libinjection::detect_xss(input).is_injection()));
    (sqli.ok(), xss.ok())
}

fn published(input: &[u8]) -> Verdicts {
    let sqli = catch_unwind(AssertUnwindSafe(|| {
        let r = libinjectionrs::detect_sqli(input);
        (r.is_injection(), r.fingerprint.map(|f| f.as_bytes().to_vec()).unwrap_or_default())
    }));
    let xss = catch_unwind(AssertUnwindSafe(|| libinjectionrs::detect_xss(input).is_injection()));
    (sqli.ok(), xss.ok())
}

/// Compares both on `input`; counts SQLi and XSS reports (so a test can see it compared something that matters).
fn same(input: &[u8], reports: &mut (usize, usize)) {
    let a = ours(input);
    assert_eq!(a, published(input), "{:?}", String::from_utf8_lossy(input));
    reports.0 += usize::from(a.0.is_some_and(|s| s.0));
    reports.1 += usize::from(a.1 == Some(true));
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (s[i], s.get(i + 1).and_then(|&b| hex(b)), s.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

#[test]
fn crs_test_payloads_decide_the_same() {
    let mut files = Vec::new();
    yaml_files(Path::new(CRS_TESTS), &mut files);
    assert!(files.len() > 300, "{} test files", files.len());
    let mut reports = (0, 0);
    let mut inputs = 0;
    for f in files {
        for line in std::fs::read(&f).unwrap().split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            // The value after a YAML key, quotes and all, then unquoted and percent-decoded.
            let value = line.iter().position(|&b| b == b':').map_or(line, |i| line[i + 1..].trim_ascii());
            let unquoted = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
            for input in [line, value, unquoted, &percent_decode(unquoted)] {
                same(input, &mut reports);
                inputs += 1;
            }
        }
    }
    assert!(inputs > 40_000, "{inputs} inputs");
    // Many are attacks: the comparison covers both verdicts.
    assert!(reports.0 > 1_000 && reports.1 > 500, "{reports:?} reports");
}

#[test]
fn keywords_alone_and_in_pairs_decide_the_same() {
    let words: Vec<&[u8]> = palisade_libinjection::sqli::sqli_data::SQL_KEYWORDS
        .iter()
        .map(|k| k.word.as_bytes())
        .filter(|w| !w.starts_with(b"0"))
        .collect();
    assert!(words.len() > 700, "{} keywords", words.len());
    let mut reports = (0, 0);
    for (i, w) in words.iter().enumerate() {
        same(w, &mut reports);
        let lower = w.to_ascii_lowercase();
        // Pairs make the two-word keywords (`ORDER BY`, `UNION ALL`) and the folds between tokens.
        let next = words[(i * 7919 + 13) % words.len()];
        for input in [
            [&lower[..], b" ", next].concat(),
            [b"1' ", &w[..], b" ", next, b" 1"].concat(),
            [b"x\" ", &lower[..], b"(1)", b"--"].concat(),
        ] {
            same(&input, &mut reports);
        }
    }
    assert!(reports.0 > 100, "{reports:?} reports");
}

#[test]
fn random_sql_and_html_pieces_decide_the_same() {
    const PIECES: &[&str] = &[
        "'",
        "\"",
        "`",
        " ",
        "  ",
        "\t",
        "\n",
        "(",
        ")",
        ",",
        ";",
        "--",
        "#",
        "/*",
        "*/",
        "/*!",
        "=",
        "<",
        ">",
        "!",
        "||",
        "&&",
        "+",
        "-",
        "*",
        "/",
        "%",
        "@",
        "@@",
        "$",
        "\\",
        ".",
        "0x1F",
        "1",
        "42",
        "1e3",
        ".5",
        "N'",
        "x'",
        "b'",
        "select",
        "UNION",
        "all",
        "from",
        "where",
        "or",
        "AND",
        "not",
        "in",
        "like",
        "order by",
        "group",
        "by",
        "sleep",
        "benchmark",
        "char",
        "concat",
        "version",
        "user",
        "database",
        "if",
        "case",
        "when",
        "then",
        "else",
        "end",
        "exec",
        "xp_cmdshell",
        "waitfor",
        "delay",
        "information_schema",
        "table",
        "drop",
        "insert",
        "into",
        "values",
        "update",
        "set",
        "null",
        "true",
        "admin",
        "id",
        "name",
        "<script>",
        "</script>",
        "<img",
        "src=",
        "onerror=",
        "javascript:",
        "alert(1)",
        "<svg",
        "onload=",
        "style=",
        "expression(",
        "href=",
        "<a",
        "<!--",
        "-->",
        "&lt;",
        "&#x3c;",
        "<iframe",
        "data:",
        "vbscript:",
        "<body",
        "\u{a0}",
        "\u{0}",
        "é",
        "\u{ff}",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut reports = (0, 0);
    for _ in 0..60_000 {
        let n = 1 + next() % 9;
        let mut input = Vec::new();
        for _ in 0..n {
            input.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize].as_bytes());
        }
        same(&input, &mut reports);
    }
    assert!(reports.0 > 1_000 && reports.1 > 1_000, "{reports:?} reports");
}
