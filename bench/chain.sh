#!/usr/bin/env bash
# Security-chain benchmark: wrk over HTTPS (keep-alive) against nginx as a plain reverse proxy and
# against `palisade gateway` routes that add one security filter at a time, up to the full chain
# (JWT ES256 from our idp + Cedar + GCRA rate limit + security headers + audit file). Same
# backend, same certificate, 2 workers each, one run after the other, repeated RUNS times.
# Prints a Markdown table; raw wrk output in bench/out/chain-*.txt.
# Usage: bench/chain.sh [runs=3] [duration=8s] [connections=64]     Needs (apt): wrk nginx-light
# SKIP_BUILD=1 uses the release binary as built (PALISADE_BIN=path: that binary); PERF_OUT=FILE records
# a perf profile of the gateway during the first full-chain run (PERF_ROUTE=name: that route's). ICOUNT=N instead runs the gateway under
# valgrind's callgrind and prints the user-space instructions per request of each route (N HTTP/1.1 requests on
# one keep-alive connection each, after one warm-up request): repeatable where req/s is not, but
# kernel time (socket I/O) is not counted and there is no nginx column. ICOUNT_PROFILES=DIR keeps each
# route's callgrind profile there (callgrind_annotate DIR/callgrind.full).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; DUR=${2:-8s}; CONNS=${3:-64}; THREADS=2
OUT=bench/out; mkdir -p "$OUT"; rm -f "$OUT"/chain-*.txt "$OUT"/chain-audit.jsonl
for t in wrk nginx openssl curl python3; do command -v $t >/dev/null || { echo "missing $t (apt install wrk nginx-light)"; exit 1; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -q
PALISADE=${PALISADE_BIN:-$CARGO_TARGET_DIR/release/palisade}
BACKEND=18000; NGINX=18301; GW=18302; IDP=18310
PIDS=(); DATA=$(mktemp -d)
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null

cat > "$OUT/chain-backend.conf" <<CONF
worker_processes 1; daemon off; pid $PWD/$OUT/chain-backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"service":"orders","ok":true}'; } } }
CONF
nginx -c "$PWD/$OUT/chain-backend.conf" -p "$PWD/$OUT" & PIDS+=($!)
cat > "$OUT/chain-nginx.conf" <<CONF
worker_processes $THREADS; daemon off; pid $PWD/$OUT/chain-nginx.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$BACKEND; keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGINX ssl; ssl_certificate $PWD/$OUT/cert.pem; ssl_certificate_key $PWD/$OUT/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
CONF
nginx -c "$PWD/$OUT/chain-nginx.conf" -p "$PWD/$OUT" & PIDS+=($!); NGINXPID=$!

