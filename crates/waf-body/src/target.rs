//! The request line's target split into ModSecurity's URI variables, and small header helpers.
//!
//! All slices borrow from the caller's bytes: no decoding happens here (ModSecurity exposes these raw and the
//! rules decode with transformations).

/// The request target split like ModSecurity: all parts raw, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// `REQUEST_URI`: the target without scheme and authority (absolute-form `http://h/p?q` gives `/p?q`).
    pub uri: &'a [u8],
    /// `REQUEST_FILENAME`: `uri` up to the first `?`.
    pub path: &'a [u8],
    /// `QUERY_STRING`: everything after the first `?` (empty when there is none). A `#` is not special: a
    /// client that sends one sends it to the backend too, so it stays visible to the rules.
    pub query: &'a [u8],
    /// Whether the target had a `?` at all.
    pub has_query: bool,
}

impl<'a> RequestTarget<'a> {
    /// `REQUEST_BASENAME`: see [`basename`].
    #[must_use]
    pub fn basename(&self) -> &'a [u8] {
        basename(self.path)
    }
}

/// Split a raw request target (origin-form `/p?q`, absolute-form `http://host/p?q`, or `*`).
#[must_use]
pub fn split_target(target: &[u8]) -> RequestTarget<'_> {
    let uri = strip_scheme_authority(target);
    match memchr::memchr(b'?', uri) {
        Some(i) => RequestTarget { uri, path: &uri[..i], query: &uri[i + 1..], has_query: true },
        None => RequestTarget { uri, path: uri, query: &[], has_query: false },
    }
}

fn strip_scheme_authority(target: &[u8]) -> &[u8] {
    let prefix_len = if starts_with_ignore_case(target, b"http://") {
        7
    } else if starts_with_ignore_case(target, b"https://") {
        8
    } else {
        return target;
    };
    let rest = &target[prefix_len..];
    // The authority ends at the first '/', or at '?' when the path is empty.
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) => &rest[i..],
        None => &[],
    }
}

/// ModSecurity's `file_basename`: what follows the last `/`, then what follows the last `\` in that.
#[must_use]
pub fn basename(path: &[u8]) -> &[u8] {
    let after_slash = match memchr::memrchr(b'/', path) {
        Some(i) => &path[i + 1..],
        None => path,
    };
    match memchr::memrchr(b'\\', after_slash) {
        Some(i) => &after_slash[i + 1..],
        None => after_slash,
    }
}

/// Header (and collection member) names compare ASCII case-insensitively.
#[must_use]
pub fn header_name_eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A request body processor (`REQBODY_PROCESSOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyProcessor {
    UrlEncoded,
    Multipart,
    Json,
    Xml,
}

impl BodyProcessor {
    /// The processor ModSecurity v2 picks by itself from `Content-Type` (prefix match, case-insensitive):
    /// only URLENCODED and MULTIPART; JSON and XML are chosen by rules (`ctl:requestBodyProcessor=`).
    #[must_use]
    pub fn from_content_type(content_type: &[u8]) -> Option<BodyProcessor> {
        if starts_with_ignore_case(content_type, b"application/x-www-form-urlencoded") {
            Some(BodyProcessor::UrlEncoded)
        } else if starts_with_ignore_case(content_type, b"multipart/form-data") {
            Some(BodyProcessor::Multipart)
        } else {
            None
        }
    }

    /// The name as in `ctl:requestBodyProcessor=NAME` (case-insensitive).
    #[must_use]
    pub fn from_name(name: &str) -> Option<BodyProcessor> {
        [BodyProcessor::UrlEncoded, BodyProcessor::Multipart, BodyProcessor::Json, BodyProcessor::Xml]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The value of `REQBODY_PROCESSOR`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            BodyProcessor::UrlEncoded => "URLENCODED",
            BodyProcessor::Multipart => "MULTIPART",
            BodyProcessor::Json => "JSON",
            BodyProcessor::Xml => "XML",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form() {
        let t = split_target(b"/a/b/index.php?x=1&y=%20?z");
        assert_eq!(t.uri, b"/a/b/index.php?x=1&y=%20?z");
        assert_eq!(t.path, b"/a/b/index.php");
        assert_eq!(t.query, b"x=1&y=%20?z");
        assert!(t.has_query);
        assert_eq!(t.basename(), b"index.php");
    }

    #[test]
    fn no_query_and_empty_query() {
        let t = split_target(b"/a%2fb");
        assert_eq!((t.path, t.query, t.has_query), (&b"/a%2fb"[..], &b""[..], false));
        let t = split_target(b"/x?");
        assert_eq!((t.path, t.query, t.has_query), (&b"/x"[..], &b""[..], true));
        let t = split_target(b"/x#frag?q");
        assert_eq!((t.path, t.query), (&b"/x#frag"[..], &b"q"[..]));
    }

    #[test]
    fn absolute_form_and_asterisk() {
        let t = split_target(b"HTTP://example.com:8080/p/q.php?a=b");
        assert_eq!((t.uri, t.path, t.query), (&b"/p/q.php?a=b"[..], &b"/p/q.php"[..], &b"a=b"[..]));
        let t = split_target(b"https://example.com?a=b");
        assert_eq!((t.uri, t.path, t.query), (&b"?a=b"[..], &b""[..], &b"a=b"[..]));
        let t = split_target(b"http://example.com");
        assert_eq!((t.uri, t.path), (&b""[..], &b""[..]));
        let t = split_target(b"*");
        assert_eq!((t.path, t.basename()), (&b"*"[..], &b"*"[..]));
    }

    #[test]
    fn basename_like_modsecurity() {
        assert_eq!(basename(b"/a/b.php"), b"b.php");
        assert_eq!(basename(b"/a/"), b"");
        assert_eq!(basename(b"/a\\b\\c.asp"), b"c.asp");
        assert_eq!(basename(b"a\\b/c"), b"c");
        assert_eq!(basename(b""), b"");
    }

    #[test]
    fn processors() {
        assert_eq!(
            BodyProcessor::from_content_type(b"Application/X-WWW-Form-Urlencoded; charset=utf-8"),
            Some(BodyProcessor::UrlEncoded)
        );
        assert_eq!(
            BodyProcessor::from_content_type(b"multipart/form-data; boundary=x"),
            Some(BodyProcessor::Multipart)
        );
        assert_eq!(BodyProcessor::from_content_type(b"application/json"), None);
        assert_eq!(BodyProcessor::from_content_type(b"multipart/mixed"), None);
        assert_eq!(BodyProcessor::from_name("json"), Some(BodyProcessor::Json));
        assert_eq!(BodyProcessor::from_name("XML").map(BodyProcessor::name), Some("XML"));
        assert_eq!(BodyProcessor::from_name("raw"), None);
        assert!(header_name_eq(b"Content-Type", b"content-TYPE"));
        assert!(!header_name_eq(b"Content-Type", b"Content-Typ"));
    }
}
