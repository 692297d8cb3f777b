#!/usr/bin/env bash
# Side-by-side benchmark of shoal-lb's HTTP mode, nginx and HAProxy as HTTP
# reverse proxies on 127.0.0.1 loopback, keep-alive on both sides.
#
#   (a) saturation: wrk -t1 -c$WRK_CONNS (keep-alive) -> proxy -> nginx
#       backends; requests/s and the proxy's CPU microseconds per request
#   (b) latency:    oha at a fixed rate (half of the slowest proxy's median
#       saturation rate from (a)), keep-alive; p50 / p99 / p99.9
#   (c) direct:     the same client straight to a backend, beside them
#
# Backends: one nginx (worker_processes 1, access_log off) on two ports,
# answering `return 200 "ok\n"`, pinned to $LOAD_CPU with the load generator.
# Proxies, each pinned to $PROXY_CPU with one worker:
#   nginx    worker_processes 1, upstream keepalive 64, proxy_http_version 1.1
#   haproxy  nbthread 1, mode http, http-reuse always, no log
#   shoal    shoal-lb --mode http --threads 1 --log warn
# All three round-robin over both backend ports and, by default, add the same
# client-address headers shoal-lb adds by default (X-Forwarded-For,
# Forwarded, X-Forwarded-Proto); FORWARDED=0 turns them off everywhere.
#
# Runs are interleaved (direct first, then the proxies in an order rotated
# every round) and repeated $ROUNDS times; tables show medians and the ratios
# shoal/nginx and shoal/haproxy. The proxy CPU figures come from
# /proc/PID/stat (utime + stime, 10 ms ticks) before and after each run.
#
# Environment knobs: ROUNDS (3), DUR seconds per saturation run (5),
# LAT_DUR seconds per latency run (5), WRK_CONNS (50), LAT_CONNS (50),
# LAT_RATE (requests/s for (b); default half the slowest proxy's median),
# PORT_BASE (29120; PORT_BASE..PORT_BASE+5 are used), PROXY_CPU (1),
# LOAD_CPU (0), FORWARDED (1), KEEP_TMP (1 keeps the work directory),
# SHOAL_LB (a shoal-lb binary instead of building this tree's),
# SHOAL_LB_BEFORE (a second shoal-lb binary measured in the same interleaved
# runs as "before"), TOOLS (where oha is installed if missing;
# /tmp/shoal-bench-tools).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
LAT_DUR=${LAT_DUR:-5}
WRK_CONNS=${WRK_CONNS:-50}
LAT_CONNS=${LAT_CONNS:-50}
PORT_BASE=${PORT_BASE:-29120}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
FORWARDED=${FORWARDED:-1}
KEEP_TMP=${KEEP_TMP:-0}
TOOLS=${TOOLS:-/tmp/shoal-bench-tools}

ADDR=127.0.0.1
P_B1=$PORT_BASE               # backend nginx, first port
P_B2=$((PORT_BASE + 1))       # backend nginx, second port
P_SHOAL=$((PORT_BASE + 2))    # shoal-lb
P_NGINX=$((PORT_BASE + 3))    # nginx as proxy
P_HAP=$((PORT_BASE + 4))      # HAProxy
P_BEFORE=$((PORT_BASE + 5))   # shoal-lb "before" (optional)

cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '%s\n' "$*" >&2; }

# --- install what is missing (idempotent) ----------------------------------
need=()
for pkg in haproxy wrk nginx-light curl jq procps util-linux; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v nginx >/dev/null || { log "nginx missing after install"; exit 1; }
# A fixed-rate load generator with percentiles: Debian 12 has no wrk2 or
# vegeta, and h2load prints no percentiles, so oha (cargo install).
OHA=$(command -v oha || true)
if [[ -z $OHA ]]; then
    OHA=$TOOLS/bin/oha
    if [[ ! -x $OHA ]]; then
        log "installing oha into $TOOLS (cargo install, a few minutes once)"
        cargo install -q --locked --root "$TOOLS" oha
    fi
fi

# --- build -----------------------------------------------------------------
if [[ -n ${SHOAL_LB:-} ]]; then
    SHOAL=$SHOAL_LB
else
    log "building shoal-lb (release)"
    cargo build --release -q -p shoal-lb
    SHOAL="$ROOT/target/release/shoal-lb"
fi

