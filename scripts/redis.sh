#!/usr/bin/env bash
# Runs a command next to a throwaway redis-server: a free 127.0.0.1 port, no
# persistence, a temporary directory; stopped (by its PID) when the command ends.
# The command finds it in HOLDFAST_TEST_REDIS (e.g. redis://127.0.0.1:23456).
# Usage: scripts/redis.sh COMMAND [ARGS...]
set -euo pipefail
command -v redis-server >/dev/null || {
  echo "redis-server is not installed (scripts/setup.sh --test installs it)" >&2
  exit 1
}
dir="$(mktemp -d /tmp/holdfast-redis.XXXXXX)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 40000))
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then break 2; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
done
[ -n "$pid" ] || { echo "could not start redis-server" >&2; cat "$dir/log" >&2; exit 1; }
export HOLDFAST_TEST_REDIS="redis://127.0.0.1:${port}"
echo "throwaway redis-server at ${HOLDFAST_TEST_REDIS} (pid ${pid})" >&2
"$@"
