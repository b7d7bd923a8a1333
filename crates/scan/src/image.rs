//! Container images: a `docker save` archive (`manifest.json`, config, layer tars; the Docker 25+ variant
//! whose layers are OCI blobs too) or an OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
//! Layers are plain, gzip or zstd tar streams, told apart by their first bytes (media types can lie).
//! Layers are applied in order with whiteouts into an in-memory view that holds only what the inventory
//! needs (parsed package lists, keyed by path); nothing is written to disk. Entry paths that are absolute
//! or contain `..` are refused, and entry size, total size and entry count are capped before any read.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::secrets::{find_secrets, is_binary};

use crate::content::{ContentOptions, ContentScan};
use crate::inventory::{
    detect, looks_executable, parse, FileKind, Inventory, InventoryError, Parsed, MAX_BINARY_BYTES, MAX_MANIFEST_BYTES,
};
use crate::zstd::ZstdStream;

/// Caps applied while reading an image; exceeding one is an [`InventoryError::Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest size a single layer tar entry may declare.
    pub max_entry_bytes: u64,
    /// Largest sum of declared entry sizes over all layers.
    pub max_total_bytes: u64,
    /// Most tar entries over all layers.
    pub max_entries: u64,
    /// Most layers.
    pub max_layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entry_bytes: 4 << 30, max_total_bytes: 64 << 30, max_entries: 4_000_000, max_layers: 256 }
    }
}

impl Limits {
    /// Limits with the given entry and total size caps and entry count (the layer cap stays at its default).
    pub fn new(max_entry_bytes: u64, max_total_bytes: u64, max_entries: u64) -> Limits {
        Limits { max_entry_bytes, max_total_bytes, max_entries, ..Limits::default() }
    }
}

/// What an image scan found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ImageInventory {
    /// Packages of the final filesystem, each with the digest of the layer its file came from.
    pub inventory: Inventory,
    /// Layer digests in order (the config's `diff_ids` for docker archives, the manifest's layer digests
    /// for OCI layouts).
    pub layers: Vec<String>,
    /// Repository tags (`RepoTags`, or OCI `org.opencontainers.image.ref.name` annotations).
    pub tags: Vec<String>,
    /// Secrets found in layer files (with [`scan_image_with`]): every layer is searched, including files a
    /// later layer deletes, since deleted files stay readable in the layer blobs.
    pub content: ContentScan,
}

/// Largest JSON document (manifest, index, config) read.
const MAX_JSON: u64 = 8 << 20;
/// Outer-archive entries up to this size are kept in memory (manifests, configs, tiny layers).
const SMALL_ENTRY: u64 = 1 << 20;
/// Most nested image indexes followed.
const MAX_INDEX_DEPTH: usize = 4;

fn img_err(image: &str, reason: impl Into<String>) -> InventoryError {
    InventoryError::Image { path: image.to_owned(), reason: reason.into() }
}

/// Scans a docker-archive tar file or an OCI layout directory.
pub fn scan_image(path: &Path, limits: &Limits) -> Result<ImageInventory, InventoryError> {
    scan_image_with(path, limits, &ContentOptions { config: false, secrets: false, ..ContentOptions::default() })
}

