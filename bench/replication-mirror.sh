#!/bin/bash
# Mirror capture benchmark (docs/replication.md, "Capture"): a
# qemu-storage-daemon disk (qcow2) written by fio — random 4 KiB writes,
# one at a time (iodepth 1), through the daemon's NBD export — with no
# replication, with bitmap capture and with mirror capture (QEMU's
# write-blocking mirror into the source journal), each to a replica server
# on this host. Reports the guest's write latency (fio clat p50/p99, IOPS),
# the RPO lag (replicate status --json sampled every 250 ms under the load)
# and, for the mirror, the journal's throughput (bytes shipped / seconds).
#
# SYNC=1 makes every write followed by a flush (fio --fsync=1, an NBD
# FLUSH), as a database commit does; sync_mean_us is then the mean flush latency.
#
#   bench/replication-mirror.sh                 # 1 GiB disk, 20 s of load
#   SIZE=4G LOAD_SECONDS=30 SYNC=1 bench/replication-mirror.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-1G}
load=${LOAD_SECONDS:-20}
every=${EVERY:-1s}
sync=()
[ "${SYNC:-0}" = 1 ] && sync=(--fsync=1)
work=$(mktemp -d /tmp/lbrm.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work" || true
}
trap cleanup EXIT
go build -o "$work/lifeboat" ./cmd/lifeboat
lb() { LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" "$@"; }

cat >"$work/lag.py" <<'PY'
import json, subprocess, sys, time
cmd, seconds = sys.argv[1:-1], float(sys.argv[-1])
lags, first, last = [], None, None
end = time.monotonic() + seconds
while time.monotonic() < end:
    st = json.loads(subprocess.run(cmd, capture_output=True, text=True).stdout)
    if st.get("state") == "protected":
        lags.append(st["lag_seconds"])
        b = st.get("journal_shipped_bytes", 0)
        now = time.monotonic()
        if first is None:
            first = (now, b)
        last = (now, b)
    time.sleep(0.25)
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
tput = (last[1] - first[1]) / (last[0] - first[0]) / 2**20 if last and last[0] > first[0] else 0
print(json.dumps({"samples": len(lags), "lag_p50_s": q(.5), "lag_p99_s": q(.99), "lag_max_s": lags[-1],
                  "journal_mib_s": round(tput, 2), "capture": st.get("capture"), "fallbacks": st.get("fallbacks", 0)}))
PY

echo "site-token" >"$work/token"
port=$((20000 + RANDOM % 20000))
# Background processes run the binary itself (not through lb, whose subshell
# would be what $! names and cleanup kills).
LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" replica serve --listen 127.0.0.1:$port --dir "$work/replica" --token-file "$work/token" 2>"$work/serve.log" &
pids+=($!)
sleep 1
lb site add dr --url http://127.0.0.1:$port --token-file "$work/token" >/dev/null

fio_run() { # URI NAME: prints "p50_us p99_us iops sync_mean_us"
    fio --name=rw --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth=1 --size="$size" "${sync[@]}" \
        --runtime="$load" --time_based --randrepeat=0 --output-format=json --output="$work/$2.json" >/dev/null
    python3 - "$work/$2.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
w = j["write"]
p = w["clat_ns"]["percentile"]
s = j["sync"]["lat_ns"]["mean"]
print(f'{p["50.000000"]/1000:.0f} {p["99.000000"]/1000:.0f} {w["iops"]:.0f} {s/1000:.0f}')
PY
}

for mode in none bitmap mirror; do
    m=m$mode
    img="$work/$m.qcow2" qmp="$work/$m.qmp" nbd="$work/$m.nbd"
    qemu-img create -q -f qcow2 "$img" "$size"
    qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$img" --blockdev driver=qcow2,node-name=d0,file=f \
        --nbd-server addr.type=unix,addr.path="$nbd" --export type=nbd,id=guest,node-name=d0,name=d0,writable=on \
        --chardev socket,id=m,path="$qmp",server=on,wait=off --monitor chardev=m &
    qsd=$!
    pids+=($qsd)
    sleep 1
    uri="nbd+unix:///d0?socket=$nbd"
    # 64 MiB of data first, so the initial sync holds something.
    qemu-io -f raw -c "write -P 7 0 64M" "$uri" >/dev/null
    if [ $mode != none ]; then
        LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" replicate run --machine $m --qmp "$qmp" --target dr --every "$every" --capture $mode \
            --nbd-server "unix:$nbd" 2>"$work/$m.log" &
        pids+=($!)
        for _ in $(seq 600); do
            st=$(lb replicate status --machine $m --json 2>/dev/null || true)
            case "$st" in *'"state": "protected"'*'"capture": "'$mode'"'*) break ;; esac
            sleep 0.2
        done
        python3 "$work/lag.py" env LIFEBOAT_STATE_DIR="$work/state" "$work/lifeboat" replicate status --machine $m --json "$load" >"$work/$m.lag" &
        lagpid=$!
    fi
    read -r p50 p99 iops syncp50 < <(fio_run "$uri" $m)
    lag="-"
    if [ $mode != none ]; then
        wait $lagpid
        lag=$(cat "$work/$m.lag")
    fi
    echo "capture=$mode size=$size write_p50_us=$p50 write_p99_us=$p99 sync_mean_us=$syncp50 iops=$iops $lag"
    kill -9 $qsd 2>/dev/null || true
    wait $qsd 2>/dev/null || true
done
