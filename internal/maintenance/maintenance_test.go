package maintenance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

var cheap = vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}

func doBackup(t *testing.T, v *vault.Vault, path string) *recovery.Point {
	t.Helper()
	src, err := source.OpenFile(path)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer src.Close()
	p, err := backup.Run(context.Background(), v, backup.Options{Machine: "m", Disks: []backup.Disk{{Name: "d", Source: src}}})
	if err != nil {
		t.Error(err)
		return nil
	}
	return p
}

func restoreSum(t *testing.T, v *vault.Vault, p *recovery.Point) [32]byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.raw")
	if _, err := restore.Run(context.Background(), v, p, []restore.Target{{Disk: p.Disks[0], Path: out}}, restore.Options{}); err != nil {
		t.Fatalf("restore %s: %v", p.ID.Short(), err)
	}
	data, _ := os.ReadFile(out)
	return sha256.Sum256(data)
}

func mustVerify(t *testing.T, v *vault.Vault) {
	t.Helper()
	rep, err := maintenance.Verify(context.Background(), v, maintenance.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("verify: %+v", rep.Problems)
	}
}

// mutate rewrites a random quarter of the disk's 64 KiB blocks.
func mutate(r *rand.Rand, path string) [32]byte {
	data, _ := os.ReadFile(path)
	for i := 0; i < len(data)/(64<<10)/4; i++ {
		off := r.Intn(len(data)/(64<<10)) * 64 << 10
		r.Read(data[off : off+64<<10])
	}
	os.WriteFile(path, data, 0o600)
	return sha256.Sum256(data)
}

func TestForgetPruneReclaims(t *testing.T) {
	ctx := context.Background()
	store := blob.NewMem()
	v, err := vault.Init(ctx, store, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "d.raw")
	os.WriteFile(path, make([]byte, 4<<20), 0o600)
	r := rand.New(rand.NewSource(1))
	sums := map[string][32]byte{}
	for i := 0; i < 5; i++ {
		sum := mutate(r, path)
		p := doBackup(t, v, path)
		sums[p.ID.String()] = sum
	}
	res, err := maintenance.Forget(ctx, v, "m", policy.Retention{KeepLast: 2}, false)
	if err != nil || len(res.Removed) != 3 {
		t.Fatalf("forget removed %d: %v", len(res.Removed), err)
	}
	before := storeBytes(store)
	var packBytes int64
	store.List(ctx, "packs/", func(i blob.Info) error { packBytes += i.Size; return nil })
	rep, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PackBytes != packBytes || packBytes == 0 {
		t.Fatalf("prune counted %d bytes of packs; the store held %d", rep.PackBytes, packBytes)
	}
	if rep.Deferred || rep.DeletedPacks+rep.RepackedPacks == 0 {
		t.Fatalf("prune did nothing: %+v", rep)
	}
	if after := storeBytes(store); after >= before {
		t.Fatalf("prune freed nothing: %d -> %d bytes", before, after)
	}
	mustVerify(t, v)
	points, _ := recovery.List(ctx, v)
	if len(points) != 2 {
		t.Fatalf("%d points left", len(points))
	}
	for _, p := range points {
		if restoreSum(t, v, p) != sums[p.ID.String()] {
			t.Fatalf("point %s restores wrong after prune", p.ID.Short())
		}
	}
	// A second prune has nothing left to do.
	rep, err = maintenance.Prune(ctx, v, maintenance.PruneOptions{})
	if err != nil || rep.DeletedPacks != 0 || rep.RepackedPacks != 0 {
		t.Fatalf("second prune: %+v %v", rep, err)
	}
}

func storeBytes(m *blob.Mem) int64 {
	var n int64
	m.List(context.Background(), "", func(i blob.Info) error { n += i.Size; return nil })
	return n
}

// TestPruneBesideBackup runs backups and forget+prune at the same time and
// checks that every point that survives restores exactly.
func TestPruneBesideBackup(t *testing.T) {
	ctx := context.Background()
	store := blob.NewMem()
	v, err := vault.Init(ctx, store, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "d.raw")
	os.WriteFile(path, make([]byte, 4<<20), 0o600)
	r := rand.New(rand.NewSource(2))
	var mu sync.Mutex
	sums := map[string][32]byte{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 12; i++ {
			// Half the blocks come back from an older version, so dedup
			// references chunks prune may be condemning.
			sum := mutate(r, path)
			p := doBackup(t, v, path)
			if p == nil {
				return
			}
			mu.Lock()
			sums[p.ID.String()] = sum
			mu.Unlock()
		}
		close(stop)
	}()
	prunes := 0
	deferred := 0
loop:
	for {
		select {
		case <-stop:
			break loop
		default:
		}
		if _, err := maintenance.Forget(ctx, v, "m", policy.Retention{KeepLast: 2}, false); err != nil {
			t.Fatal(err)
		}
		rep, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{})
		if err != nil {
			t.Fatal(err)
		}
		prunes++
		if rep.Deferred {
			deferred++
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	// With no backup running, a final prune completes any deferred plan.
	if _, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d prunes beside backups, %d deferred", prunes, deferred)
	if prunes == 0 {
		t.Fatal("no prune ran beside a backup")
	}
	mustVerify(t, v)
	points, _ := recovery.List(ctx, v)
	if len(points) < 2 {
		t.Fatalf("%d points survived", len(points))
	}
	for _, p := range points {
		if !bytes.Equal(sumOf(restoreSum(t, v, p)), sumOf(sums[p.ID.String()])) {
			t.Fatalf("point %s restores wrong", p.ID.Short())
		}
	}
	plans, _ := v.Plans(ctx)
	if len(plans) != 0 {
		t.Fatalf("%d plans left after a quiet prune", len(plans))
	}
}

func sumOf(s [32]byte) []byte { return s[:] }
