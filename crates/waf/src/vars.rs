//! Variable names and selectors (`ARGS:id`, `!REQUEST_COOKIES:/^_ga/`, `&TX:foo`, `XML:/*`), parsed once at load.
//! Collection keys compare ASCII case-insensitively; regex keys are compiled case-insensitive as in ModSecurity.

use regex::bytes::Regex;

/// A per-process random seed for [`name_hash`]: store names include request data (CRS 920450 makes a TX variable
/// per header name), so the hash is not predictable from outside.
static NAME_SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    use std::hash::BuildHasher as _;
    foldhash::fast::RandomState::default().hash_one(0x5041_4c49_5341_4445u64) | 1
});

/// Hash of a store variable's name with ASCII letters case folded: eight bytes at a time (uppercase letters found
/// with word-wide arithmetic), a multiply-xor per word, and a final mix, seeded per process.
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let fold = |x: u64| {
        // High bit of each byte: at least 'A' and at most 'Z' (bytes >= 0x80 excluded); then that bit, moved to
        // 0x20, lowercases the letter.
        let low = x & !HIGH;
        let upper = low.wrapping_add(ONES * (0x80 - u64::from(b'A')))
            & !low.wrapping_add(ONES * (0x80 - u64::from(b'Z') - 1))
            & !x
            & HIGH;
        x | upper >> 2
    };
    let mut h = *NAME_SEED ^ (name.len() as u64).wrapping_mul(K);
    let mut chunks = name.chunks_exact(8);
    for c in &mut chunks {
        let w = c.try_into().map_or(0, u64::from_le_bytes);
        h = (h ^ fold(w)).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Byte by byte (at most 7): a variable-length copy would be a call.
        let w = rest.iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b));
        h = (h ^ fold(w)).wrapping_mul(K).rotate_left(29);
    }
    // murmur3's finalizer: every input bit reaches the high bits (hashbrown's tags) and the low ones (buckets).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ h >> 33
}

/// Collections whose members are (name, value) pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coll {
    Args,
    ArgsGet,
    ArgsPost,
    ReqHeaders,
    ReqCookies,
    Files,
    FilesSizes,
    FilesTmpNames,
    FilesTmpContent,
    PartHeaders,
    RespHeaders,
    MatchedVars,
    Xml,
    Env,
    Geo,
    Rule,
    /// TX, IP, GLOBAL, SESSION, USER, RESOURCE: writable with setvar (index into the transaction's stores).
    Store(usize),
}

/// Names of the writable collections, in `Coll::Store` index order.
pub(crate) const STORES: [&str; 6] = ["tx", "ip", "global", "session", "user", "resource"];
pub(crate) const TX_STORE: usize = 0;

/// Single-valued variables, an index into the transaction's scalar table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Scalar {
    ArgsCombinedSize,
    FilesCombinedSize,
    RequestFilename,
    RequestBasename,
    RequestUri,
    RequestUriRaw,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    QueryString,
    RequestBody,
    RequestBodyLength,
    RemoteAddr,
    RemotePort,
    RemoteHost,
    ServerAddr,
    ServerName,
    ServerPort,
    MatchedVar,
    MatchedVarName,
    UniqueId,
    Duration,
    ReqbodyError,
    ReqbodyErrorMsg,
    ReqbodyProcessor,
    ReqbodyProcessorError,
    ReqbodyProcessorErrorMsg,
    ResponseStatus,
    ResponseBody,
    ResponseProtocol,
    ResponseContentType,
    ResponseContentLength,
    WebserverErrorLog,
    FullRequest,
    FullRequestLength,
    InboundDataError,
    OutboundDataError,
    StatusLine,
    AuthType,
    RequestBodyProcessor,
    HighestSeverity,
    UrlencodedError,
    Time,
    TimeEpoch,
    TimeYear,
    TimeMon,
    TimeDay,
    TimeHour,
    TimeMin,
    TimeSec,
    TimeWday,
    MultipartStrictError,
    MultipartBoundaryQuoted,
    MultipartBoundaryWhitespace,
    MultipartDataBefore,
    MultipartDataAfter,
    MultipartHeaderFolding,
    MultipartLfLine,
    MultipartCrlfLfLines,
    MultipartMissingSemicolon,
    MultipartInvalidQuoting,
    MultipartInvalidPart,
    MultipartInvalidHeaderFolding,
    MultipartFileLimitExceeded,
    MultipartUnmatchedBoundary,
    MultipartFilename,
    MultipartName,
    Sdbm,
}

