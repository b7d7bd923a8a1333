//! Go build info (crafted per the Go linker's formats: the 1.18+ inline varint blob and the older pointer
//! form inside an ELF file) and image scans of docker archives and OCI layouts built in the test.

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;

use palisade_scan::{go_build_info, scan_image, scan_image_with, ContentOptions, InventoryError, Limits, Package};

const INFO_START: &str = "3077af0c9274080241e1c107e6d618e6";
const INFO_END: &str = "f932433186182072008242104116d8f2";
const MODINFO: &str = "path\texample.com/app/cmd/app\nmod\texample.com/app\t(devel)\t\n\
dep\tgolang.org/x/text\tv0.3.0\th1:AAAA=\ndep\tgithub.com/old/lib\tv1.0.0\th1:BBBB=\n\
=>\tgithub.com/new/lib\tv1.2.0\th1:CCCC=\nbuild\t-compiler=gc\nbuild\tGOOS=linux\n";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn wrapped_modinfo() -> Vec<u8> {
    let mut m = hex(INFO_START);
    m.extend_from_slice(MODINFO.as_bytes());
    m.extend(hex(INFO_END));
    m
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A fake executable with a Go 1.18+ inline build-info blob (debug/buildinfo's format: 32-byte header with
/// flags bit 1 set, then the version and module info as varint-prefixed strings).
fn go_inline_binary() -> Vec<u8> {
    let mut data = b"\x7fELF\x02\x01\x01".to_vec();
    data.resize(0x200, 0);
    data.extend_from_slice(b"\xff Go buildinf:");
    data.push(8); // pointer size
    data.push(2); // flagsVersionInl, little-endian
    data.resize(0x200 + 32, 0);
    let version = b"go1.21.3";
    varint(version.len() as u64, &mut data);
    data.extend_from_slice(version);
    let m = wrapped_modinfo();
    varint(m.len() as u64, &mut data);
    data.extend(m);
    data.resize(data.len() + 64, 0);
    data
}

fn names(pkgs: &[Package]) -> Vec<String> {
    pkgs.iter().map(|p| format!("{} {} {}", p.ecosystem, p.name, p.version)).collect()
}

const GO_PACKAGES: [&str; 3] = ["Go stdlib v1.21.3", "Go golang.org/x/text v0.3.0", "Go github.com/new/lib v1.2.0"];

#[test]
fn go_inline_build_info() {
    let info = go_build_info(&go_inline_binary()).unwrap().unwrap();
    assert_eq!(info.go_version, "go1.21.3");
    assert_eq!(info.path, "example.com/app/cmd/app");
    assert_eq!(info.main, Some(("example.com/app".to_owned(), "(devel)".to_owned())));
    // `(devel)` is not a version, so the main module is not matched.
    assert_eq!(names(&info.packages("app")), GO_PACKAGES);
}

/// A minimal little-endian ELF64 with one PT_LOAD mapping the whole file at 0x400000, holding the pre-1.18
/// header: two pointers to Go string headers (pointer, length), which point at the strings.
#[test]
fn go_pointer_build_info_in_elf() {
    const BASE: u64 = 0x40_0000;
    let mut d = vec![0u8; 0x400];
    d[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    d[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    d[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    d[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    d[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    d[72..80].copy_from_slice(&0u64.to_le_bytes()); // p_offset
    d[80..88].copy_from_slice(&BASE.to_le_bytes()); // p_vaddr
    d[96..104].copy_from_slice(&0x400u64.to_le_bytes()); // p_filesz
    let hdr = 0x100;
    d[hdr..hdr + 14].copy_from_slice(b"\xff Go buildinf:");
    d[hdr + 14] = 8;
    d[hdr + 15] = 0;
    d[hdr + 16..hdr + 24].copy_from_slice(&(BASE + 0x140).to_le_bytes());
    d[hdr + 24..hdr + 32].copy_from_slice(&(BASE + 0x150).to_le_bytes());
    let version = b"go1.16.5";
    let m = wrapped_modinfo();
    d[0x140..0x148].copy_from_slice(&(BASE + 0x180).to_le_bytes());
    d[0x148..0x150].copy_from_slice(&(version.len() as u64).to_le_bytes());
    d[0x150..0x158].copy_from_slice(&(BASE + 0x190).to_le_bytes());
    d[0x158..0x160].copy_from_slice(&(m.len() as u64).to_le_bytes());
    d[0x180..0x180 + version.len()].copy_from_slice(version);
    d[0x190..0x190 + m.len()].copy_from_slice(&m);
    let info = go_build_info(&d).unwrap().unwrap();
    assert_eq!(info.go_version, "go1.16.5");
    assert_eq!(names(&info.packages("x"))[1..], GO_PACKAGES[1..]);

    // A pointer out of the mapped range is an error, not a panic.
    let mut bad = d.clone();
    bad[0x158..0x160].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(go_build_info(&bad).is_err());
    assert_eq!(go_build_info(b"no build info here").unwrap(), None);
    // A truncated inline blob.
    let full = go_inline_binary();
    assert!(go_build_info(&full[..0x200 + 36]).is_err());
}

// ---- images ----

const OS_RELEASE: &str = "ID=debian\nVERSION_ID=\"11\"\n";
const STATUS_V1: &str = "Package: libc6\nStatus: install ok installed\nSource: glibc\nVersion: 2.31-13+deb11u2\n\n\
Package: zlib1g\nStatus: install ok installed\nSource: zlib\nVersion: 1:1.2.11.dfsg-2\n";
const STATUS_V2: &str = "Package: libc6\nStatus: install ok installed\nSource: glibc\nVersion: 2.31-13+deb11u5\n\n\
Package: zlib1g\nStatus: install ok installed\nSource: zlib\nVersion: 1:1.2.11.dfsg-2+deb11u2\n";
const CARGO_LOCK: &str = "version = 3\n\n[[package]]\nname = \"smallvec\"\nversion = \"0.6.9\"\n";
const YARN: &str = "lodash@^4.17.20:\n  version \"4.17.20\"\n";
const PKG_LOCK: &str = r#"{"lockfileVersion":3,"packages":{"node_modules/qs":{"version":"6.7.0"}}}"#;
const POETRY: &str = "[[package]]\nname = \"jinja2\"\nversion = \"2.11.2\"\n";

enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
}

fn layer(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        match item {
            Item::File(path, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Item::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn two_layers() -> (Vec<u8>, Vec<u8>) {
    let (l1, l2) = two_raw_layers();
    (l1, gzip(&l2))
}

/// The two layers, both uncompressed.
fn two_raw_layers() -> (Vec<u8>, Vec<u8>) {
    let go = go_inline_binary();
    let l1 = layer(&[
        Item::Dir("etc/"),
        Item::File("etc/os-release", OS_RELEASE.as_bytes(), 0o644),
        Item::File("./var/lib/dpkg/status", STATUS_V1.as_bytes(), 0o644),
        Item::File("app/Cargo.lock", CARGO_LOCK.as_bytes(), 0o644),
        Item::File("app/web/yarn.lock", YARN.as_bytes(), 0o644),
        Item::File("opt/data/package-lock.json", PKG_LOCK.as_bytes(), 0o644),
        Item::File("usr/local/bin/app", &go, 0o755),
        Item::File("usr/local/bin/notes", &go, 0o644), // not executable: not inspected
        Item::File("app/node_modules/x/package-lock.json", PKG_LOCK.as_bytes(), 0o644),
    ]);
    let l2 = layer(&[
        Item::File("app/.wh.Cargo.lock", b"", 0o644),
        Item::File("opt/data/.wh..wh..opq", b"", 0o644),
        Item::File("opt/data/poetry.lock", POETRY.as_bytes(), 0o644),
        Item::File("var/lib/dpkg/status", STATUS_V2.as_bytes(), 0o644),
    ]);
    (l1, l2)
}

fn docker_archive(path: &Path, layers: &[Vec<u8>]) {
    let names: Vec<String> = (0..layers.len()).map(|i| format!("l{i}/layer.tar")).collect();
    let manifest = serde_json::json!([{ "Config": "config.json", "RepoTags": ["demo:1"], "Layers": names }]);
    // Up to two layers get diff_ids; with more, the digests fall back to the layer file names.
    let diff_ids: &[&str] = if layers.len() <= 2 { &[D1, D2][..layers.len()] } else { &[] };
    let config = serde_json::json!({ "rootfs": { "type": "layers", "diff_ids": diff_ids } });
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    for (n, l) in names.iter().zip(layers) {
        add(n, l);
    }
    add("config.json", config.to_string().as_bytes());
    add("manifest.json", manifest.to_string().as_bytes());
    b.finish().unwrap();
}

fn check_two_layer_result(pkgs: &[Package], l1: &str, l2: &str) {
    let got: Vec<String> = pkgs
        .iter()
        .map(|p| format!("{} {} {} {} {}", p.ecosystem, p.name, p.version, p.source_file, p.layer.as_deref().unwrap()))
        .collect();
    let want = [
        format!("npm lodash 4.17.20 app/web/yarn.lock {l1}"),
        format!("Go github.com/new/lib v1.2.0 usr/local/bin/app {l1}"),
        format!("Go golang.org/x/text v0.3.0 usr/local/bin/app {l1}"),
        format!("Go stdlib v1.21.3 usr/local/bin/app {l1}"),
        format!("PyPI jinja2 2.11.2 opt/data/poetry.lock {l2}"),
        format!("Debian libc6 2.31-13+deb11u5 var/lib/dpkg/status {l2}"),
        format!("Debian zlib1g 1:1.2.11.dfsg-2+deb11u2 var/lib/dpkg/status {l2}"),
    ];
    assert_eq!(got, want);
}

#[test]
fn docker_archive_two_layers_with_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2) = two_layers();
    let path = dir.path().join("image.tar");
    docker_archive(&path, &[l1, l2]);
    let img = scan_image(&path, &Limits::default()).unwrap();
    assert_eq!(img.layers, [D1, D2]);
    assert_eq!(img.tags, ["demo:1"]);
    let d = img.inventory.distro.as_ref().unwrap();
    assert_eq!((d.id.as_str(), d.version_id.as_str()), ("debian", "11"));
    check_two_layer_result(&img.inventory.packages, D1, D2);
}

#[test]
fn oci_layout_two_layers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (l1, l2) = two_layers();
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let (h1, h2, hc, hm) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32), "d4".repeat(32));
    std::fs::write(blobs.join(&h1), &l1).unwrap();
    std::fs::write(blobs.join(&h2), &l2).unwrap();
    std::fs::write(blobs.join(&hc), r#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{hc}"), "size": 1 },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{h1}"), "size": l1.len() },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{h2}"), "size": l2.len() }
        ]
    });
    std::fs::write(blobs.join(&hm), manifest.to_string()).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{hm}"), "size": 1,
        "annotations": { "org.opencontainers.image.ref.name": "demo:2" } }] });
    std::fs::write(root.join("index.json"), index.to_string()).unwrap();
    let img = scan_image(root, &Limits::default()).unwrap();
    assert_eq!(img.tags, ["demo:2"]);
    check_two_layer_result(&img.inventory.packages, &format!("sha256:{h1}"), &format!("sha256:{h2}"));

    // A digest that tries to leave blobs/ is refused.
    let index = r#"{"manifests":[{"digest":"sha256:../../../etc/passwd"}]}"#;
    std::fs::write(root.join("index.json"), index).unwrap();
    assert!(scan_image(root, &Limits::default()).unwrap_err().to_string().contains("bad digest"));
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// An OCI layout whose layers are `tar+zstd`: the first one frame, the second split into two frames with a
/// skippable frame between them (as multi-threaded encoders and seekable-zstd writers produce).
#[test]
fn oci_layout_zstd_layers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (raw1, raw2) = two_raw_layers();
    let l1 = zstd(&raw1);
    assert_eq!(&l1[..4], b"\x28\xb5\x2f\xfd");
    let (a, b) = raw2.split_at(700);
    let mut l2 = zstd(a);
    l2.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
    l2.extend_from_slice(&5u32.to_le_bytes());
    l2.extend_from_slice(b"seek!");
    l2.extend(zstd(b));
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let (h1, h2, hc, hm) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32), "d4".repeat(32));
    std::fs::write(blobs.join(&h1), &l1).unwrap();
    std::fs::write(blobs.join(&h2), &l2).unwrap();
    std::fs::write(blobs.join(&hc), r#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
    let zstd_type = "application/vnd.oci.image.layer.v1.tar+zstd";
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{hc}"), "size": 1 },
        "layers": [
            { "mediaType": zstd_type, "digest": format!("sha256:{h1}"), "size": l1.len() },
            { "mediaType": zstd_type, "digest": format!("sha256:{h2}"), "size": l2.len() }
        ]
    });
    std::fs::write(blobs.join(&hm), manifest.to_string()).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index =
        serde_json::json!({ "schemaVersion": 2, "manifests": [{ "digest": format!("sha256:{hm}"), "size": 1 }] });
    std::fs::write(root.join("index.json"), index.to_string()).unwrap();
    let img = scan_image(root, &Limits::default()).unwrap();
    check_two_layer_result(&img.inventory.packages, &format!("sha256:{h1}"), &format!("sha256:{h2}"));

    // A truncated zstd layer is an error naming the layer, not a partial inventory.
    std::fs::write(blobs.join(&h2), &l2[..l2.len() - 40]).unwrap();
    let err = scan_image(root, &Limits::default()).unwrap_err().to_string();
    assert!(err.contains(&format!("layer sha256:{h2}: ")), "{err}");
}

