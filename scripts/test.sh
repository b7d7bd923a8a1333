#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing, then runs
# formatting and lint checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages (curl, openssl, PostgreSQL: one apt-get call), a throwaway PostgreSQL cluster
# stopped when this script exits, and the interop clients of tests/interop. Sets
# PALISADE_TEST_DATABASE_URL, PALISADE_TEST_PYTHON and PALISADE_TEST_NODE_DIR. Later capabilities add
# their servers there (redis-server, chromium), all from apt.
source scripts/test-env.sh

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
