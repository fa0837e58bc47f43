#!/usr/bin/env bash
# lifeboat benchmark: lifeboat vs restic on a 4 GiB ext4 disk image of real files.
#
# Usage:
#   bench/run.sh [compare] [--runs N] [--chunk-size SIZE] [--compression zstd-fastest|zstd]
#       full backup, 1% incremental, restore latest and vault size, lifeboat vs restic;
#       N rounds (default 3, tool order alternating), reported as best-of and median
#   bench/run.sh chunksizes [--runs N] [--compression C]
#       lifeboat only, for chunk sizes 64K 128K 256K 512K 1M 4M (CHUNK_SIZES overrides)
#   bench/run.sh live [--runs N] [--chunk-size SIZE]
#       a live 4 GiB qcow2 disk served by qemu-storage-daemon: 1% incremental with
#       the dirty bitmap (backup --qmp) vs by comparison with the parent (the same
#       image as a raw file) vs restic on that raw file
#   bench/run.sh s3 [--runs N]
#       full backup of the image into MinIO on loopback (one server, a bucket per
#       tool and round, tool order alternating), lifeboat vs restic
#   bench/run.sh memory [--chunk-size SIZE] [--compression C]
#       peak RSS of lifeboat backup (into an empty vault, then unchanged) and restore
#       for 1 GiB and 4 GiB dense seeded random disks (MEM_SIZES_GIB overrides, e.g.
#       "1 4 16") and the 4 GiB ext4 image
#
# RESTORE_DIR=/dev/shm makes compare restore into tmpfs (takes the disk out of the restore).
# Everything happens in bench/work/ (gitignored). The ext4 image is built once and
# reused (delete bench/work/image.orig to rebuild it). Runs are warm-cache: the
# page cache cannot be dropped reliably here, so the image (and the vault/repo for
# restores) is in memory for both tools alike.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK=$HERE/work
LB=$WORK/lifeboat
LOGS=$WORK/logs
RESTORE_DIR=${RESTORE_DIR:-$WORK}   # where compare restores to (e.g. /dev/shm to leave the disk out)

IMAGE_SIZE=$((4 << 30))
RANDOM_FILE_SIZE=$((256 << 20))
CHANGE_SEED=20261123
CHANGE_RUNS=656          # 656 x 64 KiB = 41 MiB = 1.0% of 4 GiB
CHANGE_RUN_SIZE=$((64 << 10))
MACHINE=bench
DISK=disk0

MODE=compare
RUNS=3
CHUNK_SIZE=""
COMPRESSION=""
while [ $# -gt 0 ]; do
	case "$1" in
	compare | chunksizes | memory | live | s3) MODE=$1 ;;
	--chunk-size) CHUNK_SIZE=$2; shift ;;
	--chunk-size=*) CHUNK_SIZE=${1#*=} ;;
	--compression) COMPRESSION=$2; shift ;;
	--runs) RUNS=$2; shift ;;
	--runs=*) RUNS=${1#*=} ;;
	--compression=*) COMPRESSION=${1#*=} ;;
	-h | --help) sed -n '2,/^set -e/{/^set/!p}' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

export LIFEBOAT_PASSWORD=bench-lifeboat-passphrase
export RESTIC_PASSWORD=bench-restic-passphrase
export RESTIC_CACHE_DIR=$WORK/restic-cache

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

