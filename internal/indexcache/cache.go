// Package indexcache keeps a vault's chunk index on local disk, so that a
// backup, restore or copy costs in proportion to its work, not to the
// vault (docs/indexcache.md). The cache holds sorted segment files built
// from the vault's index objects; a run lists index/, fetches only the
// objects no segment covers, and looks chunks up through a Bloom filter
// and one checked bucket read per lookup, instead of loading every index
// object into memory.
//
// The cache is local state that anyone with access to the host could
// alter, so nothing in it is trusted blindly: every segment's head is
// authenticated with a key derived from the vault's keys and bound to the
// vault's ID, each bucket is checked against a sum in that head when read,
// and entries count only while the index object they came from is still
// listed in the vault. A segment that fails a check is deleted and its
// objects fetched again; a run on a host without a cache builds one.
package indexcache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/vault"
)

// batchEntries bounds the entries sorted in memory to build one segment
// (about 60 MB), so a first run on a vault of any size stays small.
var batchEntries = 1 << 20

// maxSegments bounds the segments a lookup may have to search.
const maxSegments = 12

// Index is a vault's chunk index: the cached segments plus, in memory,
// the packs this run stored or adopted. It implements vault.ChunkIndex
// and is safe for concurrent use. Close it when done.
type Index struct {
	v    *vault.Vault
	segs []*segment
	mem  *chunk.Index

	packsOnce sync.Once
	packs     map[chunk.ID]bool

	warnOnce sync.Once

	// For refilling from the vault what a damaged segment held: the
	// run's context, the objects listed and the packs left out.
	ctx    context.Context
	listed map[chunk.ID]bool
	skip   func(chunk.ID) bool

	// Fetched is how many index objects and bytes this run read from the
	// vault to bring the cache up to date.
	FetchedObjects, FetchedBytes int64
}

// Dir is the cache directory: dir (the --cache-dir flag), else
// LIFEBOAT_CACHE_DIR, else DefaultDir; "off" in either keeps no cache ("").
func Dir(dir string, getenv func(string) string) string {
	d := cmp.Or(dir, getenv("LIFEBOAT_CACHE_DIR"), DefaultDir(getenv))
	if d == "off" {
		return ""
	}
	return d
}

// DefaultDir is where the cache lives unless told otherwise:
// $XDG_CACHE_HOME/lifeboat, else ~/.cache/lifeboat; "" if neither is set.
func DefaultDir(getenv func(string) string) string {
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "lifeboat")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "lifeboat")
	}
	return ""
}

// Load returns v's index without the packs skip reports true for
// (condemned packs): from the cache under v.CacheDir(), brought up to
// date first, or, without a cache directory or if it cannot be used,
// loaded whole into memory as vault.LoadIndex does (with a warning in the
// second case).
func Load(ctx context.Context, v *vault.Vault, skip func(chunk.ID) bool) (*Index, error) {
	if root := v.CacheDir(); root != "" {
		ix, err := open(ctx, v, filepath.Join(root, v.Config().ID), skip)
		if err == nil || ctx.Err() != nil {
			return ix, err
		}
		var cacheErr *localError
		if !errors.As(err, &cacheErr) {
			return nil, err
		}
		v.Warn(fmt.Sprintf("index cache unusable, loading the whole index into memory: %v", err))
	}
	mem, err := v.LoadIndex(ctx, skip)
	if err != nil {
		return nil, err
	}
	return &Index{v: v, mem: mem}, nil
}

// localError is a failure of the local cache directory, not of the vault.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func local(err error) error {
	if err == nil {
		return nil
	}
	return &localError{err}
}

