#!/usr/bin/env bash
# shoal-overlay throughput, one run: iperf3 container to container across two
# namespace "nodes" on an underlay bridge, beside
#   - the plain underlay (node to node),
#   - a hand-built kernel VXLAN with Docker's fixed MTU 1450,
#   - shoal's VXLAN (MTU derived from the underlay),
# on a 1500-byte and a 9000-byte underlay; and encrypted networks: shoal's
# userspace WireGuard device (hosted by `shoal-overlay run`) against the
# same VXLAN-over-WireGuard path through wireguard-go, both built side by
# side and measured in ROUNDS (default 3) interleaved rounds, the first of
# the pair alternating; the table gives the medians, every sample follows.
#
# Everything lives in namespaces named with a per-run prefix; nothing touches
# the root namespace. A trap removes every namespace, process and UAPI socket
# it made, on any exit. Needs root, iproute2, iperf3, wireguard-go,
# wireguard-tools, python3. DUR (default 5) sets each iperf3 run's seconds.
set -euo pipefail

DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$ROOT/target/release/shoal-overlay
P=bo$$
U=${P}u
WORK=$(mktemp -d /tmp/shoal-bench-overlay.XXXXXX)
LOG=$WORK/commands.log
PIDS=()
SOCKS=()

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^(shoal\.)?$P"); do ip netns delete "$ns"; done
    for s in "${SOCKS[@]}"; do rm -f "$s"; done
    rm -f /run/shoal/${P}n*.lock
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "+ $*" >>"$LOG"; }
x() { say "$@"; "$@"; }

for t in iperf3 wireguard-go wg python3; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install --no-install-recommends iperf3 wireguard-go wireguard-tools)" >&2; exit 2; }
done
(cd "$ROOT" && cargo build --release -q -p shoal-overlay)

# ---- fixtures ---------------------------------------------------------------
lab() { # MTU: fresh underlay with nodes n1..n4 (198.18.0.1..4)
    local mtu=$1
    x ip netns add $U
    x ip -n $U link add ubr0 type bridge
    x ip -n $U link set ubr0 up
    for i in 1 2 3 4; do
        x ip netns add $P"n$i"
        x ip -n $U link add u$i mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns $P"n$i"
        x ip -n $U link set u$i master ubr0 up
        x ip -n $P"n$i" addr add 198.18.0.$i/24 dev eth0
        x ip -n $P"n$i" link set eth0 up
        x ip -n $P"n$i" link set lo up
    done
}

teardown() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^(shoal\.)?$P"); do ip netns delete "$ns"; done
    for s in "${SOCKS[@]}"; do rm -f "$s"; done
}

container() { # NAME
    x ip netns add $P"$1"
    x ip -n $P"$1" link set lo up
}

# hand-built VXLAN on node N (the Docker recipe): bridge, vxlan (learning off,
# static FDB + neighbour), veth to container C with IP/MAC and MTU.
hand_vxlan() { # N LOCAL REMOTE C IP PEER_IP MAC PEER_MAC VNI MTU
    local n=$P$1 c=$P$4
    x ip -n "$n" link add hvx$9 type vxlan id "$9" local "$2" dstport 4789 nolearning
    x ip -n "$n" link add hbr$9 type bridge
    x ip -n "$n" link set hvx$9 master hbr$9
    x ip -n "$n" link set hvx$9 mtu "${10}" up
    x ip -n "$n" link set hbr$9 mtu "${10}" up
    container "$4"
    x ip -n "$n" link add hv$4 mtu "${10}" type veth peer name eth0 mtu "${10}" netns "$c"
    x ip -n "$n" link set hv$4 master hbr$9 up
    x ip -n "$c" link set eth0 address "$7" up
    x ip -n "$c" addr add "$5"/24 dev eth0
    x ip -n "$c" neigh add "$6" lladdr "$8" dev eth0 nud permanent
    x bridge -n "$n" fdb append "$8" dev hvx$9 dst "$3" self permanent
}

iperf() { # SERVER_NS SERVER_IP CLIENT_NS -> Gbit/s (receiver)
    ip netns exec "$1" iperf3 -s -1 -B "$2" >/dev/null 2>&1 &
    local spid=$!
    sleep 0.5
    say "ip netns exec $1 iperf3 -s -1 -B $2 &; ip netns exec $3 iperf3 -c $2 -t $DUR -J"
    local json
    json=$(timeout $((DUR + 20)) ip netns exec "$3" iperf3 -c "$2" -t "$DUR" -J)
    wait "$spid" 2>/dev/null || true
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' <<<"$json"
}

mtu_of() { ip -n "$1" -o link show "$2" | sed 's/.* mtu \([0-9]*\) .*/\1/'; }

