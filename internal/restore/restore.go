// Package restore writes recovery points back to disks: new sparse images,
// or in place over existing disks, writing only the blocks that differ.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/container"
	"lifeboat/internal/directio"
	"lifeboat/internal/image"
	"lifeboat/internal/indexcache"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

// Target says where one disk of a point goes.
type Target struct {
	Disk recovery.Disk
	Path string
	// InPlace overwrites an existing file or block device of the same size,
	// writing only blocks that differ. Otherwise Path must not exist and is
	// created as a sparse image: written as PartialPath(Path) and renamed
	// to Path once complete and synced.
	InPlace bool
	// Format is the format of a new image: raw (default) or qcow2. In
	// place, the target keeps its own format (qcow2 and the other formats
	// QEMU writes are written through qemu-nbd); a Format given must be it.
	Format string
}

// PartialPath is where a new image is written until it is complete. A
// restore that fails after writing part of it leaves it there, and the
// next restore to the same path resumes it: it reads what is there and
// writes only the blocks that are missing or differ, as in place. Every
// block is compared with its chunk ID, so a partial image of another point,
// or one a crash left unsynced, costs time, never correctness.
func PartialPath(path string) string { return path + ".lifeboat-partial" }

// Options tune a restore.
type Options struct {
	// Progress, if set, is called about every 200 ms and once at the end.
	Progress func(Progress)
	// Warn, if set, receives notices that do not stop the restore.
	Warn func(string)
	// Readers is how many runs are fetched, decoded and written at once;
	// 0 picks 4 per CPU, so that enough direct writes are in flight. Each
	// holds up to two buffers of maxRun (4 MiB).
	Readers int
}

// Progress reports a running restore.
type Progress struct {
	DoneBytes, TotalBytes int64
	Elapsed               time.Duration
	Final                 bool
}

// Stats say what a restore did.
type Stats struct {
	Bytes         int64 `json:"bytes"`            // size of the disks restored
	WrittenBytes  int64 `json:"written_bytes"`    // data written
	FetchedBytes  int64 `json:"fetched_bytes"`    // bytes read from the vault
	UnchangedBlks int64 `json:"unchanged_blocks"` // in place: blocks already right
	ZeroBlocks    int64 `json:"zero_blocks"`
	// RereadChunks were damaged or missing where the index first located
	// them, and read from another copy (verify --read-data names the bad one).
	RereadChunks int64 `json:"reread_chunks,omitempty"`
	DurationMS   int64 `json:"duration_ms"`
}

// ErrInUse means an in-place target is in use: a running VM's image (QEMU
// holds locks on it) or a mounted block device. Writing under it would
// corrupt what the user of the disk sees.
var ErrInUse = errors.New("disk in use")

// checkUnlocked fails if another process holds a lock on any byte of the
// image (source.HeldByOther): a running QEMU, say.
func checkUnlocked(f *os.File) error {
	if source.HeldByOther(f) {
		return fmt.Errorf("is locked by another process (a running QEMU?): stop what uses it first: %w", ErrInUse)
	}
	return nil
}

// ErrDiskWrite marks a failure to read or write a restore target (EIO, no
// space left): the vault is not to blame, and retrying will not help until
// the target is fixed or given room.
var ErrDiskWrite = errors.New("restore target disk error")

// ErrSizeMismatch means an in-place target is not the size of the disk.
var ErrSizeMismatch = errors.New("target size differs from the disk in the recovery point")

const maxRun = 4 << 20

type run struct {
	t      *target
	pack   chunk.ID
	start  int64 // offset in pack
	length int64
	blocks []int
	locs   []chunk.Location
}

type target struct {
	Target
	resume  bool        // a new image resumed from its partial file: compared as in place
	dirty   atomic.Bool // some data was written (a failed new image is kept to resume)
	f       *os.File
	w       *directio.Writer // writes to f, around the page cache where it can
	img     *served          // instead of f and w: an image written through qemu-nbd
	m       *image.Manifest
	regular bool
	pending atomic.Int64  // bytes written since writeback last started
	kick    chan struct{} // asks writeback to start
}

type restorer struct {
	v        *vault.Vault
	warn     func(string)
	reader   *vault.ChunkReader
	fullOnce sync.Once
	full     vault.ChunkIndex
	fullErr  error
	memOnce  sync.Once
	mem      *chunk.Index
	memErr   error
	missWarn sync.Once
	stats    Stats
	done     atomic.Int64
	written  atomic.Int64
	fetched  atomic.Int64
	same     atomic.Int64
	zeros    atomic.Int64
	rescued  atomic.Int64
}

