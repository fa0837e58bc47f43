#!/usr/bin/env bash
# Builds the kernel and initramfs that lifeboat's tests boot under
# qemu-system-x86_64 -accel tcg: a Debian kernel, busybox-static, the virtio,
# ext4 and virtio_console modules, and Debian's real qemu-ga with its shared
# libraries. The guest's /init runs a workload named on the kernel command line
# (lifeboat.workload=NAME) and prints "LB ..." lines on ttyS0.
#
# Usage: scripts/vm-assets.sh [DIR]
#   DIR defaults to ${LIFEBOAT_VM_CACHE:-/var/cache/lifeboat-vm}.
# Writes DIR/vmlinuz, DIR/initramfs.gz and, where the kernel can be unpacked,
# DIR/vmlinux: the same kernel as an uncompressed ELF that QEMU boots through
# its PVH entry point, skipping the in-guest decompression that costs several
# seconds under TCG. Idempotent: a stamp records the hash of this script and
# the kernel version; a matching stamp is a no-op.
# Concurrent runs (parallel test packages) serialise on DIR/.lock.
set -euo pipefail

DIR="${1:-${LIFEBOAT_VM_CACHE:-/var/cache/lifeboat-vm}}"
SELF="$(readlink -f "$0")"

die() { echo "vm-assets: $*" >&2; exit 1; }

mkdir -p "$DIR" || die "cannot create cache dir $DIR"
DIR="$(readlink -f "$DIR")"
exec 9>"$DIR/.lock"
flock 9

script_hash="$(sha256sum "$SELF" | cut -d' ' -f1)"
if [ -f "$DIR/stamp" ] && [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initramfs.gz" ] &&
  [ "$(head -n1 "$DIR/stamp")" = "$script_hash" ]; then
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb busybox gzip xz ldd flock; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool (run scripts/deps.sh)"
done
[ -x /bin/busybox ] && file_busybox=/bin/busybox || file_busybox="$(command -v busybox)"
# The guest has no libc of its own: busybox must be the static build.
if ldd "$file_busybox" >/dev/null 2>&1; then
  die "$file_busybox is dynamically linked; install busybox-static"
fi
QGA="$(command -v qemu-ga || true)"
[ -z "$QGA" ] && [ -x /usr/sbin/qemu-ga ] && QGA=/usr/sbin/qemu-ga
[ -n "$QGA" ] || die "missing qemu-ga (install qemu-guest-agent: scripts/deps.sh)"

start=$(date +%s)
WORK="$(mktemp -d "$DIR/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# linux-image-amd64 is a metapackage: resolve the versioned image it names.
# Package lists that are missing or stale (the mirror dropped that version)
# are refreshed once.
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
download() { (cd "$WORK" && apt-get download -q "$1" 2>&1); }
kpkg="$(resolve)"
if [ -z "$kpkg" ]; then
  $SUDO apt-get update -qq
  kpkg="$(resolve)"
fi
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (apt-cache depends linux-image-amd64)"
echo "vm-assets: downloading $kpkg" >&2
if ! out="$(download "$kpkg")"; then
  $SUDO apt-get update -qq
  kpkg="$(resolve)"
  out="$(download "$kpkg")" || die "apt-get download $kpkg failed: $out"
fi
dpkg-deb -x "$WORK"/"$kpkg"_*.deb "$WORK/kernel" || die "unpacking $kpkg"
rm -f "$WORK"/"$kpkg"_*.deb
kver="$(ls "$WORK/kernel/lib/modules")"
[ -n "$kver" ] || die "no lib/modules in $kpkg"
MODDIR="$WORK/kernel/lib/modules/$kver"

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,mnt,tmp,run,var,etc,lib/modules}
ln -s ../run "$ROOT/var/run"

# busybox and one symlink per applet, at build time so /init's #!/bin/sh works.
cp "$file_busybox" "$ROOT/bin/busybox"
for applet in $("$file_busybox" --list-full); do
  [ -e "$ROOT/$applet" ] || ln -s /bin/busybox "$ROOT/$applet"
done

