package pointdisk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/nbd"
	"lifeboat/internal/pointdisk"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

const chunkSize = 64 << 10

// backedUp writes a 4 MiB disk (random data with zero runs) into a new
// directory vault and returns the vault, the point and the disk's bytes.
func backedUp(t *testing.T) (*vault.Vault, *blob.Dir, *recovery.Point, []byte) {
	t.Helper()
	ctx := context.Background()
	store, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(ctx, store, []byte("pw"), vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: chunkSize, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4<<20+12345) // a short last block
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		if (i/chunkSize)%3 != 1 { // every third block all zeros
			want[i] = byte(rng.IntN(256))
		}
	}
	img := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(img, want, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := source.OpenFile(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p, err := backup.Run(ctx, v, backup.Options{Machine: "m", Consistency: recovery.Crash, Disks: []backup.Disk{{Name: "d", Source: src}}})
	if err != nil {
		t.Fatal(err)
	}
	return v, store, p, want
}

// TestDiskReads: reads of any alignment and length, in any order, with a
// cache of only a few chunks, return the disk's bytes; reads past the end
// give io.EOF; block status reports the zero blocks as holes.
// smallCacheDisk opens the disk of backedUp with a cache of a few blocks
// (closed at the test's end) and returns it and its bytes.
func smallCacheDisk(t *testing.T) (*pointdisk.Disk, []byte) {
	t.Helper()
	v, _, p, want := backedUp(t)
	ctx := context.Background()
	pt, err := pointdisk.Open(ctx, v, p, "", pointdisk.Options{CacheBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pt.Close(ctx) })
	return pt.Disks[0], want
}

func TestDiskReads(t *testing.T) {
	d, want := smallCacheDisk(t)
	ctx := context.Background()
	if d.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", d.Size(), len(want))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		off := rng.Int64N(int64(len(want)))
		n := rng.IntN(3 * chunkSize)
		got := make([]byte, n)
		k, err := d.ReadAt(got, off)
		end := min(off+int64(n), int64(len(want)))
		if k != int(end-off) || (end < off+int64(n)) != (err != nil) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, k, err)
		}
		if !bytes.Equal(got[:k], want[off:end]) {
			t.Fatalf("ReadAt(%d bytes at %d): wrong bytes", n, off)
		}
	}
	// Sequentially, the whole disk (read-ahead on).
	var all bytes.Buffer
	buf := make([]byte, 100000)
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		k, _ := d.ReadAt(buf, off)
		all.Write(buf[:k])
	}
	if !bytes.Equal(all.Bytes(), want) {
		t.Fatal("a sequential read of the disk differs from it")
	}
	exts, err := d.BlockStatus(ctx, 0, d.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		zero := e.Flags&nbd.StateZero != 0
		for b := e.Offset; b < e.Offset+e.Length; b += chunkSize {
			blk := want[b:min(b+chunkSize, int64(len(want)))]
			if zero != bytes.Equal(blk, make([]byte, len(blk))) {
				t.Errorf("extent %+v: zero=%v does not match the block at %d", e, zero, b)
			}
		}
	}
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("WriteAt on a point disk = %v, want EROFS", err)
	}
}

// TestDiskCorruptChunk: a damaged pack fails the reads of its chunks with
// EIO and an error (and warning) naming the pack; never wrong bytes.
func TestDiskCorruptChunk(t *testing.T) {
	v, store, p, want := backedUp(t)
	ctx := context.Background()
	var name string
	err := store.List(ctx, "packs/", func(i blob.Info) error {
		if name == "" {
			name = i.Name
		}
		return nil
	})
	if err != nil || name == "" {
		t.Fatalf("listing packs: %q %v", name, err)
	}
	data, err := store.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	for i := 64; i < len(data)-64; i += 997 {
		data[i] ^= 0x5a
	}
	if err := store.Put(ctx, name, data); err != nil {
		t.Fatal(err)
	}
	var warned []string
	pt, err := pointdisk.Open(ctx, v, p, "d", pointdisk.Options{Warn: func(s string) { warned = append(warned, s) }, ReadAhead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close(ctx)
	d := pt.Disks[0]
	bad, good := 0, 0
	buf := make([]byte, chunkSize)
	for off := int64(0); off < d.Size(); off += chunkSize {
		k, err := d.ReadAt(buf[:min(chunkSize, d.Size()-off)], off)
		switch {
		case err == nil:
			if !bytes.Equal(buf[:k], want[off:off+int64(k)]) {
				t.Fatalf("read at %d: wrong bytes without an error", off)
			}
			good++
		default:
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), strings.TrimPrefix(name, "packs/")[:16]) {
				t.Fatalf("read at %d: %v, want EIO naming %s", off, err, name)
			}
			bad++
		}
	}
	if bad == 0 || good == 0 || len(warned) != bad {
		t.Fatalf("%d reads failed, %d succeeded, %d warnings: want some of each, one warning per failure", bad, good, len(warned))
	}
}

