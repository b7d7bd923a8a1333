//! `Cookie` headers into `REQUEST_COOKIES`, as ModSecurity v2's `parse_cookies_v0` (the default,
//! `SecCookieFormat 0`) and `parse_cookies_v1` (`SecCookieFormat 1`, RFC 2109 with `$Version` attributes).
//!
//! Values are not url-decoded (ModSecurity does not); empty names are dropped; order is kept.

use crate::{is_c_space, Pair, Refill};

/// `REQUEST_COOKIES` with version 0 semantics, one call for all `Cookie` header values of the request:
/// split on `;` (empty pieces skipped), leading whitespace of the name dropped, name/value split at the first
/// `=` (a piece without `=` is a cookie with an empty value). Nothing else is trimmed.
#[must_use]
pub fn parse_cookies(header_values: &[&[u8]]) -> Vec<Pair> {
    let mut out = Vec::new();
    parse_cookies_into(header_values, &mut out);
    out
}

/// [`parse_cookies`] into `out`, reusing its members' buffers (see [`Refill`]).
pub fn parse_cookies_into(header_values: &[&[u8]], out: &mut Vec<Pair>) {
    let mut out = Refill::new(out);
    for header in header_values {
        for piece in header.split(|&b| b == b';') {
            let start = piece.iter().position(|&b| !is_c_space(b)).unwrap_or(piece.len());
            let piece = &piece[start..];
            let (name, value) = match memchr::memchr(b'=', piece) {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &[][..]),
            };
            if !name.is_empty() {
                out.push(name, value);
            }
        }
    }
}

/// `REQUEST_COOKIES` with version 1 semantics: `;` and `,` separate cookies, names and unquoted values are
/// trimmed, a double-quoted value is taken without its quotes, and a `$Path`-style attribute after cookie `c`
/// is named `$c_Path` (a `$` attribute before any cookie keeps its name).
#[must_use]
pub fn parse_cookies_v1(header_values: &[&[u8]]) -> Vec<Pair> {
    let mut out: Vec<Pair> = Vec::new();
    for header in header_values {
        parse_one_v1(header, &mut out);
    }
    out
}

fn parse_one_v1(s: &[u8], out: &mut Vec<Pair>) {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut prev_name: Option<Vec<u8>> = None;
    let mut p = 0usize;
    while p < s.len() {
        while p < s.len() && is_c_space(at(p)) {
            p += 1;
        }
        let name_start = p;
        while p < s.len() && !matches!(at(p), b'=' | b';' | b',') {
            p += 1;
        }
        let mut name = &s[name_start..p];
        let mut value: Option<&[u8]> = None;
        if p < s.len() && at(p) == b'=' {
            p += 1;
            while p < s.len() && is_c_space(at(p)) {
                p += 1;
            }
            if p < s.len() {
                if at(p) == b'"' {
                    p += 1;
                    if p < s.len() {
                        let v_start = p;
                        while p < s.len() && at(p) != b'"' {
                            p += 1;
                        }
                        value = Some(&s[v_start..p]);
                        if p < s.len() {
                            p += 1; // closing quote
                        }
                    }
                } else {
                    let v_start = p;
                    while p < s.len() && !matches!(at(p), b',' | b';') {
                        p += 1;
                    }
                    value = Some(trim_end(&s[v_start..p]));
                    if p < s.len() {
                        p += 1;
                    }
                }
            }
        } else if p < s.len() {
            p += 1; // ';' or ',' ends a cookie without value
        }
        name = trim_end(name);
        if !name.is_empty() {
            let stored_name = match (name.first(), &prev_name) {
                (Some(b'$'), Some(prev)) => {
                    let mut n = Vec::with_capacity(prev.len() + name.len() + 1);
                    n.push(b'$');
                    n.extend_from_slice(prev);
                    n.push(b'_');
                    n.extend_from_slice(&name[1..]);
                    n
                }
                _ => name.to_vec(),
            };
            if name.first() != Some(&b'$') {
                prev_name = Some(stored_name.clone());
            }
            out.push((stored_name, value.unwrap_or_default().to_vec()));
        }
        while p < s.len() && (matches!(at(p), b',' | b';') || is_c_space(at(p))) {
            p += 1;
        }
    }
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !is_c_space(*last) {
            break;
        }
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: Vec<Pair>) -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), String::from_utf8_lossy(&v).into_owned()))
            .collect()
    }

    fn p(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn v0_basic() {
        assert_eq!(
            s(parse_cookies(&[b"a=1; b=2;c=x=y", b"  d=4"])),
            vec![p("a", "1"), p("b", "2"), p("c", "x=y"), p("d", "4")]
        );
    }

    #[test]
    fn v0_keeps_value_whitespace_quotes_and_encoding() {
        assert_eq!(
            s(parse_cookies(&[b"a= 1 ; b=\"q\"; c=%41+"])),
            vec![p("a", " 1 "), p("b", "\"q\""), p("c", "%41+")]
        );
        // name keeps trailing whitespace: "a " is not "a"
        assert_eq!(s(parse_cookies(&[b"a =1"])), vec![p("a ", "1")]);
    }

    #[test]
    fn v0_empty_pieces_and_names() {
        assert_eq!(s(parse_cookies(&[b";;a;=x; ;b="])), vec![p("a", ""), p("b", "")]);
        assert!(parse_cookies(&[b""]).is_empty());
        assert!(parse_cookies(&[]).is_empty());
    }

    #[test]
    fn v0_version_attribute_is_a_cookie() {
        // CRS 921 checks REQUEST_COOKIES:/\x22?\x24Version/
        assert_eq!(s(parse_cookies(&[b"$Version=1; a=b"])), vec![p("$Version", "1"), p("a", "b")]);
        assert_eq!(s(parse_cookies(&[b"\"$Version=1\""])), vec![p("\"$Version", "1\"")]);
    }

    #[test]
    fn v1_rfc2109() {
        assert_eq!(
            s(parse_cookies_v1(&[b"$Version=\"1\"; Customer=\"WILE_E_COYOTE\"; $Path=\"/acme\", b = 2 ,c"])),
            vec![
                p("$Version", "1"),
                p("Customer", "WILE_E_COYOTE"),
                p("$Customer_Path", "/acme"),
                p("b", "2"),
                p("c", ""),
            ]
        );
    }

    #[test]
    fn v1_unterminated_quote_and_empty_value() {
        assert_eq!(s(parse_cookies_v1(&[b"a=\"xyz"])), vec![p("a", "xyz")]);
        assert_eq!(s(parse_cookies_v1(&[b"a=\""])), vec![p("a", "")]);
        assert_eq!(s(parse_cookies_v1(&[b"a=  "])), vec![p("a", "")]);
        assert_eq!(s(parse_cookies_v1(&[b";;, ;"])), Vec::<(String, String)>::new());
    }
}