pub(crate) const SCALAR_COUNT: usize = Scalar::Sdbm as usize + 1;

const SCALARS: &[(&str, Scalar)] = &[
    ("ARGS_COMBINED_SIZE", Scalar::ArgsCombinedSize),
    ("FILES_COMBINED_SIZE", Scalar::FilesCombinedSize),
    ("REQUEST_FILENAME", Scalar::RequestFilename),
    ("REQUEST_BASENAME", Scalar::RequestBasename),
    ("REQUEST_URI", Scalar::RequestUri),
    ("REQUEST_URI_RAW", Scalar::RequestUriRaw),
    ("REQUEST_LINE", Scalar::RequestLine),
    ("REQUEST_METHOD", Scalar::RequestMethod),
    ("REQUEST_PROTOCOL", Scalar::RequestProtocol),
    ("QUERY_STRING", Scalar::QueryString),
    ("REQUEST_BODY", Scalar::RequestBody),
    ("REQUEST_BODY_LENGTH", Scalar::RequestBodyLength),
    ("REMOTE_ADDR", Scalar::RemoteAddr),
    ("REMOTE_PORT", Scalar::RemotePort),
    ("REMOTE_HOST", Scalar::RemoteHost),
    ("SERVER_ADDR", Scalar::ServerAddr),
    ("SERVER_NAME", Scalar::ServerName),
    ("SERVER_PORT", Scalar::ServerPort),
    ("MATCHED_VAR", Scalar::MatchedVar),
    ("MATCHED_VAR_NAME", Scalar::MatchedVarName),
    ("UNIQUE_ID", Scalar::UniqueId),
    ("DURATION", Scalar::Duration),
    ("REQBODY_ERROR", Scalar::ReqbodyError),
    ("REQBODY_ERROR_MSG", Scalar::ReqbodyErrorMsg),
    ("REQBODY_PROCESSOR", Scalar::ReqbodyProcessor),
    ("REQBODY_PROCESSOR_ERROR", Scalar::ReqbodyProcessorError),
    ("REQBODY_PROCESSOR_ERROR_MSG", Scalar::ReqbodyProcessorErrorMsg),
    ("RESPONSE_STATUS", Scalar::ResponseStatus),
    ("RESPONSE_BODY", Scalar::ResponseBody),
    ("RESPONSE_PROTOCOL", Scalar::ResponseProtocol),
    ("RESPONSE_CONTENT_TYPE", Scalar::ResponseContentType),
    ("RESPONSE_CONTENT_LENGTH", Scalar::ResponseContentLength),
    ("WEBSERVER_ERROR_LOG", Scalar::WebserverErrorLog),
    ("FULL_REQUEST", Scalar::FullRequest),
    ("FULL_REQUEST_LENGTH", Scalar::FullRequestLength),
    ("INBOUND_DATA_ERROR", Scalar::InboundDataError),
    ("OUTBOUND_DATA_ERROR", Scalar::OutboundDataError),
    ("STATUS_LINE", Scalar::StatusLine),
    ("AUTH_TYPE", Scalar::AuthType),
    ("REQUEST_BODY_PROCESSOR", Scalar::RequestBodyProcessor),
    ("HIGHEST_SEVERITY", Scalar::HighestSeverity),
    ("URLENCODED_ERROR", Scalar::UrlencodedError),
    ("TIME", Scalar::Time),
    ("TIME_EPOCH", Scalar::TimeEpoch),
    ("TIME_YEAR", Scalar::TimeYear),
    ("TIME_MON", Scalar::TimeMon),
    ("TIME_DAY", Scalar::TimeDay),
    ("TIME_HOUR", Scalar::TimeHour),
    ("TIME_MIN", Scalar::TimeMin),
    ("TIME_SEC", Scalar::TimeSec),
    ("TIME_WDAY", Scalar::TimeWday),
    ("MULTIPART_STRICT_ERROR", Scalar::MultipartStrictError),
    ("MULTIPART_BOUNDARY_QUOTED", Scalar::MultipartBoundaryQuoted),
    ("MULTIPART_BOUNDARY_WHITESPACE", Scalar::MultipartBoundaryWhitespace),
    ("MULTIPART_DATA_BEFORE", Scalar::MultipartDataBefore),
    ("MULTIPART_DATA_AFTER", Scalar::MultipartDataAfter),
    ("MULTIPART_HEADER_FOLDING", Scalar::MultipartHeaderFolding),
    ("MULTIPART_LF_LINE", Scalar::MultipartLfLine),
    ("MULTIPART_CRLF_LF_LINES", Scalar::MultipartCrlfLfLines),
    ("MULTIPART_MISSING_SEMICOLON", Scalar::MultipartMissingSemicolon),
    ("MULTIPART_SEMICOLON_MISSING", Scalar::MultipartMissingSemicolon),
    ("MULTIPART_INVALID_QUOTING", Scalar::MultipartInvalidQuoting),
    ("MULTIPART_INVALID_PART", Scalar::MultipartInvalidPart),
    ("MULTIPART_INVALID_HEADER_FOLDING", Scalar::MultipartInvalidHeaderFolding),
    ("MULTIPART_FILE_LIMIT_EXCEEDED", Scalar::MultipartFileLimitExceeded),
    ("MULTIPART_UNMATCHED_BOUNDARY", Scalar::MultipartUnmatchedBoundary),
    ("MULTIPART_FILENAME", Scalar::MultipartFilename),
    ("MULTIPART_NAME", Scalar::MultipartName),
    ("SDBM_DELETE_ERROR", Scalar::Sdbm),
];