ensure_deps() {
	local pkgs=()
	command -v restic >/dev/null || pkgs+=(restic)
	command -v mkfs.ext4 >/dev/null || [ -x /usr/sbin/mkfs.ext4 ] || pkgs+=(e2fsprogs)
	[ -x /usr/bin/time ] || pkgs+=(time)
	command -v python3 >/dev/null || pkgs+=(python3)
	command -v bc >/dev/null || pkgs+=(bc)
	if [ ${#pkgs[@]} -gt 0 ]; then
		log "installing ${pkgs[*]}"
		if [ "$(id -u)" -eq 0 ]; then
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
		else
			sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
		fi
	fi
	export PATH=$PATH:/usr/sbin:/sbin
}

build_lifeboat() {
	log "building lifeboat"
	(cd "$ROOT" && go build -o "$LB" ./cmd/lifeboat)
	LB_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ -n "$(cd "$ROOT" && git status --porcelain --untracked-files=no -- cmd internal go.mod go.sum 2>/dev/null)" ]; then
		LB_REV="$LB_REV + uncommitted changes in cmd/ or internal/"
	fi
}

# build_image: bench/work/image.orig, a sparse 4 GiB ext4 filesystem holding copies
# of /usr/share, /usr/bin, /usr/local/go/src and one 256 MiB random file.
build_image() {
	local img=$WORK/image.orig
	if [ -f "$img" ] && [ "$(stat -c %s "$img")" -eq "$IMAGE_SIZE" ]; then
		log "reusing $img"
		return
	fi
	local stage=$WORK/stage
	log "building $img (staging a copy of the files in $stage)"
	rm -rf "$stage" "$img" "$img.tmp"
	mkdir -p "$stage/usr/local/go" "$stage/data"
	cp -a /usr/share /usr/bin "$stage/usr/"
	cp -a /usr/local/go/src "$stage/usr/local/go/"
	python3 "$HERE/imgtool.py" randfile "$stage/data/random.bin" "$RANDOM_FILE_SIZE" 1
	local used
	used=$(du -sb "$stage" | cut -f1)
	log "staged $((used >> 20)) MiB of files"
	if [ "$used" -gt $((3 << 30)) ]; then
		echo "run.sh: staged files ($used B) exceed 3 GiB" >&2
		exit 1
	fi
	truncate -s "$IMAGE_SIZE" "$img.tmp"
	# fixed UUID and hash seed so that rebuilt images differ only in timestamps
	E2FSPROGS_FAKE_TIME=1790000000 mkfs.ext4 -q -F -L lifeboat-bench \
		-U 6c1f0b4e-2a7d-4d8e-9b1a-3e5f7c9d0a12 \
		-E hash_seed=0d5e7f1a-9c3b-4a6d-8e2f-1b4c6d8e0f23,root_owner=0:0 \
		-d "$stage" "$img.tmp"
	mv "$img.tmp" "$img"
	rm -rf "$stage"
	log "image: $(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) allocated"
}

fresh_copy() { # fresh_copy DEST: sparse copy of the pristine image
	rm -f "$1"
	cp --sparse=always "$WORK/image.orig" "$1"
}

apply_change() { # apply_change IMAGE
	python3 "$HERE/imgtool.py" mutate "$1" "$CHANGE_SEED" "$CHANGE_RUNS" "$CHANGE_RUN_SIZE" >&2
}

warm() { cat "$@" >/dev/null; sync; }
# warm_dirs DIR...: reads every file under the directories into the page cache.
# Lifeboat writes its packs around the page cache (O_DIRECT) and restic through
# it, so without this restic would restore from memory and lifeboat from disk.
warm_dirs() { find "$@" -type f -exec cat {} + >/dev/null; }

# timed NAME CMD...: run CMD with stdout/stderr in $LOGS/NAME.{out,err};
# sets SECS[NAME] and RSS[NAME] (peak RSS in KiB), and SYNC[NAME], the seconds a
# `sync` right after it took (dirty page cache the command left to write back).
# CPU[NAME] is its user+system CPU seconds.
declare -A SECS RSS SYNC CPU
timed() {
	local name=$1; shift
	sync
	log "  $name: $*"
	if ! /usr/bin/time -f '%e %M %U %S' -o "$LOGS/$name.time" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err"; then
		echo "run.sh: $name failed:" >&2
		tail -n 20 "$LOGS/$name.err" >&2
		exit 1
	fi
	local line t0 t1
	t0=$(date +%s.%N); sync; t1=$(date +%s.%N)
	SYNC[$name]=$(printf '%.2f' "$(echo "$t1 - $t0" | bc -l)")
	line=$(tail -n 1 "$LOGS/$name.time")
	local f
	read -r -a f <<<"$line"
	SECS[$name]=${f[0]}
	RSS[$name]=${f[1]}
	CPU[$name]=$(echo "${f[2]} + ${f[3]}" | bc -l | sed 's/^\./0./')
	log "  $name: ${SECS[$name]} s (+${SYNC[$name]} s sync after), ${CPU[$name]} CPU s, peak RSS $((RSS[$name] / 1024)) MiB"
}

mbps() { echo "scale=0; $1 / 1000000 / $2" | bc -l; }          # mbps BYTES SECS
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }   # ratio A B
mib() { echo $(($1 >> 20)); }
size_of() { du -sb "$1" | cut -f1; }

