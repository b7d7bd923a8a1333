#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing, then runs
# formatting and lint checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
# Later capabilities add their servers here (redis-server, postgresql, chromium), all from apt.
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "==> installing: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> fuzz targets compile"
cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
echo "==> tests"
cargo nextest run --workspace --no-fail-fast "$@"
