#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints, per target, how
# long it ran, how many inputs it executed and whether it found a crash. Run by hand, never by CI
# (CI is stable-only and time-bounded): it needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh [--merge] [SECONDS] [TARGET...]
#
# Each target starts from the committed corpus fuzz/corpus/<target>/; what it finds lands in
# fuzz/work/<target>/ (ignored by git), its log in fuzz/work/<target>.log, a crash in
# fuzz/artifacts/<target>/. With --merge the new inputs that reach code the corpus does not are
# merged into fuzz/corpus/<target>/ (commit them: `cargo test` replays that corpus on stable).
#
# Built with debug assertions, so arithmetic overflow panics as it does under `cargo test`, and
# without a sanitizer: the code is safe Rust (FUZZ_SANITIZER=address brings ASan back). Builds go
# to fuzz/target (FUZZ_TARGET_DIR to put them elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."

merge=0
if [ "${1:-}" = "--merge" ]; then
  merge=1
  shift
fi
secs=${1:-60}
shift || true
case "$secs" in '' | *[!0-9]*)
  echo "usage: scripts/fuzz.sh [--merge] [SECONDS] [TARGET...]" >&2
  exit 2
  ;;
esac
sanitizer=${FUZZ_SANITIZER:-none}
flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions --target-dir "${FUZZ_TARGET_DIR:-fuzz/target}")

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "needs the nightly toolchain and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
  exit 2
fi
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

echo "== building ${#targets[@]} targets (sanitizer: $sanitizer, debug assertions)"
cargo +nightly fuzz build "${flags[@]}"

mkdir -p fuzz/work
rows=()
total_s=0
total_execs=0
crashed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/corpus/$t"
  log="fuzz/work/$t.log"
  echo "== $t: ${secs} s"
  start=$(date +%s)
  # -timeout: an input that takes 10 s is a hang, reported like a crash.
  if cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 >"$log" 2>&1; then
    outcome="none"
  else
    outcome="CRASH: $(grep -o 'fuzz/artifacts/[^ ]*' "$log" | tail -1 || true)"
    [ "$outcome" = "CRASH: " ] && outcome="FAILED (see $log)"
    crashed=$((crashed + 1))
  fi
  wall=$(($(date +%s) - start))
  # libFuzzer's own count and time ("Done N runs in S second(s)"; the stat line also on a crash).
  execs=$(awk '/^stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$log")
  ran=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  ran=${ran:-$wall}
  total_s=$((total_s + ran))
  total_execs=$((total_execs + execs))
  rows+=("$(printf '%-18s %8s %12s  %s' "$t" "$ran" "$execs" "$outcome")")
  if [ "$merge" = 1 ]; then
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    # Edges only (no hit counters): the fewest inputs that reach every line the new ones reach.
    cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/work/$t" -- -merge=1 -use_counters=0 \
      >>"$log" 2>&1 || true
    echo "   merged: $(($(find "fuzz/corpus/$t" -type f | wc -l) - before)) new inputs in fuzz/corpus/$t"
  fi
done

echo
printf '%-18s %8s %12s  %s\n' target seconds executions crash
for r in "${rows[@]}"; do
  echo "$r"
done
printf '%-18s %8s %12s  %s\n' total "$total_s" "$total_execs" "$crashed target(s) crashed"
[ "$crashed" = 0 ]