# Our identity provider issues the ES256 token every JWT route verifies.
"$PALISADE" idp --data-dir "$DATA" client add bench --scope "orders:read" --audience orders > "$DATA/client.json"
SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_secret"])' "$DATA/client.json")
PALISADE_LOG=warn "$PALISADE" server --listen "127.0.0.1:$IDP" --data-dir "$DATA" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$IDP/jwks.json" 2>/dev/null && break; sleep 0.1; done
TOKEN=$(curl -fsS -u "bench:$SECRET" -d grant_type=client_credentials -d scope=orders:read "http://127.0.0.1:$IDP/oauth2/token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

cat > "$OUT/chain-policy.cedar" <<'CEDAR'
@id("read") permit (principal, action == Action::"GET", resource) when { context.scopes.contains("orders:read") };
CEDAR
cat > "$OUT/chain-palisade.yaml" <<CONF
workers: $THREADS
listeners:
  https:
    address: "127.0.0.1:$GW"
    certificates: [{ cert: cert.pem, key: "file:key.pem" }]
admin: { address: "127.0.0.1:18901" }
access_log: { enabled: false }
audit: { file: chain-audit.jsonl }
authentication:
  jwt_issuers: [{ issuer: "http://127.0.0.1:$IDP", audiences: [orders], algorithms: [ES256] }]
authorization: { policies: [chain-policy.cedar] }
security_headers: { enabled: false }
upstreams:
  be: { endpoints: ["127.0.0.1:$BACKEND"] }
routes:
  - { name: plain, match: { path: { prefix: /plain } }, upstream: be }
  - name: ratelimit
    match: { path: { prefix: /ratelimit } }
    upstream: be
    rate_limit: [{ limit: 1000000, period: 1s, burst: 1000, key: [client_ip] }]
  - { name: jwt, match: { path: { prefix: /jwt } }, upstream: be, authn: { methods: [jwt] } }
  - { name: cedar, match: { path: { prefix: /cedar } }, upstream: be, authn: { methods: [jwt] }, authz: {} }
  - name: full
    match: { path: { prefix: /full } }
    upstream: be
    authn: { methods: [jwt] }
    authz: {}
    rate_limit: [{ limit: 1000000, period: 1s, burst: 1000, key: [client_id] }]
    security_headers: {}
CONF
if [ -n "${ICOUNT:-}" ]; then
  command -v valgrind >/dev/null || { echo "missing valgrind (apt install valgrind)"; exit 1; }
  PALISADE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$DATA/cg" "$PALISADE" gateway \
    --config "$OUT/chain-palisade.yaml" >/dev/null 2>"$DATA/vg.txt" & PIDS+=($!)
  for _ in $(seq 300); do curl -fsSk -o /dev/null "https://127.0.0.1:$GW/plain" 2>/dev/null && break; sleep 0.2; done
else
  PALISADE_LOG=warn "$PALISADE" gateway --config "$OUT/chain-palisade.yaml" >/dev/null & PIDS+=($!)
  sleep 2
fi
curl -fsSk -o /dev/null "https://127.0.0.1:$NGINX/" || { echo "nginx not answering"; exit 1; }
for p in plain ratelimit jwt cedar full; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$GW/$p")
  [ "$code" = 200 ] || { echo "palisade /$p answered $code"; exit 1; }
done

GWPID=${PIDS[-1]}
if [ -n "${ICOUNT:-}" ]; then
  echo "| route (HTTPS, one keep-alive connection) | user-space instructions per request |"
  echo "|---|---:|"
  for p in plain ratelimit jwt cedar full; do
    callgrind_control -z "$GWPID" >/dev/null 2>&1
    curl -fsSk --http1.1 -o /dev/null -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$GW/$p?[0-$ICOUNT]"
    rm -f "$DATA"/cg.*; callgrind_control -d "$GWPID" >/dev/null 2>&1
    total=$(sed -n 's/^summary: *//p' "$DATA"/cg.* | awk '{s += $1} END {print s}')
    [ -z "${ICOUNT_PROFILES:-}" ] || { mkdir -p "$ICOUNT_PROFILES"; cp "$DATA"/cg.* "$ICOUNT_PROFILES/callgrind.$p"; }
    python3 -c "import sys; print(f'| {sys.argv[1]} | {int(sys.argv[2]) / (int(sys.argv[3]) + 1):,.0f} |')" "$p" "$total" "$ICOUNT"
  done
  exit 0
fi
# The user + system CPU in clock ticks of the gateway (all its threads), or of nginx's workers
# (the master's children), to report CPU per request per target.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_ticks() { local t=0 w; for w in $(pgrep -P "$NGINXPID"); do t=$((t + $(cpu_ticks "$w"))); done; echo $t; }
run() { # name port path run
  # PERF_OUT=file: also record a perf profile of the gateway during the first run of the full chain
  # (PERF_ROUTE=plain|ratelimit|jwt|cedar: of that route).
  local perf_pid=
  if [ -n "${PERF_OUT:-}" ] && [ "$1" = "${PERF_ROUTE:-full}" ] && [ "$4" = 1 ] && command -v perf >/dev/null; then
    perf record -F 2000 -g -p "$GWPID" -o "$PERF_OUT" -- sleep "${DUR%s}" >/dev/null 2>&1 & perf_pid=$!
  fi
  local ticks="cpu_ticks $GWPID"; [ "$1" != nginx ] || ticks=nginx_ticks
  local before; before=$($ticks)
  wrk -t$THREADS -c$CONNS -d$DUR --latency -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$2$3" \
    > "$OUT/chain-$1-$4.txt" 2>&1 || true
  echo $(( $($ticks) - before )) > "$OUT/chain-$1-$4.cpu"
  [ -z "$perf_pid" ] || wait "$perf_pid" || true
}
for r in $(seq 1 "$RUNS"); do
  run nginx $NGINX /orders "$r"
  for p in plain ratelimit jwt cedar full; do run "$p" $GW "/$p" "$r"; done
done

python3 - "$OUT" "$RUNS" "$(getconf CLK_TCK)" <<'PY'
import os, re, sys, statistics
out, runs, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
def parse(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    reqs = int(re.search(r"(\d+) requests in", t).group(1))
    cpu = path[:-4] + ".cpu"
    us = int(open(cpu).read()) * 1e6 / hz / reqs if os.path.exists(cpu) else None
    return rps, p99, int(errs.group(1)) if errs else 0, us
names = {"nginx": "nginx, plain reverse proxy", "plain": "palisade, no filters", "ratelimit": "palisade + rate limit",
         "jwt": "palisade + JWT (ES256) + audit", "cedar": "palisade + JWT + Cedar + audit",
         "full": "palisade full chain (JWT + Cedar + rate limit + headers + audit)"}
print("| target (HTTPS) | req/s (median) | p99 ms (median) | ratio to nginx (per run) | proxy CPU µs/request (median) | non-2xx |")
print("|---|---:|---:|---|---:|---:|")
ng = [parse(f"{out}/chain-nginx-{r}.txt")[0] for r in range(1, runs + 1)]
for name in names:
    rows = [parse(f"{out}/chain-{name}-{r}.txt") for r in range(1, runs + 1)]
    ratios = [row[0] / n for row, n in zip(rows, ng)]
    cpus = [r[3] for r in rows if r[3] is not None]
    cpu = f"{statistics.median(cpus):.1f}" if cpus else "—"
    print(f"| {names[name]} | {statistics.median(r[0] for r in rows):,.0f} | {statistics.median(r[1] for r in rows):.2f} | "
          f"{' / '.join(f'{x:.2f}' for x in ratios)} | {cpu} | {sum(r[2] for r in rows)} |")
PY
