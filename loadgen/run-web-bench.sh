#!/usr/bin/env bash
# Web client benchmark (docs/benchmarks.md, "Web client (issue 5)"): time from opening an invite
# link to seeing remote video play (p50 over repeated runs, headless Chromium on loopback), and
# the gzipped JavaScript the client ships.
#
# Builds the web client and the release server (which embeds it), starts `yuntiao serve` on a
# free loopback port with a throwaway data directory, runs tests/e2e/bench-join.mjs, stops the
# server. Environment: RUNS (10), SETTLE_MS (3000: how long the first publisher runs before the
# measured link is opened).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-10}

[ -d web-client/node_modules ] || npm ci --prefix web-client --no-audit --no-fund --ignore-scripts >/dev/null
[ -d tests/e2e/node_modules ] || npm ci --prefix tests/e2e --no-audit --no-fund --ignore-scripts >/dev/null
npm --prefix web-client run build >/dev/null
cargo build --release -q -p yuntiao-server --bin yuntiao

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/yuntiao-web-bench.XXXXXX")
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
MEDIA=$(python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export YUNTIAO_ADMIN_TOKEN="bench-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export YUNTIAO_JWT_SECRET="bench-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export YUNTIAO_LOG=warn
target/release/yuntiao serve --listen "127.0.0.1:$PORT" --media-listen "127.0.0.1:$MEDIA" \
  --data "$WORK/data" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done
echo "server $(git rev-parse --short HEAD) on 127.0.0.1:$PORT; $(nproc) cores; $(date -u +%H:%M) UTC; load $(cut -d' ' -f1-3 /proc/loadavg)"
node tests/e2e/bench-join.mjs "http://127.0.0.1:$PORT" "$YUNTIAO_ADMIN_TOKEN" "$RUNS"
