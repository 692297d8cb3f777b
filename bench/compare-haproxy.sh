#!/usr/bin/env bash
# Side-by-side benchmark of shoal-lb and HAProxy on 127.0.0.1 loopback.
#
#   throughput:      iperf3 -> proxy -> iperf3 server (single backend), -P 1 and -P 4
#   connection rate: wrk, one new TCP connection per request ("Connection: close"),
#                    -> proxy -> nginx (one worker, two ports, round-robin over both)
#
# Each proxy runs on one thread pinned to one core (shoal-lb --threads 1,
# HAProxy nbthread 1, both under `taskset -c $PROXY_CPU`); load generators and
# backends run pinned to `$LOAD_CPU`. Runs are interleaved (direct, shoal,
# haproxy, with the proxy order swapped every round) and repeated $ROUNDS
# times; the table shows medians and the ratio shoal/haproxy. A second table
# shows the CPU time each proxy process used per unit of work (from
# /proc/PID/stat, 10 ms ticks), a figure less sensitive to other load on the
# machine than the rates.
#
# Environment knobs: ROUNDS (3), DUR seconds per run (5), WRK_CONNS (50),
# PORT_BASE (29100; ports PORT_BASE..PORT_BASE+8 are used, below the ephemeral
# range so that no outgoing connection can take them), PROXY_CPU (1),
# LOAD_CPU (0), HAPROXY_SPLICE (1: `option splice-auto`, HAProxy's zero-copy
# mode, the same technique shoal-lb uses; 0: HAProxy's default copying),
# KEEP_TMP (1 keeps the work directory with configs and raw outputs),
# SHOAL_LB (a shoal-lb binary to use instead of building this tree's),
# SHOAL_LB_BEFORE (a second shoal-lb binary, e.g. an older build, measured in
# the same interleaved runs as a column "before").
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
WRK_CONNS=${WRK_CONNS:-50}
PORT_BASE=${PORT_BASE:-29100}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
HAPROXY_SPLICE=${HAPROXY_SPLICE:-1}
KEEP_TMP=${KEEP_TMP:-0}

ADDR=127.0.0.1
P_IPERF=$PORT_BASE                # iperf3 server
P_HTTP1=$((PORT_BASE + 1))        # nginx, first port
P_HTTP2=$((PORT_BASE + 2))        # nginx, second port
P_SHOAL_T=$((PORT_BASE + 3))      # shoal-lb in front of iperf3
P_SHOAL_C=$((PORT_BASE + 4))      # shoal-lb in front of nginx
P_HAP_T=$((PORT_BASE + 5))        # HAProxy in front of iperf3
P_HAP_C=$((PORT_BASE + 6))        # HAProxy in front of nginx

cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '%s\n' "$*" >&2; }

# --- install what is missing (idempotent) ----------------------------------
need=()
for pkg in haproxy iperf3 wrk nginx-light procps util-linux; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Don't let nginx from the package run a default site on port 80 for us.
command -v nginx >/dev/null || { log "nginx missing after install"; exit 1; }

# --- build -----------------------------------------------------------------
if [[ -n ${SHOAL_LB:-} ]]; then
    SHOAL=$SHOAL_LB
else
    log "building shoal-lb (release)"
    cargo build --release -q -p shoal-lb
    SHOAL="$ROOT/target/release/shoal-lb"
fi

# --- work dir, process bookkeeping, cleanup --------------------------------
TMP=$(mktemp -d /tmp/shoal-compare.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait: a process that ignores TERM gets KILL after 3 s.
        for _ in 1 2 3 4 5 6; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range
if ((PORT_BASE + 8 >= eph_lo)); then
    log "warning: ports $PORT_BASE..$((PORT_BASE + 8)) overlap the ephemeral range (from $eph_lo)"
fi
for p in "$P_IPERF" "$P_HTTP1" "$P_HTTP2" "$P_SHOAL_T" "$P_SHOAL_C" "$P_HAP_T" "$P_HAP_C"; do
    if [[ -n $(ss -Htln "sport = :$p") ]]; then
        log "port $p is in use; set PORT_BASE to another value"
        exit 1
    fi
done

# start NAME CPU CMD...: runs CMD pinned to CPU in the background.
start() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.out" 2>&1 &
    PIDS+=($!)
}

wait_port() {
    local port=$1
    for _ in $(seq 100); do
        [[ -n $(ss -Htln "sport = :$port") ]] && return 0
        sleep 0.1
    done
    log "nothing listens on $port after 10 s"
    exit 1
}