lb() { "$LB" --vault "$VAULT" "$@"; }

lb_init_args() {
	local a=()
	[ -n "$CHUNK_SIZE" ] && a+=(--chunk-size "$CHUNK_SIZE")
	[ -n "$COMPRESSION" ] && a+=(--compression "$COMPRESSION")
	echo "${a[@]}"
}

machine_info() {
	echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r)"
	echo "         $(go version), $(restic version | head -1)"
	echo "         lifeboat built from commit $LB_REV"
	echo "note: warm-cache runs: the page cache is not dropped; the image (and the vault or repository"
	echo "      for restores) is in memory for both tools alike. Throughput = image size / seconds."
	echo "      restores are written to $RESTORE_DIR"
}

# ---------------------------------------------------------------------------
# compare_once R: one round of every phase for both tools; the order of the two
# tools alternates between rounds. Fills SECS/RSS/SYNC[TOOL-PHASE.R] and VS[...].
declare -A VS
compare_once() {
	local r=$1 img=$WORK/image.raw repo=$WORK/restic-repo tools t
	VAULT=$WORK/vault
	if [ $((r % 2)) -eq 1 ]; then tools="lb restic"; else tools="restic lb"; fi
	rm -rf "$VAULT" "$repo" "$RESTIC_CACHE_DIR" "$RESTORE_DIR/restore-lb.raw" "$RESTORE_DIR/restore-restic"
	fresh_copy "$img"
	log "round $r: init (untimed), order: $tools; load average $(cut -d' ' -f1-3 /proc/loadavg)"
	# shellcheck disable=SC2046
	lb vault init $(lb_init_args) >"$LOGS/lb-init.out" 2>&1
	restic -r "$repo" init >"$LOGS/restic-init.out" 2>&1
	warm "$img"
	for t in $tools; do
		case $t in
		lb) timed "lb-full.$r" "$LB" --vault "$VAULT" backup --machine "$MACHINE" --disk "$DISK=$img" ;;
		restic) timed "restic-full.$r" restic -r "$repo" backup --host "$MACHINE" "$img" ;;
		esac
	done
	VS[lb-full.$r]=$(size_of "$VAULT"); VS[restic-full.$r]=$(size_of "$repo")

	apply_change "$img"
	warm "$img"
	for t in $tools; do
		case $t in
		lb) timed "lb-incr.$r" "$LB" --vault "$VAULT" backup --machine "$MACHINE" --disk "$DISK=$img" ;;
		restic) timed "restic-incr.$r" restic -r "$repo" backup --host "$MACHINE" "$img" ;;
		esac
	done
	VS[lb-incr.$r]=$(size_of "$VAULT"); VS[restic-incr.$r]=$(size_of "$repo")

	# each restore is checked with cmp and deleted before the other tool restores, so
	# that neither restores while the other's output is still being written back
	local rr
	warm_dirs "$VAULT" "$repo"
	for t in $tools; do
		case $t in
		lb)
			timed "lb-restore.$r" "$LB" --vault "$VAULT" restore --machine "$MACHINE" latest --disk "$DISK" --to-file "$RESTORE_DIR/restore-lb.raw"
			cmp "$img" "$RESTORE_DIR/restore-lb.raw"
			VS[lb-alloc.$r]=$(du -B1 "$RESTORE_DIR/restore-lb.raw" | cut -f1)
			rm -f "$RESTORE_DIR/restore-lb.raw"
			;;
		restic)
			timed "restic-restore.$r" restic -r "$repo" restore latest --target "$RESTORE_DIR/restore-restic"
			rr=$(find "$RESTORE_DIR/restore-restic" -type f -name image.raw | head -1)
			cmp "$img" "$rr"
			VS[restic-alloc.$r]=$(du -B1 "$rr" | cut -f1)
			rm -rf "$RESTORE_DIR/restore-restic"
			;;
		esac
		sync
	done
	log "round $r: both restores are byte-identical to the changed image"
	for t in lb restic; do
		SECS[$t-rsync.$r]=$(echo "${SECS[$t-restore.$r]} + ${SYNC[$t-restore.$r]}" | bc -l | sed 's/^\./0./')
	done
}

