#!/usr/bin/env bash
# Builds the wolf-rs image with no registry: a minimal Debian bookworm made here with debootstrap
# and imported into Docker once (wolf-rs-debian:bookworm), then docker/Dockerfile.local on top of
# it (the same runtime packages as docker/Dockerfile, from Debian's mirror) with the binary built on
# this machine. Root for debootstrap.
#
#   docker/build-local.sh [TAG]      build the image (default wolf-rs:local)
#   docker/build-local.sh --prepare  only the base image and the cached package layer (no binary):
#                                    scripts/test.sh runs it in the background while cargo builds
#
# Environment: WOLF_BINARY=path uses that binary instead of a release build (the tests pass their
# debug build); WOLF_BASE_IMAGE names the base image (default wolf-rs-debian:bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${WOLF_BASE_IMAGE:-wolf-rs-debian:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The package layer cached by --prepare stays tagged so it is not pruned.
CACHE_TAG=wolf-rs-runtime-cache:local

# One build at a time: a test's build waits for a --prepare already under way, then reuses it.
exec 9>"${TMPDIR:-/tmp}/wolf-rs-build-local.lock"
flock 9

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

mkdir -p "$work/ctx"
sed "s|^FROM wolf-rs-debian:bookworm$|FROM $BASE|" docker/Dockerfile.local >"$work/ctx/Dockerfile"

if [ "${1:-}" = "--prepare" ]; then
  # Any file stands in for the binary: the package layer before its COPY is what gets cached.
  echo placeholder >"$work/ctx/wolf-rs"
  docker build -q -t "$CACHE_TAG" "$work/ctx" >/dev/null
  echo "prepared $BASE and the package layer"
  exit 0
fi
TAG=${1:-wolf-rs:local}

BINARY=${WOLF_BINARY:-}
if [ -z "$BINARY" ]; then
  cargo build --release --locked -p wolf-rs
  BINARY=target/release/wolf-rs
fi
# Debug info is not needed at run time (a debug build carries hundreds of MB of it).
strip --strip-debug -o "$work/ctx/wolf-rs" "$BINARY" 2>/dev/null || cp "$BINARY" "$work/ctx/wolf-rs"
docker build -q -t "$TAG" "$work/ctx" >/dev/null
echo "built $TAG"
