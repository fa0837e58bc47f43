// Package backup writes recovery points: it reads every disk of a machine,
// stores the chunks the vault lacks and commits the point last
// (docs/format.md, "Write ordering").
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

// Disk is one disk to back up.
type Disk struct {
	Name   string
	Source source.Disk
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
	stats    recovery.DiskStats
	mu       sync.Mutex
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
	var names []string
	for _, d := range opts.Disks {
		if err := recovery.ValidName("disk", d.Name); err != nil {
			return nil, err
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("disk name %q given twice", d.Name)
		}
		seen[d.Name] = true
		names = append(names, d.Name)
	}
	if opts.Definition == nil {
		opts.Definition = recovery.DefaultDefinition(opts.Machine, names)
	} else if _, err := recovery.ParseDefinition(opts.Definition); err != nil {
		return nil, err
	}
	if opts.Consistency == "" {
		opts.Consistency = recovery.Crash
	}
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}

	// 1. Session marker, before reading plans and index.
	sess, err := v.StartSession(ctx, "backup")
	if err != nil {
		return nil, err
	}
	defer sess.End(context.WithoutCancel(ctx))

	// 2-3. Index without condemned packs, orphans adopted.
	plans, err := v.Plans(ctx)
	if err != nil {
		return nil, err
	}
	condemned := vault.CondemnedPacks(plans)
	skip := func(id chunk.ID) bool { return condemned[id] }
	ix, err := v.LoadIndex(ctx, skip)
	if err != nil {
		return nil, err
	}
	if _, err := v.AdoptOrphans(ctx, ix, skip); err != nil {
		return nil, err
	}

	// The parent is the machine's latest point.
	points, err := recovery.List(ctx, v)
	if err != nil {
		return nil, err
	}
	var parent *recovery.Point
	if p, err := recovery.Find(points, opts.Machine, "latest"); err == nil {
		parent = p
	}
	cs := v.Config().ChunkSize
	states := make([]*diskState, len(opts.Disks))
	var total int64
	for i, d := range opts.Disks {
		st := &diskState{d: d, manifest: image.NewManifest(d.Source.Size(), cs)}
		total += d.Source.Size()
		if parent != nil {
			if pd, ok := parent.Disk(d.Name); ok {
				pm, err := image.Load(ctx, v, pd.Manifest)
				if err != nil {
					return nil, fmt.Errorf("loading parent point %s disk %s: %w", parent.ID.Short(), d.Name, err)
				}
				if pm.Size != d.Source.Size() {
					warn(fmt.Sprintf("disk %s is %d bytes, was %d in point %s: blocks are compared by position up to the smaller size",
						d.Name, d.Source.Size(), pm.Size, parent.ID.Short()))
				}
				if pm.ChunkSize == cs {
					st.parent = pm
				}
			}
		}
		states[i] = st
	}

	packer := v.NewPacker(ctx, ix)
	e := &engine{v: v, ix: ix, packer: packer, states: states, inflight: map[chunk.ID]bool{}}
	progressDone := make(chan struct{})
	if opts.Progress != nil {
		go func() {
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
	if err != nil {
		packer.Abort()
		return nil, err
	}
	// 5. Last packs and their index.
	if err := packer.Close(); err != nil {
		return nil, err
	}
	// 6. Manifests.
	p := &recovery.Point{Machine: opts.Machine, Time: start.UTC(), Consistency: opts.Consistency, Host: v.Host(),
		Tags: opts.Tags, Definition: opts.Definition}
	if parent != nil {
		p.Parent = parent.ID.String()
	}
	for _, st := range states {
		id, err := image.Save(ctx, v, st.manifest)
		if err != nil {
			return nil, err
		}
		p.Disks = append(p.Disks, recovery.Disk{Name: st.d.Name, Source: st.d.Source.Source(), Size: st.manifest.Size,
			ChunkSize: cs, Manifest: id, Stats: st.stats})
	}
	p.Stats = recovery.Stats{DurationMS: v.Clock().Now().Sub(start).Milliseconds(),
		StoredBytes: packer.StoredBytes.Load(), Packs: packer.Packs.Load()}
	// 7. The point: committed.
	if err := recovery.Save(ctx, v, p); err != nil {
		return nil, err
	}
	if opts.Progress != nil {
		pr := e.progress(total, v.Clock().Now().Sub(start), true)
		opts.Progress(pr)
	}
	return p, nil
}

type engine struct {
	v      *vault.Vault
	ix     *chunk.Index
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

func (e *engine) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := vault.Workers()
	cs := e.v.Config().ChunkSize
	// A fixed set of buffers bounds memory whatever the disk size.
	free := make(chan []byte, workers*4)
	for i := 0; i < cap(free); i++ {
		free <- make([]byte, cs)
	}
	jobs := make(chan job, workers*2)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sealed, scratch []byte
			for j := range jobs {
				if ctx.Err() == nil {
					var err error
					sealed, scratch, err = e.process(j, sealed, scratch)
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

// read walks every disk in order and hands blocks to the workers.
func (e *engine) read(ctx context.Context, jobs chan<- job, free chan []byte) error {
	cs := int64(e.v.Config().ChunkSize)
	for di, st := range e.states {
		src := st.d.Source
		extents, known, err := src.DataExtents(ctx)
		if err != nil {
			return err
		}
		m := st.manifest
		ext := 0
		for b := 0; b < len(m.IDs); b++ {
			off := int64(b) * cs
			n := m.BlockLen(b)
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
			got, err := src.ReadAt(buf[:n], off)
			if got < n {
				free <- buf
				if err == io.EOF || err == nil {
					return fmt.Errorf("disk %s (%s): %w: short read at offset %d", st.d.Name, src.Source(), ErrDiskChanged, off)
				}
				return fmt.Errorf("reading disk %s (%s) at offset %d: %w", st.d.Name, src.Source(), off, err)
			}
			select {
			case jobs <- job{disk: di, block: b, buf: buf, n: n}:
			case <-ctx.Done():
				free <- buf
				return context.Cause(ctx)
			}
		}
	}
	return nil
}

func (e *engine) process(j job, sealed, scratch []byte) ([]byte, []byte, error) {
	st := e.states[j.disk]
	defer e.done.Add(int64(j.n))
	if j.buf == nil || chunk.IsZeroBlock(j.buf[:j.n]) {
		st.mu.Lock()
		st.stats.ZeroChunks++
		if j.buf != nil {
			st.stats.ReadBytes += int64(j.n)
		}
		st.mu.Unlock()
		return sealed, scratch, nil // manifest entry stays chunk.Zero
	}
	data := j.buf[:j.n]
	id := e.v.Codec().Hasher().Sum(data)
	st.manifest.IDs[j.block] = id
	// A parent's chunk counts only while the index still holds it (a prune
	// plan may have condemned its pack).
	fromParent := st.parent != nil && j.block < len(st.parent.IDs) && st.parent.IDs[j.block] == id && e.ix.Has(id)
	store := !fromParent && e.claim(id)
	if store {
		sealed, scratch = e.v.Codec().EncodeBlob(sealed[:0], id, data, scratch)
		if err := e.packer.Add(id, sealed, j.n); err != nil {
			return sealed, scratch, err
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
	return sealed, scratch, nil
}
