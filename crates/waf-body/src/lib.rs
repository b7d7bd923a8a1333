//! Request parsing for the Palisade WAF: turns the parts of an HTTP request into ModSecurity's collections.
//!
//! What it is for: the engine (`palisade-waf`) hands this crate raw bytes — the request target, `Cookie` header
//! values, the request body with its `Content-Type` — and gets back name/value pairs and error flags with
//! ModSecurity v2 semantics (Coraza where v2 has no opinion, e.g. JSON naming):
//!
//! | function | ModSecurity collections |
//! |---|---|
//! | [`parse_query`] | `ARGS_GET`, `URLENCODED_ERROR` |
//! | [`parse_urlencoded`] | `ARGS_POST` (URLENCODED processor), `URLENCODED_ERROR` |
//! | [`parse_cookies`] / [`parse_cookies_v1`] | `REQUEST_COOKIES`, `REQUEST_COOKIES_NAMES` |
//! | [`parse_multipart`] | `ARGS_POST`, `FILES`, `FILES_NAMES`, `FILES_SIZES`, `MULTIPART_PART_HEADERS`, `MULTIPART_*` flags |
//! | [`parse_json`] | `ARGS_POST` (JSON processor, Coraza's `json.a.b.0` naming) |
//! | [`parse_xml`] | `XML:/*`, `XML://@*` |
//! | [`split_target`] | `REQUEST_URI`, `REQUEST_FILENAME`, `REQUEST_BASENAME`, `QUERY_STRING` |
//!
//! What it is not for: it knows nothing of rules, the proxy or configuration, it never decides to block, and it
//! never logs. A body parse failure is a [`BodyError`]; the engine turns it into `REQBODY_ERROR` /
//! `REQBODY_ERROR_MSG` (its `Display` text). Names and values are bytes: decoding can produce invalid UTF-8.
//!
//! Hostile input never panics and costs linear time; counts are bounded ([`DEFAULT_MAX_ARGS`], multipart part and
//! XML node limits, JSON depth, [`names_budget`]), so memory stays proportional to the body the gateway accepted.
//!
//! ```
//! use palisade_waf_body::{parse_json, parse_multipart, parse_query, split_target};
//!
//! let target = split_target(b"/app/login.php?user=a%27+or+1%3D1&debug");
//! assert_eq!((target.path, target.basename()), (&b"/app/login.php"[..], &b"login.php"[..]));
//! let (args, flags) = parse_query(target.query);
//! assert_eq!(args, vec![(b"user".to_vec(), b"a' or 1=1".to_vec()), (b"debug".to_vec(), b"".to_vec())]);
//! assert!(!flags.urlencoded_error);
//!
//! let json = parse_json(br#"{"q": ["x", 1]}"#, 512).unwrap();
//! assert_eq!(json[2], (b"json.q".to_vec(), b"2".to_vec())); // after json.q.0 and json.q.1
//!
//! let body = b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.php\"\r\n\r\n<?php\r\n--b--\r\n";
//! let m = parse_multipart(body, b"multipart/form-data; boundary=b").unwrap();
//! assert_eq!(m.files, vec![(b"f".to_vec(), b"a.php".to_vec())]);
//! assert!(!m.flags.strict_error());
//! ```

mod cookies;
mod json;
mod multipart;
mod target;
mod urlencoded;
mod xml;

pub use cookies::{parse_cookies, parse_cookies_into, parse_cookies_v1};
pub use json::{parse_json, parse_json_with_limit};
pub use multipart::{
    parse_multipart, parse_multipart_with_limits, Multipart, MultipartError, MultipartFlags, MultipartLimits,
};
pub use target::{basename, header_name_eq, split_target, BodyProcessor, RequestTarget};
pub use urlencoded::{
    parse_query, parse_query_into, parse_query_with_limit, parse_urlencoded, parse_urlencoded_into,
    parse_urlencoded_with_limit, Flags,
};
pub use xml::{parse_xml, Xml, MAX_XML_NODES};

/// One collection member: (name, value), both raw bytes.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Fills a collection in place, member by member, reusing the buffers of the members it held before (a WAF keeps a
/// thread's last request's collections for the next one: refilled with as many members, they allocate nothing).
/// Members past the last one pushed are dropped when the refill ends.
pub struct Refill<'a> {
    out: &'a mut Vec<Pair>,
    len: usize,
}

impl<'a> Refill<'a> {
    pub fn new(out: &'a mut Vec<Pair>) -> Refill<'a> {
        Refill { out, len: 0 }
    }

    /// Append a member whose name and value `fill` writes into emptied buffers.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) {
        match self.out.get_mut(self.len) {
            Some((n, v)) => {
                n.clear();
                v.clear();
                fill(n, v);
            }
            None => {
                let (mut n, mut v) = Pair::default();
                fill(&mut n, &mut v);
                self.out.push((n, v));
            }
        }
        self.len += 1;
    }

