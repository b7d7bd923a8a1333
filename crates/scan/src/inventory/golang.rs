//! Go: `go.mod` (`require` lines and blocks, `replace` directives), `go.sum` (modules with a content hash,
//! not the `/go.mod`-only ones), and the build info the Go linker embeds in binaries: the
//! `\xff Go buildinf:` header followed either by two pointers to Go strings (before Go 1.18, resolved
//! through the ELF program headers) or by the two strings inline as varint-length blobs (Go 1.18+).

use std::collections::HashMap;

use super::Package;
use crate::version::Ecosystem;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// Largest build-info string accepted (real ones are a few kilobytes).
const MAX_INFO: u64 = 1 << 20;

fn strip_comment(line: &str) -> &str {
    line.split("//").next().unwrap_or_default().trim()
}

fn is_local_path(p: &str) -> bool {
    p.starts_with("./") || p.starts_with("../") || p.starts_with('/') || p == "." || p == ".."
}

/// (old path, old version or "") -> Some((new path, new version)), or None for a local directory.
type Replace = (String, String, Option<(String, String)>);

/// Parses `go.mod`: required modules, with `replace` directives applied (a local-path replacement
/// removes the module from the inventory, noted).
pub(crate) fn go_mod(path: &str, text: &str) -> (Vec<Package>, Vec<String>) {
    let mut requires: Vec<(String, String)> = Vec::new();
    let mut replaces: Vec<Replace> = Vec::new();
    let mut notes = Vec::new();
    let mut block: Option<String> = None;
    for raw in text.lines() {
        let line = strip_comment(raw);
        if line.is_empty() {
            continue;
        }
        if block.is_some() && line == ")" {
            block = None;
            continue;
        }
        let (verb, rest) = match &block {
            Some(b) => (b.clone(), line.to_owned()),
            None => {
                let (v, r) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                let r = r.trim();
                if r == "(" {
                    block = Some(v.to_owned());
                    continue;
                }
                (v.to_owned(), r.to_owned())
            }
        };
        let unquote = |s: &str| s.trim_matches('"').to_owned();
        match verb.as_str() {
            "require" => {
                let mut it = rest.split_whitespace();
                if let (Some(m), Some(v)) = (it.next(), it.next()) {
                    requires.push((unquote(m), v.to_owned()));
                }
            }
            "replace" => {
                let Some((old, new)) = rest.split_once("=>") else { continue };
                let old: Vec<&str> = old.split_whitespace().collect();
                let new: Vec<&str> = new.split_whitespace().collect();
                let Some(old_path) = old.first() else { continue };
                let old_version = old.get(1).copied().unwrap_or_default().to_owned();
                let target = match (new.first(), new.get(1)) {
                    (Some(p), Some(v)) if !is_local_path(p) => Some((unquote(p), (*v).to_owned())),
                    _ => None,
                };
                replaces.push((unquote(old_path), old_version, target));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (module, version) in requires {
        let rep = replaces.iter().rev().find(|(p, v, _)| *p == module && (v.is_empty() || *v == version));
        match rep {
            Some((_, _, Some((np, nv)))) => out.push(Package::new(Ecosystem::Go, np, nv, path)),
            Some((_, _, None)) => notes.push(format!("{path}: {module} is replaced by a local directory, not matched")),
            None => out.push(Package::new(Ecosystem::Go, &module, &version, path)),
        }
    }
    (out, notes)
}

/// Parses `go.sum`: one package per module version that has a content hash line.
pub(crate) fn go_sum(path: &str, text: &str) -> Vec<Package> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (m, v) = (it.next()?, it.next()?);
            (!v.ends_with("/go.mod")).then(|| Package::new(Ecosystem::Go, m, v, path))
        })
        .collect()
}

/// Build info embedded in a Go binary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GoBuildInfo {
    /// Toolchain version, e.g. `go1.21.3`.
    pub go_version: String,
    /// Main package path (`path` line).
    pub path: String,
    /// Main module (path, version); the version is `(devel)` for a local build.
    pub main: Option<(String, String)>,
    /// Dependencies (path, version), replacements applied.
    pub deps: Vec<(String, String)>,
}

