#!/usr/bin/env bash
# Runs every test of the project, on a fresh machine of the kind we develop on.
#
# Installs what the tests need when it is missing (redis-server from Debian's packages, the
# npm packages of tests/js; cargo-nextest is expected with the toolchain), checks formatting and lints, builds the
# workspace once, then runs all test binaries with nextest against that one build.
# Integration tests start their own redis-server and yuntiao processes on free loopback ports;
# nothing here touches the shared Redis on port 6379.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The stock Yjs client (yjs + y-websocket) the document tests drive, pinned by package-lock.json.
if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then
  echo "== npm ci (tests/js)"
  npm ci --prefix tests/js --no-audit --no-fund --ignore-scripts >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --all-targets --locked
export YUNTIAO_BIN="$PWD/target/debug/yuntiao"

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
