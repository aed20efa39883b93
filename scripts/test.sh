#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs every test:
# lints, cargo tests, the wasm build, browser tests of the wasm driver, and Playwright
# tests in Chromium. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

scripts/setup.sh --test

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --locked --target wasm32-unknown-unknown --lib --test web --test web_codec -- -D warnings

step "cargo test: engines on a simulated clock, property tests, the real server on port 0, restarts on a throwaway Redis"
cargo test --locked

step "chaos soak: 200 people for 60 s (link faults, latency spikes, reloads, call churn) on a throwaway Redis, the server restarted twice (SIGKILL, SIGTERM); the five oracle counts must be 0"
cargo build --locked --bin holdfast-load --bin holdfast-server
scripts/redis.sh sh -c 'nice target/debug/holdfast-load chaos --duration 60s --settle 30s \
  --restarts 2 --store "$HOLDFAST_TEST_REDIS" --max-time 300s'

step "fuzzing: every libFuzzer target for 30 s, side by side, from the seed corpora (stable toolchain, coverage-guided); a crash or an invariant failure fails the run"
scripts/fuzz.sh 30

step "the server-engine scenarios again, every change written to (and reloaded from) a throwaway Redis"
scripts/redis.sh cargo test --locked --test engine

step "the server-engine scenarios again with the server as 2, then 3 cluster nodes over one shared store (each new socket to the next node, so every reconnect moves a session)"
HOLDFAST_TEST_NODES=2 cargo test --locked --test engine
HOLDFAST_TEST_NODES=3 cargo test --locked --test engine

step "the server-engine scenarios across 2 cluster nodes over a throwaway Redis: every transaction through the shared store's real scripts"
HOLDFAST_TEST_NODES=2 scripts/redis.sh cargo test --locked --test engine

step "npm package build (wasm + TypeScript facade) with size report"
(cd www && npm run build)
(cd www && npm run test:unit)
(cd www && npm run test:ssr)

step "what npm publish ships: README, licences, changelog, API reference (TypeDoc), publint, arethetypeswrong"
(cd www && npm run check:package)

step "browser tests of the wasm driver (wasm-bindgen-test, headless Chromium, real server)"
scripts/test-browser.sh

step "the same browser tests through wasm-pack test; wasm-pack build makes a usable package"
scripts/test-browser.sh --wasm-pack
wasm-pack build --target web --out-dir target/wasm-pack/pkg
node www/scripts/check-wasm-pack.mjs target/wasm-pack/pkg

step "the packed tarball built by Vite 5-8 and webpack 5 (fixture apps for Playwright)"
node www/fixtures/bundlers/build.mjs

step "Playwright tests in Chromium against the real server"
cargo build --locked --bin holdfast-server
(cd www && npx playwright test)

echo
echo "all tests passed"
