package maintenance_test

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/clock"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// TestPruneDryRunCountsPurge: a dry run past the window reports the
// soft-deleted points and the packs a purge would free, and deletes
// nothing; inside the window it counts them as kept.
func TestPruneDryRunCountsPurge(t *testing.T) {
	ctx := context.Background()
	store := blob.NewMem() // no store dates: the sealed times rule
	clk := clock.NewFake(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	opts := cheap
	opts.Clock, opts.SoftDelete = clk, 7*24*time.Hour
	v, err := vault.Init(ctx, store, []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "d.raw")
	r := rand.New(rand.NewSource(1))
	data := make([]byte, 2<<20)
	r.Read(data)
	os.WriteFile(path, data, 0o600)
	for range 3 {
		doBackup(t, v, path)
		mutate(r, path)
		clk.Advance(time.Hour)
	}
	res, err := maintenance.Forget(ctx, v, "m", policy.Retention{KeepLast: 1}, false)
	if err != nil || len(res.Removed) != 2 {
		t.Fatalf("forget: %+v, %v", res, err)
	}
	names := func() int {
		n := 0
		store.List(ctx, "", func(blob.Info) error { n++; return nil })
		return n
	}
	before := names()
	for _, c := range []struct {
		after              time.Duration
		purged, softDelete int
	}{{6 * 24 * time.Hour, 0, 2}, {2 * 24 * time.Hour, 2, 0}} {
		clk.Advance(c.after)
		rep, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if rep.PurgedPoints != c.purged || rep.SoftDeletedPoints != c.softDelete || (c.purged > 0) != (rep.DeletedPacks+rep.RepackedPacks > 0) {
			t.Fatalf("dry run %v on: %+v", c.after, rep)
		}
		if n := names(); n != before {
			t.Fatalf("a dry run changed the store: %d objects, were %d", n, before)
		}
	}
	rep, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{})
	if err != nil || rep.PurgedPoints != 2 || rep.DeletedPacks+rep.RepackedPacks == 0 {
		t.Fatalf("prune: %+v, %v", rep, err)
	}
	all, err := recovery.ListAll(ctx, v)
	if err != nil || len(all) != 1 {
		t.Fatalf("points after the purge: %d, %v", len(all), err)
	}
	mustVerify(t, v)
}