    /// Members given so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append a copy of `name` and `value`.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.push_with(|n, v| {
            n.extend_from_slice(name);
            v.extend_from_slice(value);
        });
    }
}

impl Drop for Refill<'_> {
    fn drop(&mut self) {
        self.out.truncate(self.len);
    }
}

/// Default bound on the number of arguments one parser produces, ModSecurity's `SecArgumentsLimit` default.
/// Beyond it the urlencoded parsers stop and set [`Flags::args_limit_exceeded`]; JSON and multipart fail with
/// [`BodyError::TooManyArgs`] / [`MultipartError::TooManyParts`].
pub const DEFAULT_MAX_ARGS: usize = 1000;

/// Why a request body could not be parsed. `Display` is the `REQBODY_ERROR_MSG` text; it never contains body
/// bytes (a body may carry passwords), only positions and ModSecurity's fixed messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A multipart body or its `Content-Type` is malformed. `flags` are the `MULTIPART_*` flags raised up to the
    /// failure (with [`MultipartFlags::error`] set), so the engine can still expose them.
    #[error("{kind}")]
    Multipart { kind: MultipartError, flags: MultipartFlags },
    /// The JSON body is not valid JSON (RFC 8259).
    #[error("JSON parsing error at byte {offset}: {reason}")]
    Json { offset: usize, reason: &'static str },
    /// The JSON body nests arrays/objects deeper than allowed.
    #[error("JSON depth limit exceeded (limit {limit})")]
    JsonDepth { limit: usize },
    /// The body would produce more arguments than allowed.
    #[error("Request body argument limit exceeded (limit {limit})")]
    TooManyArgs { limit: usize },
    /// Flattening would produce more bytes of argument names than [`names_budget`] allows for this body
    /// (nested long keys repeat in every name below them).
    #[error("Request body argument names exceed {limit} bytes")]
    NamesTooLarge { limit: usize },
    /// The XML body is not well-formed, has a DTD, or exceeds the node limit.
    #[error("XML parsing error at {line}:{column}: {reason}")]
    Xml { line: u32, column: u32, reason: &'static str },
    /// The XML body is not UTF-8 (the parser does not transcode other encodings).
    #[error("XML parsing error: body is not valid UTF-8 (at byte {offset})")]
    XmlNotUtf8 { offset: usize },
}

/// How many bytes of argument names one body may expand to: twice its size plus 1 MiB. Names repeat their
/// parents' names (`json.a.b.c`, one `MULTIPART_PART_HEADERS` entry per header line), so without a budget a
/// long key above many leaves would cost memory quadratic in the body size.
#[must_use]
pub fn names_budget(body_len: usize) -> usize {
    body_len.saturating_mul(2).saturating_add(1 << 20)
}

/// C `isspace` in the "C" locale, which ModSecurity's parsers use.
#[inline]
pub(crate) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

#[cfg(test)]
mod refill_tests {
    use super::{parse_cookies, parse_cookies_into, parse_query, parse_query_into, Pair};

    #[test]
    fn refilling_gives_what_parsing_afresh_gives_and_reuses_the_buffers() {
        let mut args: Vec<Pair> = Vec::new();
        let mut cookies: Vec<Pair> = Vec::new();
        for q in [&b"a=1&bb=22&c=%41+x"[..], b"x=%zz&y", b"", b"a=1&b=2&c=3&d=4", b"p=q"] {
            let flags = parse_query_into(q, &mut args);
            assert_eq!((args.clone(), flags), parse_query(q), "{q:?}");
            let h: [&[u8]; 2] = [q, b"s=t"];
            parse_cookies_into(&h, &mut cookies);
            assert_eq!(cookies, parse_cookies(&h), "{q:?}");
        }
        // A refill with as many members keeps each member's buffers.
        parse_query_into(b"name=value&other=thing", &mut args);
        let before: Vec<*const u8> = args.iter().flat_map(|(n, v)| [n.as_ptr(), v.as_ptr()]).collect();
        parse_query_into(b"nome=valor&otro=cosas", &mut args);
        let after: Vec<*const u8> = args.iter().flat_map(|(n, v)| [n.as_ptr(), v.as_ptr()]).collect();
        assert_eq!(before, after);
        assert_eq!(args, parse_query(b"nome=valor&otro=cosas").0);
        // A member's buffer keeps the room a longer earlier value made (a new one would have just enough).
        let long = format!("v={}", "x".repeat(200));
        parse_query_into(long.as_bytes(), &mut args);
        parse_query_into(b"v=y", &mut args);
        assert!(args.first().is_some_and(|(_, v)| v == b"y" && v.capacity() >= 200), "{args:?}");
    }
}
