// Package vaultcopy keeps a second vault, at another site, in step with a
// first one: it copies the recovery points the copy lacks, and only the
// chunks it does not already hold (docs/format.md, "Vault copies").
//
// Both vaults share their data and chunk-ID keys (vault.InitCopyOf), so
// every object is copied byte for byte: blobs are checked but not
// re-encrypted, and a point has the same ID at both sites.
package vaultcopy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/indexcache"
	"lifeboat/internal/lastseen"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// ErrKeysDiffer means the target vault was not created as a copy of the
// source (vault init --copy-of): its objects could not be copied as they are.
var ErrKeysDiffer = errors.New("the vaults do not share their keys")

// ErrSameVault means the source and the target are one vault.
var ErrSameVault = errors.New("source and target are the same vault")

// Options tune Run.
type Options struct {
	// Machine, if set, copies only that machine's points.
	Machine string
	// Readers is how many reads of source packs run at once; 0 picks 4 or
	// 2 per CPU, whichever is more.
	Readers int
	// Progress, if set, is called about every 200 ms and once at the end.
	Progress func(Progress)
	// Seen, if set, is this host's record of the newest points seen in
	// each vault: the copy warns when one has vanished from the source or
	// the target, and records the points it copies.
	Seen *lastseen.Book
}

// Progress reports a running copy.
type Progress struct {
	Points, TotalPoints   int   // committed at the target so far, to copy in all
	DoneBytes, TotalBytes int64 // sealed chunk bytes copied, to copy in all
	Elapsed               time.Duration
	Final                 bool
}

// Stats say what a copy did. Byte counts are measured at the two stores.
type Stats struct {
	Points []string `json:"points"` // IDs of the points copied, oldest first
	// Newest is, per machine, the time of the newest point copied: with
	// copies oldest first, every older point of it is at the target too
	// (what the server's copy lag reads).
	Newest       map[string]time.Time `json:"newest,omitempty"`
	PointsCopied int                  `json:"points_copied"` // len(Points)
	Manifests    int                  `json:"manifests"`     // manifest objects written
	Chunks       int64                `json:"chunks"`        // chunks read from the source and stored at the target
	ChunkBytes   int64                `json:"chunk_bytes"`   // their sealed size
	ReadBytes    int64                `json:"read_bytes"`    // every byte read from the source (index, points, manifests, chunks)
	ReadRequests int64                `json:"read_requests"` // GET requests to the source
	WrittenBytes int64                `json:"written_bytes"` // every byte written to the target
	Packs        int64                `json:"packs"`         // packs written at the target
	PackBytes    int64                `json:"pack_bytes"`    // their size
	AdoptedPacks int                  `json:"adopted_packs"` // packs a killed copy or backup left, indexed and reused
	DurationMS   int64                `json:"duration_ms"`
	// Warnings name objects at the target that were ignored, such as copy
	// markers that do not authenticate.
	Warnings []string `json:"warnings,omitempty"`
}

// maxRun caps one ranged read of a source pack.
const maxRun = 8 << 20

// manifestCacheBudget bounds the sealed manifests kept between the
// planning pass and the copy; beyond it they are read again.
const manifestCacheBudget = 256 << 20

// marker is the content of a copy marker (vault.CopyMarkerName), for
// people reading the store: its name alone is what counts.
type marker struct {
	Version int       `json:"version"`
	From    string    `json:"from"` // the source vault's ID
	Time    time.Time `json:"time"`
}

// sourcePoint is a point to copy, as stored and as parsed.
type sourcePoint struct {
	*recovery.Point
	sealed []byte
}

type copier struct {
	from, to   *vault.Vault
	src, dst   *meter
	opts       Options
	stats      Stats
	fromIx     *indexcache.Index // source index without condemned packs
	fullOnce   sync.Once
	fullIx     *indexcache.Index // source index with them, loaded on demand
	fullErr    error
	toIx       *indexcache.Index
	toSess     *vault.Session    // the target's session, for its packers
	toHave     map[chunk.ID]bool // manifests stored at the target and not condemned there
	planned    map[chunk.ID]bool // chunks to copy; true once handed to the packer
	cache      map[chunk.ID][]byte
	cacheBytes int
	done       atomic.Int64
	chunks     atomic.Int64
	committed  atomic.Int64
}