shoal_config() { # NODE I PEER_I KEY PEER_PUB ENCRYPTED_TOO
    local n=$P"n$1"
    cat <<TOML
[node]
name = "$n"
netns = "$n"
underlay_ip = "198.18.0.$1"

[wireguard]
private_key = "$4"
listen_port = 51820
tunnel_ip = "100.96.0.$1/24"
[[wireguard.peer]]
public_key = "$5"
endpoint = "198.18.0.$3:51820"
tunnel_ip = "100.96.0.$3"

[[network]]
name = "front"
subnet = "10.77.0.0/24"
gateway = "10.77.0.1"
vni = 4096
[[network.endpoint]]
id = "s$1"
netns = "${P}s$1"
ip = "10.77.0.1$1"
[[network.remote]]
ip = "10.77.0.1$3"
node_ip = "198.18.0.$3"
TOML
    if [ "$6" = yes ]; then
        cat <<TOML

[[network]]
name = "sec"
subnet = "10.78.0.0/24"
gateway = "10.78.0.1"
vni = 5000
encrypted = true
[[network.endpoint]]
id = "e$1"
netns = "${P}e$1"
ip = "10.78.0.1$1"
[[network.remote]]
ip = "10.78.0.1$3"
node_ip = "100.96.0.$3"
TOML
    fi
}

start_shoal() { # I PEER_I KEY PEER_PUB ENCRYPTED_TOO
    container "s$1"
    [ "$5" = yes ] && container "e$1"
    shoal_config "$1" "$1" "$2" "$3" "$4" "$5" >"$WORK/n$1.toml"
    local dev
    dev=$("$BIN" diff "$WORK/n$1.toml" | sed -n 's/^wireguard: \([^ ]*\) .*/\1/p' || true)
    [ -n "$dev" ] && SOCKS+=("/var/run/wireguard/$dev.sock")
    say "shoal-overlay run $WORK/n$1.toml  # file:"; sed 's/private_key = .*/private_key = "<hidden>"/; s/^/    /' "$WORK/n$1.toml" >>"$LOG"
    "$BIN" run "$WORK/n$1.toml" >"$WORK/run$1.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q '^ready' "$WORK/run$1.out" && return 0; sleep 0.1; done
    cat "$WORK/run$1.out" >&2; exit 1
}

# wireguard-go on node I with tunnel 100.97.0.I, then the hand VXLAN over it.
start_wggo() { # I PEER_I KEY PEER_PUB
    local n=$P"n$1" dev=${P}g$1
    SOCKS+=("/var/run/wireguard/$dev.sock")
    say "ip netns exec $n wireguard-go -f $dev &"
    ip netns exec "$n" wireguard-go -f "$dev" >"$WORK/wggo$1.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S /var/run/wireguard/$dev.sock ] && break; sleep 0.1; done
    echo "$3" >"$WORK/k$1"
    x wg set "$dev" private-key "$WORK/k$1" listen-port 51821 peer "$4" endpoint 198.18.0.$2:51821 allowed-ips 100.97.0.$2/32
    x ip -n "$n" addr add 100.97.0.$1/24 dev "$dev"
    x ip -n "$n" link set "$dev" mtu 1420 up
}

median() { printf '%s\n' "$@" | python3 -c 'import sys,statistics; print("%.2f" % statistics.median(float(l) for l in sys.stdin))'; }

declare -A R M CU CH CS
SE=() SG=()
key() { wg genkey; }
pub() { wg pubkey <<<"$1"; }