# agg ARRAY KEY min|median|max: over rounds 1..RUNS of ARRAY[KEY.R]
agg() {
	local -n arr=$1
	local key=$2 how=$3 r vals=()
	for ((r = 1; r <= RUNS; r++)); do vals+=("${arr[$key.$r]}"); done
	local sorted
	sorted=$(printf '%s\n' "${vals[@]}" | sort -g)
	case $how in
	min) head -n 1 <<<"$sorted" ;;
	max) tail -n 1 <<<"$sorted" ;;
	median) sed -n "$(((RUNS + 1) / 2))p" <<<"$sorted" ;;
	esac
}

phase_table() { # phase_table min|median
	local how=$1 p label t l s
	printf '%-16s %9s %9s %9s %9s %7s %9s %9s  %s\n' phase "lb s" "lb MB/s" "restic s" "rest MB/s" ratio "lb CPU s" "rest CPU" target
	for p in full incr restore rsync; do
		case $p in
		full) label=full; t=">=3x and >=800 MB/s" ;;
		incr) label="1% incremental"; t=">=5x" ;;
		restore) label="restore latest"; t=">=3x and >=1000 MB/s" ;;
		rsync) label="restore + sync"; t="(restore plus the sync right after it)" ;;
		esac
		l=$(agg SECS "lb-$p" "$how"); s=$(agg SECS "restic-$p" "$how")
		local lc=- sc=-
		if [ "$p" != rsync ]; then lc=$(agg CPU "lb-$p" "$how"); sc=$(agg CPU "restic-$p" "$how"); fi
		printf '%-16s %9s %9s %9s %9s %6sx %9s %9s  %s\n' "$label" "$l" "$(mbps $IMAGE_SIZE "$l")" "$s" "$(mbps $IMAGE_SIZE "$s")" "$(ratio "$s" "$l")" "$lc" "$sc" "$t"
	done
}

