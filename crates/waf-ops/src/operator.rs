//! SecRule operators (`@rx`, `@pm`, `@eq`, ...), compiled once from the rule text and matched per value.
//! Invariant: an `Operator` is immutable after `parse` apart from the bounded cache of regexes compiled
//! from macro-expanded patterns, so it is `Send + Sync` and shared by all transactions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::rx::{log_escape_re, Rx};

/// Macro expansion the engine provides, for operator arguments containing `%{tx.foo}` and the like. The result is
/// shared (`Arc`) so an engine can hand out a remembered expansion without copying it for every value checked.
pub trait MacroEnv {
    fn expand(&self, template: &str) -> std::sync::Arc<[u8]>;
}

/// An operator argument's bytes: the fixed text, or an expansion.
enum ArgBytes<'a> {
    Fixed(&'a [u8]),
    Expanded(std::sync::Arc<[u8]>),
}

impl std::ops::Deref for ArgBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ArgBytes::Fixed(b) => b,
            ArgBytes::Expanded(r) => r,
        }
    }
}

/// How many distinct macro-expanded `@rx` patterns one operator keeps compiled.
const DYN_CACHE_MAX: usize = 32;

/// An argument that is either fixed at load time or a template expanded per match.
#[derive(Debug)]
enum Arg {
    Fixed(Vec<u8>),
    Macro(String),
}

impl Arg {
    fn new(s: &str) -> Arg {
        if s.contains("%{") {
            Arg::Macro(s.to_owned())
        } else {
            Arg::Fixed(s.as_bytes().to_vec())
        }
    }

    fn get<'a>(&'a self, env: &dyn MacroEnv) -> ArgBytes<'a> {
        match self {
            Arg::Fixed(v) => ArgBytes::Fixed(v),
            Arg::Macro(t) => ArgBytes::Expanded(env.expand(t)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Debug)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug)]
enum Kind {
    Rx(Rx),
    RxMacro { template: String, cache: Mutex<HashMap<String, Arc<Rx>>> },
    Pm { ac: AhoCorasick, phrases: Vec<Vec<u8>> },
    StrEq(Arg),
    Contains(Arg),
    ContainsWord(Arg),
    BeginsWith(Arg),
    EndsWith(Arg),
    Within(Arg),
    Num(Cmp, Arg),
    IpMatch(Vec<IpNet>),
    DetectSqli,
    DetectXss,
    ValidateByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    Unconditional,
    NoMatch,
}

/// One compiled operator, with its negation. Made only by [`Operator::parse`].
#[derive(Debug)]
pub struct Operator {
    name: &'static str,
    negated: bool,
    kind: Kind,
}

