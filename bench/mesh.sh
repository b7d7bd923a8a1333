#!/usr/bin/env bash
# Mesh benchmark: at a constant request rate (oha -q), latency app -> app directly, through two
# palisade sidecars (mTLS with SVIDs from `palisade server`), and through two nginx instances set up
# as an mTLS proxy pair (the peer). Also the sidecars' RSS and CPU under that load. Same backend,
# one run after the other, repeated RUNS times. Prints a Markdown table; raw output in bench/out/mesh-*.
# Sidecars run twice: from the `--profile sidecar` build (size-optimized: the deployment build for
# sidecars) and from the `--release` build.
# Usage: bench/mesh.sh [runs=3] [duration=10s] [rate=1000]
# Needs (apt): nginx-light openssl curl python3; oha from crates.io (cargo install --locked oha).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; DUR=${2:-10s}; RATE=${3:-1000}; CONNS=16
OUT=bench/out; mkdir -p "$OUT"; rm -f "$OUT"/mesh-*
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[ -x "$OHA" ] || { echo "==> installing oha (constant-rate load generator) from crates.io"; cargo install --locked oha; OHA=$HOME/.cargo/bin/oha; }
for t in nginx openssl curl python3; do command -v $t >/dev/null || { echo "missing $t (apt install nginx-light openssl curl python3)"; exit 1; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
# SKIP_BUILD=1 uses the binaries already built (the sidecar profile's fat LTO takes ~12 min on 2 cores).
if [ -z "${SKIP_BUILD:-}" ]; then cargo build --release -q; cargo build --profile sidecar -q -p palisade; fi
PALISADE=$CARGO_TARGET_DIR/release/palisade
SIDECAR=$CARGO_TARGET_DIR/sidecar/palisade
APP=18100; CA=18400; PS=18443; PC=18001; PS2=18444; PC2=18003; NS=18543; NC=18002
PIDS=(); DATA=$(mktemp -d)
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# The app: nginx answering a small JSON document.
cat > "$DATA/app.conf" <<CONF
worker_processes 1; daemon off; pid $DATA/app.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$APP; location / { default_type application/json; return 200 '{"service":"orders","ok":true}'; } } }
CONF
nginx -c "$DATA/app.conf" -p "$DATA" & PIDS+=($!)

# Palisade: the CA, then a server-side and a client-side sidecar.
PALISADE_LOG=warn "$PALISADE" server --listen "127.0.0.1:$CA" --data-dir "$DATA/server" --trust-domain bench.local >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$CA/ca/v1/bundle" 2>/dev/null && break; sleep 0.1; done
cat > "$DATA/mesh.yaml" <<'YAML'
trust_domain: bench.local
allow:
  - { from: bench/client, to: bench/app, methods: [GET] }
YAML
# A pair of sidecars (client side -> server side -> app) from one build: sidecars TAG BINARY PORT_S PORT_C.
sidecars() {
  local tag=$1 bin=$2 ps=$3 pc=$4
  for sa in client app; do
    "$PALISADE" ca --data-dir "$DATA/server" --trust-domain bench.local join-token --ns bench --service $sa |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$DATA/$tag-$sa.token"
  done
  cat > "$DATA/$tag-app-sidecar.yaml" <<CONF
workers: 1
mesh: { server: "http://127.0.0.1:$CA", trust_domain: bench.local, join_token: "file:$tag-app.token" }
listeners: { mesh: { address: "127.0.0.1:$ps" } }
admin: { address: "127.0.0.1:$((ps + 500))" }
access_log: { enabled: false }
authorization: { mesh_policy: mesh.yaml }
upstreams: { app: { endpoints: ["127.0.0.1:$APP"] } }
routes:
  - { name: inbound, match: { listeners: [mesh] }, upstream: app, authn: { methods: [mtls] }, authz: {} }
CONF
  cat > "$DATA/$tag-client-sidecar.yaml" <<CONF
workers: 1
mesh: { server: "http://127.0.0.1:$CA", trust_domain: bench.local, join_token: "file:$tag-client.token" }
listeners: { local: [{ name: to-app, address: "127.0.0.1:$pc" }] }
admin: { address: "127.0.0.1:$((pc + 500))" }
access_log: { enabled: false }
upstreams: { app: { endpoints: ["127.0.0.1:$ps"], mesh: true, identity: "spiffe://bench.local/ns/bench/sa/app" } }
routes:
  - { name: to-app, match: { listeners: [to-app] }, upstream: app }
CONF
  PALISADE_LOG=warn "$bin" sidecar --config "$DATA/$tag-app-sidecar.yaml" >/dev/null & PIDS+=($!); SIDE_S=$!
  PALISADE_LOG=warn "$bin" sidecar --config "$DATA/$tag-client-sidecar.yaml" >/dev/null & PIDS+=($!); SIDE_C=$!
}
# The deployment build for sidecars (`--profile sidecar`: optimized for size), and the release build.
sidecars small "$SIDECAR" "$PS" "$PC"; SMALL_S=$SIDE_S; SMALL_C=$SIDE_C
sidecars release "$PALISADE" "$PS2" "$PC2"; REL_S=$SIDE_S; REL_C=$SIDE_C

