#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages (the host's and the tests'), format, lints,
# every test of every crate in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
export CARGO_TERM_COLOR=never
# The container test's base image and package layer (debootstrap, Debian's mirror: mostly waiting on
# the network) are made in the background while cargo compiles; the test's own build waits for them
# (a lock). Removed at the end unless they were there before.
prepared=""
if command -v docker >/dev/null && ! docker image inspect wolf-rs-debian:bookworm >/dev/null 2>&1; then
  mkdir -p target
  ./docker/build-local.sh --prepare >target/docker-prepare.log 2>&1 &
  prepared=$!
fi
cleanup() {
  rm -f "${log:-}"
  if [ -n "$prepared" ]; then
    wait "$prepared" 2>/dev/null || true
    docker rmi -f wolf-rs-runtime-cache:local wolf-rs-debian:bookworm >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== module import circles"
# The checks themselves first (a tree where api imports gamestream must fail), then this tree.
python3 scripts/check-module-cycles.py --self-test
python3 scripts/check-module-cycles.py --front-ends crates/wolf-rs/src crates/*/src
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
# --show-output: the measurements some tests print (MTTR, storm rate, crash counts) land in the log.
cargo test --workspace --all-targets --locked -- --show-output 2>&1 | tee "$log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "wolf-rs: %d passed, %d failed\n", p, f }' "$log"
