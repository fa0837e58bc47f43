package maintenance_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// dirVault makes a vault on a real directory and one point with a
// second, forgotten one, so that prune has something to delete.
func dirVault(t *testing.T) (string, *vault.Vault, *recovery.Point) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(ctx, store, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "d.raw")
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	os.WriteFile(disk, data, 0o600)
	doBackup(t, v, disk)
	for i := range data {
		data[i] ^= 0x5a
	}
	os.WriteFile(disk, data, 0o600)
	p := doBackup(t, v, disk)
	if _, err := maintenance.Forget(ctx, v, "m", policy.Retention{KeepLast: 1}, false); err != nil {
		t.Fatal(err)
	}
	return dir, v, p
}

// plantSession writes a session marker as an attacker with write access
// to the storage would.
func plantSession(t *testing.T, dir, name string, refreshed time.Time) {
	t.Helper()
	data, _ := json.Marshal(vault.SessionInfo{Version: 1, Kind: "backup", Host: "elsewhere", PID: 1,
		Started: time.Now().UTC().Add(-time.Minute), Refreshed: refreshed})
	os.MkdirAll(filepath.Join(dir, "sessions"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "sessions", name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPruneIgnoresFutureSession: a session marker refreshed in the future
// (planted, or from a host whose clock is wrong) would defer every prune
// until that date; beyond the skew allowance it is treated as expired and
// named in a warning. A marker just ahead (a clock a little fast) is
// still honoured.
func TestPruneIgnoresFutureSession(t *testing.T) {
	ctx := context.Background()
	dir, v, p := dirVault(t)
	plantSession(t, dir, "00000000000000000000000000000001", time.Now().UTC().Add(2*time.Minute))
	rep, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Deferred {
		t.Fatalf("a live-looking session 2 minutes ahead did not defer the prune: %+v", rep)
	}
	os.Remove(filepath.Join(dir, "sessions", "00000000000000000000000000000001"))

	planted := "0000000000000000000000000000f00d"
	plantSession(t, dir, planted, time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC))
	rep, err = maintenance.Prune(ctx, v, maintenance.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deferred || rep.ResumedPlans != 1 {
		t.Fatalf("a marker dated 2999 deferred prune: %+v", rep)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "sessions/"+planted) {
		t.Fatalf("warnings %q do not name the marker", rep.Warnings)
	}
	mustVerify(t, v)
	restoreSum(t, v, p)
}

// TestPartialUploadsListedAndPruned: a Put killed mid-write leaves a
// temporary file next to the packs. Verify names it; prune removes it once
// no running write can own it, and leaves a fresh one alone.
func TestPartialUploadsListedAndPruned(t *testing.T) {
	ctx := context.Background()
	dir, v, p := dirVault(t)
	old := filepath.Join(dir, "packs", "ab", ".tmp-1234567")
	fresh := filepath.Join(dir, "packs", "cd", ".tmp-7654321")
	for _, f := range []string{old, fresh} {
		os.MkdirAll(filepath.Dir(f), 0o700)
		if err := os.WriteFile(f, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hourAgo := time.Now().Add(-time.Hour)
	os.Chtimes(old, hourAgo, hourAgo)
	rep, err := maintenance.Verify(ctx, v, maintenance.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	warned := strings.Join(rep.Warnings, "\n")
	for _, name := range []string{"packs/ab/.tmp-1234567", "packs/cd/.tmp-7654321"} {
		if !strings.Contains(warned, name) {
			t.Errorf("verify does not name %s: %q", name, rep.Warnings)
		}
	}
	prep, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if prep.PartialUploads != 1 || prep.PartialUploadsBytes != 1<<20 {
		t.Errorf("prune removed %d partial uploads (%d bytes), want the old one", prep.PartialUploads, prep.PartialUploadsBytes)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old partial upload still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh partial upload (a running write's) removed: %v", err)
	}
	mustVerify(t, v)
	restoreSum(t, v, p)
}
