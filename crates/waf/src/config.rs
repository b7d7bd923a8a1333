//! Reading SecLang configuration text into directives, as Apache's config reader does: `\` at the end of a line
//! joins the next line, `#` starts a comment line, arguments are words or '…'/"…" strings in which only `\\` and
//! an escaped quote are unescaped. `Include`/`IncludeOptional` are expanded here (globs, relative to the file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::LoadError;

/// One directive with its arguments and where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    pub(crate) file: Arc<PathBuf>,
    pub(crate) line: usize,
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
}

/// Bound on nested includes (an include cycle must end in an error, not a stack overflow).
const MAX_INCLUDE_DEPTH: usize = 32;

/// Parse `src` (from `origin`, whose directory resolves relative includes) into directives, expanding includes.
pub(crate) fn parse_text(
    src: &str,
    origin: &Path,
    base_dir: &Path,
    depth: usize,
    out: &mut Vec<Directive>,
) -> Result<(), LoadError> {
    let file = Arc::new(origin.to_path_buf());
    let lines: Vec<&str> = src.split('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let start_line = i + 1;
        let mut logical = String::new();
        loop {
            let raw = lines.get(i).copied().unwrap_or("");
            i += 1;
            let trimmed = raw.trim_end();
            if let Some(stripped) = trimmed.strip_suffix('\\') {
                logical.push_str(stripped);
                if i >= lines.len() {
                    break;
                }
            } else {
                logical.push_str(trimmed);
                break;
            }
        }
        let text = logical.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let err = |reason: String| LoadError { file: origin.to_path_buf(), line: start_line, reason };
        let words = split_words(text).map_err(err)?;
        let mut it = words.into_iter();
        let Some(name) = it.next() else { continue };
        let args: Vec<String> = it.collect();
        if name.eq_ignore_ascii_case("Include") || name.eq_ignore_ascii_case("IncludeOptional") {
            let optional = name.eq_ignore_ascii_case("IncludeOptional");
            let [pattern] = args.as_slice() else {
                return Err(err(format!("{name} takes exactly one argument")));
            };
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(err("Include nested too deeply (cycle?)".into()));
            }
            let files = expand_glob(base_dir, pattern).map_err(err)?;
            if files.is_empty() && !optional && !pattern.contains(['*', '?', '[']) {
                return Err(err(format!("Include: no such file {pattern}")));
            }
            for f in files {
                load_file(&f, depth + 1, out).map_err(|e| {
                    if e.file == f && e.line == 0 {
                        LoadError { file: origin.to_path_buf(), line: start_line, reason: e.reason }
                    } else {
                        e
                    }
                })?;
            }
            continue;
        }
        out.push(Directive { file: file.clone(), line: start_line, name, args });
    }
    Ok(())
}

/// Read and parse one file (line 0 in the error when the file itself cannot be read).
pub(crate) fn load_file(path: &Path, depth: usize, out: &mut Vec<Directive>) -> Result<(), LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError {
        file: path.to_path_buf(),
        line: 0,
        reason: format!("cannot read file: {e}"),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_text(&text, path, &base, depth, out)
}

/// Split a logical line into words as Apache's `ap_getword_conf` does.
pub(crate) fn split_words(line: &str) -> Result<Vec<String>, String> {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let Some(&c) = b.get(i) else { break };
        let mut word = Vec::new();
        if c == b'"' || c == b'\'' {
            let quote = c;
            i += 1;
            let mut closed = false;
            while let Some(&ch) = b.get(i) {
                if ch == b'\\' {
                    if let Some(&next) = b.get(i + 1) {
                        if next == quote || next == b'\\' {
                            word.push(next);
                            i += 2;
                            continue;
                        }
                    }
                    word.push(ch);
                    i += 1;
                } else if ch == quote {
                    i += 1;
                    closed = true;
                    break;
                } else {
                    word.push(ch);
                    i += 1;
                }
            }
            if !closed {
                return Err(format!("missing closing quote {}", quote as char));
            }
        } else {
            while let Some(&ch) = b.get(i) {
                if ch.is_ascii_whitespace() {
                    break;
                }
                if ch == b'\\' && b.get(i + 1) == Some(&b'\\') {
                    word.push(b'\\');
                    i += 2;
                    continue;
                }
                word.push(ch);
                i += 1;
            }
        }
        words.push(String::from_utf8_lossy(&word).into_owned());
    }
    Ok(words)
}

