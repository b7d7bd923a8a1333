//! Query strings and `application/x-www-form-urlencoded` bodies, as ModSecurity v2's `parse_arguments`.
//!
//! Split on `&`, then on the first `=`; names and values are url-decoded non-strictly (`+` is a space, an invalid
//! or truncated `%` escape is kept as written and counted). A name without `=` gets an empty value; empty names
//! are kept. One pass, one allocation per name and value (none when the `_into` forms refill a collection whose
//! members have room).

use crate::{Pair, Refill, DEFAULT_MAX_ARGS};

/// Error flags of the urlencoded parsers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flags {
    /// `URLENCODED_ERROR`: at least one `%` was not followed by two hex digits.
    pub urlencoded_error: bool,
    /// Parsing stopped at the argument limit; later arguments were not returned.
    pub args_limit_exceeded: bool,
}

/// `ARGS_GET` from the raw query string (without the `?`), bounded by [`DEFAULT_MAX_ARGS`].
#[must_use]
pub fn parse_query(query: &[u8]) -> (Vec<Pair>, Flags) {
    parse_arguments(query, b'&', DEFAULT_MAX_ARGS)
}

/// [`parse_query`] with an explicit argument limit.
#[must_use]
pub fn parse_query_with_limit(query: &[u8], max_args: usize) -> (Vec<Pair>, Flags) {
    parse_arguments(query, b'&', max_args)
}

/// `ARGS_POST` from an `application/x-www-form-urlencoded` body, bounded by [`DEFAULT_MAX_ARGS`].
#[must_use]
pub fn parse_urlencoded(body: &[u8]) -> (Vec<Pair>, Flags) {
    parse_arguments(body, b'&', DEFAULT_MAX_ARGS)
}

/// [`parse_urlencoded`] with an explicit argument limit.
#[must_use]
pub fn parse_urlencoded_with_limit(body: &[u8], max_args: usize) -> (Vec<Pair>, Flags) {
    parse_arguments(body, b'&', max_args)
}

/// [`parse_query`] into `out`, reusing its members' buffers (see [`Refill`]).
pub fn parse_query_into(query: &[u8], out: &mut Vec<Pair>) -> Flags {
    parse_arguments_into(query, b'&', DEFAULT_MAX_ARGS, out)
}

/// [`parse_urlencoded`] into `out`, reusing its members' buffers (see [`Refill`]).
pub fn parse_urlencoded_into(body: &[u8], out: &mut Vec<Pair>) -> Flags {
    parse_arguments_into(body, b'&', DEFAULT_MAX_ARGS, out)
}

fn parse_arguments(input: &[u8], separator: u8, max_args: usize) -> (Vec<Pair>, Flags) {
    let mut out = Vec::new();
    let flags = parse_arguments_into(input, separator, max_args, &mut out);
    (out, flags)
}