// Run restores the disks named by targets from point p. A new image is
// written under PartialPath and renamed into place once complete and
// synced: a half-written image never looks like a restored disk. If the
// restore fails, a partial image it wrote data into is kept for the next
// restore to resume (opts.Warn says so), one it wrote nothing into is
// removed. In-place targets keep what was written.
func Run(ctx context.Context, v *vault.Vault, p *recovery.Point, targets []Target, opts Options) (_ Stats, err error) {
	start := v.Clock().Now()
	// A read-only vault (a surviving copy, a read-only mount or
	// credentials) is restored from without a marker, with a warning.
	sess, err := v.StartReadSession(ctx, "restore")
	if err != nil {
		return Stats{}, err
	}
	defer sess.End(context.WithoutCancel(ctx))
	plans, err := v.Plans(ctx)
	if err != nil {
		return Stats{}, err
	}
	condemned := vault.CondemnedPacks(plans)
	ix, err := indexcache.Load(ctx, v, func(id chunk.ID) bool { return condemned[id] })
	if err != nil {
		return Stats{}, err
	}
	defer ix.Close()
	r := &restorer{v: v, warn: opts.Warn, reader: v.NewChunkReader(ix)}
	defer func() {
		if c, ok := r.full.(*indexcache.Index); ok && c != ix {
			c.Close()
		}
	}()
	if len(condemned) == 0 {
		r.full = ix
	}
	var ts []*target
	defer func() {
		for _, t := range ts {
			if cerr := t.close(); cerr != nil && err == nil {
				err = cerr
			}
			switch {
			case err == nil || t.InPlace:
			case t.img != nil:
				os.Remove(t.Path) // a new qcow2 image is not resumed: made afresh next time
			case t.dirty.Load() || t.resume:
				if opts.Warn != nil {
					opts.Warn(fmt.Sprintf("disk %s: the partial image is kept as %s: run the same restore again to resume it (or remove it)",
						t.Disk.Name, PartialPath(t.Path)))
				}
			default:
				os.Remove(PartialPath(t.Path))
			}
		}
	}()
	var total int64
	for _, tg := range targets {
		t, err := r.open(ctx, tg)
		if err != nil {
			return Stats{}, err
		}
		ts = append(ts, t)
		total += t.m.Size
	}
	readers := opts.Readers
	if readers == 0 {
		readers = 4 * vault.Workers()
	}
	stop := make(chan struct{})
	var wb sync.WaitGroup // the progress ticker and the writeback goroutines
	if opts.Progress != nil {
		wb.Add(1)
		go func() {
			defer wb.Done()
			tk := time.NewTicker(200 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					opts.Progress(Progress{DoneBytes: r.done.Load(), TotalBytes: total, Elapsed: v.Clock().Now().Sub(start)})
				}
			}
		}()
	}
	for _, t := range ts {
		if t.f == nil {
			continue
		}
		wb.Add(1)
		go func() {
			defer wb.Done()
			t.writeback(stop)
		}()
	}
	err = r.restore(ctx, ts, readers)
	close(stop)
	wb.Wait() // before the files are synced and closed, and the final update
	if err != nil {
		return Stats{}, err
	}
	for _, t := range ts {
		if err := t.sync(ctx); err != nil {
			return Stats{}, fmt.Errorf("syncing %s: %w: %w", t.Path, ErrDiskWrite, err)
		}
		if !t.InPlace && t.img == nil {
			if err := publish(t.Path); err != nil {
				return Stats{}, fmt.Errorf("restoring disk %s: %w: %w", t.Disk.Name, ErrDiskWrite, err)
			}
		}
	}
	st := Stats{Bytes: total, WrittenBytes: r.written.Load(), FetchedBytes: r.fetched.Load(),
		UnchangedBlks: r.same.Load(), ZeroBlocks: r.zeros.Load(), RereadChunks: r.rescued.Load(), DurationMS: v.Clock().Now().Sub(start).Milliseconds()}
	if opts.Progress != nil {
		opts.Progress(Progress{DoneBytes: total, TotalBytes: total, Elapsed: v.Clock().Now().Sub(start), Final: true})
	}
	return st, nil
}

