package indexcache

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/crypto"
	"lifeboat/internal/vault"
)

var cheap = vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}

type fixture struct {
	dir   string // the vault's directory
	cache string
	warns []string
	mu    sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{dir: t.TempDir(), cache: t.TempDir()}
	store, _ := blob.NewDir(f.dir)
	if _, err := vault.Init(context.Background(), store, []byte("pw"), cheap); err != nil {
		t.Fatal(err)
	}
	return f
}

// open opens the vault as a new process would, with the cache in cache.
func (f *fixture) open(t *testing.T, cache string) *vault.Vault {
	t.Helper()
	return openVault(t, f.dir, cache, func(s string) { f.mu.Lock(); f.warns = append(f.warns, s); f.mu.Unlock() })
}

// openVault opens the vault in dir with its index cache under cache.
func openVault(t *testing.T, dir, cache string, warn func(string)) *vault.Vault {
	t.Helper()
	store, _ := blob.NewDir(dir)
	o := cheap
	o.CacheDir = cache
	o.Warn = warn
	v, err := vault.Open(context.Background(), store, []byte("pw"), o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// add stores n small unique chunks (seeded) in packs with their index
// objects, as a backup does, and returns their IDs.
func add(t *testing.T, v *vault.Vault, seed uint64, n int) []chunk.ID {
	t.Helper()
	ix := chunk.NewIndex()
	p := v.NewPacker(context.Background(), ix, nil)
	var ids []chunk.ID
	var data [4096]byte
	var sealed []byte
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(data[:], seed)
		binary.LittleEndian.PutUint64(data[8:], uint64(i))
		id := v.Codec().Hasher().Sum(data[:])
		sealed, _ = v.Codec().EncodeBlob(sealed[:0], id, data[:], nil)
		if err := p.Add(id, sealed, len(data)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func load(t *testing.T, v *vault.Vault) *Index {
	t.Helper()
	ix, err := Load(context.Background(), v, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix
}

// same checks that ix locates every chunk of want exactly where the
// vault's whole index does, and reads each back.
func same(t *testing.T, v *vault.Vault, ix *Index, want []chunk.ID) {
	t.Helper()
	full, err := v.LoadIndex(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := v.NewChunkReader(ix)
	for i, id := range want {
		got, exp := ix.Locations(id), full.Locations(id)
		if len(got) != len(exp) || len(got) == 0 {
			t.Fatalf("chunk %d: %d locations, the vault's index has %d", i, len(got), len(exp))
		}
		for j := range got {
			if got[j].Pack != exp[j].Pack || got[j].Loc.Offset != exp[j].Loc.Offset || got[j].Loc.Length != exp[j].Loc.Length {
				t.Fatalf("chunk %d: location %v, the vault's index says %v", i, got[j], exp[j])
			}
		}
		if i%97 == 0 {
			if _, err := r.ReadChunk(context.Background(), id, nil); err != nil {
				t.Fatalf("reading chunk %d: %v", i, err)
			}
		}
	}
	var absent chunk.ID
	absent[0] = 0xff
	if ix.Has(absent) {
		t.Fatal("an absent chunk is found")
	}
}

func TestCacheFetchesOnlyNewIndexObjects(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 3000)
	ix := load(t, v)
	if ix.FetchedObjects == 0 || len(ix.segs) == 0 {
		t.Fatalf("first run fetched %d objects into %d segments", ix.FetchedObjects, len(ix.segs))
	}
	same(t, v, ix, ids)

	// Another host adds points: this host's cache is stale.
	other := f.open(t, t.TempDir())
	more := add(t, other, 2, 500)
	before := countObjects(t, f.dir)

	v2 := f.open(t, f.cache)
	ix2 := load(t, v2)
	newObjs := countObjects(t, f.dir) - (before - objectsOf(t, other, more))
	if ix2.FetchedObjects != int64(newObjs) {
		t.Fatalf("second run fetched %d index objects, %d were new", ix2.FetchedObjects, newObjs)
	}
	same(t, v2, ix2, append(ids, more...))

	// Unchanged: nothing fetched.
	ix3 := load(t, f.open(t, f.cache))
	if ix3.FetchedObjects != 0 {
		t.Fatalf("an up-to-date cache fetched %d objects", ix3.FetchedObjects)
	}
}

func countObjects(t *testing.T, dir string) int {
	es, _ := os.ReadDir(filepath.Join(dir, "index"))
	return len(es)
}

// objectsOf counts the index objects that name packs of ids.
func objectsOf(t *testing.T, v *vault.Vault, ids []chunk.ID) int {
	want := map[chunk.ID]bool{}
	for _, id := range ids {
		want[id] = true
	}
	objs, _, err := v.ScanIDs(context.Background(), vault.KindIndex)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range objs {
		f, err := v.LoadIndexFile(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Packs) > 0 && len(f.Packs[0].Entries) > 0 && want[f.Packs[0].Entries[0].ID] {
			n++
		}
	}
	return n
}

// A prune deletes index objects: entries the cache took from them no
// longer count, though the segment still holds them.
func TestCacheForgetsDeletedIndexObjects(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 2000)
	load(t, v)
	objs, _, _ := v.ScanIDs(context.Background(), vault.KindIndex)
	gone, err := v.LoadIndexFile(context.Background(), objs[0])
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(f.dir, vault.ObjectName(vault.KindIndex, objs[0])))
	ix := load(t, f.open(t, f.cache))
	for _, p := range gone.Packs {
		for _, e := range p.Entries {
			if ix.Has(e.ID) {
				t.Fatalf("chunk %s of a deleted index object is still found", e.ID.Short())
			}
		}
	}
	var left []chunk.ID
	for _, id := range ids {
		if ix.mem.Has(id) || slices.ContainsFunc(gone.Packs, func(p chunk.IndexPack) bool {
			return slices.ContainsFunc(p.Entries, func(e chunk.PackEntry) bool { return e.ID == id })
		}) {
			continue
		}
		left = append(left, id)
	}
	same(t, v, ix, left)
}

// Condemned packs are left out, as vault.LoadIndex leaves them out.
func TestCacheSkipsCondemnedPacks(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 1000)
	pack, _, ok := load(t, v).Lookup(ids[0])
	if !ok {
		t.Fatal("chunk not found")
	}
	ix, err := Load(context.Background(), f.open(t, f.cache), func(p chunk.ID) bool { return p == pack })
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if ix.Has(ids[0]) || ix.HasPack(pack) {
		t.Fatal("a chunk of a condemned pack is found")
	}
}

func segFiles(t *testing.T, cache string) []string {
	m, _ := filepath.Glob(filepath.Join(cache, "*", "*.seg"))
	if len(m) == 0 {
		t.Fatal("no segment files")
	}
	return m
}

func flip(t *testing.T, path string, off int64) {
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if off < 0 {
		st, _ := fh.Stat()
		off += st.Size()
	}
	var b [1]byte
	fh.ReadAt(b[:], off)
	b[0] ^= 0x40
	fh.WriteAt(b[:], off)
}

func TestCacheCorruptIsRebuilt(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int64 // byte flipped: in the entries, the head or the footer
	}{{"entries", 1000}, {"head", -100}, {"footer", -2}} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			v := f.open(t, f.cache)
			ids := add(t, v, 1, 3000)
			load(t, v).Close()
			for _, p := range segFiles(t, f.cache) {
				flip(t, p, c.off)
			}
			ix := load(t, f.open(t, f.cache))
			// Every chunk is found where it is: a damaged head is
			// refetched when opened, a damaged bucket makes the run load
			// the segment's index objects from the vault.
			same(t, v, ix, ids)
			if len(f.warns) == 0 {
				t.Fatal("no warning about the damaged cache")
			}
			// The next run has a whole cache again.
			same(t, v, load(t, f.open(t, f.cache)), ids)
		})
	}
}

