//! `@rx`: PCRE (no UTF mode, DOTALL | DOLLAR_ENDONLY, as v2 compiles it) on bytes.
//! The pattern is translated token by token into `regex` syntax with every literal byte explicit, so the
//! `regex::bytes` engine sees the same byte-oriented, ASCII-class language PCRE does. Patterns that need
//! backtracking (lookaround, backreferences, atomic groups, possessive quantifiers) go to `fancy-regex`,
//! which matches a Latin-1 view of the input (one char per byte), so byte semantics are kept there too.

use std::fmt::Write as _;

/// Compiled-program limits: generous for the CRS (its largest patterns need a few MiB), bounded for hostile
/// rule files.
const SIZE_LIMIT: usize = 64 << 20;
const DFA_SIZE_LIMIT: usize = 8 << 20;
/// Backtracking steps before fancy-regex gives up; v2 likewise reports "no match" when PCRE's match limit
/// is exceeded.
const BACKTRACK_LIMIT: usize = 500_000;

#[derive(Debug)]
enum Engine {
    Bytes(regex::bytes::Regex),
    Fancy(fancy_regex::Regex),
    /// A pattern that matches every input whole (`^.*$` in DOTALL mode: CRS 920450 captures each header name with
    /// it): no regex runs, group 0 is the input.
    Whole,
}

/// A compiled `@rx` pattern.
#[derive(Debug)]
pub(crate) struct Rx {
    engine: Engine,
}

impl Rx {
    pub(crate) fn compile(pattern: &str) -> Result<Rx, String> {
        let (translated, needs_fancy) = translate(pattern.as_bytes(), false)?;
        // With `(?s)`, `.*` from the start is greedy over every byte, so these match the whole input.
        if matches!(translated.as_str(), "^.*$" | "^.*" | ".*" | ".*$") {
            return Ok(Rx { engine: Engine::Whole });
        }
        if !needs_fancy {
            match regex::bytes::RegexBuilder::new(&format!("(?s-u){translated}"))
                .size_limit(SIZE_LIMIT)
                .dfa_size_limit(DFA_SIZE_LIMIT)
                .build()
            {
                Ok(re) => return Ok(Rx { engine: Engine::Bytes(re) }),
                Err(e) => return Err(format!("bad regex: {}", last_line(&e.to_string()))),
            }
        }
        let (translated, _) = translate(pattern.as_bytes(), true)?;
        fancy_regex::RegexBuilder::new(&format!("(?s){translated}"))
            .backtrack_limit(BACKTRACK_LIMIT)
            .delegate_size_limit(SIZE_LIMIT)
            .delegate_dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .map(|re| Rx { engine: Engine::Fancy(re) })
            .map_err(|e| format!("bad regex: {e}"))
    }

    /// The pattern as the `regex` engine compiled it, when that engine runs it (not the backtracking one, not
    /// [`Engine::Whole`]): what [`crate::RxSet`] combines.
    pub(crate) fn bytes_pattern(&self) -> Option<&str> {
        match &self.engine {
            Engine::Bytes(re) => Some(re.as_str()),
            Engine::Fancy(_) | Engine::Whole => None,
        }
    }