# --- backends ----------------------------------------------------------------
start iperf3-server "$LOAD_CPU" iperf3 -s -B "$ADDR" -p "$P_IPERF"

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    server {
        listen $ADDR:$P_HTTP1;
        listen $ADDR:$P_HTTP2;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
start nginx "$LOAD_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx.conf"

# --- proxies ---------------------------------------------------------------
start shoal-t "$PROXY_CPU" "$SHOAL" --threads 1 --log warn \
    --listen "$ADDR:$P_SHOAL_T" --backend "$ADDR:$P_IPERF" --policy round-robin
start shoal-c "$PROXY_CPU" "$SHOAL" --threads 1 --log warn \
    --listen "$ADDR:$P_SHOAL_C" --backend "$ADDR:$P_HTTP1" --backend "$ADDR:$P_HTTP2" \
    --policy round-robin
declare -A PID # PID[target,t|c] = the proxy process serving that test kind
PID[shoal,t]=${PIDS[-2]}
PID[shoal,c]=${PIDS[-1]}
TARGETS=(shoal haproxy)
if [[ -n ${SHOAL_LB_BEFORE:-} ]]; then
    P_BEFORE_T=$((PORT_BASE + 7))
    P_BEFORE_C=$((PORT_BASE + 8))
    start before-t "$PROXY_CPU" "$SHOAL_LB_BEFORE" --threads 1 --log warn \
        --listen "$ADDR:$P_BEFORE_T" --backend "$ADDR:$P_IPERF" --policy round-robin
    start before-c "$PROXY_CPU" "$SHOAL_LB_BEFORE" --threads 1 --log warn \
        --listen "$ADDR:$P_BEFORE_C" --backend "$ADDR:$P_HTTP1" --backend "$ADDR:$P_HTTP2" \
        --policy round-robin
    PID[before,t]=${PIDS[-2]}
    PID[before,c]=${PIDS[-1]}
    TARGETS+=(before)
fi

splice=""
[[ $HAPROXY_SPLICE == 1 ]] && splice="    option splice-auto"
haproxy_cfg() { # FRONT_PORT BACKEND_PORTS...
    local front=$1 i=0
    shift
    cat <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
$splice
frontend f
    bind $ADDR:$front
    default_backend b
backend b
    balance roundrobin
EOF
    for p in "$@"; do
        i=$((i + 1))
        echo "    server s$i $ADDR:$p"
    done
}
haproxy_cfg "$P_HAP_T" "$P_IPERF" >"$TMP/haproxy-t.cfg"
haproxy_cfg "$P_HAP_C" "$P_HTTP1" "$P_HTTP2" >"$TMP/haproxy-c.cfg"
haproxy -c -q -f "$TMP/haproxy-t.cfg"
start haproxy-t "$PROXY_CPU" haproxy -db -f "$TMP/haproxy-t.cfg"
start haproxy-c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy-c.cfg"
PID[haproxy,t]=${PIDS[-2]}
PID[haproxy,c]=${PIDS[-1]}

for p in "$P_IPERF" "$P_HTTP1" "$P_HTTP2" "$P_SHOAL_T" "$P_SHOAL_C" "$P_HAP_T" "$P_HAP_C" \
    ${P_BEFORE_T:-} ${P_BEFORE_C:-}; do
    wait_port "$p"
done
sleep 0.5

# --- one measurement each ---------------------------------------------------
# iperf_run PORT STREAMS -> Mbit/s received
iperf_run() {
    local port=$1 streams=$2 out
    out=$(timeout $((DUR + 20)) taskset -c "$LOAD_CPU" \
        iperf3 -c "$ADDR" -p "$port" -t "$DUR" -P "$streams" -f m 2>&1) || {
        log "iperf3 to $port failed: $out"
        echo 0
        return
    }
    echo "$out" >>"$TMP/iperf3.log"
    echo "$out" | grep receiver | tail -1 |
        awk '{for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1)}'
}

# wrk_run PORT -> requests/s (each on a new connection)
wrk_run() {
    local port=$1 out errs
    out=$(timeout $((DUR + 20)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$WRK_CONNS" -d"${DUR}s" -H "Connection: close" "http://$ADDR:$port/" 2>&1) || {
        log "wrk to $port failed: $out"
        echo 0
        return
    }
    echo "$out" >>"$TMP/wrk.log"
    errs=$(echo "$out" | grep -E "Socket errors|Non-2xx" || true)
    [[ -n $errs ]] && log "  wrk to $port: $errs"
    echo "$out" | awk '/^Requests\/sec:/ {print $2}'
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# CPU ticks (utime + stime) a process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_HZ=$(getconf CLK_TCK)

declare -A R # R[test,target] = space-separated samples
declare -A C # C[test,target] = proxy CPU cost samples (per GB or per connection)
TESTS=("iperf3 -P 1 (Mbit/s)" "iperf3 -P 4 (Mbit/s)" "conn/s (wrk, Connection: close)")
measure() { # TEST_INDEX TARGET
    local t=$1 target=$2 port v kind pid=0 t0=0 t1=0 cost=""
    kind=$([[ $t == 2 ]] && echo c || echo t)
    [[ $target != direct ]] && pid=${PID[$target,$kind]}
    ((pid)) && t0=$(ticks "$pid")
    case $t in
        0 | 1)
            case $target in
                direct) port=$P_IPERF ;; shoal) port=$P_SHOAL_T ;;
                haproxy) port=$P_HAP_T ;; before) port=$P_BEFORE_T ;;
            esac
            v=$(iperf_run "$port" $((t == 0 ? 1 : 4)))
            ;;
        2)
            case $target in
                direct) port=$P_HTTP1 ;; shoal) port=$P_SHOAL_C ;;
                haproxy) port=$P_HAP_C ;; before) port=$P_BEFORE_C ;;
            esac
            v=$(wrk_run "$port")
            ;;
    esac
    if ((pid)); then
        t1=$(ticks "$pid")
        # iperf3: proxy CPU ms per GB moved; wrk: proxy CPU us per connection.
        cost=$(awk -v d=$((t1 - t0)) -v hz="$TICK_HZ" -v v="$v" -v dur="$DUR" -v k="$kind" 'BEGIN {
            if (v <= 0) { print 0; exit }
            cpu = d / hz
            if (k == "t") printf "%.1f", cpu * 1000 / (v * dur / 8 / 1000)
            else printf "%.1f", cpu * 1e6 / (v * dur) }')
        C[$t,$target]="${C[$t,$target]:-} $cost"
    fi
    R[$t,$target]="${R[$t,$target]:-} $v"
    log "  round $r  ${TESTS[$t]}  $target: $v${cost:+  (proxy CPU $cost)}"
}

