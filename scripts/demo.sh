#!/usr/bin/env bash
# Sets up and starts the demo: holdfast-server in --dev mode with in-memory state.
# Usage: scripts/demo.sh [port]    (default 8080)
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-${PORT:-8080}}"
cargo build --release --locked --bin holdfast-server
echo
echo "Starting holdfast-server on http://127.0.0.1:${port} (dev mode, in-memory state)."
echo "The browser demo page arrives with the browser client; for now this serves the"
echo "signaling endpoint ws://127.0.0.1:${port}/ws, /healthz and /metrics."
exec ./target/release/holdfast-server --dev --listen "127.0.0.1:${port}" "${@:2}"
