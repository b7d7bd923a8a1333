#!/usr/bin/env bash
# Scanner benchmark, in one run:
#  1. a real Cargo.lock (this repository's, plus the known-vulnerable parity fixture): `palisade scan lock`
#     vs `cargo audit --no-fetch --no-yanked` on the same RustSec snapshot, REPS repetitions each
#     (wall time per run, and the findings each reports);
#  2. a synthetic 5,000-package mixed inventory (Cargo.lock, package-lock.json, requirements.txt, go.mod,
#     dpkg status; names taken from the advisory data so lookups hit) scanned with `palisade scan fs`
#     against a database of RustSec + Go + PyPA + Alpine data: wall time and peak RSS (/usr/bin/time -v).
#  3. a real Debian image: `debootstrap --variant=minbase bookworm` packed as a one-layer `docker save` tarball
#     (built once and cached in ~/.cache/palisade/debian-bookworm-minbase/, shared with the scan crate's
#     tests/debian_image.rs), scanned with `palisade scan image` against the OSV Debian fixture of
#     crates/scan/tests/fixtures/debian-osv: wall time and peak RSS, with and without the layer secret search.
#     Needs debootstrap and root the first time; without them the row says why it was not run.
# Prints a Markdown table. Usage: bench/scan.sh [reps=3]
# Needs: python3, git, /usr/bin/time (debootstrap and root for the image rows, first run only); cargo-audit on PATH for the comparison rows
# (cargo install cargo-audit --locked), else those rows say "not installed".
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
ADV=${PALISADE_ADVISORIES:-../shared/data/advisories}
[ -d "$ADV/rustsec" ] || ADV=/work/shared/data/advisories
for t in python3 git /usr/bin/time; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
cargo build --release -q -p palisade
PALISADE=$CARGO_TARGET_DIR/release/palisade
AUDIT=$(command -v cargo-audit || true)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Millisecond wall time of a command (output discarded; a non-zero exit for "findings" is fine).
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The RustSec snapshot as a git repository, as cargo-audit wants it.
cp -r "$ADV/rustsec" "$TMP/advisory-db"
git -C "$TMP/advisory-db" init -q
git -C "$TMP/advisory-db" add -A
git -C "$TMP/advisory-db" -c user.name=bench -c user.email=bench@palisade.invalid -c commit.gpgsign=false commit -q -m snapshot

s=$(date +%s%N)
"$PALISADE" scan db import "$ADV/rustsec" --db "$TMP/rustsec.db" >/dev/null
IMPORT_RS=$(( ($(date +%s%N) - s) / 1000000 ))
s=$(date +%s%N)
"$PALISADE" scan db import "$ADV/rustsec" "$ADV/go" "$ADV/pypa" "$ADV/alpine" --db "$TMP/all.db" >/dev/null
IMPORT_ALL=$(( ($(date +%s%N) - s) / 1000000 ))

echo "## palisade scan benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, $REPS repetitions, median shown)"
echo
echo "| workload | tool | wall ms (median) | runs ms | findings |"
echo "| --- | --- | ---: | --- | ---: |"
for LOCK in Cargo.lock crates/scan/tests/fixtures/cargo-audit/vulnerable.Cargo.lock; do
  cp "$LOCK" "$TMP/Cargo.lock"
  name="$(basename "$(dirname "$LOCK")")/$(basename "$LOCK") ($(grep -c '^\[\[package\]\]' "$LOCK") pkgs)"
  runs=(); for _ in $(seq "$REPS"); do runs+=("$(ms "$PALISADE" scan lock "$TMP/Cargo.lock" --db "$TMP/rustsec.db" --format json)"); done
  n=$("$PALISADE" scan lock "$TMP/Cargo.lock" --db "$TMP/rustsec.db" --format json | python3 -c \
      'import json,sys; print(sum(len(t["findings"]) for t in json.load(sys.stdin)["targets"]))')
  echo "| $name | palisade scan lock | $(median "${runs[@]}") | ${runs[*]} | $n |"
  if [ -n "$AUDIT" ]; then
    runs=(); for _ in $(seq "$REPS"); do
      runs+=("$(ms "$AUDIT" audit --db "$TMP/advisory-db" --no-fetch --no-yanked --json --file "$TMP/Cargo.lock")")
    done
    # cargo-audit exits 1 when it finds something; only its JSON matters here.
    n=$({ "$AUDIT" audit --db "$TMP/advisory-db" --no-fetch --no-yanked --json --file "$TMP/Cargo.lock" 2>/dev/null || true; } \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["vulnerabilities"]["count"] + sum(len(v) for v in d["warnings"].values()))')
    echo "| $name | cargo audit --no-fetch --no-yanked | $(median "${runs[@]}") | ${runs[*]} | $n |"
  else
    echo "| $name | cargo audit | not installed | | |"
  fi
