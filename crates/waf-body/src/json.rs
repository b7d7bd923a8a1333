//! The JSON body processor: a strict RFC 8259 parser that flattens the document into `ARGS_POST` with Coraza's
//! names (`json.a.b`, array elements `json.a.0`, and the array itself `json.a` = its length when non-empty).
//!
//! Iterative (explicit stack, so nesting depth costs heap, not call stack) and single pass; the key is one
//! buffer truncated back to the parent's length. Values: strings unescaped to bytes, numbers/booleans as written,
//! `null` as the empty string. Duplicate keys are all kept, in document order.

use crate::{names_budget, BodyError, Pair, DEFAULT_MAX_ARGS};

/// Flatten a JSON body into arguments, failing on invalid JSON, on nesting deeper than `max_depth` (the
/// outermost object/array is depth 1) or on more than [`DEFAULT_MAX_ARGS`] arguments. An empty (or
/// whitespace-only) body gives no arguments. The names produced are bounded by [`names_budget`].
///
/// A top-level scalar is named like Coraza does (`json.0` = value, `json` = `1`).
pub fn parse_json(body: &[u8], max_depth: usize) -> Result<Vec<Pair>, BodyError> {
    parse_json_with_limit(body, max_depth, DEFAULT_MAX_ARGS)
}

/// [`parse_json`] with an explicit argument limit.
pub fn parse_json_with_limit(body: &[u8], max_depth: usize, max_args: usize) -> Result<Vec<Pair>, BodyError> {
    let names_left = names_budget(body.len());
    let mut p = Parser { s: body, pos: 0, key: b"json".to_vec(), out: Vec::new(), max_args, names_left };
    p.document(max_depth)?;
    Ok(p.out)
}

struct Container {
    is_array: bool,
    /// Key length of the container itself; children append `.name` / `.index` to it.
    prefix_len: usize,
    count: usize,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    key: Vec<u8>,
    out: Vec<Pair>,
    max_args: usize,
    /// Bytes of names still allowed (see [`names_budget`]).
    names_left: usize,
}

