#!/usr/bin/env bash
# WAF benchmark: benign traffic (a GET with query parameters and browser-like headers, and a
# urlencoded POST, each the same request every time; and "GET varied": the same GET with a
# different search term, page and session cookie in every request, so that values a WAF
# remembers between requests (palisade's verdict memo) are only the ones real browsers repeat:
# headers, parameter names, the path) through
#   - palisade gateway without the WAF,
#   - palisade gateway with the OWASP CRS (crs/, v4) at paranoia level 1 in blocking mode,
#   - Apache httpd + mod_security2 (Debian) with the same CRS files, engine On, as the peer,
# all plain HTTP to the same nginx backend, one after the other, repeated RUNS times. Every
# response must be 200 (a false positive would show as non-2xx). Prints a Markdown table; raw
# wrk output in bench/out/waf-*.txt.
# Usage: bench/waf.sh [runs=3] [duration=8s] [connections=32]
# PERF=1 instead records where the gateway's CPU goes under load (perf, see below).
# ICOUNT=N instead runs the gateway under valgrind's callgrind (no Apache, no wrk) and prints the
# user-space instructions per request of each route and kind of traffic over N requests on one
# keep-alive connection: unlike req/s, not disturbed by what else runs on the machine.
# Needs (apt): wrk nginx-light apache2 libapache2-mod-security2
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; DUR=${2:-8s}; CONNS=${3:-32}; THREADS=2
OUT=$PWD/bench/out; mkdir -p "$OUT"; rm -f "$OUT"/waf-*.txt
if [ -n "${ICOUNT:-}" ]; then NEED="nginx curl python3 valgrind"; else NEED="wrk nginx apache2 curl python3"; fi
for t in $NEED; do command -v $t >/dev/null || { echo "missing $t (apt install wrk nginx-light apache2 libapache2-mod-security2)"; exit 1; }; done
[ -n "${ICOUNT:-}" ] || [ -f /usr/lib/apache2/modules/mod_security2.so ] || { echo "missing mod_security2 (apt install libapache2-mod-security2)"; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
# PALISADE_BIN=path: benchmark that binary instead of building this tree; SKIP_BUILD=1: the release binary as built.
if [ -n "${PALISADE_BIN:-}" ]; then PALISADE=$PALISADE_BIN; else
  [ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -q; PALISADE=$CARGO_TARGET_DIR/release/palisade; fi
BACKEND=18400; GW=18402; APACHE=18403
PIDS=(); WORK=$(mktemp -d); chmod 755 "$WORK"
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/apache.pid" ] && kill "$(cat "$WORK/apache.pid")" 2>/dev/null || true
  wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cp -r crs "$WORK/crs"; chmod -R a+rX "$WORK/crs"

cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_buffer_size 64k;
  server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"service":"orders","ok":true}'; } } }
CONF
nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)

# ICOUNT: N requests of one kind on one keep-alive connection, from Python's http.client (the varied
# GET changes its search term, page and session cookie like varied.lua below).
icount_run() { # gateway pid
  cat > "$WORK/client.py" <<'PY'
import http.client, sys
port, base, kind, n, first = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
c = http.client.HTTPConnection("127.0.0.1", port)
hdrs = {"Host": "localhost", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "Accept-Language": "en-US,en;q=0.5",
        "Cookie": "session=abc123; theme=dark"}
for k in range(first, first + n):
    if kind == "get":
        c.request("GET", base + "/search?q=running+shoes&category=sport&page=2&sort=price_asc&lang=en", headers=hdrs)
    elif kind == "post":
        body = "item=mouse&quantity=2&note=please+deliver+after+five&coupon=SPRING24&address=12+Main+Street"
        c.request("POST", base + "/orders", body=body,
                  headers=dict(hdrs, **{"Content-Type": "application/x-www-form-urlencoded"}))
    else:
        c.request("GET", base + f"/search?q=running+shoes+{k}&category=sport&page={k % 50}&sort=price_asc&lang=en",
                  headers=dict(hdrs, Cookie=f"session={k:012d}; theme=dark"))
    r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"{base} {kind}: {r.status}")
