//! apk version ordering, following apk-tools' current token comparison (src/version.c, "digit{.digit}...
//! {letter}{_suf{#}}...{~hash}{-r#}"): a number component with a leading zero compares as a string, one
//! optional letter, `_alpha`, `_beta`, `_pre`, `_rc` (before the release) and `_cvs`, `_svn`, `_git`, `_hg`,
//! `_p` (after it) suffixes, an optional `~hash`, then `-rN`.

use std::cmp::Ordering;

use super::{cmp_digits, Ecosystem, VersionError};

/// Token kinds in apk-tools order; "which version goes on longer" decisions depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
}

/// Suffix values; `None` (the release itself) sits between pre- and post-release suffixes.
const SUFFIXES: [(&str, u8); 9] =
    [("alpha", 0), ("beta", 1), ("pre", 2), ("rc", 3), ("cvs", 5), ("svn", 6), ("git", 7), ("hg", 8), ("p", 9)];
const SUFFIX_NONE: u8 = 4;

#[derive(Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    suffix: u8,
}

fn tokenize(input: &str) -> Result<Vec<Token<'_>>, VersionError> {
    let err = |reason| VersionError::invalid(Ecosystem::Alpine, input, reason);
    let s = input.as_bytes();
    let span = |from: usize, pred: fn(&u8) -> bool| {
        let len = s.get(from..).unwrap_or_default().iter().take_while(|b| pred(b)).count();
        (input.get(from..from + len).unwrap_or(""), from + len)
    };
    let mut out = Vec::new();
    let (text, mut i) = span(0, u8::is_ascii_digit);
    if text.is_empty() {
        return Err(err("must start with a number"));
    }
    out.push(Token { kind: Kind::InitialDigit, text, suffix: 0 });
    let mut prev = Kind::InitialDigit;
    while let Some(&c) = s.get(i) {
        let token = match c {
            b'a'..=b'z' => {
                if prev > Kind::Digit {
                    return Err(err("letter in the wrong place"));
                }
                i += 1;
                Token { kind: Kind::Letter, text: input.get(i - 1..i).unwrap_or(""), suffix: 0 }
            }
            b'.' | b'0'..=b'9' => {
                if c == b'.' {
                    if prev > Kind::Digit {
                        return Err(err("'.' in the wrong place"));
                    }
                    i += 1;
                }
                let kind = match prev {
                    Kind::InitialDigit | Kind::Digit => Kind::Digit,
                    Kind::Suffix => Kind::SuffixNo,
                    _ => return Err(err("number in the wrong place")),
                };
                let (text, next) = span(i, u8::is_ascii_digit);
                if text.is_empty() {
                    return Err(err("expected a number"));
                }
                i = next;
                Token { kind, text, suffix: 0 }
            }
            b'_' => {
                if prev > Kind::SuffixNo {
                    return Err(err("suffix in the wrong place"));
                }
                let (text, next) = span(i + 1, u8::is_ascii_lowercase);
                let suffix = SUFFIXES
                    .iter()
                    .find(|(name, _)| *name == text)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| err("unknown suffix"))?;
                i = next;
                Token { kind: Kind::Suffix, text, suffix }
            }
            b'~' => {
                if prev >= Kind::CommitHash {
                    return Err(err("commit hash in the wrong place"));
                }
                let (text, next) = span(i + 1, |b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
                if text.is_empty() {
                    return Err(err("empty commit hash"));
                }
                i = next;
                Token { kind: Kind::CommitHash, text, suffix: 0 }
            }
            b'-' => {
                if prev >= Kind::RevisionNo || s.get(i + 1) != Some(&b'r') {
                    return Err(err("expected -rN"));
                }
                let (text, next) = span(i + 2, u8::is_ascii_digit);
                if text.is_empty() {
                    return Err(err("expected a revision number"));
                }
                i = next;
                Token { kind: Kind::RevisionNo, text, suffix: 0 }
            }
            _ => return Err(err("unexpected character")),
        };
        prev = token.kind;
        out.push(token);
    }
    out.push(Token { kind: Kind::End, text: "", suffix: 0 });
    Ok(out)
}

