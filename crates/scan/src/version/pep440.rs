//! PEP 440 version ordering (PyPI), following the normalisation rules of the specification and the sort
//! key of `packaging.version`: epoch, release (trailing zeros ignored), pre, post, dev, local.
//! Input is case-insensitive and separators `-`, `_`, `.` are interchangeable where PEP 440 allows them.

use std::cmp::Ordering;

use super::{Digits, Ecosystem, VersionError};

/// Sort-key element with the `-inf`/`+inf` sentinels of `packaging`'s `_cmpkey`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key<T> {
    NegInf,
    Val(T),
    PosInf,
}

/// A local version segment: alphanumeric segments sort before numeric ones (PEP 440, "Local version
/// identifiers"), numbers compare numerically, strings lexicographically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Local {
    Alpha(String),
    Num(Digits),
}

#[derive(Debug, PartialEq, Eq)]
struct Version {
    epoch: Digits,
    release: Vec<Digits>,
    pre: Option<(u8, Digits)>,
    post: Option<Digits>,
    dev: Option<Digits>,
    local: Option<Vec<Local>>,
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, lit: &str) -> bool {
        let end = self.i.saturating_add(lit.len());
        if self.s.get(self.i..end) == Some(lit.as_bytes()) {
            self.i = end;
            true
        } else {
            false
        }
    }
    fn eat_sep(&mut self) -> bool {
        matches!(self.peek(), Some(b'-' | b'_' | b'.')) && {
            self.i += 1;
            true
        }
    }
    fn digits(&mut self) -> Option<Digits> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        let run = self.s.get(start..self.i)?;
        if run.is_empty() {
            return None;
        }
        std::str::from_utf8(run).ok().map(Digits::new)
    }
    /// Tries one of `labels` after an optional separator; restores the position when none matches.
    fn label(&mut self, labels: &[(&str, u8)]) -> Option<u8> {
        let save = self.i;
        self.eat_sep();
        for (text, code) in labels {
            if self.eat(text) {
                return Some(*code);
            }
        }
        self.i = save;
        None
    }
    /// An implicit number after a label: optional separator then digits, else 0.
    fn label_number(&mut self) -> Digits {
        let save = self.i;
        self.eat_sep();
        match self.digits() {
            Some(d) => d,
            None => {
                self.i = save;
                Digits::new("0")
            }
        }
    }
}

const PRE_LABELS: [(&str, u8); 7] =
    [("alpha", 0), ("a", 0), ("beta", 1), ("b", 1), ("preview", 2), ("pre", 2), ("rc", 2)];
const C_LABEL: [(&str, u8); 1] = [("c", 2)];

fn parse(input: &str) -> Result<Version, VersionError> {
    let err = |reason| VersionError::invalid(Ecosystem::PyPI, input, reason);
    let lower = input.to_ascii_lowercase();
    let mut c = Cursor { s: lower.as_bytes(), i: 0 };
    c.eat("v");
    let first = c.digits().ok_or_else(|| err("must start with a release number"))?;
    let (epoch, first_release) = if c.eat("!") {
        (first, c.digits().ok_or_else(|| err("epoch must be followed by a release number"))?)
    } else {
        (Digits::new("0"), first)
    };
    let mut release = vec![first_release];
    loop {
        let save = c.i;
        if c.eat(".") {
            if let Some(d) = c.digits() {
                release.push(d);
                continue;
            }
        }
        c.i = save;
        break;
    }
    let mut pre = None;
    if let Some(kind) = c.label(&PRE_LABELS).or_else(|| c.label(&C_LABEL)) {
        pre = Some((kind, c.label_number()));
    }
    let mut post = None;
    let save = c.i;
    if c.eat("-") {
        if let Some(d) = c.digits() {
            post = Some(d);
        } else {
            c.i = save;
        }
    }
    if post.is_none() && c.label(&[("post", 0), ("rev", 0), ("r", 0)]).is_some() {
        post = Some(c.label_number());
    }
    let mut dev = None;
    if c.label(&[("dev", 0)]).is_some() {
        dev = Some(c.label_number());
    }
    let mut local = None;
    if c.eat("+") {
        let rest = c.s.get(c.i..).unwrap_or_default();
        let text = std::str::from_utf8(rest).map_err(|_| err("local version is not ASCII"))?;
        let mut segs = Vec::new();
        for seg in text.split(['.', '-', '_']) {
            if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(err("malformed local version"));
            }
            if seg.bytes().all(|b| b.is_ascii_digit()) {
                segs.push(Local::Num(Digits::new(seg)));
            } else {
                segs.push(Local::Alpha(seg.to_owned()));
            }
        }
        c.i = c.s.len();
        local = Some(segs);
    }
    if c.i != c.s.len() {
        return Err(err("unexpected characters"));
    }
    Ok(Version { epoch, release, pre, post, dev, local })
}

