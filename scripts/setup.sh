#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine (idempotent):
#   scripts/setup.sh          Rust target + wasm-bindgen-cli + npm packages (build, demo)
#   scripts/setup.sh --test   also Chromium, ChromeDriver, redis-server, a C++ compiler (libFuzzer) and wasm-pack (browser, end-to-end, restart and fuzz tests)
#   scripts/setup.sh --redis  also redis-server (scripts/demo.sh --redis)
set -euo pipefail
cd "$(dirname "$0")/.."
WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen version in Cargo.lock

step() { printf '\n==> %s\n' "$*"; }

step "Rust: wasm32 target, rustfmt, clippy"
rustup target add wasm32-unknown-unknown
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if ! wasm-bindgen --version 2>/dev/null | grep -q " ${WASM_BINDGEN_VERSION}\$"; then
  step "wasm-bindgen-cli ${WASM_BINDGEN_VERSION} (a few minutes, once)"
  # Not --locked: the registry mirror lacks one locked dependency version.
  cargo install wasm-bindgen-cli --version "${WASM_BINDGEN_VERSION}"
fi

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
if [ "${1:-}" = "--test" ]; then
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
    || ! command -v redis-server >/dev/null || ! command -v c++ >/dev/null; then
    step "Chromium, ChromeDriver, Redis and g++ for libFuzzer (Debian packages)"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver redis-server g++ >/dev/null
  fi
fi
if [ "${1:-}" = "--test" ] && ! wasm-pack --version 2>/dev/null | grep -q " 0.15.1\$"; then
  step "wasm-pack 0.15.1 (a few minutes, once): the tests also run through wasm-pack test"
  cargo install wasm-pack --locked --version 0.15.1
fi
if [ "${1:-}" = "--redis" ] && ! command -v redis-server >/dev/null; then
  step "Redis (Debian package)"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi

step "npm packages (TypeScript, binaryen's wasm-opt, Playwright without browsers)"
(cd www && npm ci --no-audit --no-fund)

if [ "${1:-}" = "--test" ]; then
  step "npm packages of the bundler fixture apps (Vite 5-8, webpack 5)"
  (cd www/fixtures/bundlers && npm ci --no-audit --no-fund)
fi
