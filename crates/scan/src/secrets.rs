//! Secret detection in file contents (`PAL-SEC-…`): private keys, AWS, GCP, GitHub, GitLab and Slack
//! credentials, JWTs, and generic `password = "…"` assignments whose value has high Shannon entropy.
//! A finding never carries the secret: only its first four characters ([`SecretFinding::redacted`]) and a
//! fingerprint (SHA-256 of rule id and value) that the ignore file can name. Binary data is skipped.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cvss::Severity;
use crate::rules::rule;

/// Minimum Shannon entropy (bits per character) of a generic assignment's value.
pub const ENTROPY_THRESHOLD: f64 = 3.0;
/// Longest line examined; longer lines (minified code, embedded blobs) are cut there.
const MAX_LINE: usize = 16 << 10;

/// One secret found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecretFinding {
    /// Rule id, e.g. `PAL-SEC-005`.
    pub rule_id: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's title.
    pub title: String,
    /// File, relative to the scanned directory or inside the image.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The first four characters of the value and `…`.
    pub redacted: String,
    /// `sha256:` and 32 hex digits of SHA-256(rule id, NUL, value): stable across files and lines.
    pub fingerprint: String,
    /// Image layer digest, for images.
    pub layer: Option<String>,
}

/// `abcd…`: the first four characters, never more.
pub fn redact(value: &str) -> String {
    let mut s: String = value.chars().take(4).collect();
    s.push('…');
    s
}

/// The fingerprint of a value found by a rule.
pub fn fingerprint(rule_id: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    h.update([0u8]);
    h.update(value.as_bytes());
    let d = h.finalize();
    let mut s = String::from("sha256:");
    for b in d.iter().take(16) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Shannon entropy of the characters of `s`, in bits per character.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = std::collections::BTreeMap::<char, usize>::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

struct Patterns {
    pem: Regex,
    pem_body: Regex,
    aws_id: Regex,
    aws_secret: Regex,
    gcp_type: Regex,
    gcp_key: Regex,
    specific: Vec<(&'static str, Regex)>,
    generic: Regex,
}

fn patterns() -> Option<&'static Patterns> {
    static P: OnceLock<Option<Patterns>> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).ok();
        Some(Patterns {
            pem: re(r"-----BEGIN ((?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----")?,
            pem_body: re(r"^[A-Za-z0-9+/=]{20,}$")?,
            aws_id: re(r"\b((?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})\b")?,
            aws_secret: re(
                r#"(?i)\baws[_.\-]?(?:secret[_.\-]?)?(?:access[_.\-]?)?key['"]?\s*(?:=|:|:=|=>)\s*['"]?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
            )?,
            gcp_type: re(r#""type"\s*:\s*"service_account""#)?,
            gcp_key: re(r#""private_key"\s*:\s*"(?:-----BEGIN PRIVATE KEY-----(?:\\n)?)?([^"\\]{4,})"#)?,
            specific: vec![
                ("PAL-SEC-005", re(r"\b(gh[pousr]_[A-Za-z0-9]{36,255})\b")?),
                ("PAL-SEC-005", re(r"\b(github_pat_[A-Za-z0-9_]{50,255})\b")?),
                ("PAL-SEC-006", re(r"\b(glpat-[A-Za-z0-9_\-]{20,})")?),
                ("PAL-SEC-007", re(r"\b(xox[baprs]-[A-Za-z0-9\-]{10,})")?),
                ("PAL-SEC-008", re(r"(https://hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]{6,}/[AB][A-Z0-9]{6,}/[A-Za-z0-9]{16,})")?),
                ("PAL-SEC-009", re(r"\b(eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{10,})")?),
            ],
            generic: re(
                r#"(?i)([A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|auth[_\-]?key|credentials?))["']?\s*(?:=|:=|=>|:)\s*(?:"([^"]{8,200})"|'([^']{8,200})'|([^\s"',;]{8,200}))"#,
            )?,
        })
    })
    .as_ref()
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// A JWT's header is base64url JSON naming an algorithm.
fn is_jwt(token: &str) -> bool {
    let header = token.split('.').next().unwrap_or_default();
    b64url_decode(header)
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|v| v.get("alg").is_some_and(serde_json::Value::is_string))
}

