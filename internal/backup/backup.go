// Package backup writes recovery points: it reads every disk of a machine,
// stores the chunks the vault lacks and commits the point last
// (docs/format.md, "Write ordering").
package backup

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/indexcache"
	"lifeboat/internal/lastseen"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

// Disk is one disk to back up.
type Disk struct {
	Name   string
	Source source.Disk
	// Changed, when set, comes from change tracking (a dirty bitmap): only
	// these extents may differ from the disk in point Changed.Since. It is
	// used only when Since is the machine's latest point and the disk has
	// the same size there; otherwise every block is read and compared.
	Changed *Changes
	// Tracking is recorded in the point: the change tracker that started
	// at this backup's instant (recovery.Disk.Tracking).
	Tracking string
	// Image, Format and Backing are recorded in the point
	// (recovery.Disk.Image, Format, Backing): the local image file holding
	// the disk, its container format ("raw", "qcow2", ...; empty when
	// unknown) and its backing chain. Source reads the guest's view, never
	// the container's bytes. Empty Image: the absolute form of Source's
	// name when that is a local path.
	Image, Format string
	Backing       []string
}

// imageOf is the absolute path of the local file behind a disk, or "".
func imageOf(d Disk) string {
	if d.Image != "" {
		return d.Image
	}
	src := d.Source.Source()
	if !recovery.LocalSource(src) {
		return ""
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return ""
	}
	return abs
}

// Changes are the extents a change tracker saw written since a point.
type Changes struct {
	Since   string // full ID of the point the tracking started at
	Extents []source.Extent
	// Source is the disk's change source recorded when the extents are
	// used ("tracking" when empty; "replica" for a replication journal).
	Source string
}

// Options describe one backup.
type Options struct {
	Machine     string
	Disks       []Disk
	Definition  json.RawMessage // nil: a minimal one is recorded
	Consistency recovery.Consistency
	Tags        []string
	// Progress, if set, is called about every 200 ms and once at the end.
	Progress func(Progress)
	// Warn, if set, receives notices that do not stop the backup.
	Warn func(string)
	// Audit is the fraction (0..1) of blocks that change tracking calls
	// unchanged to re-read and compare with the parent before trusting it.
	// A mismatch discards the tracking for that disk: the backup then
	// reads every block. 0 audits nothing.
	Audit float64
	// Notes are recorded in the point (recovery.Point.Notes).
	Notes []string
	// Precommit, if set, is called once every chunk is stored and before
	// the point is committed; an error abandons the point (a freeze that
	// ran out of time, say).
	Precommit func() error
	// Seen, if set, is this host's record of the newest points seen: the
	// backup warns when one has vanished, and records its own point.
	Seen *lastseen.Book
	// Time, if set, is the instant the disks show (a replica's cut copied
	// into the vault), recorded as the point's time; otherwise the
	// backup's start.
	Time time.Time
}

// Progress reports a running backup.
type Progress struct {
	Disk        string
	DoneBytes   int64 // bytes of disk covered so far, all disks
	TotalBytes  int64
	NewBytes    int64 // plaintext of new chunks
	StoredBytes int64 // packs uploaded
	Elapsed     time.Duration
	Final       bool
}

// ErrDiskChanged means a disk changed size while it was read.
var ErrDiskChanged = errors.New("disk changed size during the backup")

// ErrDiskRead marks a failure to read a source disk (EIO, a broken NBD
// connection): the vault's storage is not to blame, and retrying the
// backup will not help until the disk is fixed.
var ErrDiskRead = errors.New("source disk unreadable")

type job struct {
	disk  int
	block int
	buf   []byte // nil for a block known to be a hole
	n     int
}