// Run copies to the target vault every point of the source that the target
// neither has nor has recorded as copied (optionally of one machine only),
// oldest first. For each batch of points it stores the chunks the target
// lacks (read raw from the source's packs, checked, packed unchanged), then
// the index, the manifests, and the points last, so a point appears at the
// target only once everything it references is there. A run that is
// interrupted leaves the target consistent; the next one reuses what it
// stored.
func Run(ctx context.Context, from, to *vault.Vault, opts Options) (*Stats, error) {
	if from.Config().ID == to.Config().ID {
		return nil, fmt.Errorf("%s and %s: %w", from.Store(), to.Store(), ErrSameVault)
	}
	if !from.SameKeys(to) {
		return nil, fmt.Errorf("%s was not initialised with --copy-of %s: %w, so its objects cannot be copied as they are "+
			"(create the copy with 'lifeboat vault init --vault TARGET --copy-of SOURCE')", to.Store(), from.Store(), ErrKeysDiffer)
	}
	// A source rekeyed since the copy was made seals new objects with a
	// data key the target lacks: the target's key slot in use takes it.
	if took, err := to.ImportKeys(ctx, from); err != nil {
		return nil, err
	} else if took {
		to.Warn(fmt.Sprintf("%s: took data key generation %d from %s, which was rekeyed; the target's key slot %s was rewritten, its other key slots read only what was copied before",
			to.Store(), to.Generation(), from.Store(), to.KeyName()))
	}
	if opts.Readers <= 0 {
		opts.Readers = max(4, 2*vault.Workers())
	}
	start := from.Clock().Now()
	c := &copier{src: newMeter(from.Store()), dst: newMeter(to.Store()), opts: opts,
		planned: map[chunk.ID]bool{}, cache: map[chunk.ID][]byte{}}
	c.from, c.to = from.WithStore(c.src), to.WithStore(c.dst)
	c.stats.Points = []string{}

	// Sessions first, as restore and backup do: a prune of either vault
	// that plans after this point defers its deletions until we are done.
	// The source is only read: a read-only source (a surviving copy, a
	// read-only mount) is copied without its marker, with a warning
	// (the source's vault.Options.Warn).
	srcSess, err := c.from.StartReadSession(ctx, "copy")
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", from.Store(), err)
	}
	defer srcSess.End(context.WithoutCancel(ctx))
	dstSess, err := c.to.StartSession(ctx, "copy")
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", to.Store(), err)
	}
	// Packs stored at the target without their index object leave its
	// marker abandoned, for the next writer there to adopt them.
	defer dstSess.Finish(context.WithoutCancel(ctx))
	c.toSess = dstSess

	points, err := c.missing(ctx)
	if err != nil {
		return nil, err
	}
	if len(points) > 0 {
		defer c.closeIndexes()
		if err := c.load(ctx); err != nil {
			return nil, err
		}
		total, err := c.plan(ctx, points)
		if err != nil {
			return nil, err
		}
		stop := c.report(start, len(points), total)
		err = c.copy(ctx, points)
		stop()
		if err != nil {
			return nil, err
		}
	}
	st := c.stats
	st.PointsCopied = len(st.Points)
	st.Chunks = c.chunks.Load()
	st.ChunkBytes = c.done.Load()
	st.ReadBytes, st.ReadRequests = c.src.read.Load(), c.src.gets.Load()
	st.WrittenBytes = c.dst.written.Load()
	st.DurationMS = from.Clock().Now().Sub(start).Milliseconds()
	if opts.Progress != nil {
		opts.Progress(Progress{Points: st.PointsCopied, TotalPoints: len(points), DoneBytes: st.ChunkBytes,
			TotalBytes: st.ChunkBytes, Elapsed: from.Clock().Now().Sub(start), Final: true})
	}
	return &st, nil
}