log "running $ROUNDS rounds of ${DUR}s runs (proxies on CPU $PROXY_CPU, load on CPU $LOAD_CPU)"
for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then order=("${TARGETS[@]}"); else order=(haproxy shoal ${SHOAL_LB_BEFORE:+before}); fi
    for t in 0 1 2; do
        measure "$t" direct
        for target in "${order[@]}"; do
            measure "$t" "$target"
        done
    done
done

# --- report ----------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
before_col=$([[ -n ${SHOAL_LB_BEFORE:-} ]] && echo 1 || echo 0)
echo
echo "shoal-lb vs HAProxy on $ADDR, medians of $ROUNDS interleaved ${DUR}s runs"
echo "(proxies pinned to CPU $PROXY_CPU with one thread; load and backends on CPU $LOAD_CPU;"
echo " HAProxy splice-auto: $HAPROXY_SPLICE)"
echo
hdr="| test | direct | shoal-lb | haproxy | shoal/haproxy |"
sep="|---|---:|---:|---:|---:|"
if ((before_col)); then
    hdr="$hdr before | before/haproxy |"
    sep="$sep---:|---:|"
fi
echo "$hdr"
echo "$sep"
for t in 0 1 2; do
    # shellcheck disable=SC2086
    d=$(median ${R[$t,direct]})
    # shellcheck disable=SC2086
    s=$(median ${R[$t,shoal]})
    # shellcheck disable=SC2086
    h=$(median ${R[$t,haproxy]})
    line=$(printf '| %s | %.0f | %.0f | %.0f | %s |' "${TESTS[$t]}" "$d" "$s" "$h" "$(ratio "$s" "$h")")
    if ((before_col)); then
        # shellcheck disable=SC2086
        b=$(median ${R[$t,before]})
        line="$line $(printf '%.0f | %s |' "$b" "$(ratio "$b" "$h")")"
    fi
    echo "$line"
done
echo
echo "proxy CPU cost, medians (iperf3: ms of CPU per GB moved; wrk: us of CPU per connection; lower is better)"
echo
hdr="| test | shoal-lb | haproxy | shoal/haproxy |"
sep="|---|---:|---:|---:|"
if ((before_col)); then
    hdr="$hdr before |"
    sep="$sep---:|"
fi
echo "$hdr"
echo "$sep"
for t in 0 1 2; do
    # shellcheck disable=SC2086
    s=$(median ${C[$t,shoal]})
    # shellcheck disable=SC2086
    h=$(median ${C[$t,haproxy]})
    line=$(printf '| %s | %.1f | %.1f | %s |' "${TESTS[$t]}" "$s" "$h" "$(ratio "$s" "$h")")
    if ((before_col)); then
        # shellcheck disable=SC2086
        line="$line $(printf '%.1f |' "$(median ${C[$t,before]})")"
    fi
    echo "$line"
done
echo
echo "samples (rate; proxy CPU cost):"
for t in 0 1 2; do
    for target in direct "${TARGETS[@]}"; do
        printf '  %-32s %-8s %s;%s\n' "${TESTS[$t]}" "$target" "${R[$t,$target]}" "${C[$t,$target]:-}"
    done
done