type diskState struct {
	d        Disk
	manifest *image.Manifest
	parent   *image.Manifest
	// dirty is set when change tracking is trusted: block b must be read
	// only if dirty[b]; the others are the parent's.
	dirty []bool
	// parentHeld[b] says the parent's chunk of block b is still in the
	// vault (not only in a pack a prune plan condemns).
	parentHeld   []bool
	changeSource string
	stats        recovery.DiskStats
	mu           sync.Mutex
}

// Run backs up opts.Disks into v and returns the committed point.
func Run(ctx context.Context, v *vault.Vault, opts Options) (*recovery.Point, error) {
	start := v.Clock().Now()
	if err := recovery.ValidName("machine", opts.Machine); err != nil {
		return nil, err
	}
	if len(opts.Disks) == 0 {
		return nil, errors.New("no disks to back up")
	}
	seen := map[string]bool{}
	var names, formats []string
	for _, d := range opts.Disks {
		if err := recovery.ValidName("disk", d.Name); err != nil {
			return nil, err
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("disk name %q given twice", d.Name)
		}
		seen[d.Name] = true
		names = append(names, d.Name)
		formats = append(formats, d.Format)
	}
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	var defDisks []recovery.DefinitionDisk
	if opts.Definition == nil {
		opts.Definition = recovery.DefaultDefinition(opts.Machine, names, formats)
	} else {
		def, err := recovery.ParseDefinition(opts.Definition)
		if err != nil {
			return nil, err
		}
		defDisks = def.Disks
		for _, d := range opts.Disks {
			if f := def.DiskFormat(names, d.Name); d.Format != "" && f != "" && d.Format != f {
				warn(fmt.Sprintf("disk %s: the definition says format %s, but it is a %s image: a restore writes %s by default (--format overrides)",
					d.Name, f, d.Format, f))
			}
		}
	}
	if opts.Consistency == "" {
		opts.Consistency = recovery.Crash
	}
	// Restore pairs definition and point disks the same way: say now,
	// while the machine is at hand, where they disagree.
	if w := recovery.MatchDisks(defDisks, names).Disagreement(); w != "" {
		warn(w + ": restore pairs them the same way; name the disks alike (--disk NAME=PATH, or the definition's names) to be sure")
	}

	// 1. Session marker, before reading plans and index.
	sess, err := v.StartSession(ctx, "backup")
	if err != nil {
		return nil, err
	}
	// A failed run leaves its marker marked abandoned: the packs it stored
	// without an index are adopted by the next run.
	defer sess.Finish(context.WithoutCancel(ctx))

	// The machine's points and its latest point's manifests are read while
	// the index loads: neither needs the other.
	parents := make(chan parentView, 1)
	go func() { parents <- loadParent(ctx, v, opts.Machine, names) }()

	// 2-3. Index without condemned packs; orphans adopted if a session
	// died or failed since the last adoption.
	plans, err := v.Plans(ctx)
	if err != nil {
		return nil, err
	}
	condemned := vault.CondemnedPacks(plans)
	skip := func(id chunk.ID) bool { return condemned[id] }
	ix, err := indexcache.Load(ctx, v, skip)
	if err != nil {
		return nil, err
	}
	defer ix.Close()
	if _, err := v.AdoptAfterDeadSessions(ctx, ix, skip); err != nil {
		return nil, err
	}

	pv := <-parents
	if pv.err != nil {
		return nil, pv.err
	}
	for _, w := range opts.Seen.CheckPoints(v.Config().ID, pv.points, v.Clock().Now()) {
		warn(w)
	}
	parent := pv.parent
	states := make([]*diskState, len(opts.Disks))
	var total int64
	for i, d := range opts.Disks {
		var pd *recovery.Disk
		if parent != nil {
			pd, _ = parent.Disk(d.Name)
		}
		cs := DiskChunkSize(d.Source.Size(), d.Tracking != "", pd, v.Config().ChunkSize)
		st := &diskState{d: d, manifest: image.NewManifest(d.Source.Size(), cs)}
		total += d.Source.Size()
		if pd != nil {
			pm := pv.manifests[d.Name]
			if pm.Size != d.Source.Size() {
				warn(fmt.Sprintf("disk %s is %d bytes, was %d in point %s: blocks are compared by position up to the smaller size",
					d.Name, d.Source.Size(), pm.Size, parent.ID.Short()))
			}
			if pm.ChunkSize == cs {
				st.parent = pm
			}
		}
		st.changeSource = "full"
		if st.parent != nil {
			st.changeSource = "compare"
		}
		if d.Changed != nil {
			if why := trackingUnusable(d, parent, st.parent); why != "" {
				warn(fmt.Sprintf("disk %s: change tracking not used (%s): reading every block and comparing with the parent point", d.Name, why))
			} else {
				st.dirty = dirtyBlocks(d.Changed.Extents, len(st.manifest.IDs), int64(cs))
				st.changeSource = cmp.Or(d.Changed.Source, "tracking")
			}
		}
		states[i] = st
	}

	for _, st := range states {
		if st.parent != nil {
			st.parentHeld = held(ix, st.parent.IDs)
		}
	}
	packer := v.NewPacker(ctx, ix, sess)
	e := &engine{v: v, ix: ix, packer: packer, states: states, inflight: map[chunk.ID]bool{}}
	if opts.Audit > 0 {
		for _, st := range states {
			if st.dirty == nil {
				continue
			}
			if err := e.audit(ctx, st, opts.Audit); err != nil {
				if !errors.Is(err, errAuditMismatch) {
					packer.Abort()
					return nil, err
				}
				warn(err.Error())
				st.dirty, st.changeSource = nil, "compare"
			}
		}
	}
	if n, ok := mostToStore(states); ok {
		packer.ExpectAtMost(n)
	}
	progressDone := make(chan struct{})
	var ticker sync.WaitGroup
	if opts.Progress != nil {
		ticker.Add(1)
		go func() {
			defer ticker.Done()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-progressDone:
					return
				case <-t.C:
					opts.Progress(e.progress(total, v.Clock().Now().Sub(start), false))
				}
			}
		}()
	}
	err = e.run(ctx)
	close(progressDone)
	// No update may run beside or after the final one.
	ticker.Wait()
	if err != nil {
		packer.Abort()
		return nil, err
	}
	// 5-6. The last packs and their index, and the manifests, at once: both
	// only need to be stored before the point (docs/format.md, "Write
	// ordering"), and a live incremental's end would otherwise wait for
	// their syncs one after the other.
	manifests := make([]chunk.ID, len(states))
	var saving sync.WaitGroup
	var saveErr error
	saving.Go(func() {
		for i, st := range states {
			if manifests[i], saveErr = image.Save(ctx, v, st.manifest); saveErr != nil {
				return
			}
		}
	})
	err = packer.Close()
	saving.Wait()
	if err != nil {
		return nil, err
	}
	if saveErr != nil {
		return nil, saveErr
	}
	if opts.Precommit != nil {
		if err := opts.Precommit(); err != nil {
			return nil, err
		}
	}
	p := &recovery.Point{Machine: opts.Machine, Time: cmp.Or(opts.Time, start).UTC(), Consistency: opts.Consistency, Host: v.Host(),
		Tags: opts.Tags, Definition: opts.Definition, Notes: opts.Notes}
	if parent != nil {
		p.Parent = parent.ID.String()
	}
	for i, st := range states {
		p.Disks = append(p.Disks, recovery.Disk{Name: st.d.Name, Source: st.d.Source.Source(), Size: st.manifest.Size,
			ChunkSize: st.manifest.ChunkSize, Manifest: manifests[i], Stats: st.stats, Tracking: st.d.Tracking, ChangeSource: st.changeSource,
			Image: imageOf(st.d), Format: st.d.Format, Backing: st.d.Backing})
	}
	p.Stats = recovery.Stats{DurationMS: v.Clock().Now().Sub(start).Milliseconds(),
		StoredBytes: packer.StoredBytes.Load(), Packs: packer.Packs.Load()}
	// In a vault with an object lock, the older packs this point shares
	// are locked anew before it is committed.
	var chunks [][]chunk.ID
	for _, st := range states {
		chunks = append(chunks, st.manifest.IDs)
	}
	if err := v.ExtendChunkLocks(ctx, ix, nil, chunks...); err != nil {
		return nil, err
	}
	// 7. The point: committed.
	if err := recovery.Save(ctx, v, p); err != nil {
		return nil, err
	}
	if err := opts.Seen.Saw(v.Config().ID, []*recovery.Point{p}, v.Clock().Now()); err != nil {
		warn(err.Error())
	}
	if opts.Progress != nil {
		pr := e.progress(total, v.Clock().Now().Sub(start), true)
		opts.Progress(pr)
	}
	return p, nil
}

