#!/usr/bin/env bash
# Identity-provider benchmark: wrk on loopback against `palisade server` (SQLite) and node
# oidc-provider (NODE_ENV=production, one process, and node:cluster with 2 workers), all three
# configured with one confidential client "bench" (client_credentials, client_secret_basic, same
# secret) issuing ES256-signed JWT access tokens (RFC 9068, aud "orders", scope "orders:read",
# 10 min). Two endpoints: token issuance (POST token endpoint, grant_type=client_credentials)
# and introspection (RFC 7662). oidc-provider refuses to introspect JWT access tokens, so its
# introspection runs use an opaque token from the same client (see the notes printed at the end).
# Every server is checked before the runs (200, ES256 JWT verified against its JWKS, active:true)
# and every benchmarked answer is checked by the wrk script (200 + access_token / "active":true).
# Writes raw wrk output and server logs to bench/out/idp/ and a Markdown table to stdout.
# Usage: bench/idp.sh [runs=3] [duration=10s] [connections=32]
# Needs (apt): wrk curl python3 npm (installed when missing and running as root); npm packages
# from bench/idp/package-lock.json (installed by this script, including Node.js 22 LTS for
# oidc-provider, whose supported runtime it is).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; DUR=${2:-10s}; CONNS=${3:-32}; THREADS=2
COMMAND="bench/idp.sh $RUNS $DUR $CONNS"
OUT=bench/out/idp; mkdir -p "$OUT"; rm -f "$OUT"/*.txt "$OUT"/*.log "$OUT"/*.json
die() { echo "bench/idp.sh: $*" >&2; exit 1; }

missing=(); for t in wrk curl python3 npm; do command -v $t >/dev/null || missing+=($t); done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]} (apt-get install -y ${missing[*]})"
  echo "installing ${missing[*]} (apt)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
IDP=bench/idp
if [ ! -f $IDP/node_modules/.package-lock.json ] || [ $IDP/package-lock.json -nt $IDP/node_modules/.package-lock.json ]; then
  (cd $IDP && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
NODE=$PWD/$IDP/node_modules/.bin/node # Node.js 22 LTS from the npm package "node" (pinned)
"$NODE" --version >/dev/null 2>&1 || die "$NODE does not run; remove $IDP/node_modules and retry"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
cargo build --release -q -p palisade
PALISADE=$CARGO_TARGET_DIR/release/palisade

PEERS=(palisade oidc-provider oidc-provider-x2)
declare -A PORT=([palisade]=18410 [oidc-provider]=18411 [oidc-provider-x2]=18412)
PIDS=()
DATA=$(mktemp -d)
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Palisade: SQLite in a fresh data dir, one client; its generated secret is reused for the peers.
"$PALISADE" idp --data-dir "$DATA" client add bench --scope orders:read --audience orders > "$DATA/client.json"
SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_secret"])' "$DATA/client.json")
BASIC=$(printf '%s' "bench:$SECRET" | base64 -w0)
PALISADE_LOG=info TOKIO_WORKER_THREADS=$THREADS "$PALISADE" server --listen "127.0.0.1:${PORT[palisade]}" \
  --data-dir "$DATA" > "$OUT/palisade.log" 2>&1 & PIDS+=($!); PID_palisade=$!
NODE_ENV=production PORT=${PORT[oidc-provider]} CLIENT_SECRET=$SECRET WORKERS=1 \
  "$NODE" $IDP/oidc-provider-server.mjs > "$OUT/oidc-provider.log" 2>&1 & PIDS+=($!); PID_op=$!
NODE_ENV=production PORT=${PORT[oidc-provider-x2]} CLIENT_SECRET=$SECRET WORKERS=$THREADS \
  "$NODE" $IDP/oidc-provider-server.mjs > "$OUT/oidc-provider-x2.log" 2>&1 & PIDS+=($!); PID_op2=$!

wait_for() { # log pattern pid
  for _ in $(seq 1 150); do
    grep -qs "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || { cat "$1" >&2; die "server for $1 exited"; }
    sleep 0.1
  done
  cat "$1" >&2; die "no '$2' in $1 after 15s"
}
wait_for "$OUT/palisade.log" '"message":"server listening"' $PID_palisade
wait_for "$OUT/oidc-provider.log" '^listening ' $PID_op
wait_for "$OUT/oidc-provider-x2.log" '^listening ' $PID_op2

# Endpoints from each server's discovery document.
declare -A ISS TOK INT JWKS
for p in "${PEERS[@]}"; do
  read -r ISS[$p] TOK[$p] INT[$p] JWKS[$p] < <(curl -fsS "http://127.0.0.1:${PORT[$p]}/.well-known/openid-configuration" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["issuer"], d["token_endpoint"], d["introspection_endpoint"], d["jwks_uri"])') \
    || die "$p: no discovery document"
done

post() { # url body -> prints "<status> <body>"
  curl -sS -o "$DATA/resp" -w '%{http_code}' -H "Authorization: Basic $BASIC" \
    -H 'Content-Type: application/x-www-form-urlencoded' --data-raw "$2" "$1" || true
  printf ' '; cat "$DATA/resp"
}
token() { # peer [extra form params] -> access token, or dies
  local r; r=$(post "${TOK[$1]}" "grant_type=client_credentials&scope=orders:read${2-}")
  [ "${r%% *}" = 200 ] || die "$1: token endpoint answered ${r}"
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "${r#* }"
}
introspection_token() { # peer -> the token its introspection runs use
  case $1 in
    palisade) token "$1" ;;                                       # its JWT access token
    *) token "$1" '&resource=urn:palisade:orders-opaque' ;;      # opaque (JWTs are refused)
  esac
}
check_active() { # peer token
  local r; r=$(post "${INT[$1]}" "token=$2&token_type_hint=access_token")
  [ "${r%% *}" = 200 ] && python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("active") is True else 1)' "${r#* }" \
    || die "$1: introspection answered ${r} (want 200 with active:true)"
}

# Sanity: several new connections each (so both cluster workers answer), before any run.
declare -A ALG
for p in "${PEERS[@]}"; do
  for _ in 1 2 3 4; do
    t=$(token "$p")
    "$NODE" $IDP/check-token.mjs "${ISS[$p]}" "${JWKS[$p]}" "$t" > "$OUT/$p-token-check.json" || die "$p: bad access token"
  done
  ALG[$p]=$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["header"]; print(h["alg"], h["typ"])' "$OUT/$p-token-check.json")
  [ "${ALG[$p]}" = "ES256 at+jwt" ] || die "$p: access token header is ${ALG[$p]}"
  t=$(introspection_token "$p"); sleep 0.2 # let the cluster relay the stored token to the other worker
  for _ in 1 2 3 4; do check_active "$p" "$t"; done
done
# What oidc-provider says to a JWT access token at its introspection endpoint, for the notes.
OP_JWT_INTROSPECT=$(post "${INT[oidc-provider]}" "token=$(token oidc-provider)&token_type_hint=access_token")

run() { # peer endpoint run
  local url=${TOK[$1]} tok=
  if [ "$2" = introspect ]; then url=${INT[$1]}; tok=$(introspection_token "$1"); sleep 0.2; fi
  BENCH_BASIC=$BASIC BENCH_TOKEN=$tok wrk -t$THREADS -c"$CONNS" -d"$DUR" --latency -s $IDP/"$2".lua "$url" \
    > "$OUT/$1-$2-$3.txt" 2>&1 || true
}
for r in $(seq 1 "$RUNS"); do
  for e in token introspect; do
    for p in "${PEERS[@]}"; do run "$p" "$e" "$r"; done
  done
done

VERSIONS="palisade $("$PALISADE" version | cut -d' ' -f2) ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), release), \
oidc-provider $("$NODE" -p 'require("./bench/idp/node_modules/oidc-provider/package.json").version') on Node.js $("$NODE" --version), \
$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(nproc) cores"
python3 - "$OUT" "$RUNS" "$COMMAND" "$VERSIONS" "$OP_JWT_INTROSPECT" "$THREADS" "$CONNS" "$DUR" <<'PY'
import re, sys, statistics
out, runs, command, versions, op_jwt, threads, conns, dur = sys.argv[1:9]
runs = int(runs)
peers = [("palisade", "palisade"), ("oidc-provider", "oidc-provider"), ("oidc-provider-x2", "oidc-provider ×2 workers")]
endpoints = [("token", "token (client_credentials)"), ("introspect", "introspection")]
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
def parse(path):
    t = open(path).read()
    m = re.search(r"Requests/sec:\s+([\d.]+)", t)
    if not m:
        sys.exit(f"{path}: no wrk result:\n{t}")
    p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    bad = re.search(r"Bad responses: (\d+)", t)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    return dict(rps=float(m.group(1)), p99=p99, non2xx=int(non2xx.group(1)) if non2xx else 0,
                bad=int(bad.group(1)) if bad else -1, sock=sum(map(int, sock.groups())) if sock else 0)
res = {(p, e): [parse(f"{out}/{p}-{e}-{r}.txt") for r in range(1, runs + 1)] for p, _ in peers for e, _ in endpoints}
print(f"**Command:** `{command}` — `wrk -t{threads} -c{conns} -d{dur} --latency -s bench/idp/<endpoint>.lua`, "
      f"{runs} run(s), servers interleaved within each run.  ")
print(f"**Versions:** {versions}.\n")
print("| endpoint | server | req/s per run | req/s (median) | p99 ms per run | p99 ms (median) | palisade ÷ server per run | median ratio | bad answers / socket errors |")
print("|---|---|---|---:|---|---:|---|---:|---:|")
summary, invalid = [], False
for e, elabel in endpoints:
    pal = [x["rps"] for x in res[("palisade", e)]]
    for p, plabel in peers:
        rows = res[(p, e)]
        rps = [x["rps"] for x in rows]
        bad = sum(max(x["bad"], 0) + x["non2xx"] for x in rows); sock = sum(x["sock"] for x in rows)
        invalid |= bad > 0 or any(x["bad"] < 0 for x in rows)
        if p == "palisade":
            ratios, med = "—", "—"
            name = "**palisade**"
        else:
            rr = [a / b for a, b in zip(pal, rps)]
            ratios = " / ".join(f"{x:.2f}" for x in rr); m = statistics.median(rr); med = f"**{m:.2f}×**"
            summary.append((elabel, plabel, m))
            name = plabel
        print(f"| {elabel} | {name} | {' / '.join(f'{x:,.0f}' for x in rps)} | {statistics.median(rps):,.0f} | "
              f"{' / '.join('%.2f' % x['p99'] for x in rows)} | {statistics.median(x['p99'] for x in rows):.2f} | "
              f"{ratios} | {med} | {bad} / {sock} |")
print()
print("**Against the target (≥ 5× oidc-provider req/s):**")
for elabel, plabel, m in summary:
    print(f"- {elabel} vs {plabel}: {m:.2f}× — {'reached' if m >= 5 else 'not reached'}")
print()
code, _, body = op_jwt.partition(" ")
print("**Notes.**")
print("- Same client on every server: `bench`, client_secret_basic with the same secret, grant client_credentials, "
      "scope `orders:read`, audience `orders`, ES256 JWT access tokens (typ at+jwt) lasting 10 min; "
      "identical request bodies (`grant_type=client_credentials&scope=orders:read`; "
      "`token=…&token_type_hint=access_token`). Every answer was checked by the wrk script.")
print("- Palisade: `palisade server` over SQLite (fresh data dir), 2 tokio worker threads, logging at info (no "
      "per-request lines). Introspection of its JWT access token verifies the ES256 signature the first time "
      "it sees the token (the result is kept, keyed by the token's SHA-256, until the token expires); every "
      "request re-checks expiry, that the signing key is still published, and the revocation list (kept in "
      "memory, synced from the database). The benchmark introspects one token, so it measures that path.")
print("- oidc-provider: NODE_ENV=production, in-memory adapter, resource indicator `urn:palisade:orders` "
      "(accessTokenFormat jwt, ES256) as default resource. JWT access tokens are not stored, so token issuance "
      "is sign-and-return on both sides.")
print(f"- oidc-provider does not introspect JWT access tokens (it answered HTTP {code}: `{body.strip()}`). "
      "Its introspection rows therefore use an opaque access token from the same client "
      "(resource `urn:palisade:orders-opaque`), i.e. an in-memory lookup with no signature check, "
      "comparable to Palisade's path for an already-seen token.")
print("- oidc-provider ×2 workers: node:cluster, 2 workers sharing the port, one ES256 key, and an in-memory "
      "store replicated over cluster IPC on write (so an opaque token issued by either worker introspects on both; "
      "reads stay local, a best case next to a shared store such as Redis).")
print("- wrk, the servers and the rest of the machine share the same cores; nothing is pinned.")
if invalid:
    print("\n**INVALID: some answers were not 200 with an access token / active:true (see the last column).**")
    sys.exit(1)
PY
