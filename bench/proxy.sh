#!/usr/bin/env bash
# Reverse-proxy benchmark: wrk on loopback against the backend directly, nginx, haproxy,
# caddy and `palisade gateway`, over HTTP and HTTPS (keep-alive), same backend, same
# certificate, 2 workers/threads each. Writes raw wrk output to bench/out/ and a Markdown
# table to stdout. Usage: bench/proxy.sh [runs=3] [duration=10s] [connections=64]
# Needs (apt): wrk nginx-light haproxy caddy.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; DUR=${2:-10s}; CONNS=${3:-64}; THREADS=2
OUT=bench/out; mkdir -p "$OUT"; rm -f "$OUT"/*.txt
for t in wrk nginx haproxy caddy openssl; do command -v $t >/dev/null || { echo "missing $t (apt install wrk nginx-light haproxy caddy)"; exit 1; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
cargo build --release -q
PALISADE=$CARGO_TARGET_DIR/release/palisade

BACKEND=18000
declare -A HTTP=([nginx]=18101 [haproxy]=18102 [caddy]=18103 [palisade]=18104)
declare -A HTTPS=([nginx]=18201 [haproxy]=18202 [caddy]=18203 [palisade]=18204)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
cat "$OUT/cert.pem" "$OUT/key.pem" > "$OUT/haproxy.pem"

# Backend: nginx returning a small JSON body (one worker, so it is the same for everyone).
cat > "$OUT/backend.conf" <<CONF
worker_processes 1; daemon off; pid $PWD/$OUT/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"service":"orders","ok":true}'; } } }
CONF
nginx -c "$PWD/$OUT/backend.conf" -p "$PWD/$OUT" & PIDS+=($!)

cat > "$OUT/nginx.conf" <<CONF
worker_processes $THREADS; daemon off; pid $PWD/$OUT/nginx.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$BACKEND; keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:${HTTP[nginx]}; listen 127.0.0.1:${HTTPS[nginx]} ssl http2;
    ssl_certificate $PWD/$OUT/cert.pem; ssl_certificate_key $PWD/$OUT/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
CONF
nginx -c "$PWD/$OUT/nginx.conf" -p "$PWD/$OUT" & PIDS+=($!)

cat > "$OUT/haproxy.cfg" <<CONF
global
  nbthread $THREADS
  maxconn 8192
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:${HTTP[haproxy]}
  bind 127.0.0.1:${HTTPS[haproxy]} ssl crt $PWD/$OUT/haproxy.pem alpn h2,http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND
CONF
haproxy -f "$OUT/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)

cat > "$OUT/Caddyfile" <<CONF
{
  admin off
  auto_https off
}
http://127.0.0.1:${HTTP[caddy]} {
  reverse_proxy 127.0.0.1:$BACKEND
}
https://127.0.0.1:${HTTPS[caddy]} {
  tls $PWD/$OUT/cert.pem $PWD/$OUT/key.pem
  reverse_proxy 127.0.0.1:$BACKEND
}
CONF
GOMAXPROCS=$THREADS caddy run --config "$OUT/Caddyfile" --adapter caddyfile >/dev/null 2>&1 & PIDS+=($!)

cat > "$OUT/palisade.yaml" <<CONF
listeners:
  http: { address: "127.0.0.1:${HTTP[palisade]}" }
  https:
    address: "127.0.0.1:${HTTPS[palisade]}"
    certificates: [{ cert: cert.pem, key: "file:key.pem" }]
admin: { address: "127.0.0.1:18900" }
access_log: { enabled: false }
upstreams:
  be: { endpoints: ["127.0.0.1:$BACKEND"] }
routes:
  - { name: be, upstream: be }
CONF
PALISADE_LOG=warn TOKIO_WORKER_THREADS=$THREADS "$PALISADE" gateway --config "$OUT/palisade.yaml" >/dev/null & PIDS+=($!)

sleep 2
for p in $BACKEND ${HTTP[@]}; do curl -fsS -o /dev/null "http://127.0.0.1:$p/" || { echo "port $p not answering"; exit 1; }; done
for p in ${HTTPS[@]}; do curl -fsSk -o /dev/null "https://127.0.0.1:$p/" || { echo "port $p not answering (tls)"; exit 1; }; done

run() { # name scheme port run
  wrk -t$THREADS -c$CONNS -d$DUR --latency "$2://127.0.0.1:$3/orders" > "$OUT/$1-$2-$4.txt" 2>&1 || true
}
for r in $(seq 1 "$RUNS"); do
  run backend http $BACKEND "$r"
  for name in nginx haproxy caddy palisade; do
    run "$name" http "${HTTP[$name]}" "$r"
    run "$name" https "${HTTPS[$name]}" "$r"
  done
done

# Summarise: median of runs for req/s, p50, p99; ratio to nginx per run, then median.
python3 - "$OUT" "$RUNS" <<'PY'
import re, sys, statistics, glob, os
out, runs = sys.argv[1], int(sys.argv[2])
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
def parse(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", t).group(1)); p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rps, p50, p99, int(errs.group(1)) if errs else 0
print("| target | proto | req/s (median) | p50 ms | p99 ms | ratio to nginx req/s (per run) | non-2xx |")
print("|---|---|---:|---:|---:|---|---:|")
for scheme in ["http", "https"]:
    for name in ["backend", "nginx", "haproxy", "caddy", "palisade"]:
        if name == "backend" and scheme == "https": continue
        rows = [parse(f"{out}/{name}-{scheme}-{r}.txt") for r in range(1, runs + 1)]
        ng = [parse(f"{out}/nginx-{scheme}-{r}.txt")[0] for r in range(1, runs + 1)]
        ratios = [row[0] / n for row, n in zip(rows, ng)]
        print(f"| {name} | {scheme} | {statistics.median(r[0] for r in rows):,.0f} | {statistics.median(r[1] for r in rows):.2f} | "
              f"{statistics.median(r[2] for r in rows):.2f} | {' / '.join(f'{x:.2f}' for x in ratios)} | {sum(r[3] for r in rows)} |")
PY