# --- work dir, process bookkeeping, cleanup --------------------------------
TMP=$(mktemp -d /tmp/shoal-compare-http.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
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
if ((P_BEFORE >= eph_lo)); then
    log "warning: ports $PORT_BASE..$P_BEFORE overlap the ephemeral range (from $eph_lo)"
fi
for p in "$P_B1" "$P_B2" "$P_SHOAL" "$P_NGINX" "$P_HAP" "$P_BEFORE"; do
    if [[ -n $(ss -Htln "sport = :$p") ]]; then
        log "port $p is in use; set PORT_BASE to another value"
        exit 1
    fi
done

start() { # NAME CPU CMD...: runs CMD pinned to CPU in the background
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

nginx_common() { # DIR
    cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
EOF
}
nginx_temp() { # DIR
    cat <<EOF
    access_log off;
    client_body_temp_path $1;
    proxy_temp_path $1;
    fastcgi_temp_path $1;
    uwsgi_temp_path $1;
    scgi_temp_path $1;
EOF
}

# --- backends ----------------------------------------------------------------
mkdir -p "$TMP/backend" "$TMP/nginx-proxy"
{
    nginx_common "$TMP/backend"
    echo "http {"
    nginx_temp "$TMP/backend"
    cat <<EOF
    keepalive_requests 1000000;
    server {
        listen $ADDR:$P_B1;
        listen $ADDR:$P_B2;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
} >"$TMP/backend.conf"
start backend "$LOAD_CPU" nginx -p "$TMP/backend" -c "$TMP/backend.conf"

# --- proxies ---------------------------------------------------------------
declare -A PID # PID[target] = the proxy process
if [[ $FORWARDED == 1 ]]; then
    start shoal "$PROXY_CPU" "$SHOAL" --mode http --threads 1 --log warn \
        --listen "$ADDR:$P_SHOAL" --backend "$ADDR:$P_B1" --backend "$ADDR:$P_B2" \
        --policy round-robin
else
    cat >"$TMP/shoal.toml" <<EOF
[[listener]]
listen = "$ADDR:$P_SHOAL"
backends = ["$ADDR:$P_B1", "$ADDR:$P_B2"]
policy = "round-robin"
mode = "http"
[listener.http]
forwarded_headers = false
EOF
    start shoal "$PROXY_CPU" "$SHOAL" --threads 1 --log warn --config "$TMP/shoal.toml"
fi
PID[shoal]=${PIDS[-1]}
TARGETS=(shoal nginx haproxy)
if [[ -n ${SHOAL_LB_BEFORE:-} ]]; then
    start before "$PROXY_CPU" "$SHOAL_LB_BEFORE" --mode http --threads 1 --log warn \
        --listen "$ADDR:$P_BEFORE" --backend "$ADDR:$P_B1" --backend "$ADDR:$P_B2" \
        --policy round-robin
    PID[before]=${PIDS[-1]}
    TARGETS+=(before)
    [[ $FORWARDED == 1 ]] || log "note: 'before' keeps its forwarded headers (flags only)"
fi

if [[ $FORWARDED == 1 ]]; then
    NGINX_FWD='
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header Forwarded "for=$remote_addr;by=$server_addr;host=\"$http_host\";proto=$scheme";
        proxy_set_header X-Forwarded-Proto $scheme;'
    HAP_FWD='    option forwardfor
    http-request set-header Forwarded "for=%[src];by=%[dst];host=\"%[req.hdr(host)]\";proto=http"
    http-request set-header X-Forwarded-Proto http'
else
    NGINX_FWD=""
    HAP_FWD=""
fi
{
    nginx_common "$TMP/nginx-proxy"
    echo "http {"
    nginx_temp "$TMP/nginx-proxy"
    cat <<EOF
    keepalive_requests 1000000;
    upstream b {
        server $ADDR:$P_B1;
        server $ADDR:$P_B2;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen $ADDR:$P_NGINX;
        location / {
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";$NGINX_FWD
        }
    }
}
EOF
} >"$TMP/nginx-proxy.conf"
nginx -t -q -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy.conf"
start nginx "$PROXY_CPU" nginx -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy.conf"
# PIDS[-1] is nginx's master; the worker does the work.
NGINX_MASTER=${PIDS[-1]}

cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend f
    bind $ADDR:$P_HAP
$HAP_FWD
    default_backend b
backend b
    balance roundrobin
    server s1 $ADDR:$P_B1
    server s2 $ADDR:$P_B2
EOF
haproxy -c -q -f "$TMP/haproxy.cfg"
start haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
PID[haproxy]=${PIDS[-1]}

for p in "$P_B1" "$P_B2" "$P_SHOAL" "$P_NGINX" "$P_HAP" ${SHOAL_LB_BEFORE:+$P_BEFORE}; do
    wait_port "$p"
done
for _ in $(seq 50); do
    PID[nginx]=$(pgrep -P "$NGINX_MASTER" | head -1 || true)
    [[ -n ${PID[nginx]} ]] && break
    sleep 0.1
done
[[ -n ${PID[nginx]} ]] || { log "no nginx proxy worker"; exit 1; }

port_of() {
    case $1 in
        direct) echo "$P_B1" ;; shoal) echo "$P_SHOAL" ;; nginx) echo "$P_NGINX" ;;
        haproxy) echo "$P_HAP" ;; before) echo "$P_BEFORE" ;;
    esac
}