impl Operator {
    /// The operator part of a SecRule as written between the quotes: `"@rx foo"`, `"!@pm a b"`, `"foo"`
    /// (= `@rx foo`), `"!@eq 0"`, `"@pmFromFile x.data"` (resolved against `base_dir`, the directory of the
    /// rule file). Operator names are case-insensitive, as in v2. `Err(reason)` for unknown operators, bad
    /// regexes, missing files, ...
    pub fn parse(spec: &str, base_dir: &Path) -> Result<Operator, String> {
        let (negated, rest) = match spec.strip_prefix('!') {
            Some(r) => (true, r.trim_start_matches(is_c_space)),
            None => (false, spec),
        };
        let (name, param) = match rest.strip_prefix('@') {
            None => ("rx", rest),
            Some(r) => {
                let end = r.find(is_c_space).unwrap_or(r.len());
                let (n, p) = r.split_at(end);
                (n, p.trim_start_matches(is_c_space))
            }
        };
        let lname = name.to_ascii_lowercase();
        let (name, kind): (&'static str, Kind) = match lname.as_str() {
            "rx" => {
                if param.contains("%{") {
                    ("rx", Kind::RxMacro { template: param.to_owned(), cache: Mutex::new(HashMap::new()) })
                } else {
                    ("rx", Kind::Rx(Rx::compile(param).map_err(|e| format!("@rx: {e}"))?))
                }
            }
            "pm" => {
                if param.is_empty() {
                    return Err("missing parameter for operator @pm".into());
                }
                let content = parse_pm_content(param.as_bytes()).unwrap_or_else(|| param.as_bytes().to_vec());
                let phrases: Vec<Vec<u8>> = content
                    .split(|&b| is_c_space(char::from(b)))
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                ("pm", pm_kind(phrases)?)
            }
            "pmfromfile" | "pmf" => {
                if param.trim().is_empty() {
                    return Err(format!("missing parameter for operator @{name}"));
                }
                let mut phrases = Vec::new();
                for file in param.split(is_c_space).filter(|f| !f.is_empty()) {
                    let path = resolve(base_dir, file);
                    let data = std::fs::read(&path)
                        .map_err(|e| format!("could not open phrase file \"{}\": {e}", path.display()))?;
                    phrases.extend(phrases_from_file(&data));
                }
                (if lname == "pmf" { "pmf" } else { "pmFromFile" }, pm_kind(phrases)?)
            }
            "streq" => ("streq", Kind::StrEq(Arg::new(param))),
            "contains" => ("contains", Kind::Contains(Arg::new(param))),
            "containsword" => ("containsWord", Kind::ContainsWord(Arg::new(param))),
            "beginswith" => ("beginsWith", Kind::BeginsWith(Arg::new(param))),
            "endswith" => ("endsWith", Kind::EndsWith(Arg::new(param))),
            "within" => ("within", Kind::Within(Arg::new(param))),
            "eq" => ("eq", Kind::Num(Cmp::Eq, Arg::new(param))),
            "ge" => ("ge", Kind::Num(Cmp::Ge, Arg::new(param))),
            "gt" => ("gt", Kind::Num(Cmp::Gt, Arg::new(param))),
            "le" => ("le", Kind::Num(Cmp::Le, Arg::new(param))),
            "lt" => ("lt", Kind::Num(Cmp::Lt, Arg::new(param))),
            "ipmatch" => ("ipMatch", Kind::IpMatch(parse_ip_list(param.split(','))?)),
            "ipmatchfromfile" | "ipmatchf" => {
                let file = param.trim();
                if file.is_empty() {
                    return Err("missing parameter for operator @ipMatchFromFile".into());
                }
                let path = resolve(base_dir, file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("could not open IP file \"{}\": {e}", path.display()))?;
                let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
                ("ipMatchFromFile", Kind::IpMatch(parse_ip_list(lines)?))
            }
            "detectsqli" => ("detectSQLi", Kind::DetectSqli),
            "detectxss" => ("detectXSS", Kind::DetectXss),
            "validatebyterange" => ("validateByteRange", Kind::ValidateByteRange(parse_byte_ranges(param)?)),
            "validateurlencoding" => ("validateUrlEncoding", Kind::ValidateUrlEncoding),
            "validateutf8encoding" => ("validateUtf8Encoding", Kind::ValidateUtf8Encoding),
            "unconditionalmatch" => ("unconditionalMatch", Kind::Unconditional),
            "nomatch" => ("noMatch", Kind::NoMatch),
            // Lookups Palisade does not perform (no GeoIP database, no DNS blocklists): they never match,
            // which is what v2 does when the lookup fails.
            "geolookup" => ("geoLookup", Kind::NoMatch),
            "rbl" => ("rbl", Kind::NoMatch),
            _ => return Err(format!("unknown operator @{name}")),
        };
        Ok(Operator { name, negated, kind })
    }

    /// The operator name in v2's canonical spelling: `"rx"`, `"pm"`, `"pmFromFile"`, ...
    pub fn name(&self) -> &str {
        self.name
    }

    /// Whether the operator was written with `!`.
    pub fn negated(&self) -> bool {
        self.negated
    }

    /// Whether it matched (negation already applied). `captures`: when `Some`, an `@rx` match replaces its
    /// content with groups 0..=9 (TX:0..TX:9 for the `capture` action); `@pm`/`@pmFromFile` put the matched
    /// phrase in `[0]` and `@detectSQLi` the libinjection fingerprint. Other operators, and non-matches,
    /// leave it untouched, as v2 leaves TX:0..9.
    pub fn matches(&self, input: &[u8], env: &dyn MacroEnv, captures: Option<&mut Vec<Vec<u8>>>) -> bool {
        self.raw_match(input, env, captures) != self.negated
    }

