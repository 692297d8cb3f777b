#!/usr/bin/env bash
# The whole test suite: format, lints, then every crate's unit and
# end-to-end tests. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