fn parse_arguments_into(input: &[u8], separator: u8, max_args: usize, out: &mut Vec<Pair>) -> Flags {
    let mut flags = Flags::default();
    let mut invalid = 0usize;
    let mut out = Refill::new(out);
    // ModSecurity: a trailing separator does not add an empty argument, but every other empty segment does
    // ("&&" is two empty arguments); so iterate segments and drop only the one after a final separator.
    let mut rest = input;
    while !rest.is_empty() {
        let (segment, next) = match memchr::memchr(separator, rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        if out.len() >= max_args {
            flags.args_limit_exceeded = true;
            break;
        }
        let (name, value) = match memchr::memchr(b'=', segment) {
            Some(i) => (&segment[..i], &segment[i + 1..]),
            None => (segment, &[][..]),
        };
        out.push_with(|n, v| {
            url_decode_nonstrict_into(name, &mut invalid, n);
            url_decode_nonstrict_into(value, &mut invalid, v);
        });
        rest = next;
    }
    flags.urlencoded_error = invalid > 0;
    flags
}

/// ModSecurity's `urldecode_nonstrict_inplace_ex`: `%XX` with two hex digits is decoded, `+` becomes a space,
/// any other `%` is copied as is and counted in `invalid`.
/// Appends to `out`.
pub(crate) fn url_decode_nonstrict_into(input: &[u8], invalid: &mut usize, out: &mut Vec<u8>) {
    out.reserve(input.len());
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        match c {
            b'%' => match (input.get(i + 1).copied().and_then(hex), input.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    *invalid += 1;
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(input: &[u8]) -> Vec<(String, String)> {
        parse_query(input)
            .0
            .into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), String::from_utf8_lossy(&v).into_owned()))
            .collect()
    }

    fn p(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn basic_pairs_and_plus() {
        assert_eq!(pairs(b"a=1&b=hello+world&c=%41%42"), vec![p("a", "1"), p("b", "hello world"), p("c", "AB")]);
        assert_eq!(parse_query(b"a=1").1, Flags::default());
    }

    #[test]
    fn names_are_decoded_too() {
        assert_eq!(pairs(b"a%5B%5D=1&x+y=2"), vec![p("a[]", "1"), p("x y", "2")]);
    }

    #[test]
    fn empty_segments_and_missing_equals() {
        // "a" and "b=" both give empty values; "&&" gives two empty arguments; the trailing "&" gives none.
        assert_eq!(pairs(b"a&b=&&"), vec![p("a", ""), p("b", ""), p("", "")]);
        assert_eq!(pairs(b"&&"), vec![p("", ""), p("", "")]);
        assert_eq!(pairs(b"=v"), vec![p("", "v")]);
        assert_eq!(pairs(b"a=1&"), vec![p("a", "1")]);
        assert!(pairs(b"").is_empty());
        assert_eq!(pairs(b"&"), vec![p("", "")]);
    }

    #[test]
    fn only_first_equals_splits() {
        assert_eq!(pairs(b"a=b=c&d==e"), vec![p("a", "b=c"), p("d", "=e")]);
    }

    #[test]
    fn semicolon_is_not_a_separator() {
        assert_eq!(pairs(b"a=1;b=2"), vec![p("a", "1;b=2")]);
    }

    #[test]
    fn invalid_encodings_kept_and_flagged() {
        let (args, flags) = parse_query(b"a=%zz&b=%4&c=100%&d=%%41");
        assert_eq!(
            args,
            vec![
                (b"a".to_vec(), b"%zz".to_vec()),
                (b"b".to_vec(), b"%4".to_vec()),
                (b"c".to_vec(), b"100%".to_vec()),
                (b"d".to_vec(), b"%A".to_vec()),
            ]
        );
        assert!(flags.urlencoded_error);
        assert!(!flags.args_limit_exceeded);
        // an invalid escape in a name counts too
        assert!(parse_query(b"%g1=x").1.urlencoded_error);
    }

    #[test]
    fn decodes_to_arbitrary_bytes() {
        let (args, flags) = parse_urlencoded(b"x=%ff%00%C3%A9");
        assert_eq!(args, vec![(b"x".to_vec(), vec![0xff, 0x00, 0xc3, 0xa9])]);
        assert!(!flags.urlencoded_error);
    }

    #[test]
    fn limit_stops_and_flags() {
        let (args, flags) = parse_query_with_limit(b"a=1&b=2&c=3", 2);
        assert_eq!(args.len(), 2);
        assert!(flags.args_limit_exceeded);
        let (args, flags) = parse_query_with_limit(b"a=1&b=2", 2);
        assert_eq!(args.len(), 2);
        assert!(!flags.args_limit_exceeded);
        // a million separators: bounded output
        let hostile = vec![b'&'; 1_000_000];
        let (args, flags) = parse_urlencoded(&hostile);
        assert_eq!(args.len(), DEFAULT_MAX_ARGS);
        assert!(flags.args_limit_exceeded);
    }
}