    /// The compiled pattern of a non-negated `@rx` without macros.
    pub(crate) fn plain_rx(&self) -> Option<&Rx> {
        match (&self.kind, self.negated) {
            (Kind::Rx(rx), false) => Some(rx),
            _ => None,
        }
    }

    /// The argument of the operators that take a string or number argument (`@streq`, `@within`, `@eq`, ...).
    fn arg(&self) -> Option<&Arg> {
        match &self.kind {
            Kind::StrEq(a)
            | Kind::Contains(a)
            | Kind::ContainsWord(a)
            | Kind::BeginsWith(a)
            | Kind::EndsWith(a)
            | Kind::Within(a)
            | Kind::Num(_, a) => Some(a),
            _ => None,
        }
    }

    /// Whether the result depends on the input bytes alone (no macro in the argument, nothing read from the
    /// transaction), so an engine may remember it per input. Captures are not part of this promise.
    pub fn is_pure(&self) -> bool {
        match self.arg() {
            Some(a) => matches!(a, Arg::Fixed(_)),
            None => !matches!(self.kind, Kind::RxMacro { .. }),
        }
    }

    /// The macro template of the argument (`@within %{tx.allowed_methods}`), when it has one: an engine may parse
    /// it once at load and serve [`MacroEnv::expand`] from that.
    pub fn macro_template(&self) -> Option<&str> {
        match (&self.kind, self.arg()) {
            (Kind::RxMacro { template, .. }, _) => Some(template),
            (_, Some(Arg::Macro(t))) => Some(t),
            _ => None,
        }
    }

