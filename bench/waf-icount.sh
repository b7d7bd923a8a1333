#!/usr/bin/env bash
# Instructions per request through the WAF (CRS v4 PL1), counted by valgrind's callgrind on
# crates/waf/tests/perf.rs: unlike wall-clock timings, unaffected by what else runs on the machine.
# One binary repeats to ±0.03 %; an unrelated change can move the count by ~1.5 % (hash tables'
# per-process seeds follow the binary's layout), so smaller differences between two builds are
# noise. The test runs twice per scenario with
# different request counts and the difference is divided by the number of extra requests, so
# loading the rules cancels out. Scenarios (tests/perf.rs): 0 memo off, 1 memo on with the same
# request again, 2 memo on with new values every request; each counts GET and POST together.
# Usage: bench/waf-icount.sh [scenarios="1 2"]     Needs (apt): valgrind
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "missing valgrind (apt install valgrind)"; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
BIN=$(cargo test -q -p palisade-waf --release --test perf --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "perf" and m.get("executable"): print(m["executable"])')
[ -x "$BIN" ] || { echo "could not build the perf test"; exit 1; }
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
count() { # scenario n
  (cd crates/waf && PERF_SCENARIO=$1 PERF_N=$2 valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" "$BIN" --nocapture \
    2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1)
}
echo "| scenario (tests/perf.rs) | instructions per request (GET and POST averaged) |"
echo "|---|---:|"
for s in ${1:-1 2}; do
  a=$(count "$s" 10); b=$(count "$s" 50)
  # Each batch runs GET then POST, 8 batches of N each (tests/perf.rs).
  python3 -c "import sys; a, b, s = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
names = {'0': 'verdict memo off', '1': 'memo on, the same request', '2': 'memo on, new values every request'}
print(f'| {names.get(s, s)} | {(b - a) / (8 * 40 * 2):,.0f} |')" "$a" "$b" "$s"
done
