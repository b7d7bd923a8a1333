//! The ignore file (`.palisadeignore.yaml`): entries `{id, reason, expires?, paths?}` that suppress
//! findings. `id` is an advisory id or alias, a rule id (`PAL-…`), a secret fingerprint (`sha256:…`), or `*`
//! (any finding, only together with `paths`). `paths` are globs (`*`, `?`, `**`) over finding paths; a
//! pattern without `/` matches a file name anywhere. From its expiry date on an entry no longer ignores
//! anything and is reported instead, so suppressions are revisited.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The conventional ignore-file name, looked up in the scanned directory.
pub const IGNORE_FILE_NAME: &str = ".palisadeignore.yaml";
/// Largest ignore file read.
const MAX_IGNORE_BYTES: u64 = 1 << 20;

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u32,
    day: u32,
}

impl Date {
    /// A valid date, or `None`.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=days).contains(&day).then_some(Date { year, month, day })
    }

    /// Parses `YYYY-MM-DD` exactly.
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = s.get(r)?;
            part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
        };
        Date::new(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)
    }

    /// Today in UTC.
    pub fn today() -> Date {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Date::from_unix_days(i64::try_from(secs / 86_400).unwrap_or(0))
    }

    /// The date `days` after 1970-01-01 (H. Hinnant's civil_from_days).
    pub fn from_unix_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid date {s:?} (want YYYY-MM-DD)")))
    }
}

/// Why an ignore file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// Not valid YAML, or not the expected shape.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    reason: String,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    ignore: Vec<RawEntry>,
}

/// One suppression.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IgnoreEntry {
    /// Advisory id or alias, rule id, fingerprint, or `*`.
    pub id: String,
    /// Why it is ignored (required).
    pub reason: String,
    /// Last day before it stops applying; `None` never expires.
    pub expires: Option<Date>,
    /// Path globs; empty means everywhere.
    pub paths: Vec<String>,
    globs: Vec<Regex>,
}

impl IgnoreEntry {
    /// True from the expiry date on.
    pub fn is_expired(&self, today: Date) -> bool {
        self.expires.is_some_and(|e| today >= e)
    }

    fn matches_path(&self, path: &str) -> bool {
        let p = path.trim_start_matches("./");
        self.globs.is_empty() || self.globs.iter().any(|g| g.is_match(p))
    }

    /// Whether this entry (ignoring expiry) suppresses a finding with these ids at `path`.
    pub fn matches(&self, ids: &[&str], path: &str) -> bool {
        (self.id == "*" || ids.iter().any(|i| i.eq_ignore_ascii_case(&self.id))) && self.matches_path(path)
    }
}

/// An expired entry, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExpiredIgnore {
    /// The entry's id.
    pub id: String,
    /// Its reason.
    pub reason: String,
    /// The date it stopped applying.
    pub expires: Date,
}

/// A parsed ignore file.
#[derive(Debug, Clone, Default)]
pub struct IgnoreFile {
    /// The entries, in file order.
    pub entries: Vec<IgnoreEntry>,
}

/// Compiles a path glob to an anchored regex: `**` spans directories, `*` and `?` do not; a pattern
/// without `/` matches the last component anywhere; a trailing `/` matches everything under it.
pub(crate) fn glob_regex(pattern: &str) -> Result<Regex, String> {
    let pat = pattern.trim_start_matches("./");
    let mut re = String::from("^");
    if !pat.contains('/') {
        re.push_str("(?:.*/)?");
    }
    let mut chars = pat.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    if pat.ends_with('/') {
        re.push_str(".*");
    }
    re.push('$');
    Regex::new(&re).map_err(|e| format!("bad path pattern {pattern:?}: {e}"))
}

