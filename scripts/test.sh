#!/usr/bin/env bash
# Runs every test of the project, on a fresh machine of the kind we develop on.
#
# Installs what the tests need when it is missing (redis-server and chromium from Debian's
# packages, the npm packages of tests/js, tests/e2e and web-client; cargo-nextest is expected with
# the toolchain), tests and builds the web client, checks formatting and lints, builds the
# workspace once, then runs all test binaries with nextest against that one build.
# Integration tests start their own redis-server and yuntiao processes on free loopback ports;
# nothing here touches the shared Redis on port 6379.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
# The browser end-to-end test (tests/tests/browser.rs) drives Debian's Chromium; a CJK font makes
# its screenshots readable.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
dpkg -s fonts-wqy-zenhei >/dev/null 2>&1 || need_apt+=(fonts-wqy-zenhei)
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

# The web client: unit tests (Vitest), type check and build into web-client/dist, which the
# server serves (and embeds in release builds) and the browser test loads.
echo "== web-client: npm ci, npm test, npm run build"
npm ci --prefix web-client --no-audit --no-fund --ignore-scripts >/dev/null
npm --prefix web-client test
npm --prefix web-client run build >/dev/null

# playwright-core for the browser test (uses /usr/bin/chromium; downloads no browser).
if [ ! -d tests/e2e/node_modules ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules ]; then
  echo "== npm ci (tests/e2e)"
  npm ci --prefix tests/e2e --no-audit --no-fund --ignore-scripts >/dev/null
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
