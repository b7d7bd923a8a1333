//! Located configuration errors: `file:line:col: field.path: message`, followed by the source
//! line and a caret, the way cargo-deny renders them.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A problem found at a field path, before it has been located in the source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Field path such as `routes[2].upstream`.
    pub path: String,
    pub message: String,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue { path: path.into(), message: message.into() }
    }
}

/// One located error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
    /// The offending source line, for display.
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            write!(f, "\n {pad} |\n {num} | {src}\n {pad} | {}^", " ".repeat(self.column.saturating_sub(1)))?;
        }
        Ok(())
    }
}

/// All errors found in one configuration file. An invalid file never becomes a running config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub(crate) fn io(file: &str, message: String) -> Self {
        ConfigError {
            diagnostics: vec![Diagnostic {
                file: file.to_string(),
                line: 0,
                column: 0,
                path: String::new(),
                message,
                source_line: None,
            }],
        }
    }

    /// The first line of every diagnostic, without source excerpts (for one-line logs).
    pub fn summary(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| {
                let mut s = d.clone();
                s.source_line = None;
                s.to_string()
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where each field path starts in the YAML text (1-based line and column).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

struct Builder {
    stack: Vec<Frame>,
    map: SourceMap,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Called when a node starts; returns the path of that node if it is a value (not a key).
    fn node_path(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        let pos = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    // This node is a key.
                    let k = scalar.unwrap_or("?").to_string();
                    self.map.keys.insert(join(path, &k), pos);
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(ref v, ..) => {
                if let Some(p) = self.node_path(Some(v), mark) {
                    self.map.values.insert(p, pos);
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.node_path(None, mark) {
                    self.map.values.insert(p, pos);
                }
            }
            Event::MappingStart(..) => {
                let p = self.node_path(None, mark).unwrap_or_default();
                self.map.values.insert(p.clone(), pos);
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = self.node_path(None, mark).unwrap_or_default();
                self.map.values.insert(p.clone(), pos);
                self.stack.push(Frame::Seq { path: p, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl SourceMap {
    /// Index a YAML document. A syntax error yields an empty map (serde reports it).
    pub fn build(text: &str) -> SourceMap {
        let mut b = Builder { stack: Vec::new(), map: SourceMap::default() };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, false);
        b.map
    }

    /// Position of the value at `path`, else of its key, else of the nearest located parent.
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&p).or_else(|| self.keys.get(&p)) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None if !p.is_empty() => p.clear(),
                None => return (1, 1),
            }
        }
    }

    /// Position of the value at exactly `path`, if the document has it.
    pub fn locate_exact(&self, path: &str) -> Option<(usize, usize)> {
        if path.is_empty() {
            return None;
        }
        self.values.get(path).copied()
    }

    /// Position of the key named by `path` (for "unknown field" errors).
    pub fn locate_key(&self, path: &str) -> Option<(usize, usize)> {
        self.keys.get(path).copied()
    }
}

/// The lines of a YAML text as YAML counts them: `\r\n`, `\n` and a lone `\r` all end a line
/// (`str::lines` does not split on a lone `\r`, which made line numbers disagree).
pub fn yaml_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\n' => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                out.push(&text[start..i]);
                if b.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        out.push(&text[start..]);
    }
    out
}

/// `(did you mean "x"?)` for the closest candidate, if any is close enough.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_paths() {
        let text = "a:\n  b: 1\nlist:\n  - x: 1\n  - x: 2\n    y: [3, 4]\n";
        let m = SourceMap::build(text);
        assert_eq!(m.locate("a.b"), (2, 6));
        assert_eq!(m.locate("list[1].x"), (5, 8));
        assert_eq!(m.locate("list[1].y[1]"), (6, 12));
        assert_eq!(m.locate_key("list[1].y"), Some((6, 5)));
        // unknown paths fall back to the nearest parent
        assert_eq!(m.locate("list[1].zzz").0, 5);
    }

    #[test]
    fn lone_carriage_returns_end_lines() {
        assert_eq!(yaml_lines("a\rb\r\nc\nd"), ["a", "b", "c", "d"]);
        // Regression (found by fuzz/config_parse): a CR-only file located errors past its end.
        let m = SourceMap::build("a: 1\rb:\r  c: 2\r");
        assert_eq!(m.locate("b.c"), (3, 6));
    }

    #[test]
    fn suggestion() {
        assert_eq!(did_you_mean("ordrs", ["orders", "payments"]), " (did you mean \"orders\"?)");
        assert_eq!(did_you_mean("zzz", ["orders"]), "");
    }
}
