package vaultcopy_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/clock"
	"lifeboat/internal/crypto"
	"lifeboat/internal/image"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

var cheap = vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// site is a vault on a real directory store.
type site struct {
	dir   string
	store blob.Store
	v     *vault.Vault
}

func dirStore(t *testing.T) (string, blob.Store) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vault")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, s
}

// newPair makes a source vault and a copy of it (InitCopyOf) under its
// own passphrase.
func newPair(t *testing.T) (src, dst *site) {
	t.Helper()
	ctx := ctxT(t)
	src, dst = &site{}, &site{}
	src.dir, src.store = dirStore(t)
	dst.dir, dst.store = dirStore(t)
	var err error
	if src.v, err = vault.Init(ctx, src.store, []byte("site-a"), cheap); err != nil {
		t.Fatal(err)
	}
	opts := cheap
	opts.PackSize = 0 // the source's
	if dst.v, err = vault.InitCopyOf(ctx, dst.store, []byte("site-b"), src.v, opts); err != nil {
		t.Fatal(err)
	}
	// The copy opens with its own passphrase only.
	if _, err := vault.Open(ctx, dst.store, []byte("site-a"), cheap); !errors.Is(err, crypto.ErrWrongPassphrase) {
		t.Fatalf("copy opened with the source's passphrase: %v", err)
	}
	if dst.v, err = vault.Open(ctx, dst.store, []byte("site-b"), cheap); err != nil {
		t.Fatal(err)
	}
	if a, b := src.v.Config(), dst.v.Config(); a.ChunkSize != b.ChunkSize || a.Compression != b.Compression || a.ID == b.ID {
		t.Fatalf("copy config %+v, source %+v", b, a)
	}
	return src, dst
}

// disk is a disk image on file whose content the test changes.
type disk struct {
	path string
	data []byte
}

func newDisk(t *testing.T, size int, seed int64) *disk {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	data := make([]byte, size)
	for off := 0; off < size; off += 64 << 10 {
		end := min(off+64<<10, size)
		switch r.Intn(4) {
		case 0: // zeros
		case 1:
			r.Read(data[off:end])
		default:
			copy(data[off:end], bytes.Repeat([]byte("lifeboat vault copy "), 4000))
		}
	}
	d := &disk{path: filepath.Join(t.TempDir(), "disk.raw"), data: data}
	d.write(t)
	return d
}