# Modules, decompressed, in load order (dependencies first).
modfile() {
  local name="$1" alt="${1//_/-}" f
  f="$(find "$MODDIR/kernel" \( -name "$name.ko*" -o -name "$alt.ko*" \) -print -quit)"
  [ -n "$f" ] || die "module $name not found in $kpkg"
  echo "$f"
}
declare -A seen=()
order=()
addmod() {
  local name="$1" f dep deps
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  f="$(modfile "$name")"
  case "$f" in
    *.ko.xz) xz -dc "$f" >"$WORK/$name.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$WORK/$name.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$WORK/$name.ko" ;;
    *.ko) cp "$f" "$WORK/$name.ko" ;;
    *) die "unknown module format $f" ;;
  esac
  deps="$(grep -a -o 'depends=[A-Za-z0-9_,-]*' "$WORK/$name.ko" | head -n1 | cut -d= -f2)"
  for dep in ${deps//,/ }; do addmod "${dep//-/_}"; done
  mv "$WORK/$name.ko" "$ROOT/lib/modules/$name.ko"
  order+=("$name")
}
# crc32c_generic is no hard dependency of ext4 (it is found through the crypto
# API), so it is named before ext4; the guest has no modprobe to find it.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
  virtio_blk crc16 mbcache jbd2 crc32c_generic ext4 virtio_console; do
  addmod "$m"
done
printf '%s\n' "${order[@]}" >"$ROOT/etc/modules"

# The real guest agent and everything ldd says it loads (including the loader).
cp "$QGA" "$ROOT/usr/sbin/qemu-ga"
ldd "$QGA" | while read -r a b c _; do
  lib=""
  if [ "$b" = "=>" ]; then
    [ "$c" = "not" ] && die "qemu-ga needs $a, which is not installed"
    lib="$c"
  elif [ "${a#/}" != "$a" ]; then
    lib="$a"
  fi
  [ -n "$lib" ] || continue
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done

cat >"$ROOT/init" <<'INIT'
#!/bin/sh
# lifeboat test guest. Lines starting with "LB " on the console are for the
# test harness (internal/vmtest); everything else is diagnostics.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "LB $*"; }
off() { sync; poweroff -f; sleep 10; }
fail() { say "error $*"; off; }

while read -r m; do
  insmod "/lib/modules/$m.ko" || say "warning insmod $m failed"
done </etc/modules

workload=idle
heartbeat=0
agent=1
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    lifeboat.workload=*) workload="${arg#*=}" ;;
    lifeboat.heartbeat=*) heartbeat="${arg#*=}" ;;
    lifeboat.agent=*) agent="${arg#*=}" ;;
  esac
done
say "workload $workload"

# Wait for the virtio block devices the kernel probes asynchronously.
waitdev() {
  i=0
  while [ ! -b "$1" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail "no block device $1"
    usleep 50000
  done
}

# The guest agent, on the virtio-serial port named org.qemu.guest_agent.0.
# Ports appear shortly after virtio_console binds (the host announces them on
# a control queue), so wait a little, but only if there is a virtio-serial
# device at all.
agentport() {
  for p in /sys/class/virtio-ports/*; do
    [ -f "$p/name" ] && [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] && echo "/dev/${p##*/}"
  done
}
# lifeboat.agent=0 leaves the port without an agent (tests of a dead agent).
if [ "$agent" = 1 ] && ls /sys/bus/virtio/drivers/virtio_console/virtio* >/dev/null 2>&1; then
  i=0
  while [ -z "$(agentport)" ] && [ $i -lt 40 ]; do
    usleep 50000
    i=$((i + 1))
  done
  dev="$(agentport)"
  if [ -n "$dev" ]; then
    mkdir -p /run/qemu-ga
    qemu-ga -m virtio-serial -p "$dev" -t /run/qemu-ga -f /run/qemu-ga.pid \
      </dev/null >/dev/console 2>&1 &
    say "guest-agent $dev"
  fi
fi

mountvda() {
  waitdev /dev/vda
  mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"
}