// parentView is what a backup knows of the machine's past: the vault's
// points, the machine's latest (the parent, nil for none) and the
// manifests of its disks that this backup has, by name.
type parentView struct {
	points    []*recovery.Point
	parent    *recovery.Point
	manifests map[string]*image.Manifest
	err       error
}

func loadParent(ctx context.Context, v *vault.Vault, machine string, disks []string) parentView {
	points, err := recovery.List(ctx, v)
	if err != nil {
		return parentView{err: err}
	}
	pv := parentView{points: points, manifests: map[string]*image.Manifest{}}
	if p, err := recovery.Find(points, machine, "latest"); err == nil {
		pv.parent = p
	}
	if pv.parent == nil {
		return pv
	}
	for _, name := range disks {
		pd, ok := pv.parent.Disk(name)
		if !ok {
			continue
		}
		pm, err := image.Load(ctx, v, pd.Manifest, pd.Size, pd.ChunkSize)
		if err != nil {
			return parentView{err: fmt.Errorf("loading parent point %s disk %s: %w", pv.parent.ID.Short(), name, err)}
		}
		pv.manifests[name] = pm
	}
	return pv
}

type engine struct {
	v      *vault.Vault
	ix     vault.ChunkIndex
	packer *vault.Packer
	states []*diskState

	mu       sync.Mutex
	inflight map[chunk.ID]bool

	done, newBytes atomic.Int64
}