PY
  echo "| traffic (plain HTTP, one keep-alive connection) | no WAF | + CRS PL1 (block) | added by the WAF |"
  echo "|---|---:|---:|---:|"
  for kind in get post varied; do
    local row=()
    for route in nowaf waf; do
      # Warm-up (first requests fill caches and the memo) with values the measured requests do not repeat.
      python3 "$WORK/client.py" "$GW" "/$route" "$kind" 3 1000 || exit 1
      callgrind_control -z "$1" >/dev/null 2>&1
      python3 "$WORK/client.py" "$GW" "/$route" "$kind" "$ICOUNT" 700000000 || exit 1
      rm -f "$WORK"/cg.*; callgrind_control -d "$1" >/dev/null 2>&1
      row+=("$(sed -n 's/^summary: *//p' "$WORK"/cg.* | awk '{s += $1} END {print s}')")
      [ -z "${ICOUNT_PROFILES:-}" ] || { mkdir -p "$ICOUNT_PROFILES"; cp "$WORK"/cg.* "$ICOUNT_PROFILES/callgrind.$route-$kind"; }
    done
    python3 -c "import sys; a, b, n = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f'| {sys.argv[1]} | {a / n:,.0f} | {b / n:,.0f} | {(b - a) / n:,.0f} |')" "$kind" "${row[0]}" "${row[1]}" "$ICOUNT"
  done
}

cat > "$WORK/palisade.yaml" <<CONF
workers: $( [ -n "${ICOUNT:-}" ] && echo 1 || echo $THREADS )
listeners:
  http: { address: "127.0.0.1:$GW" }
admin: { address: "127.0.0.1:18904" }
access_log: { enabled: false }
audit: { file: audit.jsonl }
security_headers: { enabled: false }
waf:
  rules: [crs/crs-setup.conf.example, "crs/rules/*.conf"]
  paranoia_level: 1
upstreams:
  be: { endpoints: ["127.0.0.1:$BACKEND"] }
routes:
  - { name: nowaf, match: { path: { prefix: /nowaf } }, upstream: be }
  - { name: waf, match: { path: { prefix: /waf } }, upstream: be, waf: { mode: block } }
CONF
if [ -n "${ICOUNT:-}" ]; then
  PALISADE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg" "$PALISADE" gateway \
    --config "$WORK/palisade.yaml" >/dev/null 2>"$WORK/vg.txt" & PIDS+=($!)
  for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$GW/nowaf" 2>/dev/null && break; sleep 0.2; done
  icount_run "${PIDS[-1]}"; exit 0
fi
PALISADE_LOG=warn "$PALISADE" gateway --config "$WORK/palisade.yaml" >/dev/null & PIDS+=($!)

