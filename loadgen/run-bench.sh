#!/usr/bin/env bash
# Signaling benchmark (docs/benchmarks.md, "Signaling (issue 2)").
#
# Builds the release binaries, starts a throwaway redis-server on a free port (never 6379) and,
# for each store (embedded, then Redis), a fresh `yuntiao serve` per run, and drives it with
# yuntiao-loadgen: chat fan-out at 100 and 1,000 rooms, then the acknowledged-notes throughput.
# Then it measures raw `redis-benchmark` XADD on the same Redis (appendfsync always, then
# appendonly no) so the ratio is taken within one run. Prints a Markdown summary and stops
# everything it started. Everything listens on 127.0.0.1 only.
#
# Usage: loadgen/run-bench.sh
# Environment (optional): STORES ("embedded redis"), DURATION (20s), ROOMS_LIST ("100 1000"),
#   RATE (1, per room per second), NOTES_ROOMS (100), WINDOW (8), NOTE_PADDING (160),
#   XADD_N (200000), KEEP (dir to keep results in, default target/bench), NICE (e.g. -10: run
#   server, redis, loadgen and redis-benchmark at this nice level, so other work on a shared
#   machine disturbs the figures less; needs root), PIN (1: run the server and Redis on CPU 0
#   and the load generator and redis-benchmark on CPU 1, with `taskset`, so that the load
#   generator's bursts do not preempt the server on the core it is using; needs 2 CPUs),
#   SERVER_BIN (run this yuntiao binary instead of the one just built, e.g. for an A/B pair),
#   LOADGEN_ARGS (more yuntiao-loadgen options for the chat phases, e.g. "--timeline").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STORES=${STORES:-"embedded redis"}
DURATION=${DURATION:-20s}
ROOMS_LIST=${ROOMS_LIST:-"100 1000"}
RATE=${RATE:-1}
NOTES_ROOMS=${NOTES_ROOMS:-100}
WINDOW=${WINDOW:-8}
NOTE_PADDING=${NOTE_PADDING:-160}
XADD_N=${XADD_N:-200000}
KEEP=${KEEP:-$ROOT/target/bench}
NICE=${NICE:-0}
PIN=${PIN:-0}
RUN=(nice -n "$NICE")
# Server side (yuntiao, redis-server) and client side (load generator, redis-benchmark).
SRV=("${RUN[@]}")
CLI=("${RUN[@]}")
if [[ $PIN == 1 ]]; then
    SRV=(taskset -c 0 "${RUN[@]}")
    CLI=(taskset -c 1 "${RUN[@]}")
fi

# 4 sockets per room in the load generator and 4 in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cd "$ROOT"
cargo build --release -p yuntiao-server -p yuntiao-loadgen --bins
BIN=${SERVER_BIN:-$ROOT/target/release/yuntiao}
LOADGEN=$ROOT/target/release/yuntiao-loadgen