/// Values that stand for a secret rather than being one: templates, variables, code references.
fn is_placeholder(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let code_ref = {
        let parts: Vec<&str> = v.split('.').collect();
        parts.len() > 1
            && parts.iter().all(|p| {
                !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '[' || c == ']')
            })
            && v.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    };
    v.starts_with('$')
        || v.starts_with('%')
        || v.starts_with('{')
        || v.starts_with('[')
        || v.starts_with('<')
        || v.contains("{{")
        || v.contains("${")
        || v.contains('(')
        || v.contains("***")
        || v.contains("xxxx")
        || v.contains("XXXX")
        || lower.contains("example")
        || lower.contains("placeholder")
        || lower.contains("changeme")
        || lower.contains("redacted")
        || lower.contains("your_")
        || lower.contains("your-")
        || lower.starts_with("env:")
        || lower.starts_with("file:")
        || lower.starts_with("vault:")
        || v.starts_with("-----")
        || v.contains("...")
        || v.contains('…')
        || v.contains('\u{FFFD}')
        || code_ref
}

fn make(id: &str, file: &str, line: usize, value: &str) -> SecretFinding {
    let r = rule(id);
    SecretFinding {
        rule_id: id.to_owned(),
        severity: r.map(|r| r.severity).unwrap_or_default(),
        title: r.map(|r| r.title).unwrap_or_default().to_owned(),
        file: file.to_owned(),
        line,
        redacted: redact(value),
        fingerprint: fingerprint(id, value),
        layer: None,
    }
}

/// True when the data looks binary (a NUL byte in its first 8 KiB).
pub fn is_binary(data: &[u8]) -> bool {
    data.iter().take(8192).any(|&b| b == 0)
}

/// Finds secrets in one file's contents (binary data yields nothing).
pub fn find_secrets(file: &str, data: &[u8]) -> Vec<SecretFinding> {
    let Some(p) = patterns() else { return Vec::new() };
    if is_binary(data) {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let gcp_file = p.gcp_type.is_match(&text);
    let mut out = Vec::new();
    for (idx, full) in lines.iter().enumerate() {
        let line_no = idx + 1;
        let line = match full.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => full.get(..cut).unwrap_or_default(),
            None => full,
        };
        // Byte spans already claimed by a specific rule on this line; the generic rule skips them.
        let mut claimed: Vec<(usize, usize)> = Vec::new();
        let mut push = |id: &str, value: &str, span: (usize, usize)| {
            claimed.push(span);
            out.push(make(id, file, line_no, value));
        };
        let mut gcp_line = false;
        if gcp_file {
            if let Some(c) = p.gcp_key.captures(line).and_then(|c| c.get(1)) {
                gcp_line = true;
                push("PAL-SEC-004", c.as_str(), (0, line.len()));
            }
        }
        if !gcp_line && p.pem.is_match(line) {
            // A real key has a base64 body right after the header (docs show `...` there).
            let body: Option<&str> = lines
                .iter()
                .skip(idx + 1)
                .take(3)
                .map(|l| l.trim())
                .find(|l| !l.contains(':') && !l.is_empty())
                .filter(|l| p.pem_body.is_match(l));
            let inline = line.split("-----").nth(2).and_then(inline_pem_body);
            if let Some(v) = body.or(inline) {
                push("PAL-SEC-001", v, (0, line.len()));
            }
        }
        for c in p.aws_id.captures_iter(line).filter_map(|c| c.get(1)) {
            if !c.as_str().contains("EXAMPLE") {
                push("PAL-SEC-002", c.as_str(), (c.start(), c.end()));
            }
        }
        for c in p.aws_secret.captures_iter(line).filter_map(|c| c.get(1)) {
            if !c.as_str().contains("EXAMPLE") {
                push("PAL-SEC-003", c.as_str(), (c.start(), c.end()));
            }
        }
        for (id, re) in &p.specific {
            for c in re.captures_iter(line).filter_map(|c| c.get(1)) {
                if *id == "PAL-SEC-009" && !is_jwt(c.as_str()) {
                    continue;
                }
                if is_placeholder(c.as_str()) {
                    continue;
                }
                push(id, c.as_str(), (c.start(), c.end()));
            }
        }
        for c in p.generic.captures_iter(line) {
            let (Some(key), Some(v)) = (c.get(1), c.get(2).or_else(|| c.get(3)).or_else(|| c.get(4))) else {
                continue;
            };
            let quoted = c.get(4).is_none();
            let value = v.as_str();
            let overlaps = claimed.iter().any(|&(s, e)| v.start() < e && s < v.end());
            if overlaps || !generic_key_ok(key.as_str()) || is_placeholder(value) {
                continue;
            }
            // Unquoted values must look like a token: a digit in it (`password: required`, `token: none` and
            // type names are words) and nothing code-like (`token: Option<String>`, `key: &Key`, `a::{b}`).
            if !quoted && !looks_like_token(value) {
                continue;
            }
            // Quoted lowercase words are names and modes (`'same-origin'`, `"client_credentials"`).
            if value.chars().all(|ch| ch.is_ascii_lowercase() || " -_.".contains(ch)) {
                continue;
            }
            if shannon_entropy(value) < ENTROPY_THRESHOLD {
                continue;
            }
            claimed.push((v.start(), v.end()));
            out.push(make("PAL-SEC-010", file, line_no, value));
        }
    }
    out
}