func open(ctx context.Context, v *vault.Vault, dir string, skip func(chunk.ID) bool) (*Index, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, local(fmt.Errorf("creating index cache: %w", err))
	}
	unlock, err := lock(ctx, filepath.Join(dir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	// List only once the lock is held: a listing made before waiting for
	// another run (which may take minutes) would name index objects a
	// prune has deleted since, and miss the ones it wrote instead.
	ids, foreign, err := v.ScanIDs(ctx, vault.KindIndex)
	if err != nil {
		return nil, err
	}
	for _, name := range foreign {
		v.Warn(fmt.Sprintf("skipping %q: not an index object ID", name))
	}
	c := &syncer{v: v, dir: dir, key: v.CacheKey(), listed: map[chunk.ID]bool{}}
	for _, id := range ids {
		c.listed[id] = true
	}
	// A refill may come from a lookup long after Load, under a context
	// its caller has since cancelled (a per-item one): it is bounded
	// work, so it is not cut short.
	ix := &Index{v: v, mem: chunk.NewIndex(), ctx: context.WithoutCancel(ctx), listed: c.listed, skip: skip}
	if ix.segs, err = c.run(ctx, ids, ix); err != nil {
		for _, s := range ix.segs {
			s.close()
		}
		return nil, err
	}
	for _, s := range ix.segs {
		s.usable = make([]bool, len(s.slots))
		for i, sl := range s.slots {
			s.usable[i] = c.listed[s.objs[sl.obj]] && (skip == nil || !skip(sl.pack))
		}
	}
	return ix, nil
}

// lock takes the cache directory's lock: one process at a time brings
// the cache up to date. It waits for another holder, checking ctx.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, local(fmt.Errorf("opening index cache lock: %w", err))
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, local(fmt.Errorf("locking index cache: %w", err))
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// syncer brings a cache directory up to date, holding its lock.
type syncer struct {
	v      *vault.Vault
	dir    string
	key    [32]byte
	listed map[chunk.ID]bool
	gen    uint64
}

func (c *syncer) run(ctx context.Context, ids []chunk.ID, ix *Index) ([]*segment, error) {
	names, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, local(fmt.Errorf("reading index cache: %w", err))
	}
	var segs []*segment
	covered := map[chunk.ID]bool{}
	for _, e := range names {
		path := filepath.Join(c.dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), "tmp-"):
			os.Remove(path) // left by a run killed while writing; we hold the lock
		case strings.HasSuffix(e.Name(), ".seg"):
			s, err := openSegment(path, c.key, c.v.Config().ID)
			if err != nil {
				c.v.Warn(fmt.Sprintf("index cache: rebuilding: %v", err))
				os.Remove(path)
				continue
			}
			live := 0
			for _, o := range s.objs {
				if c.listed[o] {
					live++
				}
			}
			if live == 0 {
				s.close()
				os.Remove(path)
				continue
			}
			for _, o := range s.objs {
				covered[o] = true
			}
			c.gen = max(c.gen, s.gen)
			segs = append(segs, s)
		}
	}
	slices.SortFunc(segs, func(a, b *segment) int { return int64Cmp(int64(a.gen), int64(b.gen)) })
	var missing []chunk.ID
	for _, id := range ids {
		if !covered[id] {
			missing = append(missing, id)
		}
	}
	added, err := c.fetch(ctx, missing, ix)
	segs = append(segs, added...)
	if err != nil {
		return segs, err
	}
	return c.compact(segs)
}