    /// Bytes (a 256-bit set) at least one of which every input this operator matches contains: for each string of
    /// a required-literal set, its least common byte (both cases of a letter), from whichever set (see
    /// [`Operator::required_literals`] and, for a regex, `Rx::required_literal_candidates`) gives the least common
    /// bytes; for `@validateByteRange`, the bytes outside its ranges; for `@detectSQLi` and `@detectXSS`, every byte
    /// but ASCII letters, digits and `_` (see `plain_word`). `None` when no such set is known. An engine may
    /// skip the operator on an input with none of them; the answer is the same.
    pub fn required_bytes(&self) -> Option<[u64; 4]> {
        if let (false, Kind::ValidateByteRange(allowed)) = (self.negated, &self.kind) {
            let mut set = [0u64; 4];
            for (b, _) in allowed.iter().enumerate().filter(|(_, ok)| !**ok) {
                if let Some(w) = set.get_mut(b / 64) {
                    *w |= 1u64 << (b % 64);
                }
            }
            return Some(set);
        }
        if let (false, Kind::DetectSqli | Kind::DetectXss) = (self.negated, &self.kind) {
            // libinjection never reports an empty value or a plain word (see `plain_word`): every match has a byte
            // other than an ASCII letter, digit or underscore.
            let mut set = [u64::MAX; 4];
            for b in (b'0'..=b'9').chain(b'A'..=b'Z').chain(b'a'..=b'z').chain([b'_']) {
                if let Some(w) = set.get_mut(usize::from(b >> 6)) {
                    *w &= !(1u64 << (b & 63));
                }
            }
            return Some(set);
        }
        let byte_set = |lits: &[Vec<u8>]| -> Option<[u64; 4]> {
            let mut set = [0u64; 4];
            for l in lits {
                let &b = l.iter().min_by_key(|b| commonness(**b))?;
                for c in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                    if let Some(w) = set.get_mut(usize::from(c >> 6)) {
                        *w |= 1u64 << (c & 63);
                    }
                }
            }
            Some(set)
        };
        // How often a value has one of the bytes, roughly: the sum of their commonness (each letter counted once).
        let weight = |set: &[u64; 4]| -> u32 {
            (0..=255u8)
                .filter(|b| {
                    !b.is_ascii_uppercase() && set.get(usize::from(b >> 6)).is_some_and(|w| w >> (b & 63) & 1 == 1)
                })
                .map(|b| u32::from(commonness(b)))
                .sum()
        };
        let mut best = byte_set(&self.required_literals()?)?;
        if let (false, Kind::Rx(rx)) = (self.negated, &self.kind) {
            for lits in rx.required_literal_candidates() {
                if let Some(set) = byte_set(&lits) {
                    if weight(&set) < weight(&best) {
                        best = set;
                    }
                }
            }
        }
        Some(best)
    }

    /// For an engine that searches a value for strings: a required-literal set (each string lowercased, to be found
    /// ASCII case-insensitively; every input the operator matches contains one), the one of the candidates (see
    /// [`Operator::required_bytes`]) that benign values (words, numbers, sentences) contain least often: a rare
    /// punctuation byte beats a word, a long word beats a short one. `None` when no set is known.
    pub fn filter_literals(&self) -> Option<Vec<Vec<u8>>> {
        // Roughly how often a benign value contains the string.
        let weight = |l: &Vec<u8>| -> u32 {
            let plain = l.iter().all(|b| b.is_ascii_alphanumeric());
            match (l.len(), plain) {
                (1, true) => 1000,
                (1, false) if l == b" " => 300,
                (1, false) => 3,
                (2, true) => 60,
                (3, true) => 15,
                (_, true) => 4,
                (_, false) => 2,
            }
        };
        let score = |set: &Vec<Vec<u8>>| set.iter().map(weight).fold(0u32, u32::saturating_add);
        let mut best = self.required_literals()?;
        if let (false, Kind::Rx(rx)) = (self.negated, &self.kind) {
            for set in rx.required_literal_candidates() {
                if score(&set) < score(&best) {
                    best = set;
                }
            }
        }
        Some(best)
    }

    /// For `@pm`-style prefiltering by the engine: the literal phrases, when the operator is a phrase match.
    pub fn phrases(&self) -> Option<&[Vec<u8>]> {
        match &self.kind {
            Kind::Pm { phrases, .. } => Some(phrases),
            _ => None,
        }
    }

    /// For the engine's prefilter: strings (lowercased) such that every value this operator matches contains
    /// at least one of them, compared ASCII case-insensitively. `None` when no such set is known, and always
    /// for a negated operator (its matches are the values without them).
    pub fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        if self.negated {
            return None;
        }
        match &self.kind {
            Kind::Rx(rx) => rx.required_literals(),
            Kind::Pm { phrases, .. } => {
                if phrases.is_empty() || phrases.iter().any(Vec::is_empty) {
                    return None;
                }
                Some(phrases.iter().map(|p| p.to_ascii_lowercase()).collect())
            }
            _ => None,
        }
    }

    fn raw_match(&self, input: &[u8], env: &dyn MacroEnv, captures: Option<&mut Vec<Vec<u8>>>) -> bool {
        match &self.kind {
            Kind::Rx(rx) => rx_match(rx, input, captures),
            Kind::RxMacro { template, cache } => match dynamic_rx(template, cache, env) {
                Some(rx) => rx_match(&rx, input, captures),
                None => false,
            },
            Kind::Pm { ac, phrases } => {
                if input.is_empty() {
                    return false;
                }
                match ac.find(input) {
                    Some(m) => {
                        if let Some(c) = captures {
                            c.clear();
                            c.push(phrases.get(m.pattern().as_usize()).cloned().unwrap_or_default());
                        }
                        true
                    }
                    None => false,
                }
            }
            Kind::StrEq(a) => *a.get(env) == *input,
            Kind::Contains(a) => {
                let needle = a.get(env);
                needle.is_empty() || memchr::memmem::find(input, &needle).is_some()
            }
            Kind::ContainsWord(a) => contains_word(input, &a.get(env)),
            Kind::BeginsWith(a) => input.starts_with(&a.get(env)),
            Kind::EndsWith(a) => input.ends_with(&a.get(env)),
            Kind::Within(a) => input.is_empty() || memchr::memmem::find(&a.get(env), input).is_some(),
            Kind::Num(cmp, a) => {
                let (left, right) = (atoi(input), atoi(&a.get(env)));
                match cmp {
                    Cmp::Eq => left == right,
                    Cmp::Ge => left >= right,
                    Cmp::Gt => left > right,
                    Cmp::Le => left <= right,
                    Cmp::Lt => left < right,
                }
            }
            Kind::IpMatch(nets) => ip_match(nets, input),
            Kind::DetectSqli => {
                if plain_word(input) {
                    return false;
                }
                let Ok(r) = std::panic::catch_unwind(|| palisade_libinjection::detect_sqli(input)) else {
                    return false;
                };
                if !r.is_injection() {
                    return false;
                }
                if let (Some(c), Some(fp)) = (captures, r.fingerprint.as_ref()) {
                    c.clear();
                    c.push(fp.as_str().as_bytes().to_vec());
                }
                true
            }
            Kind::DetectXss => {
                !plain_word(input)
                    && std::panic::catch_unwind(|| palisade_libinjection::detect_xss(input).is_injection())
                        .unwrap_or(false)
            }
            Kind::ValidateByteRange(table) => input.iter().any(|&b| !table[usize::from(b)]),
            Kind::ValidateUrlEncoding => !valid_url_encoding(input),
            Kind::ValidateUtf8Encoding => !valid_utf8_v2(input),
            Kind::Unconditional => true,
            Kind::NoMatch => false,
        }
    }
}