impl GoBuildInfo {
    /// The packages to match: the main module when it has a real version, the dependencies, and the Go
    /// standard library as OSV's `stdlib` module.
    pub fn packages(&self, source_file: &str) -> Vec<Package> {
        let mut out = Vec::new();
        if let Some(v) = stdlib_version(&self.go_version) {
            out.push(Package::new(Ecosystem::Go, "stdlib", &v, source_file));
        }
        for (m, v) in self.main.iter().chain(&self.deps) {
            if Ecosystem::Go.parse_check(v).is_ok() {
                out.push(Package::new(Ecosystem::Go, m, v, source_file));
            }
        }
        out
    }
}

/// `go1.21.3` → `v1.21.3`, `go1.21` → `v1.21.0`, `go1.22rc1` → `v1.22.0-rc1`; anything else `None`.
fn stdlib_version(go: &str) -> Option<String> {
    let v = go.split_whitespace().next()?.strip_prefix("go")?;
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (nums, pre) = v.split_at(split);
    let mut parts: Vec<&str> = nums.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
        return None;
    }
    while parts.len() < 3 {
        parts.push("0");
    }
    let pre = pre.split(['-', ' ', '+']).next().unwrap_or_default();
    let mut out = format!("v{}", parts.join("."));
    if !pre.is_empty() {
        out.push('-');
        out.push_str(pre);
    }
    Ecosystem::Go.parse_check(&out).ok().map(|()| out)
}

/// Reads a little- or big-endian unsigned integer of 4 or 8 bytes.
fn read_uint(data: &[u8], off: usize, size: usize, big: bool) -> Option<u64> {
    let b = data.get(off..off.checked_add(size)?)?;
    let mut v: u64 = 0;
    for i in 0..size {
        let byte = if big { *b.get(i)? } else { *b.get(size - 1 - i)? };
        v = (v << 8) | u64::from(byte);
    }
    Some(v)
}

/// Unsigned LEB128 (Go's `binary.Uvarint`), at most 10 bytes.
fn uvarint(data: &[u8], off: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *data.get(off.checked_add(i)?)?;
        v |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Address→file-offset map from ELF `PT_LOAD` program headers.
struct Elf<'a> {
    data: &'a [u8],
    big: bool,
    loads: Vec<(u64, u64, u64)>, // (vaddr, file offset, file size)
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Option<Elf<'a>> {
        if !data.starts_with(b"\x7fELF") {
            return None;
        }
        let is64 = *data.get(4)? == 2;
        let big = *data.get(5)? == 2;
        let (phoff, phentsize, phnum) = if is64 {
            (read_uint(data, 32, 8, big)?, read_uint(data, 54, 2, big)?, read_uint(data, 56, 2, big)?)
        } else {
            (read_uint(data, 28, 4, big)?, read_uint(data, 42, 2, big)?, read_uint(data, 44, 2, big)?)
        };
        let mut loads = Vec::new();
        for i in 0..phnum {
            let base = usize::try_from(phoff.checked_add(i.checked_mul(phentsize)?)?).ok()?;
            let field = |o32: usize, o64: usize| {
                if is64 {
                    read_uint(data, base.checked_add(o64)?, 8, big)
                } else {
                    read_uint(data, base.checked_add(o32)?, 4, big)
                }
            };
            if read_uint(data, base, 4, big)? == 1 {
                loads.push((field(8, 16)?, field(4, 8)?, field(16, 32)?));
            }
        }
        Some(Elf { data, big, loads })
    }

    fn offset(&self, addr: u64) -> Option<usize> {
        let (vaddr, off, size) = self.loads.iter().find(|(v, _, s)| addr >= *v && addr - *v < *s)?;
        let _ = size;
        usize::try_from(off.checked_add(addr - vaddr)?).ok()
    }

    /// Reads a Go string header (pointer, length) at `addr` and the bytes it points to.
    fn go_string(&self, addr: u64, ptr_size: usize) -> Option<&'a [u8]> {
        let at = self.offset(addr)?;
        let ptr = read_uint(self.data, at, ptr_size, self.big)?;
        let len = read_uint(self.data, at.checked_add(ptr_size)?, ptr_size, self.big)?;
        if len > MAX_INFO {
            return None;
        }
        let start = self.offset(ptr)?;
        self.data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }
}

/// Finds and decodes the build info of a Go binary. `Ok(None)` when there is none; `Err` with a reason
/// when a header is present but cannot be decoded.
pub fn go_build_info(data: &[u8]) -> Result<Option<GoBuildInfo>, String> {
    let mut last_err = None;
    let mut from = 0usize;
    while let Some(rel) = data.get(from..).and_then(|d| d.windows(MAGIC.len()).position(|w| w == MAGIC)) {
        let pos = from + rel;
        match decode_at(data, pos) {
            Ok(info) => return Ok(Some(info)),
            Err(e) => last_err = Some(e),
        }
        from = pos + 1;
    }
    last_err.map_or(Ok(None), Err)
}