const COLLS: &[(&str, Coll)] = &[
    ("ARGS", Coll::Args),
    ("ARGS_GET", Coll::ArgsGet),
    ("ARGS_POST", Coll::ArgsPost),
    ("REQUEST_HEADERS", Coll::ReqHeaders),
    ("REQUEST_COOKIES", Coll::ReqCookies),
    ("FILES", Coll::Files),
    ("FILES_SIZES", Coll::FilesSizes),
    ("FILES_TMPNAMES", Coll::FilesTmpNames),
    ("FILES_TMP_CONTENT", Coll::FilesTmpContent),
    ("MULTIPART_PART_HEADERS", Coll::PartHeaders),
    ("RESPONSE_HEADERS", Coll::RespHeaders),
    ("MATCHED_VARS", Coll::MatchedVars),
    ("XML", Coll::Xml),
    ("ENV", Coll::Env),
    ("GEO", Coll::Geo),
    ("RULE", Coll::Rule),
    ("TX", Coll::Store(0)),
    ("IP", Coll::Store(1)),
    ("GLOBAL", Coll::Store(2)),
    ("SESSION", Coll::Store(3)),
    ("USER", Coll::Store(4)),
    ("RESOURCE", Coll::Store(5)),
];

const NAMES: &[(&str, Coll)] = &[
    ("ARGS_NAMES", Coll::Args),
    ("ARGS_GET_NAMES", Coll::ArgsGet),
    ("ARGS_POST_NAMES", Coll::ArgsPost),
    ("REQUEST_HEADERS_NAMES", Coll::ReqHeaders),
    ("REQUEST_COOKIES_NAMES", Coll::ReqCookies),
    ("FILES_NAMES", Coll::Files),
    ("RESPONSE_HEADERS_NAMES", Coll::RespHeaders),
    ("MATCHED_VARS_NAMES", Coll::MatchedVars),
];

/// A variable: a collection, the names of a collection (`*_NAMES`), or a single value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    Coll(Coll),
    Names(Coll),
    Scalar(Scalar),
}

impl Var {
    pub(crate) fn lookup(name: &str) -> Option<Var> {
        let up = name.to_ascii_uppercase();
        if let Some((_, s)) = SCALARS.iter().find(|(n, _)| *n == up) {
            return Some(Var::Scalar(*s));
        }
        if let Some((_, c)) = COLLS.iter().find(|(n, _)| *n == up) {
            return Some(Var::Coll(*c));
        }
        NAMES.iter().find(|(n, _)| *n == up).map(|(_, c)| Var::Names(*c))
    }

    /// The name as ModSecurity prints it (MATCHED_VAR_NAME's prefix).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Var::Scalar(s) => SCALARS.iter().find(|(_, x)| x == s).map_or("", |(n, _)| n),
            Var::Coll(c) => COLLS.iter().find(|(_, x)| x == c).map_or("", |(n, _)| n),
            Var::Names(c) => NAMES.iter().find(|(_, x)| x == c).map_or("", |(n, _)| n),
        }
    }
}

