#!/usr/bin/env bash
# Shared-document benchmark (docs/benchmarks.md, "Shared documents (issue 4)").
#
# Builds the release server and load generator (by default from a clean export of a commit, REV,
# so that uncommitted edits in a shared checkout are not what is measured), starts a throwaway
# redis-server (free port, never 6379, AOF with fsync before every reply), then for each window
# of WINDOWS and each server of SERVERS starts a fresh server on a free 127.0.0.1 port and runs
# `yuntiao-loadgen docs-trace` against it: memory per open document, the trace replay (one
# editor, three receivers), late joiners, and a paced-latency phase (the memory and paced
# phases with the first window only). Before the runs it measures the data directory's disk
# (append + fdatasync, 5 s), the floor under every durable append. The servers:
#
#   stock     the stock `@y/websocket-server` 0.1.1 from npm (tests/js), documents in memory only;
#   embedded  `yuntiao serve` with its embedded store (fsync on every commit);
#   redis     `yuntiao serve --redis` on the throwaway Redis.
#
# Every run uses the same trace (seed, length; encoded once and cached) and the same pacing.
# Prints a Markdown summary and stops everything it started.
#
# Usage: loadgen/run-docs-bench.sh
# Environment (optional):
#   WINDOWS ("256 1024"): in-flight windows of the replay (updates sent, not yet received);
#   SERVERS ("stock embedded redis");
#   EDITS (260000), SEED (4), TARGET_BYTES (163840): the trace;
#   LATE_JOINS (10), MEMORY_DOCS (200), MEMORY_DOC_BYTES (4096);
#   PACED_RATE (2000, updates per second; 0 skips), PACED_EDITS (20000);
#   REV (HEAD): commit the server and the load generator are built from; "worktree" builds the
#     checkout as it is;
#   NICE (0; e.g. -10 as root): nice level of the servers, Redis and the load generator;
#   KEEP (target/bench-docs): where the results (JSON lines) and logs are kept;
#   QUIET_WAIT (0): before each run, wait up to this many seconds for a quiet machine (less than
#     QUIET_BUSY percent, default 25, of all cores busy over 5 s), for a shared machine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WINDOWS=${WINDOWS:-"256 1024"}
SERVERS=${SERVERS:-"stock embedded redis"}
EDITS=${EDITS:-260000}
SEED=${SEED:-4}
TARGET_BYTES=${TARGET_BYTES:-163840}
LATE_JOINS=${LATE_JOINS:-10}
MEMORY_DOCS=${MEMORY_DOCS:-200}
MEMORY_DOC_BYTES=${MEMORY_DOC_BYTES:-4096}
PACED_RATE=${PACED_RATE:-2000}
PACED_EDITS=${PACED_EDITS:-20000}
REV=${REV:-HEAD}
NICE=${NICE:-0}
KEEP=${KEEP:-$ROOT/target/bench-docs}
QUIET_WAIT=${QUIET_WAIT:-0}
QUIET_BUSY=${QUIET_BUSY:-25}
RUN=(nice -n "$NICE")
JS=$ROOT/tests/js

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/yuntiao-docs-bench.XXXXXX")
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
        cp "$WORK"/*.log "$KEEP/" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
mkdir -p "$WORK/bin"
if [[ $REV == worktree ]]; then
    cargo build --release -p yuntiao-server -p yuntiao-loadgen --bins
    cp target/release/yuntiao target/release/yuntiao-loadgen "$WORK/bin/"
    DIRTY=$(git diff --quiet HEAD -- server signaling loadgen || echo ' + uncommitted changes')
    BUILD_DESC="working tree at $(git rev-parse --short HEAD)$DIRTY"
else
    # A clean export of the commit, built into the shared target directory (so dependencies are
    # not rebuilt) and copied out at once.
    mkdir -p "$WORK/src"
    # Extracted with the current time as every file's mtime (-m): with the commit's own times,
    # older than the last build's, cargo would take the artifacts of whatever was built last
    # (another commit or the working tree) as fresh, since a workspace member's build identity
    # does not depend on where its sources are. For the same reason, the workspace's own
    # artifacts are removed after the copy, so no later build takes these for the working tree's.
    git archive "$REV" | tar -x -m -C "$WORK/src"
    (cd "$WORK/src" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release \
        -p yuntiao-server -p yuntiao-loadgen --bins)
    cp target/release/yuntiao target/release/yuntiao-loadgen "$WORK/bin/"
    cargo clean --release -p yuntiao-server -p yuntiao-signaling -p yuntiao-loadgen
    BUILD_DESC="commit $(git rev-parse --short "$REV")"
fi
BIN=$WORK/bin/yuntiao
LOADGEN=$WORK/bin/yuntiao-loadgen

if [[ $SERVERS == *stock* && ! -e $JS/node_modules/@y/websocket-server/src/server.js ]]; then
    npm ci --prefix "$JS" --ignore-scripts
fi
STOCK_JS=$JS/node_modules/@y/websocket-server/src/server.js
STOCK_VERSION=$(node -p "require('$JS/node_modules/@y/websocket-server/package.json').version" 2>/dev/null || echo '?')
YJS_VERSION=$(node -p "require('$JS/node_modules/yjs/package.json').version" 2>/dev/null || echo '?')

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
RPID=""
if [[ $SERVERS == *redis* ]]; then
    RPORT=$(free_port)
    mkdir -p "$WORK/redis"
    "${RUN[@]}" redis-server --bind 127.0.0.1 --port "$RPORT" --dir "$WORK/redis" --save "" \
        --appendonly yes --appendfsync always --daemonize no >"$WORK/redis.log" 2>&1 &
    RPID=$!
    STARTED+=("$RPID")
    for _ in $(seq 1 50); do
        redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$RPORT" ping >/dev/null
fi

SERVER_PID=""
SERVER_URL=""
start_server() { # $1 = server (stock|embedded|redis), $2 = run name
    local port ready_path=/readyz args=()
    [[ $1 == redis ]] && redis-cli -p "$RPORT" flushall >/dev/null && args=(--redis "redis://127.0.0.1:$RPORT")
    for _ in 1 2 3; do
        port=$(free_port)
        if [[ $1 == stock ]]; then
            ready_path=/
            HOST=127.0.0.1 PORT=$port "${RUN[@]}" node "$STOCK_JS" >"$WORK/server-$2.log" 2>&1 &
        else
            # The media plane's UDP socket takes the same port number.
            "${RUN[@]}" "$BIN" serve --listen "127.0.0.1:$port" --media-listen "127.0.0.1:$port" \
                --data "$WORK/data-$2" "${args[@]}" \
                --rate-limit 1000000 --rate-burst 1000000 \
                --doc-rate-limit 1000000 --doc-rate-burst 1000000 >"$WORK/server-$2.log" 2>&1 &
        fi
        SERVER_PID=$!
        STARTED+=("$SERVER_PID")
        SERVER_URL="http://127.0.0.1:$port"
        for _ in $(seq 1 100); do
            curl -sf "$SERVER_URL$ready_path" >/dev/null 2>&1 && return 0
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

busy_ticks() { # busy CPU ticks of the whole machine (all but idle and iowait)
    awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat
}

wait_quiet() { # waits (up to QUIET_WAIT s) until the machine is less than QUIET_BUSY % busy
    local deadline=$((SECONDS + QUIET_WAIT)) b0 b1 pct
    while ((QUIET_WAIT > 0)); do
        b0=$(busy_ticks)
        sleep 5
        b1=$(busy_ticks)
        pct=$(((b1 - b0) * 100 / (5 * $(getconf CLK_TCK) * $(nproc))))
        if ((pct < QUIET_BUSY)); then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            echo "machine still ${pct} % busy after ${QUIET_WAIT} s; measuring anyway" >&2
            return 0
        fi
    done
}

label_of() {
    case $1 in
    stock) echo "stock @y/websocket-server $STOCK_VERSION (memory only)" ;;
    embedded) echo "yuntiao, embedded store" ;;
    redis) echo "yuntiao, Redis store" ;;
    esac
}

STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
# The floor under any durable append: one append + fdatasync on the disk the stores use.
"${RUN[@]}" "$LOADGEN" --fsync-probe "$WORK/probe" --duration 10s --label "data directory disk" \
    2>&1 | tee "$WORK/fsync-probe.log"
first=1
for window in $WINDOWS; do
    for server in $SERVERS; do
        name="$server-w$window"
        extra=()
        if ((first)); then
            extra=(--memory-docs "$MEMORY_DOCS" --memory-doc-bytes "$MEMORY_DOC_BYTES"
                --late-joins "$LATE_JOINS" --paced-rate "$PACED_RATE" --paced-edits "$PACED_EDITS")
        else
            extra=(--memory-docs 0 --late-joins "$LATE_JOINS")
        fi
        [[ $server == redis ]] && extra+=(--redis-pid "$RPID")
        target=yuntiao
        [[ $server == stock ]] && target=stock
        wait_quiet
        echo "--- $name ($(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        start_server "$server" "$name"
        "${RUN[@]}" "$LOADGEN" docs-trace --target "$target" --server "$SERVER_URL" \
            --server-pid "$SERVER_PID" --label "$(label_of "$server")" --window "$window" \
            --seed "$SEED" --edits "$EDITS" --target-bytes "$TARGET_BYTES" \
            --trace-cache "$WORK/trace.bin" --summary "$RESULTS" "${extra[@]}" \
            2>&1 | tee "$WORK/loadgen-$name.log" || echo "run $name failed" >&2
        stop_server
    done
    first=0
done

echo
echo "## Shared-document summary (started $STARTED_AT; server and loadgen: $BUILD_DESC; stock server @y/websocket-server $STOCK_VERSION with yjs $YJS_VERSION on node $(node --version); nice $NICE; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); servers, Redis and loadgen share them)"
echo
"$LOADGEN" docs-trace --summarize "$RESULTS"
echo
echo "(results kept in $KEEP/results.jsonl; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
