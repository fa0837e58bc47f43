package backup_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

func TestDiskChunkSize(t *testing.T) {
	const k, g, t1 = 1 << 10, int64(1) << 30, int64(1) << 40
	for _, c := range []struct {
		name    string
		size    int64
		tracked bool
		parent  *recovery.Disk
		vault   int
		want    int
	}{
		{"untracked: the vault's", 4 * g, false, nil, 256 * k, 256 * k},
		{"tracked, new disk: 64 KiB", 4 * g, true, nil, 256 * k, 64 * k},
		{"tracked, 256 GiB: still 64 KiB (2^22 blocks)", 256 * g, true, nil, 256 * k, 64 * k},
		{"tracked, 257 GiB: 128 KiB", 257 * g, true, nil, 256 * k, 128 * k},
		{"tracked, 1 TiB: 256 KiB", t1, true, nil, 256 * k, 256 * k},
		{"tracked, 4 TiB: never above the vault's", 4 * t1, true, nil, 256 * k, 256 * k},
		{"tracked, vault at 64 KiB", 4 * g, true, nil, 64 * k, 64 * k},
		{"tracked, vault at 1 MiB", 4 * g, true, nil, 1024 * k, 64 * k},
		{"tracked, empty disk", 0, true, nil, 256 * k, 64 * k},
		{"the parent's, tracked", 4 * g, true, &recovery.Disk{ChunkSize: 256 * k}, 256 * k, 256 * k},
		{"the parent's, untracked", 4 * g, false, &recovery.Disk{ChunkSize: 64 * k}, 256 * k, 64 * k},
		{"a parent's larger than the vault's is not", 4 * g, false, &recovery.Disk{ChunkSize: 1024 * k}, 256 * k, 256 * k},
		{"a parent's larger than the vault's is not, tracked", 4 * g, true, &recovery.Disk{ChunkSize: 1024 * k}, 256 * k, 64 * k},
		{"a parent's invalid size is ignored", 4 * g, true, &recovery.Disk{ChunkSize: 1000}, 256 * k, 64 * k},
	} {
		if got := backup.DiskChunkSize(c.size, c.tracked, c.parent, c.vault); got != c.want {
			t.Errorf("%s: DiskChunkSize(%d, %v, %+v, %d) = %d, want %d", c.name, c.size, c.tracked, c.parent, c.vault, got, c.want)
		}
	}
}

// A tracked disk new to a vault of 256 KiB chunks is cut at 64 KiB: an
// incremental after scattered 64 KiB writes reads only those, restores
// exactly and verifies; an untracked disk of the same point keeps the
// vault's chunk size; a disk first stored at 256 KiB keeps it.
func TestTrackedDiskSmallChunks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := cheap
	opts.ChunkSize = 256 << 10
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 * 64 << 10 // 4 MiB: 64 blocks of 64 KiB, 16 of 256 KiB
	live, plain, old := filepath.Join(dir, "live.img"), filepath.Join(dir, "plain.img"), filepath.Join(dir, "old.img")
	liveData := makeDisk(t, live, size, 21)
	plainData := makeDisk(t, plain, size, 22)
	oldData := makeDisk(t, old, size, 23)

	run := func(disks ...backup.Disk) *recovery.Point {
		t.Helper()
		p, err := backup.Run(ctx, v, backup.Options{Machine: "m", Disks: disks,
			Warn: func(s string) { t.Errorf("warning: %s", s) }})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	open := func(path string) source.Disk {
		t.Helper()
		src, err := source.OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	// "old" is stored untracked first (a machine backed up before its
	// tracking started): 256 KiB, which it keeps once tracked.
	p0 := run(backup.Disk{Name: "old", Source: open(old)})
	if cs := p0.Disks[0].ChunkSize; cs != 256<<10 {
		t.Fatalf("untracked disk cut at %d", cs)
	}
	p1 := run(backup.Disk{Name: "live", Source: open(live), Tracking: "bitmap-1"},
		backup.Disk{Name: "plain", Source: open(plain)},
		backup.Disk{Name: "old", Source: open(old), Tracking: "bitmap-1"})
	want := map[string]int{"live": 64 << 10, "plain": 256 << 10, "old": 256 << 10}
	for _, d := range p1.Disks {
		if d.ChunkSize != want[d.Name] {
			t.Fatalf("disk %s cut at %d, want %d", d.Name, d.ChunkSize, want[d.Name])
		}
	}

	// Four scattered 64 KiB writes on each tracked disk.
	var ext []source.Extent
	for _, b := range []int64{1, 14, 30, 63} {
		off := b * 64 << 10
		overwrite(t, live, liveData, off, bytes.Repeat([]byte{byte(b), 0xEE}, 32<<10))
		overwrite(t, old, oldData, off, bytes.Repeat([]byte{byte(b), 0xDD}, 32<<10))
		ext = append(ext, source.Extent{Offset: off, Length: 64 << 10})
	}
	ch := &backup.Changes{Since: p1.ID.String(), Extents: ext}
	p2 := run(backup.Disk{Name: "live", Source: open(live), Tracking: "bitmap-2", Changed: ch},
		backup.Disk{Name: "plain", Source: open(plain)},
		backup.Disk{Name: "old", Source: open(old), Tracking: "bitmap-2", Changed: ch})
	for _, d := range p2.Disks {
		if d.ChunkSize != want[d.Name] {
			t.Fatalf("incremental: disk %s cut at %d, want %d", d.Name, d.ChunkSize, want[d.Name])
		}
	}
	if d, _ := p2.Disk("live"); d.ChangeSource != "tracking" || d.Stats.ReadBytes != 4*64<<10 || d.Stats.TrackedChunks != 60 {
		t.Fatalf("live disk: source %s, read %d bytes, %d chunks tracked; want tracking, 4 × 64 KiB read, 60 tracked",
			d.ChangeSource, d.Stats.ReadBytes, d.Stats.TrackedChunks)
	}
	if d, _ := p2.Disk("old"); d.ChangeSource != "tracking" || d.Stats.ReadBytes != 4*256<<10 {
		t.Fatalf("old disk: source %s, read %d bytes; want tracking, 4 × 256 KiB read", d.ChangeSource, d.Stats.ReadBytes)
	}
	got := restoreTo(t, v, p2, t.TempDir())
	for name, data := range map[string][]byte{"live": liveData, "plain": plainData, "old": oldData} {
		if !bytes.Equal(got[name], data) {
			t.Fatalf("restored disk %s differs", name)
		}
	}
	rep, err := maintenance.Verify(ctx, v, maintenance.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 {
		t.Fatalf("verify: %v", rep.Problems)
	}
}