/// [`scan_image`], also searching layer files up to `content.max_file_bytes` for secrets when
/// `content.secrets` is set (documentation, man pages and locale data are skipped).
pub fn scan_image_with(
    path: &Path,
    limits: &Limits,
    content: &ContentOptions,
) -> Result<ImageInventory, InventoryError> {
    let image = path.display().to_string();
    let meta = fs::metadata(path).map_err(|error| InventoryError::Io { path: image.clone(), error })?;
    let blobs: Box<dyn Blobs> = if meta.is_dir() {
        Box::new(DirBlobs { root: path.to_path_buf() })
    } else {
        Box::new(TarBlobs::read(path, limits)?)
    };
    let plan = if blobs.has("manifest.json") {
        docker_plan(&image, blobs.as_ref())?
    } else if blobs.has("index.json") {
        oci_plan(&image, blobs.as_ref())?
    } else {
        return Err(img_err(&image, "neither manifest.json (docker save) nor index.json (OCI layout) found"));
    };
    if plan.layers.len() > limits.max_layers {
        return Err(InventoryError::Limit {
            image,
            what: format!("layer count {}", plan.layers.len()),
            limit: limits.max_layers as u64,
        });
    }
    let mut view = View {
        image: image.clone(),
        limits: *limits,
        entries: 0,
        total: 0,
        files: BTreeMap::new(),
        secrets_cap: content.secrets.then_some(content.max_file_bytes),
        content: ContentScan::default(),
    };
    for (idx, (blob, digest)) in plan.layers.iter().enumerate() {
        let reader = blobs.open(&image, blob)?;
        view.apply(reader, idx, digest)?;
    }
    let mut inv = Inventory::default();
    for (path, (_, parsed)) in std::mem::take(&mut view.files) {
        inv.packages.extend(parsed.packages);
        inv.notes.extend(parsed.notes);
        if parsed.distro.is_some() && (inv.distro.is_none() || path == "etc/os-release") {
            inv.distro = parsed.distro;
        }
    }
    inv.finish();
    let mut content = std::mem::take(&mut view.content);
    content.sort();
    Ok(ImageInventory {
        inventory: inv,
        layers: plan.layers.into_iter().map(|(_, d)| d).collect(),
        tags: plan.tags,
        content,
    })
}

/// Layers to apply: (blob name inside the archive or layout, digest to record), and tags.
struct Plan {
    layers: Vec<(String, String)>,
    tags: Vec<String>,
}

trait Blobs {
    fn has(&self, name: &str) -> bool;
    fn open<'a>(&'a self, image: &str, name: &str) -> Result<Box<dyn Read + 'a>, InventoryError>;
}

fn read_json(image: &str, blobs: &dyn Blobs, name: &str) -> Result<Value, InventoryError> {
    let mut data = Vec::new();
    blobs
        .open(image, name)?
        .take(MAX_JSON + 1)
        .read_to_end(&mut data)
        .map_err(|e| img_err(image, format!("{name}: {e}")))?;
    if data.len() as u64 > MAX_JSON {
        return Err(img_err(image, format!("{name} is larger than {MAX_JSON} bytes")));
    }
    serde_json::from_slice(&data).map_err(|e| img_err(image, format!("{name}: invalid JSON: {e}")))
}

/// `sha256:<hex>` → `blobs/sha256/<hex>`, refusing anything that is not a plain digest.
fn blob_path(image: &str, digest: &str) -> Result<String, InventoryError> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| img_err(image, format!("bad digest {digest:?}")))?;
    let ok_alg = !alg.is_empty() && alg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_hex = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok_alg || !ok_hex {
        return Err(img_err(image, format!("bad digest {:?}", digest.chars().take(100).collect::<String>())));
    }
    Ok(format!("blobs/{alg}/{hex}"))
}

fn docker_plan(image: &str, blobs: &dyn Blobs) -> Result<Plan, InventoryError> {
    let manifest = read_json(image, blobs, "manifest.json")?;
    let first = manifest.as_array().and_then(|a| a.first()).ok_or_else(|| img_err(image, "manifest.json is empty"))?;
    let layers: Vec<String> = first
        .get("Layers")
        .and_then(Value::as_array)
        .ok_or_else(|| img_err(image, "manifest.json has no Layers"))?
        .iter()
        .map(|l| l.as_str().map(|s| s.trim_start_matches("./").to_owned()))
        .collect::<Option<_>>()
        .ok_or_else(|| img_err(image, "manifest.json Layers must be strings"))?;
    let tags = first
        .get("RepoTags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let diff_ids: Vec<String> = match first.get("Config").and_then(Value::as_str) {
        Some(cfg) => read_json(image, blobs, cfg.trim_start_matches("./"))?
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let use_diff_ids = diff_ids.len() == layers.len();
    let layers = layers
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let digest = match (use_diff_ids, diff_ids.get(i)) {
                (true, Some(d)) => d.clone(),
                _ => l.strip_prefix("blobs/").map(|r| r.replacen('/', ":", 1)).unwrap_or_else(|| l.clone()),
            };
            (l, digest)
        })
        .collect();
    Ok(Plan { layers, tags })
}

