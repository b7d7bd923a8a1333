# shellcheck shell=bash
# Test environment for the identity-provider and gateway tests: the system packages the tests use
# (among them redis-server, which tests/gateway_ratelimit.rs starts on its own free ports for the
# shared rate limits), a throwaway PostgreSQL cluster, the Python and Node OIDC clients of
# tests/interop, and Debian's chromium with playwright-core for the dashboard browser test.
#
# scripts/test.sh sources this file. A developer can too, from bash, in the repository or not:
#     source scripts/test-env.sh
# The cluster then lives until that shell exits (or until `palisade_test_env_stop`).
#
# Exports:
#   PALISADE_TEST_DATABASE_URL  postgres://palisade:palisade@127.0.0.1:<port>/postgres. The role
#                               palisade has CREATEDB: tests create their own databases through it.
#                               Already set: that server is used and none is started.
#   PALISADE_TEST_PYTHON        the python of a venv holding tests/interop/requirements.txt, at
#                               ${PALISADE_CACHE:-~/.cache/palisade}/pyenv; rebuilt when that file changes.
#   PALISADE_TEST_NODE_DIR      absolute path of tests/interop, whose node_modules holds openid-client
#                               and playwright-core (`npm ci` when node_modules is missing or older
#                               than package-lock.json).
#   PALISADE_TEST_CHROMIUM      the system chromium (Debian's package, from apt when missing), which
#                               tests/browser/dashboard.mjs drives headless through playwright-core.
#   PALISADE_REQUIRE_CRS3, PALISADE_REQUIRE_SOFTHSM, PALISADE_REQUIRE_DEBOOTSTRAP
#                               1: the CRS 3.3, SoftHSM2 and Debian-image tests fail rather than skip
#                               without their package.
#   PALISADE_REQUIRE_BROWSER    1: tests/dashboard_browser.rs fails rather than skips when it cannot
#                               run the browser.
#
# Works under the caller's `set -euo pipefail` and without it: every step checks its own errors, and
# a failure makes `source` return non-zero after printing what went wrong.

_PALISADE_TE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_palisade_te_fail() {
  echo "test-env: $*" >&2
  return 1
}

# Prints the PostgreSQL server bin directory (initdb, pg_ctl, psql), newest version first; fails when
# there is none. Debian keeps these off PATH, under /usr/lib/postgresql/<ver>/bin.
_palisade_te_pg_bindir() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] || continue
    if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n 1)" = "$d" ]; then
      best="$d"
    fi
  done
  if [ -z "$best" ] && command -v initdb >/dev/null 2>&1; then
    best="$(dirname "$(command -v initdb)")"
  fi
  [ -n "$best" ] && printf '%s\n' "$best"
}

# One apt-get call for everything missing. Node.js/npm and Python are the machine's own (not apt's).
_palisade_te_packages() {
  local need=()
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v flock >/dev/null 2>&1 || need+=(util-linux)
  # The Redis-backed rate-limit tests run their own redis-server processes (no service is used).
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  # `ip netns` for the mesh test across network namespaces.
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  # The dashboard browser test drives Debian's chromium (not a Playwright download); a headless
  # chromium still needs one font to render text in its screenshots.
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  # CRS 3.3 as Debian ships it, which tests/waf.rs loads besides the CRS v4 copy in crs/.
  [ -f /etc/modsecurity/crs/crs-setup.conf ] || need+=(modsecurity-crs)
  # SoftHSM2: the PKCS#11 token the vault's HSM master-key provider is tested against.
  [ -f /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
  # debootstrap builds the real Debian bookworm image the scanner test scans (crates/scan/tests/debian_image.rs;
  # built once, cached under ~/.cache/palisade/debian-bookworm-minbase).
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  [ -n "$(fc-list 2>/dev/null | head -n 1)" ] || need+=(fonts-dejavu-core)
  if [ -z "${PALISADE_TEST_DATABASE_URL:-}" ] && ! _palisade_te_pg_bindir >/dev/null; then
    need+=(postgresql)
  fi
  # Debian's own python3 needs python3-venv for `-m venv`; pyenv's and most others have it built in.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  if [ "${#need[@]}" -eq 0 ]; then
    echo "==> system packages present"
    return 0
  fi
  echo "==> installing: ${need[*]}"
  local sudo=() log
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  log="$(mktemp)"
  # The postgresql package creates and (where services may start) starts a 'main' cluster on 5432;
  # the throwaway cluster below never uses it, nor its port or socket directory.
  if "${sudo[@]}" apt-get update -qq >"$log" 2>&1 &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
      "${need[@]}" >>"$log" 2>&1; then
    rm -f "$log"
  else
    tail -n 30 "$log" >&2
    rm -f "$log"
    _palisade_te_fail "apt-get install ${need[*]} failed"
    return 1
  fi
}

# Runs a PostgreSQL program as the cluster's owner: initdb and pg_ctl refuse to run as root.
_palisade_te_as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- env LC_ALL=C "$@")
  else
    (cd / && env LC_ALL=C "$@")
  fi
}

