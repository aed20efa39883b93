#!/usr/bin/env bash
# Sets up and starts the demo on a fresh machine: installs the toolchain pieces
# (scripts/setup.sh), builds the npm package (wasm + TypeScript) and the server, then
# runs holdfast-server in --dev mode, serving the demo page and the package from www/
# next to the signaling endpoint.
# Usage: scripts/demo.sh [port]            in-memory state (default port 8080; or PORT=…)
#        scripts/demo.sh --redis [port]    state in a local redis-server (started here,
#                                          data in .demo-redis/), so calls survive a
#                                          restart of the server: Ctrl-C it and run the
#                                          same command again
#        scripts/demo.sh --pair [port]     the same Redis, two server processes: one
#                                          serves on port, the other stands by on
#                                          port+1 and takes over when the first stops
#        scripts/demo.sh --cluster [port]  the same Redis (database 1), two server
#                                          processes serving together (--cluster) on
#                                          port and port+1: a call's two people may be
#                                          on either, and each survives the other
set -euo pipefail
cd "$(dirname "$0")/.."
redis=""
pair=""
cluster=""
if [ "${1:-}" = "--redis" ]; then
  redis=1
  shift
elif [ "${1:-}" = "--pair" ]; then
  redis=1
  pair=1
  shift
elif [ "${1:-}" = "--cluster" ]; then
  redis=1
  cluster=1
  shift
fi
port="${1:-${PORT:-8080}}"
step() { printf '\n==> %s\n' "$*"; }

if [ -n "$redis" ]; then
  scripts/setup.sh --redis
else
  scripts/setup.sh
fi

step "npm package: wasm client + TypeScript facade (www/dist)"
(cd www && npm run build)

step "holdfast-server (release)"
cargo build --release --locked --bin holdfast-server

if [ -z "$redis" ]; then
  cat <<MSG

  Holdfast demo: http://127.0.0.1:${port}

  Sign in with any name, then open the same address in a second browser (or a private
  window) as someone else and call them. Dev mode: the name is the identity, no
  password; state is in memory. Ctrl-C stops the server.

MSG
  exec ./target/release/holdfast-server --dev --static-dir www --listen "127.0.0.1:${port}" "${@:2}"
fi

redis_port="${REDIS_PORT:-6390}"
mkdir -p .demo-redis
if ! redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
  step "redis-server on 127.0.0.1:${redis_port} (append-only file in .demo-redis/)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes \
    --dir "$PWD/.demo-redis" --daemonize yes --pidfile "$PWD/.demo-redis/redis.pid" \
    --logfile "$PWD/.demo-redis/redis.log"
  for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
if [ -n "$cluster" ]; then
  second=$((port + 1))
  # Database 1: a cluster never shares its keys with a process serving alone.
  store="redis://127.0.0.1:${redis_port}/1"
  cat <<MSG

  Two holdfast-server processes serving one Redis together (${store}):
    node 1  http://127.0.0.1:${port}
    node 2  http://127.0.0.1:${second}
  Sign in as one person on each and call across. Stop either (kill -TERM or -KILL
  \$(cat .demo-redis/cluster-a.pid)); a page on it that reaches the other (a load
  balancer in front does that) resumes the same call there. Ctrl-C stops both.

MSG
  ./target/release/holdfast-server --dev --static-dir www --listen "127.0.0.1:${port}" \
    --store "$store" --cluster "${@:2}" &
  echo $! > .demo-redis/cluster-a.pid
  trap 'kill $(cat .demo-redis/cluster-a.pid) 2>/dev/null || true' EXIT
  ./target/release/holdfast-server --dev --static-dir www --listen "127.0.0.1:${second}" \
    --store "$store" --cluster "${@:2}"
  exit
fi
if [ -n "$pair" ]; then
  second=$((port + 1))
  cat <<MSG

  Two holdfast-server processes on one Redis (127.0.0.1:${redis_port}):
    node-a  http://127.0.0.1:${port}     serves (it holds the store's lease)
    node-b  http://127.0.0.1:${second}   stands by: /readyz answers 503 and it refuses
                                          sockets until node-a stops or dies
  Stop node-a (kill -TERM \$(cat .demo-redis/node-a.pid)) and watch node-b take over
  (curl -s http://127.0.0.1:${second}/readyz). A load balancer in front, routing by
  /readyz, sends the pages there; they resume the same calls. Ctrl-C stops both.

MSG
  ./target/release/holdfast-server --dev --static-dir www --listen "127.0.0.1:${port}" \
    --store "redis://127.0.0.1:${redis_port}" --node node-a "${@:2}" &
  echo $! > .demo-redis/node-a.pid
  trap 'kill $(cat .demo-redis/node-a.pid) 2>/dev/null || true' EXIT
  ./target/release/holdfast-server --dev --static-dir www --listen "127.0.0.1:${second}" \
    --store "redis://127.0.0.1:${redis_port}" --node node-b "${@:2}"
  exit
fi
cat <<MSG

  Holdfast demo: http://127.0.0.1:${port}   (state in Redis at 127.0.0.1:${redis_port})

  Call someone, then stop the server (Ctrl-C) and run this command again: both pages
  resume the same call. Redis keeps running; stop it with
  kill \$(cat .demo-redis/redis.pid)

MSG
exec ./target/release/holdfast-server --dev --static-dir www --listen "127.0.0.1:${port}" \
  --store "redis://127.0.0.1:${redis_port}" "${@:2}"
