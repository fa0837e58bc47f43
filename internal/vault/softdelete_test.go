package vault_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/clock"
	"lifeboat/internal/vault"
)

// TestTombstonesAreBound: only a tombstone this vault sealed for the point
// it names counts. Random bytes, another point's tombstone renamed, and
// the source's tombstone planted in its copy (which shares the data key)
// are skipped with a warning naming them, so their points stay live.
func TestTombstonesAreBound(t *testing.T) {
	ctx := context.Background()
	dir, _, v := dirVault(t)
	var warnings []string
	opts := cheap
	opts.Warn = func(s string) { warnings = append(warnings, s) }
	v, err := vault.Open(ctx, v.Store(), []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	var a, b, c chunk.ID
	rand.Read(a[:])
	rand.Read(b[:])
	rand.Read(c[:])
	if _, err := v.SaveTombstone(ctx, a); err != nil {
		t.Fatal(err)
	}
	sealed, _ := os.ReadFile(filepath.Join(dir, "deleted", a.String()))
	// a's tombstone under b's name; random bytes under c's.
	os.WriteFile(filepath.Join(dir, "deleted", b.String()), sealed, 0o600)
	junk := make([]byte, 100)
	rand.Read(junk)
	os.WriteFile(filepath.Join(dir, "deleted", c.String()), junk, 0o600)
	os.WriteFile(filepath.Join(dir, "deleted", "README"), []byte("hi"), 0o600)

	copyDir := t.TempDir()
	cs, _ := blob.NewDir(copyDir)
	cp, err := vault.InitCopyOf(ctx, cs, []byte("pw2"), v, opts)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(copyDir, "deleted"), 0o700)
	os.WriteFile(filepath.Join(copyDir, "deleted", a.String()), sealed, 0o600)

	tombs, err := v.Tombstones(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tombs[a]; !ok || len(tombs) != 1 {
		t.Fatalf("tombstones: %v, want only %s", tombs, a.Short())
	}
	ctombs, err := cp.Tombstones(ctx)
	if err != nil || len(ctombs) != 0 {
		t.Fatalf("the source's tombstone planted in the copy counted: %v, %v", ctombs, err)
	}
	all := strings.Join(warnings, "\n")
	for _, name := range []string{"deleted/" + b.String(), "deleted/" + c.String(), "deleted/README"} {
		if !strings.Contains(all, name) {
			t.Errorf("no warning names %s: %s", name, all)
		}
	}
}

// TestBackdatedObjectsCountFromStorage: a tombstone or setting sealed with
// a clock 30 days behind (as whoever holds the passphrase may write) counts
// from when the store wrote it, so it cannot skip the window.
func TestBackdatedObjectsCountFromStorage(t *testing.T) {
	ctx := context.Background()
	_, store, v := dirVault(t)
	opts := cheap
	past := time.Now().Add(-30 * 24 * time.Hour)
	opts.Clock = clock.NewFake(past)
	old, err := vault.Open(ctx, store, []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	var p chunk.ID
	rand.Read(p[:])
	if _, err := old.SaveTombstone(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := old.SaveSetting(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	tombs, err := v.Tombstones(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if at := tombs[p].At(); time.Since(at) > time.Minute {
		t.Errorf("backdated tombstone counts from %v, not from when it was stored", at)
	}
	settings, err := v.Settings(ctx)
	if err != nil || len(settings) != 1 {
		t.Fatalf("settings: %v, %v", settings, err)
	}
	if at := settings[0].At(); time.Since(at) > time.Minute {
		t.Errorf("backdated setting counts from %v, not from when it was stored", at)
	}
}
