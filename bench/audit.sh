#!/usr/bin/env bash
# Audit benchmark. (1) Ingest: events/s that `palisade server` takes in over POST /audit/v1/events
# (NDJSON batches of 1000, unique ids, one client connection) with the tamper-evident log on (SHA-256
# chain, Ed25519 checkpoints, fsync per batch), plus the time `palisade audit verify` needs for the
# result. (2) The cost of shipping: wrk against two identical gateways (JWT + Cedar route, every request
# audited), one shipping its events to the server (`audit.ship`) and one writing them to a local file
# only (`audit.file`, shipping off), alternating, RUNS times, in two "on" variants: the server
# competing for the same 2 cores (as it does in this bench, in no deployment), and the server under
# SCHED_IDLE (`chrt --idle 0`: it only gets CPU nobody else wants, standing in for a separate
# machine). After each "on" run the script waits until the server has stored every event the
# gateway audited (exact count from the index; the gateway's own request counter is the truth).
# A fourth side, "recv", ships to bench/ack-receiver.py instead: a stand-in receiver that counts and
# acknowledges each batch and stores nothing, standing in for a server on another machine, so that
# req/s shows what shipping costs the gateway itself (its own spool, fsync, sending) with a
# receiver that takes next to no CPU (under SCHED_IDLE; its CPU is shown in the server column).
# Usage: bench/audit.sh [runs=3] [duration=8s] [connections=64] [events=100000]   Needs (apt): wrk nginx-light
# PALISADE_BIN=path: benchmark that binary instead of building this tree.
# BASE_BIN=path: also run a third shipping gateway from that binary (an older build, say), measured in
# the same runs as a fourth side ("base", server under SCHED_IDLE), so that two builds are compared
# on the same (noisy, shared) machine minutes apart rather than in separate runs of the script.
# SIDES="off on idle recv" (the default): which sides to measure ("off" is always needed).
# PERF_OUT=file [PERF_SIDE=idle]: record a perf profile (with call graphs, all threads) of that side's
# gateway during the first run, from the start of wrk until every event is stored.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; DUR=${2:-8s}; CONNS=${3:-64}; EVENTS=${4:-100000}; THREADS=2
OUT=bench/out; mkdir -p "$OUT"; rm -f "$OUT"/audit-*.txt
for t in wrk nginx curl python3 chrt; do command -v $t >/dev/null || { echo "missing $t (apt install wrk nginx-light)"; exit 1; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
if [ -n "${PALISADE_BIN:-}" ]; then PALISADE=$PALISADE_BIN; else cargo build --release -q; PALISADE=$CARGO_TARGET_DIR/release/palisade; fi
BACKEND=18050; SERVER=18410; RECEIVER=18411; GW_ON=18351; GW_OFF=18352; GW_BASE=18353; GW_RECV=18354
SIDES=${SIDES:-off on idle recv}; [ -n "${BASE_BIN:-}" ] && SIDES="$SIDES base"
PIDS=(); DATA=$(mktemp -d)
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$DATA/backend.conf" <<CONF
worker_processes 1; daemon off; pid $DATA/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"ok":true}'; } } }
CONF
nginx -c "$DATA/backend.conf" -p "$DATA" & PIDS+=($!)
"$PALISADE" idp --data-dir "$DATA/server" client add bench --scope "orders:read" --audience orders > "$DATA/client.json"
SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_secret"])' "$DATA/client.json")
PALISADE_LOG=warn "$PALISADE" server --listen "127.0.0.1:$SERVER" --data-dir "$DATA/server" >/dev/null 2>&1 & PIDS+=($!); SRV=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$SERVER/jwks.json" 2>/dev/null && break; sleep 0.1; done
INGEST_TOKEN=$(cat "$DATA/server/audit-ingest.token")

