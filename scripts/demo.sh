#!/usr/bin/env bash
# Sets up and starts the demo on a fresh machine: installs the toolchain pieces
# (scripts/setup.sh), builds the npm package (wasm + TypeScript) and the server, then
# runs holdfast-server in --dev mode with in-memory state, serving the demo page and
# the package from www/ next to the signaling endpoint.
# Usage: scripts/demo.sh [port]    (default 8080; or PORT=…)
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-${PORT:-8080}}"
step() { printf '\n==> %s\n' "$*"; }

scripts/setup.sh

step "npm package: wasm client + TypeScript facade (www/dist)"
(cd www && npm run build)

step "holdfast-server (release)"
cargo build --release --locked --bin holdfast-server

cat <<MSG

  Holdfast demo: http://127.0.0.1:${port}

  Sign in with any name, then open the same address in a second browser (or a private
  window) as someone else and call them. Dev mode: the name is the identity, no
  password; state is in memory. Ctrl-C stops the server.

MSG
exec ./target/release/holdfast-server --dev --static-dir www --listen "127.0.0.1:${port}" "${@:2}"
