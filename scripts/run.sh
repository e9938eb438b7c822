#!/usr/bin/env bash
# Builds the web client when needed and runs the server with it (release build: the client is
# embedded in the binary). Arguments go to `yuntiao serve`, e.g. ./scripts/run.sh --listen 0.0.0.0:8080
#
# The client is rebuilt when web-client/dist is missing or older than any source file of the
# client; `npm ci` runs when node_modules is missing or older than package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "npm (Node.js 20 or later) is needed to build the web client" >&2
  exit 1
fi
if [ ! -d web-client/node_modules ] || [ web-client/package-lock.json -nt web-client/node_modules ]; then
  echo "== npm ci (web-client)"
  npm ci --prefix web-client --no-audit --no-fund --ignore-scripts
fi
if [ ! -f web-client/dist/index.html ] ||
   [ -n "$(find web-client/src web-client/index.html web-client/package-lock.json web-client/vite.config.ts \
             -newer web-client/dist/index.html -print -quit)" ]; then
  echo "== building the web client"
  npm --prefix web-client run build
fi

exec cargo run --release -p yuntiao-server --bin yuntiao -- serve "$@"