# (1) Ingest throughput.
python3 - "$SERVER" "$INGEST_TOKEN" "$EVENTS" > "$OUT/audit-ingest.txt" <<'PY'
import http.client, json, sys, time
port, token, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
base = {"time": "2026-11-26T04:00:00.000Z", "source": "gateway", "request_id": "r", "decision": "allow",
        "stage": "authz", "reason": "policy read", "principal": "User::\"alice\"", "route": "orders",
        "method": "GET", "path": "/orders", "client_ip": "10.0.0.1", "policy_ids": ["read"], "status": 200,
        "latency_ms": 0.4}
batches = []
for b in range(total // 1000):
    lines = []
    for i in range(1000):
        e = dict(base); e["id"] = f"bench-{b * 1000 + i}"; lines.append(json.dumps(e))
    batches.append(("\n".join(lines) + "\n").encode())
conn = http.client.HTTPConnection("127.0.0.1", port)
hdr = {"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"}
start = time.perf_counter(); accepted = 0
for body in batches:
    conn.request("POST", "/audit/v1/events", body, hdr)
    r = conn.getresponse(); data = json.loads(r.read())
    assert r.status == 200, (r.status, data); accepted += data["accepted"]
secs = time.perf_counter() - start
print(f"{accepted} {secs:.3f}")
PY
read -r ACCEPTED INGEST_SECS < "$OUT/audit-ingest.txt"
kill "$SRV"; wait "$SRV" 2>/dev/null || true
VERIFY_START=$(date +%s.%N)
"$PALISADE" audit --data-dir "$DATA/server" verify > "$OUT/audit-verify.txt"
VERIFY_SECS=$(python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.3f}')" "$VERIFY_START")
PALISADE_LOG=warn "$PALISADE" server --listen "127.0.0.1:$SERVER" --data-dir "$DATA/server" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$SERVER/jwks.json" 2>/dev/null && break; sleep 0.1; done
TOKEN=$(curl -fsS -u "bench:$SECRET" -d grant_type=client_credentials -d scope=orders:read "http://127.0.0.1:$SERVER/oauth2/token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# (2) Two gateways, shipping on and off.
cat > "$DATA/policy.cedar" <<'CEDAR'
@id("read") permit (principal, action == Action::"GET", resource) when { context.scopes.contains("orders:read") };
CEDAR
gateway() { # port admin ship? [binary] [audit server port]
  cat > "$DATA/gw-$1.yaml" <<CONF
workers: $THREADS
listeners: { http: { address: "127.0.0.1:$1" } }
admin: { address: "127.0.0.1:$2" }
access_log: { enabled: false }
$( [ "$3" = on ] && echo "audit: { ship: { server: \"http://127.0.0.1:${5:-$SERVER}\", token: \"file:server/audit-ingest.token\", spool_dir: spool-$1 } }" || echo "audit: { file: audit-$1.jsonl }" )
authentication: { jwt_issuers: [{ issuer: "http://127.0.0.1:$SERVER", audiences: [orders], algorithms: [ES256] }] }
authorization: { policies: [policy.cedar] }
security_headers: { enabled: false }
upstreams: { be: { endpoints: ["127.0.0.1:$BACKEND"] } }
routes:
  - { name: orders, match: { path: { prefix: / } }, upstream: be, authn: { methods: [jwt] }, authz: {} }
CONF
  PALISADE_LOG=warn "${4:-$PALISADE}" gateway --config "$DATA/gw-$1.yaml" >/dev/null & PIDS+=($!); LAST=$!
}
gateway $GW_ON 18951 on; PID_ON=$LAST
gateway $GW_OFF 18952 off; PID_OFF=$LAST
PORTS="$GW_ON $GW_OFF"
if [ -n "${BASE_BIN:-}" ]; then gateway $GW_BASE 18953 on "$BASE_BIN"; PID_BASE=$LAST; PORTS="$PORTS $GW_BASE"; fi
# The stand-in receiver runs under SCHED_IDLE throughout, as the server does on the "idle" side.
chrt --idle 0 python3 bench/ack-receiver.py $RECEIVER "$DATA/server/audit-ingest.token" & PIDS+=($!); RCV=$!
gateway $GW_RECV 18954 on "$PALISADE" $RECEIVER; PID_RECV=$LAST; PORTS="$PORTS $GW_RECV"
SRV2=$(pgrep -f "server --listen 127.0.0.1:$SERVER" | head -1)
cpu() { python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"; }
# CPU seconds of a gateway's request workers (threads named palisade-worker, which never exit). The
# rest of the process's CPU is its audit sink (file writer, or spool writer + sender and its
# blocking reads and cursor writes) and the idle main runtime: the part shipping changes, measured
# apart from the request path, whose run-to-run noise on this shared machine is larger than 5 %.
wcpu() { python3 -c '
import glob, os, sys
t = 0
for d in glob.glob(f"/proc/{sys.argv[1]}/task/*"):
    try:
        if open(d + "/comm").read().strip() != "palisade-worker": continue
        f = open(d + "/stat").read().rsplit(")", 1)[1].split(); t += int(f[11]) + int(f[12])
    except OSError: pass
print(t / os.sysconf("SC_CLK_TCK"))' "$1"; }
sleep 2
for p in $PORTS; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$p/orders")
  [ "$code" = 200 ] || { echo "gateway :$p answered $code"; exit 1; }
done
INSTANCE=$(cat "$DATA/spool-$GW_ON/instance")
BASE_INSTANCE=$( [ -n "${BASE_BIN:-}" ] && cat "$DATA/spool-$GW_BASE/instance" || echo none)
# Requests a shipping gateway (admin port, default the "on" one) audited: its own request counter for
# the (protected) route.
audited() { curl -fsS "http://127.0.0.1:${1:-18951}/metrics" | python3 -c 'import re,sys; print(sum(int(float(m)) for m in re.findall(r"^palisade_requests_total\{[^}]*route=\"orders\"[^}]*\} (\S+)", sys.stdin.read(), re.M)))'; }
# Events from a gateway (instance id, default the "on" one) in the server's index (exact; the query
# API stops at 10,000).
stored() { python3 -c 'import sqlite3,sys; c=sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30); print(c.execute("SELECT COUNT(*) FROM audit_events WHERE id > ? AND id < ?", (sys.argv[2]+"-", sys.argv[2]+".")).fetchone()[0])' "$DATA/server/palisade.db" "${1:-$INSTANCE}"; }
# A shipping gateway's counters (admin port): events it sent from the spool file rather than from
# memory, and times its in-memory queue overflowed (both 0 while the server keeps up).
spoolstat() { curl -fsS "http://127.0.0.1:$1/metrics" | python3 -c '
import re, sys
t = sys.stdin.read()
v = lambda n: int(float(re.search(rf"^palisade_audit_shipper_{n} (\S+)", t, re.M).group(1)))
print(v("read_from_spool_events_total"), v("memory_overflows_total"))'; }
# Events the stand-in receiver has acknowledged.
received() { curl -fsS "http://127.0.0.1:$RECEIVER/count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["received"])'; }
drain() { # ADMIN COUNT-COMMAND...: wait until the command counts every event the gateway at ADMIN
  # audited (stored by the server, or acknowledged by the stand-in); prints seconds waited and the counts
  local admin=$1 t0 want got; shift; t0=$(date +%s.%N); want=$(audited "$admin")
  for _ in $(seq 1 1200); do got=$("$@"); [ "$got" -ge "$want" ] && break; sleep 0.25; done
  echo "$(python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$t0") $want $got"
}
for r in $(seq 1 "$RUNS"); do
  # Every other run takes the sides in reverse order, so no side always follows the same one.
  order=$SIDES; [ $((r % 2)) = 0 ] && order=$(echo $SIDES | tr ' ' '\n' | tac | tr '\n' ' ')
  for side in $order; do
    port=$GW_OFF; pid=$PID_OFF; if [ $side != off ]; then port=$GW_ON; pid=$PID_ON; fi
    if [ $side = base ]; then port=$GW_BASE; pid=$PID_BASE; fi
    if [ $side = recv ]; then port=$GW_RECV; pid=$PID_RECV; fi
    srv=$SRV2; [ $side = recv ] && srv=$RCV
    if [ $side = idle ] || [ $side = base ]; then chrt --all-tasks --idle -p 0 "$SRV2"; fi
    admin=18952; [ $side = off ] || admin=18951; [ $side = base ] && admin=18953; [ $side = recv ] && admin=18954
    [ $side = off ] || x0=$(spoolstat $admin)
    g0=$(cpu $pid); s0=$(cpu $srv); w0=$(wcpu $pid); perf_pid=
    if [ -n "${PERF_OUT:-}" ] && [ $side = "${PERF_SIDE:-idle}" ] && [ "$r" = 1 ] && command -v perf >/dev/null; then
      perf record -F 2000 -g -p "$pid" -o "$PERF_OUT" >/dev/null 2>&1 & perf_pid=$!
    fi
    wrk -t$THREADS -c$CONNS -d$DUR --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/orders" \
      > "$OUT/audit-$side-$r.txt" 2>&1 || true
    # CPU is read once every event of the run is written (off) or stored by the server (on): the
    # gateway's and the server's whole work for these requests, the shipping after the run included.
    if [ $side = off ]; then sleep 2; echo "0 0 0" > "$OUT/audit-$side-$r.drain"
    elif [ $side = base ]; then drain 18953 stored "$BASE_INSTANCE" > "$OUT/audit-$side-$r.drain"
    elif [ $side = recv ]; then drain 18954 received > "$OUT/audit-$side-$r.drain"
    else drain 18951 stored "$INSTANCE" > "$OUT/audit-$side-$r.drain"; fi
    echo "$(cpu $pid) $g0 $(cpu $srv) $s0 $(wcpu $pid) $w0" > "$OUT/audit-$side-$r.cpu"
    if [ $side = off ]; then echo "0 0" > "$OUT/audit-$side-$r.spool"
    else python3 -c 'import sys; a, b = sys.argv[1].split(), sys.argv[2].split(); print(int(b[0]) - int(a[0]), int(b[1]) - int(a[1]))' "$x0" "$(spoolstat $admin)" > "$OUT/audit-$side-$r.spool"; fi
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
    if [ $side = idle ] || [ $side = base ]; then chrt --all-tasks --other -p 0 "$SRV2"; fi
  done
done
SHIPPED=$(python3 - "$SERVER" "$INGEST_TOKEN" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/audit/v1/events?source=gateway&limit=10000&since=1h",
                             headers={"authorization": f"Bearer {sys.argv[2]}"})
print(len(json.load(urllib.request.urlopen(req))["events"]))
PY
)
AUDITED=$(audited); STORED=$(stored); AUDITED_RECV=$(audited 18954); RECEIVED=$(received)
if [ -n "${BASE_BIN:-}" ]; then AUDITED_BASE=$(audited 18953); STORED_BASE=$(stored "$BASE_INSTANCE"); else AUDITED_BASE=0; STORED_BASE=0; fi

python3 - "$OUT" "$RUNS" "$ACCEPTED" "$INGEST_SECS" "$VERIFY_SECS" "$SHIPPED" "$AUDITED" "$STORED" "$AUDITED_BASE" "$STORED_BASE" "$SIDES" "$AUDITED_RECV" "$RECEIVED" <<'PY'
import re, sys, statistics
out, runs, accepted, isecs, vsecs, shipped = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
audited, stored, audited_base, stored_base, sides = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10]), sys.argv[11].split()
audited_recv, received = int(sys.argv[12]), int(sys.argv[13])
print(f"| audit ingest ({accepted:,} events, batches of 1000, one connection, fsync per batch) | events/s |")
print("|---|---:|")
print(f"| POST /audit/v1/events: chain + checkpoints + index | {accepted / isecs:,.0f} |")
print(f"| `palisade audit verify` of the result ({vsecs:.2f} s) | {accepted / vsecs:,.0f} |")
print()
def parse(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    reqs = int(re.search(r"(\d+) requests in", t).group(1))
    g1, g0, s1, s0, w1, w0 = (float(x) for x in open(path.replace(".txt", ".cpu")).read().split())
    wait = float(open(path.replace(".txt", ".drain")).read().split()[0])
    outside = ((g1 - g0) - (w1 - w0)) / reqs * 1e6
    from_spool, overflows = (int(x) for x in open(path.replace(".txt", ".spool")).read().split())
    return (rps, int(errs.group(1)) if errs else 0, (g1 - g0) / reqs * 1e6, (s1 - s0) / reqs * 1e6, wait, outside,
            from_spool / reqs, overflows)
rows = {side: [parse(f"{out}/audit-{side}-{r}.txt") for r in range(1, runs + 1)] for side in sides}
med = statistics.median
print("| gateway (HTTP, JWT + Cedar, every request audited) | req/s (median) | per run | gateway CPU µs per request (median; per run) | of which outside the request workers (median; per run) | server CPU µs per request (median) | wait until all stored, s (median; per run) | sent from the spool file, % of events (per run; in-memory queue overflows) | non-2xx |")
print("|---|---:|---|---:|---:|---:|---:|---|---:|")
names = {"off": "shipping off (audit events to a local file)",
         "on": "shipping on, server competing for the same 2 cores",
         "idle": "shipping on, server under SCHED_IDLE (stands in for another machine)",
         "base": "BASE_BIN shipping on, server under SCHED_IDLE",
         "recv": "shipping on, to the stand-in receiver (`bench/ack-receiver.py`, SCHED_IDLE; server column: its CPU)"}
for side in sides:
    x = rows[side]
    per = lambda i, f: " / ".join(f.format(r[i]) for r in x)
    wait = "" if side == "off" else f"{med(r[4] for r in x):.1f} ({per(4, '{:.1f}')})"
    print(f"| {names[side]} | {med(r[0] for r in x):,.0f} | {per(0, '{:,.0f}')} | "
          f"{med(r[2] for r in x):.1f} ({per(2, '{:.1f}')}) | {med(r[5] for r in x):.2f} ({per(5, '{:.2f}')}) | "
          f"{med(r[3] for r in x):.1f} | {wait} | {'' if side == 'off' else per(6, '{:.0%}') + f' ({sum(r[7] for r in x)})'} | "
          f"{sum(r[1] for r in x)} |")
print()
for side in sides[1:]:
    costs = [1 - a[0] / b[0] for a, b in zip(rows[side], rows["off"])]
    gcosts = [a[2] / b[2] - 1 for a, b in zip(rows[side], rows["off"])]
    # What shipping adds outside the request path, against the whole gateway's CPU with shipping off.
    ocosts = [(a[5] - b[5]) / b[2] for a, b in zip(rows[side], rows["off"])]
    print(f"- {names[side]}: req/s cost per run (1 - on/off) {' / '.join(f'{c * 100:+.1f} %' for c in costs)}, "
          f"median **{med(costs) * 100:+.1f} %**; gateway CPU per request per run "
          f"{' / '.join(f'{c * 100:+.1f} %' for c in gcosts)}, median **{med(gcosts) * 100:+.1f} %**; "
          f"CPU added outside the request workers, per run {' / '.join(f'{c * 100:+.1f} %' for c in ocosts)}, "
          f"median **{med(ocosts) * 100:+.1f} %** of the gateway's CPU with shipping off")
ok = stored == audited and stored_base == audited_base and received == audited_recv
verdict = "all, none twice" if ok else "MISMATCH"
print(f"- events stored from the shipping gateway(s): {stored:,} (+ {stored_base:,} base; exact, from the index) of "
      f"{audited:,} (+ {audited_base:,}) requests audited ({verdict}); the query API returns {shipped} (limit 10000); the stand-in receiver acknowledged {received:,} of {audited_recv:,} audited")
sys.exit(0 if ok else 1)
PY
