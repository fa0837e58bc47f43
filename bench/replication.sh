#!/bin/bash
# Continuous replication benchmark (docs/replication.md): a qemu-storage-daemon
# disk written by random 4 KiB writes (each fdatasync'ed, through a FUSE export)
# replicated to a replica server on this host. Measures the guest write latency
# without and with replication, the RPO lag (replicate status --json, sampled
# every 250 ms under the load), and the time to fail over (test failover: disks
# ready and the machine started) to the latest point and to the oldest (base),
# for each disk size.
#
#   bench/replication.sh [SIZES...]      default: 4G 16G
#   LOAD_SECONDS=30 EVERY=1s bench/replication.sh 4G
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-4G 16G}")
[ $# -eq 0 ] && sizes=(4G 16G)
load=${LOAD_SECONDS:-30}
every=${EVERY:-1s}
work=$(mktemp -d /tmp/lbrb.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for f in "$work"/*.fuse; do fusermount3 -u "$f" 2>/dev/null || true; done
    rm -rf "$work" || true
}
trap cleanup EXIT
go build -o "$work/lifeboat" ./cmd/lifeboat
lb() { LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" "$@"; }

cat >"$work/writer.py" <<'PY'
import os, random, sys, time, json
path, seconds, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY)
buf = os.urandom(4096)
lat = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    off = random.randrange(size // 4096) * 4096
    t = time.monotonic()
    os.pwrite(fd, buf, off)
    os.fdatasync(fd)
    lat.append(time.monotonic() - t)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(json.dumps({"writes": len(lat), "per_s": len(lat) / seconds, "p50_ms": q(.5), "p99_ms": q(.99)}))
PY
cat >"$work/lag.py" <<'PY'
import json, subprocess, sys, time
cmd, seconds = sys.argv[1:-1], float(sys.argv[-1])
lags = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    st = json.loads(subprocess.run(cmd, capture_output=True, text=True).stdout)
    if st.get("state") == "protected":
        lags.append(st["lag_seconds"])
    time.sleep(0.25)
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
print(json.dumps({"samples": len(lags), "p50_s": q(.5), "p99_s": q(.99), "max_s": lags[-1]}))
PY

echo "site-token" >"$work/token"
port=$((20000 + RANDOM % 20000))
# Background processes run the binary itself, not through lb: $! would name
# lb's subshell, and cleanup would kill that and leave lifeboat running.
LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" replica serve --listen 127.0.0.1:$port --dir "$work/replica" --token-file "$work/token" 2>"$work/serve.log" &
pids+=($!)
sleep 1
lb site add dr --url http://127.0.0.1:$port --token-file "$work/token" >/dev/null

for size in "${sizes[@]}"; do
    m=m$size
    img="$work/$m.qcow2" fuse="$work/$m.fuse" qmp="$work/$m.qmp"
    qemu-img create -q -f qcow2 "$img" "$size"
    : >"$fuse"
    qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$img" --blockdev driver=qcow2,node-name=d0,file=f \
        --export type=fuse,id=e,node-name=d0,mountpoint="$fuse",writable=on \
        --chardev socket,id=m,path="$qmp",server=on,wait=off --monitor chardev=m &
    pids+=($!)
    sleep 1
    bytes=$(stat -c %s "$fuse")
    # 256 MiB of data first, so the initial sync and the base hold something.
    dd if=/dev/urandom of="$fuse" bs=1M count=256 conv=notrunc,fdatasync status=none

    echo "== $size: write latency without replication"
    python3 "$work/writer.py" "$fuse" "$load" "$bytes"

    t0=$(date +%s.%N)
    LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" replicate run --machine $m --qmp "$qmp" --target dr --every "$every" --crash-interval 10s 2>"$work/run-$m.log" &
    pids+=($!)
    until lb replicate status --machine $m --json 2>/dev/null | grep -q '"state": "protected"'; do sleep 0.2; done
    echo "== $size: initial sync (256 MiB of data) took $(echo "$(date +%s.%N) - $t0" | bc) s"

    echo "== $size: write latency with replication, and RPO lag (every $every)"
    python3 "$work/lag.py" env LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" replicate status --machine $m --json "$load" &
    lagpid=$!
    python3 "$work/writer.py" "$fuse" "$load" "$bytes"
    wait $lagpid
    lb replicate points --machine $m | tail -1

    for point in latest oldest; do
        p=$point
        [ $point = oldest ] && p=$(lb --json replicate points --machine $m | python3 -c 'import json,sys; print(json.load(sys.stdin)["points"][0]["id"])')
        t0=$(date +%s.%N)
        out=$(lb --json failover --machine $m --test --point "$p")
        total=$(echo "$(date +%s.%N) - $t0" | bc)
        echo "== $size: test failover to $point: disks ready in $(echo "$out" | python3 -c 'import json,sys; f=json.load(sys.stdin); print("%.2f s (%d batches)" % (f["seconds"], f["batches"]))'), machine started after $total s"
        lb failover --machine $m --test-cleanup >/dev/null
    done
done