    /// Strings one of which every match contains (lowercased, to be searched ASCII case-insensitively);
    /// `None` when unknown (always for patterns needing the backtracking engine).
    pub(crate) fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        match &self.engine {
            Engine::Bytes(re) => crate::literals::required(re.as_str()),
            Engine::Fancy(_) | Engine::Whole => None,
        }
    }

    /// Several sets like [`Rx::required_literals`], each valid on its own (empty when none is known).
    pub(crate) fn required_literal_candidates(&self) -> Vec<Vec<Vec<u8>>> {
        match &self.engine {
            Engine::Bytes(re) => crate::literals::required_candidates(re.as_str()),
            Engine::Fancy(_) | Engine::Whole => Vec::new(),
        }
    }

    /// Whether the backtracking engine is used (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn is_fancy(&self) -> bool {
        matches!(self.engine, Engine::Fancy(_))
    }

    pub(crate) fn is_match(&self, input: &[u8]) -> bool {
        match &self.engine {
            Engine::Bytes(re) => re.is_match(input),
            // A backtrack-limit error counts as no match, as v2 does for PCRE_ERROR_MATCHLIMIT.
            Engine::Fancy(re) => re.is_match(&latin1(input)).unwrap_or(false),
            Engine::Whole => true,
        }
    }

    /// On a match, replaces `out` with groups 0..=9 (up to the last group that took part; groups that did
    /// not take part are empty), as v2 fills TX.0..TX.9.
    pub(crate) fn captures(&self, input: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
        match &self.engine {
            Engine::Whole => {
                out.clear();
                out.push(input.to_vec());
                true
            }
            Engine::Bytes(re) => {
                if re.captures_len() == 1 {
                    // No groups of its own: group 0 is the leftmost-first match, which `find` gives without
                    // the capture engines (CRS rules capture whole values, e.g. 920450's `^.*$` per header).
                    let Some(m) = re.find(input) else { return false };
                    out.clear();
                    out.push(m.as_bytes().to_vec());
                    return true;
                }
                // Most inputs do not match: the DFA-only is_match is far cheaper than a capture search.
                if !re.is_match(input) {
                    return false;
                }
                let Some(caps) = re.captures(input) else { return false };
                let last = (0..caps.len().min(10)).rev().find(|&i| caps.get(i).is_some()).unwrap_or(0);
                out.clear();
                out.extend((0..=last).map(|i| caps.get(i).map(|m| m.as_bytes().to_vec()).unwrap_or_default()));
                true
            }
            Engine::Fancy(re) => {
                let text = latin1(input);
                let Ok(Some(caps)) = re.captures(&text) else { return false };
                let last = (0..caps.len().min(10)).rev().find(|&i| caps.get(i).is_some()).unwrap_or(0);
                out.clear();
                out.extend((0..=last).map(|i| caps.get(i).map(|m| from_latin1(m.as_str())).unwrap_or_default()));
                true
            }
        }
    }
}

/// Several `@rx` operators run as one automaton: one pass over an input tells which of them match it, exactly as
/// each one's [`crate::Operator::matches`] would (without captures). For an engine that evaluates several regexes
/// on the same (transformed) value: CRS 932230, 932235, 932250 and 932260 share their targets and `t:none`, and no
/// string rules them out for a word-like value, so each new value costs four regex runs without it.
#[derive(Debug)]
pub struct RxSet {
    set: regex::bytes::RegexSet,
}

impl RxSet {
    /// The set of `ops` (at most 64), in order; `None` unless each is a non-negated `@rx` without macros that the
    /// `regex` engine runs (a backtracking pattern has no automaton to share), or when the combined program would
    /// exceed the size limits.
    pub fn new(ops: &[&crate::Operator]) -> Option<RxSet> {
        if ops.len() > 64 {
            return None;
        }
        let patterns: Vec<&str> = ops.iter().map(|o| o.plain_rx()?.bytes_pattern()).collect::<Option<_>>()?;
        let set = regex::bytes::RegexSetBuilder::new(patterns)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .ok()?;
        Some(RxSet { set })
    }

    /// Whether `op` can be part of a set (see [`RxSet::new`]).
    pub fn eligible(op: &crate::Operator) -> bool {
        op.plain_rx().and_then(Rx::bytes_pattern).is_some()
    }

    /// A bit per operator of the set (bit `i` for `ops[i]`): set when it matches `input`.
    pub fn matches(&self, input: &[u8]) -> u64 {
        // Most values match none: the plain search's loop is much faster than the overlapping search's.
        if !self.set.is_match(input) {
            return 0;
        }
        self.set.matches(input).iter().fold(0, |acc, i| acc | 1u64.checked_shl(i as u32).unwrap_or(0))
    }
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Each byte as the char with the same number; borrowed when the input is ASCII.
fn latin1(input: &[u8]) -> std::borrow::Cow<'_, str> {
    if input.is_ascii() {
        // ASCII is valid UTF-8; the fallback is unreachable.
        std::borrow::Cow::Borrowed(std::str::from_utf8(input).unwrap_or_default())
    } else {
        std::borrow::Cow::Owned(input.iter().map(|&b| char::from(b)).collect())
    }
}

