#!/usr/bin/env bash
# Runs every fuzz target (cargo-fuzz, libFuzzer, nightly) for SECONDS each, starting
# from the seed corpora in fuzz/seeds/; exits non-zero on a crash or an invariant
# failure (the artifact is left in fuzz/artifacts/TARGET/).
# Usage: scripts/fuzz.sh SECONDS [TARGET...]
# Installs what it needs when missing: a nightly toolchain (rustup) and cargo-fuzz
# (crates.io). The targets build against fuzz/core (the engines and the protocol
# only), a few minutes from scratch.
set -euo pipefail
rustup run nightly rustc --version >/dev/null 2>&1 ||
  rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
cd "$(dirname "$0")/../fuzz"
seconds="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(decode_frames client_engine server_engine)
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  printf '\n==> fuzz %s for %ss\n' "$t" "$seconds"
  # A scratch corpus (grows as libFuzzer finds new paths), seeded from the repo's.
  work="corpus/$t"
  mkdir -p "$work" "artifacts/$t"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run -O "$t" "$work" "seeds/$t" -- \
      -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t failed (artifact in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done ' "$log" | sed "s/^/$t: /" || true
  rm -f "$log"
done
