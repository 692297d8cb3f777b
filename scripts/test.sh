#!/usr/bin/env bash
# The whole test suite: format, lints, a bounded fuzz run of the DNS request
# path, then every crate's unit and end-to-end tests. Installs what it needs
# first. Ends with one line totalling the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

# A whole-suite build gains nothing from incremental state, which would
# double the target directory on disk.
export CARGO_INCREMENTAL=0

scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/fuzz-dns.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