/// Whether `input` is one run of ASCII letters, digits and underscores (ids, tokens, numbers, words: most values),
/// which libinjection never reports, so neither check needs to run:
/// - SQLi: such a run is at most two tokens (a number, then a word: `1union`), no comment, quote or operator. The
///   only fingerprints of one or two tokens on libinjection's list are `X` (unparsable input), those ending in a
///   comment (`1C`, `nC`, `sC`, `vC`), and `1U`/`vU`, which its whitelist lets through when there are exactly two
///   tokens (a number and `union` is normal input).
/// - XSS: without `<`, `=`, quotes or `:` there is no tag, no attribute value and no URL in any of the contexts it
///   tries: a bare attribute name (`onload`) is not an attribute with a value.
///
/// `libinjection_plain_words_are_never_reported` checks this against the library on every keyword of its SQL table
/// and event-handler names, alone and combined with numbers, and on random runs.
pub(crate) fn plain_word(input: &[u8]) -> bool {
    !input.is_empty() && input.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn resolve(base_dir: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn rx_match(rx: &Rx, input: &[u8], captures: Option<&mut Vec<Vec<u8>>>) -> bool {
    match captures {
        Some(c) => rx.captures(input, c),
        None => rx.is_match(input),
    }
}

/// v2 expands the macros, escapes the result with `log_escape_re` and compiles it; compiled patterns are
/// kept per expansion (bounded).
fn dynamic_rx(template: &str, cache: &Mutex<HashMap<String, Arc<Rx>>>, env: &dyn MacroEnv) -> Option<Arc<Rx>> {
    let pattern = log_escape_re(&env.expand(template));
    if let Ok(c) = cache.lock() {
        if let Some(rx) = c.get(&pattern) {
            return Some(Arc::clone(rx));
        }
    }
    let rx = Arc::new(Rx::compile(&pattern).ok()?);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= DYN_CACHE_MAX {
            c.clear();
        }
        c.insert(pattern, Arc::clone(&rx));
    }
    Some(rx)
}

fn pm_kind(phrases: Vec<Vec<u8>>) -> Result<Kind, String> {
    let ac = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(&phrases)
        .map_err(|e| format!("cannot build phrase matcher: {e}"))?;
    Ok(Kind::Pm { ac, phrases })
}

/// v2 `parse_pm_content`: optional surrounding double quotes, `|48 49|` hex blocks and the escapes `\:`,
/// `\;`, `\\`, `\"`. `None` where v2 reports an error (the caller then uses the raw text, as v2 does).
/// Quirk kept: when nothing was converted, the result is the in-place buffer at its original length.
fn parse_pm_content(content: &[u8]) -> Option<Vec<u8>> {
    let offset = content.iter().take_while(|&&b| is_c_space(char::from(b))).count();
    let body = content.get(offset..).unwrap_or_default();
    let mut parm: Vec<u8> = if body.len() >= 2 && body.first() == Some(&b'"') && body.last() == Some(&b'"') {
        body.get(1..body.len() - 1).unwrap_or_default().to_vec()
    } else {
        body.to_vec()
    };
    if let Some(nul) = memchr::memchr(0, &parm) {
        parm.truncate(nul);
    }
    if parm.is_empty() {
        return None;
    }
    let op_len = parm.len();
    let (mut bin, mut esc, mut converted) = (false, false, false);
    let mut hex: Vec<u8> = Vec::with_capacity(2);
    let mut x = 0usize;
    for i in 0..op_len {
        let c = parm.get(i).copied().unwrap_or(0);
        if c == b'|' {
            bin = !bin;
        } else if !esc && c == b'\\' {
            esc = true;
        } else if bin {
            if c.is_ascii_hexdigit() {
                hex.push(c);
                if hex.len() == 2 {
                    let v = std::str::from_utf8(&hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
                    hex.clear();
                    if let Some(slot) = parm.get_mut(x) {
                        *slot = v;
                    }
                    x += 1;
                    converted = true;
                }
            }
        } else if esc {
            if matches!(c, b':' | b';' | b'\\' | b'"') {
                if let Some(slot) = parm.get_mut(x) {
                    *slot = c;
                }
                x += 1;
            } else {
                return None;
            }
            esc = false;
            converted = true;
        } else {
            if let Some(slot) = parm.get_mut(x) {
                *slot = c;
            }
            x += 1;
        }
    }
    if converted {
        parm.truncate(x);
    }
    Some(parm)
}

/// Phrases of a `@pmFromFile` data file: each line through `parse_pm_content`, trimmed; blank lines and
/// lines starting with `#` are skipped.
fn phrases_from_file(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let processed = parse_pm_content(line).unwrap_or_else(|| line.to_vec());
        let s = processed.split(|&b| b == 0).next().unwrap_or_default();
        let start = s.iter().position(|&b| !is_c_space(char::from(b))).unwrap_or(s.len());
        let end = s.iter().rposition(|&b| !is_c_space(char::from(b))).map_or(start, |e| e + 1);
        let phrase = s.get(start..end.max(start)).unwrap_or_default();
        if phrase.is_empty() || phrase.first() == Some(&b'#') {
            continue;
        }
        out.push(phrase.to_vec());
    }
    out
}

/// C `atoi` as glibc implements it (`(int) strtol(s, NULL, 10)`): leading whitespace, a sign, digits;
/// anything else ends the number, no digits give 0, overflow saturates the long and truncates to int.
/// How common a byte is in benign request values (higher: more common), to pick the most telling byte of a literal.
fn commonness(b: u8) -> u8 {
    match b.to_ascii_lowercase() {
        b'e' | b'a' | b'o' | b'i' | b't' | b'n' | b's' | b'r' => 20,
        b'a'..=b'z' => 15,
        b'0'..=b'9' => 14,
        b' ' | b'-' | b'_' | b'.' | b'/' | b'=' | b'&' | b',' => 10,
        0x80..=0xff => 3,
        _ => 1,
    }
}

/// Whether `input` contains a byte of `set` (as [`Operator::required_bytes`] makes it).
pub fn has_any_byte(input: &[u8], set: &[u64; 4]) -> bool {
    input.iter().any(|&b| set.get(usize::from(b >> 6)).is_some_and(|w| w >> (b & 63) & 1 == 1))
}

pub(crate) fn atoi(s: &[u8]) -> i32 {
    let mut i = s.iter().take_while(|&&b| is_c_space(char::from(b))).count();
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    let mut overflow = false;
    for &d in s.get(i..).unwrap_or_default().iter().take_while(|b| b.is_ascii_digit()) {
        match v.checked_mul(10).and_then(|v| v.checked_add(i64::from(d - b'0'))) {
            Some(n) => v = n,
            None => {
                overflow = true;
                break;
            }
        }
    }
    let long = match (overflow, neg) {
        (true, false) => i64::MAX,
        (true, true) => i64::MIN,
        (false, true) => -v,
        (false, false) => v,
    };
    long as i32
}

fn contains_word(target: &[u8], m: &[u8]) -> bool {
    if m.is_empty() {
        return true;
    }
    if m.len() > target.len() {
        return false;
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let i_max = target.len() - m.len();
    (0..=i_max).any(|i| {
        (i == 0 || target.get(i - 1).is_some_and(|&b| !is_word(b)))
            && target.get(i..i + m.len()) == Some(m)
            && (i == i_max || target.get(i + m.len()).is_some_and(|&b| !is_word(b)))
    })
}

fn parse_ip_list<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (addr, prefix) = match item.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (item, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("invalid IP address in @ipMatch: {item}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| format!("invalid netmask: {item}"))?,
        };
        nets.push(IpNet { addr, prefix });
    }
    Ok(nets)
}

fn ip_match(nets: &[IpNet], input: &[u8]) -> bool {
    let Some(ip) = std::str::from_utf8(input).ok().and_then(|s| s.trim().parse::<IpAddr>().ok()) else {
        return false;
    };
    nets.iter().any(|n| match (n.addr, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(n.prefix)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    })
}

/// v2 `validateByteRange` parameter: comma-separated values and `a-b` ranges, each through `atoi`.
fn parse_byte_ranges(param: &str) -> Result<Box<[bool; 256]>, String> {
    let mut table = Box::new([false; 256]);
    for part in param.split(',').filter(|p| !p.is_empty()) {
        let (start, end) = match part.find('-') {
            None => {
                let x = atoi(part.as_bytes());
                (x, x)
            }
            Some(dash) => (atoi(part.as_bytes()), atoi(part.get(dash + 1..).unwrap_or_default().as_bytes())),
        };
        if !(0..=255).contains(&start) || !(0..=255).contains(&end) || start > end {
            return Err(format!("invalid range in @validateByteRange: {part}"));
        }
        for b in start..=end {
            if let Some(slot) = usize::try_from(b).ok().and_then(|b| table.get_mut(b)) {
                *slot = true;
            }
        }
    }
    Ok(table)
}

/// v2 `validate_url_encoding`: every `%` needs two hex digits after it.
fn valid_url_encoding(input: &[u8]) -> bool {
    let mut i = 0;
    while i < input.len() {
        if input.get(i) == Some(&b'%') {
            match (input.get(i + 1), input.get(i + 2)) {
                (Some(a), Some(b)) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// v2 `detect_utf8_character` over the whole value: rejects truncated and invalid sequences, overlong
/// forms, surrogates and lead bytes above U+10FFFF.
fn valid_utf8_v2(input: &[u8]) -> bool {
    let mut i = 0;
    let n = input.len();
    let at = |k: usize| input.get(k).copied().unwrap_or(0);
    while i < n {
        let c = at(i);
        let left = n - i;
        let cont = |k: usize| at(i + k) & 0xC0 == 0x80;
        let (len, d): (usize, u32) = if c & 0x80 == 0 {
            (1, u32::from(c))
        } else if c & 0xE0 == 0xC0 {
            if left < 2 || !cont(1) {
                return false;
            }
            (2, (u32::from(c & 0x1F) << 6) | u32::from(at(i + 1) & 0x3F))
        } else if c & 0xF0 == 0xE0 {
            if left < 3 || !cont(1) || !cont(2) {
                return false;
            }
            (3, (u32::from(c & 0x0F) << 12) | (u32::from(at(i + 1) & 0x3F) << 6) | u32::from(at(i + 2) & 0x3F))
        } else if c & 0xF8 == 0xF0 {
            if c >= 0xF5 || left < 4 || !cont(1) || !cont(2) || !cont(3) {
                return false;
            }
            (4, (u32::from(c & 0x07) << 18) | (u32::from(at(i + 1) & 0x3F) << 12) | u32::from(at(i + 3) & 0x3F))
        } else {
            return false;
        };
        if (0xD800..=0xDFFF).contains(&d)
            || (len == 4 && d < 0x10000)
            || (len == 3 && d < 0x800)
            || (len == 2 && d < 0x80)
        {
            return false;
        }
        i += len;
    }
    true
}
