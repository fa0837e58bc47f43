package cli_test

// kill -9 of the real binary during backup and prune (docs/format.md,
// "Write ordering"): every committed point stays restorable, verify stays
// clean, and the next run picks up what the killed one left.

import (
	"encoding/json"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crashSeed is the seed of the kill delays: LIFEBOAT_CRASH_SEED, or fixed.
func crashSeed(t *testing.T) uint64 {
	seed := uint64(20261123)
	if s := os.Getenv("LIFEBOAT_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LIFEBOAT_CRASH_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("kill delays from seed %d (set LIFEBOAT_CRASH_SEED to vary)", seed)
	return seed
}

// killPlan says when to SIGKILL a run: after delay, or as soon as trigger
// reports true (polled every millisecond).
type killPlan struct {
	name    string
	delay   time.Duration
	trigger func() bool
}

func killPlans(rng *rand.Rand, n int, full time.Duration, targeted ...killPlan) []killPlan {
	const minDelay = 20 * time.Millisecond
	var plans []killPlan
	for i := 0; i < n; i++ {
		d := minDelay + time.Duration(rng.Int64N(int64(max(full-minDelay, time.Millisecond))))
		plans = append(plans, killPlan{name: "random-" + strconv.Itoa(i), delay: d})
	}
	return append(plans, targeted...)
}

// runAndKill starts lifeboat and kills it as the plan says. It reports
// whether SIGKILL ended it, and the result if it ended by itself first.
func runAndKill(t *testing.T, plan killPlan, args ...string) (killed bool, r result) {
	t.Helper()
	p := startProc(t, args...)
	if plan.trigger != nil {
		deadline := time.Now().Add(2 * time.Minute)
		for !p.exited() && !plan.trigger() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: trigger never fired", plan.name)
			}
			time.Sleep(time.Millisecond)
		}
	} else {
		select {
		case <-p.done:
		case <-time.After(plan.delay):
		}
	}
	if p.kill() {
		return true, result{code: -9, stdout: p.stdout.String(), stderr: p.stderr.String()}
	}
	return false, p.wait(t, time.Minute)
}

func newIDs(all, old []string) []string {
	var out []string
	for _, id := range all {
		if !slices.Contains(old, id) {
			out = append(out, id)
		}
	}
	return out
}

