#!/usr/bin/env bash
# Runs the host with the default config (state in ./data; config.toml written there on first start).
# Extra arguments go to `wolf-rs`, e.g. `./scripts/run.sh --state-dir /srv/wolf`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --release --locked -p wolf-rs
exec ./target/release/wolf-rs "$@" serve
