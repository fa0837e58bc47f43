package nbd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// slicedBackend lends its bytes as SliceReader, in pieces of odd sizes
// (each a fresh buffer, so never changed), and fails reads that reach
// failAt (when not 0).
type slicedBackend struct {
	AllocationBackend
	failAt int64
}

func (b *slicedBackend) ReadSlices(ctx context.Context, dst [][]byte, off, n int64) ([][]byte, error) {
	for end := off + n; off < end; {
		k := min(end-off, 100<<10+4096)
		if b.failAt > 0 && off <= b.failAt && b.failAt < off+k {
			k = b.failAt - off
			if k == 0 {
				return dst, fmt.Errorf("the block at %d is damaged: %w", b.failAt, syscall.EIO)
			}
		}
		p := make([]byte, k)
		if _, err := b.ReadAt(p, off); err != nil {
			return dst, err
		}
		dst = append(dst, p)
		off += k
	}
	return dst, nil
}

// A SliceReader backend's reads go out straight from its slices: holes as
// hole chunks, data in several slices per reply, in structured and simple
// replies, to our client and to nbdcopy; a read that fails part-way is an
// error, never short or wrong bytes.
func TestServerSliceReader(t *testing.T) {
	dir := shortTempDir(t)
	const size = 8 << 20
	img, want := sparseImage(t, dir, size, testExtents, 11)
	fb := fileExport(t, "d", img, true).Backend.(AllocationBackend)
	ts := startServer(t, Export{Name: "d", Backend: &slicedBackend{AllocationBackend: fb}, ReadOnly: true},
		Export{Name: "bad", Backend: &slicedBackend{AllocationBackend: fb, failAt: 2<<20 + 300<<10}, ReadOnly: true})
	checkSlicedExports(t, ts, want, size)
	out := filepath.Join(dir, "out.raw")
	run(t, "nbdcopy", ts.uri("d"), out)
	sameFile(t, img, out)
	if o := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, ts.uri("d")); !strings.Contains(o, "identical") {
		t.Fatalf("qemu-img compare: %s", o)
	}
}

// lendingBackend is a slicedBackend that lends its slices as SliceLender:
// each release scribbles over the slices it ends (as a backend reusing
// the memory would) and counts down the leases out.
type lendingBackend struct {
	slicedBackend
	mu   sync.Mutex
	out  int // leases not yet released
	lent int // leases ever made
}

func (b *lendingBackend) LendSlices(ctx context.Context, dst [][]byte, off, n int64) ([][]byte, func(), error) {
	before := len(dst)
	dst, err := b.ReadSlices(ctx, dst, off, n)
	mine := dst[before:]
	b.mu.Lock()
	b.out++
	b.lent++
	b.mu.Unlock()
	return dst, func() {
		for _, s := range mine {
			for i := range s {
				s[i] = 0xa5
			}
		}
		b.mu.Lock()
		b.out--
		b.mu.Unlock()
	}, err
}

// A SliceLender's slices are released once each, only after the reply
// holding them is written: the bytes read are right although every
// release overwrites them, and none is left out after the reads, failed
// ones included.
func TestServerSliceLender(t *testing.T) {
	dir := shortTempDir(t)
	const size = 8 << 20
	img, want := sparseImage(t, dir, size, testExtents, 12)
	fb := fileExport(t, "d", img, true).Backend.(AllocationBackend)
	good := &lendingBackend{slicedBackend: slicedBackend{AllocationBackend: fb}}
	bad := &lendingBackend{slicedBackend: slicedBackend{AllocationBackend: fb, failAt: 2<<20 + 300<<10}}
	ts := startServer(t, Export{Name: "d", Backend: good, ReadOnly: true}, Export{Name: "bad", Backend: bad, ReadOnly: true})
	checkSlicedExports(t, ts, want, size)
	out := filepath.Join(dir, "out.raw")
	run(t, "nbdcopy", ts.uri("d"), out)
	sameFile(t, img, out)
	// The server releases a reply's leases just after writing it, maybe
	// after the client has read it: wait for that.
	for name, b := range map[string]*lendingBackend{"d": good, "bad": bad} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			b.mu.Lock()
			lent, out := b.lent, b.out
			b.mu.Unlock()
			if lent > 0 && out == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("export %s: %d leases made, %d not released", name, lent, out)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// checkSlicedExports checks, in each reply mode, random reads of export
// "d" of ts (whose bytes are want) and that a read of export "bad" over its
// damaged block at 2 MiB + 300 KiB fails with EIO, leaving the connection
// usable.
func checkSlicedExports(t *testing.T, ts *testServer, want []byte, size int64) {
	t.Helper()
	eachReplyMode(t, ts.uri("d"), func(t *testing.T, ctx context.Context, c *Client, opts ...Option) {
		if err := checkRandomReads(c, want, size, 200, 8, 40); err != nil {
			t.Fatal(err)
		}
		bad, err := Dial(ctx, ts.uri("bad"), opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer bad.Close()
		buf := make([]byte, 1<<20)
		if _, err := bad.ReadAt(buf, 2<<20); err == nil || !errors.Is(err, syscall.EIO) {
			t.Fatalf("a read over a damaged block: %v, want EIO", err)
		}
		if _, err := bad.ReadAt(buf[:4096], 0); err != nil {
			t.Fatalf("the connection is unusable after a failed read: %v", err)
		}
	})
}