# nginx pair: the same mTLS shape with an openssl CA (nginx verifies names, so the certs carry
# DNS:localhost besides the SPIFFE URI).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$DATA/ca.key" -out "$DATA/ca.pem" 2>/dev/null
for sa in client app; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$sa" \
    -keyout "$DATA/$sa.key" -out "$DATA/$sa.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,URI:spiffe://bench.local/ns/bench/sa/%s\nextendedKeyUsage=serverAuth,clientAuth\n' $sa > "$DATA/$sa.ext"
  openssl x509 -req -in "$DATA/$sa.csr" -CA "$DATA/ca.pem" -CAkey "$DATA/ca.key" -CAcreateserial -days 2 \
    -extfile "$DATA/$sa.ext" -out "$DATA/$sa.pem" 2>/dev/null
done
cat > "$DATA/nginx-s.conf" <<CONF
worker_processes 1; daemon off; pid $DATA/ns.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$APP; keepalive 64; }
  server { listen 127.0.0.1:$NS ssl; ssl_certificate $DATA/app.pem; ssl_certificate_key $DATA/app.key;
    ssl_protocols TLSv1.3; ssl_verify_client on; ssl_client_certificate $DATA/ca.pem;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$DATA/nginx-c.conf" <<CONF
worker_processes 1; daemon off; pid $DATA/nc.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream peer { server 127.0.0.1:$NS; keepalive 64; }
  server { listen 127.0.0.1:$NC;
    location / { proxy_pass https://peer; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $DATA/client.pem; proxy_ssl_certificate_key $DATA/client.key;
      proxy_ssl_trusted_certificate $DATA/ca.pem; proxy_ssl_verify on; proxy_ssl_name localhost;
      proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on; } } }
CONF
nginx -c "$DATA/nginx-s.conf" -p "$DATA" & PIDS+=($!); NGX_S=$!
nginx -c "$DATA/nginx-c.conf" -p "$DATA" & PIDS+=($!); NGX_C=$!

for url in "http://127.0.0.1:$APP/" "http://127.0.0.1:$PC/" "http://127.0.0.1:$PC2/" "http://127.0.0.1:$NC/"; do
  for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] && break; sleep 0.1; done
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] || { echo "$url does not answer 200"; exit 1; }
done