// publish renames a complete new image from its partial path to path,
// never over an existing file, and syncs the directory.
func publish(path string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, PartialPath(path), unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s appeared during the restore: the restored image is left at %s", path, PartialPath(path))
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("renaming %s: %w", PartialPath(path), err)
		}
		// A file system without RENAME_NOREPLACE: a hard link fails if
		// path exists, as the rename must.
		if err := os.Link(PartialPath(path), path); err != nil {
			return fmt.Errorf("linking %s to %s: %w", PartialPath(path), path, err)
		}
		os.Remove(PartialPath(path))
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (r *restorer) open(ctx context.Context, tg Target) (*target, error) {
	m, err := image.Load(ctx, r.v, tg.Disk.Manifest, tg.Disk.Size, tg.Disk.ChunkSize)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", tg.Disk.Name, err)
	}
	t := &target{Target: tg, m: m, kick: make(chan struct{}, 1)}
	if tg.Format != "" && tg.Format != container.Raw && !tg.InPlace {
		if err := t.create(ctx); err != nil {
			return nil, err
		}
		return t, nil
	}
	if tg.InPlace {
		info, err := inPlaceFormat(ctx, tg)
		if err != nil {
			return nil, fmt.Errorf("restoring disk %s in place: %w", tg.Disk.Name, err)
		}
		if info.Format != container.Raw {
			if err := t.serveInPlace(ctx, info); err != nil {
				return nil, err
			}
			return t, nil
		}
	}
	if !tg.InPlace {
		if _, err := os.Lstat(tg.Path); err == nil {
			return nil, fmt.Errorf("restoring disk %s: %s %w: remove it, or use --in-place to revert it", tg.Disk.Name, tg.Path, ErrExists)
		}
		partial := PartialPath(tg.Path)
		f, err := createNew(partial)
		if errors.Is(err, ErrExists) {
			f, err = r.resume(t, partial)
		}
		if err != nil {
			return nil, fmt.Errorf("restoring disk %s: %w: %w", tg.Disk.Name, ErrDiskWrite, err)
		}
		if !t.resume {
			if err := f.Truncate(m.Size); err != nil {
				f.Close()
				return nil, fmt.Errorf("restoring disk %s: sizing %s: %w: %w", tg.Disk.Name, partial, ErrDiskWrite, err)
			}
		}
		t.f, t.regular = f, true
		t.w = directio.NewWriter(f)
		return t, nil
	}
	// A block device opened O_EXCL fails with EBUSY while it is mounted
	// or held (device-mapper, md, another O_EXCL opener).
	flags := os.O_RDWR
	if fi, err := os.Stat(tg.Path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		flags |= unix.O_EXCL
	}
	f, err := os.OpenFile(tg.Path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("restoring disk %s in place: %s is in use (mounted or held by another device): %w", tg.Disk.Name, tg.Path, ErrInUse)
		}
		return nil, fmt.Errorf("restoring disk %s in place: %w: %w", tg.Disk.Name, ErrDiskWrite, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("restoring disk %s in place: %w", tg.Disk.Name, err)
	}
	if st.Mode().IsRegular() {
		if err := checkUnlocked(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("restoring disk %s in place: %s %w", tg.Disk.Name, tg.Path, err)
		}
	}
	t.f, t.regular = f, st.Mode().IsRegular()
	size := st.Size()
	if !t.regular {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("restoring disk %s in place: size of %s: %w", tg.Disk.Name, tg.Path, err)
		}
	}
	if size != m.Size {
		f.Close()
		return nil, fmt.Errorf("restoring disk %s in place: %s is %d bytes, the point's disk is %d: %w",
			tg.Disk.Name, tg.Path, size, m.Size, ErrSizeMismatch)
	}
	t.w = directio.NewWriter(f)
	return t, nil
}

// resume opens the partial image a failed restore left, to be compared
// block by block and completed. One of another size is not this disk's:
// it is started afresh.
func (r *restorer) resume(t *target, partial string) (*os.File, error) {
	f, err := os.OpenFile(partial, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file: remove it", partial)
	}
	if err := checkUnlocked(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s %w", partial, err)
	}
	if st.Size() != t.m.Size {
		if r.warn != nil {
			r.warn(fmt.Sprintf("disk %s: %s is %d bytes, not the %d of this disk: starting it afresh", t.Disk.Name, partial, st.Size(), t.m.Size))
		}
		return f, f.Truncate(0)
	}
	if r.warn != nil {
		r.warn(fmt.Sprintf("disk %s: resuming the partial image %s: writing only the blocks missing or different", t.Disk.Name, partial))
	}
	t.resume = true
	return f, nil
}

