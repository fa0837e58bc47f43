// Package pointdisk reads the disks of a recovery point straight from the
// vault, on demand: a Disk is an io.ReaderAt over a disk manifest that
// fetches, authenticates and decodes only the chunks asked for, keeps a
// bounded cache of decoded chunks, reads ahead when reads are sequential
// and reports zero blocks as holes. It is what `lifeboat export` serves
// over NBD, what instant restore boots from and what `lifeboat mount`
// shows as files. Overlay puts a copy-on-write layer in front of one, so
// a writable export never writes to the vault.
package pointdisk

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/nbd"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Options tune the disks of a Point.
type Options struct {
	// CacheBytes bounds the decoded chunks kept per disk (default 64 MiB,
	// at least a few chunks).
	CacheBytes int64
	// ReadAhead is how many chunks past a sequential read are fetched in
	// the background (default 8; negative: none).
	ReadAhead int
	// Warn receives each failed read, naming the disk, the offset and the
	// damaged or missing object: an NBD client or a FUSE reader only sees
	// EIO.
	Warn func(string)
}

func (o *Options) fill() {
	if o.CacheBytes == 0 {
		o.CacheBytes = 64 << 20
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = 8
	}
}

// Point is a recovery point opened for reading disk by disk. It holds a
// read session in the vault (docs/format.md), so that a prune does not
// delete what it reads, until Close.
type Point struct {
	Point *recovery.Point
	Disks []*Disk

	sess   *vault.Session
	cancel context.CancelFunc
}

// Open opens every disk of p (or only the one named disk, if not "") of
// vault v. The vault's index is loaded once; manifests are loaded now, so
// a missing manifest fails here rather than at the first read.
func Open(ctx context.Context, v *vault.Vault, p *recovery.Point, disk string, opts Options) (_ *Point, err error) {
	opts.fill()
	sess, err := v.StartReadSession(ctx, "export")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			sess.End(context.WithoutCancel(ctx))
		}
	}()
	plans, err := v.Plans(ctx)
	if err != nil {
		return nil, err
	}
	condemned := vault.CondemnedPacks(plans)
	ix, err := v.LoadIndex(ctx, func(id chunk.ID) bool { return condemned[id] })
	if err != nil {
		return nil, err
	}
	// Background reads (read-ahead) live as long as the point is open.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	out := &Point{Point: p, sess: sess, cancel: cancel}
	src := &chunks{v: v, primary: v.NewChunkReader(ix), condemned: len(condemned) > 0}
	for _, d := range p.Disks {
		if disk != "" && d.Name != disk {
			continue
		}
		m, err := image.Load(ctx, v, d.Manifest, d.Size, d.ChunkSize)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("disk %s: %w", d.Name, err)
		}
		out.Disks = append(out.Disks, newDisk(bg, d.Name, m, src, opts))
	}
	if len(out.Disks) == 0 {
		cancel()
		return nil, fmt.Errorf("point %s of %s has no disk %q: %w", p.ID.Short(), p.Machine, disk, recovery.ErrNoPoint)
	}
	return out, nil
}

// Disk returns the disk named name.
func (p *Point) Disk(name string) (*Disk, bool) {
	for _, d := range p.Disks {
		if d.name == name {
			return d, true
		}
	}
	return nil, false
}

// Close stops read-ahead and ends the read session. Reads after Close fail.
func (p *Point) Close(ctx context.Context) error {
	p.cancel()
	return p.sess.End(ctx)
}

// chunks reads chunks through the index that skips packs a prune has
// condemned, falling back to the full index (loaded once) for a chunk
// found only there, as a restore does.
type chunks struct {
	v         *vault.Vault
	primary   *vault.ChunkReader
	condemned bool

	once    sync.Once
	full    *vault.ChunkReader
	fullErr error
}