func (e *engine) progress(total int64, elapsed time.Duration, final bool) Progress {
	return Progress{DoneBytes: e.done.Load(), TotalBytes: total, NewBytes: e.newBytes.Load(),
		StoredBytes: e.packer.StoredBytes.Load(), Elapsed: elapsed, Final: final}
}

// claim reports whether the caller must store chunk id: it is not in the
// vault and no other worker is storing it.
func (e *engine) claim(id chunk.ID) bool {
	if e.ix.Has(id) {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inflight[id] {
		return false
	}
	e.inflight[id] = true
	return true
}

// readers is the size of the read pool: the most reads any disk wants in
// flight, or 0 when every disk is read in order.
func (e *engine) readers() int {
	n := 0
	for _, st := range e.states {
		if r := readersFor(st.d.Source); r > 1 {
			n = max(n, r)
		}
	}
	return n
}

func (e *engine) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// One worker more than there are cores: a worker spends most of its time
	// in libzstd (cgo), which gives up its P, so the extra one keeps both cores
	// busy with hashing and sealing while the others compress.
	workers := vault.Workers() + 1
	cs := 0 // the largest chunk size of the disks
	for _, st := range e.states {
		cs = max(cs, st.manifest.ChunkSize)
	}
	// A fixed set of buffers bounds memory whatever the disk size.
	free := make(chan []byte, workers*4+e.readers())
	for i := 0; i < cap(free); i++ {
		free <- make([]byte, cs)
	}
	jobs := make(chan job, workers*2)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var scratch []byte
			for j := range jobs {
				if ctx.Err() == nil {
					var err error
					scratch, err = e.process(j, scratch)
					if err != nil {
						cancel(err)
					}
				}
				if j.buf != nil {
					free <- j.buf
				}
			}
		}()
	}
	err := e.read(ctx, jobs, free)
	close(jobs)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && err == nil {
		err = cause
	}
	return err
}