// loadFull loads the index with the locations in condemned packs.
func (r *restorer) loadFull(ctx context.Context) (vault.ChunkIndex, error) {
	ix, err := indexcache.Load(ctx, r.v, nil)
	if err != nil {
		return nil, err
	}
	return ix, nil
}

// lookup finds a chunk, falling back to locations in condemned packs.
func (r *restorer) lookup(ctx context.Context, id chunk.ID) (chunk.ID, chunk.Location, error) {
	if pack, loc, ok := r.reader.Index().Lookup(id); ok {
		return pack, loc, nil
	}
	r.fullOnce.Do(func() {
		if r.full == nil {
			r.full, r.fullErr = r.loadFull(ctx)
		}
	})
	if r.fullErr != nil {
		return chunk.ID{}, chunk.Location{}, r.fullErr
	}
	if pack, loc, ok := r.full.Lookup(id); ok {
		return pack, loc, nil
	}
	// The local index cache is not trusted to say a chunk is gone: a
	// restore is the last line, so before failing it asks the vault's own
	// index objects, once, at the cost of loading them all.
	r.memOnce.Do(func() { r.mem, r.memErr = r.v.LoadIndex(ctx, nil) })
	if r.memErr != nil {
		return chunk.ID{}, chunk.Location{}, r.memErr
	}
	if pack, loc, ok := r.mem.Lookup(id); ok {
		if r.warn != nil {
			r.missWarn.Do(func() {
				r.warn(fmt.Sprintf("the local index cache missed chunk %s that the vault's index names: remove the cache directory (%s) if this repeats", id.Short(), r.v.CacheDir()))
			})
		}
		return pack, loc, nil
	}
	return chunk.ID{}, chunk.Location{}, fmt.Errorf("chunk %s is in no index: %w", id, blob.ErrNotExist)
}

// reread reads chunk id from a location other than bad, whose blob
// failed with cause, counting the chunks so rescued.
func (r *restorer) reread(ctx context.Context, id chunk.ID, bad chunk.PackLocation, dst []byte, cause error) ([]byte, error) {
	locs := r.reader.Index().Locations(id)
	r.fullOnce.Do(func() {
		if r.full == nil {
			r.full, r.fullErr = r.loadFull(ctx)
		}
	})
	if r.fullErr == nil && r.full != r.reader.Index() {
		locs = append(locs, r.full.Locations(id)...)
	}
	out, _, err := r.v.ReadBlob(ctx, id, locs, &bad, dst)
	if err != nil {
		return nil, fmt.Errorf("%w (and no other copy: %w)", cause, err)
	}
	r.rescued.Add(1)
	return out, nil
}

func (r *restorer) restore(ctx context.Context, ts []*target, readers int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	runs := make(chan *run, readers*2)
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fb fetchBufs
			for rn := range runs {
				if ctx.Err() != nil {
					continue
				}
				if err := r.fetch(ctx, rn, &fb); err != nil {
					cancel(err)
				}
			}
		}()
	}
	var err error
	for _, t := range ts {
		if err = r.plan(ctx, t, runs); err != nil {
			break
		}
	}
	close(runs)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && err == nil {
		err = cause
	}
	return err
}