fn from_latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
}

struct Tr<'a> {
    p: &'a [u8],
    i: usize,
    out: String,
    fancy_mode: bool,
    needs_fancy: bool,
}

fn byte_lit(out: &mut String, b: u8) {
    if b.is_ascii_alphanumeric() || b == b'_' {
        out.push(char::from(b));
    } else {
        let _ = write!(out, "\\x{b:02X}");
    }
}

/// One escape that denotes a single byte (shared by class and non-class contexts), or a class.
enum Esc {
    Byte(u8),
    /// A set, as the text to put inside brackets, and whether it is negated.
    Set(&'static str, bool),
    Other,
}

impl Tr<'_> {
    /// Up to two more octal digits after `v` (PCRE's `\0dd` and `\ddd` in a class), as one byte.
    fn octal(&mut self, mut v: u32) -> u8 {
        for _ in 0..2 {
            match self.peek(0) {
                Some(d) if (b'0'..=b'7').contains(&d) => {
                    v = v * 8 + u32::from(d - b'0');
                    self.i += 1;
                }
                _ => break,
            }
        }
        (v & 0xff) as u8
    }

    fn peek(&self, k: usize) -> Option<u8> {
        self.p.get(self.i + k).copied()
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("unsupported regex syntax at offset {}: {what}", self.i))
    }

    /// Parses the escape after a backslash at `self.i` (pointing at the char after `\`). Consumes it.
    fn escape(&mut self, in_class: bool) -> Result<Esc, String> {
        let Some(c) = self.peek(0) else { return self.err("trailing backslash") };
        self.i += 1;
        let e = match c {
            b'd' => Esc::Set("[:digit:]", false),
            b'D' => Esc::Set("[:digit:]", true),
            b'w' => Esc::Set("[:word:]", false),
            b'W' => Esc::Set("[:word:]", true),
            b's' => Esc::Set("[:space:]", false),
            b'S' => Esc::Set("[:space:]", true),
            b'h' => Esc::Set("\\x09\\x20\\xA0", false),
            b'H' => Esc::Set("\\x09\\x20\\xA0", true),
            b'v' => Esc::Set("\\x0A-\\x0D\\x85", false),
            b'V' => Esc::Set("\\x0A-\\x0D\\x85", true),
            b'a' => Esc::Byte(0x07),
            b'e' => Esc::Byte(0x1b),
            b'f' => Esc::Byte(0x0c),
            b'n' => Esc::Byte(b'\n'),
            b'r' => Esc::Byte(b'\r'),
            b't' => Esc::Byte(b'\t'),
            b'b' if in_class => Esc::Byte(0x08),
            b'c' => {
                let Some(x) = self.peek(0) else { return self.err("\\c at end") };
                self.i += 1;
                Esc::Byte(x.to_ascii_uppercase() ^ 0x40)
            }
            b'x' => {
                if self.peek(0) == Some(b'{') {
                    let start = self.i + 1;
                    let Some(len) = self.p.get(start..).and_then(|s| s.iter().position(|&b| b == b'}')) else {
                        return self.err("unterminated \\x{");
                    };
                    let digits = self.p.get(start..start + len).unwrap_or_default();
                    let v = std::str::from_utf8(digits).ok().and_then(|d| u32::from_str_radix(d, 16).ok());
                    self.i = start + len + 1;
                    match v.and_then(|v| u8::try_from(v).ok()) {
                        Some(b) => Esc::Byte(b),
                        None => return self.err("character value in \\x{} too large for non-UTF mode"),
                    }
                } else {
                    let mut v: u8 = 0;
                    for _ in 0..2 {
                        match self.peek(0).and_then(|d| char::from(d).to_digit(16)) {
                            Some(d) => {
                                v = v.wrapping_mul(16).wrapping_add(d as u8);
                                self.i += 1;
                            }
                            None => break,
                        }
                    }
                    Esc::Byte(v)
                }
            }
            b'0' => Esc::Byte(self.octal(0)),
            b'1'..=b'9' if in_class => {
                // Inside a class there are no back-references: \ddd is octal.
                if c > b'7' {
                    return Ok(Esc::Byte(c));
                }
                Esc::Byte(self.octal(u32::from(c - b'0')))
            }
            c if c.is_ascii_alphanumeric() => {
                self.i -= 1;
                Esc::Other
            }
            // Backslash + any non-alphanumeric byte is that byte.
            c => Esc::Byte(c),
        };
        Ok(e)
    }

    fn run(&mut self) -> Result<(), String> {
        while let Some(c) = self.peek(0) {
            match c {
                b'\\' => {
                    self.i += 1;
                    self.escape_outside()?;
                }
                b'[' => {
                    self.i += 1;
                    self.class()?;
                }
                b'(' => self.group()?,
                b'*' | b'+' | b'?' => {
                    self.out.push(char::from(c));
                    self.i += 1;
                    self.quantifier_suffix();
                }
                b'{' => {
                    if let Some(len) = self.counted_repetition() {
                        let q = self.p.get(self.i..self.i + len).unwrap_or_default();
                        self.out.push_str(&String::from_utf8_lossy(q));
                        self.i += len;
                        self.quantifier_suffix();
                    } else {
                        self.out.push_str("\\{");
                        self.i += 1;
                    }
                }
                b'}' => {
                    self.out.push_str("\\}");
                    self.i += 1;
                }
                b']' => {
                    self.out.push_str("\\]");
                    self.i += 1;
                }
                b')' | b'|' | b'^' | b'$' | b'.' => {
                    self.out.push(char::from(c));
                    self.i += 1;
                }
                c if c.is_ascii_graphic() || c == b' ' => {
                    byte_lit(&mut self.out, c);
                    self.i += 1;
                }
                c => {
                    byte_lit(&mut self.out, c);
                    self.i += 1;
                }
            }
        }
        Ok(())
    }

    /// `{n}`, `{n,}`, `{n,m}` at `self.i`: its length; anything else is a literal brace in PCRE.
    fn counted_repetition(&self) -> Option<usize> {
        let rest = self.p.get(self.i..)?;
        let close = rest.iter().position(|&b| b == b'}')?;
        let inner = rest.get(1..close)?;
        let mut parts = inner.splitn(2, |&b| b == b',');
        let lo = parts.next()?;
        if lo.is_empty() || !lo.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if let Some(hi) = parts.next() {
            if !hi.iter().all(u8::is_ascii_digit) {
                return None;
            }
        }
        Some(close + 1)
    }

    fn quantifier_suffix(&mut self) {
        match self.peek(0) {
            Some(b'?') => {
                self.out.push('?');
                self.i += 1;
            }
            Some(b'+') => {
                // Possessive: only the backtracking engine has it.
                self.needs_fancy = true;
                self.out.push('+');
                self.i += 1;
            }
            _ => {}
        }
    }

    fn escape_outside(&mut self) -> Result<(), String> {
        let Some(c) = self.peek(0) else { return self.err("trailing backslash") };
        match c {
            b'b' | b'B' | b'A' | b'z' => {
                self.out.push('\\');
                self.out.push(char::from(c));
                self.i += 1;
            }
            b'Z' => {
                self.out.push_str(if self.fancy_mode { "(?=\\n?\\z)" } else { "(?:\\n?\\z)" });
                self.i += 1;
            }
            b'R' => {
                self.out.push_str("(?:\\x0D\\x0A|[\\x0A-\\x0D\\x85])");
                self.i += 1;
            }
            b'N' => {
                self.out.push_str("[^\\x0A]");
                self.i += 1;
            }
            b'Q' => {
                self.i += 1;
                while let Some(b) = self.peek(0) {
                    if b == b'\\' && self.peek(1) == Some(b'E') {
                        self.i += 2;
                        break;
                    }
                    byte_lit(&mut self.out, b);
                    self.i += 1;
                }
            }
            b'E' => self.i += 1,
            b'1'..=b'9' => {
                // Back-reference.
                self.needs_fancy = true;
                self.out.push('\\');
                while let Some(d) = self.peek(0).filter(u8::is_ascii_digit) {
                    self.out.push(char::from(d));
                    self.i += 1;
                }
            }
            b'k' | b'g' | b'G' | b'p' | b'P' | b'X' | b'C' | b'K' => {
                return self.err("escape not supported");
            }
            _ => match self.escape(false)? {
                Esc::Byte(b) => byte_lit(&mut self.out, b),
                Esc::Set(s, neg) => {
                    let _ = write!(self.out, "[{}{s}]", if neg { "^" } else { "" });
                }
                Esc::Other => {
                    // PCRE1 treats an unknown letter escape as the letter.
                    let b = self.peek(0).unwrap_or(b'?');
                    byte_lit(&mut self.out, b);
                    self.i += 1;
                }
            },
        }
        Ok(())
    }

    fn group(&mut self) -> Result<(), String> {
        // At '('.
        if self.peek(1) != Some(b'?') {
            if self.peek(1) == Some(b'*') {
                return self.err("(*VERB) not supported");
            }
            self.out.push('(');
            self.i += 1;
            return Ok(());
        }
        let rest = self.p.get(self.i..).unwrap_or_default();
        let lookaround: [&[u8]; 5] = [b"(?=", b"(?!", b"(?<=", b"(?<!", b"(?>"];
        if let Some(l) = lookaround.iter().find(|l| rest.starts_with(l)) {
            self.needs_fancy = true;
            self.out.push_str(&String::from_utf8_lossy(l));
            self.i += l.len();
            return Ok(());
        }
        if rest.starts_with(b"(?#") {
            match rest.iter().position(|&b| b == b')') {
                Some(p) => self.i += p + 1,
                None => return self.err("unterminated comment"),
            }
            return Ok(());
        }
        if rest.starts_with(b"(?P<") || rest.starts_with(b"(?<") || rest.starts_with(b"(?'") {
            let start = if rest.starts_with(b"(?P<") { 4 } else { 3 };
            let close = if rest.get(start - 1) == Some(&b'\'') { b'\'' } else { b'>' };
            let Some(len) = rest.get(start..).and_then(|r| r.iter().position(|&b| b == close)) else {
                return self.err("unterminated group name");
            };
            let name = rest.get(start..start + len).unwrap_or_default();
            if !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
                return self.err("bad group name");
            }
            let _ = write!(self.out, "(?P<{}>", String::from_utf8_lossy(name));
            self.i += start + len + 1;
            return Ok(());
        }
        if rest.starts_with(b"(?(") {
            self.needs_fancy = true;
            self.out.push_str("(?(");
            self.i += 3;
            return Ok(());
        }
        if rest.starts_with(b"(?:") {
            self.out.push_str("(?:");
            self.i += 3;
            return Ok(());
        }
        // Option setting: (?imsxU-imsxU) or (?imsxU-imsxU:
        let mut k = 2;
        while let Some(&b) = rest.get(k) {
            match b {
                b'i' | b'm' | b's' | b'x' | b'U' | b'-' => k += 1,
                b')' | b':' => {
                    self.out.push_str(&String::from_utf8_lossy(rest.get(..=k).unwrap_or_default()));
                    self.i += k + 1;
                    return Ok(());
                }
                _ => break,
            }
        }
        self.err("group syntax not supported")
    }

    fn class(&mut self) -> Result<(), String> {
        // After '['.
        self.out.push('[');
        if self.peek(0) == Some(b'^') {
            self.out.push('^');
            self.i += 1;
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek(0) else { return self.err("missing terminating ] for character class") };
            if c == b']' && !first {
                self.i += 1;
                self.out.push(']');
                return Ok(());
            }
            first = false;
            let Some(lo) = self.class_atom()? else { continue };
            // A range?
            if self.peek(0) == Some(b'-') && self.peek(1).is_some_and(|b| b != b']') {
                self.i += 1;
                let save_out = self.out.len();
                match self.class_atom()? {
                    Some(hi) if hi < lo => return self.err("range out of order in character class"),
                    // The end was already written: put the range operator before it.
                    Some(_) => self.out.insert(save_out, '-'),
                    // `a-\d`: the hyphen is literal; the class escape was already written.
                    None => self.out.insert_str(save_out, "\\x2D"),
                }
            }
        }
    }

    /// One class member at `self.i`; writes it. Returns the byte when it is a single byte (range start).
    fn class_atom(&mut self) -> Result<Option<u8>, String> {
        let Some(c) = self.peek(0) else { return self.err("missing terminating ]") };
        if c == b'[' {
            let rest = self.p.get(self.i..).unwrap_or_default();
            if rest.starts_with(b"[:") {
                if let Some(end) = rest.windows(2).position(|w| w == b":]") {
                    let name = rest.get(2..end).unwrap_or_default();
                    let bare = name.strip_prefix(b"^").unwrap_or(name);
                    if !bare.is_empty() && bare.iter().all(u8::is_ascii_lowercase) {
                        self.out.push_str(&String::from_utf8_lossy(rest.get(..end + 2).unwrap_or_default()));
                        self.i += end + 2;
                        return Ok(None);
                    }
                }
            }
        }
        self.i += 1;
        if c != b'\\' {
            byte_lit(&mut self.out, c);
            return Ok(Some(c));
        }
        match self.escape(true)? {
            Esc::Byte(b) => {
                byte_lit(&mut self.out, b);
                Ok(Some(b))
            }
            Esc::Set(s, false) => {
                self.out.push_str(s);
                Ok(None)
            }
            Esc::Set(s, true) => {
                if let Some(name) = s.strip_prefix("[:") {
                    let _ = write!(self.out, "[:^{name}");
                    Ok(None)
                } else {
                    self.err("negated \\H or \\V inside a class")
                }
            }
            Esc::Other => {
                let b = self.peek(0).unwrap_or(b'?');
                if matches!(b, b'p' | b'P' | b'X' | b'R' | b'N') {
                    return self.err("escape not supported in class");
                }
                self.i += 1;
                byte_lit(&mut self.out, b);
                Ok(Some(b))
            }
        }
    }
}

/// PCRE pattern -> `regex` syntax. Returns the translation and whether a backtracking feature was seen.
/// `fancy_mode` selects the dialect for `fancy-regex` (lookahead available for `\Z`).
pub(crate) fn translate(p: &[u8], fancy_mode: bool) -> Result<(String, bool), String> {
    let mut t = Tr { p, i: 0, out: String::with_capacity(p.len() + p.len() / 2), fancy_mode, needs_fancy: false };
    t.run()?;
    Ok((t.out, t.needs_fancy))
}

/// v2's `log_escape_re`, which it applies to an `@rx` pattern after macro expansion.
pub(crate) fn log_escape_re(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for &b in s {
        match b {
            b':' | b'"' | b'+' | b'.' | b']' | b'[' | b'(' | b')' | b'?' | b'/' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x08 => out.push_str("\\b"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x0b => out.push_str("\\v"),
            b'\\' => out.push_str("\\\\"),
            b if !(0x20..0x7f).contains(&b) => {
                let _ = write!(out, "\\x{b:02x}");
            }
            b => out.push(char::from(b)),
        }
    }
    out
}