// ConcurrentReader is implemented by disk sources that read faster with
// several reads in flight (network block devices): ReadersWanted says how
// many. Other sources are read by one goroutine, in order.
type ConcurrentReader interface {
	ReadersWanted() int
}

// ContextReader is implemented by disk sources whose reads can hang (a
// stalled network block device): ReadAtContext returns once ctx ends, so
// that a cancelled backup stops at once. Other sources are read with
// ReadAt.
type ContextReader interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// readAt reads from d, stopping when ctx ends if d can.
func readAt(ctx context.Context, d source.Disk, p []byte, off int64) (int, error) {
	if cr, ok := d.(ContextReader); ok {
		return cr.ReadAtContext(ctx, p, off)
	}
	return d.ReadAt(p, off)
}

// maxReaders bounds the reads in flight on one disk.
const maxReaders = 16

func readersFor(d source.Disk) int {
	if c, ok := d.(ConcurrentReader); ok {
		return min(max(c.ReadersWanted(), 1), maxReaders)
	}
	return 1
}

type readReq struct {
	disk, block int
	off         int64
	n           int
	buf         []byte
}

// read walks every disk in order and hands blocks to the workers.
func (e *engine) read(ctx context.Context, jobs chan<- job, free chan []byte) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Reads run here, or in a pool for sources that want reads in flight.
	var wg sync.WaitGroup
	var reqs chan readReq
	defer func() {
		if reqs != nil {
			close(reqs)
		}
		wg.Wait()
		if cause := context.Cause(ctx); err == nil && cause != nil && cause != context.Canceled {
			err = cause
		}
	}()
	readOne := func(r readReq) error {
		st := e.states[r.disk]
		src := st.d.Source
		got, err := readAt(ctx, src, r.buf[:r.n], r.off)
		if got < r.n {
			free <- r.buf
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err == io.EOF || err == nil {
				return fmt.Errorf("disk %s (%s): %w: short read at offset %d", st.d.Name, src.Source(), ErrDiskChanged, r.off)
			}
			return fmt.Errorf("reading disk %s (%s) at offset %d: %w: %w", st.d.Name, src.Source(), r.off, ErrDiskRead, err)
		}
		select {
		case jobs <- job{disk: r.disk, block: r.block, buf: r.buf, n: r.n}:
			return nil
		case <-ctx.Done():
			free <- r.buf
			return context.Cause(ctx)
		}
	}
	if n := e.readers(); n > 0 {
		reqs = make(chan readReq)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range reqs {
					if ctx.Err() != nil {
						free <- r.buf
						continue
					}
					if err := readOne(r); err != nil {
						cancel(err)
					}
				}
			}()
		}
	}
	for di, st := range e.states {
		src := st.d.Source
		parallel := readersFor(src) > 1
		extents, known, err := src.DataExtents(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			return fmt.Errorf("disk %s: %w: %w", st.d.Name, ErrDiskRead, err)
		}
		m := st.manifest
		cs := int64(m.ChunkSize)
		ext := 0
		for b := 0; b < len(m.IDs); b++ {
			off := int64(b) * cs
			n := m.BlockLen(b)
			if st.dirty != nil && !st.dirty[b] && e.unchanged(st, b) {
				continue
			}
			if known {
				for ext < len(extents) && extents[ext].Offset+extents[ext].Length <= off {
					ext++
				}
				if ext == len(extents) || extents[ext].Offset >= off+int64(n) {
					select {
					case jobs <- job{disk: di, block: b, n: n}:
					case <-ctx.Done():
						return context.Cause(ctx)
					}
					continue
				}
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			r := readReq{disk: di, block: b, off: off, n: n, buf: buf}
			if !parallel {
				if err := readOne(r); err != nil {
					return err
				}
				continue
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				free <- buf
				return context.Cause(ctx)
			}
		}
	}
	return nil
}

