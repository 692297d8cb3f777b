#!/usr/bin/env bash
# dnsperf against shoal-dns and against Unbound serving the same names as
# local-data, each server pinned to one core (taskset), dnsperf on another,
# same query mix (service, tasks., SRV, NXDOMAIN), all on 127.0.0.1.
# Then shoal-dns with 1 000 000 task records: load time, memory, reload time.
# Writes bench/dns/RESULTS.md (override with OUT=...).
#
# Then, if valgrind is there, instructions per query under callgrind for both
# (20 000 queries at 2000/s, minus a run with none): a count that other load
# on the machine does not skew, unlike queries/s.
#
# Needs: dnsperf, unbound, taskset (util-linux), python3; valgrind optional.
# Knobs: DURATION (s, default 10), SERVICES (1000), TASKS (3 per service),
# CLIENTS (dnsperf -c, 16), OUTSTANDING (dnsperf -q, 200), SERVER_CPU (0),
# CLIENT_CPU (1), BIG_SERVICES x BIG_TASKS (1000 x 1000; BIG_TASKS=0 skips).
# CALLGRIND_ONLY=1: only the callgrind counts, printed, RESULTS.md untouched
# (=shoal: shoal-dns's only); the A/B measure while optimizing: quick, and
# steady under other load. CG_KEEP=DIR keeps the callgrind output files
# there (NAME.none.out, NAME.q20k.txt.out) for callgrind_annotate.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-10}
SERVICES=${SERVICES:-1000}
TASKS=${TASKS:-3}
CLIENTS=${CLIENTS:-16}
OUTSTANDING=${OUTSTANDING:-200}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BIG_SERVICES=${BIG_SERVICES:-1000}
BIG_TASKS=${BIG_TASKS:-1000}
OUT=${OUT:-$HERE/RESULTS.md}
CALLGRIND_ONLY=${CALLGRIND_ONLY:-0}
CG_KEEP=${CG_KEEP:-}

for tool in dnsperf unbound taskset python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: needs $tool (apt-get install dnsperf unbound util-linux python3)" >&2; exit 2; }
done

cargo build --release -p shoal-dns --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/shoal-dns"

WORK=$(mktemp -d /tmp/shoal-dns-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
LOAD_AT_START=$(cut -d' ' -f1 /proc/loadavg)
if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 1.0 else 1)" "$LOAD_AT_START"; then
    echo "run.sh: warning: load average $LOAD_AT_START; results will be noisy" >&2
fi
PORT_SHOAL=$(free_port)
PORT_UNBOUND=$(free_port)

python3 "$HERE/gen.py" "$WORK" --services "$SERVICES" --tasks "$TASKS" \
    --port-shoal "$PORT_SHOAL" --port-unbound "$PORT_UNBOUND"

# Waits until a server on port $1 answers a query (10 s at most).
wait_answering() {
    python3 - "$1" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
q = bytes.fromhex("abcd01000001000000000000") + b"\x05web-0\x05shoal\x00\x00\x01\x00\x01"
deadline = time.time() + float(__import__("os").environ.get("WAIT_TIMEOUT", "10"))
while time.time() < deadline:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(q, ("127.0.0.1", port))
        if s.recvfrom(4096)[0][:2] == b"\xab\xcd":
            sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("server on port %d never answered" % port)
PY
}

# CPU ticks (user + system) used so far by process $1.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs dnsperf against port $1 (server pid $2), prints
# "QPS AVG_LATENCY_MS LOST SERVER_CPU_PERCENT" (100 = one core saturated).
perf() {
    local before after
    before=$(ticks "$2")
    taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/queries.txt" \
        -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 > "$WORK/perf.$1.txt" 2>&1
    after=$(ticks "$2")
    awk -v cpu="$(( (after - before) * 100 / ($(getconf CLK_TCK) * DURATION) ))" \
        '/Queries per second:/ {q=$4} /Average Latency/ {l=$4*1000} /Queries lost:/ {lost=$3}
         END {printf "%.0f %.3f %s %s\n", q, l, lost, cpu}' "$WORK/perf.$1.txt"
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}

