package backup_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// openWithCache opens the vault in store as a run on a host whose index
// cache is in cache would.
func openWithCache(t *testing.T, store blob.Store, cache string) *vault.Vault {
	t.Helper()
	o := cheap
	o.CacheDir = cache
	v, err := vault.Open(context.Background(), store, []byte("pw"), o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Backups and restores through the index cache, on two hosts: two
// backups at once share one host's cache; the other host forgets and
// prunes, which makes the first host's cache stale; everything restores
// and verifies.
func TestBackupsThroughIndexCache(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "vault"), 0o700)
	store, err := blob.NewDir(filepath.Join(dir, "vault"))
	if err != nil {
		t.Fatal(err)
	}
	newVault(t, store)
	host1, host2 := filepath.Join(dir, "cache1"), filepath.Join(dir, "cache2")
	disks := map[string][]byte{}
	for _, m := range []string{"a", "b"} {
		disks[m] = makeDisk(t, filepath.Join(dir, m+".raw"), 3<<20, int64(len(m)))
	}
	// Two backups at once on host 1.
	points := map[string]*recovery.Point{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range []string{"a", "b"} {
		v := openWithCache(t, store, host1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := runBackup(t, v, m, map[string]string{"disk0": filepath.Join(dir, m+".raw")})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			points[m] = p
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Host 2: change a, back it up, forget a's first point, prune.
	copy(disks["a"][1<<20:], bytes.Repeat([]byte("changed "), 1<<15))
	writeFile(t, filepath.Join(dir, "a.raw"), disks["a"])
	v2 := openWithCache(t, store, host2)
	p2 := backupFiles(t, v2, "a", map[string]string{"disk0": filepath.Join(dir, "a.raw")})
	if p2.Disks[0].Stats.ParentChunks == 0 {
		t.Fatal("the incremental found nothing in its parent")
	}
	if err := store.Delete(ctx, vault.ObjectName(vault.KindPoint, points["a"].ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := maintenance.Prune(ctx, v2, maintenance.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	// Host 1 again, with a stale cache: a third backup of a and restores.
	v1 := openWithCache(t, store, host1)
	copy(disks["a"][2<<20:], bytes.Repeat([]byte("again "), 1<<15))
	writeFile(t, filepath.Join(dir, "a.raw"), disks["a"])
	p3 := backupFiles(t, v1, "a", map[string]string{"disk0": filepath.Join(dir, "a.raw")})
	for m, p := range map[string]*recovery.Point{"a": p3, "b": points["b"]} {
		os.Mkdir(filepath.Join(dir, "restore-"+m), 0o700)
		got := restoreTo(t, openWithCache(t, store, host1), p, filepath.Join(dir, "restore-"+m))
		if !bytes.Equal(got["disk0"], disks[m]) {
			t.Fatalf("machine %s: restored disk differs", m)
		}
	}
	rep, err := maintenance.Verify(ctx, v1, maintenance.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("verify: %v", rep.Problems)
	}
	if rep.Points != 3 {
		t.Fatalf("verify saw %d points, want 3", rep.Points)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