fn oci_plan(image: &str, blobs: &dyn Blobs) -> Result<Plan, InventoryError> {
    let index = read_json(image, blobs, "index.json")?;
    let mut tags = Vec::new();
    let mut current = index;
    for _ in 0..MAX_INDEX_DEPTH {
        let manifests = current
            .get("manifests")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| img_err(image, "image index lists no manifests"))?;
        for m in manifests {
            if let Some(t) = m.pointer("/annotations/org.opencontainers.image.ref.name").and_then(Value::as_str) {
                tags.push(t.to_owned());
            }
        }
        // A multi-platform index: prefer linux/amd64, else the first entry.
        let chosen = manifests
            .iter()
            .find(|m| {
                m.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
                    && m.pointer("/platform/architecture").and_then(Value::as_str) == Some("amd64")
            })
            .or_else(|| manifests.first())
            .ok_or_else(|| img_err(image, "image index lists no manifests"))?;
        let digest = chosen
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| img_err(image, "manifest entry has no digest"))?;
        let doc = read_json(image, blobs, &blob_path(image, digest)?)?;
        if doc.get("manifests").is_some() {
            current = doc;
            continue;
        }
        let layers = doc
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| img_err(image, "image manifest has no layers"))?
            .iter()
            .map(|l| {
                let d = l.get("digest").and_then(Value::as_str).ok_or_else(|| img_err(image, "layer has no digest"))?;
                Ok((blob_path(image, d)?, d.to_owned()))
            })
            .collect::<Result<Vec<_>, InventoryError>>()?;
        return Ok(Plan { layers, tags });
    }
    Err(img_err(image, format!("image indexes nested deeper than {MAX_INDEX_DEPTH}")))
}

struct DirBlobs {
    root: PathBuf,
}

impl Blobs for DirBlobs {
    fn has(&self, name: &str) -> bool {
        self.root.join(name).is_file()
    }

    fn open<'a>(&'a self, image: &str, name: &str) -> Result<Box<dyn Read + 'a>, InventoryError> {
        check_rel(image, name)?;
        let p = self.root.join(name);
        // A blob that is a symlink could point anywhere; layouts hold plain files.
        let meta = fs::symlink_metadata(&p).map_err(|e| img_err(image, format!("{name}: {e}")))?;
        if !meta.is_file() {
            return Err(img_err(image, format!("{name} is not a regular file")));
        }
        Ok(Box::new(fs::File::open(&p).map_err(|e| img_err(image, format!("{name}: {e}")))?))
    }
}

/// The outer docker-archive tar: small entries in memory, the others by (offset, size) in the file.
struct TarBlobs {
    path: PathBuf,
    small: BTreeMap<String, Vec<u8>>,
    large: BTreeMap<String, (u64, u64)>,
}

impl TarBlobs {
    fn read(path: &Path, limits: &Limits) -> Result<TarBlobs, InventoryError> {
        let image = path.display().to_string();
        let file = fs::File::open(path).map_err(|error| InventoryError::Io { path: image.clone(), error })?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut out = TarBlobs { path: path.to_path_buf(), small: BTreeMap::new(), large: BTreeMap::new() };
        let mut count = 0u64;
        for entry in archive.entries().map_err(|e| img_err(&image, format!("not a tar archive: {e}")))? {
            let mut entry = entry.map_err(|e| img_err(&image, format!("bad tar entry: {e}")))?;
            count += 1;
            if count > limits.max_entries {
                return Err(InventoryError::Limit {
                    image,
                    what: "outer archive entry count".into(),
                    limit: limits.max_entries,
                });
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_owned();
            let size = entry.header().size().map_err(|e| img_err(&image, format!("{name}: {e}")))?;
            if size <= SMALL_ENTRY {
                let mut data = Vec::new();
                (&mut entry).take(size).read_to_end(&mut data).map_err(|e| img_err(&image, format!("{name}: {e}")))?;
                out.small.insert(name, data);
            } else {
                out.large.insert(name, (entry.raw_file_position(), size));
            }
        }
        Ok(out)
    }
}

impl Blobs for TarBlobs {
    fn has(&self, name: &str) -> bool {
        self.small.contains_key(name) || self.large.contains_key(name)
    }

