package restore_test

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/chunk"
	"lifeboat/internal/crypto"
	"lifeboat/internal/image"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/source"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
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
	n := testenv.Allocated(func() {
		_, err = restore.Run(ctx, v, p, []restore.Target{{Disk: p.Disks[0], Path: filepath.Join(t.TempDir(), "d.raw")}}, restore.Options{})
	})
	if err == nil || !strings.Contains(err.Error(), "manifests/"+id.String()) {
		t.Fatalf("restore: %v, want an error naming the oversized manifest", err)
	}
	if n > 16<<20 {
		t.Fatalf("restore allocated %d MiB decoding a manifest bigger than the point's disk", n>>20)
	}
}

// flip damages one byte of an object, rewriting it as someone with write
// access to the storage could.
func flip(t *testing.T, store blob.Store, name string, off int64) {
	t.Helper()
	data, err := store.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0xff
	if err := store.Put(context.Background(), name, data); err != nil {
		t.Fatal(err)
	}
}

// stores are the stores the test runs on: a real directory and a bucket
// on a real S3 server (versitygw).
var stores = map[string]func(t *testing.T) blob.Store{
	"dir": func(t *testing.T) blob.Store {
		s, err := blob.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
	"s3": func(t *testing.T) blob.Store {
		s, err := blob.NewS3(t.Context(), s3test.Start(t).Config)
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
}

// TestDuplicateChunkBadCopy (issue 10 item 10): two chunks are stored
// twice, in two packs, and each pack has one of them damaged. Whichever
// location the index offers first, one chunk fails there: restore, and a
// copy of the vault, read it from its other location.
func TestDuplicateChunkBadCopy(t *testing.T) {
	for name, newStore := range stores {
		t.Run(name, func(t *testing.T) { duplicateChunkBadCopy(t, newStore(t)) })
	}
}

func duplicateChunkBadCopy(t *testing.T, store blob.Store) {
	ctx := context.Background()
	opts := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}
	v, err := vault.Init(ctx, store, []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 512<<10)
	rand.New(rand.NewSource(1)).Read(data)
	img := filepath.Join(t.TempDir(), "d.raw")
	os.WriteFile(img, data, 0o600)
	src, err := source.OpenFile(img)
	if err != nil {
		t.Fatal(err)
	}
	p, err := backup.Run(ctx, v, backup.Options{Machine: "m", Disks: []backup.Disk{{Name: "d", Source: src}}})
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	m, err := image.Load(ctx, v, p.Disks[0].Manifest, p.Disks[0].Size, p.Disks[0].ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	x, y := m.IDs[0], m.IDs[5]
	ix, err := v.LoadIndex(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Store x and y a second time, in a pack of their own with its index.
	packer := v.NewPacker(ctx, chunk.NewIndex(), nil)
	first := map[chunk.ID]chunk.PackLocation{}
	for _, id := range []chunk.ID{x, y} {
		l := ix.Locations(id)[0]
		first[id] = l
		sealed, err := store.GetRange(ctx, chunk.PackName(l.Pack), int64(l.Loc.Offset), int64(l.Loc.Length))
		if err != nil {
			t.Fatal(err)
		}
		if err := packer.Add(id, sealed, int(l.Loc.RawLength)); err != nil {
			t.Fatal(err)
		}
	}
	if err := packer.Close(); err != nil {
		t.Fatal(err)
	}
	if ix, err = v.LoadIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var second chunk.PackLocation
	for _, l := range ix.Locations(y) {
		if l.Pack != first[y].Pack {
			second = l
		}
	}
	if len(ix.Locations(x)) != 2 || second.Pack == (chunk.ID{}) {
		t.Fatalf("locations of x %v, of y %v: want two each", ix.Locations(x), ix.Locations(y))
	}
	flip(t, store, chunk.PackName(first[x].Pack), int64(first[x].Loc.Offset)+40)
	flip(t, store, chunk.PackName(second.Pack), int64(second.Loc.Offset)+40)

	rep, err := maintenance.Verify(ctx, v, maintenance.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 2 {
		t.Fatalf("verify: %+v, want the two damaged packs", rep.Problems)
	}
	for _, pr := range rep.Problems {
		if !strings.Contains(pr.Error, "another copy of the chunk is intact") {
			t.Errorf("verify: %s: %s: does not say the chunk has an intact copy", pr.Object, pr.Error)
		}
	}

	out := filepath.Join(t.TempDir(), "r.raw")
	st, err := restore.Run(ctx, v, p, []restore.Target{{Disk: p.Disks[0], Path: out}}, restore.Options{})
	if err != nil {
		t.Fatalf("restore with a good copy of every chunk: %v", err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("restored image differs")
	}
	if st.RereadChunks != 1 {
		t.Errorf("%d chunks read from another location, want 1", st.RereadChunks)
	}

	cdir := t.TempDir()
	cstore, _ := blob.NewDir(cdir)
	c, err := vault.InitCopyOf(ctx, cstore, []byte("pw2"), v, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vaultcopy.Run(ctx, v, c, vaultcopy.Options{}); err != nil {
		t.Fatalf("copy with a good copy of every chunk: %v", err)
	}
	out2 := filepath.Join(t.TempDir(), "c.raw")
	if _, err := restore.Run(ctx, c, p, []restore.Target{{Disk: p.Disks[0], Path: out2}}, restore.Options{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out2); !bytes.Equal(got, data) {
		t.Fatal("image restored from the copy differs")
	}
}