type SortKey = (Digits, Vec<Digits>, Key<(u8, Digits)>, Key<Digits>, Key<Digits>, Key<Vec<Local>>);

fn key(v: Version) -> SortKey {
    let mut release = v.release;
    while release.last().is_some_and(Digits::is_zero) {
        release.pop();
    }
    let pre = match (v.pre, &v.post, &v.dev) {
        // A dev release of the final version sorts before its pre-releases: 1.0.dev1 < 1.0a1.
        (None, None, Some(_)) => Key::NegInf,
        (None, _, _) => Key::PosInf,
        (Some(p), _, _) => Key::Val(p),
    };
    let post = v.post.map_or(Key::NegInf, Key::Val);
    let dev = v.dev.map_or(Key::PosInf, Key::Val);
    let local = v.local.map_or(Key::NegInf, Key::Val);
    (v.epoch, release, pre, post, dev, local)
}

pub(crate) fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let a = key(parse(a)?);
    let b = key(parse(b)?);
    Ok(a.cmp(&b))
}

#[cfg(test)]
mod tests {
    use super::super::{compare, Ecosystem};
    use std::cmp::Ordering::{self, *};

    fn cmp(a: &str, b: &str) -> Ordering {
        compare(Ecosystem::PyPI, a, b).unwrap_or_else(|e| panic!("{a} vs {b}: {e}"))
    }

    #[test]
    fn pep440_summary_ordering() {
        // The ordering example of PEP 440 ("Summary of permitted suffixes and relative ordering"), ascending.
        let list = [
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
        ];
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate() {
                assert_eq!(cmp(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn pep440_normalisation() {
        let equal = [
            ("1.0RC1", "1.0rc1"),
            ("1.0c1", "1.0rc1"),
            ("1.0-rc.1", "1.0rc1"),
            ("1.0alpha1", "1.0a1"),
            ("1.0beta2", "1.0b2"),
            ("1.0preview3", "1.0rc3"),
            ("1.0pre3", "1.0rc3"),
            ("1.0a", "1.0a0"),
            ("1.0-1", "1.0.post1"),
            ("1.0rev1", "1.0.post1"),
            ("1.0r1", "1.0.post1"),
            ("1.0_post_2", "1.0.post2"),
            ("1.0.post", "1.0.post0"),
            ("1.0-dev", "1.0.dev0"),
            ("v1.0", "1.0"),
            ("1.0", "1.0.0.0"),
            ("0!1.0", "1.0"),
            ("1.01", "1.1"),
            ("1.0+ubuntu-1", "1.0+ubuntu.1"),
            ("1.0+UBUNTU_1", "1.0+ubuntu.1"),
            (" 1.0 ", "1.0"),
        ];
        for (a, b) in equal {
            assert_eq!(cmp(a, b), Equal, "{a} == {b}");
        }
    }

    #[test]
    fn pep440_epochs_and_locals() {
        assert_eq!(cmp("1!0.1", "2024.1"), Greater);
        assert_eq!(cmp("2!1.0", "1!9.9"), Greater);
        assert_eq!(cmp("1.0+abc", "1.0+1"), Less, "alpha local segments sort before numeric ones");
        assert_eq!(cmp("1.0+1.1", "1.0+1"), Greater, "a longer local version wins on an equal prefix");
        assert_eq!(cmp("1.0+a10", "1.0+a9"), Less, "alphanumeric segments compare as strings");
        assert_eq!(cmp("1.0.post1", "1.0.1"), Less);
        assert_eq!(cmp("1.0.dev1", "1.0a1"), Less);
        assert_eq!(cmp("1.0.post1.dev1", "1.0.post1"), Less);
        assert_eq!(cmp("1.0.post1.dev1", "1.0"), Greater);
    }

    #[test]
    fn pep440_rejects_malformed() {
        for bad in ["", "abc", "1.0+", "1.0+a..b", "1.0foo", "1!", "!1.0", "1.0-", "1..0", "1.0 a1", "1.0+é"] {
            assert!(compare(Ecosystem::PyPI, bad, "1.0").is_err(), "{bad:?}");
        }
    }
}