enum Scalar<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Scalar<'_> {
    fn into_vec(self) -> Vec<u8> {
        match self {
            Scalar::Borrowed(b) => b.to_vec(),
            Scalar::Owned(v) => v,
        }
    }
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &'static str) -> BodyError {
        BodyError::Json { offset: self.pos, reason }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn emit(&mut self, name: Vec<u8>, value: Vec<u8>) -> Result<(), BodyError> {
        if self.out.len() >= self.max_args {
            return Err(BodyError::TooManyArgs { limit: self.max_args });
        }
        self.names_left = self
            .names_left
            .checked_sub(name.len())
            .ok_or(BodyError::NamesTooLarge { limit: names_budget(self.s.len()) })?;
        self.out.push((name, value));
        Ok(())
    }

    fn document(&mut self, max_depth: usize) -> Result<(), BodyError> {
        self.skip_ws();
        if self.pos == self.s.len() {
            return Ok(());
        }
        let mut stack: Vec<Container> = Vec::new();
        match self.peek() {
            Some(b'{' | b'[') => self.open(&mut stack, max_depth)?,
            _ => {
                let v = self.scalar()?.into_vec();
                self.emit(b"json.0".to_vec(), v)?;
                self.emit(b"json".to_vec(), b"1".to_vec())?;
            }
        }
        while let Some(top) = stack.last() {
            self.skip_ws();
            let close = if top.is_array { b']' } else { b'}' };
            let (is_array, count) = (top.is_array, top.count);
            match self.peek() {
                Some(c) if c == close => {
                    self.pos += 1;
                    self.close(&mut stack)?;
                }
                Some(b',') if count > 0 => {
                    self.pos += 1;
                    self.element(&mut stack, is_array, max_depth)?;
                }
                Some(_) if count == 0 => self.element(&mut stack, is_array, max_depth)?,
                Some(_) => return Err(self.err(if is_array { "expected ',' or ']'" } else { "expected ',' or '}'" })),
                None => return Err(self.err("unexpected end of input")),
            }
        }
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(self.err("trailing data after the JSON value"));
        }
        Ok(())
    }

    /// One array element or object member; the enclosing container is the top of `stack`.
    fn element(&mut self, stack: &mut Vec<Container>, is_array: bool, max_depth: usize) -> Result<(), BodyError> {
        let Some(top) = stack.last_mut() else { return Err(self.err("internal: no container")) };
        let prefix_len = top.prefix_len;
        let index = top.count;
        top.count += 1;
        self.key.truncate(prefix_len);
        self.key.push(b'.');
        if is_array {
            self.key.extend_from_slice(index.to_string().as_bytes());
        } else {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let name = self.string()?;
            match name {
                Scalar::Borrowed(b) => self.key.extend_from_slice(b),
                Scalar::Owned(v) => self.key.extend_from_slice(&v),
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
        }
        self.skip_ws();
        match self.peek() {
            Some(b'{' | b'[') => self.open(stack, max_depth),
            _ => {
                let v = self.scalar()?.into_vec();
                let name = self.key.clone();
                self.emit(name, v)
            }
        }
    }

    fn open(&mut self, stack: &mut Vec<Container>, max_depth: usize) -> Result<(), BodyError> {
        if stack.len() >= max_depth {
            return Err(BodyError::JsonDepth { limit: max_depth });
        }
        let is_array = self.peek() == Some(b'[');
        self.pos += 1;
        stack.push(Container { is_array, prefix_len: self.key.len(), count: 0 });
        Ok(())
    }

    fn close(&mut self, stack: &mut Vec<Container>) -> Result<(), BodyError> {
        let Some(c) = stack.pop() else { return Err(self.err("internal: no container")) };
        self.key.truncate(c.prefix_len);
        if c.is_array && c.count > 0 {
            let name = self.key.clone();
            self.emit(name, c.count.to_string().into_bytes())?;
        }
        Ok(())
    }

    fn scalar(&mut self) -> Result<Scalar<'a>, BodyError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true").map(Scalar::Borrowed),
            Some(b'f') => self.literal(b"false").map(Scalar::Borrowed),
            Some(b'n') => self.literal(b"null").map(|_| Scalar::Borrowed(&[])),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<&'a [u8], BodyError> {
        let s: &'a [u8] = self.s;
        match s.get(self.pos..self.pos + word.len()) {
            Some(w) if w == word => {
                self.pos += word.len();
                Ok(w)
            }
            _ => Err(self.err("invalid literal")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Scalar<'a>, BodyError> {
        let s: &'a [u8] = self.s;
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(Scalar::Borrowed(&s[start..self.pos]))
    }

    /// A string starting at the opening quote; borrowed when it has no escapes.
    fn string(&mut self) -> Result<Scalar<'a>, BodyError> {
        let s: &'a [u8] = self.s;
        self.pos += 1;
        let start = self.pos;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            // Jump to the next byte that needs attention.
            let rest = s.get(self.pos..).unwrap_or_default();
            let Some(off) = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20) else {
                self.pos = s.len();
                return Err(self.err("unterminated string"));
            };
            let chunk = &rest[..off];
            self.pos += off;
            match rest[off] {
                b'"' => {
                    self.pos += 1;
                    return Ok(match owned {
                        None => Scalar::Borrowed(&s[start..self.pos - 1]),
                        Some(mut v) => {
                            v.extend_from_slice(chunk);
                            Scalar::Owned(v)
                        }
                    });
                }
                b'\\' => {
                    let v = owned.get_or_insert_with(Vec::new);
                    v.extend_from_slice(chunk);
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    let byte = match esc {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let c = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            let v = owned.get_or_insert_with(Vec::new);
                            v.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    v.push(byte);
                }
                _ => return Err(self.err("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, BodyError> {
        let s: &'a [u8] = self.s;
        let digits = s.get(self.pos..self.pos + 4).ok_or_else(|| self.err("invalid \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v << 4 | n;
        }
        self.pos += 4;
        Ok(v)
    }

    /// After `\u`: four hex digits, and a low surrogate escape when the first is a high surrogate.
    fn unicode_escape(&mut self) -> Result<char, BodyError> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                return Err(self.err("unpaired surrogate in \\u escape"));
            }
            self.pos += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("unpaired surrogate in \\u escape"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("unpaired surrogate in \\u escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn flat(json: &str) -> Vec<(String, String)> {
        parse_json(json.as_bytes(), 100)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn p(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    /// Coraza's own fixture (internal/bodyprocessors/json_test.go, case "map"), compared as a map like Coraza.
    #[test]
    fn coraza_map_fixture() {
        let json =
            r#"{"a": 1, "b": 2, "c": [1, 2, 3], "d": {"a": {"b": 1}}, "e": [{"a": 1}], "f": [[[{"z": "abc"}]]]}"#;
        let got: BTreeMap<_, _> = flat(json).into_iter().collect();
        let want: BTreeMap<String, String> = [
            ("json.a", "1"),
            ("json.b", "2"),
            ("json.c", "3"),
            ("json.c.0", "1"),
            ("json.c.1", "2"),
            ("json.c.2", "3"),
            ("json.d.a.b", "1"),
            ("json.e", "1"),
            ("json.e.0.a", "1"),
            ("json.f", "1"),
            ("json.f.0", "1"),
            ("json.f.0.0", "1"),
            ("json.f.0.0.0.z", "abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    /// Coraza's fixture, case "array" (top-level array).
    #[test]
    fn coraza_array_fixture() {
        let json = r#"[[[{"q": 1}]], {"a": 1, "c": [1, 2, 3], "f": [[[{"z": "abc"}]]]}]"#;
        assert_eq!(
            flat(json),
            vec![
                p("json.0.0.0.q", "1"),
                p("json.0.0", "1"),
                p("json.0", "1"),
                p("json.1.a", "1"),
                p("json.1.c.0", "1"),
                p("json.1.c.1", "2"),
                p("json.1.c.2", "3"),
                p("json.1.c", "3"),
                p("json.1.f.0.0.0.z", "abc"),
                p("json.1.f.0.0", "1"),
                p("json.1.f.0", "1"),
                p("json.1.f", "1"),
                p("json", "2"),
            ]
        );
    }

    #[test]
    fn scalar_values_as_written() {
        assert_eq!(
            flat(r#"{"n": -1.50e+3, "t": true, "f": false, "z": null, "s": "x y", "e": {}, "a": []}"#),
            vec![
                p("json.n", "-1.50e+3"),
                p("json.t", "true"),
                p("json.f", "false"),
                p("json.z", ""),
                p("json.s", "x y")
            ]
        );
    }

    #[test]
    fn escapes_are_decoded_in_keys_and_values() {
        assert_eq!(
            flat(r#"{"a\"b": "\u0041\n\/\\", "k\u00e9": "\ud83d\ude00"}"#),
            vec![p("json.a\"b", "A\n/\\"), p("json.ké", "😀")]
        );
    }

    #[test]
    fn duplicates_and_odd_keys_kept_in_order() {
        assert_eq!(
            flat(r#"{"a": 1, "a": 2, "": 3, "x.y": 4}"#),
            vec![p("json.a", "1"), p("json.a", "2"), p("json.", "3"), p("json.x.y", "4")]
        );
    }

    #[test]
    fn top_level_scalar_named_like_coraza() {
        assert_eq!(flat(r#" "hi" "#), vec![p("json.0", "hi"), p("json", "1")]);
        assert_eq!(flat("42"), vec![p("json.0", "42"), p("json", "1")]);
        assert!(flat("").is_empty());
        assert!(flat(" \r\n\t").is_empty());
    }

    #[test]
    fn invalid_json_is_an_error() {
        for bad in [
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{'a':1}",
            "{\"a\" 1}",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[+1]",
            "tru",
            "[nul]",
            "{\"a\":1}x",
            "[1] [2]",
            "\"abc",
            "\"a\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"a\u{1}b\"",
            "{\"a\":}",
            "[,1]",
            "{1:2}",
            "]",
            "/* c */ 1",
        ] {
            assert!(
                matches!(parse_json(bad.as_bytes(), 100), Err(BodyError::Json { .. })),
                "accepted invalid JSON {bad:?}"
            );
        }
    }

    #[test]
    fn error_message_has_offset_not_content() {
        let err = parse_json(b"{\"password\": hunter2}", 10).unwrap_err();
        assert_eq!(err.to_string(), "JSON parsing error at byte 13: unexpected character");
    }

    #[test]
    fn depth_limit() {
        assert_eq!(parse_json(b"[[1]]", 2).unwrap().len(), 3);
        assert_eq!(parse_json(b"[[[1]]]", 2), Err(BodyError::JsonDepth { limit: 2 }));
        assert_eq!(parse_json(b"1", 0).unwrap().len(), 2);
        // a depth bomb fails fast without recursion
        let bomb = "[".repeat(1_000_000);
        assert_eq!(parse_json(bomb.as_bytes(), 512), Err(BodyError::JsonDepth { limit: 512 }));
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(parse_json(deep.as_bytes(), 1000).unwrap().len(), 999);
        // deeper: the names of the array-length entries alone would be quadratic; the budget stops it
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse_json_with_limit(deep.as_bytes(), 200_000, usize::MAX),
            Err(BodyError::NamesTooLarge { .. })
        ));
    }

    #[test]
    fn arg_limit() {
        assert_eq!(parse_json_with_limit(b"[1,2]", 10, 3).unwrap().len(), 3);
        assert_eq!(parse_json_with_limit(b"[1,2,3]", 10, 3), Err(BodyError::TooManyArgs { limit: 3 }));
        let many = format!("[{}1]", "1,".repeat(500_000));
        assert_eq!(parse_json(many.as_bytes(), 10), Err(BodyError::TooManyArgs { limit: DEFAULT_MAX_ARGS }));
    }

    #[test]
    fn long_key_over_many_leaves_hits_the_name_budget() {
        let key = "k".repeat(100_000);
        let body = format!("{{\"{key}\": [{}0]}}", "0,".repeat(999));
        assert_eq!(parse_json(body.as_bytes(), 10), Err(BodyError::NamesTooLarge { limit: names_budget(body.len()) }));
        let body = format!("{{\"{key}\": [0, 1]}}");
        assert_eq!(parse_json(body.as_bytes(), 10).unwrap().len(), 3);
    }

    #[test]
    fn raw_non_utf8_bytes_are_kept() {
        let got = parse_json(b"{\"a\": \"\xff\xfe\"}", 10).unwrap();
        assert_eq!(got, vec![(b"json.a".to_vec(), vec![0xff, 0xfe])]);
    }
}
