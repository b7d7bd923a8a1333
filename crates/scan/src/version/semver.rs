//! SemVer 2.0.0 precedence (semver.org §11) for crates.io, npm and Go. Build metadata is validated and
//! ignored; Go's `+incompatible` is build metadata, and pseudo-versions are pre-releases, so both order
//! correctly without special cases.

use std::cmp::Ordering;

use super::{cmp_digits, Ecosystem, VersionError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Strict SemVer, no prefix.
    Cargo,
    /// A leading `v` or `=` is tolerated (node-semver's loose prefix).
    Npm,
    /// A leading `v` is optional (OSV Go ranges omit it); `v1` and `v1.2` are shorthands of `v1.0.0`, `v1.2.0`.
    Go,
}

impl Flavor {
    fn ecosystem(self) -> Ecosystem {
        match self {
            Flavor::Cargo => Ecosystem::CratesIo,
            Flavor::Npm => Ecosystem::Npm,
            Flavor::Go => Ecosystem::Go,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ident<'a> {
    Num(&'a str),
    Alpha(&'a str),
}

impl Ord for Ident<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Ident::Num(a), Ident::Num(b)) => cmp_digits(a, b),
            // §11.4.3: numeric identifiers have lower precedence than alphanumeric ones.
            (Ident::Num(_), Ident::Alpha(_)) => Ordering::Less,
            (Ident::Alpha(_), Ident::Num(_)) => Ordering::Greater,
            (Ident::Alpha(a), Ident::Alpha(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Ident<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug)]
struct Version<'a> {
    core: [&'a str; 3],
    pre: Vec<Ident<'a>>,
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse(flavor: Flavor, input: &str) -> Result<Version<'_>, VersionError> {
    let eco = flavor.ecosystem();
    let err = |reason| VersionError::invalid(eco, input, reason);
    let mut s = input;
    match flavor {
        Flavor::Cargo => {}
        Flavor::Npm => {
            s = s.strip_prefix('=').unwrap_or(s);
            s = s.strip_prefix('v').unwrap_or(s);
        }
        Flavor::Go => s = s.strip_prefix('v').unwrap_or(s),
    }
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    if let Some(build) = build {
        if build.split('.').any(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
            return Err(err("malformed build metadata"));
        }
    }
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let mut parts = core.split('.');
    let mut nums = ["0"; 3];
    let mut count = 0;
    for part in parts.by_ref().take(3) {
        if !is_numeric(part) {
            return Err(err("major, minor and patch must be decimal numbers"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(err("numbers must not have leading zeros"));
        }
        if let Some(slot) = nums.get_mut(count) {
            *slot = part;
        }
        count += 1;
    }
    if parts.next().is_some() {
        return Err(err("more than three numeric components"));
    }
    if count < 3 && !(flavor == Flavor::Go && pre.is_none() && build.is_none()) {
        return Err(err("expected MAJOR.MINOR.PATCH"));
    }
    let mut idents = Vec::new();
    if let Some(pre) = pre {
        for id in pre.split('.') {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(err("malformed pre-release identifier"));
            }
            if is_numeric(id) {
                if id.len() > 1 && id.starts_with('0') {
                    return Err(err("numeric pre-release identifiers must not have leading zeros"));
                }
                idents.push(Ident::Num(id));
            } else {
                idents.push(Ident::Alpha(id));
            }
        }
    }
    Ok(Version { core: nums, pre: idents })
}

pub(crate) fn compare(flavor: Flavor, a: &str, b: &str) -> Result<Ordering, VersionError> {
    let a = parse(flavor, a)?;
    let b = parse(flavor, b)?;
    for (x, y) in a.core.iter().zip(b.core.iter()) {
        let o = cmp_digits(x, y);
        if o != Ordering::Equal {
            return Ok(o);
        }
    }
    // §11.3: a pre-release has lower precedence than the release; §11.4: identifiers left to right, a
    // longer list wins when all earlier identifiers are equal.
    Ok(match (a.pre.is_empty(), b.pre.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.pre.cmp(&b.pre),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{compare, Ecosystem};
    use std::cmp::Ordering::{self, *};

    fn cmp(eco: Ecosystem, a: &str, b: &str) -> Ordering {
        compare(eco, a, b).unwrap_or_else(|e| panic!("{a} vs {b}: {e}"))
    }

    fn assert_ascending(eco: Ecosystem, list: &[&str]) {
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate() {
                assert_eq!(cmp(eco, a, b), i.cmp(&j), "{eco}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn semver_spec_precedence_example() {
        // semver.org §11.4 example, strictly ascending.
        let list = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        assert_ascending(Ecosystem::CratesIo, &list);
        assert_ascending(Ecosystem::Npm, &list);
    }

    #[test]
    fn semver_build_metadata_ignored() {
        assert_eq!(cmp(Ecosystem::CratesIo, "1.0.0+build.1", "1.0.0+build.2"), Equal);
        assert_eq!(cmp(Ecosystem::CratesIo, "1.0.0-alpha+001", "1.0.0-alpha"), Equal);
        assert_eq!(cmp(Ecosystem::CratesIo, "1.0.0+20130313144700", "1.0.1"), Less);
        assert_eq!(cmp(Ecosystem::CratesIo, "0.0.0-0", "0.0.0"), Less);
        assert_eq!(cmp(Ecosystem::CratesIo, "1.0.0-x-y-z.--", "1.0.0-x-y-z"), Greater);
    }

    #[test]
    fn semver_rejects_malformed() {
        for bad in [
            "1.0",
            "1",
            "01.0.0",
            "1.0.0-01",
            "1.0.0-",
            "1.0.0+",
            "1.0.0-a..b",
            "v1.0.0",
            "1.0.0.0",
            "a.b.c",
            "1.0.0-é",
        ] {
            assert!(compare(Ecosystem::CratesIo, bad, "1.0.0").is_err(), "{bad}");
        }
        assert_eq!(cmp(Ecosystem::Npm, "v1.2.3", "=1.2.3"), Equal);
        assert!(compare(Ecosystem::Npm, "1.2", "1.2.0").is_err());
    }

    #[test]
    fn go_versions() {
        // Pseudo-versions (go.dev/ref/mod#pseudo-versions) are pre-releases of the next version.
        let list = [
            "v0.0.0-20191109021931-daa7c04131f5",
            "v0.0.0-20200101000000-aaaaaaaaaaaa",
            "v0.1.0",
            "v1.2.3",
            "v1.2.4-0.20191109021931-daa7c04131f5",
            "v1.2.4-pre",
            "v1.2.4-pre.0.20191109021931-daa7c04131f5",
            "v1.2.4",
            "v2.0.0+incompatible",
            "v2.0.1",
        ];
        assert_ascending(Ecosystem::Go, &list);
        assert_eq!(cmp(Ecosystem::Go, "v2.0.0+incompatible", "2.0.0"), Equal);
        assert_eq!(cmp(Ecosystem::Go, "v1", "v1.0.0"), Equal);
        assert_eq!(cmp(Ecosystem::Go, "v1.2", "1.2.0"), Equal);
        assert_eq!(cmp(Ecosystem::Go, "0", "v0.0.0"), Equal);
        assert!(compare(Ecosystem::Go, "v1.2-pre", "v1.2.0").is_err());
        assert!(compare(Ecosystem::Go, "vv1.2.0", "v1.2.0").is_err());
    }
}
