package restore_test

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
)

// TestManifestBoundByPointDisk: a point says its disk is 1 MiB, but the
// manifest it names describes 64 GiB (32 MiB of chunk IDs that compress to
// almost nothing). The restore refuses it, naming the manifest, without
// decompressing it.
func TestManifestBoundByPointDisk(t *testing.T) {
	ctx := context.Background()
	store, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(ctx, store, []byte("pw"), vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	id, err := image.Save(ctx, v, image.NewManifest(64<<30, 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	p := &recovery.Point{Machine: "m", Time: time.Now(), Consistency: recovery.Crash,
		Disks: []recovery.Disk{{Name: "d", Size: 1 << 20, ChunkSize: 64 << 10, Manifest: id}}}
	if err := recovery.Save(ctx, v, p); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = restore.Run(ctx, v, p, []restore.Target{{Disk: p.Disks[0], Path: filepath.Join(t.TempDir(), "d.raw")}}, restore.Options{})
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "manifests/"+id.String()) {
		t.Fatalf("restore: %v, want an error naming the oversized manifest", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Fatalf("restore allocated %d MiB decoding a manifest bigger than the point's disk", n>>20)
	}
}