/// `fixtures/zstd-layer.tar.zst` was made by the reference encoder (`zstd -19 --check`, v1.5.4) from a GNU tar
/// of an `etc/os-release` and three real paragraphs of the debootstrap bookworm dpkg status (perl-base,
/// libpcre2-8-0, bsdutils), so the decoder is checked against another implementation's output too.
#[test]
fn docker_archive_with_reference_zstd_layer() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zstd-layer.tar.zst");
    let path = dir.path().join("image.tar");
    docker_archive(&path, &[std::fs::read(fixture).unwrap()]);
    let img = scan_image(&path, &Limits::default()).unwrap();
    let got: Vec<String> = img
        .inventory
        .packages
        .iter()
        .map(|p| {
            let (src, src_v) = p.match_key();
            format!("{} {} {} {src} {src_v} {}", p.ecosystem, p.name, p.version, p.layer.as_deref().unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            format!("Debian bsdutils 1:2.38.1-5+deb12u3 util-linux 2.38.1-5+deb12u3 {D1}"),
            format!("Debian libpcre2-8-0 10.42-1 pcre2 10.42-1 {D1}"),
            format!("Debian perl-base 5.36.0-7+deb12u3 perl 5.36.0-7+deb12u3 {D1}"),
        ]
    );
    assert_eq!(img.inventory.distro.unwrap().version_id, "12");
}

