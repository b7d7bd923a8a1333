//! Required literals of a regex, for the engine's prefilter: a set of strings such that every match of the
//! pattern contains at least one of them. Invariant: the answer is conservative (lowercased, meant to be
//! searched ASCII case-insensitively, which can only add hits); `None` whenever no such set is known.

use regex_syntax::hir::{Class, Hir, HirKind};

/// At most this many strings in a set built by concatenation (cross products grow fast).
const MAX_EXACT: usize = 64;
/// At most this many strings in a required set (a union of alternatives).
const MAX_REQUIRED: usize = 4096;
/// A class of more (lowercased) bytes than this is not expanded.
const MAX_CLASS: usize = 8;

type Set = Vec<Vec<u8>>;

/// Required literals of a pattern in `regex` syntax (as `Rx` compiles it, flags included).
pub(crate) fn required(pattern: &str) -> Option<Set> {
    let hir = regex_syntax::ParserBuilder::new().utf8(false).build().parse(pattern).ok()?;
    let mut set = req(&hir)?;
    set.sort();
    set.dedup();
    if set.is_empty() || set.iter().any(Vec::is_empty) {
        return None;
    }
    Some(set)
}

/// Several required sets of a pattern, each valid on its own: the best one [`required`] picks and, down the
/// pattern's top-level sequence (every part of which a match must contain), each part's own. A caller filtering on
/// single bytes can then pick the set whose bytes are rarest: `\b(?:abs|acos|...)\W*?\(` is better served by `(`
/// than by the least common byte of a hundred function names.
pub(crate) fn required_candidates(pattern: &str) -> Vec<Set> {
    let Ok(hir) = regex_syntax::ParserBuilder::new().utf8(false).build().parse(pattern) else { return Vec::new() };
    let mut out = Vec::new();
    collect(&hir, &mut out, 0);
    out.retain_mut(|set| {
        set.sort();
        set.dedup();
        usable(set)
    });
    out
}

fn collect(h: &Hir, out: &mut Vec<Set>, depth: usize) {
    if depth > 16 {
        return;
    }
    if let Some(s) = req(h) {
        out.push(s);
    }
    match h.kind() {
        HirKind::Capture(c) => collect(&c.sub, out, depth + 1),
        HirKind::Repetition(r) if r.min >= 1 => collect(&r.sub, out, depth + 1),
        HirKind::Concat(hs) => hs.iter().for_each(|x| collect(x, out, depth + 1)),
        _ => {}
    }
}

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