func (c *chunks) read(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	out, err := c.primary.ReadChunk(ctx, id, dst)
	if err == nil || !c.condemned || c.primary.Index().Has(id) {
		return out, err
	}
	c.once.Do(func() {
		ix, err := c.v.LoadIndex(ctx, nil)
		c.full, c.fullErr = c.v.NewChunkReader(ix), err
	})
	if c.fullErr != nil {
		return nil, c.fullErr
	}
	return c.full.ReadChunk(ctx, id, dst)
}

// Disk is one disk of a point, read on demand. Safe for concurrent use.
type Disk struct {
	name string
	m    *image.Manifest
	src  *chunks
	opts Options
	bg   context.Context

	mu     sync.Mutex
	cache  map[int]*entry
	lru    list.List // of *entry, most recent first
	cached int64
	next   int           // the block after the last read: sequential reads start there
	ahead  chan struct{} // bounds read-ahead fetches in flight
	// free holds the buffers of evicted blocks no one reads any more, for
	// the next blocks fetched: allocating (and zeroing) one per block cost
	// a tenth of the CPU of an export.
	free [][]byte
}

// maxFree bounds Disk.free.
const maxFree = 16

// entry is one cached block; done is closed once data or err is set.
type entry struct {
	block int
	done  chan struct{}
	data  []byte
	err   error
	elem  *list.Element
	// refs counts the cache's hold on the block (while it is cached) and
	// each reader's (between block and unpin); kept marks a block lent
	// for good (ReadSlices). data goes back to Disk.free when refs falls
	// to zero and it is not kept.
	refs int
	kept bool
}

var _ nbd.AllocationBackend = (*Disk)(nil)

func newDisk(bg context.Context, name string, m *image.Manifest, src *chunks, opts Options) *Disk {
	opts.CacheBytes = max(opts.CacheBytes, 4*int64(m.ChunkSize))
	return &Disk{name: name, m: m, src: src, opts: opts, bg: bg, cache: map[int]*entry{},
		ahead: make(chan struct{}, max(opts.ReadAhead/2, 1))}
}

// Name is the disk's name in the point.
func (d *Disk) Name() string { return d.name }

// Size is the disk's size in bytes.
func (d *Disk) Size() int64 { return d.m.Size }

// ChunkSize is the size of the disk's blocks.
func (d *Disk) ChunkSize() int { return d.m.ChunkSize }

// ReadAt reads the disk; it never returns less than len(p) without an
// error, and io.EOF only past the end.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	return d.ReadAtContext(d.bg, p, off)
}

