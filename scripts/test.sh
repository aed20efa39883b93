#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs every test.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: rustfmt, clippy, wasm32 target"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "wasm build of the library (protocol + engines)"
cargo check --locked --target wasm32-unknown-unknown --lib

step "cargo test: engines on a simulated clock, property tests, the real server on port 0"
cargo test --locked

echo
echo "all tests passed"