/// A raw tar entry header (the `tar` builder refuses `..` names, which is the point of the test).
fn raw_entry(name: &str, size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn traversal_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    for name in ["../../etc/cron.d/x", "/etc/passwd", "a/../../b"] {
        let mut l = raw_entry(name, 3, b"abc");
        l.extend([0u8; 1024]);
        docker_archive(&path, &[l]);
        let err = scan_image(&path, &Limits::default()).unwrap_err();
        assert!(matches!(&err, InventoryError::Traversal { entry, .. } if entry == name), "{err}");
        assert!(err.to_string().contains("path traversal refused"));
    }
}

#[test]
fn tar_bomb_is_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    // The header claims 1 TiB; no data follows, so reading it would fail differently.
    let mut l = raw_entry("var/lib/dpkg/status", 1 << 40, b"");
    l.extend([0u8; 1024]);
    docker_archive(&path, &[l]);
    let err = scan_image(&path, &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "image {}: entry \"var/lib/dpkg/status\" size 1099511627776 bytes exceeds the limit of 4294967296",
            path.display()
        )
    );

    let (l1, l2) = two_layers();
    docker_archive(&path, &[l1, l2]);
    let err = scan_image(&path, &Limits::new(1 << 20, 1024, 1000)).unwrap_err();
    assert!(matches!(&err, InventoryError::Limit { limit: 1024, what, .. } if what.starts_with("total size")), "{err}");
    let err = scan_image(&path, &Limits::new(1 << 20, 1 << 30, 5)).unwrap_err();
    assert!(matches!(&err, InventoryError::Limit { limit: 5, what, .. } if what == "entry count"), "{err}");
}