# A fixed-width record for the raw-disk workloads: 512 bytes, "LBSEQ %020d\n".
record() { printf 'LBSEQ %020d\n' "$1"; }
readrecord() {
  v="$(dd if="$1" bs=512 count=1 2>/dev/null | head -c 27)"
  case "$v" in
    "LBSEQ "*) v="$(echo "${v#LBSEQ }" | sed 's/^0*//')"; echo "${v:-0}" ;;
    *) echo -1 ;;
  esac
}

case "$workload" in
  counter)
    mountvda
    n="$(cat /mnt/counter 2>/dev/null || echo 0)"
    case "$n" in '' | *[!0-9]*) fail "bad counter file: $n" ;; esac
    say ready
    while :; do
      n=$((n + 1))
      echo "$n" >/mnt/counter.tmp
      sync /mnt/counter.tmp
      mv /mnt/counter.tmp /mnt/counter
      sync
      say "counter $n"
      usleep 50000
    done
    ;;
  readcounter)
    mountvda
    n="$(cat /mnt/counter 2>/dev/null)" || fail "no /mnt/counter"
    umount /mnt
    say "readcounter $n"
    off
    ;;
  seq2)
    waitdev /dev/vda
    waitdev /dev/vdb
    n="$(readrecord /dev/vda)"
    [ "$n" -lt 0 ] && n=0
    say ready
    while :; do
      n=$((n + 1))
      record "$n" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null || fail "write vda"
      record "$n" | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null || fail "write vdb"
      say "seq $n"
      usleep 50000
    done
    ;;
  readseq2)
    waitdev /dev/vda
    waitdev /dev/vdb
    say "readseq $(readrecord /dev/vda) $(readrecord /dev/vdb)"
    off
    ;;
  idle)
    if [ -b /dev/vda ] || { usleep 200000; [ -b /dev/vda ]; }; then
      if mount -t ext4 /dev/vda /mnt 2>/dev/null; then
        say "mounted /mnt"
      fi
    fi
    say ready
    if [ "$heartbeat" = 1 ] && grep -q ' /mnt ' /proc/mounts; then
      # Writes to a frozen filesystem block: the heartbeat stops while frozen.
      n=0
      while :; do
        n=$((n + 1))
        echo "$n" >/mnt/heartbeat
        sync /mnt/heartbeat
        say "heartbeat $n"
        usleep 100000
      done &
    fi
    while :; do sleep 3600; done
    ;;
  *)
    fail "unknown workload $workload"
    ;;
esac
off
INIT
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . | LC_ALL=C sort | busybox cpio -o -H newc 2>/dev/null) | gzip -6 >"$WORK/initramfs.gz"
cp "$WORK/kernel/boot/vmlinuz-$kver" "$WORK/vmlinuz"
# The bzImage carries the kernel compressed; find the payload by its magic.
rm -f "$DIR/vmlinux"
unpack() { # magic, command
  local off
  off="$(LC_ALL=C grep -abo "$1" "$WORK/vmlinuz" | head -n1 | cut -d: -f1)"
  [ -n "$off" ] || return 1
  tail -c +$((off + 1)) "$WORK/vmlinuz" | $2 2>/dev/null >"$WORK/vmlinux" || true
  [ "$(head -c 4 "$WORK/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]
}
if grep -q '^CONFIG_PVH=y' "$WORK/kernel/boot/config-$kver" &&
  { unpack $'\xfd7zXZ\x00' "xz -dc" || unpack $'\x28\xb5\x2f\xfd' "zstd -qdc" || unpack $'\x1f\x8b\x08' "gzip -dc"; }; then
  mv "$WORK/vmlinux" "$DIR/vmlinux"
else
  echo "vm-assets: kernel not unpacked for PVH boot; tests boot the slower bzImage" >&2
fi
mv "$WORK/vmlinuz" "$DIR/vmlinuz"
mv "$WORK/initramfs.gz" "$DIR/initramfs.gz"
printf '%s\n%s\n' "$script_hash" "$kver" >"$DIR/stamp"
echo "vm-assets: built $DIR (kernel $kver, modules: ${order[*]}) in $(($(date +%s) - start))s" >&2
