package backup_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/restore"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

// progressProbe is a Progress callback that checks that no update runs
// beside or after the final one: a tick update holds on for a while, so a
// run that returns without joining its ticker leaves one in flight.
type progressProbe struct {
	firstTick chan struct{}
	once      sync.Once
	inFlight  atomic.Int32
	mu        sync.Mutex
	events    []bool // Final of every update, in order
}

func newProbe() *progressProbe { return &progressProbe{firstTick: make(chan struct{})} }

func (p *progressProbe) update(final bool) {
	if p.inFlight.Add(1) > 1 {
		p.record(false) // two updates at once: reported by check
	}
	defer p.inFlight.Add(-1)
	if !final {
		p.once.Do(func() { close(p.firstTick) })
		time.Sleep(300 * time.Millisecond) // still running when the work is done
	}
	p.record(final)
}

func (p *progressProbe) record(final bool) {
	p.mu.Lock()
	p.events = append(p.events, final)
	p.mu.Unlock()
}

// check runs once Run has returned.
func (p *progressProbe) check(t *testing.T) {
	t.Helper()
	if n := p.inFlight.Load(); n != 0 {
		t.Errorf("%d progress update(s) still running after Run returned", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.events) < 2 || !p.events[len(p.events)-1] {
		t.Errorf("updates (true = final) %v: want ticks, then the final one last", p.events)
	}
}

// waitFirstTick blocks a read until the ticker has started an update, so
// that every run below has one in flight as it ends.
type waitFirstTick struct {
	source.Disk
	p *progressProbe
}

func (w waitFirstTick) ReadAt(b []byte, off int64) (int, error) {
	<-w.p.firstTick
	return w.Disk.ReadAt(b, off)
}

type slowStore struct {
	blob.Store
	p *progressProbe
}

func (s slowStore) GetRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	if len(name) > 6 && name[:6] == "packs/" {
		<-s.p.firstTick
	}
	return s.Store.GetRange(ctx, name, off, n)
}

// TestProgressJoinedBeforeFinal: backup.Run and restore.Run stop their
// progress ticker, and wait for it, before the final update; no update
// runs after they return.
func TestProgressJoinedBeforeFinal(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vda.img")
	makeDisk(t, img, 2<<20, 7)
	mem := blob.NewMem()
	v := newVault(t, mem)

	bp := newProbe()
	src, err := source.OpenFile(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	pt, err := backup.Run(context.Background(), v, backup.Options{Machine: "m", Disks: []backup.Disk{{Name: "vda", Source: waitFirstTick{src, bp}}},
		Progress: func(pr backup.Progress) { bp.update(pr.Final) }})
	if err != nil {
		t.Fatal(err)
	}
	bp.check(t)

	rp := newProbe()
	v2, err := vault.Open(context.Background(), slowStore{Store: mem, p: rp}, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	_, err = restore.Run(context.Background(), v2, pt, []restore.Target{{Disk: pt.Disks[0], Path: filepath.Join(dir, "out.raw")}},
		restore.Options{Progress: func(pr restore.Progress) { rp.update(pr.Final) }})
	if err != nil {
		t.Fatal(err)
	}
	rp.check(t)
}
