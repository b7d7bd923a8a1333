#!/usr/bin/env bash
# User-space instructions per proxied request in the gateway, counted by valgrind's callgrind:
# unlike wall-clock timings on this shared machine, unaffected by what else runs. The gateway (no
# filters, 2 workers, nginx backend) runs under callgrind twice, serving N1 and then N2 keep-alive
# requests from curl (one connection, URL globbing); the difference divided by N2 - N1 is the cost
# of one request, start-up and shutdown cancel out. Kernel time (socket I/O) is not counted.
# Layout changes move counts by ~1-2 % (hash seeds), so smaller differences between builds are noise.
# HTTPS is HTTP/1.1 over TLS 1.3, as wrk sends it. The last rows are nginx as the same proxy
# (one process, `master_process off`), counted the same way, for reference.
# Usage: bench/proxy-icount.sh [BIN...]  (default: the release build)  SCHEMES="http https"  SKIP_NGINX=1 skips nginx (not NGINX=: nginx reads that variable)
#        Needs (apt): valgrind nginx-light curl
set -euo pipefail
cd "$(dirname "$0")/.."
for t in valgrind nginx curl openssl; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
BINS=("$@"); [ ${#BINS[@]} -gt 0 ] || { cargo build --release -q; BINS=("$CARGO_TARGET_DIR/release/palisade"); }
N1=${N1:-200}; N2=${N2:-1200}; BACKEND=18000; HTTP=18501; HTTPS=18502; NGX_HTTP=18503; NGX_HTTPS=18504
D=$(mktemp -d); BE=
cleanup() { [ -n "$BE" ] && kill "$BE" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$D/key.pem" -out "$D/cert.pem" 2>/dev/null
cat > "$D/be.conf" <<CONF
worker_processes 1; daemon off; pid $D/be.pid; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"service":"orders","ok":true}'; } } }
CONF
nginx -c "$D/be.conf" -p "$D" & BE=$!
cat > "$D/gw.yaml" <<CONF
workers: 2
listeners:
  http: { address: "127.0.0.1:$HTTP" }
  https:
    address: "127.0.0.1:$HTTPS"
    certificates: [{ cert: cert.pem, key: "file:key.pem" }]
admin: { address: "127.0.0.1:18509" }
access_log: { enabled: false }
upstreams:
  be: { endpoints: ["127.0.0.1:$BACKEND"] }
routes:
  - { name: be, upstream: be }
CONF
cat > "$D/nginx.conf" <<CONF
master_process off; worker_processes 1; daemon off; pid $D/ngx.pid; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$BACKEND; keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX_HTTP; listen 127.0.0.1:$NGX_HTTPS ssl;
    ssl_certificate $D/cert.pem; ssl_certificate_key $D/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
CONF
count() { # bin scheme n
  local port=$HTTP; [ "$2" = https ] && port=$HTTPS
  if [ "$1" = nginx ]; then
    port=$NGX_HTTP; [ "$2" = https ] && port=$NGX_HTTPS
    valgrind --tool=callgrind --callgrind-out-file="$D/cg" nginx -c "$D/nginx.conf" -p "$D" > /dev/null 2> "$D/vg.txt" &
  else
    PALISADE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$D/cg" "$1" gateway --config "$D/gw.yaml" \
      > /dev/null 2> "$D/vg.txt" &
  fi
  local pid=$!
  local up=0
  for _ in $(seq 300); do curl -fsSk -o /dev/null "$2://127.0.0.1:$port/" 2>/dev/null && { up=1; break; }; sleep 0.2; done
  [ $up = 1 ] || { echo "$1 did not answer on $2://127.0.0.1:$port (port taken?): $(tail -3 "$D/vg.txt")" >&2; exit 1; }
  curl -fsSk --http1.1 -o /dev/null "$2://127.0.0.1:$port/orders?[1-$3]"
  if [ "$1" = nginx ]; then kill -QUIT $pid; else kill -TERM $pid; fi
  wait $pid 2>/dev/null || true
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$D/vg.txt" | tail -1
}
[ "${SKIP_NGINX:-}" = 1 ] || BINS+=(nginx)
echo "| binary | scheme | user-space instructions per request |"
echo "|---|---|---:|"
for s in ${SCHEMES:-http https}; do
  for b in "${BINS[@]}"; do
    a=$(count "$b" "$s" "$N1"); c=$(count "$b" "$s" "$N2")
    python3 -c "import sys; print(f'| {sys.argv[1]} | {sys.argv[2]} | {(int(sys.argv[4]) - int(sys.argv[3])) / (int(sys.argv[6]) - int(sys.argv[5])):,.0f} |')" \
      "$b" "$s" "$a" "$c" "$N1" "$N2"
  done
done
