package backup_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

// trackedBackup backs up path as disk "d0" with the given change set.
func trackedBackup(t *testing.T, v *vault.Vault, path string, ch *backup.Changes, audit float64) (*recovery.Point, []string) {
	t.Helper()
	src, err := source.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var warnings []string
	pt, err := backup.Run(context.Background(), v, backup.Options{Machine: "m",
		Disks: []backup.Disk{{Name: "d0", Source: src, Changed: ch, Tracking: "bitmap-next"}},
		Audit: audit, Warn: func(s string) { warnings = append(warnings, s) }})
	if err != nil {
		t.Fatal(err)
	}
	return pt, warnings
}

func overwrite(t *testing.T, path string, data []byte, off int64, b []byte) {
	t.Helper()
	copy(data[off:], b)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestChangeTrackingReadsOnlyDirtyBlocks(t *testing.T) {
	dir := t.TempDir()
	v := newVault(t, blob.NewMem())
	path := filepath.Join(dir, "d0.img")
	const cs = 64 << 10
	data := makeDisk(t, path, 64*cs, 7)
	p1, _ := trackedBackup(t, v, path, nil, 0)
	if got := p1.Disks[0].ChangeSource; got != "full" {
		t.Fatalf("first backup change source %q, want full", got)
	}
	if p1.Disks[0].Tracking != "bitmap-next" {
		t.Fatalf("tracking name not recorded: %+v", p1.Disks[0])
	}

	// Two writes: one inside block 3, one spanning blocks 10-11.
	overwrite(t, path, data, 3*cs+100, bytes.Repeat([]byte{0xAB}, 500))
	overwrite(t, path, data, 11*cs-10, bytes.Repeat([]byte{0xCD}, 20))
	ch := &backup.Changes{Since: p1.ID.String(), Extents: []source.Extent{{Offset: 3 * cs, Length: cs}, {Offset: 10 * cs, Length: 2 * cs}}}
	p2, warnings := trackedBackup(t, v, path, ch, 0)
	if len(warnings) != 0 {
		t.Fatalf("warnings: %q", warnings)
	}
	st := p2.Disks[0].Stats
	if p2.Disks[0].ChangeSource != "tracking" || st.ReadBytes != 3*cs || st.TrackedChunks != 61 {
		t.Fatalf("tracked backup read %d bytes, %d tracked chunks, source %q; want 3 blocks read, 61 tracked",
			st.ReadBytes, st.TrackedChunks, p2.Disks[0].ChangeSource)
	}
	got := restoreTo(t, v, p2, t.TempDir())
	if !bytes.Equal(got["d0"], data) {
		t.Fatal("restored tracked incremental differs from the disk")
	}
}

func TestChangeTrackingNotMatchingParentFallsBack(t *testing.T) {
	dir := t.TempDir()
	v := newVault(t, blob.NewMem())
	path := filepath.Join(dir, "d0.img")
	const cs = 64 << 10
	data := makeDisk(t, path, 32*cs, 8)
	p1, _ := trackedBackup(t, v, path, nil, 0)
	overwrite(t, path, data, 5*cs, bytes.Repeat([]byte{1}, cs))
	// The bitmap claims to start at another point: it must not be used, and
	// the change in block 5 (which it does not list) must still be found.
	ch := &backup.Changes{Since: strings.Repeat("ab", 32), Extents: nil}
	p2, warnings := trackedBackup(t, v, path, ch, 0)
	if len(warnings) != 1 || !strings.Contains(warnings[0], "change tracking not used") {
		t.Fatalf("warnings %q", warnings)
	}
	if p2.Disks[0].ChangeSource != "compare" || p2.Disks[0].Stats.TrackedChunks != 0 {
		t.Fatalf("disk %+v: want compare", p2.Disks[0])
	}
	if got := restoreTo(t, v, p2, t.TempDir()); !bytes.Equal(got["d0"], data) {
		t.Fatal("restore differs")
	}
	_ = p1
}

func TestChangeTrackingAuditCatchesMissedWrite(t *testing.T) {
	dir := t.TempDir()
	v := newVault(t, blob.NewMem())
	path := filepath.Join(dir, "d0.img")
	const cs = 64 << 10
	data := makeDisk(t, path, 16*cs, 9)
	p1, _ := trackedBackup(t, v, path, nil, 0)
	// A write the tracker missed (block 9), and one it saw (block 2).
	overwrite(t, path, data, 9*cs, bytes.Repeat([]byte{7}, 4096))
	overwrite(t, path, data, 2*cs, bytes.Repeat([]byte{8}, 4096))
	ch := &backup.Changes{Since: p1.ID.String(), Extents: []source.Extent{{Offset: 2 * cs, Length: 4096}}}
	p2, warnings := trackedBackup(t, v, path, ch, 1.0)
	if len(warnings) != 1 || !strings.Contains(warnings[0], "offset 589824") {
		t.Fatalf("warnings %q, want the audit naming offset %d", warnings, 9*cs)
	}
	if p2.Disks[0].ChangeSource != "compare" {
		t.Fatalf("change source %q after a failed audit", p2.Disks[0].ChangeSource)
	}
	if got := restoreTo(t, v, p2, t.TempDir()); !bytes.Equal(got["d0"], data) {
		t.Fatal("restore differs after a failed audit")
	}
}

func TestChangeTrackingResizedDiskFallsBack(t *testing.T) {
	dir := t.TempDir()
	v := newVault(t, blob.NewMem())
	path := filepath.Join(dir, "d0.img")
	const cs = 64 << 10
	data := makeDisk(t, path, 16*cs, 10)
	p1, _ := trackedBackup(t, v, path, nil, 0)
	data = append(data, bytes.Repeat([]byte{3}, cs)...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ch := &backup.Changes{Since: p1.ID.String(), Extents: []source.Extent{{Offset: 16 * cs, Length: cs}}}
	p2, warnings := trackedBackup(t, v, path, ch, 0)
	if p2.Disks[0].ChangeSource != "compare" || len(warnings) < 1 {
		t.Fatalf("resized disk: source %q warnings %q", p2.Disks[0].ChangeSource, warnings)
	}
	if got := restoreTo(t, v, p2, t.TempDir()); !bytes.Equal(got["d0"], data) {
		t.Fatal("restore differs")
	}
}