// TestCrashKillBackup kills `lifeboat backup` of a 384 MiB ext4 image at
// random moments (and right after its first pack and right after its point
// are stored). Afterwards verify --read-data exits 0, every point committed
// before the kill (and the killed run's, if it got that far) restores
// byte-identical, and a rerun stores only what the killed run had not.
func TestCrashKillBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary on a 384 MiB image")
	}
	rng := rand.New(rand.NewPCG(crashSeed(t), 1))
	work := t.TempDir()
	img := filepath.Join(work, "web1-vda.img")
	files := []fileSpec{
		{"/srv/data/r0", 16 << 20, random, 1},
		{"/srv/data/r1", 16 << 20, random, 2},
		{"/srv/data/r2", 16 << 20, random, 3},
		{"/srv/data/r3", 16 << 20, random, 4},
		{"/srv/data/r4", 16 << 20, random, 5},
		{"/srv/data/r5", 16 << 20, random, 6},
		{"/var/log/syslog", 12 << 20, text, 7},
		{"/var/log/app.log", 12 << 20, text, 8},
		{"/etc/hostname", 5, text, 9},
		{"/etc/app/config.yaml", 3000, text, 10},
	}
	makeExt4(t, img, 384, files)

	// Two committed points, then the state the killed backups take.
	base := filepath.Join(work, "base")
	mustRun(t, "--vault", base, "-q", "vault", "init") // real Argon2 cost
	backupArgs := func(vaultDir string) []string {
		return []string{"--vault", vaultDir, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda=" + img}
	}
	committed := map[string]string{} // point ID -> copy of the image it holds
	for i, rewrite := range [][]int{nil, {1, 6}} {
		for _, f := range rewrite {
			rewriteFile(t, img, files[f], uint64(100*i+f))
		}
		p := parsePoint(t, mustRun(t, backupArgs(base)...))
		cp := filepath.Join(work, "state"+strconv.Itoa(i)+".img")
		sparseCopy(t, img, cp)
		committed[p.ID] = cp
	}
	basePoints := listPoints(t, base)
	basePacks := packFiles(t, base)
	for _, f := range []int{2, 3, 4, 5, 7} {
		rewriteFile(t, img, files[f], uint64(1000+f))
	}
	fsck(t, img)
	target := filepath.Join(work, "state2.img")
	sparseCopy(t, img, target)

	// What an uninterrupted backup of that state does, and how long it
	// takes once the page cache is warm.
	measure := filepath.Join(work, "measure")
	var full pointInfo
	fullTime := time.Hour
	for i := 0; i < 2; i++ {
		linkCopy(t, base, measure)
		start := time.Now()
		full = parsePoint(t, mustRun(t, backupArgs(measure)...))
		fullTime = min(fullTime, time.Since(start))
		os.RemoveAll(measure)
	}
	t.Logf("full backup: %v, %d new bytes, %d stored bytes in %d packs", fullTime, full.newBytes(), full.Stats.StoredBytes, full.Stats.Packs)
	if full.Stats.Packs < 3 {
		t.Fatalf("the backup under test stores only %d packs: too little to interrupt", full.Stats.Packs)
	}

	var vaultDir string
	newPack := func() bool { return len(packFiles(t, vaultDir)) > len(basePacks) }
	newPoint := func() bool { return len(listPoints(t, vaultDir)) > len(basePoints) }
	plans := killPlans(rng, 5, fullTime,
		killPlan{name: "after-first-pack", trigger: newPack},
		killPlan{name: "after-point", trigger: newPoint})

	scratch := t.TempDir()
	reused := 0
	for i, plan := range plans {
		vaultDir = filepath.Join(work, "vault-"+strconv.Itoa(i))
		linkCopy(t, base, vaultDir)
		killed, r := runAndKill(t, plan, backupArgs(vaultDir)...)

		var orphanBytes int64
		for name, size := range packFiles(t, vaultDir) {
			if _, ok := basePacks[name]; !ok {
				orphanBytes += size
			}
		}
		added := newIDs(listPoints(t, vaultDir), basePoints)
		t.Logf("%s (delay %v): killed=%v, %d new point(s), %d bytes of packs left", plan.name, plan.delay, killed, len(added), orphanBytes)
		if !killed {
			if r.code != 0 {
				t.Fatalf("%s: backup ended by itself but failed: %s", plan.name, r)
			}
			if p := parsePoint(t, r); !slices.Contains(added, p.ID) {
				t.Fatalf("%s: backup printed point %s, vault has %v", plan.name, p.ID, added)
			}
		}
		if len(added) > 1 {
			t.Fatalf("%s: one backup left %d points: %v", plan.name, len(added), added)
		}
		if plan.name == "after-first-pack" && (!killed || len(added) != 0 || orphanBytes == 0) {
			t.Errorf("%s: wanted a kill between the first pack and the point (killed=%v, points %v, %d pack bytes)",
				plan.name, killed, added, orphanBytes)
		}

		if v := run(t, "--vault", vaultDir, "-q", "verify", "--read-data"); v.code != 0 {
			t.Fatalf("%s: verify after kill -9: %s", plan.name, v)
		}
		want := map[string]string{}
		for id, img := range committed {
			want[id] = img
		}
		if len(added) == 1 {
			want[added[0]] = target // committed by the killed run: complete
		}
		checkRestores(t, vaultDir, "web1", want, scratch)

		// The rerun reuses what the killed run stored.
		rerun := parsePoint(t, mustRun(t, backupArgs(vaultDir)...))
		switch {
		case len(added) == 1:
			if rerun.newBytes() != 0 || rerun.Stats.StoredBytes != 0 {
				t.Errorf("%s: rerun after a committed point stored %d new bytes (%d packed), want 0",
					plan.name, rerun.newBytes(), rerun.Stats.StoredBytes)
			}
		case orphanBytes > 0:
			reused++
			if rerun.newBytes() >= full.newBytes() {
				t.Errorf("%s: rerun stored %d new bytes, a full backup %d: the %d bytes of packs left by the killed run were not reused",
					plan.name, rerun.newBytes(), full.newBytes(), orphanBytes)
			}
			// Every chunk is stored once, by the killed run or the rerun:
			// only pack header overhead may differ.
			if diff := rerun.Stats.StoredBytes + orphanBytes - full.Stats.StoredBytes; diff < -64<<10 || diff > 64<<10 {
				t.Errorf("%s: rerun stored %d bytes + %d left by the killed run, a full backup %d (difference %d)",
					plan.name, rerun.Stats.StoredBytes, orphanBytes, full.Stats.StoredBytes, diff)
			}
		default:
			if rerun.newBytes() != full.newBytes() {
				t.Errorf("%s: nothing was stored before the kill, yet the rerun stored %d new bytes, a full backup %d",
					plan.name, rerun.newBytes(), full.newBytes())
			}
		}
		checkRestores(t, vaultDir, "web1", map[string]string{rerun.ID: target}, scratch)
		if v := run(t, "--vault", vaultDir, "-q", "verify"); v.code != 0 {
			t.Fatalf("%s: verify after the rerun: %s", plan.name, v)
		}
		os.RemoveAll(vaultDir)
	}
	if reused == 0 {
		t.Errorf("no kill left uploaded packs behind: the reuse of interrupted work was not tested")
	}
}