    fn open<'a>(&'a self, image: &str, name: &str) -> Result<Box<dyn Read + 'a>, InventoryError> {
        if let Some(data) = self.small.get(name) {
            return Ok(Box::new(data.as_slice()));
        }
        let &(offset, size) =
            self.large.get(name).ok_or_else(|| img_err(image, format!("{name} not in the archive")))?;
        let mut f = fs::File::open(&self.path).map_err(|e| img_err(image, format!("{name}: {e}")))?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| img_err(image, format!("{name}: {e}")))?;
        Ok(Box::new(BufReader::new(f.take(size))))
    }
}

/// Refuses absolute paths and `..` components.
fn check_rel(image: &str, path: &str) -> Result<(), InventoryError> {
    if path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(InventoryError::Traversal { image: image.to_owned(), entry: path.chars().take(200).collect() });
    }
    Ok(())
}

/// Normalises a layer entry path (`./a//b/` → `a/b`), refusing traversal.
fn clean_path(image: &str, raw: &str) -> Result<String, InventoryError> {
    check_rel(image, raw)?;
    Ok(raw.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/"))
}

fn skipped_dir(path: &str) -> bool {
    path.split('/').any(|c| c == "node_modules" || c == ".git")
}

/// Image paths not searched for secrets: documentation and data that never hold credentials.
fn secret_skip(path: &str) -> bool {
    [
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/locale/",
        "usr/share/i18n/",
        "usr/share/zoneinfo/",
        "usr/lib/locale/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// The merged filesystem, reduced to the files the inventory needs: path → (layer index, parse result).
struct View {
    image: String,
    limits: Limits,
    entries: u64,
    total: u64,
    files: BTreeMap<String, (usize, Parsed)>,
    /// Size cap of files searched for secrets; `None` when not searching.
    secrets_cap: Option<u64>,
    content: ContentScan,
}

impl View {
    fn remove_under(&mut self, prefix: &str, layer: usize, include_self: bool) {
        let dir = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        self.files.retain(|p, (l, _)| {
            let hit = (include_self && p == prefix) || p.starts_with(&dir);
            !(hit && *l < layer)
        });
    }

    fn apply(&mut self, reader: Box<dyn Read + '_>, layer: usize, digest: &str) -> Result<(), InventoryError> {
        let image = self.image.clone();
        let err = |reason: String| img_err(&image, format!("layer {digest}: {reason}"));
        let mut buf = BufReader::new(reader);
        let head = buf.fill_buf().map_err(|e| err(e.to_string()))?;
        let stream: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(buf))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(ZstdStream::new(buf))
        } else {
            Box::new(buf)
        };
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().map_err(|e| err(format!("not a tar stream: {e}")))? {
            let mut entry = entry.map_err(|e| err(format!("bad tar entry: {e}")))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(InventoryError::Limit {
                    image,
                    what: "entry count".into(),
                    limit: self.limits.max_entries,
                });
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = clean_path(&image, &raw)?;
            let size = entry.header().size().map_err(|e| err(format!("{path}: {e}")))?;
            if size > self.limits.max_entry_bytes {
                return Err(InventoryError::Limit {
                    image,
                    what: format!("entry {:?} size {size} bytes", path.chars().take(200).collect::<String>()),
                    limit: self.limits.max_entry_bytes,
                });
            }
            self.total = self.total.saturating_add(size);
            if self.total > self.limits.max_total_bytes {
                return Err(InventoryError::Limit {
                    image,
                    what: format!("total size of entries ({} bytes so far)", self.total),
                    limit: self.limits.max_total_bytes,
                });
            }
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                self.remove_under(dir, layer, false);
                continue;
            }
            if let Some(victim) = name.strip_prefix(".wh.") {
                let target = if dir.is_empty() { victim.to_owned() } else { format!("{dir}/{victim}") };
                self.remove_under(&target, layer, true);
                continue;
            }
            let kind = entry.header().entry_type();
            // Whatever this entry is, it replaces a file of a lower layer at the same path.
            self.files.remove(&path);
            if kind.is_hard_link() {
                if let Some(link) = entry.link_name_bytes() {
                    let target = clean_path(&image, &String::from_utf8_lossy(&link))?;
                    if let Some((_, parsed)) = self.files.get(&target).cloned() {
                        self.files.insert(path, (layer, parsed));
                    }
                }
                continue;
            }
            if !kind.is_file() || skipped_dir(&path) {
                continue;
            }
            let mut pre: Option<Vec<u8>> = None;
            if self.secrets_cap.is_some_and(|cap| size <= cap) && !secret_skip(&path) {
                let mut data = Vec::new();
                (&mut entry).take(size).read_to_end(&mut data).map_err(|e| err(format!("{path}: {e}")))?;
                if !is_binary(&data) {
                    self.content.files_scanned += 1;
                    for mut f in find_secrets(&path, &data) {
                        f.layer = Some(digest.to_owned());
                        self.content.secrets.push(f);
                    }
                }
                pre = Some(data);
            }
            let file_kind = match detect(&path) {
                Some(k) if size <= MAX_MANIFEST_BYTES => k,
                Some(_) => {
                    let note = format!("{path}: larger than {MAX_MANIFEST_BYTES} bytes, not read");
                    self.files.insert(path, (layer, Parsed { notes: vec![note], ..Parsed::default() }));
                    continue;
                }
                None => {
                    let exec = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
                    if !exec || !(64..=MAX_BINARY_BYTES).contains(&size) {
                        continue;
                    }
                    FileKind::GoBinary
                }
            };
            let data = match pre {
                Some(d) => {
                    if file_kind == FileKind::GoBinary && !looks_executable(d.get(..4).unwrap_or_default()) {
                        continue;
                    }
                    d
                }
                None => {
                    let mut data = Vec::new();
                    if file_kind == FileKind::GoBinary {
                        let mut head = [0u8; 4];
                        entry.read_exact(&mut head).map_err(|e| err(format!("{path}: {e}")))?;
                        if !looks_executable(&head) {
                            continue;
                        }
                        data.extend_from_slice(&head);
                    }
                    (&mut entry).take(size).read_to_end(&mut data).map_err(|e| err(format!("{path}: {e}")))?;
                    data
                }
            };
            let mut parsed = match parse(file_kind, &path, &data) {
                Ok(p) => p,
                Err(e) => Parsed { notes: vec![format!("skipped: {e}")], ..Parsed::default() },
            };
            if parsed.packages.is_empty() && parsed.notes.is_empty() && parsed.distro.is_none() {
                continue;
            }
            for p in &mut parsed.packages {
                p.layer = Some(digest.to_owned());
            }
            self.files.insert(path, (layer, parsed));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(clean_path("i", "./usr//lib/./x").unwrap(), "usr/lib/x");
        assert!(matches!(clean_path("i", "a/../../etc/passwd"), Err(InventoryError::Traversal { .. })));
        assert!(matches!(clean_path("i", "/etc/passwd"), Err(InventoryError::Traversal { .. })));
        assert_eq!(blob_path("i", "sha256:abc123").unwrap(), "blobs/sha256/abc123");
        assert!(blob_path("i", "sha256:../../x").is_err());
        assert!(blob_path("i", "nocolon").is_err());
    }
}
