#!/usr/bin/env bash
# Run every fuzz target for a while (default 60 s each). Needs cargo-fuzz (installed from
# crates.io if missing). cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP lets stable accept them.
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}; shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(config_parse request_head idp_request gateway_security mesh audit scan waf_seclang waf_body libinjection)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "==> fuzzing $t for ${SECS}s"
  cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- -max_total_time="$SECS" -max_len=8192
done