compare() {
	local r
	for ((r = 1; r <= RUNS; r++)); do compare_once "$r"; done

	echo
	echo "== lifeboat vs restic, 4 GiB ext4 image ($(mib "$(du -B1 "$WORK/image.orig" | cut -f1)") MiB allocated), $RUNS rounds"
	echo "   lifeboat: $(sed -n 's/.*(\(.*\))/\1/p' "$LOGS/lb-init.out"); restic: repository v2, compression auto"
	machine_info
	echo
	echo "best of $RUNS rounds (minimum seconds of each tool and phase; ratio = restic s / lifeboat s;"
	echo "CPU s = user+system CPU seconds, a figure less sensitive to other load on the machine):"
	phase_table min
	echo
	echo "median of $RUNS rounds:"
	phase_table median
	echo
	echo "every round (seconds; restic/lifeboat ratio in brackets):"
	printf '%-6s %-22s %-22s %-22s %-22s\n' round full incr restore "restore+sync"
	local p row
	for ((r = 1; r <= RUNS; r++)); do
		row=$(printf '%-6s' "$r")
		for p in full incr restore rsync; do
			row+=$(printf ' %-22s' "${SECS[lb-$p.$r]}/${SECS[restic-$p.$r]} ($(ratio "${SECS[restic-$p.$r]}" "${SECS[lb-$p.$r]}")x)")
		done
		echo "$row"
	done
	echo
	local lf rf li ri
	lf=$(agg VS lb-full median); rf=$(agg VS restic-full median)
	li=$(agg VS lb-incr median); ri=$(agg VS restic-incr median)
	printf '%-34s %14s %14s %9s\n' "vault size, bytes (du -sb, median)" lifeboat restic "lb/restic"
	printf '%-34s %14s %14s %9s\n' "after full backup" "$lf" "$rf" "$(ratio "$lf" "$rf")"
	printf '%-34s %14s %14s %9s\n' "added by the 1% incremental" "$((li - lf))" "$((ri - rf))" "$(ratio $((li - lf)) $((ri - rf)))"
	printf '%-34s %14s %14s %9s\n' "after both backups" "$li" "$ri" "$(ratio "$li" "$ri")"
	printf '%-34s %14s %14s\n' "restored file, allocated bytes" "$(agg VS lb-alloc median)" "$(agg VS restic-alloc median)"
	echo
	printf '%-22s %18s %18s\n' "peak RSS, MiB" "lifeboat min-max" "restic min-max"
	for p in full incr restore; do
		printf '%-22s %18s %18s\n' "$p" "$(($(agg RSS "lb-$p" min) / 1024))-$(($(agg RSS "lb-$p" max) / 1024))" \
			"$(($(agg RSS "restic-$p" min) / 1024))-$(($(agg RSS "restic-$p" max) / 1024))"
	done
	echo
	echo "targets (on the median of $RUNS rounds; best-of in brackets):"
	local how lfu sfu lin sin lre sre
	lfu=$(agg SECS lb-full median); sfu=$(agg SECS restic-full median)
	lin=$(agg SECS lb-incr median); sin=$(agg SECS restic-incr median)
	lre=$(agg SECS lb-restore median); sre=$(agg SECS restic-restore median)
	check() { if [ "$(echo "$2" | bc -l)" -eq 1 ]; then echo "  MET      $1"; else echo "  NOT MET  $1"; fi; }
	check "full backup >= 3x restic: $(ratio "$sfu" "$lfu")x [$(ratio "$(agg SECS restic-full min)" "$(agg SECS lb-full min)")x]" "$sfu >= 3 * $lfu"
	check "full backup >= 800 MB/s: $(mbps $IMAGE_SIZE "$lfu") MB/s [$(mbps $IMAGE_SIZE "$(agg SECS lb-full min)")]" "$IMAGE_SIZE / 1000000 / $lfu >= 800"
	check "incremental >= 5x restic: $(ratio "$sin" "$lin")x [$(ratio "$(agg SECS restic-incr min)" "$(agg SECS lb-incr min)")x]" "$sin >= 5 * $lin"
	check "restore >= 3x restic: $(ratio "$sre" "$lre")x [$(ratio "$(agg SECS restic-restore min)" "$(agg SECS lb-restore min)")x]" "$sre >= 3 * $lre"
	check "restore >= 1000 MB/s: $(mbps $IMAGE_SIZE "$lre") MB/s [$(mbps $IMAGE_SIZE "$(agg SECS lb-restore min)")]" "$IMAGE_SIZE / 1000000 / $lre >= 1000"
	check "vault <= restic repository after both backups: $li vs $ri" "$li <= $ri"
	check "vault <= restic repository after the full backup alone: $lf vs $rf" "$lf <= $rf"
	echo
	echo "lifeboat output, last round:"
	local f
	for f in lb-full lb-incr lb-restore; do
		echo "  $f: $(tr '\n' ' ' <"$LOGS/$f.$RUNS.out") $(tr '\n' ' ' <"$LOGS/$f.$RUNS.err")"
	done
}

