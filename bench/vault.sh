#!/usr/bin/env bash
# Vault benchmark (issue #8): encrypt / decrypt operations per second through the HTTP API of
# `palisade server` (SQLite, AES-256-GCM key, 256-byte plaintexts with a context, admin token),
# single items and batches of 100, with wrk on loopback; FF1 card tokenization through the API
# (batches of 100); against the machine's raw AES-256-GCM speed in the same run
# (`openssl speed -evp aes-256-gcm`, one core, 256-byte blocks) and the library without HTTP
# (`cargo run --release -p palisade-vault --example bench`). Every benchmarked answer is checked
# by the wrk script (200 and the expected field in every item). Every call is also an audit event,
# as in production. Raw output goes to bench/out/vault/, a Markdown table to stdout.
# Usage: bench/vault.sh [duration=10s] [connections=16]
# Needs (apt): wrk curl openssl python3.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}; CONNS=${2:-16}; THREADS=2
OUT=bench/out/vault; mkdir -p "$OUT"; rm -f "$OUT"/*
die() { echo "bench/vault.sh: $*" >&2; exit 1; }
for t in wrk curl openssl python3; do command -v $t >/dev/null || die "missing $t (apt-get install -y $t)"; done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
cargo build --release -q -p palisade --bin palisade
cargo build --release -q -p palisade-vault --example bench
PALISADE=$CARGO_TARGET_DIR/release/palisade

PORT=18420
DATA=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

PALISADE_LOG=warn TOKIO_WORKER_THREADS=$THREADS "$PALISADE" server --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
  > "$OUT/server.log" 2>&1 & PID=$!
for _ in $(seq 1 150); do
  [ -s "$DATA/admin.token" ] && curl -fsS -o /dev/null "http://127.0.0.1:$PORT/jwks.json" 2>/dev/null && break
  kill -0 $PID 2>/dev/null || { cat "$OUT/server.log" >&2; die "server exited"; }
  sleep 0.1
done
TOKEN=$(tr -d '\n' < "$DATA/admin.token")
URL=http://127.0.0.1:$PORT/vault/v1
api() { curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
api -X POST -d '{"type":"aes256-gcm"}' "$URL/keys/bench" > /dev/null
api -X POST -d '{"type":"ff1-aes256"}' "$URL/keys/cards" > /dev/null

# Request bodies: 256 random bytes (base64) with a context; the ciphertext for decrypt.
python3 - "$OUT" <<'EOF'
import base64, json, os, sys
out = sys.argv[1]
pt = base64.b64encode(os.urandom(256)).decode()
ctx = base64.b64encode(b"order-42").decode()
one = {"plaintext": pt, "context": ctx}
json.dump(one, open(f"{out}/encrypt-1.json", "w"))
json.dump({"batch": [one] * 100}, open(f"{out}/encrypt-100.json", "w"))
EOF
# Luhn-valid card numbers for the FF1 batch.
python3 - "$OUT/tokenize-100.json" <<'EOF'
import json, sys
def luhn_fix(d15):
    digits = [int(c) for c in d15]
    for check in range(10):
        s = 0
        for i, c in enumerate(reversed(digits + [check])):
            c = c * 2 if i % 2 else c
            s += c - 9 if c > 9 else c
        if s % 10 == 0:
            return d15 + str(check)
cards = [luhn_fix("411111111111%03d" % i) for i in range(100)]
json.dump({"batch": [{"value": c, "format": "card"} for c in cards]}, open(sys.argv[1], "w"))
EOF
C=$(api -X POST --data-binary @"$OUT/encrypt-1.json" "$URL/encrypt/bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ciphertext"])')
python3 - "$OUT" "$C" <<'EOF'
import base64, json, sys
out, c = sys.argv[1], sys.argv[2]
one = {"ciphertext": c, "context": base64.b64encode(b"order-42").decode()}
json.dump(one, open(f"{out}/decrypt-1.json", "w"))
json.dump({"batch": [one] * 100}, open(f"{out}/decrypt-100.json", "w"))
EOF
# Sanity: the decrypt body really decrypts, the tokenize batch tokenizes.
api -X POST --data-binary @"$OUT/decrypt-1.json" "$URL/decrypt/bench" | grep -q '"plaintext"' || die "decrypt check failed"
[ "$(api -X POST --data-binary @"$OUT/tokenize-100.json" "$URL/tokenize/cards" | grep -o '"token"' | wc -l)" = 100 ] \
  || die "tokenize check failed"

cat > "$OUT/post.lua" <<'EOF'
-- wrk: POST the body file BENCH_BODY; an answer is good if it is 200 and holds BENCH_EXPECT
-- occurrences of BENCH_FIELD (1 for single items, 100 for batches). Prints "Bad responses: N".
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_TOKEN"))
local f = assert(io.open(assert(os.getenv("BENCH_BODY")), "rb")); wrk.body = f:read("*a"); f:close()
local field = '"' .. assert(os.getenv("BENCH_FIELD")) .. '":'
local expect = tonumber(assert(os.getenv("BENCH_EXPECT")))
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  local n, pos = 0, 1
  while true do
    local s = body:find(field, pos, true)
    if not s then break end
    n, pos = n + 1, s + 1
  end
  if status ~= 200 or n ~= expect then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("Bad responses: %d\n", n))
end
EOF

run() { # name path body field items
  echo "wrk $1 ..." >&2
  BENCH_TOKEN=$TOKEN BENCH_BODY=$OUT/$3 BENCH_FIELD=$4 BENCH_EXPECT=$5 \
    wrk -t$THREADS -c"$CONNS" -d"$DUR" --latency -s "$OUT/post.lua" "$URL/$2" > "$OUT/$1.txt"
  # Let the audit pipeline catch up, so each run starts with an empty queue.
  sleep 5
}
run encrypt-1 encrypt/bench encrypt-1.json ciphertext 1
run encrypt-100 encrypt/bench encrypt-100.json ciphertext 100
run decrypt-1 decrypt/bench decrypt-1.json plaintext 1
run decrypt-100 decrypt/bench decrypt-100.json plaintext 100
run tokenize-100 tokenize/cards tokenize-100.json token 100

echo "openssl speed ..." >&2
openssl speed -evp aes-256-gcm -seconds 3 -bytes 256 > "$OUT/openssl.txt" 2>/dev/null
echo "library bench ..." >&2
"$CARGO_TARGET_DIR/release/examples/bench" 2 > "$OUT/library.txt"

python3 - "$OUT" "$DUR" "$CONNS" "$THREADS" <<'EOF'
import re, sys
out, dur, conns, threads = sys.argv[1:5]
def wrk(name, items):
    t = open(f"{out}/{name}.txt").read()
    total = int(re.search(r"(\d+) requests in", t).group(1))
    secs = float(re.search(r"requests in ([\d.]+)s", t).group(1))
    bad = int(re.search(r"Bad responses: (\d+)", t).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    withheld = int(m.group(1)) if m else 0
    # A non-2xx answer is a result the vault withheld because the audit queue was full (503
    # audit_unavailable: nothing happens unaudited); a 200 with a wrong body fails the run.
    if bad > withheld:
        sys.exit(f"{name}: {bad - withheld} answers with status 200 but the wrong content")
    ok = (total - withheld) / secs
    p50 = re.search(r"50%\s+([\d.]+\w+)", t).group(1)
    p99 = re.search(r"99%\s+([\d.]+\w+)", t).group(1)
    return ok, ok * items, p50, p99, withheld
o = open(f"{out}/openssl.txt").read()
m = re.search(r"^(?:AES-256-GCM|aes-256-gcm)\s+([\d.]+)k", o, re.M | re.I)
ossl = float(m.group(1)) * 1000 / 256 if m else None
lib = open(f"{out}/library.txt").read()
def libops(pat):
    m = re.search(pat + r"\s+([\d]+) ops/s", lib)
    return float(m.group(1)) if m else None
print(f"Vault throughput ({dur} per run, wrk -t{threads} -c{conns}, server with TOKIO_WORKER_THREADS={threads}, "
      "256-byte plaintexts, AES-256-GCM key, admin token; wrk shares the machine's cores)\n")
print("| case | answered requests/s | operations/s | p50 | p99 | withheld (503: audit queue full) |")
print("|---|---:|---:|---:|---:|---:|")
for name, label, items in [("encrypt-1", "HTTP encrypt, single", 1), ("encrypt-100", "HTTP encrypt, batch of 100", 100),
                           ("decrypt-1", "HTTP decrypt, single", 1), ("decrypt-100", "HTTP decrypt, batch of 100", 100),
                           ("tokenize-100", "HTTP FF1 card tokenize, batch of 100", 100)]:
    rps, ops, p50, p99, withheld = wrk(name, items)
    print(f"| {label} | {rps:,.0f} | {ops:,.0f} | {p50} | {p99} | {withheld:,} |")
for label, pat in [("library encrypt 256 B (no HTTP, 1 thread)", r"aes256-gcm encrypt 256 B"),
                   ("library decrypt 256 B (no HTTP, 1 thread)", r"aes256-gcm decrypt 256 B"),
                   ("library FF1 card tokens (no HTTP, 1 thread)", r"ff1[^\n]*card[^\n]*?")]:
    v = libops(pat)
    print(f"| {label} | | {v:,.0f} | | | |" if v else f"| {label} | | (not found) | | | |")
if ossl:
    print(f"| openssl speed -evp aes-256-gcm, 256-byte blocks (1 core) | | {ossl:,.0f} | | | |")
import json
dropped = 0
for line in open(f"{out}/server.log"):
    try:
        dropped += int(json.loads(line).get("dropped", 0))
    except ValueError:
        pass
print(f"\nAudit events dropped by the server's in-process audit queue during the runs: {dropped:,} "
      "(one event per API call; a result whose event the queue cannot take is withheld instead).")
print("Raw output: bench/out/vault/ (wrk, openssl, library bench, server log).")
EOF