# Stops the cluster this shell started and removes its directory. Never fails.
_palisade_te_pg_cleanup() {
  local dir="${_PALISADE_TE_PG_DIR:-}" pid
  [ -n "$dir" ] || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    if ! _palisade_te_as_pg "$_PALISADE_TE_PG_BIN/pg_ctl" stop -D "$dir/data" -m immediate -s -w -t 10 \
      >/dev/null 2>&1; then
      pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
      [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$dir" 2>/dev/null || true
  if [ "${PALISADE_TEST_DATABASE_URL:-}" = "${_PALISADE_TE_PG_URL:-}" ]; then
    unset PALISADE_TEST_DATABASE_URL
  fi
  unset _PALISADE_TE_PG_DIR _PALISADE_TE_PG_URL
  return 0
}

# For a developer's shell: stop the cluster now rather than when the shell exits.
palisade_test_env_stop() {
  _palisade_te_pg_cleanup
}

# The command of a `trap -p` line: trap -- 'command' EXIT
_palisade_te_trap_command() {
  eval "set -- $1"
  printf '%s' "$3"
}

_palisade_te_on_exit() {
  local rc=$?
  _palisade_te_pg_cleanup
  if [ -n "${_PALISADE_TE_PREV_EXIT_TRAP:-}" ]; then
    set +e
    (exit "$rc")
    eval "$_PALISADE_TE_PREV_EXIT_TRAP"
  fi
}

# Clusters whose starting shell is gone (a run killed with SIGKILL, say): stop them, remove them.
_palisade_te_pg_reap() {
  local d owner
  for d in /tmp/palisade-pg.*; do
    [ -d "$d" ] || continue
    [ -O "$d" ] || [ "$(id -u)" -eq 0 ] || continue
    owner="$(cat "$d/owner" 2>/dev/null || true)"
    if [ -n "$owner" ]; then
      if [ -d "/proc/$owner" ]; then continue; fi
    else
      # No owner file yet: maybe one being set up right now, unless it is older than a minute.
      [ -n "$(find "$d" -maxdepth 0 -mmin +1 2>/dev/null)" ] || continue
    fi
    if [ -f "$d/data/postmaster.pid" ]; then
      _palisade_te_as_pg "$_PALISADE_TE_PG_BIN/pg_ctl" stop -D "$d/data" -m immediate -s -w -t 10 \
        >/dev/null 2>&1 || true
    fi
    rm -rf "$d" 2>/dev/null || true
  done
}

_palisade_te_postgres() {
  if [ -n "${PALISADE_TEST_DATABASE_URL:-}" ]; then
    echo "==> postgres: using PALISADE_TEST_DATABASE_URL from the environment"
    return 0
  fi
  _PALISADE_TE_PG_BIN="$(_palisade_te_pg_bindir)" ||
    _palisade_te_fail "no PostgreSQL server (initdb) found" || return 1
  _palisade_te_pg_reap

  local dir port tries=0
  # /tmp rather than $TMPDIR: the postgres user must be able to reach it when we are root.
  dir="$(mktemp -d /tmp/palisade-pg.XXXXXX)" || _palisade_te_fail "mktemp failed" || return 1
  echo "$BASHPID" >"$dir/owner"
  _PALISADE_TE_PG_DIR="$dir"
  # Once per shell (a subshell is another shell: it does not inherit traps): stop the cluster when
  # the shell exits, after which any EXIT trap it had runs.
  if [ "${_PALISADE_TE_TRAP_PID:-}" != "$BASHPID" ]; then
    local prev
    prev="$(trap -p EXIT)"
    _PALISADE_TE_PREV_EXIT_TRAP=""
    # In a subshell, `trap -p` shows the parent's traps, which do not run there: chain none.
    if [ -n "$prev" ] && [ "$BASHPID" = "$$" ]; then
      _PALISADE_TE_PREV_EXIT_TRAP="$(_palisade_te_trap_command "$prev")"
      [ "$_PALISADE_TE_PREV_EXIT_TRAP" != _palisade_te_on_exit ] || _PALISADE_TE_PREV_EXIT_TRAP=""
    fi
    trap _palisade_te_on_exit EXIT
    # A script (not an interactive shell) killed by INT/TERM would skip the EXIT trap: turn those
    # into an exit, unless the caller handles them already.
    if [[ $- != *i* ]]; then
      [ -n "$(trap -p INT)" ] || trap 'exit 130' INT
      [ -n "$(trap -p TERM)" ] || trap 'exit 143' TERM
    fi
    _PALISADE_TE_TRAP_PID="$BASHPID"
  fi
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir" || _palisade_te_fail "chown postgres $dir failed" || return 1
  fi

  if ! _palisade_te_as_pg "$_PALISADE_TE_PG_BIN/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    _palisade_te_fail "initdb failed"
    return 1
  fi
  # Local (socket) connections are trusted: the socket lives in $dir, which only its owner can
  # enter. TCP needs the password; the postgres superuser has none, so TCP reaches only palisade.
  cat >>"$dir/data/postgresql.conf" <<EOF

# palisade test cluster (scripts/test-env.sh): throwaway, fast, not durable
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

  # A free port from 55432 up. Probing first skips ports in use; the bind itself is the real test,
  # so a port taken between the probe and the start moves on to the next one.
  port=55432
  while :; do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      rm -f "$dir/postgres.log"
      if _palisade_te_as_pg "$_PALISADE_TE_PG_BIN/pg_ctl" start -D "$dir/data" -w -t 60 -s \
        -l "$dir/postgres.log" -o "-p $port" >"$dir/pg_ctl.out" 2>&1; then
        break
      fi
      if ! grep -q -e 'could not bind' -e 'could not create any TCP/IP sockets' "$dir/postgres.log" 2>/dev/null; then
        cat "$dir/pg_ctl.out" >&2
        tail -n 20 "$dir/postgres.log" >&2 2>/dev/null
        _palisade_te_fail "PostgreSQL did not start (log above)"
        return 1
      fi
    fi
    port=$((port + 1))
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || _palisade_te_fail "no free port in 55432-55531" || return 1
  done

  if ! _palisade_te_as_pg "$_PALISADE_TE_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" \
    -U postgres -d postgres -c "CREATE ROLE palisade LOGIN CREATEDB PASSWORD 'palisade'" >/dev/null; then
    _palisade_te_fail "creating role palisade failed"
    return 1
  fi
  _PALISADE_TE_PG_URL="postgres://palisade:palisade@127.0.0.1:$port/postgres"
  export PALISADE_TEST_DATABASE_URL="$_PALISADE_TE_PG_URL"
  # The URL works as tests use it: over TCP, with the password, from this (non-postgres) process.
  if ! "$_PALISADE_TE_PG_BIN/psql" -X -q -At -c 'select 1' "$PALISADE_TEST_DATABASE_URL" >/dev/null; then
    _palisade_te_fail "cannot connect to $PALISADE_TEST_DATABASE_URL"
    return 1
  fi
  echo "==> postgres: throwaway cluster on 127.0.0.1:$port ($dir)"
}

_palisade_te_python() {
  local cache="${PALISADE_CACHE:-$HOME/.cache/palisade}"
  local venv="$cache/pyenv" req="$_PALISADE_TE_ROOT/tests/interop/requirements.txt" want log
  mkdir -p "$cache" || _palisade_te_fail "cannot create $cache" || return 1
  want="$(sha256sum <"$req" | cut -d ' ' -f 1)" || _palisade_te_fail "cannot read $req" || return 1
  # Concurrent runs (several checkouts) share the venv: one builds it, the others wait.
  (
    flock 9 || exit 1
    if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" = "$want" ] &&
      "$venv/bin/python" -c '' >/dev/null 2>&1; then
      echo "==> python: interop venv up to date ($venv)"
      exit 0
    fi
    echo "==> python: building interop venv ($venv)"
    log="$(mktemp)"
    rm -rf "$venv"
    if python3 -m venv "$venv" >"$log" 2>&1 &&
      "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req" >>"$log" 2>&1; then
      echo "$want" >"$venv/.requirements.sha256"
      rm -f "$log"
    else
      tail -n 30 "$log" >&2
      rm -f "$log"
      exit 1
    fi
  ) 9>"$cache/pyenv.lock" || _palisade_te_fail "building the Python venv failed" || return 1
  export PALISADE_TEST_PYTHON="$venv/bin/python"
}

_palisade_te_node() {
  local dir="$_PALISADE_TE_ROOT/tests/interop" cache="${PALISADE_CACHE:-$HOME/.cache/palisade}" log
  command -v npm >/dev/null 2>&1 || _palisade_te_fail "npm not found (Node.js 20+ is needed)" || return 1
  mkdir -p "$cache" || _palisade_te_fail "cannot create $cache" || return 1
  (
    flock 9 || exit 1
    # npm writes node_modules/.package-lock.json on every install: it tells when that was.
    local stamp="$dir/node_modules/.package-lock.json"
    if [ -f "$stamp" ] && ! [ "$dir/package-lock.json" -nt "$stamp" ] && ! [ "$dir/package.json" -nt "$stamp" ]; then
      echo "==> node: tests/interop/node_modules up to date"
      exit 0
    fi
    echo "==> node: npm ci in tests/interop"
    log="$(mktemp)"
    if (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
      rm -f "$log"
    else
      tail -n 30 "$log" >&2
      rm -f "$log"
      exit 1
    fi
  ) 9>"$cache/npm.lock" || _palisade_te_fail "npm ci in tests/interop failed" || return 1
  export PALISADE_TEST_NODE_DIR="$dir"
}

_palisade_te_browser() {
  local chromium
  chromium="$(command -v chromium)" || _palisade_te_fail "chromium not found after the apt-get step" || return 1
  echo "==> browser: $chromium"
  export PALISADE_TEST_CHROMIUM="$chromium"
  export PALISADE_REQUIRE_BROWSER=1
}

# cargo-audit (crates.io), the peer the scanner's results are compared with
# (crates/scan/tests/cargo_audit.rs). Built once into ~/.cache/palisade/tools.
_palisade_te_cargo_audit() {
  local root="$HOME/.cache/palisade/tools"
  export PATH="$root/bin:$PATH"
  if ! command -v cargo-audit >/dev/null 2>&1; then
    echo "==> installing cargo-audit from crates.io into $root (once)"
    cargo install --locked --quiet --root "$root" cargo-audit || _palisade_te_fail "cargo install cargo-audit failed" || return 1
  fi
  export PALISADE_REQUIRE_CARGO_AUDIT=1
}

_palisade_te_main() {
  _palisade_te_packages || return 1
  export PALISADE_REQUIRE_CRS3=1 PALISADE_REQUIRE_SOFTHSM=1 PALISADE_REQUIRE_DEBOOTSTRAP=1
  _palisade_te_postgres || return 1
  _palisade_te_python || return 1
  _palisade_te_node || return 1
  _palisade_te_browser || return 1
  _palisade_te_cargo_audit || return 1
}

_palisade_te_main || return 1