/// Whether a variable's values stay the same while the rules of one phase run: request and response data, set
/// between phases. Not: TX and the other stores (setvar), MATCHED_VAR(S) and their names, RULE, DURATION,
/// HIGHEST_SEVERITY, and the body processor's name (`ctl:requestBodyProcessor` changes it mid-phase).
pub(crate) fn stable_in_phase(v: Var) -> bool {
    match v {
        Var::Coll(c) | Var::Names(c) => !matches!(c, Coll::MatchedVars | Coll::Rule | Coll::Store(_)),
        Var::Scalar(s) => matches!(
            s,
            Scalar::ArgsCombinedSize
                | Scalar::FilesCombinedSize
                | Scalar::RequestFilename
                | Scalar::RequestBasename
                | Scalar::RequestUri
                | Scalar::RequestUriRaw
                | Scalar::RequestLine
                | Scalar::RequestMethod
                | Scalar::RequestProtocol
                | Scalar::QueryString
                | Scalar::RequestBody
                | Scalar::RequestBodyLength
                | Scalar::RemoteAddr
                | Scalar::ReqbodyError
                | Scalar::ReqbodyErrorMsg
                | Scalar::ReqbodyProcessorError
                | Scalar::ReqbodyProcessorErrorMsg
                | Scalar::ResponseStatus
                | Scalar::ResponseBody
                | Scalar::ResponseProtocol
                | Scalar::ResponseContentType
                | Scalar::ResponseContentLength
                | Scalar::StatusLine
                | Scalar::UrlencodedError
                | Scalar::MultipartStrictError
                | Scalar::MultipartBoundaryQuoted
                | Scalar::MultipartBoundaryWhitespace
                | Scalar::MultipartDataBefore
                | Scalar::MultipartDataAfter
                | Scalar::MultipartHeaderFolding
                | Scalar::MultipartLfLine
                | Scalar::MultipartCrlfLfLines
                | Scalar::MultipartMissingSemicolon
                | Scalar::MultipartInvalidQuoting
                | Scalar::MultipartInvalidPart
                | Scalar::MultipartInvalidHeaderFolding
                | Scalar::MultipartFileLimitExceeded
                | Scalar::MultipartUnmatchedBoundary
                | Scalar::MultipartFilename
                | Scalar::MultipartName
        ),
    }
}

/// Which members of a collection a selector takes.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    All,
    /// Exact name, stored lowercased (compared case-insensitively), with its [`name_hash`] (store lookups).
    Name(Vec<u8>, u64),
    /// A regex, with a literal (lowercased, possibly empty) every name it matches has (see [`Lit`]): names without
    /// it are rejected without running the regex.
    Regex(Regex, Vec<u8>, Lit),
}

/// Where a regex key's literal must be in a name it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lit {
    /// At the start (`/^header_name_920450_x/`).
    Prefix,
    /// At the start, and the pattern is `^` and the literal, nothing else: the literal alone decides.
    Whole,
    /// Anywhere (`/MULTIPART_HEADERS_CONTENT_TYPES_*/`, unanchored).
    Within,
}

impl Key {
    /// An exact-name key for `name` (as written).
    pub(crate) fn name(name: &str) -> Key {
        let n = name.to_ascii_lowercase().into_bytes();
        let h = name_hash(&n);
        Key::Name(n, h)
    }

    #[inline]
    pub(crate) fn matches(&self, name: &[u8]) -> bool {
        match self {
            Key::All => true,
            Key::Name(n, _) => n.len() == name.len() && n.eq_ignore_ascii_case(name),
            Key::Regex(r, lit, Lit::Within) => contains_folded(name, lit) && r.is_match(name),
            Key::Regex(r, prefix, at) => {
                name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                    && (*at == Lit::Whole || r.is_match(name))
            }
        }
    }
}

/// Whether `hay` contains `lit` (lowercase) ASCII case-insensitively; windows whose first byte differs are passed
/// over without comparing the rest (most TX names a regex key is tried on are shorter than its literal, or differ
/// at once).
fn contains_folded(hay: &[u8], lit: &[u8]) -> bool {
    let Some((&first, rest)) = lit.split_first() else { return true };
    hay.len() >= lit.len()
        && hay.windows(lit.len()).any(|w| {
            w.split_first().is_some_and(|(&b, tail)| b.to_ascii_lowercase() == first && tail.eq_ignore_ascii_case(rest))
        })
}