done

# Synthetic mixed inventory: 1,500 crates, 1,500 npm packages, 1,000 PyPI, 500 Go modules, 500 dpkg.
python3 - "$ADV" "$TMP/synthetic" <<'PY'
import os, sys, json
adv, out = sys.argv[1], sys.argv[2]
os.makedirs(out + "/var/lib/dpkg", exist_ok=True)
os.makedirs(out + "/etc", exist_ok=True)
crates = sorted(os.listdir(adv + "/rustsec/crates"))
pypi = sorted(os.listdir(adv + "/pypa/vulns"))
def pick(names, n, prefix):
    return [names[i] if i < len(names) else f"{prefix}{i}" for i in range(n)]
with open(out + "/Cargo.lock", "w") as f:
    f.write("version = 3\n\n")
    for i, c in enumerate(pick(crates, 1500, "synthetic-crate-")):
        f.write(f'[[package]]\nname = "{c}"\nversion = "0.{i % 10}.{i % 7}"\nsource = "registry+https://github.com/rust-lang/crates.io-index"\n\n')
pkgs = {"": {"name": "synthetic", "version": "1.0.0"}}
for i in range(1500):
    pkgs[f"node_modules/synthetic-npm-{i}"] = {"version": f"1.{i % 20}.{i % 3}"}
json.dump({"name": "synthetic", "lockfileVersion": 3, "packages": pkgs}, open(out + "/package-lock.json", "w"))
with open(out + "/requirements.txt", "w") as f:
    for i, p in enumerate(pick(pypi, 1000, "synthetic-py-")):
        f.write(f"{p}==0.{i % 9}.{i % 4}\n")
with open(out + "/go.mod", "w") as f:
    f.write("module example.com/synthetic\n\ngo 1.21\n\nrequire (\n")
    for i in range(500):
        f.write(f"\tgithub.com/synthetic/mod{i} v1.{i % 12}.0\n")
    f.write(")\n")
with open(out + "/etc/os-release", "w") as f:
    f.write('ID=debian\nVERSION_ID="10"\n')
with open(out + "/var/lib/dpkg/status", "w") as f:
    for i in range(500):
        f.write(f"Package: synthetic-deb-{i}\nStatus: install ok installed\nVersion: 1.{i}-1\n\n")
PY
runs=(); rss=()
for _ in $(seq "$REPS"); do
  /usr/bin/time -v -o "$TMP/time.txt" "$PALISADE" scan fs "$TMP/synthetic" --db "$TMP/all.db" --format json \
    >"$TMP/synthetic.json" 2>/dev/null || true
  runs+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); printf "%d", (t[1] * 60 + t[2]) * 1000}' "$TMP/time.txt")")
  rss+=("$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/time.txt")")
done
read -r npk nf < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t=d["targets"][0]; print(len(t["packages"]), len(t["findings"]))' "$TMP/synthetic.json")
echo "| synthetic mixed inventory ($npk packages) | palisade scan fs | $(median "${runs[@]}") | ${runs[*]} | $nf |"
echo
echo "Peak RSS of the synthetic scan: $(median "${rss[@]}") KiB (runs: ${rss[*]} KiB)."
echo "Database import: RustSec only $IMPORT_RS ms; RustSec + Go + PyPA + Alpine $IMPORT_ALL ms (once, not per scan)."

