#!/usr/bin/env bash
# Installs the system packages wolf-rs builds and runs with (Debian), only when some are missing.
# `--test` adds what the tests need; extra package names as arguments are installed the same way
# (scripts/bench.sh passes its own).
set -euo pipefail

PACKAGES=(
  pkg-config build-essential cmake clang
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-tools gstreamer1.0-libav
  # desktop sessions: a virtual display and audio per session, the default "Desktop" app
  xvfb pulseaudio pulseaudio-utils x11-xserver-utils openbox xterm
)
TEST_PACKAGES=(
  # a one-binary app image for the docker runner tests; unshare for the namespace tests
  busybox-static util-linux python3
  # the desktop tests look for windows on a session's display
  xdotool
  # the gamepad test runs in a QEMU guest whose kernel has uinput (Debian's kernel, busybox)
  qemu-system-x86 linux-image-amd64 cpio kmod xz-utils
  # the container tests: a base image made here, a real Prometheus and promtool
  debootstrap prometheus
)
if [ "${1:-}" = "--test" ]; then
  shift
  PACKAGES+=("${TEST_PACKAGES[@]}")
fi
PACKAGES+=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (stable) first" >&2; exit 1; }
