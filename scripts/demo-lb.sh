#!/usr/bin/env bash
# shoal-lb alone: in front of three local backends, printing
# where connections went and riding out a killed backend. Everything stays
# on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --locked -p shoal-lb --bin shoal-lb --example demo
target=${CARGO_TARGET_DIR:-target}
SHOAL_LB="$target/release/shoal-lb" exec "$target/release/examples/demo"