# ---------------------------------------------------------------------------
chunksizes() {
	local sizes=${CHUNK_SIZES:-64K 128K 256K 512K 1M 4M}
	local img=$WORK/image.raw
	local cs r rows=()
	# round-major, so that changing load on the machine spreads over every size
	for ((r = 1; r <= RUNS; r++)); do
		for cs in $sizes; do
			VAULT=$WORK/vault-$cs
			log "chunk size $cs, round $r; load average $(cut -d' ' -f1-3 /proc/loadavg)"
			rm -rf "$VAULT" "$WORK/restore-lb.raw"
			fresh_copy "$img"
			local a=(--chunk-size "$cs")
			[ -n "$COMPRESSION" ] && a+=(--compression "$COMPRESSION")
			lb vault init "${a[@]}" >"$LOGS/cs-init.out" 2>&1
			warm "$img"
			timed "cs-$cs-full.$r" "$LB" --vault "$VAULT" backup --machine "$MACHINE" --disk "$DISK=$img"
			VS[cs-$cs-full.$r]=$(size_of "$VAULT")
			apply_change "$img"
			warm "$img"
			timed "cs-$cs-incr.$r" "$LB" --vault "$VAULT" backup --machine "$MACHINE" --disk "$DISK=$img"
			VS[cs-$cs-total.$r]=$(size_of "$VAULT")
			VS[cs-$cs-added.$r]=$((VS[cs-$cs-total.$r] - VS[cs-$cs-full.$r]))
			warm_dirs "$VAULT"
			timed "cs-$cs-restore.$r" "$LB" --vault "$VAULT" restore --machine "$MACHINE" latest --disk "$DISK" --to-file "$WORK/restore-lb.raw"
			cmp "$img" "$WORK/restore-lb.raw"
			rm -f "$WORK/restore-lb.raw"
			VS[cs-$cs-files.$r]=$(find "$VAULT" -type f | wc -l)
			rm -rf "$VAULT"
		done
	done
	for cs in $sizes; do
		local f i re
		f=$(agg SECS "cs-$cs-full" median); i=$(agg SECS "cs-$cs-incr" median); re=$(agg SECS "cs-$cs-restore" median)
		rows+=("$(printf '%-6s %7s %6s %7s %6s %7s %7s %7s %6s %7s %6s %11s %11s %11s %6s %6s %6s' "$cs" \
			"$f" "$(agg SECS "cs-$cs-full" min)" "$(mbps $IMAGE_SIZE "$f")" "$(agg CPU "cs-$cs-full" median)" \
			"$i" "$(agg SECS "cs-$cs-incr" min)" "$(agg CPU "cs-$cs-incr" median)" \
			"$re" "$(mbps $IMAGE_SIZE "$re")" "$(agg CPU "cs-$cs-restore" median)" \
			"$(agg VS "cs-$cs-full" median)" "$(agg VS "cs-$cs-added" median)" "$(agg VS "cs-$cs-total" median)" \
			"$(agg VS "cs-$cs-files" median)" \
			"$(($(agg RSS "cs-$cs-full" max) / 1024))" "$(($(agg RSS "cs-$cs-restore" max) / 1024))")")
	done
	echo
	echo "== lifeboat chunk sizes, 4 GiB ext4 image, compression ${COMPRESSION:-default}, $RUNS rounds each"
	machine_info
	echo
	printf '%-6s %7s %6s %7s %6s %7s %7s %7s %6s %7s %6s %11s %11s %11s %6s %6s %6s\n' chunk "full s" "best" "MB/s" "CPU s" "incr s" best "CPU s" "rest s" "MB/s" "CPU s" \
		"vault full" "incr added" "vault total" files "RSSbk" "RSSrs"
	printf '%s\n' "${rows[@]}"
	echo "(seconds, MB/s and CPU s (user+system): median of the rounds, best = minimum; vault sizes in bytes (du -sb), files = objects"
	echo " in the vault; RSSbk/RSSrs = highest peak RSS in MiB of the full backup / the restore)"
}

# ---------------------------------------------------------------------------
memory() {
	local gibs=${MEM_SIZES_GIB:-1 4}
	local rows=() g img label
	for g in $gibs ext4; do
		if [ "$g" = ext4 ]; then
			img=$WORK/image.raw; fresh_copy "$img"; label="4 GiB ext4"
		else
			img=$WORK/mem-${g}G.raw; label="$g GiB random"
			if [ ! -f "$img" ] || [ "$(stat -c %s "$img")" -ne $((g << 30)) ]; then
				log "generating $img"
				python3 "$HERE/imgtool.py" randfile "$img" $((g << 30)) "$g"
			fi
		fi
		log "memory: $label"
		VAULT=$WORK/vault-mem
		rm -rf "$VAULT" "$WORK/restore-mem.raw"
		# shellcheck disable=SC2046
		lb vault init $(lb_init_args) >"$LOGS/mem-init.out" 2>&1
		warm "$img"
		timed "mem-$g-backup" "$LB" --vault "$VAULT" backup --machine "$MACHINE" --disk "$DISK=$img"
		timed "mem-$g-incr" "$LB" --vault "$VAULT" backup --machine "$MACHINE" --disk "$DISK=$img"
		timed "mem-$g-restore" "$LB" --vault "$VAULT" restore --machine "$MACHINE" latest --disk "$DISK" --to-file "$WORK/restore-mem.raw"
		cmp "$img" "$WORK/restore-mem.raw"
		local size; size=$(stat -c %s "$img")
		rows+=("$(printf '%-16s %8s %10s %10s %10s %10s %10s' "$label" \
			"${SECS[mem-$g-backup]}" "$((RSS[mem-$g-backup] / 1024))" \
			"${SECS[mem-$g-incr]}" "$((RSS[mem-$g-incr] / 1024))" \
			"${SECS[mem-$g-restore]}" "$((RSS[mem-$g-restore] / 1024))")")
		rm -rf "$VAULT" "$WORK/restore-mem.raw"
		[ "$g" != ext4 ] && rm -f "$img"
	done
	echo
	echo "== lifeboat peak RSS vs disk size, $(sed -n 's/.*(\(.*\))/\1/p' "$LOGS/mem-init.out")"
	machine_info
	echo
	printf '%-16s %8s %10s %10s %10s %10s %10s\n' disk "backup s" "RSS MiB" "unchg s" "RSS MiB" "restore s" "RSS MiB"
	printf '%s\n' "${rows[@]}"
	echo "(backup = first backup into an empty vault; unchg = second backup of the unchanged disk)"
}