// ReadAtContext is ReadAt, giving up when ctx ends.
func (d *Disk) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("disk %s: negative offset %d", d.name, off)
	}
	if off >= d.m.Size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := min(int64(len(p)), d.m.Size-off)
	var arr [8][]byte
	var pins [4]*entry
	segs, pinned, err := d.readSlices(ctx, arr[:0], pins[:0], off, want)
	n := 0
	for _, s := range segs {
		n += copy(p[n:], s)
	}
	d.unpin(pinned, false)
	if err != nil {
		return n, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var _ nbd.SliceLender = (*Disk)(nil)

// ReadSlices appends to dst the disk's bytes in [off, off+n) as slices of
// its cached blocks (and of a shared zero buffer for zero blocks), which
// never change: the NBD server writes them out without a copy.
func (d *Disk) ReadSlices(ctx context.Context, dst [][]byte, off, n int64) ([][]byte, error) {
	dst, pinned, err := d.readSlices(ctx, dst, nil, off, n)
	d.unpin(pinned, true)
	return dst, err
}

// LendSlices is ReadSlices whose slices stay unchanged only until release
// is called; their blocks' memory is then reused for blocks fetched later.
func (d *Disk) LendSlices(ctx context.Context, dst [][]byte, off, n int64) ([][]byte, func(), error) {
	dst, pinned, err := d.readSlices(ctx, dst, nil, off, n)
	return dst, func() { d.unpin(pinned, false) }, err
}

// readSlices is ReadSlices appending to pins the blocks it pinned, which
// the caller unpins once done with the slices.
func (d *Disk) readSlices(ctx context.Context, dst [][]byte, pins []*entry, off, n int64) ([][]byte, []*entry, error) {
	if off < 0 || n < 0 || n > d.m.Size-off {
		return dst, pins, fmt.Errorf("disk %s: read of %d bytes at offset %d is outside the %d-byte disk", d.name, n, off, d.m.Size)
	}
	if n == 0 {
		return dst, pins, nil
	}
	cs := int64(d.m.ChunkSize)
	d.readAhead(int(off/cs), int((off+n-1)/cs))
	for pos, end := off, off+n; pos < end; {
		b := int(pos / cs)
		in := pos - int64(b)*cs
		k := min(end-pos, int64(d.m.BlockLen(b))-in)
		if d.m.IDs[b].IsZero() {
			dst = appendZeros(dst, k)
		} else {
			e, err := d.block(ctx, b)
			if err != nil {
				return dst, pins, err
			}
			pins = append(pins, e)
			dst = append(dst, e.data[in:in+k])
		}
		pos += k
	}
	return dst, pins, nil
}

// unpin ends the reads of blocks that block returned; with keep, their
// memory is never reused (it was lent for good).
func (d *Disk) unpin(es []*entry, keep bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range es {
		e.kept = e.kept || keep
		d.release(e)
	}
}

// release drops one hold on e (d.mu held), recycling its buffer when it
// was the last.
func (d *Disk) release(e *entry) {
	e.refs--
	if e.refs == 0 && !e.kept && e.data != nil && len(d.free) < maxFree {
		d.free = append(d.free, e.data[:0])
		e.data = nil
	}
}

// buffer returns a buffer for a block of n bytes, a free one if there is.
func (d *Disk) buffer(n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.free) - 1; i >= 0; i-- {
		if b := d.free[i]; cap(b) >= n {
			d.free[i] = d.free[len(d.free)-1]
			d.free = d.free[:len(d.free)-1]
			return b
		}
	}
	return make([]byte, 0, n)
}

// zeros is read-only: slices of it stand for zero blocks.
var zeros = sync.OnceValue(func() []byte { return make([]byte, 1<<20) })

func appendZeros(dst [][]byte, n int64) [][]byte {
	z := zeros()
	for n > 0 {
		k := min(n, int64(len(z)))
		dst = append(dst, z[:k])
		n -= k
	}
	return dst
}

// readAhead starts fetching the blocks after last when a read continues
// the previous one.
func (d *Disk) readAhead(first, last int) {
	d.mu.Lock()
	seq := first == d.next || first == d.next-1
	d.next = last + 1
	d.mu.Unlock()
	if !seq || d.opts.ReadAhead < 0 {
		return
	}
	for b := last + 1; b <= last+d.opts.ReadAhead && b < len(d.m.IDs); b++ {
		if d.m.IDs[b].IsZero() {
			continue
		}
		d.mu.Lock()
		_, have := d.cache[b]
		d.mu.Unlock()
		if have {
			continue
		}
		select {
		case d.ahead <- struct{}{}:
		default:
			return // enough in flight already
		}
		go func() {
			defer func() { <-d.ahead }()
			if e, err := d.block(d.bg, b); err == nil {
				d.unpin([]*entry{e}, false)
			}
		}()
	}
}

