#!/usr/bin/env bash
# Media benchmark (docs/benchmarks.md, "Media (issue 3)").
#
# Builds the release server and load generator (by default from a clean export of a commit, REV,
# so that uncommitted edits in a shared checkout are not what is measured), then for each phase starts a fresh `yuntiao serve` (embedded store, free port,
# 127.0.0.1 only) and drives it with `yuntiao-loadgen --media`: N rooms of four webrtc-crate
# peers, audio only, then audio + video. Prints a Markdown summary and stops everything it
# started.
#
# Usage: loadgen/run-media-bench.sh
# Environment (optional):
#   AUDIO_ROOMS ("5 10 20"), AV_ROOMS ("2 5 10"): room counts of the audio-only and A/V phases;
#   DURATION (20s): length of each measured phase;
#   REV (HEAD): commit the server and the load generator are built from; "worktree" builds the
#     checkout as it is;
#   NICE (0; e.g. -10 as root): nice level of the server and the load generator;
#   KEEP (target/bench-media): where the results (JSON lines) and logs are kept;
#   SERVER_BIN: run this yuntiao binary instead of the one built (an A/B pair's other side);
#   LOADGEN_BIN: run this yuntiao-loadgen binary; with SERVER_BIN too, nothing is built (so a
#     series of A/B runs neither waits for nor measures edits made to the checkout meanwhile);
#   LOADGEN_ARGS: extra options for every loadgen run (e.g. "--video-kbps 1000");
#   QUIET_WAIT (0): before each phase, wait up to this many seconds for a quiet machine (less
#     than QUIET_BUSY percent, default 25, of all cores busy over 5 s), for a shared machine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
AUDIO_ROOMS=${AUDIO_ROOMS-"5 10 20"}
AV_ROOMS=${AV_ROOMS-"2 5 10"}
DURATION=${DURATION:-20s}
REV=${REV:-HEAD}
NICE=${NICE:-0}
KEEP=${KEEP:-$ROOT/target/bench-media}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
QUIET_WAIT=${QUIET_WAIT:-0}
QUIET_BUSY=${QUIET_BUSY:-25}
RUN=(nice -n "$NICE")

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/yuntiao-media-bench.XXXXXX")
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
if [[ -n ${SERVER_BIN:-} && -n ${LOADGEN_BIN:-} ]]; then
    BUILD_DESC="nothing built"
elif [[ $REV == worktree ]]; then
    cargo build --release -p yuntiao-server -p yuntiao-loadgen --bins
    cp target/release/yuntiao target/release/yuntiao-loadgen "$WORK/bin/"
    DIRTY=$(git diff --quiet HEAD -- server signaling loadgen || echo ' + uncommitted changes')
    BUILD_DESC="working tree at $(git rev-parse --short HEAD)$DIRTY"
else
    # A clean export of the commit, built into the shared target directory (so dependencies are
    # not rebuilt) and copied out at once.
    COMMIT=$(git rev-parse --short "$REV") # resolved once: HEAD may move during the build
    mkdir -p "$WORK/src"
    # Extracted with the current time as every file's mtime (-m): with the commit's own times,
    # older than the last build's, cargo would take the artifacts of whatever was built last
    # (another commit or the working tree) as fresh, since a workspace member's build identity
    # does not depend on where its sources are. For the same reason, the workspace's own
    # artifacts are removed after the copy, so no later build takes these for the working tree's.
    git archive "$COMMIT" | tar -x -m -C "$WORK/src"
    (cd "$WORK/src" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release \
        -p yuntiao-server -p yuntiao-loadgen --bins)
    cp target/release/yuntiao target/release/yuntiao-loadgen "$WORK/bin/"
    cargo clean --release -p yuntiao-server -p yuntiao-signaling -p yuntiao-loadgen
    BUILD_DESC="commit $COMMIT"
fi
BIN=$WORK/bin/yuntiao
if [[ -n ${SERVER_BIN:-} ]]; then # another server binary, for A/B pairs
    cp "$SERVER_BIN" "$BIN"
    BUILD_DESC="$BUILD_DESC; server binary $SERVER_BIN"
fi
if [[ -n ${LOADGEN_BIN:-} ]]; then # one load generator for a whole A/B series
    cp "$LOADGEN_BIN" "$WORK/bin/yuntiao-loadgen"
    BUILD_DESC="$BUILD_DESC; loadgen binary $LOADGEN_BIN"
fi
LOADGEN=$WORK/bin/yuntiao-loadgen

# A free TCP port on 127.0.0.1 below the ephemeral range (so no client socket of this very
# benchmark can be holding it), never Redis's default 6379. The media plane's UDP socket takes
# the same number.
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

SERVER_PID=""
SERVER_URL=""
start_server() { # $1 = run name
    local port
    for _ in 1 2 3; do
        port=$(free_port)
        "${RUN[@]}" "$BIN" serve --listen "127.0.0.1:$port" --media-listen "127.0.0.1:$port" \
            --data "$WORK/data-$1" --rate-limit 1000000 --rate-burst 1000000 \
            >"$WORK/server-$1.log" 2>&1 &
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
    echo "the server did not become ready; see $WORK/server-$1.log" >&2
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

phase() { # $1 = run name, then loadgen options
    local name=$1
    shift
    wait_quiet
    echo "--- $name ($(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    start_server "$name"
    # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of options
    "${RUN[@]}" "$LOADGEN" --server "$SERVER_URL" --server-pid "$SERVER_PID" --media \
        --duration "$DURATION" --label "$name" --summary "$RESULTS" $LOADGEN_ARGS "$@" \
        2>&1 | tee "$WORK/loadgen-$name.log" || echo "phase $name failed" >&2
    stop_server
}

STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
# How much of the cores the machine gets (a virtual machine's vCPUs can be taken away for
# milliseconds, which shows in latency tails), before and after the phases.
"${RUN[@]}" "$LOADGEN" --cpu-probe --duration 5s --label "before the phases" --summary "$RESULTS"
for rooms in $AUDIO_ROOMS; do
    phase "audio-$rooms" --rooms "$rooms"
done
for rooms in $AV_ROOMS; do
    phase "av-$rooms" --rooms "$rooms" --video
done
"${RUN[@]}" "$LOADGEN" --cpu-probe --duration 5s --label "after the phases" --summary "$RESULTS"

echo
echo "## Media summary (started $STARTED_AT; server and loadgen: $BUILD_DESC; nice $NICE; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); server and loadgen share them)"
echo
"$LOADGEN" --summarize "$RESULTS"
echo "(results kept in $KEEP/results.jsonl)"