// A cache directory holding another vault's segments under this vault's
// ID (a vault re-created at the same path, a planted file) is refused.
func TestCacheOfAnotherVaultIsRefused(t *testing.T) {
	a, b := newFixture(t), newFixture(t)
	va := a.open(t, a.cache)
	add(t, va, 1, 1000)
	load(t, va).Close()
	vb := b.open(t, a.cache)
	ids := add(t, vb, 2, 1000)
	src := segFiles(t, a.cache)[0]
	dst := filepath.Join(a.cache, vb.Config().ID)
	os.MkdirAll(dst, 0o700)
	data, _ := os.ReadFile(src)
	os.WriteFile(filepath.Join(dst, "planted.seg"), data, 0o600)
	ix := load(t, vb)
	if len(b.warns) == 0 || !strings.Contains(strings.Join(b.warns, "\n"), "MAC") {
		t.Fatalf("warnings %q do not name the refused segment", b.warns)
	}
	same(t, vb, ix, ids)
	if _, err := os.Stat(filepath.Join(dst, "planted.seg")); err == nil {
		t.Fatal("the foreign segment was kept")
	}
}

// Segments are merged as runs add them, so lookups search few.
func TestCacheCompacts(t *testing.T) {
	old := batchEntries
	batchEntries = 300
	defer func() { batchEntries = old }()
	f := newFixture(t)
	v := f.open(t, f.cache)
	var ids []chunk.ID
	for i := 0; i < 6; i++ {
		ids = append(ids, add(t, v, uint64(i), 700)...)
		ix := load(t, f.open(t, f.cache))
		if len(ix.segs) > 4 {
			t.Fatalf("run %d: %d segments", i, len(ix.segs))
		}
	}
	same(t, v, load(t, f.open(t, f.cache)), ids)
}