// block returns the decoded block b (not a zero block) from the cache, or
// fetches it; concurrent readers of one block share one fetch. The entry
// returned is pinned: its data stays unchanged until the caller unpins it.
func (d *Disk) block(ctx context.Context, b int) (*entry, error) {
	d.mu.Lock()
	e, ok := d.cache[b]
	if ok {
		d.lru.MoveToFront(e.elem)
		e.refs++
		d.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			d.unpin([]*entry{e}, false)
			return nil, ctx.Err()
		}
		if e.err != nil {
			d.unpin([]*entry{e}, false)
			return nil, e.err
		}
		return e, nil
	}
	e = &entry{block: b, done: make(chan struct{}), refs: 2} // the cache's and ours
	e.elem = d.lru.PushFront(e)
	d.cache[b] = e
	d.mu.Unlock()

	// The fetch itself does not stop for one reader's ctx: others may wait on it.
	data, err := d.src.read(d.bg, d.m.IDs[b], d.buffer(d.m.BlockLen(b)))
	if err == nil && len(data) != d.m.BlockLen(b) {
		err = fmt.Errorf("chunk %s decodes to %d bytes, not %d: %w", d.m.IDs[b].Short(), len(data), d.m.BlockLen(b), chunk.ErrCorrupt)
	}
	if err != nil {
		err = fmt.Errorf("disk %s: reading the block at offset %d: %w", d.name, int64(b)*int64(d.m.ChunkSize), err)
		if d.opts.Warn != nil && !errors.Is(err, context.Canceled) {
			d.opts.Warn(err.Error())
		}
	}
	d.mu.Lock()
	e.data, e.err = data, err
	close(e.done)
	if err != nil {
		e.refs--  // ours: the error is returned
		d.drop(e) // the next read tries again
	} else {
		d.cached += int64(len(data))
		d.evict()
	}
	d.mu.Unlock()
	if err != nil {
		return nil, ioError{err}
	}
	return e, nil
}

// evict drops the least recently used finished blocks beyond the budget.
func (d *Disk) evict() {
	for el := d.lru.Back(); el != nil && d.cached > d.opts.CacheBytes; {
		prev := el.Prev()
		e := el.Value.(*entry)
		select {
		case <-e.done:
			if e.err == nil {
				d.cached -= int64(len(e.data))
			}
			d.drop(e)
		default: // still being fetched
		}
		el = prev
	}
}

// drop takes e out of the cache, ending the cache's hold on it.
func (d *Disk) drop(e *entry) {
	if d.cache[e.block] == e {
		delete(d.cache, e.block)
	}
	d.lru.Remove(e.elem)
	d.release(e)
}

// ioError is a read failure: to an NBD client it is EIO, whatever the
// cause (a damaged pack, an unreachable store). Its text names the object.
type ioError struct{ err error }

func (e ioError) Error() string { return e.err.Error() }
func (e ioError) Unwrap() []error {
	return []error{e.err, syscall.EIO}
}

// BlockStatus reports the disk's zero blocks as holes that read as zeros
// and the rest as data, from the manifest alone.
func (d *Disk) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	end := min(off+length, d.m.Size)
	var out []nbd.Extent
	cs := int64(d.m.ChunkSize)
	for pos := off; pos < end; {
		b := int(pos / cs)
		next := min((int64(b)+1)*cs, end)
		var flags uint32
		if d.m.IDs[b].IsZero() {
			flags = nbd.StateHole | nbd.StateZero
		}
		if n := len(out); n > 0 && out[n-1].Flags == flags {
			out[n-1].Length += next - pos
		} else {
			out = append(out, nbd.Extent{Offset: pos, Length: next - pos, Flags: flags})
		}
		pos = next
	}
	return out, nil
}

// ErrReadOnly is the error of a write to a Disk: a point never changes.
var ErrReadOnly = fmt.Errorf("a recovery point is read-only: %w", syscall.EROFS)

// WriteAt refuses: a point is read-only (use an Overlay to write).
func (d *Disk) WriteAt(p []byte, off int64) (int, error) { return 0, ErrReadOnly }

// Flush has nothing to do.
func (d *Disk) Flush(ctx context.Context) error { return nil }

// Trim refuses: a point is read-only.
func (d *Disk) Trim(ctx context.Context, off, length int64) error { return ErrReadOnly }

// WriteZeroes refuses: a point is read-only.
func (d *Disk) WriteZeroes(ctx context.Context, off, length int64, noHole bool) error {
	return ErrReadOnly
}