func (e *engine) process(j job, scratch []byte) ([]byte, error) {
	st := e.states[j.disk]
	defer e.done.Add(int64(j.n))
	if j.buf == nil || chunk.IsZeroBlock(j.buf[:j.n]) {
		st.mu.Lock()
		st.stats.ZeroChunks++
		if j.buf != nil {
			st.stats.ReadBytes += int64(j.n)
		}
		st.mu.Unlock()
		return scratch, nil // manifest entry stays chunk.Zero
	}
	data := j.buf[:j.n]
	id := e.v.Codec().Hasher().Sum(data)
	st.manifest.IDs[j.block] = id
	// A parent's chunk counts only while the index still holds it (a prune
	// plan may have condemned its pack).
	fromParent := st.parent != nil && j.block < len(st.parent.IDs) && st.parent.IDs[j.block] == id && st.parentHeld[j.block]
	store := !fromParent && e.claim(id)
	if store {
		// Sealed straight into its place in the pack: the block is copied
		// once, and encrypted there.
		var blob chunk.Blob
		blob, scratch = e.v.Codec().PrepareBlob(data, scratch)
		if err := e.packer.AddBlob(id, blob.SealedLen(), j.n, func(dst []byte) { e.v.Codec().SealBlob(dst, id, blob) }); err != nil {
			return scratch, err
		}
		e.newBytes.Add(int64(j.n))
	}
	st.mu.Lock()
	st.stats.ReadBytes += int64(j.n)
	switch {
	case fromParent:
		st.stats.ParentChunks++
	case store:
		st.stats.NewChunks++
		st.stats.NewBytes += int64(j.n)
	default:
		st.stats.DedupChunks++
	}
	st.mu.Unlock()
	return scratch, nil
}

// held looks up, once each, the chunks of a parent manifest (in the
// order of their IDs, so that an index on disk is read in order, on
// every core) and reports for each block whether its chunk is in the
// vault. Zero blocks are held. The machine's previous point is thus the
// first place a backup looks: an unchanged block costs no lookup of its own.
func held(ix vault.ChunkIndex, ids []chunk.ID) []bool {
	out := make([]bool, len(ids))
	order := make([]uint32, 0, len(ids))
	for b, id := range ids {
		if id.IsZero() {
			out[b] = true
		} else {
			order = append(order, uint32(b))
		}
	}
	slices.SortFunc(order, func(a, b uint32) int { return bytes.Compare(ids[a][:], ids[b][:]) })
	n := vault.Workers()
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		part := order[w*len(order)/n : (w+1)*len(order)/n]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, b := range part {
				if i > 0 && ids[b] == ids[part[i-1]] {
					out[b] = out[part[i-1]]
					continue
				}
				out[b] = ix.Has(ids[b])
			}
		}()
	}
	wg.Wait()
	return out
}

// trackingUnusable says why a disk's change tracking cannot be trusted for
// this backup, or "" when it can.
func trackingUnusable(d Disk, parent *recovery.Point, pm *image.Manifest) string {
	switch {
	case parent == nil:
		return "the machine has no earlier point"
	case parent.ID.String() != d.Changed.Since:
		return fmt.Sprintf("it started at point %.12s, but the machine's latest point is %s", d.Changed.Since, parent.ID.Short())
	case pm == nil:
		return fmt.Sprintf("point %s has no comparable copy of the disk", parent.ID.Short())
	case pm.Size != d.Source.Size():
		return fmt.Sprintf("the disk is %d bytes, was %d in point %s", d.Source.Size(), pm.Size, parent.ID.Short())
	}
	for _, x := range d.Changed.Extents {
		if x.Offset < 0 || x.Length < 0 || x.Offset+x.Length > d.Source.Size() {
			return fmt.Sprintf("extent %d+%d lies outside the %d-byte disk", x.Offset, x.Length, d.Source.Size())
		}
	}
	return ""
}

