#!/usr/bin/env bash
# Builds the wolf-rs image with no registry: a minimal Debian bookworm made here with debootstrap
# and imported into Docker once (wolf-rs-debian:bookworm), then docker/Dockerfile.local on top of
# it (the same runtime packages as docker/Dockerfile, from Debian's mirror) with the binary built on
# this machine. Usage: docker/build-local.sh [TAG]   (default wolf-rs:local; root for debootstrap)
# Environment: WOLF_BINARY=path uses that binary instead of a release build (the tests pass their
# debug build); WOLF_BASE_IMAGE names the base image (default wolf-rs-debian:bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-wolf-rs:local}
BASE=${WOLF_BASE_IMAGE:-wolf-rs-debian:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  echo "making $BASE with debootstrap from $MIRROR"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log"; exit 1; }
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/archives/"*.deb
  tar -C "$work/rootfs" -c . | docker import - "$BASE" >/dev/null
fi

BINARY=${WOLF_BINARY:-}
if [ -z "$BINARY" ]; then
  cargo build --release --locked
  BINARY=target/release/wolf-rs
fi
mkdir -p "$work/ctx"
cp "$BINARY" "$work/ctx/wolf-rs"
sed "s|^FROM wolf-rs-debian:bookworm$|FROM $BASE|" docker/Dockerfile.local >"$work/ctx/Dockerfile"
docker build -q -t "$TAG" "$work/ctx" >/dev/null
echo "built $TAG"