# CPU seconds (utime + stime) of a process and its children, and its RSS in KiB (with nginx workers).
cpu() { python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK"); total = 0
for pid in sys.argv[1:]:
    pids = [pid] + [c for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    for p in pids:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
print(total / tick)
PY
}
# Per proxy: RSS and its anonymous part (private memory; the rest is the executable's pages, shared
# with every other process running the same binary), in KiB, as "rss:anon".
rss() { for pid in "$@"; do local t=0 a=0; for p in $pid $(cat /proc/$pid/task/$pid/children); do
  t=$((t + $(awk '/^Rss:/ {print $2}' /proc/$p/smaps_rollup))); a=$((a + $(awk '/^Anonymous:/ {print $2}' /proc/$p/smaps_rollup)));
  done; echo -n "$t:$a "; done; }

run() { # name url run pids...
  local name=$1 url=$2 r=$3; shift 3
  local before; before=$( [ $# -gt 0 ] && cpu "$@" || echo 0)
  "$OHA" -q "$RATE" -z "$DUR" -c "$CONNS" --no-tui --output-format json "$url" > "$OUT/mesh-$name-$r.json"
  local after; after=$( [ $# -gt 0 ] && cpu "$@" || echo 0)
  echo "$before $after $( [ $# -gt 0 ] && rss "$@" || echo 0)" > "$OUT/mesh-$name-$r.res"
}
for r in $(seq 1 "$RUNS"); do
  run direct "http://127.0.0.1:$APP/" "$r"
  run palisade "http://127.0.0.1:$PC/" "$r" "$SMALL_S" "$SMALL_C"
  run palisade-release "http://127.0.0.1:$PC2/" "$r" "$REL_S" "$REL_C"
  run nginx "http://127.0.0.1:$NC/" "$r" "$NGX_S" "$NGX_C"
done

python3 - "$OUT" "$RUNS" "$DUR" "$RATE" <<'PY'
import json, sys, statistics
out, runs, dur, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
secs = float(dur.rstrip("s"))
def load(name, r):
    j = json.load(open(f"{out}/mesh-{name}-{r}.json"))
    lat = j["latencyPercentiles"]
    codes = j.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0)); bad = sum(int(v) for k, v in codes.items() if k != "200")
    # oha cancels the requests in flight when the duration ends ("aborted due to deadline"): not failures.
    bad += sum(int(v) for k, v in j.get("errorDistribution", {}).items() if k != "aborted due to deadline")
    b, a, *rss = open(f"{out}/mesh-{name}-{r}.res").read().split()
    mem = [tuple(int(v) for v in (x.split(":") + ["0"])[:2]) for x in rss] or [(0, 0)]
    top = max(mem)
    return lat["p50"] * 1000, lat["p99"] * 1000, j["summary"]["requestsPerSec"], ok, bad, (float(a) - float(b)) / secs * 100, top[0] / 1024, top[1] / 1024
rows = {n: [load(n, r) for r in range(1, runs + 1)] for n in ("direct", "palisade", "palisade-release", "nginx")}
names = {"direct": "app -> app directly", "palisade": "through two palisade sidecars (mTLS, SVIDs, mesh policy; `--profile sidecar` build)",
         "palisade-release": "through two palisade sidecars (the same, `--release` build)",
         "nginx": "through two nginx (mTLS proxy pair)"}
print(f"| path ({rate} req/s for {dur}, {runs} runs) | p50 ms | p99 ms (per run) | added p99 ms vs direct (per run) | both proxies' CPU % | largest proxy RSS MiB (anonymous part; nginx: master + worker) | failed |")
print("|---|---:|---|---|---:|---:|---:|")
for n in ("direct", "palisade", "palisade-release", "nginx"):
    rs = rows[n]
    p50 = statistics.median(x[0] for x in rs)
    p99s = " / ".join(f"{x[1]:.2f}" for x in rs)
    added = " / ".join(f"{x[1] - d[1]:+.2f}" for x, d in zip(rs, rows["direct"])) if n != "direct" else "-"
    cpu = statistics.median(x[5] for x in rs) if n != "direct" else 0
    rss = max(x[6] for x in rs) if n != "direct" else 0
    anon = max(x[7] for x in rs) if n != "direct" else 0
    bad = sum(x[4] for x in rs)
    print(f"| {names[n]} | {p50:.2f} | {p99s} | {added} | {cpu:.1f} | {rss:.1f} ({anon:.1f}) | {bad} |")
PY
