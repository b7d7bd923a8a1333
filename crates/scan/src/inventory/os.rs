//! OS package databases: dpkg `status` (and distroless `status.d/` files), apk `installed`, and the
//! distribution release from `os-release`. Versions are kept verbatim (dpkg epoch and revision included).

use serde::{Deserialize, Serialize};

use super::Package;
use crate::version::Ecosystem;

/// The distribution of a rootfs, from `os-release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Distro {
    /// `ID` (`debian`, `ubuntu`, `alpine`, …).
    pub id: String,
    /// `VERSION_ID` (`12`, `22.04`, `3.18.4`), empty when absent (Debian testing).
    pub version_id: String,
}

impl Distro {
    /// The ecosystem of its packages, when this crate knows it.
    pub fn ecosystem(&self) -> Option<Ecosystem> {
        match self.id.as_str() {
            "debian" => Some(Ecosystem::Debian),
            "ubuntu" => Some(Ecosystem::Ubuntu),
            "alpine" => Some(Ecosystem::Alpine),
            _ => None,
        }
    }

    /// The release as advisory data names it: `v3.18` for Alpine 3.18.4, `12` for Debian 12, `22.04`
    /// for Ubuntu. `None` when unknown (then advisories of every release are considered).
    pub fn release(&self) -> Option<String> {
        if self.version_id.is_empty() {
            return None;
        }
        match self.id.as_str() {
            "alpine" => {
                let mut parts = self.version_id.split('.');
                let (major, minor) = (parts.next()?, parts.next()?);
                Some(format!("v{major}.{minor}"))
            }
            "debian" => Some(self.version_id.split('.').next().unwrap_or_default().to_owned()),
            _ => Some(self.version_id.clone()),
        }
    }
}

/// Parses `os-release` (shell-style `KEY=value`, values optionally quoted).
pub(crate) fn os_release(text: &str) -> Option<Distro> {
    let mut id = None;
    let mut version_id = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else { continue };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
        match key {
            "ID" => id = Some(value.to_ascii_lowercase()),
            "VERSION_ID" => version_id = value,
            _ => {}
        }
    }
    Some(Distro { id: id.filter(|i| !i.is_empty())?, version_id })
}

/// RFC 822-style paragraphs: (field, value) pairs, continuation lines folded away (not needed here).
fn paragraphs(text: &str) -> impl Iterator<Item = Vec<(&str, &str)>> {
    text.split("\n\n").map(|para| {
        para.lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect::<Vec<_>>()
    })
}

/// dpkg `status` (only `Status: install ok installed`) or, with `require_status` false, a distroless
/// `status.d/` file (which carries no `Status:` field; one present still has to say installed).
pub(crate) fn dpkg_status(path: &str, text: &str, require_status: bool) -> Vec<Package> {
    let text = text.replace("\r\n", "\n");
    let mut out = Vec::new();
    for fields in paragraphs(&text) {
        let get = |name: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
        match get("Status") {
            Some(s) if s.split_whitespace().collect::<Vec<_>>() != ["install", "ok", "installed"] => continue,
            None if require_status => continue,
            _ => {}
        }
        let (Some(name), Some(version)) = (get("Package"), get("Version")) else { continue };
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let mut p = Package::new(Ecosystem::Debian, name, version, path);
        if let Some(src) = get("Source") {
            // `Source: glibc (2.36-9+deb12u4)` names the source package and, when it differs, its version.
            let (src_name, src_version) = match src.split_once('(') {
                Some((n, v)) => (n.trim(), Some(v.trim_end_matches(')').trim())),
                None => (src.trim(), None),
            };
            if !src_name.is_empty() && (src_name != name || src_version.is_some()) {
                p.source_name = Some(src_name.to_owned());
                p.source_version = src_version.filter(|v| !v.is_empty() && *v != version).map(str::to_owned);
            }
        }
        out.push(p);
    }
    out
}

/// apk `lib/apk/db/installed`: records of `X:value` lines separated by blank lines; `P` name, `V` version,
/// `o` origin (the source package Alpine's secdb is keyed by).
pub(crate) fn apk_installed(path: &str, text: &str) -> Vec<Package> {
    let text = text.replace("\r\n", "\n");
    let mut out = Vec::new();
    for record in text.split("\n\n") {
        let (mut name, mut version, mut origin) = ("", "", "");
        for line in record.lines() {
            match line.split_once(':') {
                Some(("P", v)) => name = v.trim(),
                Some(("V", v)) => version = v.trim(),
                Some(("o", v)) => origin = v.trim(),
                _ => {}
            }
        }
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let mut p = Package::new(Ecosystem::Alpine, name, version, path);
        if !origin.is_empty() && origin != name {
            p.source_name = Some(origin.to_owned());
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        let d = os_release("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\n").unwrap();
        assert_eq!((d.ecosystem(), d.release()), (Some(Ecosystem::Alpine), Some("v3.18".into())));
        let d = os_release("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n").unwrap();
        assert_eq!((d.ecosystem(), d.release()), (Some(Ecosystem::Debian), Some("12".into())));
        let d = os_release("ID=debian\nVERSION_CODENAME=trixie\n").unwrap();
        assert_eq!(d.release(), None);
        assert_eq!(os_release("NAME=x\n"), None);
        assert_eq!(Distro { id: "alpine".into(), version_id: "edge".into() }.release(), None);
    }
}