#[test]
fn malformed_images_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.tar");
    std::fs::write(&path, b"definitely not a tar archive, but longer than nothing").unwrap();
    assert!(scan_image(&path, &Limits::default()).is_err());
    docker_archive(&path, &[b"garbage layer".to_vec()]);
    assert!(scan_image(&path, &Limits::default()).is_err());
    assert!(scan_image(dir.path(), &Limits::default()).unwrap_err().to_string().contains("neither manifest.json"));
}

#[test]
fn secrets_in_layers_including_deleted_files() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2) = two_layers();
    let token = format!("ghp_{}", "a1B2c3D4e5F6".repeat(3));
    let env = format!("GITHUB_TOKEN={token}\n");
    let l3 = layer(&[
        Item::File("app/.env", env.as_bytes(), 0o600),
        Item::File("usr/share/doc/x/README", env.as_bytes(), 0o644), // documentation is not searched
    ]);
    let l4 = layer(&[Item::File("app/.wh..env", b"", 0o644)]);
    let path = dir.path().join("image.tar");
    docker_archive(&path, &[l1.clone(), l2.clone(), l3, l4]);
    let img = scan_image_with(&path, &Limits::default(), &ContentOptions::secrets_only()).unwrap();
    // The packages are the same as without the secret search (files are read once for both).
    let plain = {
        let p2 = dir.path().join("plain.tar");
        docker_archive(&p2, &[l1, l2]);
        scan_image(&p2, &Limits::default()).unwrap()
    };
    assert_eq!(img.inventory.packages.len(), plain.inventory.packages.len());
    // The .env file is deleted by the top layer but still in the third layer's blob: reported with it.
    let got: Vec<(String, usize, String, Option<String>)> =
        img.content.secrets.iter().map(|s| (s.file.clone(), s.line, s.rule_id.clone(), s.layer.clone())).collect();
    assert_eq!(got, [("app/.env".to_owned(), 1, "PAL-SEC-005".to_owned(), Some("l2/layer.tar".to_owned()))]);
    assert_eq!(img.content.secrets[0].redacted, "ghp_…");
    // Without the option nothing is searched.
    assert_eq!(scan_image(&path, &Limits::default()).unwrap().content.secrets, []);
}
