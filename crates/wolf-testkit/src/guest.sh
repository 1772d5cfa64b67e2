#!/usr/bin/env bash
# Runs a test binary inside a throwaway QEMU guest (software emulation, no KVM) whose kernel has
# uinput and evdev loaded: Debian's kernel (linux-image-amd64) and busybox in a small initramfs.
# Usage: guest.sh BINARY [ARGS...]. The binary's shared libraries go into the initramfs with it.
# Exit status: the guest test's (137: the guest-side timeout killed it); 124: the host-side
# timeout; 125: the guest did not boot or the harness failed. Env: GUEST_TIMEOUT (s, default 180).
set -euo pipefail

bin=${1:?usage: guest.sh BINARY [ARGS...]}; shift
limit=${GUEST_TIMEOUT:-180}
die() { echo "guest.sh: $*" >&2; exit 125; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (qemu-system-x86)"
command -v cpio >/dev/null || die "cpio is missing"
busybox=$(command -v busybox) || die "busybox is missing (busybox-static)"
kimg=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1) || true
[ -n "$kimg" ] || die "no /boot/vmlinuz-* (linux-image-amd64)"
kver=${kimg#/boot/vmlinuz-}
mods=/lib/modules/$kver

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}

# Under TCG decompressing the bzImage takes seconds: boot the ELF inside it where the kernel has a
# PVH entry point (the payload starts at the first xz/zstd/gzip magic that decompresses to ELF).
kernel=$kimg
if grep -qx 'CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null; then
  vmlinux=$work/vmlinux
  for fmt in 'xz -dcq --single-stream:\xfd7zXZ\x00' 'zstd -dcq:\x28\xb5\x2f\xfd' 'gzip -dcq:\x1f\x8b\x08'; do
    cmd=${fmt%%:*}; magic=${fmt#*:}
    command -v "${cmd%% *}" >/dev/null || continue
    for off in $(LC_ALL=C grep -aboP "$magic" "$kimg" 2>/dev/null | cut -d: -f1 | head -n 5); do
      tail -c +$((off + 1)) "$kimg" | $cmd > "$vmlinux" 2>/dev/null || true
      if [ "$(head -c 4 "$vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then kernel=$vmlinux; break 2; fi
    done
  done
fi

# uinput and evdev (Debian builds both as modules), uncompressed for busybox insmod.
load=""
for m in uinput evdev; do
  if grep -qE "/$m\.ko" "$mods/modules.builtin" 2>/dev/null; then continue; fi
  f=$(modinfo -k "$kver" -F filename "$m" 2>/dev/null | head -n1)
  [ -n "$f" ] && [ -f "$f" ] || die "module $m not found for $kver"
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -dcq "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  load="$load $m"
done

cp "$busybox" "$root/bin/busybox"
for a in sh mount insmod sleep cat cut echo timeout mkdir; do ln -s busybox "$root/bin/$a"; done
# The test binary without its debug info, and every library it links, at their own paths.
objcopy --strip-debug "$bin" "$root/bin/guest-test" 2>/dev/null || cp "$bin" "$root/bin/guest-test"
for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

guest_limit=$(( limit > 40 ? limit - 20 : limit / 2 ))
args=""
for a in "$@"; do args="$args '$a'"; done
cat > "$root/init" <<INIT
#!/bin/sh
export PATH=/bin WOLF_RS_IN_GUEST=1 RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $load; do insmod /lib/modules/\$m.ko || echo "GUEST-INSMOD-FAILED \$m"; done
cd /tmp
timeout -s KILL $guest_limit /bin/guest-test $args
rc=\$?
echo; echo "GUEST-EXIT=\$rc"
echo b > /proc/sysrq-trigger
sleep 5
INIT
chmod +x "$root/init"
( cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 ) > "$work/initrd.gz"

set +e
timeout -k 5 "$limit" qemu-system-x86_64 -M pc -accel tcg -cpu max -smp 1 -m 1024M \
  -nographic -no-reboot -nodefaults -serial stdio -monitor none \
  -kernel "$kernel" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 panic=-1 reboot=t quiet loglevel=3 rdinit=/init" \
  </dev/null > "$work/console.log" 2>&1
qrc=$?
set -e
tr -d '\r' < "$work/console.log" | grep -v -E '^GUEST-EXIT=|SeaBIOS|Booting from|^\s*$' || true
rc=$(tr -d '\r' < "$work/console.log" | sed -n 's/^.*GUEST-EXIT=\([0-9]\{1,3\}\)$/\1/p' | tail -n1)
if [ -z "$rc" ]; then
  [ "$qrc" = 124 ] && exit 124
  die "the guest gave no exit status (qemu exit $qrc)"
fi
exit "$rc"