impl IgnoreFile {
    /// Parses the YAML text (`ignore: [...]` or a bare list); `path` is for messages.
    pub fn parse(path: &str, text: &str) -> Result<IgnoreFile, IgnoreError> {
        let invalid = |reason: String| IgnoreError::Invalid { path: path.to_owned(), reason };
        if text.trim().is_empty() {
            return Ok(IgnoreFile::default());
        }
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let list: Vec<RawEntry> = if value.is_sequence() {
            serde_yaml_ng::from_value(value).map_err(|e| invalid(e.to_string()))?
        } else {
            serde_yaml_ng::from_value::<RawMap>(value).map_err(|e| invalid(e.to_string()))?.ignore
        };
        let mut entries = Vec::with_capacity(list.len());
        for (i, e) in list.into_iter().enumerate() {
            let n = i + 1;
            if e.id.trim().is_empty() {
                return Err(invalid(format!("entry {n}: empty id")));
            }
            if e.reason.trim().is_empty() {
                return Err(invalid(format!("entry {n} ({}): a reason is required", e.id)));
            }
            if e.id == "*" && e.paths.is_empty() {
                return Err(invalid(format!("entry {n}: id \"*\" needs paths")));
            }
            let expires = match &e.expires {
                Some(s) => Some(
                    Date::parse(s)
                        .ok_or_else(|| invalid(format!("entry {n} ({}): expires {s:?} is not YYYY-MM-DD", e.id)))?,
                ),
                None => None,
            };
            let globs = e
                .paths
                .iter()
                .map(|p| glob_regex(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|r| invalid(format!("entry {n}: {r}")))?;
            entries.push(IgnoreEntry { id: e.id, reason: e.reason, expires, paths: e.paths, globs });
        }
        Ok(IgnoreFile { entries })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<IgnoreFile, IgnoreError> {
        use std::io::Read;
        let display = path.display().to_string();
        let io = |error| IgnoreError::Io { path: display.clone(), error };
        let mut data = Vec::new();
        std::fs::File::open(path).map_err(io)?.take(MAX_IGNORE_BYTES + 1).read_to_end(&mut data).map_err(io)?;
        if data.len() as u64 > MAX_IGNORE_BYTES {
            return Err(IgnoreError::Invalid {
                path: display,
                reason: format!("larger than {MAX_IGNORE_BYTES} bytes"),
            });
        }
        let text = String::from_utf8(data)
            .map_err(|_| IgnoreError::Invalid { path: display.clone(), reason: "not UTF-8".into() })?;
        IgnoreFile::parse(&display, &text)
    }

    /// The first unexpired entry that suppresses a finding with `ids` at `path`.
    pub fn suppressing(&self, ids: &[&str], path: &str, today: Date) -> Option<&IgnoreEntry> {
        self.entries.iter().find(|e| !e.is_expired(today) && e.matches(ids, path))
    }

    /// Entries past their expiry date.
    pub fn expired(&self, today: Date) -> Vec<ExpiredIgnore> {
        self.entries
            .iter()
            .filter_map(|e| {
                let expires = e.expires.filter(|_| e.is_expired(today))?;
                Some(ExpiredIgnore { id: e.id.clone(), reason: e.reason.clone(), expires })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(Date::from_unix_days(0).to_string(), "1970-01-01");
        assert_eq!(Date::from_unix_days(19_782).to_string(), "2024-02-29");
        assert_eq!(Date::from_unix_days(-1).to_string(), "1969-12-31");
        assert_eq!(Date::parse("2024-02-29"), Date::new(2024, 2, 29));
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(Date::parse("2023-13-01"), None);
        assert_eq!(Date::parse("2023-1-01"), None);
        assert_eq!(Date::parse("+023-01-01"), None);
        assert!(Date::parse("2025-01-02") > Date::parse("2024-12-31"));
    }

    #[test]
    fn globs() {
        let m = |p: &str, s: &str| glob_regex(p).map(|r| r.is_match(s)).unwrap_or(false);
        assert!(m("tests/**", "tests/a/b.rs"));
        assert!(m("**/fixtures/*.pem", "crates/x/fixtures/k.pem"));
        assert!(m("**/fixtures/*.pem", "fixtures/k.pem"));
        assert!(!m("**/fixtures/*.pem", "fixtures/a/k.pem"));
        assert!(m("*.pem", "deep/dir/k.pem"));
        assert!(m("docs/", "docs/x/y.md"));
        assert!(!m("src/*.rs", "src/a/b.rs"));
        assert!(m("src/?.rs", "src/a.rs"));
        assert!(!m("a+b", "aab"));
    }

    #[test]
    fn parse_and_match() {
        let f = IgnoreFile::parse(
            "i",
            "ignore:\n  - id: RUSTSEC-2020-0105\n    reason: not reachable\n    expires: 2030-01-01\n\
             \x20 - id: '*'\n    reason: fixtures\n    paths: [\"tests/**\"]\n\
             \x20 - id: PAL-K8S-013\n    reason: old\n    expires: 2020-01-01\n",
        )
        .unwrap_or_default();
        assert_eq!(f.entries.len(), 3);
        let today = Date::new(2025, 6, 1).unwrap_or(Date::today());
        assert!(f.suppressing(&["RUSTSEC-2020-0105"], "Cargo.lock", today).is_some());
        assert!(f.suppressing(&["GHSA-x", "rustsec-2020-0105"], "Cargo.lock", today).is_some());
        assert!(f.suppressing(&["PAL-SEC-001"], "tests/k.pem", today).is_some());
        assert!(f.suppressing(&["PAL-SEC-001"], "src/k.pem", today).is_none());
        assert!(f.suppressing(&["PAL-K8S-013"], "deploy/x.yaml", today).is_none());
        let exp = f.expired(today);
        assert_eq!(exp.len(), 1);
        assert_eq!((exp[0].id.as_str(), exp[0].expires.to_string()), ("PAL-K8S-013", "2020-01-01".to_owned()));
        // The day of expiry no longer ignores.
        let at = Date::new(2030, 1, 1).unwrap_or(today);
        assert!(f.suppressing(&["RUSTSEC-2020-0105"], "Cargo.lock", at).is_none());
    }

    #[test]
    fn invalid_files() {
        for (text, want) in [
            ("- id: X\n", "missing field `reason`"),
            ("- id: X\n  reason: ''\n", "a reason is required"),
            ("- id: X\n  reason: r\n  expires: 2024-02-30\n", "is not YYYY-MM-DD"),
            ("- id: '*'\n  reason: r\n", "needs paths"),
            ("- id: X\n  reason: r\n  typo: 1\n", "unknown field"),
        ] {
            let e = IgnoreFile::parse("i", text).map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