/// One `VAR[:key]` entry of a rule's variable list.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) var: Var,
    pub(crate) key: Key,
    /// `&VAR`: the number of values instead of the values.
    pub(crate) count: bool,
    /// `!VAR:key`: removes members from the other targets.
    pub(crate) exclude: bool,
    /// The key as written (for XML paths and display).
    pub(crate) key_text: String,
}

impl Target {
    /// Whether this exclusion removes the member `name` of `var`.
    pub(crate) fn excludes(&self, var: Var, name: &[u8]) -> bool {
        self.exclude && self.var == var && self.key.matches(name)
    }
}

/// The literal text an anchored key regex starts with (`^abc_d` gives `abc_d`), lowercased; empty when none.
/// Only letters, digits, `_` and `-` count, a character followed by a quantifier is left out, and a pattern with
/// `|` has none.
fn leading_literal(re: &str) -> Vec<u8> {
    // An alternation anywhere may be at the top level (`^ab|cd` matches "xcd"): no prefix then.
    let Some(rest) = re.strip_prefix('^').filter(|_| !re.contains('|')) else { return Vec::new() };
    let b = rest.as_bytes();
    let mut n = b.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'-').count();
    if matches!(b.get(n), Some(b'*' | b'?' | b'{' | b'+')) {
        n = n.saturating_sub(1);
    }
    b.get(..n).unwrap_or_default().to_ascii_lowercase()
}

/// Whether the pattern `re` is `^` and its anchored `prefix`, nothing else: then a name that starts with the
/// prefix (the check [`Key::matches`] makes first) always matches, and the regex need not run.
fn prefix_is_whole(re: &str, prefix: &[u8]) -> bool {
    !prefix.is_empty() && re.len() == prefix.len() + 1
}

/// Parse a variable list such as `ARGS|!ARGS:foo|REQUEST_COOKIES:/^a|b$/|&TX:x`.
pub(crate) fn parse_targets(spec: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for part in split_targets(spec) {
        out.push(parse_target(part.trim())?);
    }
    if out.is_empty() {
        return Err("empty variable list".into());
    }
    Ok(out)
}