/// The finite set of strings `h` matches exactly (lowercased), when small.
fn exact(h: &Hir) -> Option<Set> {
    match h.kind() {
        // Zero-width: contributes nothing to the matched text.
        HirKind::Empty | HirKind::Look(_) => Some(vec![Vec::new()]),
        HirKind::Literal(l) => Some(vec![lower(&l.0)]),
        HirKind::Class(c) => {
            let mut bytes: Vec<u8> = Vec::new();
            match c {
                Class::Bytes(b) => {
                    for r in b.iter() {
                        if usize::from(r.end() - r.start()) >= 4 * MAX_CLASS {
                            return None;
                        }
                        for x in r.start()..=r.end() {
                            bytes.push(x.to_ascii_lowercase());
                        }
                    }
                }
                Class::Unicode(u) => {
                    for r in u.iter() {
                        let (s, e) = (u32::from(r.start()), u32::from(r.end()));
                        if e >= 0x80 || e - s >= 4 * MAX_CLASS as u32 {
                            return None;
                        }
                        for x in s..=e {
                            bytes.push(u8::try_from(x).ok()?.to_ascii_lowercase());
                        }
                    }
                }
            }
            bytes.sort_unstable();
            bytes.dedup();
            if bytes.is_empty() || bytes.len() > MAX_CLASS {
                return None;
            }
            Some(bytes.into_iter().map(|b| vec![b]).collect())
        }
        HirKind::Capture(c) => exact(&c.sub),
        HirKind::Repetition(r) => {
            let sub = exact(&r.sub)?;
            let max = r.max?;
            if max > 3 {
                return None;
            }
            let mut out: Set = Vec::new();
            for n in r.min..=max {
                let mut cur: Set = vec![Vec::new()];
                for _ in 0..n {
                    cur = product(&cur, &sub)?;
                }
                out.extend(cur);
                if out.len() > MAX_EXACT {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Concat(hs) => {
            let mut cur: Set = vec![Vec::new()];
            for x in hs {
                cur = product(&cur, &exact(x)?)?;
            }
            Some(cur)
        }
        HirKind::Alternation(hs) => union(hs, exact, MAX_EXACT),
    }
}

/// The union of `each` over the alternatives, `None` when one is unknown or it grows past `max`.
fn union(hs: &[Hir], each: fn(&Hir) -> Option<Set>, max: usize) -> Option<Set> {
    let mut out: Set = Vec::new();
    for x in hs {
        out.extend(each(x)?);
        if out.len() > max {
            return None;
        }
    }
    Some(out)
}

fn product(a: &Set, b: &Set) -> Option<Set> {
    if a.len().saturating_mul(b.len()) > MAX_EXACT {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut s = x.clone();
            s.extend_from_slice(y);
            out.push(s);
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// Higher is a better filter: longer shortest string, then fewer strings.
fn score(s: &Set) -> (usize, std::cmp::Reverse<usize>) {
    (s.iter().map(Vec::len).min().unwrap_or(0), std::cmp::Reverse(s.len()))
}

fn usable(s: &Set) -> bool {
    !s.is_empty() && s.iter().all(|x| !x.is_empty())
}

/// A set such that every match of `h` contains one of its strings (none of them empty).
fn req(h: &Hir) -> Option<Set> {
    if let Some(e) = exact(h) {
        if usable(&e) {
            return Some(e);
        }
    }
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) | HirKind::Literal(_) | HirKind::Class(_) => None,
        HirKind::Capture(c) => req(&c.sub),
        HirKind::Repetition(r) => {
            if r.min >= 1 {
                req(&r.sub)
            } else {
                None
            }
        }
        HirKind::Concat(hs) => {
            let mut best: Option<Set> = None;
            let mut consider = |s: Set| {
                if usable(&s) && best.as_ref().is_none_or(|b| score(&s) > score(b)) {
                    best = Some(s);
                }
            };
            // Runs of adjacent exactly-known children concatenate into longer strings.
            let mut run: Option<Set> = None;
            for x in hs {
                match exact(x) {
                    Some(e) => {
                        run = match run.take() {
                            None => Some(e),
                            Some(r) => match product(&r, &e) {
                                Some(p) => Some(p),
                                None => {
                                    consider(r);
                                    Some(e)
                                }
                            },
                        };
                    }
                    None => {
                        if let Some(r) = run.take() {
                            consider(r);
                        }
                        if let Some(s) = req(x) {
                            consider(s);
                        }
                    }
                }
            }
            if let Some(r) = run.take() {
                consider(r);
            }
            best
        }
        HirKind::Alternation(hs) => union(hs, req, MAX_REQUIRED),
    }
}

#[cfg(test)]
mod tests {
    use super::required;

    fn r(p: &str) -> Option<Vec<String>> {
        required(p).map(|s| s.into_iter().map(|x| String::from_utf8(x).unwrap()).collect())
    }

    #[test]
    fn literals_that_every_match_contains() {
        assert_eq!(r("(?s-u)abc"), Some(vec!["abc".into()]));
        assert_eq!(r("(?s-u)(?i)union\\s+select"), Some(vec!["select".into()]));
        assert_eq!(r("(?s-u)(?:foo|ba[rz])\\d+"), Some(vec!["bar".into(), "baz".into(), "foo".into()]));
        assert_eq!(r("(?s-u)\\bx(?:ab|cd)y"), Some(vec!["xaby".into(), "xcdy".into()]));
        assert_eq!(r("(?s-u)a+"), Some(vec!["a".into()]));
        // No requirement: an alternative without literals, an optional part, anything.
        assert_eq!(r("(?s-u)foo|\\d+"), None);
        assert_eq!(r("(?s-u)(?:abc)?"), None);
        assert_eq!(r("(?s-u).*"), None);
        assert_eq!(r("(?s-u)^$"), None);
        assert_eq!(r("(?s-u)[a-z]+"), None);
    }

    #[test]
    fn operators_report_their_literals() {
        let base = std::path::Path::new(".");
        let lits = |spec: &str| crate::Operator::parse(spec, base).unwrap().required_literals();
        assert_eq!(lits("@pm Foo bar"), Some(vec![b"foo".to_vec(), b"bar".to_vec()]));
        assert_eq!(lits("@rx (?i)sel[e]ct"), Some(vec![b"select".to_vec()]));
        assert_eq!(lits("!@rx abc"), None);
        assert_eq!(lits("@eq 1"), None);
        // Backtracking patterns are not analysed.
        assert_eq!(lits("@rx a(?=b)"), None);
    }

    /// Each part of the top-level sequence gives a set of its own; the rarest bytes win for `required_bytes`.
    #[test]
    fn every_part_of_a_sequence_is_a_candidate() {
        let c = super::required_candidates(r"(?i)\b(?:abs|acos)\W*?\(");
        assert!(c.contains(&vec![b"(".to_vec()]), "{c:?}");
        // The names part is a candidate too (as the parser factors it: here their common first letter).
        assert!(c.len() >= 2 && c.iter().all(|s| !s.is_empty()), "{c:?}");
        assert!(super::required_candidates(r"a?|b").is_empty());
        let op =
            crate::Operator::parse(r"@rx (?i)\b(?:abs|acos|asin|atan|ceil)\W*?\(", std::path::Path::new(".")).unwrap();
        assert_eq!(op.required_bytes(), Some([1 << b'(', 0, 0, 0]));
        // Negated: no filter at all.
        let op = crate::Operator::parse(r"!@rx (?i)\b(?:abs|acos)\W*?\(", std::path::Path::new(".")).unwrap();
        assert_eq!(op.required_bytes(), None);
    }
}
