#!/usr/bin/env bash
# lifeboat export throughput and latency (docs/recovery.md, issue 13): a
# point of a dense disk in a directory vault, served by `lifeboat export`
# on a unix socket, read by real NBD clients:
#   - nbdcopy of the whole disk to null: (its defaults: 4 connections,
#     64 requests in flight), each run from a freshly started export (cold
#     cache), in MB/s of disk data;
#   - fio's nbd engine (libnbd): sequential 256 KiB reads, 16 in flight;
#     random 4 KiB reads one at a time for 10 s, completion latency p50/p99
#     (cold: a random 4 KiB read almost always needs its whole chunk
#     fetched, authenticated and decompressed).
#
# Usage: bench/export.sh [SIZE_MIB]   (default 1024; works in bench/work/export;
#        LIFEBOAT_BIN=PATH measures that lifeboat binary instead of a fresh build)
# The disk holds half-entropy bytes (every byte's high nibble zero): zstd
# stores it about 2:1, so every chunk is decrypted, decompressed and
# hashed on the way out, the expensive case. Needs: nbdcopy, fio, python3.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK=$HERE/work/export
LB=${LIFEBOAT_BIN:-$WORK/lifeboat} # LIFEBOAT_BIN: measure that binary (e.g. an older build)
MIB=${1:-1024}
export LIFEBOAT_PASSWORD=bench-export-passphrase

mkdir -p "$WORK"
[ -n "${LIFEBOAT_BIN:-}" ] || (cd "$ROOT" && go build -o "$LB" ./cmd/lifeboat)
now() { date +%s.%N; }

img=$WORK/dense$MIB.raw
if [ ! -f "$img" ]; then
  python3 - "$img" "$MIB" <<'PY'
import random, sys
rng = random.Random(13)
low = bytes(b & 0x0f for b in range(256))
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(rng.randbytes(1 << 20).translate(low))
PY
fi
rm -rf "$WORK/vault"
"$LB" vault init --vault "$WORK/vault" >/dev/null
"$LB" backup -q --vault "$WORK/vault" --machine dense --disk d="$img" >/dev/null

echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cpus, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# lifeboat ${LIFEBOAT_BIN:-$(git -C "$ROOT" rev-parse --short HEAD)}, disk of $MIB MiB, $(du -sm "$WORK/vault" | cut -f1) MiB in the vault"
sock=$WORK/e.sock
uri="nbd+unix:///d?socket=$sock"
serve() {
  rm -f "$sock"
  "$LB" export --vault "$WORK/vault" --machine dense latest --nbd "unix:$sock" -q >/dev/null &
  pid=$!
  until nbdinfo --size "$uri" >/dev/null 2>&1; do sleep 0.05; done
}
unserve() { kill -INT "$pid"; wait "$pid" || true; }

# cpu_ms PID: user+system CPU time the process used so far, in ms. On a
# machine shared with other work, the CPU each side spends per byte says
# more than the wall clock: 2 cores / (CPU s per GB) is what they allow.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"; }
for i in 1 2 3; do
  serve
  c0=$(cpu_ms "$pid")
  t0=$(now)
  client=$( { /usr/bin/time -f '%U %S' nbdcopy "$uri" null: ; } 2>&1 | tail -1)
  t1=$(now)
  c1=$(cpu_ms "$pid")
  unserve
  ccpu=$(echo "$client" | awk '{print int(($1 + $2) * 1000)}')
  echo "nbdcopy run $i: $(echo "$MIB * 1048576 / ($t1 - $t0) / 1000000" | bc) MB/s ($(echo "($t1 - $t0) * 1000 / 1" | bc) ms); CPU: export $((c1 - c0)) ms, nbdcopy $ccpu ms; both on 2 idle cores: $(echo "2 * $MIB * 1048576 / ($c1 - $c0 + $ccpu) / 1000" | bc) MB/s"
done

serve
fio --name=seq --ioengine=nbd --uri="$uri" --rw=read --bs=256k --iodepth=16 --size="${MIB}M" \
  --output-format=json --output="$WORK/fio-seq.json" >/dev/null
unserve
serve
fio --name=rand --ioengine=nbd --uri="$uri" --rw=randread --bs=4k --iodepth=1 --size="${MIB}M" \
  --runtime=10 --time_based --randrepeat=1 --output-format=json --output="$WORK/fio-rand.json" >/dev/null
unserve
python3 - "$WORK/fio-seq.json" "$WORK/fio-rand.json" <<'PY'
import json, sys
seq = json.load(open(sys.argv[1]))["jobs"][0]["read"]
print("fio sequential 256 KiB, 16 in flight: %d MB/s" % (seq["bw_bytes"] / 1e6))
r = json.load(open(sys.argv[2]))["jobs"][0]["read"]
p = r["clat_ns"]["percentile"]
print("fio random 4 KiB, 1 in flight, cold: %d IOPS, p50 %d us, p99 %d us, p99.9 %d us" % (
    r["iops"], p["50.000000"] / 1000, p["99.000000"] / 1000, p["99.900000"] / 1000))
PY
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