if [ "$CALLGRIND_ONLY" = 0 ]; then
echo "shoal-dns on cpu $SERVER_CPU ..." >&2
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" --config "$WORK/shoal.toml" --threads 1 > "$WORK/shoal.out" &
SHOAL_PID=$!
PIDS+=("$SHOAL_PID")
wait_answering "$PORT_SHOAL" || { cat "$WORK/shoal.out" >&2; exit 1; }
read -r SHOAL_QPS SHOAL_LAT SHOAL_LOST SHOAL_CPU < <(perf "$PORT_SHOAL" "$SHOAL_PID")
stop "$SHOAL_PID"

echo "unbound on cpu $SERVER_CPU ..." >&2
taskset -c "$SERVER_CPU" unbound -d -c "$WORK/unbound.conf" > "$WORK/unbound.out" 2>&1 &
UNBOUND_PID=$!
PIDS+=("$UNBOUND_PID")
wait_answering "$PORT_UNBOUND" || { cat "$WORK/unbound.out" >&2; exit 1; }
read -r UB_QPS UB_LAT UB_LOST UB_CPU < <(perf "$PORT_UNBOUND" "$UNBOUND_PID")
stop "$UNBOUND_PID"
fi

per_core() { python3 -c "import sys; q,c=float(sys.argv[1]),float(sys.argv[2]); print('%.0f' % (q*100/c) if c else 'n/a')" "$1" "$2"; }
# Total instructions of "$@" under callgrind, serving port $1 with query
# file $2 (or "none") sent once at 2000 queries/s.
callgrind_total() {
    local port=$1 queries=$2 out="$WORK/cg.$RANDOM" queries_name
    queries_name=$(basename "$2")
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" > "$out.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    WAIT_TIMEOUT=120 wait_answering "$port" || { cat "$out.log" >&2; exit 1; }
    if [ "$queries" != none ]; then
        dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -n 1 -Q 2000 -c 4 -t 5 > "$out.perf" 2>&1
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    if [ -n "$CG_KEEP" ]; then
        mkdir -p "$CG_KEEP"
        cp "$out" "$CG_KEEP/$(basename "$1").$queries_name.out"
    fi
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b) if b else 'n/a')" "$1" "$2"; }

CG_LINE="(skipped: no valgrind)"
if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
    echo "callgrind: instructions per query ..." >&2
    head -20000 "$WORK/queries.txt" > "$WORK/q20k.txt"
    S0=$(RUST_LOG=warn callgrind_total "$PORT_SHOAL" none "$BIN" --config "$WORK/shoal.toml" --threads 1)
    S1=$(RUST_LOG=warn callgrind_total "$PORT_SHOAL" "$WORK/q20k.txt" "$BIN" --config "$WORK/shoal.toml" --threads 1)
    if [ "$CALLGRIND_ONLY" = shoal ]; then
        U0=0 U1=0
    else
        U0=$(callgrind_total "$PORT_UNBOUND" none unbound -d -c "$WORK/unbound.conf")
        U1=$(callgrind_total "$PORT_UNBOUND" "$WORK/q20k.txt" unbound -d -c "$WORK/unbound.conf")
    fi
    S_IPQ=$(( (S1 - S0) / 20000 ))
    U_IPQ=$(( (U1 - U0) / 20000 ))
    CG_LINE="| $S_IPQ | $U_IPQ | **$(ratio "$U_IPQ" "$S_IPQ")x** |"
fi
if [ "$CALLGRIND_ONLY" != 0 ]; then
    [ -n "${S_IPQ:-}" ] || { echo "run.sh: CALLGRIND_ONLY needs valgrind" >&2; exit 2; }
    if [ "$CALLGRIND_ONLY" = shoal ]; then
        echo "instructions/query: shoal-dns $S_IPQ"
    else
        echo "instructions/query: shoal-dns $S_IPQ, unbound $U_IPQ, unbound/shoal $(ratio "$U_IPQ" "$S_IPQ")x"
    fi
    exit 0
fi

