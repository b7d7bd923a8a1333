//! A YAML document tree that keeps the 1-based line of every node and mapping key, built from the event
//! parser (serde values drop positions). Aliases are not expanded (no billion-laughs blow-up) and nesting
//! deeper than [`MAX_DEPTH`] is cut off, so the tree's depth, and with it every recursive walk, is bounded.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting kept; deeper collections become [`Node::Null`].
pub(crate) const MAX_DEPTH: usize = 128;

/// One YAML node with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A scalar; `plain` is false for quoted and block scalars.
    Scalar { value: String, plain: bool, line: usize },
    /// A sequence.
    Seq { items: Vec<Node>, line: usize },
    /// A mapping: (key, line of the key, value), in document order.
    Map { entries: Vec<(String, usize, Node)>, line: usize },
    /// An alias, an empty value or a cut-off subtree.
    Null { line: usize },
}

impl Node {
    pub(crate) fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. } | Node::Seq { line, .. } | Node::Map { line, .. } | Node::Null { line } => *line,
        }
    }

    /// The value under `key` of a mapping, with the key's line.
    pub(crate) fn get(&self, key: &str) -> Option<(&Node, usize)> {
        match self {
            Node::Map { entries, .. } => entries.iter().find(|(k, _, _)| k == key).map(|(_, l, v)| (v, *l)),
            _ => None,
        }
    }

    /// Follows a chain of mapping keys.
    pub(crate) fn path(&self, keys: &[&str]) -> Option<(&Node, usize)> {
        let mut cur = (self, self.line());
        for k in keys {
            cur = cur.0.get(k)?;
        }
        Some(cur)
    }

    /// The scalar text, if this is a non-empty scalar.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// YAML 1.1/1.2 core-schema booleans of a plain scalar.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Scalar { value, plain: true, .. } => match value.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn items(&self) -> &[Node] {
        match self {
            Node::Seq { items, .. } => items,
            _ => &[],
        }
    }

    pub(crate) fn is_map(&self) -> bool {
        matches!(self, Node::Map { .. })
    }
}

/// One document of a stream with the line of its start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc {
    pub root: Node,
    /// Line of the document's first event (`---` or the first node).
    pub start_line: usize,
}

enum Frame {
    Seq(Vec<Node>, usize),
    Map(Vec<(String, usize, Node)>, Option<(String, usize)>, usize),
}

#[derive(Default)]
struct Builder {
    docs: Vec<Doc>,
    stack: Vec<Frame>,
    /// Collections open beyond MAX_DEPTH, skipped.
    skipping: usize,
    skip_line: usize,
    doc_start: usize,
}

impl Builder {
    fn finish(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _)) => match pending.take() {
                None => {
                    let key = match &node {
                        Node::Scalar { value, .. } => value.clone(),
                        _ => String::new(),
                    };
                    *pending = Some((key, node.line()));
                }
                Some((k, l)) => entries.push((k, l, node)),
            },
            None => self.docs.push(Doc { root: node, start_line: self.doc_start }),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        if self.skipping > 0 {
            match ev {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skipping += 1,
                Event::SequenceEnd | Event::MappingEnd => {
                    self.skipping -= 1;
                    if self.skipping == 0 {
                        let l = self.skip_line;
                        self.finish(Node::Null { line: l });
                    }
                }
                _ => {}
            }
            return;
        }
        match ev {
            Event::DocumentStart => self.doc_start = line,
            Event::Scalar(value, style, _, _) => {
                let plain = style == TScalarStyle::Plain;
                let node = if plain && (value.is_empty() || value == "~" || value == "null") {
                    Node::Null { line }
                } else {
                    Node::Scalar { value, plain, line }
                };
                self.finish(node);
            }
            Event::Alias(_) => self.finish(Node::Null { line }),
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.skipping = 1;
                self.skip_line = line;
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new(), line)),
            Event::MappingStart(..) => self.stack.push(Frame::Map(Vec::new(), None, line)),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, l)) => self.finish(Node::Seq { items, line: l }),
                Some(Frame::Map(entries, _, l)) => {
                    // Block mappings are marked at their first key; report that line.
                    let line = entries.first().map(|(_, kl, _)| *kl).unwrap_or(l);
                    self.finish(Node::Map { entries, line });
                }
                None => {}
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// Parses every document of a YAML stream.
pub(crate) fn parse_stream(text: &str) -> Result<Vec<Doc>, String> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, true).map_err(|e| e.to_string())?;
    Ok(b.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_docs() {
        let docs =
            parse_stream("a: 1\nb:\n  c: \"true\"\n  d: true\n---\n# Source: x\nkind: Pod\nlist:\n  - &r x\n  - *r\n")
                .unwrap_or_default();
        assert_eq!(docs.len(), 2);
        let d0 = &docs[0].root;
        assert_eq!(d0.get("a").map(|(n, l)| (n.as_str(), l)), Some((Some("1"), 1)));
        assert_eq!(d0.path(&["b", "c"]).map(|(n, l)| (n.as_bool(), l)), Some((None, 3)));
        assert_eq!(d0.path(&["b", "d"]).map(|(n, l)| (n.as_bool(), l)), Some((Some(true), 4)));
        assert_eq!(docs[1].start_line, 5);
        let list = docs[1].root.get("list").map(|(n, _)| n.items().to_vec()).unwrap_or_default();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].line(), 9);
        assert!(matches!(list[1], Node::Null { line: 10 }));
    }

    #[test]
    fn deep_nesting_is_cut() {
        // The scanner itself refuses very deep flow nesting; below its limit the tree is cut at MAX_DEPTH.
        let text = "[".repeat(1000) + &"]".repeat(1000);
        assert!(parse_stream(&text).is_err());
        let text = "[".repeat(200) + &"]".repeat(200);
        let docs = parse_stream(&text).unwrap_or_default();
        assert_eq!(docs.len(), 1);
        let mut depth = 0;
        let mut cur = &docs[0].root;
        while let Some(n) = cur.items().first() {
            cur = n;
            depth += 1;
        }
        assert_eq!(depth, MAX_DEPTH);
        assert!(matches!(cur, Node::Null { .. }));
    }
}
