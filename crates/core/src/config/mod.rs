//! The gateway configuration model (one YAML file) and its loading: parse with serde (unknown
//! fields rejected), then validate the whole file, collecting every located error.

mod model;
mod validate;

pub use model::*;

use std::path::{Path, PathBuf};

use crate::diagnostic::{did_you_mean, ConfigError, Diagnostic, Issue, SourceMap};

/// A parsed and validated configuration plus what is needed to locate later (compile-time)
/// errors in its source text.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// Display name of the file (as given by the user).
    pub file: String,
    /// Directory relative paths in the config are resolved against.
    pub base_dir: PathBuf,
    text: String,
    map: SourceMap,
}

impl LoadedConfig {
    /// Turn issues found while compiling into located diagnostics.
    pub fn locate(&self, issues: Vec<Issue>) -> ConfigError {
        locate(&self.file, &self.text, &self.map, issues)
    }

    /// The raw text this config was loaded from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Resolve a path from the config relative to the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }
}

fn source_line(text: &str, line: usize) -> Option<String> {
    crate::diagnostic::yaml_lines(text).get(line.checked_sub(1)?).map(|l| l.to_string())
}

fn locate(file: &str, text: &str, map: &SourceMap, issues: Vec<Issue>) -> ConfigError {
    let diagnostics = issues
        .into_iter()
        .map(|i| {
            let (line, column) = map.locate(&i.path);
            Diagnostic {
                file: file.to_string(),
                line,
                column,
                source_line: source_line(text, line),
                path: i.path,
                message: i.message,
            }
        })
        .collect();
    ConfigError { diagnostics }
}

/// Read and load a config file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(&file, format!("cannot read config: {e}")))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_str(&file, &text, &base)
}

/// Parse and validate config text. `file` is only used in messages.
pub fn parse_str(file: &str, text: &str, base_dir: &Path) -> Result<LoadedConfig, ConfigError> {
    let map = SourceMap::build(text);
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let config: Config = match serde_path_to_error::deserialize(de) {
        Ok(c) => c,
        Err(e) => return Err(serde_error(file, text, &map, e)),
    };
    let issues = validate::validate(&config);
    if !issues.is_empty() {
        return Err(locate(file, text, &map, issues));
    }
    Ok(LoadedConfig { config, file: file.to_string(), base_dir: base_dir.to_path_buf(), text: text.to_string(), map })
}

/// Candidates listed by serde in "expected one of `a`, `b`" / "expected `a` or `b`".
fn expected_candidates(msg: &str) -> Vec<&str> {
    let Some(idx) = msg.find("expected") else { return Vec::new() };
    msg[idx..].split('`').skip(1).step_by(2).collect()
}

/// Where a serde error in a YAML document is, and what it says, ready to print: the field path
/// (with an unknown field's own name appended), the message without serde_yaml's own location and
/// path prefix plus a "did you mean" hint, and the 1-based line and column of the offending key or value.
/// Shared by every YAML file Palisade reads (the config, mesh policies).
pub struct YamlSerdeError {
    pub path: String,
    pub message: String,
    pub line: usize,
    pub column: usize,
}

pub fn locate_serde_error(map: &SourceMap, e: &serde_path_to_error::Error<serde_yaml_ng::Error>) -> YamlSerdeError {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    let inner = e.inner();
    let mut message = inner.to_string();
    // serde_yaml appends " at line L column C"; we print the location ourselves.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    // serde_yaml prefixes the (parent) path; we print the full path ourselves.
    if let Some((head, rest)) = message.split_once(": ") {
        if !head.contains(' ') && path.starts_with(head) {
            message = rest.to_string();
        }
    }
    let mut pos = map.locate_exact(&path).or_else(|| inner.location().map(|l| (l.line(), l.column())));
    for kind in ["unknown field `", "unknown variant `"] {
        if let Some(rest) = message.strip_prefix(kind) {
            if let Some(end) = rest.find('`') {
                let word = rest[..end].to_string();
                let hint = did_you_mean(&word, expected_candidates(&message));
                if kind.starts_with("unknown field") {
                    if !path.ends_with(&word) {
                        path = if path.is_empty() { word.clone() } else { format!("{path}.{word}") };
                    }
                    if let Some(p) = map.locate_key(&path) {
                        pos = Some(p);
                    }
                }
                message = format!("{message}{hint}");
            }
        }
    }
    let (line, column) = pos.unwrap_or_else(|| map.locate(&path));
    YamlSerdeError { path, message, line, column }
}

fn serde_error(
    file: &str,
    text: &str,
    map: &SourceMap,
    e: serde_path_to_error::Error<serde_yaml_ng::Error>,
) -> ConfigError {
    let YamlSerdeError { path, message, line, column } = locate_serde_error(map, &e);
    ConfigError {
        diagnostics: vec![Diagnostic {
            file: file.to_string(),
            line,
            column,
            source_line: source_line(text, line),
            path,
            message,
        }],
    }
}

#[cfg(test)]
mod tests;