# A temporary directory on the ordinary disk (not tmpfs): the stores fsync there.
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/yuntiao-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
STARTED=()

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -s $RESULTS ]]; then
        mkdir -p "$KEEP"
        cp "$RESULTS" "$KEEP/results.jsonl"
        cp "$WORK"/*.log "$WORK"/*.prom "$KEEP/" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1 below the ephemeral range (so no client socket of this very
# benchmark can be holding it), never Redis's default 6379.
free_port() {
    local p low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for _ in $(seq 1 200); do
        p=$((10000 + RANDOM % (low - 10000)))
        [[ $p == 6379 ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

forget() { # removes a PID from STARTED once it has been stopped
    local keep=() pid
    for pid in "${STARTED[@]}"; do [[ $pid != "$1" ]] && keep+=("$pid"); done
    STARTED=("${keep[@]}")
}

export YUNTIAO_ADMIN_TOKEN="bench-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export YUNTIAO_JWT_SECRET="bench-jwt-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# --- Redis: production-like durability (AOF, fsync before every reply) ---
RPORT=$(free_port)
mkdir -p "$WORK/redis"
"${SRV[@]}" redis-server --bind 127.0.0.1 --port "$RPORT" --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync always --daemonize no >"$WORK/redis.log" 2>&1 &
RPID=$!
STARTED+=("$RPID")
for _ in $(seq 1 50); do
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$RPORT" ping >/dev/null

SERVER_PID=""
SERVER_URL=""
start_server() { # $1 = store (embedded|redis), $2 = run name
    local port attempt args=()
    if [[ $1 == redis ]]; then
        redis-cli -p "$RPORT" flushall >/dev/null
        args=(--redis "redis://127.0.0.1:$RPORT")
    fi
    for attempt in 1 2 3; do
        port=$(free_port)
        # The media plane's UDP socket takes the same port number (its default is fixed).
        "${SRV[@]}" "$BIN" serve --listen "127.0.0.1:$port" --media-listen "127.0.0.1:$port" \
            --data "$WORK/data-$2" "${args[@]}" \
            --rate-limit 1000000 --rate-burst 1000000 >"$WORK/server-$2.log" 2>&1 &
        SERVER_PID=$!
        STARTED+=("$SERVER_PID")
        SERVER_URL="http://127.0.0.1:$port"
        for _ in $(seq 1 100); do
            curl -sf "$SERVER_URL/readyz" >/dev/null 2>&1 && return 0
            kill -0 "$SERVER_PID" 2>/dev/null || break # exited (e.g. the port was taken)
            sleep 0.1
        done
        stop_server
    done
    echo "the server did not become ready; see $WORK/server-$2.log" >&2
    return 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    forget "$SERVER_PID"
}

loadgen() { # $1 = store, then loadgen options
    local store=$1
    shift
    "${CLI[@]}" "$LOADGEN" --server "$SERVER_URL" --server-pid "$SERVER_PID" --label "$store" \
        --duration "$DURATION" --summary "$RESULTS" "$@"
}

# How much of the cores the machine gets (a virtual machine's vCPUs can be taken away for
# milliseconds, which no server can hide from a latency tail), before and after the phases.
"${RUN[@]}" "$LOADGEN" --cpu-probe --duration 5s --label "before the phases" --summary "$RESULTS"

# The floor under any durable fan-out: one append + fdatasync on the disk the stores use.
"${CLI[@]}" "$LOADGEN" --fsync-probe "$WORK/probe" --duration 10s --label "data directory disk" --summary "$RESULTS"

for store in $STORES; do
    extra=()
    [[ $store == redis ]] && extra=(--redis-pid "$RPID")
    for rooms in $ROOMS_LIST; do
        start_server "$store" "$store-chat-$rooms"
        # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of options
        loadgen "$store" --rooms "$rooms" --rate "$RATE" "${extra[@]}" ${LOADGEN_ARGS:-}
        # The server's own view (e.g. the embedded store's fdatasync and checkpoint histograms).
        curl -sf "$SERVER_URL/metrics" >"$WORK/metrics-$store-chat-$rooms.prom" || true
        stop_server
    done
    start_server "$store" "$store-notes"
    loadgen "$store" --rooms "$NOTES_ROOMS" --notes-throughput --window "$WINDOW" \
        --note-padding "$NOTE_PADDING" "${extra[@]}"
    stop_server
done

"${RUN[@]}" "$LOADGEN" --cpu-probe --duration 5s --label "after the phases" --summary "$RESULTS"

# --- Raw Redis reference, same Redis, payload the size of a stored note event ---
PAYLOAD_BYTES=$(grep '"mode":"notes"' "$RESULTS" | grep -o '"note_event_bytes":[0-9]*' | head -1 | cut -d: -f2)
PAYLOAD_BYTES=${PAYLOAD_BYTES:-500}
PAYLOAD=$(head -c "$PAYLOAD_BYTES" /dev/zero | tr '\0' x)
busy_ticks() { # busy CPU ticks of the whole machine (all but idle and iowait)
    awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat
}
xadd_bench() { # $1 = label
    local out rps b0 b1 t0 t1
    redis-cli -p "$RPORT" del bench >/dev/null
    b0=$(busy_ticks)
    t0=$(date +%s.%N)
    out=$("${CLI[@]}" redis-benchmark -q -p "$RPORT" -n "$XADD_N" -c 50 -P 1 XADD bench '*' d "$PAYLOAD")
    t1=$(date +%s.%N)
    b1=$(busy_ticks)
    rps=$(printf '%s\n' "$out" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
    echo "redis-benchmark XADD ($1): $rps requests per second" >&2
    printf '{"mode":"xadd","label":"%s","xadd_per_s":%s,"payload_bytes":%s,"clients":50,"pipeline":1,"requests":%s,"elapsed_s":%s,"machine_cpu_s":%s}\n' \
        "$1" "${rps:-null}" "$PAYLOAD_BYTES" "$XADD_N" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" \
        "$(awk -v a="$b0" -v b="$b1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz}')" >>"$RESULTS"
}
xadd_bench "appendfsync always"
redis-cli -p "$RPORT" config set appendonly no >/dev/null
xadd_bench "appendonly no"
redis-cli -p "$RPORT" del bench >/dev/null

echo
echo "## Summary (nice $NICE, pinned $PIN; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); server, loadgen and redis share them)"
echo
"$LOADGEN" --summarize "$RESULTS"
echo
echo "(results kept in $KEEP/results.jsonl)"