// plan decides which blocks of t to write and feeds them as runs of
// blobs contiguous in one pack.
func (r *restorer) plan(ctx context.Context, t *target, runs chan<- *run) error {
	need, err := r.needed(ctx, t)
	if err != nil {
		return err
	}
	if err := t.preallocate(need); err != nil {
		return err
	}
	var cur *run
	flush := func() error {
		if cur == nil {
			return nil
		}
		select {
		case runs <- cur:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		cur = nil
		return nil
	}
	for _, b := range need {
		id := t.m.IDs[b]
		pack, loc, err := r.lookup(ctx, id)
		if err != nil {
			return fmt.Errorf("disk %s block %d: %w", t.Disk.Name, b, err)
		}
		if cur != nil && (cur.pack != pack || cur.start+cur.length != int64(loc.Offset) || cur.length+int64(loc.Length) > maxRun) {
			if err := flush(); err != nil {
				return err
			}
		}
		if cur == nil {
			cur = &run{t: t, pack: pack, start: int64(loc.Offset)}
		}
		cur.length += int64(loc.Length)
		cur.blocks = append(cur.blocks, b)
		cur.locs = append(cur.locs, loc)
	}
	return flush()
}

// needed returns the blocks of t that must be fetched, after handling zero
// blocks. A new image needs every non-zero block; in place, only blocks
// whose current content differs.
func (r *restorer) needed(ctx context.Context, t *target) ([]int, error) {
	var need []int
	if !t.InPlace && !t.resume {
		for b, id := range t.m.IDs {
			if id.IsZero() {
				r.zeros.Add(1)
				r.done.Add(int64(t.m.BlockLen(b)))
			} else {
				need = append(need, b)
			}
		}
		return need, nil
	}
	// In place: compare every block, in parallel.
	var mu sync.Mutex
	blocks := make([]int, len(t.m.IDs))
	for i := range blocks {
		blocks[i] = i
	}
	err := vault.Parallel(ctx, vault.Workers(), blocks, func(ctx context.Context, b int) error {
		n := t.m.BlockLen(b)
		off := int64(b) * int64(t.m.ChunkSize)
		buf := make([]byte, n)
		if err := t.readAt(ctx, buf, off); err != nil {
			return fmt.Errorf("reading %s at offset %d: %w: %w", t.Path, off, ErrDiskWrite, err)
		}
		want := t.m.IDs[b]
		if want.IsZero() {
			r.zeros.Add(1)
			if !chunk.IsZeroBlock(buf) {
				if err := r.zero(ctx, t, off, n); err != nil {
					return err
				}
			} else {
				r.same.Add(1)
			}
			r.done.Add(int64(n))
			return nil
		}
		if r.v.Codec().Hasher().Sum(buf) == want {
			r.same.Add(1)
			r.done.Add(int64(n))
			return nil
		}
		mu.Lock()
		need = append(need, b)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(need)
	return need, nil
}

func (r *restorer) zero(ctx context.Context, t *target, off int64, n int) error {
	if t.img != nil {
		if err := t.img.c.WriteZeroes(ctx, off, int64(n), 0); err != nil {
			return fmt.Errorf("writing zeros to %s at offset %d: %w", t.Path, off, err)
		}
		r.written.Add(int64(n))
		return nil
	}
	if t.regular {
		err := unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(n))
		if err == nil {
			r.written.Add(int64(n))
			t.dirty.Store(true)
			return nil
		}
	}
	if _, err := t.w.WriteAt(directio.Alloc(n), off); err != nil {
		return fmt.Errorf("writing zeros to %s at offset %d: %w: %w", t.f.Name(), off, ErrDiskWrite, err)
	}
	r.written.Add(int64(n))
	t.dirty.Store(true)
	return nil
}

// fetchBufs are one reader's reusable buffers.
type fetchBufs struct {
	packed []byte // the run's sealed blobs, as read
	out    []byte // decoded blocks waiting to be written as one range
}

func (r *restorer) fetch(ctx context.Context, rn *run, fb *fetchBufs) error {
	name := chunk.PackName(rn.pack)
	if _, into := r.v.Store().(blob.RangeReaderInto); into && cap(fb.packed) < maxRun {
		// Sized once for the largest run (a run stops before maxRun, or
		// is one blob), so that it is not reallocated as runs grow.
		fb.packed = make([]byte, 0, max(maxRun, rn.t.m.ChunkSize+1<<16))
	}
	data, err := blob.ReadRange(ctx, r.v.Store(), name, rn.start, rn.length, fb.packed)
	switch {
	case blob.IsNotExist(err):
		data = nil // every block is read from another location, if it has one
	case err != nil:
		return fmt.Errorf("restoring disk %s: reading %s: %w", rn.t.Disk.Name, name, err)
	default:
		fb.packed = data
	}
	r.fetched.Add(rn.length)
	t := rn.t
	cs := int64(t.m.ChunkSize)
	// Blocks that follow each other on the disk are written with one call.
	var outOff int64
	if cap(fb.out) < max(maxRun, t.m.ChunkSize) {
		// Aligned, and never outgrown (runs are flushed before maxRun, and
		// a block is at most a chunk), so that the writes can bypass the
		// page cache.
		fb.out = directio.Alloc(max(maxRun, t.m.ChunkSize))
	}
	out := fb.out[:0]
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		if err := t.writeAt(ctx, out, outOff); err != nil {
			return fmt.Errorf("writing %s at offset %d: %w: %w", t.Path, outOff, ErrDiskWrite, err)
		}
		t.dirty.Store(true)
		r.written.Add(int64(len(out)))
		r.done.Add(int64(len(out)))
		t.wrote(int64(len(out)))
		out = out[:0]
		return nil
	}
	for i, b := range rn.blocks {
		loc := rn.locs[i]
		rel := int64(loc.Offset) - rn.start
		id := t.m.IDs[b]
		n := t.m.BlockLen(b)
		off := int64(b) * cs
		if len(out) > 0 && (outOff+int64(len(out)) != off || len(out)+n > cap(out)) {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(out) == 0 {
			outOff = off
		}
		// Decoded straight into its place in out: no copy of the plaintext.
		// The slice's capacity is exactly the block's slot, so that no
		// decoder can write past it into the next one (a longer output
		// is reallocated by the decoder and then fails the length check).
		slot := out[len(out) : len(out) : len(out)+n]
		var block []byte
		if data != nil {
			block, err = r.v.Codec().DecodeBlob(slot, id, data[rel:rel+int64(loc.Length)], int(loc.RawLength))
		} else {
			err = fmt.Errorf("%s: %w", name, blob.ErrNotExist)
		}
		if err != nil {
			// A chunk stored more than once is read from another location.
			if block, err = r.reread(ctx, id, chunk.PackLocation{Pack: rn.pack, Loc: loc}, slot, err); err != nil {
				return fmt.Errorf("restoring disk %s block %d: %s: %w", t.Disk.Name, b, name, err)
			}
		}
		if len(block) != n {
			return fmt.Errorf("restoring disk %s block %d: chunk is %d bytes, block is %d: %w",
				t.Disk.Name, b, len(block), n, chunk.ErrCorrupt)
		}
		if &block[0] != &out[:len(out)+1][len(out)] {
			copy(out[len(out):len(out)+n], block) // the codec could not decode in place
		}
		out = out[:len(out)+n]
	}
	err = flush()
	fb.out = out
	return err
}

// writebackEvery is how many bytes a new image gets between requests to
// the kernel to start writing it back, so that the final fsync finds
// little left to do and disk writes overlap decoding.
const writebackEvery = 64 << 20

// wrote counts bytes written to t and starts writeback every
// writebackEvery bytes (sync_file_range: asynchronous, no waiting).
func (t *target) wrote(n int64) {
	if t.pending.Add(n) < writebackEvery {
		return
	}
	t.pending.Store(0)
	select {
	case t.kick <- struct{}{}:
	default: // one already queued
	}
}

// writeback runs beside the restore of t until stop closes.
func (t *target) writeback(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-t.kick:
			unix.SyncFileRange(int(t.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		}
	}
}

// preallocate reserves the blocks about to be written to a new image, in
// runs of adjacent blocks, as unwritten extents. Two reasons: a file
// system that is too full fails now, before anything is written, rather
// than part way; and direct writes into space already allocated are
// overwrites, which ext4 (Linux 6.3 and later) runs in parallel under a
// shared inode lock, where writes into holes allocate and are serialised
// under an exclusive one. File systems without fallocate are written as
// they are.
//
// In-place targets are not preallocated: their blocks mostly hold data
// already, and some file systems (XFS) reserve space for a whole range
// before looking at what is allocated, so a revert of pure overwrites
// could fail for want of space it does not need.
func (t *target) preallocate(blocks []int) error {
	if !t.regular || t.f == nil || t.InPlace || t.resume || len(blocks) == 0 {
		return nil
	}
	cs := int64(t.m.ChunkSize)
	var need int64
	for _, b := range blocks {
		need += int64(t.m.BlockLen(b))
	}
	fd := int(t.f.Fd())
	first := true
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j] == blocks[j-1]+1 {
			j++
		}
		off := int64(blocks[i]) * cs
		end := min(int64(blocks[j-1]+1)*cs, t.m.Size)
		i = j
		err := unix.Fallocate(fd, 0, off, end-off)
		switch {
		case err == nil:
		case first && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)):
			return nil // not supported here: the writes allocate as they go
		case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
			return fmt.Errorf("restoring disk %s: not enough space on the file system of %s for its %d bytes of data: %w: %w",
				t.Disk.Name, t.Path, need, ErrDiskWrite, err)
		default:
			return fmt.Errorf("restoring disk %s: allocating %d bytes in %s at offset %d: %w: %w", t.Disk.Name, end-off, t.Path, off, ErrDiskWrite, err)
		}
		first = false
	}
	return nil
}
