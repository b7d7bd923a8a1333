//! dpkg version ordering (deb-version(7), `verrevcmp` in dpkg's lib/dpkg/version.c): `[epoch:]upstream[-revision]`,
//! compared epoch first, then upstream, then revision, each with the dpkg character order where `~` sorts
//! before everything (even the end of the string) and letters sort before other characters.

use std::cmp::Ordering;

use super::{cmp_digits, Ecosystem, VersionError};

struct Version<'a> {
    epoch: u32,
    upstream: &'a str,
    revision: &'a str,
}

fn parse(eco: Ecosystem, input: &str) -> Result<Version<'_>, VersionError> {
    let err = |reason| VersionError::invalid(eco, input, reason);
    let (epoch, rest) = match input.split_once(':') {
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("epoch must be a number"));
            }
            // dpkg rejects epochs above INT_MAX; so do we, rather than wrapping.
            let epoch: u32 = e.parse().map_err(|_| err("epoch is too big"))?;
            if epoch > i32::MAX as u32 {
                return Err(err("epoch is too big"));
            }
            (epoch, rest)
        }
        None => (0, input),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => {
            if r.is_empty() {
                return Err(err("empty revision"));
            }
            (u, r)
        }
        None => (rest, ""),
    };
    if upstream.is_empty() {
        return Err(err("empty upstream version"));
    }
    if !upstream.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return Err(err("upstream version must start with a digit"));
    }
    let ok = |b: u8, extra: &[u8]| b.is_ascii_alphanumeric() || b"~.+".contains(&b) || extra.contains(&b);
    if !upstream.bytes().all(|b| ok(b, b"-:")) {
        return Err(err("invalid character in upstream version"));
    }
    if !revision.bytes().all(|b| ok(b, b"")) {
        return Err(err("invalid character in revision"));
    }
    Ok(Version { epoch, upstream, revision })
}

/// dpkg's `order()`: digits 0 (never reached in the non-digit loop), letters their code, `~` -1, the end 0,
/// anything else its code + 256.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i = (i + 1).min(a.len());
            j = (j + 1).min(b.len());
        }
        let si = i;
        while digit(a, i) {
            i += 1;
        }
        let sj = j;
        while digit(b, j) {
            j += 1;
        }
        let na = std::str::from_utf8(a.get(si..i).unwrap_or_default()).unwrap_or("");
        let nb = std::str::from_utf8(b.get(sj..j).unwrap_or_default()).unwrap_or("");
        let o = cmp_digits(na, nb);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

pub(crate) fn compare(eco: Ecosystem, a: &str, b: &str) -> Result<Ordering, VersionError> {
    let a = parse(eco, a)?;
    let b = parse(eco, b)?;
    Ok(a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision)))
}

#[cfg(test)]
mod tests {
    use super::super::{compare, Ecosystem};
    use std::cmp::Ordering::{self, *};

    fn cmp(a: &str, b: &str) -> Ordering {
        compare(Ecosystem::Debian, a, b).unwrap_or_else(|e| panic!("{a} vs {b}: {e}"))
    }

    #[test]
    fn dpkg_tilde_sorts_before_everything() {
        // deb-version(7): "~~, ~~a, ~, the empty part, a".
        let list = ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a", "1.0+", "1.0.1"];
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate() {
                assert_eq!(cmp(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(cmp("1.0~rc1-1", "1.0-1"), Less);
        assert_eq!(cmp("2.30-0ubuntu1~20.04", "2.30-0ubuntu1"), Less);
    }

    #[test]
    fn dpkg_epochs_and_revisions() {
        assert_eq!(cmp("1:0.1", "2.0"), Greater);
        assert_eq!(cmp("0:2.0", "2.0"), Equal);
        assert_eq!(cmp("1.0", "1.0-0"), Equal, "an absent revision equals revision 0");
        assert_eq!(cmp("1.0-1", "1.0-2"), Less);
        assert_eq!(cmp("1.0-10", "1.0-9"), Greater);
        assert_eq!(cmp("1.0-1ubuntu1", "1.0-1"), Greater);
        assert_eq!(cmp("1.0-1+deb10u1", "1.0-1"), Greater);
        assert_eq!(cmp("1.0-1+b1", "1.0-1.1"), Less, "non-letters by ASCII code: '+' before '.'");
        assert_eq!(cmp("1.2-3-4", "1.2-3-5"), Less, "the revision is after the last hyphen");
        assert_eq!(cmp("7.6p2-4", "7.6-0"), Greater);
        assert_eq!(cmp("1:1.18.36:5.4", "1:1.18.36:5.5"), Less, "colons allowed in upstream after an epoch");
        assert_eq!(cmp("1.001", "1.1"), Equal, "numeric parts ignore leading zeros");
        assert_eq!(cmp("1.0a", "1.0A"), Greater, "letters by ASCII code");
    }

    #[test]
    fn dpkg_rejects_malformed() {
        for bad in
            ["a1.0", ":1.0", "x:1.0", "1.0-", "1.0 1", "1.0_1", "99999999999:1.0", "2147483648:1.0", "-1", "1.18:5.4"]
        {
            assert!(compare(Ecosystem::Debian, bad, "1.0").is_err(), "{bad:?}");
        }
        assert_eq!(cmp("2147483647:1.0", "1.0"), Greater);
    }
}
