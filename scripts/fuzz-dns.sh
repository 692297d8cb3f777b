#!/usr/bin/env bash
# Fuzzes the DNS request path (dns/fuzz, cargo-fuzz) for a bounded time.
# Needs the nightly toolchain; without it the run is skipped with a note
# (the same path runs under proptest in `cargo test`). FUZZ_SECONDS sets the
# time (default 45).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz-dns: no nightly toolchain here; skipped (proptests cover the request path)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cd dns/fuzz
cargo +nightly fuzz run request -- -max_total_time="${FUZZ_SECONDS:-45}" -rss_limit_mb=2048
echo "fuzz-dns: no crash in ${FUZZ_SECONDS:-45} s"
