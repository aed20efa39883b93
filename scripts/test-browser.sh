#!/usr/bin/env bash
# Browser tests of the wasm driver (wasm-bindgen-test in headless Chromium) against a
# real holdfast-server started here with short windows and test hooks.
# Expects the tools from scripts/setup.sh (wasm target, wasm-bindgen-cli, chromium).
#   scripts/test-browser.sh              cargo test with wasm-bindgen-test-runner
#   scripts/test-browser.sh --wasm-pack  the same tests through `wasm-pack test --headless
#                                        --chrome` (needs `cargo install wasm-pack --locked`)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bin holdfast-server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
./target/debug/holdfast-server --dev --test-hooks --listen "127.0.0.1:${port}" \
  --grace 20s --resume-window 20s --heartbeat-interval 500ms --heartbeat-timeout 1500ms \
  >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:${port}/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

export HOLDFAST_TEST_HTTP="http://127.0.0.1:${port}"
export WASM_BINDGEN_TEST_TIMEOUT=120
if [ "${1:-}" = "--wasm-pack" ]; then
  # wasm-pack uses the wasm-bindgen on PATH (same version as Cargo.lock) and the
  # chromedriver on PATH (Debian's, matching its Chromium); it downloads neither.
  export PATH="$(dirname "${CHROMEDRIVER:-/usr/bin/chromedriver}"):$PATH"
  wasm-pack test --headless --chrome -- --locked --test web
  exit
fi
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
cargo test --locked --target wasm32-unknown-unknown --test web
