package indexcache

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	"lifeboat/internal/vault"
)

// The model-based test: random operations on a real directory vault (and
// a second directory with the same vault ID: a hard-link copy taken
// earlier, as a second host or a vault restored from a file-level backup
// would be) sharing one cache directory. After every Load, the cache must
// answer exactly as the vault's own index (vault.LoadIndex, the model)
// does: same locations, same Has, a Lookup among them, same HasPack.

// modelRun is one random sequence of operations.
type modelRun struct {
	t      *testing.T
	rng    *rand.Rand
	log    []string
	dirs   []string // vault directories with the same ID; dirs[cur] is in use
	cur    int
	cache  string
	snap   string // a copy of the cache taken earlier
	chunks []chunk.ID
	packs  map[chunk.ID]bool
	skip   map[chunk.ID]bool
	seed   uint64 // of the next chunks added
	start  uint64 // of the run
	mu     sync.Mutex
	warns  []string
}

func (m *modelRun) open(dir string) *vault.Vault {
	m.t.Helper()
	return openVault(m.t, dir, m.cache, func(s string) { m.mu.Lock(); m.warns = append(m.warns, s); m.mu.Unlock() })
}

func (m *modelRun) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("seed %d: %s\noperations:\n  %s\nwarnings:\n  %s", m.start, fmt.Sprintf(format, args...), strings.Join(m.log, "\n  "), strings.Join(m.warns, "\n  "))
}