fn token_cmp(a: &Token<'_>, b: &Token<'_>) -> Ordering {
    match a.kind {
        // A component with a leading zero compares as a string, as in the Gentoo rules ("1.05" < "1.5").
        Kind::Digit if a.text.starts_with('0') || b.text.starts_with('0') => a.text.cmp(b.text),
        Kind::InitialDigit | Kind::Digit | Kind::SuffixNo | Kind::RevisionNo => cmp_digits(a.text, b.text),
        Kind::Suffix => a.suffix.cmp(&b.suffix),
        Kind::Letter | Kind::CommitHash | Kind::End => a.text.cmp(b.text),
    }
}

pub(crate) fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let ta = tokenize(a)?;
    let tb = tokenize(b)?;
    for (x, y) in ta.iter().zip(tb.iter()) {
        if x.kind != y.kind {
            // Equal so far and one side goes on: the longer one is greater unless it goes on with a
            // pre-release suffix.
            if x.kind == Kind::Suffix && x.suffix < SUFFIX_NONE {
                return Ok(Ordering::Less);
            }
            if y.kind == Kind::Suffix && y.suffix < SUFFIX_NONE {
                return Ok(Ordering::Greater);
            }
            return Ok(y.kind.cmp(&x.kind));
        }
        if x.kind == Kind::End {
            return Ok(Ordering::Equal);
        }
        let o = token_cmp(x, y);
        if o != Ordering::Equal {
            return Ok(o);
        }
    }
    Ok(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::super::{compare, Ecosystem};
    use std::cmp::Ordering::{self, *};

    fn cmp(a: &str, b: &str) -> Ordering {
        compare(Ecosystem::Alpine, a, b).unwrap_or_else(|e| panic!("{a} vs {b}: {e}"))
    }

    #[test]
    fn apk_suffix_ordering() {
        let list = [
            "1.0_alpha",
            "1.0_alpha2",
            "1.0_beta",
            "1.0_beta1",
            "1.0_pre1",
            "1.0_rc1",
            "1.0_rc2",
            "1.0",
            "1.0-r1",
            "1.0-r10",
            "1.0_cvs1",
            "1.0_svn1",
            "1.0_git20200101",
            "1.0_hg1",
            "1.0_p1",
            "1.0_p2",
            "1.0_p2-r1",
            "1.0a",
            "1.0b",
            "1.0.1_rc1",
            "1.0.1",
            "1.1",
            "1.10",
        ];
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate() {
                assert_eq!(cmp(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn apk_edge_cases() {
        assert_eq!(cmp("1.0-r0", "1.0"), Greater, "apk-tools: an explicit -r0 is more than none");
        assert_eq!(cmp("1.0a", "1.0.1"), Less);
        assert_eq!(cmp("1.0a", "1.0"), Greater);
        assert_eq!(cmp("1.2.3-r4", "1.2.3-r10"), Less);
        assert_eq!(cmp("1.05", "1.5"), Less, "leading zeros compare as a fraction");
        assert_eq!(cmp("1.05", "1.005"), Greater);
        assert_eq!(cmp("1.0", "1.00"), Less, "string comparison: a prefix sorts first");
        assert_eq!(cmp("1.2_git20200101~abc-r0", "1.2_git20200101~abd-r0"), Less);
        assert_eq!(cmp("1.2~abc", "1.2"), Greater);
        assert_eq!(cmp("2.4.41-r0", "2.4.41-r1"), Less);
        assert_eq!(cmp("1.1.1d-r3", "1.1.1g-r0"), Less);
        assert_eq!(cmp("1.1.1", "1.1.1a"), Less);
        assert_eq!(cmp("1.0_rc1_p2", "1.0_rc1"), Greater);
        assert_eq!(cmp("20200101", "3.0"), Greater);
    }

    #[test]
    fn apk_rejects_malformed() {
        for bad in [
            "a1.0",
            "1.0_foo",
            "1.0-x1",
            "1.0-r",
            "1..0",
            "1.0_rc1.2",
            "1.0ab",
            "1.0A",
            "1.0a1",
            "1.0-r1-r2",
            "1.0_rc1-r1_p1",
            "1.0~",
            "1.0~xyz",
            ".1",
        ] {
            assert!(compare(Ecosystem::Alpine, bad, "1.0").is_err(), "{bad:?}");
        }
    }
}
