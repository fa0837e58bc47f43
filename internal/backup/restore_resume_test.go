package backup_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
)

// TestRestoreResumesPartialImage: a restore that fails part way keeps the
// image it was writing under restore.PartialPath, not at the target path,
// and says so; the same restore run again reads it, writes only the blocks
// still missing and publishes the image, equal to the point.
func TestRestoreResumesPartialImage(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vda.img")
	want := makeDisk(t, img, 8<<20, 11)
	mem := blob.NewMem()
	v := newVault(t, mem)
	pt := backupFiles(t, v, "m", map[string]string{"vda": img})

	faults := blob.NewFaults(mem)
	fv, err := vault.Open(context.Background(), faults, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	faults.Add(blob.Fault{Op: blob.OpGet, Prefix: "packs/", Nth: 4, Err: fmt.Errorf("read refused: %w", blob.ErrPermanent)})
	out := filepath.Join(dir, "out.raw")
	target := []restore.Target{{Disk: pt.Disks[0], Path: out}}
	var warnings []string
	opts := restore.Options{Readers: 1, Warn: func(s string) { warnings = append(warnings, s) }}
	if _, err := restore.Run(context.Background(), fv, pt, target, opts); err == nil {
		t.Fatal("restore succeeded despite a failing pack read")
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("the failed restore left an image at %s", out)
	}
	if _, err := os.Stat(restore.PartialPath(out)); err != nil {
		t.Fatalf("the failed restore did not keep its partial image: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "resume") {
		t.Errorf("warnings %q: want one saying the partial image is kept to resume", warnings)
	}

	fresh, err := restore.Run(context.Background(), v, pt, []restore.Target{{Disk: pt.Disks[0], Path: filepath.Join(dir, "fresh.raw")}}, restore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	warnings = nil
	resumed, err := restore.Run(context.Background(), v, pt, target, opts)
	if err != nil {
		t.Fatalf("resuming: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("resumed image differs from the disk (%v)", err)
	}
	if _, err := os.Stat(restore.PartialPath(out)); err == nil {
		t.Error("the partial image is still there after the resumed restore")
	}
	if resumed.WrittenBytes >= fresh.WrittenBytes || resumed.UnchangedBlks == 0 {
		t.Errorf("resumed restore wrote %d bytes (%d blocks already right), a fresh one %d: want only the missing blocks written",
			resumed.WrittenBytes, resumed.UnchangedBlks, fresh.WrittenBytes)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "resuming") {
		t.Errorf("warnings %q: want one saying it resumes", warnings)
	}
}