// Two runs at once on one host share the cache: one builds, the other
// waits for the lock and fetches nothing.
func TestCacheConcurrentRuns(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 3000)
	var wg sync.WaitGroup
	got := make([]*Index, 4)
	vs := make([]*vault.Vault, len(got))
	for i := range vs {
		vs[i] = f.open(t, f.cache)
	}
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ix, err := Load(context.Background(), vs[i], nil)
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = ix
		}()
	}
	wg.Wait()
	var fetched int64
	for _, ix := range got {
		if ix == nil {
			t.FailNow()
		}
		fetched += ix.FetchedObjects
		same(t, v, ix, ids)
		ix.Close()
	}
	if want := int64(countObjects(t, f.dir)); fetched != want {
		t.Fatalf("4 runs fetched %d index objects together, want each of %d once", fetched, want)
	}
}

// TestCacheKilledWhileWriting kills (SIGKILL) a process while it writes
// the cache; the next run finds the cache usable or rebuilds it.
func TestCacheKilledWhileWriting(t *testing.T) {
	if os.Getenv("LIFEBOAT_INDEXCACHE_CHILD") != "" {
		// The child: build the cache in many small segments, slowly
		// enough to be caught in the middle.
		batchEntries = 50
		v := (&fixture{dir: os.Getenv("LIFEBOAT_INDEXCACHE_VAULT")}).open(t, os.Getenv("LIFEBOAT_INDEXCACHE_DIR"))
		for {
			os.RemoveAll(os.Getenv("LIFEBOAT_INDEXCACHE_DIR"))
			ix, err := Load(context.Background(), v, nil)
			if err != nil {
				t.Fatal(err)
			}
			ix.Close()
		}
	}
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 4000)
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCacheKilledWhileWriting$")
		cmd.Env = append(os.Environ(), "LIFEBOAT_INDEXCACHE_CHILD=1", "LIFEBOAT_INDEXCACHE_VAULT="+f.dir, "LIFEBOAT_INDEXCACHE_DIR="+f.cache)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until it is writing a segment, then kill it.
		deadline := time.Now().Add(30 * time.Second)
		for {
			m, _ := filepath.Glob(filepath.Join(f.cache, "*", "tmp-*"))
			if len(m) > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		ix := load(t, f.open(t, f.cache))
		same(t, v, ix, ids)
		if m, _ := filepath.Glob(filepath.Join(f.cache, "*", "tmp-*")); len(m) > 0 {
			t.Fatalf("round %d: temporary files left: %v", round, m)
		}
	}
}