/// The base64 body that follows a PEM header on the same line, as in a string literal
/// `"-----BEGIN PRIVATE KEY-----\nMIIE…"`: escaped newlines skipped, at least 20 base64 characters.
fn inline_pem_body(rest: &str) -> Option<&str> {
    let mut r = rest;
    loop {
        let t = r.trim_start();
        match t.strip_prefix('\\') {
            Some(x) => r = x.strip_prefix('n').or_else(|| x.strip_prefix('r')).unwrap_or(x),
            None => {
                r = t;
                break;
            }
        }
    }
    let end = r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')).unwrap_or(r.len());
    r.get(..end).filter(|b| b.len() >= 20)
}

fn looks_like_token(v: &str) -> bool {
    v.chars().any(|c| c.is_ascii_digit()) && !v.chars().any(|c| "<>(){}[]&:;|\\`\"'".contains(c))
}

/// Keys that point at a secret or describe it rather than hold it.
fn generic_key_ok(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    let k = k.rsplit('.').next().unwrap_or(&k);
    let pointers = [
        "_file",
        "_path",
        "_dir",
        "_id",
        "_name",
        "_url",
        "_uri",
        "_type",
        "_len",
        "_length",
        "_hash",
        "_env",
        "_ref",
        "_field",
        "_header",
        "_endpoint",
        "_policy",
    ];
    !pointers.iter().any(|s| k.ends_with(s)) && !k.starts_with("no_") && !k.contains("public")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert!((shannon_entropy("0123456789abcdef") - 4.0).abs() < 1e-9);
    }

    #[test]
    fn redaction_and_fingerprint() {
        assert_eq!(redact("ghp_abcdef"), "ghp_…");
        let f = fingerprint("PAL-SEC-005", "x");
        assert_eq!(f.len(), "sha256:".len() + 32);
        assert_ne!(f, fingerprint("PAL-SEC-010", "x"));
        assert_eq!(f, fingerprint("PAL-SEC-005", "x"));
    }

    #[test]
    fn code_is_not_a_secret() {
        let src = "struct C {\n    token: Option<String>,\n    secret: &VerifyingKey,\n}\n\
                   use x::password::{generate};\nlet re = r\"-----BEGIN PRIVATE KEY-----(?:\\\\n)?\";\n\
                   let k = \"-----BEGIN PRIVATE KEY-----\".to_owned();\nkey: file:secrets/k.pem\n\
                   password: file:secrets/db\ncredentials: 'same-origin'\n{\"access_token\":\"eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIs...\"}\n\
                   url: \"https://hooks.slack.com/services/T0/B0/SECRET\"\n";
        assert_eq!(find_secrets("x.rs", src.as_bytes()), []);
        let lit = "const K: &str = \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n\";\n";
        let f = find_secrets("k.rs", lit.as_bytes());
        assert_eq!(
            f.iter().map(|f| (f.rule_id.as_str(), f.redacted.as_str())).collect::<Vec<_>>(),
            [("PAL-SEC-001", "MIIE…")]
        );
        assert_eq!(inline_pem_body(" \\n\\nMIIEvQIBADANBgkqhkiG9w0B\""), Some("MIIEvQIBADANBgkqhkiG9w0B"));
    }

    #[test]
    fn jwt_header_check() {
        // RFC 7519 section 3.1 example token.
        let t = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(is_jwt(t));
        assert!(!is_jwt("eyJub3RhIjoiand0In0.eyJ4IjoxfQ.abcdefghijkl"));
    }
}
