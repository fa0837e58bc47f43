package backup_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

func tryBackup(t *testing.T, v *vault.Vault, path string) (*recovery.Point, error) {
	t.Helper()
	return runBackup(t, v, "web1", map[string]string{"vda": path})
}

// markers returns the session markers left in store.
func markers(t *testing.T, store blob.Store) []vault.SessionInfo {
	t.Helper()
	var out []vault.SessionInfo
	err := store.List(context.Background(), "sessions/", func(i blob.Info) error {
		data, err := store.Get(context.Background(), i.Name)
		if err != nil {
			return err
		}
		var s vault.SessionInfo
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unindexed counts the packs stored that no index object names.
func unindexed(t *testing.T, v *vault.Vault) int {
	t.Helper()
	ctx := context.Background()
	ix, err := v.LoadIndex(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	packs, err := v.ListPacks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range packs {
		if !ix.HasPack(p.ID) {
			n++
		}
	}
	return n
}

// TestOrphansAdoptedOnlyAfterDeadSession: a backup lists the vault's packs
// only when a dead session marker says a writer failed or was killed; a
// failed backup leaves an abandoned marker, and the next backup adopts the
// packs it stored without an index, reuses their chunks and removes the
// marker.
func TestOrphansAdoptedOnlyAfterDeadSession(t *testing.T) {
	dir := t.TempDir()
	store := blob.NewFaults(blob.NewMem())
	opts := cheap
	opts.PackSize = 1 << 20
	opts.Uploads = 1 // packs stored one by one: the three before the fault are all there
	v, err := vault.Init(context.Background(), store, []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small.raw")
	makeDisk(t, small, 2<<20, 1)
	if _, err := tryBackup(t, v, small); err != nil {
		t.Fatal(err)
	}
	if m := markers(t, store); len(m) != 0 {
		t.Fatalf("a finished backup left session markers: %+v", m)
	}

	// No dead marker: listing packs/ would fail, and the backup does not.
	store.Add(blob.Fault{Op: blob.OpList, Prefix: "packs/"})
	makeDisk(t, small, 2<<20, 2)
	if _, err := tryBackup(t, v, small); err != nil {
		t.Fatalf("backup with no dead session listed the packs: %v", err)
	}
	store.Clear()

	// A backup that fails after storing packs leaves them unindexed and its
	// marker abandoned.
	big := filepath.Join(dir, "big.raw")
	data := make([]byte, 12<<20)
	rand.New(rand.NewSource(3)).Read(data) // incompressible: a pack per MiB
	if err := os.WriteFile(big, data, 0o600); err != nil {
		t.Fatal(err)
	}
	store.Add(blob.Fault{Op: blob.OpPut, Prefix: "packs/", Nth: 4})
	if _, err := tryBackup(t, v, big); !errors.Is(err, blob.ErrInjected) {
		t.Fatalf("backup under a failing pack upload: %v, want the injected fault", err)
	}
	store.Clear()
	m := markers(t, store)
	if len(m) != 1 || !m[0].Abandoned || m[0].Kind != "backup" {
		t.Fatalf("after a failed backup the markers are %+v, want one abandoned backup marker", m)
	}
	left := unindexed(t, v)
	if left == 0 {
		t.Fatal("the failed backup stored no pack before the fault: nothing to adopt")
	}

	// The dead marker makes the next backup list packs: with listing
	// broken it fails rather than skip the adoption.
	store.Add(blob.Fault{Op: blob.OpList, Prefix: "packs/"})
	if _, err := tryBackup(t, v, big); !errors.Is(err, blob.ErrInjected) {
		t.Fatalf("backup after a dead session with packs/ unlistable: %v, want the listing's fault", err)
	}
	store.Clear()

	// Fresh vault: what the same backup stores when nothing is left over.
	fresh, err := vault.Init(context.Background(), blob.NewMem(), []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	full, err := tryBackup(t, fresh, big)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p, err := tryBackup(t, v, big)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packs left unindexed; rerun stored %d bytes in %v, a clean run %d", left, p.Stats.StoredBytes, time.Since(start), full.Stats.StoredBytes)
	if p.Stats.StoredBytes >= full.Stats.StoredBytes {
		t.Errorf("rerun stored %d bytes, a clean full backup %d: the failed run's packs were not reused", p.Stats.StoredBytes, full.Stats.StoredBytes)
	}
	if n := unindexed(t, v); n != 0 {
		t.Errorf("%d packs still unindexed after the rerun", n)
	}
	if m := markers(t, store); len(m) != 0 {
		t.Errorf("markers left after the adopting backup: %+v", m)
	}
	got := restoreTo(t, v, p, t.TempDir())
	if string(got["vda"]) != string(data) {
		t.Fatal("restore of the rerun differs from the disk")
	}
}

// TestDeadMarkersJudged: which session markers make a backup list packs to
// adopt orphans, and which it deletes afterwards. A live marker of another
// host and a dead restore's marker do not make it list; a backup killed on
// this host does, and its marker is left to expire (a host of the same
// name may still be running it); an expired marker is deleted.
func TestDeadMarkersJudged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store := blob.NewFaults(blob.NewMem())
	v := newVault(t, store)
	disk := filepath.Join(dir, "vda.raw")
	makeDisk(t, disk, 1<<20, 1)
	if _, err := tryBackup(t, v, disk); err != nil {
		t.Fatal(err)
	}
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := exited.Process.Pid
	now := time.Now().UTC()
	put := func(name string, info vault.SessionInfo) {
		info.Version = 1
		info.Started = info.Refreshed
		data, _ := json.Marshal(info)
		if err := store.Put(ctx, "sessions/"+name, data); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool {
		_, err := store.Stat(ctx, "sessions/"+name)
		return err == nil
	}
	put("live-foreign", vault.SessionInfo{Kind: "backup", Host: "elsewhere", PID: 1, Refreshed: now})
	put("dead-restore", vault.SessionInfo{Kind: "restore", Host: v.Host(), PID: deadPID, Refreshed: now})

	store.Add(blob.Fault{Op: blob.OpList, Prefix: "packs/"})
	makeDisk(t, disk, 1<<20, 2)
	if _, err := tryBackup(t, v, disk); err != nil {
		t.Fatalf("a live marker and a dead restore's made the backup list packs: %v", err)
	}
	put("killed-backup", vault.SessionInfo{Kind: "backup", Host: v.Host(), PID: deadPID, Refreshed: now})
	if _, err := tryBackup(t, v, disk); !errors.Is(err, blob.ErrInjected) {
		t.Fatalf("after a killed backup's marker, the backup did not try to list packs: %v", err)
	}
	store.Clear()
	put("expired", vault.SessionInfo{Kind: "backup", Host: "elsewhere", PID: 1, Refreshed: now.Add(-vault.SessionExpiry - time.Minute)})
	if _, err := tryBackup(t, v, disk); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"live-foreign": true, "dead-restore": true, "killed-backup": true, "expired": false} {
		if exists(name) != want {
			t.Errorf("marker %s: exists %v after the adopting backup, want %v", name, !want, want)
		}
	}
}