// TestOverlay: writes of any alignment read back, unwritten ranges read
// from the base, the base never changes, and block status calls written
// blocks data.
func TestOverlay(t *testing.T) {
	v, _, p, want := backedUp(t)
	ctx := context.Background()
	pt, err := pointdisk.Open(ctx, v, p, "", pointdisk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close(ctx)
	o, err := pointdisk.NewOverlay(pt.Disks[0], t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	model := bytes.Clone(want)
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		off := rng.Int64N(int64(len(want)) - 1)
		n := min(1+rng.IntN(200000), len(want)-int(off))
		w := make([]byte, n)
		for i := range w {
			w[i] = byte(rng.IntN(256))
		}
		if rng.IntN(4) == 0 {
			clear(w)
			if err := o.WriteZeroes(ctx, off, int64(n), false); err != nil {
				t.Fatal(err)
			}
		} else if _, err := o.WriteAt(w, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], w)
	}
	got := make([]byte, len(want))
	if _, err := o.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("the overlay does not read back what was written over the base")
	}
	base := make([]byte, len(want))
	if _, err := pt.Disks[0].ReadAt(base, 0); err != nil || !bytes.Equal(base, want) {
		t.Fatalf("the base changed under the overlay (%v)", err)
	}
	exts, err := o.BlockStatus(ctx, 0, o.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		if e.Flags&nbd.StateZero != 0 && !bytes.Equal(model[e.Offset:e.Offset+e.Length], make([]byte, e.Length)) {
			t.Fatalf("extent %+v is reported zero but holds data", e)
		}
	}
}

// TestDiskLentSlices: slices lent by LendSlices (and given by ReadSlices)
// keep their bytes while held, however many blocks are fetched and evicted
// meanwhile (their buffers are reused only once released), from readers
// on several goroutines, with a cache of a few blocks.
func TestDiskLentSlices(t *testing.T) {
	d, want := smallCacheDisk(t)
	ctx := context.Background()
	check := func(segs [][]byte, off int64, what string) error {
		var got []byte
		for _, s := range segs {
			got = append(got, s...)
		}
		if !bytes.Equal(got, want[off:off+int64(len(got))]) {
			return fmt.Errorf("%s at %d: wrong bytes", what, off)
		}
		return nil
	}
	kept, err := d.ReadSlices(ctx, nil, 0, 2*chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			type lent struct {
				segs    [][]byte
				off     int64
				release func()
			}
			var held []lent
			for i := range 200 {
				off := rng.Int64N(int64(len(want)) - 3*chunkSize)
				segs, release, err := d.LendSlices(ctx, nil, off, rng.Int64N(3*chunkSize))
				if err != nil {
					errs <- err
					return
				}
				held = append(held, lent{segs, off, release})
				if i%3 == 2 { // release the oldest after checking it is intact
					for _, l := range held[:2] {
						if err := check(l.segs, l.off, "lent slices"); err != nil {
							errs <- err
							return
						}
						l.release()
					}
					held = held[2:]
				}
			}
			for _, l := range held {
				if err := check(l.segs, l.off, "lent slices"); err != nil {
					errs <- err
					return
				}
				l.release()
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := check(kept, 0, "ReadSlices' slices"); err != nil {
		t.Fatal(err)
	}
}