# Real Debian image (issue 9): debootstrap once, pack once (python tarfile keeps symlinks and device nodes).
DEB_CACHE=${PALISADE_DEBIAN_IMAGE_CACHE:-$HOME/.cache/palisade/debian-bookworm-minbase}
IMG=$DEB_CACHE/image.tar
why=""
if [ ! -f "$IMG" ] && [ ! -f "$DEB_CACHE/rootfs/var/lib/dpkg/status" ]; then
  if ! command -v debootstrap >/dev/null; then why="debootstrap not installed"
  elif [ "$(id -u)" != 0 ]; then why="debootstrap needs root"
  else
    mkdir -p "$DEB_CACHE"
    rm -rf "$DEB_CACHE/rootfs.tmp-$$"
    debootstrap --variant=minbase bookworm "$DEB_CACHE/rootfs.tmp-$$" http://deb.debian.org/debian >"$TMP/debootstrap.log" 2>&1 \
      || { tail -5 "$TMP/debootstrap.log"; exit 1; }
    mv "$DEB_CACHE/rootfs.tmp-$$" "$DEB_CACHE/rootfs"
  fi
fi
if [ -z "$why" ] && [ ! -f "$IMG" ]; then
  python3 - "$DEB_CACHE/rootfs" "$IMG" <<'PY'
import hashlib, json, os, sys, tarfile
root, out = sys.argv[1], sys.argv[2]
layer, tmp = out + ".layer.tmp", out + ".tmp"
with tarfile.open(layer, "w", format=tarfile.GNU_FORMAT) as t:
    for name in sorted(os.listdir(root)):
        t.add(os.path.join(root, name), arcname=name)
h = hashlib.sha256()
with open(layer, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 16), b""):
        h.update(chunk)
lsha = h.hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["bash"]},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + lsha]}}).encode()
csha = hashlib.sha256(config).hexdigest()
manifest = json.dumps([{"Config": csha + ".json", "RepoTags": ["palisade-test/debian:bookworm-minbase"],
                        "Layers": [lsha + "/layer.tar"]}]).encode()
with tarfile.open(tmp, "w") as t:
    for name, data in (("manifest.json", manifest), (csha + ".json", config)):
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o644
        t.addfile(info, __import__("io").BytesIO(data))
    t.add(layer, arcname=lsha + "/layer.tar")
os.remove(layer)
os.rename(tmp, out)
PY
fi
echo
if [ -n "$why" ]; then
  echo "Debian image scan: not run ($why)."
else
  "$PALISADE" scan db import crates/scan/tests/fixtures/debian-osv --db "$TMP/debian.db" >/dev/null
  echo "| workload | tool | wall ms (median) | runs ms | peak RSS KiB (median) | findings |"
  echo "| --- | --- | ---: | --- | ---: | ---: |"
  for mode in default --no-secrets; do
    flags=(); [ "$mode" = default ] || flags=("$mode")
    runs=(); rss=()
    for _ in $(seq "$REPS"); do
      /usr/bin/time -v -o "$TMP/time.txt" "$PALISADE" scan image "$IMG" --db "$TMP/debian.db" --format json "${flags[@]}" \
        >"$TMP/image.json" 2>/dev/null || true
      runs+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); printf "%d", (t[1] * 60 + t[2]) * 1000}' "$TMP/time.txt")")
      rss+=("$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/time.txt")")
    done
    read -r np nf < <(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["targets"][0]; print(len(t["packages"]), len(t["findings"]))' "$TMP/image.json")
    label="palisade scan image"; [ "$mode" = default ] || label="palisade scan image $mode"
    echo "| debootstrap minbase bookworm docker-archive ($(( $(stat -c %s "$IMG") / 1048576 )) MiB, 1 layer, $np packages) | $label | $(median "${runs[@]}") | ${runs[*]} | $(median "${rss[@]}") | $nf |"
  done
fi