/// Expand an Include pattern: `*`, `?` and `[...]` in the last path component only (as CRS uses them); the result
/// is sorted like Apache does.
fn expand_glob(base_dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let p = Path::new(pattern);
    let full = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
    let Some(name) = full.file_name().and_then(|n| n.to_str()) else {
        return Err(format!("Include: bad path {pattern}"));
    };
    if !name.contains(['*', '?', '[']) {
        return Ok(if full.exists() { vec![full] } else { Vec::new() });
    }
    let dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(format!("Include: wildcards are supported in the file name only: {pattern}"));
    }
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => return Err(format!("Include: cannot read directory {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let fname = entry.file_name();
        let Some(fname) = fname.to_str() else { continue };
        if glob_match(name.as_bytes(), fname.as_bytes()) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Shell-style match of one path component.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let (mut star_p, mut star_i) = (usize::MAX, 0usize);
    while i < s.len() {
        let pc = pat.get(p).copied();
        let sc = s.get(i).copied();
        match pc {
            Some(b'*') => {
                star_p = p;
                star_i = i;
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                i += 1;
                continue;
            }
            Some(b'[') => {
                if let Some(end) = pat.get(p + 1..).and_then(|r| r.iter().position(|&c| c == b']')) {
                    let set = pat.get(p + 1..p + 1 + end).unwrap_or_default();
                    let (neg, set) = match set.first() {
                        Some(b'!') | Some(b'^') => (true, set.get(1..).unwrap_or_default()),
                        _ => (false, set),
                    };
                    let c = sc.unwrap_or(0);
                    let mut hit = false;
                    let mut k = 0;
                    while k < set.len() {
                        let lo = set.get(k).copied().unwrap_or(0);
                        if set.get(k + 1) == Some(&b'-') && k + 2 < set.len() {
                            let hi = set.get(k + 2).copied().unwrap_or(0);
                            hit |= lo <= c && c <= hi;
                            k += 3;
                        } else {
                            hit |= lo == c;
                            k += 1;
                        }
                    }
                    if hit != neg {
                        p += end + 2;
                        i += 1;
                        continue;
                    }
                } else if sc == Some(b'[') {
                    p += 1;
                    i += 1;
                    continue;
                }
            }
            Some(c) if Some(c) == sc => {
                p += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        if star_p != usize::MAX {
            p = star_p + 1;
            star_i += 1;
            i = star_i;
            continue;
        }
        return false;
    }
    while pat.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_apache_quoting() {
        let w = split_words(r#"SecRule ARGS "@rx a\"b\\c\d" 'x\'y' plain\\z"#).unwrap();
        assert_eq!(w, vec!["SecRule", "ARGS", r#"@rx a"b\c\d"#, "x'y", r"plain\z"]);
        assert!(split_words(r#"SecRule ARGS "@rx"#).unwrap_err().contains("missing closing quote"));
    }

    #[test]
    fn continuations_join_lines_and_comments_are_skipped() {
        let mut out = Vec::new();
        let src = "# comment\nSecRule ARGS \"@rx a\" \\\n    \"id:1,\\\n    pass\"\n\nSecMarker END\n";
        parse_text(src, Path::new("t.conf"), Path::new("."), 0, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].line, 2);
        assert_eq!(out[0].args, vec!["ARGS", "@rx a", "id:1,    pass"]);
        assert_eq!(out[1].line, 6);
        assert_eq!(out[1].name, "SecMarker");
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(b"*.conf", b"REQUEST-901.conf"));
        assert!(!glob_match(b"*.conf", b"REQUEST-901.conf.example"));
        assert!(glob_match(b"R?Q*-9[0-4]1.conf", b"REQ-x-901.conf"));
        assert!(!glob_match(b"R?Q*-9[0-4]1.conf", b"REQ-x-951.conf"));
    }
}
