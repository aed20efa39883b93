#!/usr/bin/env bash
# Runs every fuzz target (libFuzzer, coverage-guided) for SECONDS, side by side, from
# the seed corpora in fuzz/seeds/; exits non-zero on a crash or an invariant failure
# (the input is left in fuzz/artifacts/TARGET/).
# Usage: scripts/fuzz.sh SECONDS [TARGET...]
#
# Built with the stable toolchain and the coverage flags cargo-fuzz passes, without a
# sanitizer: the fuzzed code is safe Rust (a memory error there is a compiler bug), so
# AddressSanitizer would only cost a nightly toolchain, `cargo install cargo-fuzz` and
# a slower build (minutes on a fresh machine) for the same findings, and it runs the
# targets 3-4 times slower. Debug assertions are on, so the engines' own checks
# fire too. `cargo +nightly fuzz run TARGET` still works for an ASan run (fuzz/ is a
# cargo-fuzz project). The targets build against fuzz/core (the engines and the
# protocol only), about a minute from scratch.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(decode_frames client_engine server_engine)

triple="$(rustc -vV | sed -n 's/^host: //p')"
# The flags `cargo fuzz build` uses for libFuzzer's coverage feedback. With an explicit
# --target they apply to the fuzzed code only, not to build scripts and proc macros.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions" \
  cargo build --release --locked --target "$triple" --target-dir target/stable
bin="target/stable/$triple/release"

# The targets run side by side (each is one process on one core), so the step takes
# SECONDS of wall time whatever their number.
declare -A pids logs
for t in "${targets[@]}"; do
  printf '==> fuzz %s for %ss\n' "$t" "$seconds"
  # A scratch corpus (grows as libFuzzer finds new paths), seeded from the repo's.
  work="corpus/$t"
  mkdir -p "$work" "artifacts/$t"
  logs[$t]="$(mktemp)"
  "$bin/$t" "$work" "seeds/$t" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"${logs[$t]}" 2>&1 &
  pids[$t]=$!
done
failed=0
for t in "${targets[@]}"; do
  if ! wait "${pids[$t]}"; then
    tail -n 60 "${logs[$t]}"
    echo "fuzz target $t failed (input in fuzz/artifacts/$t/)" >&2
    failed=1
  fi
  grep -E '^stat::number_of_executed_units|^Done ' "${logs[$t]}" | sed "s/^/$t: /" || true
  rm -f "${logs[$t]}"
done
exit "$failed"
