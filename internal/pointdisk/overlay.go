package pointdisk

import (
	"context"
	"fmt"
	"os"
	"sync"

	"lifeboat/internal/nbd"
)

// overlayBlock is the copy-on-write granularity: a write to part of a
// block copies the rest of it from the base first.
const overlayBlock = 64 << 10

// Overlay is a copy-on-write layer over a read-only disk: writes go to a
// sparse scratch file, reads of blocks never written come from the base.
// The scratch file is unlinked as soon as it is created, so nothing is
// left behind however the process ends, and the base (the vault) is never
// written. Safe for concurrent use.
type Overlay struct {
	base nbd.AllocationBackend
	f    *os.File

	mu      sync.RWMutex
	written map[int64]bool // overlay blocks held by f
}

var _ nbd.AllocationBackend = (*Overlay)(nil)

// NewOverlay makes a writable overlay over base with its scratch file in
// dir (the system's temporary directory if "").
func NewOverlay(base nbd.AllocationBackend, dir string) (*Overlay, error) {
	f, err := os.CreateTemp(dir, "lifeboat-overlay-*")
	if err != nil {
		return nil, fmt.Errorf("creating an overlay file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("unlinking overlay file %s: %w", f.Name(), err)
	}
	if err := f.Truncate(base.Size()); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing the overlay file: %w", err)
	}
	return &Overlay{base: base, f: f, written: map[int64]bool{}}, nil
}

// Close drops the overlay and everything written to it.
func (o *Overlay) Close() error { return o.f.Close() }

// Size is the base's size.
func (o *Overlay) Size() int64 { return o.base.Size() }

// WrittenBytes is how much has been written to the overlay, in whole blocks.
func (o *Overlay) WrittenBytes() int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return int64(len(o.written)) * overlayBlock
}

// ReadAt reads written blocks from the overlay, the others from the base.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.spans(p, off, func(q []byte, at int64, written bool) (int, error) {
		if written {
			return o.f.ReadAt(q, at)
		}
		return o.base.ReadAt(q, at)
	})
}

// spans calls fn for each run of p within one overlay block.
func (o *Overlay) spans(p []byte, off int64, fn func(q []byte, at int64, written bool) (int, error)) (int, error) {
	size := o.base.Size()
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= size {
			return n, fmt.Errorf("offset %d is past the end of the %d-byte disk", at, size)
		}
		blk := at / overlayBlock
		k := int(min(int64(len(p)-n), (blk+1)*overlayBlock-at, size-at))
		m, err := fn(p[n:n+k], at, o.written[blk])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// WriteAt writes to the overlay, first copying from the base the part of
// each block not written yet that the write does not cover.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.spans(p, off, func(q []byte, at int64, written bool) (int, error) {
		blk := at / overlayBlock
		if !written && len(q) < o.blockLen(blk) {
			if err := o.copyUp(blk); err != nil {
				return 0, err
			}
		}
		n, err := o.f.WriteAt(q, at)
		if err == nil {
			o.written[blk] = true
		}
		return n, err
	})
}

func (o *Overlay) blockLen(blk int64) int {
	return int(min(overlayBlock, o.base.Size()-blk*overlayBlock))
}

// copyUp copies block blk from the base into the overlay file.
func (o *Overlay) copyUp(blk int64) error {
	buf := make([]byte, o.blockLen(blk))
	if _, err := o.base.ReadAt(buf, blk*overlayBlock); err != nil {
		return fmt.Errorf("copying a block up into the overlay: %w", err)
	}
	if _, err := o.f.WriteAt(buf, blk*overlayBlock); err != nil {
		return fmt.Errorf("writing the overlay: %w", err)
	}
	return nil
}

// Flush has nothing to make durable: the overlay dies with the process.
func (o *Overlay) Flush(ctx context.Context) error { return nil }

// Trim writes zeros (a trimmed range may read back as anything).
func (o *Overlay) Trim(ctx context.Context, off, length int64) error {
	return o.WriteZeroes(ctx, off, length, false)
}

// WriteZeroes writes zeros to the overlay.
func (o *Overlay) WriteZeroes(ctx context.Context, off, length int64, noHole bool) error {
	zeros := make([]byte, min(length, 1<<20))
	for done := int64(0); done < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(length-done, int64(len(zeros)))
		if _, err := o.WriteAt(zeros[:k], off+done); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// BlockStatus is the base's, with written blocks as data.
func (o *Overlay) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	exts, err := o.base.BlockStatus(ctx, off, length)
	if err != nil {
		return nil, err
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	var out []nbd.Extent
	add := func(e nbd.Extent) {
		if n := len(out); n > 0 && out[n-1].Flags == e.Flags && out[n-1].Offset+out[n-1].Length == e.Offset {
			out[n-1].Length += e.Length
			return
		}
		out = append(out, e)
	}
	for _, e := range exts {
		for pos, end := e.Offset, e.Offset+e.Length; pos < end; {
			blk := pos / overlayBlock
			next := min((blk+1)*overlayBlock, end)
			flags := e.Flags
			if o.written[blk] {
				flags = 0
			}
			add(nbd.Extent{Offset: pos, Length: next - pos, Flags: flags})
			pos = next
		}
	}
	return out, nil
}