fn decode_at(data: &[u8], pos: usize) -> Result<GoBuildInfo, String> {
    let header = data.get(pos..pos + HEADER_LEN).ok_or("truncated header")?;
    let ptr_size = usize::from(*header.get(14).ok_or("truncated header")?);
    let flags = *header.get(15).ok_or("truncated header")?;
    let (version, modinfo) = if flags & 2 != 0 {
        let mut off = pos + HEADER_LEN;
        let mut next = || -> Result<&[u8], String> {
            let (len, n) = uvarint(data, off).ok_or("bad varint")?;
            if len > MAX_INFO {
                return Err(format!("string of {len} bytes"));
            }
            let start = off + n;
            let end = start.checked_add(usize::try_from(len).map_err(|_| "length overflows")?).ok_or("overflow")?;
            off = end;
            data.get(start..end).ok_or_else(|| "string past the end of the file".to_owned())
        };
        (next()?, next()?)
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return Err(format!("pointer size {ptr_size}"));
        }
        let big = flags & 1 != 0;
        let elf = Elf::parse(data).ok_or("pointer-format build info outside an ELF file is not supported")?;
        let vaddr = read_uint(header, 16, ptr_size, big).ok_or("truncated header")?;
        let maddr = read_uint(header, 16 + ptr_size, ptr_size, big).ok_or("truncated header")?;
        let v = elf.go_string(vaddr, ptr_size).ok_or("version string not mapped")?;
        let m = elf.go_string(maddr, ptr_size).ok_or("module info string not mapped")?;
        (v, m)
    };
    let version = std::str::from_utf8(version).map_err(|_| "version is not UTF-8")?.to_owned();
    let mut modinfo = modinfo;
    // The module info is wrapped in 16-byte sentinels (runtime/debug's infoStart/infoEnd).
    if modinfo.len() >= 33 && modinfo.get(modinfo.len() - 17) == Some(&b'\n') {
        modinfo = modinfo.get(16..modinfo.len() - 16).unwrap_or_default();
    }
    let modinfo = std::str::from_utf8(modinfo).map_err(|_| "module info is not UTF-8")?;
    let mut info = GoBuildInfo { go_version: version, path: String::new(), main: None, deps: Vec::new() };
    let mut last_is_main = false;
    let mut replaced: HashMap<usize, (String, String)> = HashMap::new();
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["path", p, ..] => info.path = (*p).to_owned(),
            ["mod", p, v, ..] => {
                info.main = Some(((*p).to_owned(), (*v).to_owned()));
                last_is_main = true;
            }
            ["dep", p, v, ..] => {
                info.deps.push(((*p).to_owned(), (*v).to_owned()));
                last_is_main = false;
            }
            ["=>", p, v, ..] => {
                if last_is_main {
                    info.main = Some(((*p).to_owned(), (*v).to_owned()));
                } else if let Some(i) = info.deps.len().checked_sub(1) {
                    replaced.insert(i, ((*p).to_owned(), (*v).to_owned()));
                }
            }
            _ => {}
        }
    }
    for (i, r) in replaced {
        if let Some(d) = info.deps.get_mut(i) {
            *d = r;
        }
    }
    if info.go_version.is_empty() && info.main.is_none() {
        return Err("empty build info".into());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdlib_versions() {
        assert_eq!(stdlib_version("go1.21.3").as_deref(), Some("v1.21.3"));
        assert_eq!(stdlib_version("go1.21").as_deref(), Some("v1.21.0"));
        assert_eq!(stdlib_version("go1.22rc1").as_deref(), Some("v1.22.0-rc1"));
        assert_eq!(stdlib_version("go1.20.1 X:boringcrypto").as_deref(), Some("v1.20.1"));
        assert_eq!(stdlib_version("devel +abc"), None);
    }

    #[test]
    fn uvarints() {
        assert_eq!(uvarint(&[0x05], 0), Some((5, 1)));
        assert_eq!(uvarint(&[0xac, 0x02], 0), Some((300, 2)));
        assert_eq!(uvarint(&[0xff; 11], 0), None);
        assert_eq!(uvarint(&[0x80], 0), None);
    }
}