func int64Cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fetch reads the index objects ids from the vault and writes them into
// new segments of at most batchEntries entries. An object deleted since
// the listing is skipped (a prune replaced it); one that is damaged or
// planted is skipped with a warning, as vault.LoadIndex does.
func (c *syncer) fetch(ctx context.Context, ids []chunk.ID, ix *Index) ([]*segment, error) {
	var segs []*segment
	var files []*chunk.IndexFile
	var fileIDs []chunk.ID
	entries := 0
	flush := func() error {
		if len(files) == 0 {
			return nil
		}
		s, err := c.build(fileIDs, files, entries)
		files, fileIDs, entries = nil, nil, 0
		if err != nil {
			return err
		}
		segs = append(segs, s)
		return nil
	}
	const group = 32
	for len(ids) > 0 {
		batch := ids[:min(group, len(ids))]
		ids = ids[len(batch):]
		got := make([]*chunk.IndexFile, len(batch))
		var mu sync.Mutex
		err := vault.Parallel(ctx, 8, indexes(len(batch)), func(ctx context.Context, i int) error {
			f, size, err := c.v.LoadIndexFileSize(ctx, batch[i])
			if err != nil {
				switch {
				case blob.IsNotExist(err):
					return nil
				case errors.Is(err, chunk.ErrCorrupt), errors.Is(err, blob.ErrTooLarge):
					c.v.Warn(fmt.Sprintf("skipping %q: %v", vault.ObjectName(vault.KindIndex, batch[i]), err))
					return nil
				}
				return err
			}
			got[i] = f
			mu.Lock()
			ix.FetchedObjects++
			ix.FetchedBytes += size
			mu.Unlock()
			return nil
		})
		if err != nil {
			return segs, fmt.Errorf("loading index: %w", err)
		}
		for i, f := range got {
			if f == nil {
				continue
			}
			for _, p := range f.Packs {
				entries += len(p.Entries)
			}
			files = append(files, f)
			fileIDs = append(fileIDs, batch[i])
			if entries >= batchEntries {
				if err := flush(); err != nil {
					return segs, err
				}
			}
		}
	}
	return segs, flush()
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func (c *syncer) tempPath() string {
	b := make([]byte, 8)
	rand.Read(b)
	return filepath.Join(c.dir, "tmp-"+hex.EncodeToString(b))
}

// install moves a finished temporary segment into place and opens it.
func (c *syncer) install(tmp string) (*segment, error) {
	// Only the file's name changes: the directory's path may hold "tmp-" too.
	path := filepath.Join(filepath.Dir(tmp), strings.TrimPrefix(filepath.Base(tmp), "tmp-")+".seg")
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, local(fmt.Errorf("writing index cache: %w", err))
	}
	if d, err := os.Open(c.dir); err == nil {
		d.Sync()
		d.Close()
	}
	s, err := openSegment(path, c.key, c.v.Config().ID)
	if err != nil {
		os.Remove(path)
		return nil, local(err)
	}
	return s, nil
}

// build writes one segment from index objects.
func (c *syncer) build(ids []chunk.ID, files []*chunk.IndexFile, n int) (*segment, error) {
	var slots []slot
	recs := make([]rec, 0, n)
	for o, f := range files {
		for _, p := range f.Packs {
			sl := uint32(len(slots))
			slots = append(slots, slot{pack: p.ID, obj: uint32(o)})
			for _, e := range p.Entries {
				recs = append(recs, rec{id: e.ID, slot: sl, off: e.Offset, length: e.Length, rawLen: e.RawLength})
			}
		}
	}
	slices.SortFunc(recs, func(a, b rec) int { return bytes.Compare(a.id[:], b.id[:]) })
	c.gen++
	tmp := c.tempPath()
	w, err := newWriter(tmp, c.key, c.v.Config().ID, c.gen, uint64(len(recs)), slices.Clone(ids), slots)
	if err != nil {
		return nil, local(fmt.Errorf("writing index cache: %w", err))
	}
	for _, r := range recs {
		if err := w.add(r); err != nil {
			w.abort()
			return nil, local(fmt.Errorf("writing index cache: %w", err))
		}
	}
	if err := w.finish(); err != nil {
		w.abort()
		return nil, local(fmt.Errorf("writing index cache: %w", err))
	}
	return c.install(tmp)
}

// compact keeps the number of segments logarithmic in the number of
// entries: the newest segments are merged, in one pass, while together
// they hold at least half as many entries as the next older one (or while
// there are too many), so each entry is rewritten O(log n) times over the
// cache's life. A segment most of whose objects a prune deleted is
// rewritten alone.
func (c *syncer) compact(segs []*segment) ([]*segment, error) {
	for i := 0; i < len(segs); i++ {
		live := 0
		for _, o := range segs[i].objs {
			if c.listed[o] {
				live++
			}
		}
		if 2*live < len(segs[i].objs) {
			m, err := c.merge(segs[i : i+1])
			if err != nil {
				return segs, err
			}
			segs[i] = m
		}
	}
	i := len(segs) - 1
	var newer uint64
	for i > 0 {
		newer += segs[i].n
		if 2*newer < segs[i-1].n && len(segs)-i < maxSegments {
			break
		}
		i--
	}
	if len(segs)-i < 2 {
		return segs, nil
	}
	m, err := c.merge(segs[i:])
	if err != nil {
		return segs, err
	}
	return append(segs[:i], m), nil
}

