#!/usr/bin/env bash
# lifeboat scale benchmark (issue 15): the cost of one job against a vault
# that already holds N chunks.
#
# Usage: bench/scale.sh [N ...]        (default: 0 1000000)
#        LB=/path/to/lifeboat bench/scale.sh ...   measure a prebuilt binary
#                                                  (e.g. an older commit's)
#
# For each N: a vault at 64 KiB chunks (so that a million chunks are
# generated in ~30 s and take ~180 MB) is filled by bench/genvault with N
# unique chunks in real packs, index objects, manifests and points; then a
# dense 4 GiB disk (bench/genvault -disk, 65,536 unique compressible blocks)
# gets a full backup (untimed), 1% of it is changed (bench/imgtool.py
# mutate: 656 runs of 64 KiB at seeded offsets, as bench/run.sh does), and
# these are timed with /usr/bin/time (wall s, peak RSS):
#   incr      the 1%-change incremental backup (compare with the parent)
#   restore   restore of that point to a file
#   copy      vault copy --machine bench (its 2 points) into a new copy vault
#   prune     prune with nothing to delete (it reads every index object)
#   prune2    prune after forgetting the full backup (keep-last 1): the old
#             versions of the changed blocks are deleted or repacked
# "index fetched" is the bytes of index objects the run read from the vault:
# every index object for a lifeboat that loads the whole index, and only the
# ones its cache has not seen for one that keeps a cache (the script counts
# the objects written since the previous run). Results go to
# bench/work/scale/results.txt. SKIP_PRUNE=1 leaves out both prunes (for a
# binary whose prune takes minutes at 5 M chunks). LIFEBOAT_CACHE_DIR is set to a fresh
# directory per vault (first run on a host is the untimed full backup).
# The generated vaults are kept in bench/work/scale/gen-N and copied for
# each measurement (delete them to regenerate).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
W=$HERE/work/scale
GEN=$W/genvault
export LIFEBOAT_PASSWORD=bench-scale-passphrase
export PATH=$PATH:/usr/local/go/bin
mkdir -p "$W/logs"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(0 1000000)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
(cd "$ROOT" && go build -o "$GEN" ./bench/genvault)
if [ -z "${LB:-}" ]; then
	LB=$W/lifeboat
	(cd "$ROOT" && go build -o "$LB" ./cmd/lifeboat)
	REV=$(cd "$ROOT" && git rev-parse --short HEAD)
	[ -z "$(cd "$ROOT" && git status --porcelain --untracked-files=no -- cmd internal)" ] || REV="$REV+changes"
else
	REV="binary $LB"
fi
[ -f "$W/disk.orig" ] || "$GEN" -disk "$W/disk.orig" -size 4G
if [ ! -f "$W/disk.changed" ]; then # the same disk with 1% changed, made once
	cp --sparse=always "$W/disk.orig" "$W/disk.changed.tmp"
	python3 "$HERE/imgtool.py" mutate "$W/disk.changed.tmp" 20261123 656 65536 >/dev/null
	mv "$W/disk.changed.tmp" "$W/disk.changed"
fi

timed() { # timed NAME CMD...
	local name=$1; shift
	sync
	/usr/bin/time -f '%e %M' -o "$W/logs/$name.time" "$@" >"$W/logs/$name.out" 2>"$W/logs/$name.err" ||
		{ echo "scale.sh: $name failed" >&2; tail "$W/logs/$name.err" >&2; exit 1; }
	read -r secs kib <"$W/logs/$name.time"
	echo "$secs $((kib / 1024))"
}
index_bytes() { find "$1/index" -type f 2>/dev/null -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
index_list() { find "$1/index" -type f -printf "%f\n" 2>/dev/null | sort || true; }

echo "# lifeboat $REV, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$W/results.txt"
for n in "${SIZES[@]}"; do
	V=$W/vault-$n
	export LIFEBOAT_CACHE_DIR=$W/cache-$n LIFEBOAT_STATE_DIR=$W/state-$n
	rm -rf "$LIFEBOAT_STATE_DIR"
	rm -rf "$V" "$LIFEBOAT_CACHE_DIR" "$W/restore.img"
	if [ ! -d "$W/gen-$n" ]; then
		"$LB" vault init --vault "$W/gen-$n.tmp" --chunk-size 64K >/dev/null
		[ "$n" -eq 0 ] || "$GEN" -vault "$W/gen-$n.tmp" -chunks "$n" >&2
		mv "$W/gen-$n.tmp" "$W/gen-$n"
	fi
	cp -a "$W/gen-$n" "$V"
	index_list "$V" >"$W/index.gen"
	log "N=$n: full backup (untimed)"
	"$LB" --vault "$V" backup --machine bench --disk disk0="$W/disk.orig" -q >/dev/null
	index_list "$V" >"$W/index.before"
	all=$(index_bytes "$V")
	log "N=$n: incremental"
	read -r is ir < <(timed incr-$n "$LB" --vault "$V" backup --machine bench --disk disk0="$W/disk.changed" -q)
	# index objects the full backup wrote: all a cache seeded by it lacks
	since=$(comm -13 "$W/index.gen" "$W/index.before" | while read -r f; do stat -c %s "$V/index/$f"; done | awk '{s+=$1} END {print s+0}')
	log "N=$n: restore"
	read -r rs rr < <(timed restore-$n "$LB" --vault "$V" restore --machine bench latest --disk disk0 --to-file "$W/restore.img" -q)
	cmp "$W/disk.changed" "$W/restore.img"
	rm -f "$W/restore.img"
	log "N=$n: copy"
	rm -rf "$V-copy"
	"$LB" vault init --vault "$V-copy" --copy-of "$V" -q >/dev/null
	read -r cs cr < <(timed copy-$n "$LB" vault copy --from "$V" --to "$V-copy" --machine bench -q)
	rm -rf "$V-copy"
	log "N=$n: prune"
	ps=- pr=- p2s=- p2r=-
	if [ -z "${SKIP_PRUNE:-}" ]; then
		read -r ps pr < <(timed prune-$n "$LB" --vault "$V" prune -q)
		"$LB" --vault "$V" forget --machine bench --keep-last 1 -q >/dev/null
		read -r p2s p2r < <(timed prune2-$n "$LB" --vault "$V" prune -q)
	fi
	printf 'N=%-8s incr %6ss %5s MiB | restore %6ss %5s MiB | copy %6ss %5s MiB | prune %6ss %5s MiB | prune2 %6ss %5s MiB | index objects %d, %d bytes; %d bytes new since the full backup\n' \
		"$n" "$is" "$ir" "$rs" "$rr" "$cs" "$cr" "$ps" "$pr" "$p2s" "$p2r" "$(wc -l <"$W/index.before")" "$all" "$since" | tee -a "$W/results.txt"
done