// Two index objects can name the same location: a prune writes the new
// index of the packs it keeps before deleting the old objects, and a run
// between the two (or after a prune killed there) caches both. Merging
// their segments must keep the location under both objects, so that it
// is still found once either of them is deleted. (The merge used to keep
// one record and drop the other: when the kept one's object was deleted,
// the chunk was in no index though the vault's index still named it —
// TestCrashKillPrune found it in CI.)
func TestCacheDuplicateLocationSurvivesEitherObject(t *testing.T) {
	for _, drop := range []int{0, 1} {
		f := newFixture(t)
		v := f.open(t, f.cache)
		ids := add(t, v, 1, 2000)
		objs, _, _ := v.ScanIDs(context.Background(), vault.KindIndex)
		if len(objs) != 1 {
			t.Fatalf("%d index objects, want 1", len(objs))
		}
		load(t, v) // the cache covers the first object
		file, err := v.LoadIndexFile(context.Background(), objs[0])
		if err != nil {
			t.Fatal(err)
		}
		second, err := v.SaveIndexFile(context.Background(), file)
		if err != nil {
			t.Fatal(err)
		}
		if second == objs[0] {
			t.Fatal("the second index object has the first one's ID")
		}
		ix := load(t, f.open(t, f.cache)) // fetches the second object and merges
		if len(ix.segs) != 1 {
			t.Fatalf("%d segments after the second run, want them merged into 1", len(ix.segs))
		}
		gone := []chunk.ID{objs[0], second}[drop]
		os.Remove(filepath.Join(f.dir, vault.ObjectName(vault.KindIndex, gone)))
		v3 := f.open(t, f.cache)
		same(t, v3, load(t, v3), ids)
	}
}

// A bucket found damaged during lookups makes the run load that
// segment's index objects from the vault: no chunk goes missing, also for
// lookups running at the same time as the one that found the damage.
// (Lookups used to find nothing in the segment for the rest of the run,
// and the model test found a restore's chunks missing after a flipped
// byte.)
func TestCacheDamagedBucketMissesNothing(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 3000)
	load(t, v).Close()
	for _, p := range segFiles(t, f.cache) {
		flip(t, p, 1000)
	}
	ix := load(t, f.open(t, f.cache))
	var wg sync.WaitGroup
	missing := make([]int, 4)
	for w := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ids); i += len(missing) {
				if !ix.Has(ids[i]) || len(ix.Locations(ids[i])) == 0 {
					missing[w]++
				}
			}
		}()
	}
	wg.Wait()
	if n := missing[0] + missing[1] + missing[2] + missing[3]; n != 0 {
		t.Fatalf("%d chunks missing after a damaged bucket", n)
	}
	if len(f.warns) == 0 {
		t.Fatal("no warning about the damaged cache")
	}
	same(t, v, ix, ids)
}

// An index object naming no pack stays covered when its segment is
// merged, so later runs do not fetch it again. (A merge kept only the
// objects some pack slot named, so such an object was fetched by every
// run.)
func TestCacheEmptyIndexObjectStaysCovered(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 500)
	load(t, v).Close()
	if _, err := v.SaveIndexFile(context.Background(), &chunk.IndexFile{}); err != nil {
		t.Fatal(err)
	}
	load(t, f.open(t, f.cache)).Close()
	v = f.open(t, f.cache)
	ids = append(ids, add(t, v, 2, 500)...)
	if ix := load(t, v); len(ix.segs) != 1 {
		t.Fatalf("%d segments, want all merged into 1", len(ix.segs))
	}
	v = f.open(t, f.cache)
	ix := load(t, v)
	if ix.FetchedObjects != 0 {
		t.Fatalf("a run after the merge fetched %d index objects, want 0", ix.FetchedObjects)
	}
	same(t, v, ix, ids)
}