// runModel runs steps random operations from seed.
func runModel(t *testing.T, seed uint64, steps int) {
	old := batchEntries
	batchEntries = 10 + int(seed%7)*15
	defer func() { batchEntries = old }()
	m := &modelRun{t: t, rng: rand.New(rand.NewPCG(seed, 0x1ca4e)), dirs: []string{t.TempDir()}, cache: t.TempDir(),
		packs: map[chunk.ID]bool{}, skip: map[chunk.ID]bool{}, seed: seed, start: seed}
	store, _ := blob.NewDir(m.dirs[0])
	if _, err := vault.Init(context.Background(), store, []byte("pw"), cheap); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for step := 0; step < steps; step++ {
		dir := m.dirs[m.cur]
		v := m.open(dir)
		switch op := m.rng.IntN(12); {
		case op < 3: // a backup: new packs and their index object
			n := 1 + m.rng.IntN(60)
			m.seed++
			m.log = append(m.log, fmt.Sprintf("add %d chunks (seed %d) in %d", n, m.seed, m.cur))
			m.chunks = append(m.chunks, add(t, v, m.seed<<20|seed, n)...)
		case op < 5: // prune or adopt: a new object repeating locations of an existing one
			objs, _, _ := v.ScanIDs(ctx, vault.KindIndex)
			if len(objs) == 0 {
				continue
			}
			src := objs[m.rng.IntN(len(objs))]
			file, err := v.LoadIndexFile(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			var out chunk.IndexFile
			for _, p := range file.Packs {
				if m.rng.IntN(3) == 0 {
					continue
				}
				q := chunk.IndexPack{ID: p.ID}
				for _, e := range p.Entries {
					if m.rng.IntN(4) != 0 {
						q.Entries = append(q.Entries, e)
					}
				}
				out.Packs = append(out.Packs, q)
			}
			id, err := v.SaveIndexFile(ctx, &out)
			if err != nil {
				t.Fatal(err)
			}
			m.log = append(m.log, fmt.Sprintf("repeat %s as %s (%d packs) in %d", src.Short(), id.Short(), len(out.Packs), m.cur))
			if m.rng.IntN(2) == 0 { // the prune then deletes the source
				os.Remove(filepath.Join(dir, vault.ObjectName(vault.KindIndex, src)))
				m.log = append(m.log, fmt.Sprintf("delete %s in %d", src.Short(), m.cur))
			}
		case op < 6: // delete an index object
			objs, _, _ := v.ScanIDs(ctx, vault.KindIndex)
			if len(objs) == 0 {
				continue
			}
			o := objs[m.rng.IntN(len(objs))]
			os.Remove(filepath.Join(dir, vault.ObjectName(vault.KindIndex, o)))
			m.log = append(m.log, fmt.Sprintf("delete %s in %d", o.Short(), m.cur))
		case op < 7: // condemn some packs (or none)
			clear(m.skip)
			for p := range m.packs {
				if m.rng.IntN(4) == 0 {
					m.skip[p] = true
				}
			}
			m.log = append(m.log, fmt.Sprintf("condemn %d packs", len(m.skip)))
		case op < 8: // damage a segment
			segs, _ := filepath.Glob(filepath.Join(m.cache, "*", "*.seg"))
			if len(segs) == 0 {
				continue
			}
			p := segs[m.rng.IntN(len(segs))]
			st, err := os.Stat(p)
			if err != nil {
				continue
			}
			switch m.rng.IntN(5) {
			case 0:
				off := m.rng.Int64N(st.Size())
				flip(t, p, off)
				m.log = append(m.log, fmt.Sprintf("flip byte %d of %d of %s", off, st.Size(), filepath.Base(p)))
			case 1:
				n := m.rng.Int64N(st.Size())
				os.Truncate(p, n)
				m.log = append(m.log, fmt.Sprintf("truncate %s to %d of %d", filepath.Base(p), n, st.Size()))
			case 2: // a killed run's temporary file
				os.WriteFile(filepath.Join(filepath.Dir(p), "tmp-killed"), []byte("partial"), 0o600)
				m.log = append(m.log, "leave tmp-killed")
			case 3: // a run killed after installing a merge, before deleting its inputs
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				d := filepath.Join(filepath.Dir(p), fmt.Sprintf("dup%d.seg", step))
				os.WriteFile(d, b, 0o600)
				m.log = append(m.log, fmt.Sprintf("copy %s to %s", filepath.Base(p), filepath.Base(d)))
			case 4: // the cache directory as it was earlier (restored from a backup)
				if m.snap == "" {
					m.snap = filepath.Join(t.TempDir(), "snap")
					if out, err := exec.Command("cp", "-a", m.cache, m.snap).CombinedOutput(); err != nil {
						t.Fatalf("cp -a: %v\n%s", err, out)
					}
					m.log = append(m.log, "snapshot the cache")
					break
				}
				os.RemoveAll(m.cache)
				if out, err := exec.Command("cp", "-a", m.snap, m.cache).CombinedOutput(); err != nil {
					t.Fatalf("cp -a: %v\n%s", err, out)
				}
				m.log = append(m.log, "put the cache snapshot back")
			}
		case op < 9: // two runs at once
			// in one directory, or one in each (two hosts sharing a cache)
			other := m.rng.IntN(len(m.dirs))
			m.log = append(m.log, fmt.Sprintf("two loads at once in %d and %d", m.cur, other))
			var wg sync.WaitGroup
			ixs := make([]*Index, 2)
			errs := make([]error, 2)
			vs := []*vault.Vault{v, m.open(m.dirs[other])}
			for i := range ixs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ixs[i], errs[i] = Load(ctx, vs[i], m.skipFunc())
				}()
			}
			wg.Wait()
			for i := range ixs {
				if errs[i] != nil {
					m.fatalf("Load: %v", errs[i])
				}
				m.check(vs[i], ixs[i])
				ixs[i].Close()
			}
			continue
		case op < 10: // another directory with the same vault
			if len(m.dirs) == 1 {
				d := filepath.Join(t.TempDir(), "copy")
				if out, err := exec.Command("cp", "-al", dir, d).CombinedOutput(); err != nil {
					t.Fatalf("cp -al: %v\n%s", err, out)
				}
				m.dirs = append(m.dirs, d)
				m.log = append(m.log, "link copy 0 to 1")
			}
			m.cur = m.rng.IntN(len(m.dirs))
			m.log = append(m.log, fmt.Sprintf("use %d", m.cur))
			continue
		}
		m.log = append(m.log, fmt.Sprintf("load in %d", m.cur))
		v = m.open(m.dirs[m.cur])
		ix, err := Load(ctx, v, m.skipFunc())
		if err != nil {
			m.fatalf("Load: %v", err)
		}
		if m.rng.IntN(4) == 0 {
			// A segment file is damaged under the open index: its
			// lookups must find every chunk all the same.
			for _, sg := range ix.segs {
				if sg.n > 0 && m.rng.IntN(2) == 0 {
					off := m.rng.Int64N(int64(sg.n * entrySize))
					flip(t, sg.path, off)
					m.log = append(m.log, fmt.Sprintf("flip byte %d of %s under the open index", off, filepath.Base(sg.path)))
				}
			}
		}
		if m.rng.IntN(3) == 0 {
			// Another run compacts the cache (deleting segment files)
			// while this one still looks chunks up.
			m.log = append(m.log, fmt.Sprintf("load again in %d with the first still open", m.cur))
			v2 := m.open(m.dirs[m.cur])
			ix2, err := Load(ctx, v2, m.skipFunc())
			if err != nil {
				m.fatalf("Load: %v", err)
			}
			m.check(v2, ix2)
			ix2.Close()
		}
		m.check(v, ix)
		ix.Close()
	}
}