# ---------------------------------------------------------------------------
# live: incremental backup of a running disk, bitmap vs comparison vs restic.
live_once() {
	local r=$1 dir=$WORK/live
	fusermount3 -u "$dir/disk0.fuse" 2>/dev/null || true   # left by an interrupted run
	rm -rf "$dir" "$WORK/restic-live"; mkdir -p "$dir"
	qemu-img convert -O qcow2 "$WORK/image.orig" "$dir/disk0.qcow2"
	touch "$dir/disk0.fuse"
	qemu-storage-daemon \
		--blockdev driver=file,node-name=disk0-file,filename="$dir/disk0.qcow2" \
		--blockdev driver=qcow2,node-name=disk0,file=disk0-file \
		--export type=fuse,id=fuse0,node-name=disk0,mountpoint="$dir/disk0.fuse",writable=on \
		--chardev socket,id=m,path="$dir/qmp.sock",server=on,wait=off --monitor chardev=m &
	local qsd=$!
	for _ in $(seq 100); do [ -S "$dir/qmp.sock" ] && [ "$(stat -c %s "$dir/disk0.fuse")" -gt 0 ] && break; sleep 0.1; done
	# Two vaults, so that neither incremental finds the other's new chunks.
	VAULT=$dir/vault
	local fvault=$dir/vault-file
	# shellcheck disable=SC2046
	"$LB" --vault "$VAULT" vault init $(lb_init_args) >/dev/null
	# shellcheck disable=SC2046
	"$LB" --vault "$fvault" vault init $(lb_init_args) >/dev/null
	restic -r "$WORK/restic-live" init >/dev/null 2>&1
	# Parent points: live full, file full, restic full (untimed).
	"$LB" --vault "$VAULT" -q backup --machine live --qmp "$dir/qmp.sock" >/dev/null
	cp --sparse=always "$WORK/image.orig" "$dir/disk0.raw"
	"$LB" --vault "$fvault" -q backup --machine file --disk "disk0=$dir/disk0.raw" >/dev/null
	restic -r "$WORK/restic-live" backup -q "$dir/disk0.raw" >/dev/null
	# The 1% change, through QEMU (the bitmap sees it) and to the raw copy.
	apply_change "$dir/disk0.fuse"
	apply_change "$dir/disk0.raw"
	warm "$dir/disk0.qcow2" "$dir/disk0.raw"
	timed "live-bitmap.$r" "$LB" --vault "$VAULT" --json backup --machine live --qmp "$dir/qmp.sock"
	timed "live-compare.$r" "$LB" --vault "$fvault" --json backup --machine file --disk "disk0=$dir/disk0.raw"
	timed "live-restic.$r" restic -r "$WORK/restic-live" backup -q "$dir/disk0.raw"
	grep -q '"change_source": "tracking"' "$LOGS/live-bitmap.$r.out" || { echo "run.sh: the live incremental did not use the bitmap" >&2; exit 1; }
	# The live point restores to exactly the changed disk.
	"$LB" --vault "$VAULT" -q restore --machine live latest --disk disk0 --to-file "$dir/restored.raw"
	cmp "$dir/restored.raw" "$dir/disk0.raw"
	kill "$qsd"; wait "$qsd" 2>/dev/null || true
	fusermount3 -u "$dir/disk0.fuse" 2>/dev/null || true
	rm -rf "$dir" "$WORK/restic-live"
}