// mostToStore is the most bytes of sealed blobs a backup of tracked
// disks can store: its dirty blocks, sealed. ok is false when a disk is
// not tracked (any block may be new).
func mostToStore(states []*diskState) (n int64, ok bool) {
	for _, st := range states {
		if st.dirty == nil {
			return 0, false
		}
		for b, d := range st.dirty {
			if d || !st.parentHeld[b] {
				n += int64(st.manifest.BlockLen(b)) + sealOverhead
			}
		}
	}
	return n, true
}

// sealOverhead is more than sealing adds to a block (an encoding byte, a
// data key generation tag, a nonce and an authentication tag).
const sealOverhead = 64

// dirtyBlocks marks the blocks any extent touches.
func dirtyBlocks(extents []source.Extent, blocks int, cs int64) []bool {
	dirty := make([]bool, blocks)
	for _, x := range extents {
		if x.Length <= 0 {
			continue
		}
		last := (x.Offset + x.Length - 1) / cs
		for b := x.Offset / cs; b <= last && b < int64(blocks); b++ {
			dirty[b] = true
		}
	}
	return dirty
}

// unchanged records block b of a tracked disk as the parent's, when the
// parent's chunk is still in the vault, and reports whether it did.
func (e *engine) unchanged(st *diskState, b int) bool {
	id := st.parent.IDs[b]
	if !st.parentHeld[b] {
		return false // condemned by a prune plan: read it again
	}
	st.manifest.IDs[b] = id
	n := int64(st.manifest.BlockLen(b))
	st.mu.Lock()
	st.stats.TrackedChunks++
	st.mu.Unlock()
	e.done.Add(n)
	return true
}

var errAuditMismatch = errors.New("change tracking audit failed")

// audit re-reads a random sample of the blocks change tracking calls
// unchanged and checks they still hash to the parent's chunk.
func (e *engine) audit(ctx context.Context, st *diskState, fraction float64) error {
	nclean := 0
	for _, d := range st.dirty {
		if !d {
			nclean++
		}
	}
	if nclean == 0 {
		return nil
	}
	n := min(int(math.Ceil(fraction*float64(nclean))), nclean)
	// Reservoir sampling: memory for the sample only, whatever the disk.
	sample := make([]int, 0, n)
	seen := 0
	for b, d := range st.dirty {
		if d {
			continue
		}
		if len(sample) < n {
			sample = append(sample, b)
		} else if j := rand.IntN(seen + 1); j < n {
			sample[j] = b
		}
		seen++
	}
	slices.Sort(sample)
	cs := int64(st.manifest.ChunkSize)
	var audited atomic.Int64
	err := vault.Parallel(ctx, vault.Workers(), sample, func(ctx context.Context, b int) error {
		buf := make([]byte, st.manifest.BlockLen(b))
		if _, err := readAt(ctx, st.d.Source, buf, int64(b)*cs); err != nil {
			return fmt.Errorf("disk %s: audit read at offset %d: %w: %w", st.d.Name, int64(b)*cs, ErrDiskRead, err)
		}
		audited.Add(1)
		got := chunk.Zero
		if !chunk.IsZeroBlock(buf) {
			got = e.v.Codec().Hasher().Sum(buf)
		}
		if got != st.parent.IDs[b] {
			return fmt.Errorf("disk %s: %w: block at offset %d changed but the dirty bitmap does not show it: not trusting it, reading every block",
				st.d.Name, errAuditMismatch, int64(b)*cs)
		}
		return nil
	})
	st.stats.AuditedChunks = audited.Load()
	return err
}