# Apache with the event MPM sized like the gateway (2 processes), mod_security2 and the same CRS.
MODS=/usr/lib/apache2/modules
cat > "$WORK/apache.conf" <<CONF
ServerRoot "$WORK"
ServerName localhost
Listen 127.0.0.1:$APACHE
PidFile $WORK/apache.pid
ErrorLog $WORK/apache-error.log
LogLevel warn
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule unique_id_module $MODS/mod_unique_id.so
LoadModule proxy_module $MODS/mod_proxy.so
LoadModule proxy_http_module $MODS/mod_proxy_http.so
LoadModule security2_module $MODS/mod_security2.so
$( [ "$(id -u)" = 0 ] && echo "User www-data
Group www-data" )
StartServers 2
ServerLimit 2
ThreadsPerChild 64
MaxRequestWorkers 128
KeepAlive On
MaxKeepAliveRequests 0
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 131072
SecAuditEngine Off
SecDataDir $WORK
SecTmpDir $WORK
Include $WORK/crs/crs-setup.conf.example
Include $WORK/crs/rules/*.conf
ProxyPass / http://127.0.0.1:$BACKEND/ keepalive=On
CONF
apache2 -f "$WORK/apache.conf" -k start
sleep 2

QS='/search?q=running+shoes&category=sport&page=2&sort=price_asc&lang=en'
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "item=mouse&quantity=2&note=please+deliver+after+five&coupon=SPRING24&address=12+Main+Street"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
# Every request different: a counter per wrk thread, started at a random point.
cat > "$WORK/varied.lua" <<'LUA'
local n = 0
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  n = math.random(1, 1000000000)
end
function request()
  n = n + 1
  local h = {}
  for k, v in pairs(wrk.headers) do h[k] = v end
  h["Cookie"] = string.format("session=%012d; theme=dark", n)
  -- wrk.path is the URL's path ("/waf/" for the gateway's WAF route), so routes stay the same.
  return wrk.format("GET", wrk.path .. "search?q=running+shoes+" .. n .. "&category=sport&page=" .. (n % 50)
    .. "&sort=price_asc&lang=en", h)
end
LUA
HDRS=(-H "Host: localhost" -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36"
      -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
      -H "Accept-Language: en-US,en;q=0.5" -H "Cookie: session=abc123; theme=dark")
check() { # url [curl args]
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' "${HDRS[@]}" "$@")
  [ "$code" = 200 ] || { echo "$* answered $code"; cat "$WORK/apache-error.log" 2>/dev/null | tail -5; exit 1; }
}
for base in "http://127.0.0.1:$GW/nowaf" "http://127.0.0.1:$GW/waf" "http://127.0.0.1:$APACHE"; do
  check "$base$QS"
  check -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data 'item=mouse&quantity=2' "$base/orders"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -G --data-urlencode "id=1' OR 1=1--" "http://127.0.0.1:$GW/waf/orders")
[ "$code" = 403 ] || { echo "palisade WAF did not block the SQL injection ($code)"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -G --data-urlencode "id=1' OR 1=1--" "http://127.0.0.1:$APACHE/orders")
[ "$code" = 403 ] || { echo "apache + mod_security2 did not block the SQL injection ($code)"; exit 1; }

one() { # name base kind run
  case $3 in
    get) wrk -t$THREADS -c"$CONNS" -d"$DUR" --latency "${HDRS[@]}" "$2$QS" > "$OUT/waf-$1-get-$4.txt" 2>&1 || true ;;
    post) wrk -t$THREADS -c"$CONNS" -d"$DUR" --latency "${HDRS[@]}" -s "$WORK/post.lua" "$2/orders" \
      > "$OUT/waf-$1-post-$4.txt" 2>&1 || true ;;
    varied) wrk -t$THREADS -c"$CONNS" -d"$DUR" --latency "${HDRS[@]}" -s "$WORK/varied.lua" "$2/" \
      > "$OUT/waf-$1-varied-$4.txt" 2>&1 || true ;;
  esac
}
# PERF=1: instead of the comparison, where the gateway's CPU goes under load (perf's cpu-clock sampling, which needs no
# hardware counters): per kind of traffic and route, a warm-up run and one wrk run of $DUR with `perf record` on the
# gateway; then the gateway's CPU per request and the symbols whose time per request differs most between the no-WAF
# and the WAF route (raw data in bench/out/perf-*.data).
if [ -n "${PERF:-}" ]; then
  command -v perf >/dev/null || { echo "missing perf (apt install linux-perf)"; exit 1; }
  GWPID=${PIDS[-1]}
  for kind in get post varied; do
    for route in nowaf waf; do
      one "$route" "http://127.0.0.1:$GW/$route" "$kind" warm
      perf record -q -e cpu-clock -F 1999 -g -o "$OUT/perf-$route-$kind.data" -p "$GWPID" -- sleep "$DUR" 2>/dev/null &
      one "$route" "http://127.0.0.1:$GW/$route" "$kind" perf
      wait $!
    done
  done
  python3 - "$OUT" "$DUR" <<'PY'
import collections, re, subprocess, sys
out, dur = sys.argv[1], float(sys.argv[2].rstrip("s"))
def per_request(route, kind):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{out}/waf-{route}-{kind}-perf.txt").read()).group(1))
    report = subprocess.run(["perf", "report", "-i", f"{out}/perf-{route}-{kind}.data", "--stdio", "--no-children",
                             "--sort", "sym", "-g", "none", "-F", "sample,sym"], capture_output=True, text=True).stdout
    us = collections.Counter()
    for line in report.splitlines():
        m = re.match(r"\s*(\d+)\s+\[.\]\s+(.*)", line)
        if m:
            us[m.group(2).strip()[:100]] += int(m.group(1)) / 1999 / (rps * dur) * 1e6
    return us
for kind in ("get", "post", "varied"):
    a, b = per_request("nowaf", kind), per_request("waf", kind)
    print(f"\n{kind}: gateway CPU per request {sum(a.values()):.1f} us without the WAF, {sum(b.values()):.1f} us with it\n")
    print("| symbol | us per request, WAF minus no WAF |\n|---|---:|")
    diff = {k: b[k] - a[k] for k in set(a) | set(b)}
    for k, v in sorted(diff.items(), key=lambda x: -abs(x[1]))[:20]:
        print(f"| `{k}` | {v:.2f} |")
PY
  exit 0
fi
# The machine's speed drifts (a shared VM): each ratio pairs a no-WAF and a WAF measurement taken back to back,
# in alternating order from run to run, so that drift does not favour either.
for r in $(seq 1 "$RUNS"); do
  for kind in get post varied; do
    if [ $((r % 2)) = 1 ]; then order="nowaf waf"; else order="waf nowaf"; fi
    for route in $order; do one "$route" "http://127.0.0.1:$GW/$route" "$kind" "$r"; done
  done
  for kind in get post varied; do one apache "http://127.0.0.1:$APACHE" "$kind" "$r"; done
done

python3 - "$OUT" "$RUNS" <<'PY'
import re, sys, statistics
out, runs = sys.argv[1], int(sys.argv[2])
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
def parse(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rps, p99, int(errs.group(1)) if errs else 0
names = {"nowaf": "palisade, no WAF", "waf": "palisade + CRS PL1 (block)", "apache": "Apache httpd + mod_security2 + CRS PL1"}
titles = {"get": "GET (benign, the same request every time)", "post": "POST (benign, the same request every time)",
          "varied": "GET varied (benign; query values and session cookie different in every request)"}
for kind in ("get", "post", "varied"):
    print(f"\n{titles[kind]}\n")
    print("| target | req/s (median) | p99 ms (median) | ratio to palisade no-WAF (per run, median) | ratio to Apache (per run) | non-2xx |")
    print("|---|---:|---:|---|---|---:|")
    base = [parse(f"{out}/waf-nowaf-{kind}-{r}.txt")[0] for r in range(1, runs + 1)]
    ap = [parse(f"{out}/waf-apache-{kind}-{r}.txt")[0] for r in range(1, runs + 1)]
    for name in names:
        rows = [parse(f"{out}/waf-{name}-{kind}-{r}.txt") for r in range(1, runs + 1)]
        ratios = [row[0] / b for row, b in zip(rows, base)]
        r1 = " / ".join(f"{x:.2f}" for x in ratios) + f" (median {statistics.median(ratios):.2f})"
        r2 = " / ".join(f"{row[0] / a:.2f}" for row, a in zip(rows, ap))
        print(f"| {names[name]} | {statistics.median(r[0] for r in rows):,.0f} | {statistics.median(r[1] for r in rows):.2f} | {r1} | {r2} | {sum(r[2] for r in rows)} |")
PY