// A footer whose head offset would wrap around when added to the head's
// length is refused as damaged before anything is read at it.
func TestSegmentFooterOffsetCannotWrap(t *testing.T) {
	const size, headLen = 1000, 1000
	b := make([]byte, size)
	headOff := ^uint64(15) // 2^64-16: + headLen + footerSize wraps to size
	if headOff%entrySize != 0 {
		t.Fatal("test offset not a multiple of the entry size")
	}
	binary.LittleEndian.PutUint64(b[size-16:], headOff)
	binary.LittleEndian.PutUint32(b[size-8:], headLen)
	copy(b[size-4:], "LBXC")
	path := filepath.Join(t.TempDir(), "x.seg")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openSegment(path, [32]byte{}, "v")
	if !errors.Is(err, errDamaged) {
		t.Fatalf("opening a segment with a wrapping head offset: %v, want %v", err, errDamaged)
	}
}

// A run that waits for another's lock lists index/ only once it holds
// the lock: a prune that replaced an index object meanwhile must not make
// its chunks missing. (The listing was made before waiting, so the run
// fetched the deleted object, found nothing, and never saw its
// replacement.)
func TestCacheListsAfterTakingTheLock(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 300)
	objs, _, _ := v.ScanIDs(context.Background(), vault.KindIndex)
	dir := filepath.Join(f.cache, v.Config().ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(dir, "lock")
	unlock, err := lock(context.Background(), lockPath)
	if err != nil {
		t.Fatal(err)
	}
	v2 := f.open(t, f.cache)
	type result struct {
		ix  *Index
		err error
	}
	done := make(chan result, 1)
	go func() {
		ix, err := Load(context.Background(), v2, nil)
		done <- result{ix, err}
	}()
	// Wait until the run is waiting for the lock (it has the lock file
	// open too).
	deadline := time.Now().Add(20 * time.Second)
	for openCount(t, lockPath) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the run never waited for the lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A prune replaces the index object meanwhile.
	file, err := v.LoadIndexFile(context.Background(), objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.SaveIndexFile(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(f.dir, vault.ObjectName(vault.KindIndex, objs[0])))
	unlock()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.ix.Close()
	same(t, v2, r.ix, ids)
}

// openCount is how many of this process's file descriptors are open on path.
func openCount(t *testing.T, path string) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// Two segments covering the same index objects (a run killed after
// installing a merge, before deleting its inputs) merge into one holding
// each entry once. (Each slot of each input became its own output slot,
// so every such crash doubled the entries for the cache's life.)
func TestCacheMergeOfCopiesKeepsEachEntryOnce(t *testing.T) {
	f := newFixture(t)
	v := f.open(t, f.cache)
	ids := add(t, v, 1, 1000)
	ix := load(t, v)
	if len(ix.segs) != 1 {
		t.Fatalf("%d segments, want 1", len(ix.segs))
	}
	n := ix.segs[0].n
	ix.Close()
	segs := segFiles(t, f.cache)
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(segs[0]), "copy.seg"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	v = f.open(t, f.cache)
	ix = load(t, v)
	if len(ix.segs) != 1 {
		t.Fatalf("%d segments, want the copies merged into 1", len(ix.segs))
	}
	if ix.segs[0].n != n {
		t.Fatalf("the merged segment holds %d entries, want %d", ix.segs[0].n, n)
	}
	same(t, v, ix, ids)
}

// A cache directory whose path holds "tmp-" works. (A finished segment
// was renamed by replacing the first "tmp-" of its whole path, so under
// such a directory every run failed to install its segments and loaded
// the whole index into memory.)
func TestCacheUnderADirectoryNamedTmp(t *testing.T) {
	f := newFixture(t)
	cache := filepath.Join(t.TempDir(), "tmp-cache")
	v := f.open(t, cache)
	ids := add(t, v, 1, 500)
	load(t, v).Close()
	for _, w := range f.warns {
		t.Errorf("warning: %s", w)
	}
	v = f.open(t, cache)
	ix := load(t, v)
	if len(ix.segs) == 0 || ix.FetchedObjects != 0 {
		t.Fatalf("second run: %d segments, %d objects fetched; want the cache used", len(ix.segs), ix.FetchedObjects)
	}
	same(t, v, ix, ids)
}