func (d *disk) write(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(d.path, d.data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// scribble overwrites n random 64 KiB blocks with random bytes.
func (d *disk) scribble(t *testing.T, n int, seed int64) {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	for i := 0; i < n; i++ {
		off := r.Intn(len(d.data)/(64<<10)) * 64 << 10
		r.Read(d.data[off : off+64<<10])
	}
	d.write(t)
}

func backupDisk(t *testing.T, v *vault.Vault, machine string, d *disk) *recovery.Point {
	t.Helper()
	src, err := source.OpenFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p, err := backup.Run(ctxT(t), v, backup.Options{Machine: machine, Disks: []backup.Disk{{Name: "vda", Source: src}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// restoreEquals restores point id from v and compares it with want.
func restoreEquals(t *testing.T, v *vault.Vault, id chunk.ID, want []byte) {
	t.Helper()
	ctx := ctxT(t)
	p, err := recovery.Load(ctx, v, id)
	if err != nil {
		t.Fatalf("point %s at %s: %v", id.Short(), v.Store(), err)
	}
	out := filepath.Join(t.TempDir(), "restored.raw")
	if _, err := restore.Run(ctx, v, p, []restore.Target{{Disk: p.Disks[0], Path: out}}, restore.Options{}); err != nil {
		t.Fatalf("restoring %s from %s: %v", id.Short(), v.Store(), err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("point %s restored from %s differs from the disk it was taken of", id.Short(), v.Store())
	}
}

// verifyClean runs verify --read-data and fails on any problem.
func verifyClean(t *testing.T, v *vault.Vault) *maintenance.VerifyReport {
	t.Helper()
	rep, err := maintenance.Verify(ctxT(t), v, maintenance.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatalf("verify %s: %v", v.Store(), err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("verify %s: %+v", v.Store(), rep.Problems)
	}
	return rep
}

// newChunks returns the chunks of point p's manifests that none of the
// points in old use, with their sealed size at v.
func newChunks(t *testing.T, v *vault.Vault, p *recovery.Point, old ...*recovery.Point) (n int, sealed int64) {
	t.Helper()
	ctx := ctxT(t)
	seen := map[chunk.ID]bool{}
	for _, o := range old {
		for _, d := range o.Disks {
			m, err := image.Load(ctx, v, d.Manifest, d.Size, d.ChunkSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range m.IDs {
				seen[id] = true
			}
		}
	}
	ix, err := v.LoadIndex(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range p.Disks {
		m, err := image.Load(ctx, v, d.Manifest, d.Size, d.ChunkSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range m.IDs {
			if id.IsZero() || seen[id] {
				continue
			}
			seen[id] = true
			_, loc, ok := ix.Lookup(id)
			if !ok {
				t.Fatalf("chunk %s not indexed at %s", id.Short(), v.Store())
			}
			n++
			sealed += int64(loc.Length)
		}
	}
	return n, sealed
}

// packChunks returns, for every chunk stored in a pack at v, how many packs
// hold it, from the pack headers themselves.
func packChunks(t *testing.T, v *vault.Vault) map[chunk.ID]int {
	t.Helper()
	ctx := ctxT(t)
	packs, err := v.ListPacks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[chunk.ID]int{}
	for _, p := range packs {
		entries, err := v.ReadPackHeader(ctx, p.ID, p.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out[e.ID]++
		}
	}
	return out
}

func pointIDs(t *testing.T, v *vault.Vault) map[chunk.ID]bool {
	t.Helper()
	ids, err := v.ListIDs(ctxT(t), vault.KindPoint)
	if err != nil {
		t.Fatal(err)
	}
	out := map[chunk.ID]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out
}

func TestCopyThenIncremental(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	web := newDisk(t, 6<<20, 1)
	db := newDisk(t, 3<<20, 2)
	p1 := backupDisk(t, a.v, "web1", web)
	web1 := bytes.Clone(web.data)
	web.scribble(t, 5, 3)
	p2 := backupDisk(t, a.v, "web1", web)
	p3 := backupDisk(t, a.v, "db1", db)

	var progress []vaultcopy.Progress
	var mu sync.Mutex
	st, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{Progress: func(p vaultcopy.Progress) {
		mu.Lock()
		progress = append(progress, p)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{p1.ID.String(), p2.ID.String(), p3.ID.String()}
	if len(st.Points) != 3 || st.Points[0] != want[0] || st.Points[1] != want[1] || st.Points[2] != want[2] {
		t.Fatalf("copied %v, want %v in time order", st.Points, want)
	}
	if len(st.Newest) != 2 || !st.Newest["web1"].Equal(p2.Time) || !st.Newest["db1"].Equal(p3.Time) {
		t.Fatalf("newest points copied %v, want web1 %s, db1 %s", st.Newest, p2.Time, p3.Time)
	}
	n1, b1 := newChunks(t, a.v, p1)
	n2, b2 := newChunks(t, a.v, p2, p1)
	n3, b3 := newChunks(t, a.v, p3, p1, p2)
	if st.Chunks != int64(n1+n2+n3) || st.ChunkBytes != b1+b2+b3 {
		t.Fatalf("first copy moved %d chunks, %d bytes; the points hold %d chunks, %d bytes", st.Chunks, st.ChunkBytes, n1+n2+n3, b1+b2+b3)
	}
	if st.ReadBytes < st.ChunkBytes || st.WrittenBytes < st.PackBytes || st.PackBytes < st.ChunkBytes {
		t.Fatalf("inconsistent byte counts: %+v", st)
	}
	if last := progress[len(progress)-1]; !last.Final || last.Points != 3 || last.DoneBytes != st.ChunkBytes {
		t.Fatalf("last progress report %+v", last)
	}
	// Same objects byte for byte: the same point IDs at both sites.
	for _, p := range []*recovery.Point{p1, p2, p3} {
		x, _ := a.store.Get(ctx, vault.ObjectName(vault.KindPoint, p.ID))
		y, err := b.store.Get(ctx, vault.ObjectName(vault.KindPoint, p.ID))
		if err != nil || !bytes.Equal(x, y) {
			t.Fatalf("point %s at the copy: %v", p.ID.Short(), err)
		}
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, p1.ID, web1)
	restoreEquals(t, b.v, p2.ID, web.data)
	restoreEquals(t, b.v, p3.ID, db.data)

	// Nothing to do: nothing read but the listings and the session markers.
	st, err = vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if err != nil || st.PointsCopied != 0 || st.Chunks != 0 || st.ReadBytes != 0 {
		t.Fatalf("second copy without new points: %+v, %v", st, err)
	}

	// An incremental point at the source: only its new chunks move.
	web.scribble(t, 4, 4)
	p4 := backupDisk(t, a.v, "web1", web)
	n4, b4 := newChunks(t, a.v, p4, p1, p2, p3)
	st, err = vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.PointsCopied != 1 || st.Points[0] != p4.ID.String() {
		t.Fatalf("incremental copy: %+v", st)
	}
	if st.Chunks != int64(n4) || st.ChunkBytes != b4 {
		t.Fatalf("incremental copy moved %d chunks, %d bytes; the new point added %d chunks, %d bytes", st.Chunks, st.ChunkBytes, n4, b4)
	}
	// Read: the new blobs, the index, one point and one manifest; no more.
	var indexBytes int64
	a.store.List(ctx, "index/", func(i blob.Info) error { indexBytes += i.Size; return nil })
	manifest, _ := a.store.Stat(ctx, vault.ObjectName(vault.KindManifest, p4.Disks[0].Manifest))
	point, _ := a.store.Stat(ctx, vault.ObjectName(vault.KindPoint, p4.ID))
	if want := b4 + indexBytes + manifest.Size + point.Size; st.ReadBytes != want {
		t.Fatalf("incremental copy read %d bytes from the source, want %d (chunks %d + index %d + manifest %d + point %d)",
			st.ReadBytes, want, b4, indexBytes, manifest.Size, point.Size)
	}
	if st.Packs != 1 || st.PackBytes < b4 || st.PackBytes > b4+4096 {
		t.Fatalf("incremental copy wrote %d packs of %d bytes for %d bytes of chunks", st.Packs, st.PackBytes, b4)
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, p4.ID, web.data)
	for id, n := range packChunks(t, b.v) {
		if n != 1 {
			t.Fatalf("chunk %s is in %d packs at the copy", id.Short(), n)
		}
	}
}

func TestCopyRefusesVaultWithOtherKeys(t *testing.T) {
	ctx := ctxT(t)
	a, _ := newPair(t)
	_, other := dirStore(t)
	ov, err := vault.Init(ctx, other, []byte("x"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vaultcopy.Run(ctx, a.v, ov, vaultcopy.Options{}); !errors.Is(err, vaultcopy.ErrKeysDiffer) {
		t.Fatalf("copy to a vault with its own keys: %v, want ErrKeysDiffer", err)
	}
	if _, err := vaultcopy.Run(ctx, a.v, a.v, vaultcopy.Options{}); !errors.Is(err, vaultcopy.ErrSameVault) {
		t.Fatalf("copy of a vault onto itself: %v, want ErrSameVault", err)
	}
	var names []string
	other.List(ctx, "", func(i blob.Info) error { names = append(names, i.Name); return nil })
	if len(names) != 2 { // config and the key slot
		t.Fatalf("a refused copy wrote to the target: %v", names)
	}
}

// The copy keeps its own retention: points forgotten there are not copied
// again, and one machine can be copied alone.
func TestCopyRetentionAndMachine(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	web := newDisk(t, 2<<20, 5)
	db := newDisk(t, 2<<20, 6)
	var webPoints []*recovery.Point
	for i := 0; i < 3; i++ {
		web.scribble(t, 2, int64(10+i))
		webPoints = append(webPoints, backupDisk(t, a.v, "web1", web))
	}
	dbPoint := backupDisk(t, a.v, "db1", db)

	st, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{Machine: "web1"})
	if err != nil || st.PointsCopied != 3 {
		t.Fatalf("copy of web1: %+v, %v", st, err)
	}
	pending, _, err := vaultcopy.Pending(ctx, a.v, b.store, "")
	if err != nil || len(pending) != 1 || pending[0].ID != dbPoint.ID {
		t.Fatalf("pending after copying web1: %v, %v", pending, err)
	}
	if lag := vaultcopy.Lag(pending, dbPoint.Time.Add(90*time.Minute)); lag != 90*time.Minute {
		t.Fatalf("lag %v, want 90m", lag)
	}
	if pending, _, _ := vaultcopy.Pending(ctx, a.v, b.store, "web1"); len(pending) != 0 {
		t.Fatalf("web1 pending after its copy: %v", pending)
	}

	// The copy keeps only the newest web1 point; the source keeps all.
	if _, err := maintenance.Forget(ctx, b.v, "web1", policy.Retention{KeepLast: 1}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := maintenance.Prune(ctx, b.v, maintenance.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err = vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if err != nil || st.PointsCopied != 1 || st.Points[0] != dbPoint.ID.String() {
		t.Fatalf("copy after forget at the copy: %+v, %v (want only db1's point)", st, err)
	}
	got := pointIDs(t, b.v)
	if len(got) != 2 || !got[webPoints[2].ID] || !got[dbPoint.ID] {
		t.Fatalf("points at the copy: %v", got)
	}
	if pending, _, _ := vaultcopy.Pending(ctx, a.v, b.store, ""); len(pending) != 0 {
		t.Fatalf("points forgotten at the copy reported pending: %v", pending)
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, webPoints[2].ID, web.data)

	// Forgotten at the source too: the record of the copy goes.
	if _, err := maintenance.Forget(ctx, a.v, "web1", policy.Retention{KeepLast: 1}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{}); err != nil {
		t.Fatal(err)
	}
	var markers []string
	b.store.List(ctx, "copied/", func(i blob.Info) error { markers = append(markers, i.Name); return nil })
	if len(markers) != 2 {
		t.Fatalf("markers at the copy: %v, want the two points the source still has", markers)
	}
}

// A copy that fails part way (the target refuses a pack upload) leaves the
// copy consistent; the next run completes and sends no chunk twice.
func TestInterruptedCopyResumes(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	d := newDisk(t, 8<<20, 7)
	for i := 0; i < 4; i++ {
		d.scribble(t, 20, int64(20+i))
		backupDisk(t, a.v, "web1", d)
	}
	faults := blob.NewFaults(b.store)
	faults.Add(blob.Fault{Op: blob.OpPut, Prefix: "packs/", Nth: 5, Err: blob.ErrPermanent})
	if _, err := vaultcopy.Run(ctx, a.v, b.v.WithStore(faults), vaultcopy.Options{}); !errors.Is(err, blob.ErrPermanent) {
		t.Fatalf("copy with a failing target: %v", err)
	}
	verifyClean(t, b.v)
	stored := packChunks(t, b.v)
	if len(stored) == 0 {
		t.Fatal("the failed copy stored no pack: nothing to resume")
	}
	partial := pointIDs(t, b.v)

	// What the rerun must move: every chunk of the source's points that no
	// pack at the copy holds.
	all, err := recovery.List(ctx, a.v)
	if err != nil {
		t.Fatal(err)
	}
	ix, _ := a.v.LoadIndex(ctx, nil)
	want := map[chunk.ID]int64{}
	for _, p := range all {
		m, _ := image.Load(ctx, a.v, p.Disks[0].Manifest, p.Disks[0].Size, p.Disks[0].ChunkSize)
		for _, id := range m.IDs {
			if _, ok := stored[id]; !ok && !id.IsZero() {
				_, loc, _ := ix.Lookup(id)
				want[id] = int64(loc.Length)
			}
		}
	}
	var wantBytes int64
	for _, n := range want {
		wantBytes += n
	}
	st, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.PointsCopied+len(partial) != 4 {
		t.Fatalf("the first run committed %d points, the rerun %d: want 4 in all", len(partial), st.PointsCopied)
	}
	if st.Chunks != int64(len(want)) || st.ChunkBytes != wantBytes {
		t.Fatalf("rerun moved %d chunks (%d bytes), want the %d (%d bytes) no pack at the copy held", st.Chunks, st.ChunkBytes, len(want), wantBytes)
	}
	for id, n := range packChunks(t, b.v) {
		if n != 1 {
			t.Fatalf("chunk %s is in %d packs at the copy: sent twice", id.Short(), n)
		}
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, all[3].ID, d.data)
}

// A blob that fails its check at the source is never copied.
func TestCopyRefusesCorruptSource(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	d := newDisk(t, 2<<20, 8)
	p := backupDisk(t, a.v, "web1", d)
	packs, _ := a.v.ListPacks(ctx)
	entries, err := a.v.ReadPackHeader(ctx, packs[0].ID, packs[0].Size)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(a.dir, filepath.FromSlash(chunk.PackName(packs[0].ID)))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[entries[0].Offset+entries[0].Length/2] ^= 0x40
	os.Chmod(path, 0o600)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("copy of a corrupt blob: %v, want ErrCorrupt", err)
	}
	if pts := pointIDs(t, b.v); pts[p.ID] {
		t.Fatal("the point with a corrupt chunk reached the copy")
	}
	verifyClean(t, b.v)
}

// gate is a store that holds the first read of a pack until it is opened,
// so a test can run prune at a chosen moment of a copy.
type gate struct {
	blob.Store
	once    sync.Once
	reached chan struct{}
	open    chan struct{}
}

func (g *gate) GetRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	if len(name) > 6 && name[:6] == "packs/" {
		g.once.Do(func() { close(g.reached) })
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Store.GetRange(ctx, name, off, n)
}

// Prune on the source beside a copy loses nothing at the copy: a plan made
// before the copy started is carried out while the copy reads (the copy
// reads around the condemned packs), and a plan made while it runs waits
// for it.
func TestCopyBesidePruneAtSource(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	d := newDisk(t, 6<<20, 9)
	var points []*recovery.Point
	var states [][]byte
	for i := 0; i < 4; i++ {
		d.scribble(t, 30, int64(30+i))
		points = append(points, backupDisk(t, a.v, "web1", d))
		states = append(states, bytes.Clone(d.data))
	}
	// Forget the two oldest: prune will repack most packs and delete some.
	if _, err := maintenance.Forget(ctx, a.v, "web1", policy.Retention{KeepLast: 2}, false); err != nil {
		t.Fatal(err)
	}
	// A running backup makes the first prune stop after writing its plan.
	held, err := a.v.StartSession(ctx, "backup")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := maintenance.Prune(ctx, a.v, maintenance.PruneOptions{})
	if err != nil || !rep.Deferred || rep.RepackedPacks+rep.DeletedPacks == 0 {
		t.Fatalf("prune beside a backup: %+v, %v (want a deferred plan)", rep, err)
	}
	held.End(ctx)
	// Prune counts sessions started up to 2 minutes after its plan as
	// older than it (clock skew between hosts).
	fake := clock.NewFake(time.Now())
	opts := cheap
	opts.Clock = fake
	if a.v, err = vault.Open(ctx, a.store, []byte("site-a"), opts); err != nil {
		t.Fatal(err)
	}
	fake.Advance(3 * time.Minute)

	// The copy starts after the plan and stops at its first pack read.
	g := &gate{Store: a.store, reached: make(chan struct{}), open: make(chan struct{})}
	done := make(chan error, 1)
	var st *vaultcopy.Stats
	go func() {
		var err error
		st, err = vaultcopy.Run(ctx, a.v.WithStore(g), b.v, vaultcopy.Options{})
		done <- err
	}()
	select {
	case <-g.reached:
	case err := <-done:
		t.Fatalf("copy ended before reading a pack: %v", err)
	}
	// The copy's session started after the plan: this prune carries it
	// out, deleting the condemned packs under the running copy, and then
	// plans again; that second plan waits for the copy.
	rep, err = maintenance.Prune(ctx, a.v, maintenance.PruneOptions{})
	if err != nil || rep.ResumedPlans != 1 {
		t.Fatalf("prune during the copy: %+v, %v (want the old plan carried out)", rep, err)
	}
	close(g.open)
	if err := <-done; err != nil {
		t.Fatalf("copy beside prune: %v", err)
	}
	if st.PointsCopied != 2 {
		t.Fatalf("copied %v, want the 2 points left", st.Points)
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, points[2].ID, states[2])
	restoreEquals(t, b.v, points[3].ID, states[3])
	verifyClean(t, a.v)
}

// The copy's sessions hold off a prune that plans while the copy runs.
func TestPruneDuringCopyWaits(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	d := newDisk(t, 6<<20, 11)
	var last *recovery.Point
	for i := 0; i < 3; i++ {
		d.scribble(t, 30, int64(40+i))
		last = backupDisk(t, a.v, "web1", d)
	}
	if _, err := maintenance.Forget(ctx, a.v, "web1", policy.Retention{KeepLast: 1}, false); err != nil {
		t.Fatal(err)
	}
	g := &gate{Store: a.store, reached: make(chan struct{}), open: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := vaultcopy.Run(ctx, a.v.WithStore(g), b.v, vaultcopy.Options{})
		done <- err
	}()
	<-g.reached
	rep, err := maintenance.Prune(ctx, a.v, maintenance.PruneOptions{})
	if err != nil || !rep.Deferred {
		t.Fatalf("prune while a copy reads: %+v, %v (want deferred)", rep, err)
	}
	close(g.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, last.ID, d.data)
	// Once the copy is done, the next prune completes.
	if rep, err := maintenance.Prune(ctx, a.v, maintenance.PruneOptions{}); err != nil || rep.Deferred {
		t.Fatalf("prune after the copy: %+v, %v", rep, err)
	}
	verifyClean(t, a.v)
}