func (m *modelRun) skipFunc() func(chunk.ID) bool {
	skip := cloneSet(m.skip)
	return func(id chunk.ID) bool { return skip[id] }
}

func cloneSet(in map[chunk.ID]bool) map[chunk.ID]bool {
	out := make(map[chunk.ID]bool, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// check compares ix with the vault's own index, loaded with the same
// skipped packs.
func (m *modelRun) check(v *vault.Vault, ix *Index) {
	m.t.Helper()
	model, err := v.LoadIndex(context.Background(), m.skipFunc())
	if err != nil {
		m.fatalf("LoadIndex: %v", err)
	}
	model.Each(func(_ chunk.ID, pack chunk.ID, _ chunk.Location) { m.packs[pack] = true })
	objs, _, _ := v.ScanIDs(context.Background(), vault.KindIndex)
	for _, o := range objs {
		f, err := v.LoadIndexFile(context.Background(), o)
		if err != nil {
			continue
		}
		for _, p := range f.Packs {
			m.packs[p.ID] = true
		}
	}
	key := func(l chunk.PackLocation) string {
		return fmt.Sprintf("%s/%d/%d/%d", l.Pack.Short(), l.Loc.Offset, l.Loc.Length, l.Loc.RawLength)
	}
	for i, id := range m.chunks {
		var want, got []string
		for _, l := range model.Locations(id) {
			want = append(want, key(l))
		}
		for _, l := range ix.Locations(id) {
			got = append(got, key(l))
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) {
			m.fatalf("chunk %d (%s): cache locations %v, the vault's index %v", i, id.Short(), got, want)
		}
		if ix.Has(id) != model.Has(id) {
			m.fatalf("chunk %d (%s): cache Has %v, the vault's index %v", i, id.Short(), ix.Has(id), model.Has(id))
		}
		pack, loc, ok := ix.Lookup(id)
		if ok != model.Has(id) || ok && !slices.Contains(want, key(chunk.PackLocation{Pack: pack, Loc: loc})) {
			m.fatalf("chunk %d (%s): cache Lookup %v %v %v, the vault's index %v", i, id.Short(), pack.Short(), loc, ok, want)
		}
	}
	for p := range m.packs {
		if ix.HasPack(p) != model.HasPack(p) {
			m.fatalf("pack %s: cache HasPack %v, the vault's index %v", p.Short(), ix.HasPack(p), model.HasPack(p))
		}
	}
}

// TestCacheModel runs random operation sequences from fixed seeds for
// about 15 s (a few seeds with -short).
func TestCacheModel(t *testing.T) {
	budget := 15 * time.Second
	if testing.Short() {
		budget = 2 * time.Second
	}
	start := time.Now()
	first := uint64(1)
	if s := os.Getenv("LIFEBOAT_MODEL_SEED"); s != "" {
		fmt.Sscan(s, &first)
		budget = 0
	}
	for seed := first; seed == first || time.Since(start) < budget; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runModel(t, seed, 40) })
	}
}

// FuzzCacheModel explores more seeds: go test -fuzz FuzzCacheModel.
func FuzzCacheModel(f *testing.F) {
	f.Add(uint64(1), uint8(30))
	f.Fuzz(func(t *testing.T, seed uint64, steps uint8) {
		runModel(t, seed, int(steps%64)+1)
	})
}
