#!/usr/bin/env bash
# lifeboat recovery benchmark (docs/recovery.md): time to first byte of an
# export, sequential read of an export with nbdcopy, and the instant-restore
# RTO (command to the guest agent answering) for a 1 GiB and a 16 GiB machine
# beside a full restore followed by a boot of the restored images.
#
# Usage: bench/recovery.sh          (works in bench/work/recovery, gitignored)
# Needs: qemu-system-x86_64, qemu-img, nbdcopy, python3, the test VM assets
# (scripts/vm-assets.sh, cached in /var/cache/lifeboat-vm). The guest is the
# test kernel + busybox initramfs booted directly (--kernel), with qemu-ga;
# its disk is an ext4 file system with 512 MiB of files, the rest holes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK=$HERE/work/recovery
LB=$WORK/lifeboat
ASSETS=${LIFEBOAT_VM_CACHE:-/var/cache/lifeboat-vm}
KERNEL=$ASSETS/vmlinux; [ -f "$KERNEL" ] || KERNEL=$ASSETS/vmlinuz
INITRD=$ASSETS/initramfs.gz
export LIFEBOAT_PASSWORD=bench-recovery-passphrase

mkdir -p "$WORK"
(cd "$ROOT" && go build -o "$LB" ./cmd/lifeboat)
now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000 / 1" | bc; }

# qga_wait SOCKET: poll the guest agent until it answers guest-ping.
qga_wait() {
  python3 - "$1" <<'PY'
import json, socket, sys, time
deadline = time.time() + 300
while time.time() < deadline:
    try:
        s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])
        s.sendall(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":4242}}\n')
        buf = b""
        while b'4242' not in buf:
            buf += s.recv(4096)
        s.close(); sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(1)
PY
}

echo "# $(date -u +%FT%TZ) $(uname -r) load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# lifeboat $(git -C "$ROOT" rev-parse --short HEAD)"
rm -rf "$WORK/vault"
"$LB" vault init --vault "$WORK/vault" >/dev/null
if [ ! -f "$WORK/files/big.bin" ]; then
  mkdir -p "$WORK/files"
  head -c 512M /dev/urandom >"$WORK/files/big.bin"
fi
for gib in 1 16; do
  img=$WORK/disk$gib.raw
  rm -f "$img"; truncate -s ${gib}G "$img"
  mkfs.ext4 -q -d "$WORK/files" "$img"
  cat >"$WORK/vm$gib.json" <<EOF
{"schema":"lifeboat.machine/v1","name":"vm$gib","cpus":1,"memory_mib":512,
 "disks":[{"name":"root","bus":"virtio","format":"raw","boot_order":1}]}
EOF
  "$LB" backup -q --vault "$WORK/vault" --machine vm$gib --disk root="$img" --definition "$WORK/vm$gib.json" >/dev/null
done
BOOT=(--accel tcg --kernel "$KERNEL" --initrd "$INITRD" --append "console=ttyS0 quiet lifeboat.workload=idle")

echo "## export: time to first byte, sequential read (nbdcopy)"
for gib in 1 16; do
  sock=$WORK/e.sock
  t0=$(now)
  "$LB" export --vault "$WORK/vault" --machine vm$gib latest --nbd unix:$sock -q >/dev/null &
  pid=$!
  until qemu-io -r -f raw -c "read 0 4k" "nbd+unix:///root?socket=$sock" >/dev/null 2>&1; do sleep 0.01; done
  t1=$(now)
  nbdcopy "nbd+unix:///root?socket=$sock" null: 2>/dev/null
  t2=$(now)
  nbdcopy "nbd+unix:///root?socket=$sock" null: 2>/dev/null
  t3=$(now)
  kill -INT $pid; wait $pid || true
  echo "vm$gib: first byte $(ms $t0 $t1) ms; nbdcopy of the ${gib} GiB disk (512 MiB of data): cold $(ms $t1 $t2) ms, warm cache $(ms $t2 $t3) ms"
done

echo "## instant restore vs full restore + boot"
for gib in 1 16; do
  dir=$WORK/instant$gib
  rm -rf "$dir"
  out=$("$LB" --vault "$WORK/vault" --json restore --machine vm$gib latest --instant --start --wait-guest --to "$dir" "${BOOT[@]}")
  pid=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  echo "vm$gib instant: $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("running %d ms, guest agent answered %d ms (%.1f%% copied), standalone %d ms" % (d["started_ms"], d["answered_ms"], 100.0*d["answered_copied_bytes"]/d["size"], d["copied_ms"]))')"
  kill $pid 2>/dev/null || true
  dir=$WORK/full$gib
  rm -rf "$dir"
  t0=$(now)
  "$LB" --vault "$WORK/vault" -q restore --machine vm$gib latest --to "$dir" >/dev/null
  t1=$(now)
  run=$WORK/run$gib; rm -rf "$run"; mkdir -p "$run"
  "$LB" start --definition "$dir/vm$gib-dr.json" --run-dir "$run" "${BOOT[@]}" >/dev/null &
  spid=$!
  until [ -S "$run/qga.sock" ]; do sleep 0.01; done
  qga_wait "$run/qga.sock"
  t2=$(now)
  kill -INT $spid; wait $spid || true
  echo "vm$gib full: restore $(ms $t0 $t1) ms, then the guest agent answered after $(ms $t1 $t2) ms: $(ms $t0 $t2) ms in all"
done