// TestCrashKillPrune kills `lifeboat prune` at random moments (and right
// after its plan and its first repacked pack are stored) on a vault where
// prune has packs to delete and to repack. Afterwards verify --read-data
// exits 0 and the remaining points restore byte-identical; a second prune
// completes and leaves a clean, pruned vault.
func TestCrashKillPrune(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary on a 384 MiB image")
	}
	rng := rand.New(rand.NewPCG(crashSeed(t), 2))
	work := t.TempDir()
	img := filepath.Join(work, "db1-vda.img")
	var files []fileSpec
	for i := 0; i < 8; i++ {
		files = append(files, fileSpec{"/var/lib/db/table" + strconv.Itoa(i), 12 << 20, random, uint64(i + 1)})
	}
	files = append(files, fileSpec{"/var/log/db.log", 12 << 20, text, 20}, fileSpec{"/var/log/syslog", 8 << 20, text, 21},
		fileSpec{"/etc/db.conf", 2000, text, 22})
	makeExt4(t, img, 384, files)

	base := filepath.Join(work, "base")
	mustRun(t, "--vault", base, "-q", "vault", "init", "--soft-delete", "0") // forget deletes: prune is what is killed
	var ids []string
	keep := map[string]string{}
	// Whole files and the first quarter of every table are rewritten, so
	// that once the first two points are forgotten nearly every pack holds
	// some garbage: prune repacks most of the vault and deletes the rest.
	for i, rewrite := range [][]int{nil, {1}, {2, 3, 8}, {4}} {
		for _, f := range rewrite {
			rewriteFile(t, img, files[f], uint64(100*i+f))
		}
		if i == 1 || i == 3 {
			for f := 0; f < 8; f++ {
				rewritePart(t, img, files[f], 0, 0.25, uint64(1000*i+f))
			}
		}
		p := parsePoint(t, mustRun(t, "--vault", base, "-q", "--json", "backup", "--machine", "db1", "--disk", "vda="+img))
		ids = append(ids, p.ID)
		if i >= 2 {
			cp := filepath.Join(work, "state"+strconv.Itoa(i)+".img")
			sparseCopy(t, img, cp)
			keep[p.ID] = cp
		}
	}
	mustRun(t, "--vault", base, "-q", "forget", "--keep-last", "2")
	remaining := listPoints(t, base)
	slices.Sort(remaining)
	if want := []string{ids[2], ids[3]}; !slices.Equal(remaining, slices.Sorted(slices.Values(want))) {
		t.Fatalf("after forget --keep-last 2: points %v, want %v", remaining, want)
	}
	basePacks := packFiles(t, base)

	// An uninterrupted prune, to time it and to know what it leaves. The
	// second run is timed: the first one warms the page cache.
	measure := filepath.Join(work, "measure")
	var r result
	var pruneTime time.Duration
	for i := 0; i < 2; i++ {
		os.RemoveAll(measure)
		linkCopy(t, base, measure)
		start := time.Now()
		r = mustRun(t, "--vault", measure, "--json", "prune")
		pruneTime = time.Since(start)
	}
	var rep struct {
		RepackedPacks int `json:"repacked_packs"`
		DeletedPacks  int `json:"deleted_packs"`
		KeptPacks     int `json:"kept_packs"`
		Deferred      bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("prune --json: %v\n%s", err, r)
	}
	pruned := int64(0)
	for _, size := range packFiles(t, measure) {
		pruned += size
	}
	var before int64
	for _, size := range basePacks {
		before += size
	}
	t.Logf("prune: %v; %d packs kept, %d repacked, %d deleted; %d -> %d pack bytes", pruneTime, rep.KeptPacks, rep.RepackedPacks, rep.DeletedPacks, before, pruned)
	if rep.RepackedPacks == 0 || rep.DeletedPacks == 0 || rep.Deferred {
		t.Fatalf("the prune under test must repack and delete: %s", r.stdout)
	}
	os.RemoveAll(measure)

	var vaultDir string
	planWritten := func() bool { return len(objectFiles(t, vaultDir, "condemned")) > 0 }
	repacked := func() bool {
		for name := range packFiles(t, vaultDir) {
			if _, ok := basePacks[name]; !ok {
				return true
			}
		}
		return false
	}
	plans := killPlans(rng, 5, pruneTime,
		killPlan{name: "after-first-repacked-pack", trigger: repacked},
		killPlan{name: "after-plan", trigger: planWritten})
	scratch := t.TempDir()
	for i, plan := range plans {
		vaultDir = filepath.Join(work, "vault-"+strconv.Itoa(i))
		linkCopy(t, base, vaultDir)
		killed, r := runAndKill(t, plan, "--vault", vaultDir, "-q", "prune")
		if !killed && r.code != 0 {
			t.Fatalf("%s: prune ended by itself but failed: %s", plan.name, r)
		}
		t.Logf("%s (delay %v): killed=%v, plan left=%v, %d packs", plan.name, plan.delay, killed,
			len(objectFiles(t, vaultDir, "condemned")) > 0, len(packFiles(t, vaultDir)))

		if v := run(t, "--vault", vaultDir, "-q", "verify", "--read-data"); v.code != 0 {
			t.Fatalf("%s: verify after kill -9: %s", plan.name, v)
		}
		if got := listPoints(t, vaultDir); !slices.Equal(slices.Sorted(slices.Values(got)), remaining) {
			t.Fatalf("%s: points %v after the killed prune, want %v", plan.name, got, remaining)
		}
		checkRestores(t, vaultDir, "db1", keep, scratch)

		// A second prune finishes the job. A Put killed mid-write left its
		// temporary file: once older than a session can live, prune
		// removes it too.
		ageLeftovers(t, vaultDir)
		if p := run(t, "--vault", vaultDir, "-q", "prune"); p.code != 0 {
			t.Fatalf("%s: second prune: %s", plan.name, p)
		}
		v := run(t, "--vault", vaultDir, "-q", "--json", "verify", "--read-data")
		var vrep struct {
			Problems []any    `json:"problems"`
			Warnings []string `json:"warnings"`
		}
		if err := json.Unmarshal([]byte(v.stdout), &vrep); v.code != 0 || err != nil || len(vrep.Problems) > 0 || len(vrep.Warnings) > 0 {
			t.Fatalf("%s: verify after the second prune (want no problems and no warnings): %v\n%s", plan.name, err, v)
		}
		if left := objectFiles(t, vaultDir, "condemned"); len(left) > 0 {
			t.Errorf("%s: plans left after the second prune: %v", plan.name, left)
		}
		var total int64
		for _, size := range packFiles(t, vaultDir) {
			total += size
		}
		if total > pruned+pruned/8 {
			t.Errorf("%s: %d pack bytes after the second prune, an uninterrupted prune leaves %d", plan.name, total, pruned)
		}
		checkRestores(t, vaultDir, "db1", map[string]string{ids[3]: keep[ids[3]]}, scratch)
		os.RemoveAll(vaultDir)
	}
}

// ageLeftovers dates the temporary files of killed Puts in a directory
// vault an hour back, as if the prune that follows ran an hour later.
func ageLeftovers(t *testing.T, dir string) {
	t.Helper()
	hourAgo := time.Now().Add(-time.Hour)
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasPrefix(e.Name(), ".tmp-") {
			if err := os.Chtimes(p, hourAgo, hourAgo); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
}