/// Split on `|` outside of `/regex/` keys and quotes.
fn split_targets(spec: &str) -> Vec<&str> {
    let b = spec.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut in_regex = false;
    let mut in_quote = false;
    while let Some(&c) = b.get(i) {
        if in_regex {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'/' && matches!(b.get(i + 1), None | Some(b'|')) {
                in_regex = false;
            }
        } else if in_quote {
            if c == b'\'' {
                in_quote = false;
            }
        } else if c == b'|' {
            parts.push(spec.get(start..i).unwrap_or(""));
            start = i + 1;
        } else if c == b':' {
            match b.get(i + 1) {
                Some(b'/') => {
                    let name = spec.get(start..i).unwrap_or("").trim_start_matches(['!', '&']);
                    if !name.eq_ignore_ascii_case("XML") {
                        in_regex = true;
                        i += 2;
                        continue;
                    }
                }
                Some(b'\'') => {
                    in_quote = true;
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    parts.push(spec.get(start..).unwrap_or(""));
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

pub(crate) fn parse_target(s: &str) -> Result<Target, String> {
    let mut rest = s;
    let mut exclude = false;
    let mut count = false;
    loop {
        if let Some(r) = rest.strip_prefix('!') {
            exclude = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('&') {
            count = true;
            rest = r;
        } else {
            break;
        }
    }
    let (name, key_text) = match rest.split_once(':') {
        Some((n, k)) => (n, Some(k)),
        None => (rest, None),
    };
    let var = Var::lookup(name).ok_or_else(|| format!("unknown variable {name}"))?;
    let key = match key_text {
        None => Key::All,
        Some(k) => {
            if matches!(var, Var::Scalar(_)) {
                return Err(format!("variable {name} has no members (key {k})"));
            }
            if var == Var::Coll(Coll::Xml) {
                Key::All
            } else if k.len() >= 2 && k.starts_with('/') && k.ends_with('/') {
                let re = k.get(1..k.len() - 1).unwrap_or("");
                let compiled = regex::bytes::RegexBuilder::new(re)
                    .case_insensitive(true)
                    .dot_matches_new_line(true)
                    .build()
                    .map_err(|e| format!("bad regex key in {s}: {e}"))?;
                match re.strip_prefix('^') {
                    Some(_) => {
                        let prefix = leading_literal(re);
                        let at = if prefix_is_whole(re, &prefix) { Lit::Whole } else { Lit::Prefix };
                        Key::Regex(compiled, prefix, at)
                    }
                    None => Key::Regex(compiled, leading_literal(&format!("^{re}")), Lit::Within),
                }
            } else {
                let k = k.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')).unwrap_or(k);
                Key::name(k)
            }
        }
    };
    Ok(Target { var, key, count, exclude, key_text: key_text.unwrap_or("").to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchored_regex_keys_have_a_literal_prefix() {
        assert_eq!(leading_literal("^header_name_920450_"), b"header_name_920450_");
        assert_eq!(leading_literal("^Ab-c*"), b"ab-");
        assert_eq!(leading_literal("^ab+"), b"a");
        assert_eq!(leading_literal("^ab|cd"), b"");
        assert_eq!(leading_literal("ab"), b"");
        assert_eq!(leading_literal("^(ab)"), b"");
        let t = parse_target("TX:/^HEADER_name_/").unwrap();
        assert!(t.key.matches(b"header_NAME_host") && !t.key.matches(b"other") && !t.key.matches(b"hea"));
        assert!(matches!(t.key, Key::Regex(_, _, Lit::Whole)));
        // The prefix decides alone only when it is the whole pattern.
        for (re, whole) in [("^header_name_", true), ("^header_name_$", false), ("^ab+", false), ("^a-b", true)] {
            let t = parse_target(&format!("TX:/{re}/")).unwrap();
            let at = if whole { Lit::Whole } else { Lit::Prefix };
            assert!(matches!(t.key, Key::Regex(_, _, a) if a == at), "{re}");
        }
        let t = parse_target("TX:/^header_name_$/").unwrap();
        assert!(t.key.matches(b"HEADER_name_") && !t.key.matches(b"header_name_x"));
    }

    #[test]
    fn unanchored_regex_keys_need_their_leading_literal_anywhere() {
        // CRS 922110: `_*` may be empty, so the literal stops before it.
        let t = parse_target("TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/").unwrap();
        assert!(matches!(&t.key, Key::Regex(_, l, Lit::Within) if l == b"multipart_headers_content_types"));
        assert!(contains_folded(b"x_MULTIPART_Headers_content_types_1", b"multipart_headers_content_types"));
        assert!(!contains_folded(b"multipart_headers_content_type", b"multipart_headers_content_types"));
        assert!(!contains_folded(b"mmultipart_headers_content_typex", b"multipart_headers_content_types"));
        assert!(contains_folded(b"", b"") && contains_folded(b"A", b"a") && !contains_folded(b"", b"a"));
        for (name, hit) in [
            (&b"multipart_headers_content_types_x"[..], true),
            (b"X-MULTIPART_HEADERS_CONTENT_TYPES", true),
            (b"multipart_headers_content_type", false),
            (b"short", false),
        ] {
            assert_eq!(t.key.matches(name), hit, "{}", String::from_utf8_lossy(name));
        }
        // No literal (an alternation, a class first): the regex alone decides.
        for re in ["ab|cd", "[a-z]+_x", "(ab)"] {
            let t = parse_target(&format!("TX:/{re}/")).unwrap();
            assert!(matches!(&t.key, Key::Regex(_, l, Lit::Within) if l.is_empty()), "{re}");
        }
        let t = parse_target("TX:/ab|cd/").unwrap();
        assert!(t.key.matches(b"xxcd") && t.key.matches(b"AB") && !t.key.matches(b"ac"));
    }

    #[test]
    fn parses_lists_with_regex_keys_exclusions_and_counts() {
        let t = parse_targets("ARGS|!REQUEST_COOKIES:/^(?:a|b)$/|&TX:Foo|XML:/*|REQUEST_HEADERS:'User-Agent'").unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].var, Var::Coll(Coll::Args));
        assert!(t[1].exclude && t[1].key.matches(b"A") && !t[1].key.matches(b"ab"));
        assert!(t[2].count);
        assert!(matches!(&t[2].key, Key::Name(n, h) if n == b"foo" && *h == name_hash(b"FOO")));
        assert_eq!(t[3].var, Var::Coll(Coll::Xml));
        assert_eq!(t[3].key_text, "/*");
        assert!(t[4].key.matches(b"user-agent"));
        assert_eq!(parse_targets("ARGS_NAMES").unwrap()[0].var, Var::Names(Coll::Args));
        assert_eq!(parse_targets("NOPE").unwrap_err(), "unknown variable NOPE");
        assert!(parse_targets("REQUEST_URI:x").is_err());
    }
}