// merge writes the live entries of in into one new segment and deletes
// in. Every bucket read is checked against its sum.
func (c *syncer) merge(in []*segment) (*segment, error) {
	var objs []chunk.ID
	objNum := map[chunk.ID]uint32{}
	var slots []slot
	slotMap := make([][]int64, len(in)) // per input, per slot: output slot or -1
	slotNum := map[slot]uint32{}
	var total uint64
	for i, s := range in {
		total += s.n
		// Every listed object stays covered, also one that names no
		// pack (else each run would fetch it again).
		for _, o := range s.objs {
			if _, ok := objNum[o]; !ok && c.listed[o] {
				objNum[o] = uint32(len(objs))
				objs = append(objs, o)
			}
		}
		slotMap[i] = make([]int64, len(s.slots))
		for j, sl := range s.slots {
			o := s.objs[sl.obj]
			if !c.listed[o] {
				slotMap[i][j] = -1
				continue
			}
			n, ok := objNum[o]
			if !ok {
				n = uint32(len(objs))
				objs = append(objs, o)
				objNum[o] = n
			}
			// Two inputs covering the same object (a run killed after
			// installing a merge, before deleting its inputs) share
			// its slots, so their records collapse below.
			k := slot{pack: sl.pack, obj: n}
			out, ok := slotNum[k]
			if !ok {
				out = uint32(len(slots))
				slots = append(slots, k)
				slotNum[k] = out
			}
			slotMap[i][j] = int64(out)
		}
	}
	c.gen++
	tmp := c.tempPath()
	w, err := newWriter(tmp, c.key, c.v.Config().ID, c.gen, total, objs, slots)
	if err != nil {
		return nil, local(fmt.Errorf("writing index cache: %w", err))
	}
	scans := make([]*scan, len(in))
	for i, s := range in {
		scans[i] = s.scan()
	}
	var same []rec // written records of the current chunk ID
	for {
		best := -1
		for i, sc := range scans {
			if sc.ok && (best < 0 || bytes.Compare(sc.cur.id[:], scans[best].cur.id[:]) < 0) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		r := scans[best].cur
		scans[best].next()
		if int(r.slot) >= len(slotMap[best]) || slotMap[best][r.slot] < 0 {
			continue
		}
		r.slot = uint32(slotMap[best][r.slot])
		// The same location named by two index objects stays twice, once
		// under each: either object may be deleted first (a prune writes
		// the new index of the packs it keeps before deleting the old
		// objects), and the location must still count while the other is
		// listed. Only an exact repeat, under the same object, is dropped.
		if len(same) > 0 && same[0].id != r.id {
			same = same[:0]
		}
		if slices.ContainsFunc(same, func(o rec) bool { return o.slot == r.slot && o.off == r.off && o.length == r.length }) {
			continue
		}
		if err := w.add(r); err != nil {
			w.abort()
			return nil, local(fmt.Errorf("writing index cache: %w", err))
		}
		same = append(same, r)
	}
	for _, sc := range scans {
		if sc.err != nil {
			w.abort()
			// A damaged input: drop it and let the next run fetch again.
			for _, s := range in {
				s.close()
				os.Remove(s.path)
			}
			return nil, local(fmt.Errorf("index cache damaged, removed: %w", sc.err))
		}
	}
	if err := w.finish(); err != nil {
		w.abort()
		return nil, local(fmt.Errorf("writing index cache: %w", err))
	}
	s, err := c.install(tmp)
	if err != nil {
		return nil, err
	}
	for _, old := range in {
		old.close()
		os.Remove(old.path)
	}
	return s, nil
}

// Close releases the segment files.
func (ix *Index) Close() error {
	for _, s := range ix.segs {
		s.close()
	}
	return nil
}

// note reports a segment found damaged during lookups, once, removes it
// so that the next run rebuilds it, and loads the index objects it
// covered (those still listed) from the vault into memory, so that no
// chunk it located goes missing in this run. Lookups that come while
// another is refilling wait for it. Only if that fails too is a
// chunk only it located missing, which makes a backup store it again and
// a restore fall back to the whole index.
func (ix *Index) note(s *segment, err error) {
	ix.warnOnce.Do(func() {
		ix.v.Warn(fmt.Sprintf("index cache: %v: loading its index objects from the vault instead; the next run rebuilds it", err))
	})
	s.refill.Do(func() {
		os.Remove(s.path)
		var objs []chunk.ID
		for _, o := range s.objs {
			if ix.listed[o] {
				objs = append(objs, o)
			}
		}
		vault.Parallel(ix.ctx, 8, objs, func(ctx context.Context, o chunk.ID) error {
			f, err := ix.v.LoadIndexFile(ctx, o)
			if err != nil {
				if !blob.IsNotExist(err) { // deleted since: a prune replaced it
					ix.v.Warn(fmt.Sprintf("index cache: refilling from %q: %v", vault.ObjectName(vault.KindIndex, o), err))
				}
				return nil
			}
			for _, p := range f.Packs {
				if ix.skip == nil || !ix.skip(p.ID) {
					ix.mem.Add(p.ID, p.Entries)
				}
			}
			return nil
		})
	})
}

// Has reports whether chunk id is stored in a usable location.
func (ix *Index) Has(id chunk.ID) bool {
	if ix.mem.Has(id) {
		return true
	}
	found := false
	for _, s := range ix.segs {
		if err := s.lookup(&id, func(rec) { found = true }); err != nil {
			ix.note(s, err)
			found = ix.mem.Has(id)
		}
		if found {
			return true
		}
	}
	return false
}

// Locations returns every usable location of chunk id.
func (ix *Index) Locations(id chunk.ID) []chunk.PackLocation {
	out := ix.mem.Locations(id)
	for _, s := range ix.segs {
		err := s.lookup(&id, func(r rec) {
			l := chunk.PackLocation{Pack: s.slots[r.slot].pack, Loc: chunk.Location{Offset: r.off, Length: r.length, RawLength: r.rawLen}}
			out = mergeLocations(out, []chunk.PackLocation{l})
		})
		if err != nil {
			ix.note(s, err)
			out = mergeLocations(out, ix.mem.Locations(id))
		}
	}
	return out
}

// mergeLocations appends to out the locations of more it lacks.
func mergeLocations(out, more []chunk.PackLocation) []chunk.PackLocation {
	for _, l := range more {
		if !slices.ContainsFunc(out, func(o chunk.PackLocation) bool {
			return o.Pack == l.Pack && o.Loc.Offset == l.Loc.Offset && o.Loc.Length == l.Loc.Length
		}) {
			out = append(out, l)
		}
	}
	return out
}

// Lookup returns one location of chunk id.
func (ix *Index) Lookup(id chunk.ID) (pack chunk.ID, loc chunk.Location, ok bool) {
	if pack, loc, ok = ix.mem.Lookup(id); ok {
		return pack, loc, ok
	}
	locs := ix.Locations(id)
	if len(locs) == 0 {
		return pack, loc, false
	}
	return locs[0].Pack, locs[0].Loc, true
}

// HasPack reports whether any chunk of pack is indexed. The first call
// gathers the packs of every segment (adopting orphans needs them).
func (ix *Index) HasPack(pack chunk.ID) bool {
	if ix.mem.HasPack(pack) {
		return true
	}
	ix.packsOnce.Do(func() {
		ix.packs = map[chunk.ID]bool{}
		for _, s := range ix.segs {
			for i, sl := range s.slots {
				if s.usable[i] {
					ix.packs[sl.pack] = true
				}
			}
		}
	})
	return ix.packs[pack]
}

// Add records a pack stored or adopted by this run.
func (ix *Index) Add(pack chunk.ID, entries []chunk.PackEntry) { ix.mem.Add(pack, entries) }
