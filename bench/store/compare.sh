#!/usr/bin/env bash
# API writes per second: netd on its embedded store against netd on a
# single-member etcd whose data directory is on the same disk, side by side
# in one run. Each agent serves one node (its own network namespace); the
# load is `service create` + `service rm` pairs on one network:
#   - through the API directly (netd/examples/api_writes.rs), 1 and 16
#     concurrent clients;
#   - through the CLI (`netd service create` / `netd service rm` processes),
#     1 and 16 concurrent shell loops.
# Rounds interleave the two stores (order swapped every round); the table
# shows medians. Every write is acknowledged only once durable on both:
# etcd after its WAL fsync, the embedded store after its SQLite commit.
#
# Environment knobs: ROUNDS (3), DUR seconds per run (5), KEEP_TMP (1 keeps
# the work directory). Needs root (namespaces); cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
KEEP_TMP=${KEEP_TMP:-0}
PFX=sb$$
work=$(mktemp -d /var/tmp/shoal-store-bench.XXXXXX)   # on the disk, not tmpfs
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^(shoal\.)?${PFX}" || true); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  if [ "$KEEP_TMP" = 1 ]; then echo "work directory: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

scripts/deps.sh etcd-server
cargo build --release --locked -q -p shoal-netd --bin netd --example api_writes
netd=target/release/netd
load=target/release/examples/api_writes

port=$((23000 + RANDOM % 2000))
etcd --name b1 --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$((port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "b1=http://127.0.0.1:$((port + 1))" >"$work/etcd.log" 2>&1 &
pids+=($!)

start_agent() { # NAME IP STORE
  local ns=${PFX}$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$2/32" dev lo
  "$netd" --api "unix://$work/$1.sock" agent --node-name "$ns" --netns "$ns" --advertise "$2" \
    --state-dir "$work/$1" --store "$3" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    SHOAL_API=unix://$work/$1.sock "$netd" node ls >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "agent $1 did not start; its log:" >&2; cat "$work/$1.log" >&2; exit 1
}
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
start_agent emb 198.18.7.1 embedded
start_agent etcd 198.18.7.2 "etcd://127.0.0.1:$port"
for s in emb etcd; do SHOAL_API=unix://$work/$s.sock "$netd" network create front --subnet 10.70.0.0/16 >/dev/null; done

api() { # STORE CLIENTS TAG
  "$load" "unix://$work/$1.sock" "$2" "$DUR" front "$3" | awk '{print $4, $6, $8}'
}
cli() { # STORE CLIENTS TAG: pairs/s over DUR seconds
  local end=$((SECONDS + DUR)) t0 t1 n
  t0=$(date +%s.%N)
  for c in $(seq "$2"); do
    (i=0; while [ $SECONDS -lt $end ]; do
       SHOAL_API=unix://$work/$1.sock "$netd" service create "c$3x$c-$i" --network front >/dev/null
       SHOAL_API=unix://$work/$1.sock "$netd" service rm "c$3x$c-$i" >/dev/null
       i=$((i + 1)); done; echo $i) >"$work/cli.$c" &
  done
  wait
  t1=$(date +%s.%N)
  n=$(cat "$work"/cli.* | paste -sd+ | bc)
  rm -f "$work"/cli.*
  echo "$(echo "scale=1; $n / ($t1 - $t0)" | bc) - -"
}

declare -A res
for r in $(seq "$ROUNDS"); do
  order="emb etcd"; [ $((r % 2)) = 0 ] && order="etcd emb"
  for kind in api cli; do
    for n in 1 16; do
      for s in $order; do
        line=$($kind "$s" "$n" "$r$kind$n")
        res[$kind,$n,$s]+="$line"$'\n'
        echo "round $r $kind clients=$n $s: $line" >&2
      done
    done
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\n| path | clients | embedded pairs/s | etcd pairs/s | ratio | embedded p99 ms | etcd p99 ms |\n|---|---:|---:|---:|---:|---:|---:|\n'
for kind in api cli; do
  for n in 1 16; do
    e=$(echo -n "${res[$kind,$n,emb]}" | awk '{print $1}' | median)
    t=$(echo -n "${res[$kind,$n,etcd]}" | awk '{print $1}' | median)
    ep=$(echo -n "${res[$kind,$n,emb]}" | awk '{print $3}' | median)
    tp=$(echo -n "${res[$kind,$n,etcd]}" | awk '{print $3}' | median)
    printf '| %s | %s | %s | %s | %.2fx | %s | %s |\n' "$kind" "$n" "$e" "$t" "$(echo "$e / $t" | bc -l)" "$ep" "$tp"
  done
done
