#!/usr/bin/env bash
# The main job: builds shoal, starts a three-node cluster on this machine
# (network namespaces, a three-member etcd, a netd agent per node), deploys
# examples/stack.yml, and shows its traffic while a replica is killed and a
# node is cut off. Everything is removed at the end.
#
#   scripts/demo.sh               run the demo
#   scripts/demo.sh --keep        leave the cluster running to look around
#   scripts/demo.sh --clean PFX   remove a cluster left by --keep
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "demo: needs root (it makes network namespaces)" >&2
  exit 1
fi
scripts/deps.sh
cargo build --release --locked -p shoal-netd --bin netd -p shoal-tests --bin shoal-demo
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/shoal-demo" --netd "$target/release/netd" "$@"