# Every path must answer 200 with the backend's body before measuring.
for target in direct "${TARGETS[@]}"; do
    body=$(curl -sS --max-time 5 "http://$ADDR:$(port_of "$target")/" 2>&1 || true)
    if [[ $body != ok ]]; then
        log "$target does not answer: $body"
        exit 1
    fi
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_HZ=$(getconf CLK_TCK)
now_ns() { date +%s%N; }

median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# --- (a) saturation -----------------------------------------------------------
declare -A RPS CPU UTIL # samples per target
wrk_run() { # TARGET
    local target=$1 port out errs v pid=0 t0 t1 w0 w1 cost="" util=""
    port=$(port_of "$target")
    [[ $target != direct ]] && pid=${PID[$target]}
    ((pid)) && t0=$(ticks "$pid") && w0=$(now_ns)
    out=$(timeout $((DUR + 20)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$WRK_CONNS" -d"${DUR}s" "http://$ADDR:$port/" 2>&1) || {
        log "wrk to $port failed: $out"
        out="Requests/sec: 0"
    }
    ((pid)) && t1=$(ticks "$pid") && w1=$(now_ns)
    echo "== $target" >>"$TMP/wrk.log"
    echo "$out" >>"$TMP/wrk.log"
    errs=$(echo "$out" | grep -E "Socket errors|Non-2xx" || true)
    [[ -n $errs ]] && log "  wrk to $target: $errs"
    v=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    RPS[$target]="${RPS[$target]:-} $v"
    if ((pid)); then
        # CPU us per request, and the share of its core the proxy used.
        read -r cost util < <(awk -v d=$((t1 - t0)) -v hz="$TICK_HZ" -v v="$v" \
            -v dur="$DUR" -v wall=$((w1 - w0)) 'BEGIN {
                cpu = d / hz
                printf "%.1f %.0f\n", (v > 0 ? cpu * 1e6 / (v * dur) : 0), cpu * 1e9 / wall * 100 }')
        CPU[$target]="${CPU[$target]:-} $cost"
        UTIL[$target]="${UTIL[$target]:-} $util"
    fi
    log "  round $r  saturation  $target: $v req/s${cost:+  (proxy CPU $cost us/req, $util% of a core)}"
}

# rotate ARRAY by N: the order of the proxies in round N
rotated() {
    local n=$1 i
    shift
    local a=("$@")
    for ((i = 0; i < ${#a[@]}; i++)); do
        printf '%s ' "${a[$(((i + n) % ${#a[@]}))]}"
    done
}

log "warm-up"
for target in direct "${TARGETS[@]}"; do
    taskset -c "$LOAD_CPU" wrk -t1 -c"$WRK_CONNS" -d1s "http://$ADDR:$(port_of "$target")/" >/dev/null 2>&1 || true
done

log "(a) saturation: $ROUNDS rounds of ${DUR}s wrk -t1 -c$WRK_CONNS (proxies on CPU $PROXY_CPU, load on CPU $LOAD_CPU)"
for r in $(seq "$ROUNDS"); do
    wrk_run direct
    # shellcheck disable=SC2046
    for target in $(rotated $((r - 1)) "${TARGETS[@]}"); do
        wrk_run "$target"
    done
done

# shellcheck disable=SC2086
slowest=$(for t in "${TARGETS[@]}"; do median ${RPS[$t]}; done | sort -g | head -1)
RATE=${LAT_RATE:-$(awk -v s="$slowest" 'BEGIN { printf "%d", s / 2 }')}

# --- (b) latency at a fixed rate ---------------------------------------------------
declare -A P50 P99 P999 LCPU
oha_run() { # TARGET
    local target=$1 port out p50 p99 p999 pid=0 t0 t1 n cost="" ok
    port=$(port_of "$target")
    [[ $target != direct ]] && pid=${PID[$target]}
    ((pid)) && t0=$(ticks "$pid")
    out=$(timeout $((LAT_DUR + 30)) taskset -c "$LOAD_CPU" \
        "$OHA" --no-tui --output-format json --latency-correction -q "$RATE" \
        -z "${LAT_DUR}s" -c "$LAT_CONNS" "http://$ADDR:$port/" 2>"$TMP/oha.err") || {
        log "oha to $port failed: $(cat "$TMP/oha.err")"
        out='{}'
    }
    ((pid)) && t1=$(ticks "$pid")
    echo "== $target" >>"$TMP/oha.log"
    echo "$out" >>"$TMP/oha.log"
    # oha reports seconds; print microseconds.
    read -r p50 p99 p999 n ok < <(echo "$out" | jq -r '[
        ((.latencyPercentiles.p50 // 0) * 1e6 | floor),
        ((.latencyPercentiles.p99 // 0) * 1e6 | floor),
        ((.latencyPercentiles["p99.9"] // 0) * 1e6 | floor),
        ([.statusCodeDistribution[]?] | add // 0),
        (.statusCodeDistribution["200"] // 0)] | @tsv')
    ((n != ok)) && log "  oha to $target: $((n - ok)) of $n not 200"
    P50[$target]="${P50[$target]:-} $p50"
    P99[$target]="${P99[$target]:-} $p99"
    P999[$target]="${P999[$target]:-} $p999"
    if ((pid)); then
        cost=$(awk -v d=$((t1 - t0)) -v hz="$TICK_HZ" -v n="$n" 'BEGIN {
            printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0) }')
        LCPU[$target]="${LCPU[$target]:-} $cost"
    fi
    log "  round $r  latency  $target: p50 ${p50} us  p99 ${p99} us  p99.9 ${p999} us  ($n requests${cost:+, proxy CPU $cost us/req})"
}

log "(b) latency: $ROUNDS rounds of ${LAT_DUR}s oha -q $RATE -c $LAT_CONNS (half of the slowest proxy's median, $slowest req/s)"
for r in $(seq "$ROUNDS"); do
    oha_run direct
    # shellcheck disable=SC2046
    for target in $(rotated $((r - 1)) "${TARGETS[@]}"); do
        oha_run "$target"
    done
done

# --- report ----------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# shellcheck disable=SC2086
med() { median ${1:-0}; }

echo
echo "HTTP proxies on $ADDR, keep-alive both sides, medians of $ROUNDS interleaved runs"
echo "(proxies pinned to CPU $PROXY_CPU with one worker; wrk/oha and the backend nginx on CPU $LOAD_CPU;"
echo " forwarded headers: $FORWARDED)"
echo
echo "(a) saturation, wrk -t1 -c$WRK_CONNS -d${DUR}s"
echo
echo "| target | req/s | proxy CPU us/req | proxy core use |"
echo "|---|---:|---:|---:|"
printf '| direct (backend) | %.0f | - | - |\n' "$(med "${RPS[direct]}")"
for t in "${TARGETS[@]}"; do
    printf '| %s | %.0f | %.1f | %s %% |\n' "$t" "$(med "${RPS[$t]}")" "$(med "${CPU[$t]}")" "$(med "${UTIL[$t]}")"
done
echo
echo "(b) latency at $RATE req/s (oha -q $RATE -c $LAT_CONNS -z ${LAT_DUR}s --latency-correction), microseconds"
echo
echo "| target | p50 | p99 | p99.9 | proxy CPU us/req |"
echo "|---|---:|---:|---:|---:|"
printf '| direct (backend) | %s | %s | %s | - |\n' "$(med "${P50[direct]}")" "$(med "${P99[direct]}")" "$(med "${P999[direct]}")"
for t in "${TARGETS[@]}"; do
    printf '| %s | %s | %s | %s | %.1f |\n' "$t" "$(med "${P50[$t]}")" "$(med "${P99[$t]}")" "$(med "${P999[$t]}")" "$(med "${LCPU[$t]}")"
done
echo
echo "ratios, shoal-lb over the other (req/s: higher is better; CPU, p50, p99: lower is better)"
echo
hdr="| ratio | shoal/nginx | shoal/haproxy |"
sep="|---|---:|---:|"
if [[ -n ${SHOAL_LB_BEFORE:-} ]]; then
    hdr="$hdr shoal/before |"
    sep="$sep---:|"
fi
echo "$hdr"
echo "$sep"
row() { # LABEL ARRAYNAME
    local label=$1 s line
    local -n arr=$2
    s=$(med "${arr[shoal]}")
    line="| $label | $(ratio "$s" "$(med "${arr[nginx]}")") | $(ratio "$s" "$(med "${arr[haproxy]}")") |"
    [[ -n ${SHOAL_LB_BEFORE:-} ]] && line="$line $(ratio "$s" "$(med "${arr[before]}")") |"
    echo "$line"
}
row "req/s at saturation" RPS
row "CPU us/req at saturation" CPU
row "p50 at $RATE req/s" P50
row "p99 at $RATE req/s" P99
echo
echo "samples in round order:"
for t in direct "${TARGETS[@]}"; do
    printf '  %-8s req/s%s; us/req%s; core%%%s\n' "$t" "${RPS[$t]}" "${CPU[$t]:- -}" "${UTIL[$t]:- -}"
    printf '  %-8s p50%s; p99%s; p99.9%s\n' "$t" "${P50[$t]}" "${P99[$t]}" "${P999[$t]}"
done