// report calls the progress callback until the returned func is called.
func (c *copier) report(start time.Time, points int, total int64) (stop func()) {
	if c.opts.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				c.opts.Progress(Progress{Points: int(c.committed.Load()), TotalPoints: points, DoneBytes: c.done.Load(),
					TotalBytes: total, Elapsed: c.from.Clock().Now().Sub(start)})
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// missing lists the source points to copy, oldest first: those without a
// valid marker at the target. A point stored at the target without its
// marker (a run killed between the two writes, or a point planted there)
// is copied again: only the marker says its data was copied, and copying
// it again sends only what the target's own index lacks. On the way it
// drops markers of points the source no longer has.
func (c *copier) missing(ctx context.Context) ([]*sourcePoint, error) {
	srcIDs, err := c.from.LivePointIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", c.from.Store(), err)
	}
	marked, bad, err := c.to.CopyMarkers(ctx, c.to.Store(), c.to.Config())
	if err != nil {
		return nil, fmt.Errorf("target %w", err)
	}
	c.stats.Warnings = append(c.stats.Warnings, bad...)
	if err := c.checkSeen(ctx, srcIDs); err != nil {
		return nil, err
	}
	inSource := map[chunk.ID]bool{}
	var want []chunk.ID
	for _, id := range srcIDs {
		inSource[id] = true
		if _, ok := marked[id]; !ok {
			want = append(want, id)
		}
	}
	// A stale marker is harmless (its point is gone from the source): an
	// append-only target keeps it (vault.Tidy).
	for id, name := range marked {
		if !inSource[id] {
			if err := c.to.Tidy(ctx, name); err != nil {
				return nil, fmt.Errorf("target %s: removing the marker of a point the source forgot: %w", c.to.Store(), err)
			}
		}
	}
	out := make([]*sourcePoint, len(want))
	idx := make([]int, len(want))
	for i := range idx {
		idx[i] = i
	}
	err = vault.Parallel(ctx, 8, idx, func(ctx context.Context, i int) error {
		p, err := loadPoint(ctx, c.from, want[i])
		if blob.IsNotExist(err) {
			return nil // forgotten since we listed it
		}
		out[i] = p
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("source %s: loading points: %w", c.from.Store(), err)
	}
	points := out[:0]
	var seen []*recovery.Point
	for _, p := range out {
		if p != nil {
			seen = append(seen, p.Point)
		}
		if p != nil && (c.opts.Machine == "" || p.Machine == c.opts.Machine) {
			points = append(points, p)
		}
	}
	if err := c.opts.Seen.Saw(c.from.Config().ID, seen, c.to.Clock().Now()); err != nil {
		c.stats.Warnings = append(c.stats.Warnings, "source: "+err.Error())
	}
	slices.SortFunc(points, func(a, b *sourcePoint) int {
		if d := a.Time.Compare(b.Time); d != 0 {
			return d
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	return points, nil
}

func (c *copier) mark(ctx context.Context, id chunk.ID) error {
	data, _ := json.Marshal(marker{Version: c.to.Config().Version, From: c.from.Config().ID, Time: c.to.Clock().Now().UTC()})
	if err := c.to.Store().Put(ctx, c.to.CopyMarkerName(c.to.Config(), id), data); err != nil {
		return fmt.Errorf("target %s: recording point %s as copied: %w", c.to.Store(), id.Short(), err)
	}
	return nil
}

// loadPoint reads a point, keeping its sealed bytes.
func loadPoint(ctx context.Context, v *vault.Vault, id chunk.ID) (*sourcePoint, error) {
	sealed, plain, err := v.LoadObjectSealed(ctx, vault.KindPoint, id, 0)
	if err != nil {
		return nil, err
	}
	p, err := recovery.Decode(plain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vault.ObjectName(vault.KindPoint, id), err)
	}
	p.ID = id
	return &sourcePoint{Point: p, sealed: sealed}, nil
}

// closeIndexes releases the indexes load opened.
func (c *copier) closeIndexes() {
	for _, ix := range []*indexcache.Index{c.fromIx, c.toIx, c.fullIx} {
		if ix != nil {
			ix.Close()
		}
	}
}

// load reads both indexes, as a restore reads the source's and a backup
// the target's: locations in condemned packs are left out, and packs a
// killed run stored without an index are adopted at the target.
func (c *copier) load(ctx context.Context) error {
	plans, err := c.from.Plans(ctx)
	if err != nil {
		return fmt.Errorf("source %s: %w", c.from.Store(), err)
	}
	condemned := vault.CondemnedPacks(plans)
	if c.fromIx, err = indexcache.Load(ctx, c.from, func(id chunk.ID) bool { return condemned[id] }); err != nil {
		return fmt.Errorf("source %s: %w", c.from.Store(), err)
	}
	if len(condemned) == 0 {
		c.fullIx = c.fromIx
	}

	plans, err = c.to.Plans(ctx)
	if err != nil {
		return fmt.Errorf("target %s: %w", c.to.Store(), err)
	}
	condemned = vault.CondemnedPacks(plans)
	skip := func(id chunk.ID) bool { return condemned[id] }
	if c.toIx, err = indexcache.Load(ctx, c.to, skip); err != nil {
		return fmt.Errorf("target %s: %w", c.to.Store(), err)
	}
	if c.stats.AdoptedPacks, err = c.to.AdoptAfterDeadSessions(ctx, c.toIx, skip); err != nil {
		return fmt.Errorf("target %s: %w", c.to.Store(), err)
	}
	manifests, err := c.to.ListIDs(ctx, vault.KindManifest)
	if err != nil {
		return fmt.Errorf("target %s: %w", c.to.Store(), err)
	}
	c.toHave = map[chunk.ID]bool{}
	for _, id := range manifests {
		c.toHave[id] = true
	}
	for _, p := range plans {
		for _, id := range p.Manifests {
			delete(c.toHave, id) // about to be deleted there: write it again
		}
	}
	return nil
}

// manifest reads the source manifest of disk d, through the cache.
func (c *copier) manifest(ctx context.Context, d recovery.Disk) (sealed []byte, m *image.Manifest, err error) {
	id := d.Manifest
	name := vault.ObjectName(vault.KindManifest, id)
	sealed, cached := c.cache[id]
	var plain []byte
	max := image.EncodedSize(d.Size, d.ChunkSize)
	if cached {
		plain, err = c.from.OpenSealed(vault.KindManifest, id, sealed, max)
	} else {
		sealed, plain, err = c.from.LoadObjectSealed(ctx, vault.KindManifest, id, max)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: %w", c.from.Store(), err)
	}
	if m, err = image.DecodeDisk(name, plain, d.Size, d.ChunkSize); err != nil {
		return nil, nil, fmt.Errorf("source %s: %w", c.from.Store(), err)
	}
	if !cached && c.cacheBytes+len(sealed) <= manifestCacheBudget {
		c.cache[id] = sealed
		c.cacheBytes += len(sealed)
	}
	return sealed, m, nil
}

// locate finds a chunk at the source, in a pack no prune plan condemns if
// possible, as restore does.
func (c *copier) locate(ctx context.Context, id chunk.ID) (chunk.ID, chunk.Location, error) {
	if pack, loc, ok := c.fromIx.Lookup(id); ok {
		return pack, loc, nil
	}
	c.fullOnce.Do(func() {
		if c.fullIx == nil {
			c.fullIx, c.fullErr = indexcache.Load(ctx, c.from, nil)
		}
	})
	if c.fullErr != nil {
		return chunk.ID{}, chunk.Location{}, fmt.Errorf("source %s: %w", c.from.Store(), c.fullErr)
	}
	if pack, loc, ok := c.fullIx.Lookup(id); ok {
		return pack, loc, nil
	}
	return chunk.ID{}, chunk.Location{}, fmt.Errorf("source %s: chunk %s is in no index (run verify on the source): %w",
		c.from.Store(), id, blob.ErrNotExist)
}

// plan finds the chunks the points need that the target lacks, and
// returns their sealed size.
func (c *copier) plan(ctx context.Context, points []*sourcePoint) (int64, error) {
	var total int64
	seen := map[chunk.ID]bool{}
	for _, p := range points {
		for _, d := range p.Disks {
			if seen[d.Manifest] {
				continue
			}
			seen[d.Manifest] = true
			_, m, err := c.manifest(ctx, d)
			if err != nil {
				return 0, fmt.Errorf("point %s disk %s: %w", p.ID.Short(), d.Name, err)
			}
			for _, id := range m.IDs {
				if id.IsZero() || c.toIx.Has(id) {
					continue
				}
				if _, ok := c.planned[id]; ok {
					continue
				}
				_, loc, err := c.locate(ctx, id)
				if err != nil {
					return 0, fmt.Errorf("point %s disk %s: %w", p.ID.Short(), d.Name, err)
				}
				c.planned[id] = false
				total += int64(loc.Length)
			}
		}
	}
	return total, nil
}

// blobRef is one chunk to copy and where it is at the source.
type blobRef struct {
	id   chunk.ID
	pack chunk.ID
	loc  chunk.Location
}

// copy stores the points in batches: a batch closes once its new chunks
// fill a pack, or with the last point.
func (c *copier) copy(ctx context.Context, points []*sourcePoint) error {
	var packer *vault.Packer
	defer func() {
		if packer != nil {
			packer.Abort()
		}
	}()
	var batch []*sourcePoint
	var batchBytes int64
	for i, p := range points {
		if packer == nil {
			packer = c.to.NewPacker(ctx, c.toIx, c.toSess)
		}
		n, err := c.copyChunks(ctx, p, packer)
		if err != nil {
			return fmt.Errorf("copying point %s of %s: %w", p.ID.Short(), p.Machine, err)
		}
		batch = append(batch, p)
		batchBytes += n
		if batchBytes < int64(c.to.Config().PackSize) && i < len(points)-1 {
			continue
		}
		err = packer.Close()
		c.stats.Packs += packer.Packs.Load()
		c.stats.PackBytes += packer.StoredBytes.Load()
		packer = nil
		if err != nil {
			return fmt.Errorf("copying point %s of %s: %w", p.ID.Short(), p.Machine, err)
		}
		if err := c.commit(ctx, batch); err != nil {
			return err
		}
		batch, batchBytes = nil, 0
	}
	return nil
}

// copyChunks hands the chunks of p that are still to copy to the packer,
// reading runs of adjacent blobs of a source pack with one request, several
// packs at once. It returns their sealed size.
func (c *copier) copyChunks(ctx context.Context, p *sourcePoint, packer *vault.Packer) (int64, error) {
	var refs []blobRef
	for _, d := range p.Disks {
		_, m, err := c.manifest(ctx, d)
		if err != nil {
			return 0, fmt.Errorf("disk %s: %w", d.Name, err)
		}
		for _, id := range m.IDs {
			if taken, ok := c.planned[id]; !ok || taken {
				continue
			}
			c.planned[id] = true
			pack, loc, err := c.locate(ctx, id)
			if err != nil {
				return 0, fmt.Errorf("disk %s: %w", d.Name, err)
			}
			refs = append(refs, blobRef{id: id, pack: pack, loc: loc})
		}
	}
	slices.SortFunc(refs, func(a, b blobRef) int {
		if d := slices.Compare(a.pack[:], b.pack[:]); d != 0 {
			return d
		}
		return int(a.loc.Offset) - int(b.loc.Offset)
	})
	var runs [][]blobRef
	var bytes int64
	for i, r := range refs {
		bytes += int64(r.loc.Length)
		if i > 0 {
			prev, first := refs[i-1], runs[len(runs)-1][0]
			if prev.pack == r.pack && prev.loc.Offset+prev.loc.Length == r.loc.Offset &&
				int64(r.loc.Offset+r.loc.Length)-int64(first.loc.Offset) <= maxRun {
				runs[len(runs)-1] = append(runs[len(runs)-1], r)
				continue
			}
		}
		runs = append(runs, []blobRef{r})
	}
	err := vault.Parallel(ctx, c.opts.Readers, runs, func(ctx context.Context, run []blobRef) error {
		return c.copyRun(ctx, run, packer)
	})
	return bytes, err
}

// copyRun reads one run of blobs, checks each against its ID and adds it
// to the packer as it is.
func (c *copier) copyRun(ctx context.Context, run []blobRef, packer *vault.Packer) error {
	first, last := run[0], run[len(run)-1]
	start := int64(first.loc.Offset)
	length := int64(last.loc.Offset+last.loc.Length) - start
	name := chunk.PackName(first.pack)
	data, err := c.from.Store().GetRange(ctx, name, start, length)
	if err != nil && !blob.IsNotExist(err) {
		return fmt.Errorf("source %s: reading %s: %w", c.from.Store(), name, err)
	}
	missing := err
	var buf []byte
	for _, r := range run {
		var sealed []byte
		if missing == nil {
			sealed = data[int64(r.loc.Offset)-start : int64(r.loc.Offset+r.loc.Length)-start]
			// The target must never receive a blob that would fail there.
			buf, err = c.from.Codec().DecodeBlob(buf, r.id, sealed, int(r.loc.RawLength))
		} else {
			err = missing
		}
		if err != nil {
			// A chunk stored more than once is read from another location.
			if buf, sealed, err = c.reread(ctx, r, buf, err); err != nil {
				return fmt.Errorf("source %s: %s: chunk %s: %w", c.from.Store(), name, r.id.Short(), err)
			}
		}
		if err := packer.Add(r.id, sealed, int(r.loc.RawLength)); err != nil {
			return fmt.Errorf("target %s: %w", c.to.Store(), err)
		}
		c.done.Add(int64(r.loc.Length))
		c.chunks.Add(1)
	}
	return nil
}

// reread reads the blob of r from a location at the source other than
// the one that failed with cause.
func (c *copier) reread(ctx context.Context, r blobRef, buf []byte, cause error) (plain, sealed []byte, err error) {
	locs := c.fromIx.Locations(r.id)
	c.fullOnce.Do(func() {
		if c.fullIx == nil {
			c.fullIx, c.fullErr = indexcache.Load(ctx, c.from, nil)
		}
	})
	if c.fullErr == nil && c.fullIx != c.fromIx {
		locs = append(locs, c.fullIx.Locations(r.id)...)
	}
	plain, sealed, err = c.from.ReadBlob(ctx, r.id, locs, &chunk.PackLocation{Pack: r.pack, Loc: r.loc}, buf)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (and no other copy: %w)", cause, err)
	}
	return plain, sealed, nil
}

// commit writes the manifests of a batch whose chunks are stored and
// indexed, then its points, oldest first, each followed by its marker.
func (c *copier) commit(ctx context.Context, batch []*sourcePoint) error {
	for _, p := range batch {
		for _, d := range p.Disks {
			if c.toHave[d.Manifest] {
				continue
			}
			sealed, _, err := c.manifest(ctx, d)
			if err != nil {
				return fmt.Errorf("copying point %s of %s: disk %s: %w", p.ID.Short(), p.Machine, d.Name, err)
			}
			name := vault.ObjectName(vault.KindManifest, d.Manifest)
			if err := c.to.Store().Put(ctx, name, sealed); err != nil {
				return fmt.Errorf("copying point %s of %s: target %s: writing %s: %w", p.ID.Short(), p.Machine, c.to.Store(), name, err)
			}
			c.toHave[d.Manifest] = true
			c.stats.Manifests++
		}
	}
	if err := c.extendLocks(ctx, batch); err != nil {
		return err
	}
	for _, p := range batch {
		name := vault.ObjectName(vault.KindPoint, p.ID)
		if err := c.to.Store().Put(ctx, name, p.sealed); err != nil {
			return fmt.Errorf("copying point %s of %s: target %s: writing %s: %w", p.ID.Short(), p.Machine, c.to.Store(), name, err)
		}
		if err := c.mark(ctx, p.ID); err != nil {
			return err
		}
		c.stats.Points = append(c.stats.Points, p.ID.String())
		if p.Time.After(c.stats.Newest[p.Machine]) {
			if c.stats.Newest == nil {
				c.stats.Newest = map[string]time.Time{}
			}
			c.stats.Newest[p.Machine] = p.Time
		}
		c.committed.Add(1)
		if err := c.opts.Seen.Saw(c.to.Config().ID, []*recovery.Point{p.Point}, c.to.Clock().Now()); err != nil {
			c.stats.Warnings = append(c.stats.Warnings, "target: "+err.Error())
		}
	}
	return nil
}

// extendLocks, at a target with an object lock, extends the lock of the
// manifests and packs the batch's points share with what the target held.
func (c *copier) extendLocks(ctx context.Context, batch []*sourcePoint) error {
	if c.to.Lock() == nil {
		return nil
	}
	var manifests []chunk.ID
	var chunks [][]chunk.ID
	for _, p := range batch {
		for _, d := range p.Disks {
			_, m, err := c.manifest(ctx, d)
			if err != nil {
				return fmt.Errorf("copying point %s of %s: disk %s: %w", p.ID.Short(), p.Machine, d.Name, err)
			}
			manifests = append(manifests, d.Manifest)
			chunks = append(chunks, m.IDs)
		}
	}
	if err := c.to.ExtendChunkLocks(ctx, c.toIx, manifests, chunks...); err != nil {
		return fmt.Errorf("target %s: %w", c.to.Store(), err)
	}
	return nil
}

// checkSeen warns of points this host saw in either vault that are gone
// (internal/lastseen).
func (c *copier) checkSeen(ctx context.Context, srcIDs []chunk.ID) error {
	if c.opts.Seen == nil {
		return nil
	}
	now := c.to.Clock().Now()
	for _, w := range c.opts.Seen.Check(c.from.Config().ID, srcIDs, nil, now) {
		c.stats.Warnings = append(c.stats.Warnings, "source "+c.from.Store().String()+": "+w)
	}
	dstIDs, err := c.to.ListIDs(ctx, vault.KindPoint)
	if err != nil {
		return fmt.Errorf("target %s: %w", c.to.Store(), err)
	}
	c.stats.Warnings = append(c.stats.Warnings, c.opts.Seen.Check(c.to.Config().ID, dstIDs, nil, now)...)
	return nil
}
