#!/usr/bin/env bash
# The lifeboat demo: builds lifeboat, makes a real ext4 disk image, and
# protects it end to end — vault, full backup, incremental backup, points,
# verify, restore, byte-for-byte comparison, retention and prune — then runs
# the control plane: a server protects the same disk on a schedule, runs a
# backup through its built-in agent, and shows the machine's RPO state.
# Everything lives in ./demo (or $DEMO_DIR); nothing else on the machine is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
[ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"

DEMO=${DEMO_DIR:-$PWD/demo}
rm -rf "$DEMO"; mkdir -p "$DEMO/files"
go build -o "$DEMO/lifeboat" ./cmd/lifeboat
lb() { echo "+ lifeboat $*" >&2; "$DEMO/lifeboat" "$@"; }

export LIFEBOAT_VAULT="$DEMO/vault" LIFEBOAT_PASSWORD="demo passphrase"

echo "== a 1 GiB disk image with an ext4 filesystem of real files"
cp -r /usr/share/doc "$DEMO/files/doc" 2>/dev/null || true
cp -r "$(go env GOROOT)/src/net" "$DEMO/files/go-net"
head -c 64M /dev/urandom > "$DEMO/files/random.bin"
truncate -s 1G "$DEMO/web1-root.raw"
mkfs.ext4 -q -F -d "$DEMO/files" "$DEMO/web1-root.raw"
cat > "$DEMO/web1.json" <<JSON
{"schema":"lifeboat.machine/v1","name":"web1","cpus":2,"memory_mib":2048,"firmware":"uefi",
 "disks":[{"name":"root","bus":"virtio","format":"raw","boot_order":1}],
 "nics":[{"model":"virtio","mac":"52:54:00:12:34:56","network":"lan"}]}
JSON

echo "== vault and first (full) backup"
lb vault init
lb backup --machine web1 --disk "root=$DEMO/web1-root.raw" --definition "$DEMO/web1.json"

echo "== the disk changes: 100 scattered 64 KiB writes"
for i in $(seq 1 100); do
  dd if=/dev/urandom of="$DEMO/web1-root.raw" bs=64K count=1 seek=$((RANDOM % 16384)) conv=notrunc status=none
done
echo "== incremental backup: only changed chunks are stored"
lb backup --machine web1 --disk "root=$DEMO/web1-root.raw" --definition "$DEMO/web1.json"
lb points

echo "== verify every stored byte"
lb verify --read-data

echo "== restore the latest point and compare"
lb restore --machine web1 latest --to "$DEMO/restored"
cmp "$DEMO/web1-root.raw" "$DEMO/restored/root.raw"
echo "restored disk is byte-identical; definition: $DEMO/restored/web1-dr.json"

echo "== retention: keep the newest point, prune the rest"
lb forget --machine web1 --keep-last 1 --prune
lb verify
du -sh "$DEMO/vault" | sed 's/^/vault size: /'

echo "== the control plane: a server protects web1 on a schedule"
PORT=${DEMO_PORT:-18080}
"$DEMO/lifeboat" server --data "$DEMO/server" --listen "127.0.0.1:$PORT" > "$DEMO/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$DEMO/server/admin.token" ] && break; sleep 0.1; done
export LIFEBOAT_SERVER="http://127.0.0.1:$PORT" LIFEBOAT_TOKEN="$(cat "$DEMO/server/admin.token")"
for _ in $(seq 1 100); do "$DEMO/lifeboat" tier list >/dev/null 2>&1 && break; sleep 0.1; done
lb tier add gold --rpo 5m --rto 15m
lb policy add every-minute --every 1m --keep-last 5      # into the server's own vault
lb machine add web1 --disk "root=$DEMO/web1-root.raw" --definition "$DEMO/web1.json"
lb protect web1 --policy every-minute --tier gold
lb backup-now web1 --wait
lb machine list
lb job list
kill $SERVER; wait $SERVER 2>/dev/null || true
echo "server log: $DEMO/server.log; its vault and catalog: $DEMO/server"
echo "demo complete: everything is in $DEMO"