live() {
	for t in qemu-storage-daemon qemu-img fusermount3; do
		command -v $t >/dev/null || { echo "run.sh live: needs $t (scripts/deps.sh installs it)" >&2; exit 1; }
	done
	local r
	for r in $(seq "$RUNS"); do
		log "live round $r of $RUNS"
		live_once "$r"
	done
	echo
	echo "== live 4 GiB disk, 1% scattered change ($CHANGE_RUNS x 64 KiB), incremental backup, $RUNS rounds"
	machine_info
	echo
	printf '%-7s %12s %12s %12s %10s %10s\n' round "bitmap s" "compare s" "restic s" "vs compare" "vs restic"
	local b c x
	for r in $(seq "$RUNS"); do
		b=${SECS[live-bitmap.$r]}; c=${SECS[live-compare.$r]}; x=${SECS[live-restic.$r]}
		printf '%-7s %12s %12s %12s %9sx %9sx\n' "$r" "$b" "$c" "$x" "$(ratio "$c" "$b")" "$(ratio "$x" "$b")"
	done
	echo "(bitmap = backup --qmp of the running disk; compare = backup of the same image as a raw"
	echo " file, read whole and compared with its parent; restic = restic backup of that raw file)"
}

# s3: full backups over S3 (MinIO on 127.0.0.1, data on the same disk as
# bench/work), lifeboat vs restic, RUNS rounds.
s3() {
	local port=19000 data=$WORK/minio key=lifeboatbench secret=lifeboatbench-secret r t
	local minio
	minio=$(command -v minio || echo "$(go env GOPATH)/bin/minio")
	rm -rf "$data"
	mkdir -p "$data"
	MINIO_ROOT_USER=$key MINIO_ROOT_PASSWORD=$secret "$minio" server --quiet --address 127.0.0.1:$port "$data" >"$LOGS/minio.log" 2>&1 &
	MINIO_PID=$! # global: the EXIT trap runs after this function has returned
	local mpid=$MINIO_PID
	trap 'kill ${MINIO_PID:-} 2>/dev/null || true' EXIT
	until curl -sf "http://127.0.0.1:$port/minio/health/live"; do sleep 0.2; done
	export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret LIFEBOAT_S3_ENDPOINT=http://127.0.0.1:$port
	local img=$WORK/image.raw
	fresh_copy "$img"
	warm "$img"
	for r in $(seq "$RUNS"); do
		for t in lb$r restic$r; do
			curl -sf -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" "http://127.0.0.1:$port/$t" >/dev/null
		done
		"$LB" vault init --vault "s3://lb$r/vault" $(lb_init_args) >/dev/null
		restic -r "s3:http://127.0.0.1:$port/restic$r" init >"$LOGS/restic-init.out" 2>&1
		if [ $((r % 2)) -eq 1 ]; then t="lb restic"; else t="restic lb"; fi
		log "round $r: order $t; load average $(cut -d' ' -f1-3 /proc/loadavg)"
		for t in $t; do
			case $t in
			lb) timed "s3-lb.$r" "$LB" --vault "s3://lb$r/vault" backup --machine "$MACHINE" --disk "$DISK=$img" -q ;;
			restic) timed "s3-restic.$r" restic -r "s3:http://127.0.0.1:$port/restic$r" backup --host "$MACHINE" "$img" ;;
			esac
		done
	done
	echo
	echo "== full backup of the 4 GiB image over S3 (MinIO on loopback), $RUNS rounds"
	machine_info
	echo
	printf '%-7s %12s %12s %10s %14s %14s\n' round "lifeboat s" "restic s" "speed-up" "lifeboat MiB" "restic MiB"
	for r in $(seq "$RUNS"); do
		printf '%-7s %12s %12s %9sx %14s %14s\n' "$r" "${SECS[s3-lb.$r]}" "${SECS[s3-restic.$r]}" \
			"$(ratio "${SECS[s3-restic.$r]}" "${SECS[s3-lb.$r]}")" "$((RSS[s3-lb.$r] / 1024))" "$((RSS[s3-restic.$r] / 1024))"
	done
	kill $mpid
	wait $mpid 2>/dev/null || true
}

mkdir -p "$WORK" "$LOGS"
ensure_deps
build_lifeboat
build_image
case $MODE in
compare) compare ;;
chunksizes) chunksizes ;;
memory) memory ;;
live) live ;;
s3) s3 ;;
esac