BIG_LINE="(skipped: BIG_TASKS=0)"
if [ "$BIG_TASKS" -gt 0 ]; then
    echo "shoal-dns with $((BIG_SERVICES * BIG_TASKS)) task records ..." >&2
    python3 "$HERE/gen.py" "$WORK" --big-only --services "$BIG_SERVICES" --tasks "$BIG_TASKS"
    BIG_BYTES=$(stat -c %s "$WORK/big.toml")
    START=$(date +%s.%N)
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" --config "$WORK/big.toml" --threads 1 > "$WORK/big.out" &
    BIG_PID=$!
    PIDS+=("$BIG_PID")
    until grep -q '^ready$' "$WORK/big.out"; do
        kill -0 "$BIG_PID" || { echo "shoal-dns died loading big.toml" >&2; exit 1; }
        sleep 0.05
    done
    LOAD_S=$(python3 -c "import sys,time; print('%.2f' % (time.time()-float(sys.argv[1])))" "$START")
    RSS_MB=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$BIG_PID/status")
    START=$(date +%s.%N)
    kill -HUP "$BIG_PID"
    until grep -qE '^(reloaded|reload-failed)$' "$WORK/big.out"; do sleep 0.05; done
    RELOAD_S=$(python3 -c "import sys,time; print('%.2f' % (time.time()-float(sys.argv[1])))" "$START")
    PEAK_MB=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$BIG_PID/status")
    RSS2_MB=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$BIG_PID/status")
    stop "$BIG_PID"
    BIG_LINE="| $((BIG_SERVICES * BIG_TASKS)) | $((BIG_BYTES / 1048576)) MiB | ${LOAD_S} s | ${RSS_MB} MiB | ${RELOAD_S} s | ${RSS2_MB} MiB | ${PEAK_MB} MiB |"
fi

{
    echo "# shoal-dns vs Unbound (bench/dns/run.sh)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "unbound $(unbound -V | head -1 | awk '{print $2}'), dnsperf $(dpkg-query -W -f '${Version}' dnsperf 2>/dev/null || echo '?')."
    echo "Each server on CPU $SERVER_CPU (shoal-dns --threads 1, unbound num-threads: 1), dnsperf on CPU $CLIENT_CPU,"
    echo "$DURATION s, -c $CLIENTS -q $OUTSTANDING; $SERVICES services x $TASKS tasks;"
    echo "query mix 1:1:1:1 of web-N.shoal A, tasks.web-N.shoal A, _http._tcp.web-N.shoal SRV, nope-N.shoal A (NXDOMAIN)."
    echo
    SHOAL_PER_CORE=$(per_core "$SHOAL_QPS" "$SHOAL_CPU")
    UB_PER_CORE=$(per_core "$UB_QPS" "$UB_CPU")
    echo "| server | queries/s | avg latency | lost | server CPU | queries per CPU-second |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| shoal-dns | $SHOAL_QPS | ${SHOAL_LAT} ms | $SHOAL_LOST | ${SHOAL_CPU}% | $SHOAL_PER_CORE |"
    echo "| unbound | $UB_QPS | ${UB_LAT} ms | $UB_LOST | ${UB_CPU}% | $UB_PER_CORE |"
    echo "| **ratio shoal/unbound** | **$(ratio "$SHOAL_QPS" "$UB_QPS")x** | $(ratio "$SHOAL_LAT" "$UB_LAT")x | | | **$(ratio "$SHOAL_PER_CORE" "$UB_PER_CORE")x** |"
    echo
    echo "Server CPU is the share of one core the server used during the run; below ~95% the"
    echo "server was not the bottleneck (dnsperf, on its own core, or other load was), and"
    echo "queries per CPU-second (queries/s divided by that share) is the fairer comparison."
    echo "Load average at the start: $LOAD_AT_START (anything else running skews both)."
    echo
    echo "Instructions per query in user space (callgrind; 20 000 queries of the same mix at 2000/s,"
    echo "less a run without queries; includes each server's wake-up cost at that rate):"
    echo
    echo "| shoal-dns | unbound | unbound/shoal (above 1: shoal does less work) |"
    echo "|---:|---:|---:|"
    echo "$CG_LINE"
    echo
    echo "CoreDNS's published figure for in-cluster names is 33.7 k/s on two vCPUs: shoal-dns on one core is $(ratio "$SHOAL_QPS" 33700)x that."
    echo
    echo "Large record set (one network, $BIG_SERVICES services x $BIG_TASKS tasks, all healthy):"
    echo
    echo "| task records | file | start to ready | RSS after load | SIGHUP reload | RSS after reload | peak RSS |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    echo "$BIG_LINE"
} > "$OUT"
cat "$OUT"