# ---- 1500 and 9000 underlays --------------------------------------------------
for MTU in 1500 9000; do
    lab "$MTU"
    hand_vxlan n1 198.18.0.1 198.18.0.2 h1 10.79.0.11 10.79.0.12 02:42:0a:4f:00:0b 02:42:0a:4f:00:0c 42 1450
    hand_vxlan n2 198.18.0.2 198.18.0.1 h2 10.79.0.12 10.79.0.11 02:42:0a:4f:00:0c 02:42:0a:4f:00:0b 42 1450
    K1=$(key); K2=$(key)
    ENC=no; [ "$MTU" = 1500 ] && ENC=yes
    start_shoal 1 2 "$K1" "$(pub "$K2")" $ENC
    start_shoal 2 1 "$K2" "$(pub "$K1")" $ENC
    M[shoal$MTU]=$(mtu_of $P"s1" eth0)
    # Clear paths: underlay, hand-built and shoal side by side, in
    # interleaved rounds (hand-built first in odd rounds, shoal in even).
    for r in $(seq "$ROUNDS"); do
        say "# clear round $r of $ROUNDS on MTU $MTU, $( ((r % 2)) && echo hand-built || echo shoal) first"
        CU[$MTU]+=" $(iperf $P"n2" 198.18.0.2 $P"n1")"
        if ((r % 2)); then
            CH[$MTU]+=" $(iperf $P"h2" 10.79.0.12 $P"h1")"
            CS[$MTU]+=" $(iperf $P"s2" 10.77.0.12 $P"s1")"
        else
            CS[$MTU]+=" $(iperf $P"s2" 10.77.0.12 $P"s1")"
            CH[$MTU]+=" $(iperf $P"h2" 10.79.0.12 $P"h1")"
        fi
    done
    # shellcheck disable=SC2086 # word splitting of the samples is meant
    R[under$MTU]=$(median ${CU[$MTU]})
    # shellcheck disable=SC2086
    R[hand$MTU]=$(median ${CH[$MTU]})
    # shellcheck disable=SC2086
    R[shoal$MTU]=$(median ${CS[$MTU]})
    if [ "$ENC" = yes ]; then
        M[enc]=$(mtu_of $P"e1" eth0)
        M[wg]=$(mtu_of $P"n1" "$(sed -n 's/^wireguard: \([^ ]*\) .*/\1/p' "$WORK/run1.out")")
        G3=$(key); G4=$(key)
        start_wggo 3 4 "$G3" "$(pub "$G4")"
        start_wggo 4 3 "$G4" "$(pub "$G3")"
        hand_vxlan n3 100.97.0.3 100.97.0.4 g3 10.80.0.13 10.80.0.14 02:42:0a:50:00:0d 02:42:0a:50:00:0e 43 1370
        hand_vxlan n4 100.97.0.4 100.97.0.3 g4 10.80.0.14 10.80.0.13 02:42:0a:50:00:0e 02:42:0a:50:00:0d 43 1370
        for r in $(seq "$ROUNDS"); do
            say "# encrypted round $r of $ROUNDS, $( ((r % 2)) && echo wireguard-go || echo shoal) first"
            if ((r % 2)); then
                SG+=("$(iperf $P"g4" 10.80.0.14 $P"g3")")
                SE+=("$(iperf $P"e2" 10.78.0.12 $P"e1")")
            else
                SE+=("$(iperf $P"e2" 10.78.0.12 $P"e1")")
                SG+=("$(iperf $P"g4" 10.80.0.14 $P"g3")")
            fi
        done
        R[enc]=$(median "${SE[@]}")
        R[wggo]=$(median "${SG[@]}")
    fi
    teardown
done

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
cat <<OUT
| path | underlay MTU | overlay MTU | Gbit/s | ratio |
|---|---|---|---|---|
| underlay, node to node, median of $ROUNDS | 1500 | - | ${R[under1500]} | |
| hand-built kernel VXLAN (Docker's fixed MTU), median of $ROUNDS | 1500 | 1450 | ${R[hand1500]} | 1.00 |
| shoal VXLAN, median of $ROUNDS | 1500 | ${M[shoal1500]} | ${R[shoal1500]} | $(ratio "${R[shoal1500]}" "${R[hand1500]}") x hand-built |
| underlay, node to node, median of $ROUNDS | 9000 | - | ${R[under9000]} | |
| hand-built kernel VXLAN (Docker's fixed MTU), median of $ROUNDS | 9000 | 1450 | ${R[hand9000]} | 1.00 |
| shoal VXLAN, median of $ROUNDS | 9000 | ${M[shoal9000]} | ${R[shoal9000]} | $(ratio "${R[shoal9000]}" "${R[hand9000]}") x hand-built |
| VXLAN over wireguard-go (by hand), median of $ROUNDS | 1500 | 1370 | ${R[wggo]} | 1.00 |
| shoal encrypted, userspace device, WireGuard MTU ${M[wg]}, median of $ROUNDS | 1500 | ${M[enc]} | ${R[enc]} | $(ratio "${R[enc]}" "${R[wggo]}") x wireguard-go |
OUT
echo
for MTU in 1500 9000; do
    echo "clear rounds on MTU $MTU (Gbit/s; underlay / hand-built / shoal, odd rounds ran hand-built first):"
    read -ra u <<<"${CU[$MTU]}"; read -ra h <<<"${CH[$MTU]}"; read -ra c <<<"${CS[$MTU]}"
    for i in "${!h[@]}"; do
        echo "  round $((i + 1)): ${u[$i]} / ${h[$i]} / ${c[$i]}, $(ratio "${c[$i]}" "${h[$i]}")x"
    done
done
echo
echo "encrypted rounds (Gbit/s; odd rounds ran wireguard-go first):"
for i in "${!SE[@]}"; do
    echo "  round $((i + 1)): wireguard-go ${SG[$i]}, shoal ${SE[$i]}, $(ratio "${SE[$i]}" "${SG[$i]}")x"
done
echo
echo "exact commands:"
cat "$LOG"
