package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
)

// Parallel runs fn for every item on n goroutines and returns the first
// error, cancelling the rest.
func Parallel[T any](ctx context.Context, n int, items []T, fn func(ctx context.Context, item T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan T)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for item := range ch {
				if err := fn(ctx, item); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for _, item := range items {
		select {
		case ch <- item:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// ChunkIndex says where chunks are stored: a *chunk.Index loaded whole
// into memory, or the local index cache (internal/indexcache). Safe for
// concurrent use. Lookups may miss a chunk that is stored (a damaged
// index object or cache), never find one that is not.
type ChunkIndex interface {
	// Has reports whether chunk id is stored.
	Has(id chunk.ID) bool
	// Lookup returns where chunk id is stored; the Pack field of loc is
	// meaningful only to a *chunk.Index.
	Lookup(id chunk.ID) (pack chunk.ID, loc chunk.Location, ok bool)
	// Locations returns every known location of chunk id.
	Locations(id chunk.ID) []chunk.PackLocation
	// HasPack reports whether any chunk of pack is indexed.
	HasPack(pack chunk.ID) bool
	// Add records the entries of a pack stored (or adopted) by this run.
	Add(pack chunk.ID, entries []chunk.PackEntry)
}

// LoadIndexFile reads and opens one index object.
func (v *Vault) LoadIndexFile(ctx context.Context, id chunk.ID) (*chunk.IndexFile, error) {
	f, _, err := v.LoadIndexFileSize(ctx, id)
	return f, err
}

// LoadIndexFileSize is LoadIndexFile also returning the object's stored size.
func (v *Vault) LoadIndexFileSize(ctx context.Context, id chunk.ID) (*chunk.IndexFile, int64, error) {
	name := ObjectName(KindIndex, id)
	sealed, err := v.store.Get(ctx, name)
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", name, err)
	}
	if chunk.ObjectID(sealed) != id {
		return nil, 0, fmt.Errorf("%s: content does not match its name: %w", name, chunk.ErrCorrupt)
	}
	f, err := v.codec.OpenIndex(sealed)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", name, err)
	}
	return f, int64(len(sealed)), nil
}

// SaveIndexFile stores an index object.
func (v *Vault) SaveIndexFile(ctx context.Context, f *chunk.IndexFile) (chunk.ID, error) {
	sealed := v.codec.SealIndex(f)
	id := chunk.ObjectID(sealed)
	if err := v.store.Put(ctx, ObjectName(KindIndex, id), sealed); err != nil {
		return id, fmt.Errorf("writing index: %w", err)
	}
	return id, nil
}

// LoadIndex loads the union of all index objects, leaving out locations in
// packs that skip reports true for (condemned packs). An index object that
// is damaged, planted or has a foreign name is skipped with a warning
// naming it: the chunks only it located are then missing, which fails a
// restore that needs them and makes a backup store them again. Prune reads
// the index objects itself and fails on any of them.
func (v *Vault) LoadIndex(ctx context.Context, skipPack func(chunk.ID) bool) (*chunk.Index, error) {
	ids, foreign, err := v.ScanIDs(ctx, KindIndex)
	if err != nil {
		return nil, err
	}
	for _, name := range foreign {
		v.Warn(fmt.Sprintf("skipping %q: not an index object ID", name))
	}
	ix := chunk.NewIndex()
	err = Parallel(ctx, 8, ids, func(ctx context.Context, id chunk.ID) error {
		f, err := v.LoadIndexFile(ctx, id)
		if err != nil {
			switch {
			case blob.IsNotExist(err):
				return nil // deleted by a prune after we listed it; its packs are indexed elsewhere
			case errors.Is(err, chunk.ErrCorrupt), errors.Is(err, blob.ErrTooLarge):
				v.Warn(fmt.Sprintf("skipping %q: %v", ObjectName(KindIndex, id), err))
				return nil
			}
			return err
		}
		for _, p := range f.Packs {
			if skipPack != nil && skipPack(p.ID) {
				continue
			}
			ix.Add(p.ID, p.Entries)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading index: %w", err)
	}
	return ix, nil
}

// ReadPackHeader reads the entries of a stored pack from its tail.
func (v *Vault) ReadPackHeader(ctx context.Context, pack chunk.ID, size int64) ([]chunk.PackEntry, error) {
	name := chunk.PackName(pack)
	if size <= 0 {
		info, err := v.store.Stat(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("pack %s: %w", name, err)
		}
		size = info.Size
	}
	if size < 4 {
		return nil, fmt.Errorf("%s: %d bytes is too short for a pack: %w", name, size, chunk.ErrCorrupt)
	}
	trailer, err := v.store.GetRange(ctx, name, size-4, 4)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	hl, err := chunk.PackHeaderLength(trailer, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	hdr, err := v.store.GetRange(ctx, name, size-4-hl, hl)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	entries, err := chunk.ParsePackHeader(v.codec, hdr, size-4-hl)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return entries, nil
}

// PackInfo is a stored pack.
type PackInfo struct {
	ID   chunk.ID
	Size int64
}

// ListPacks lists every stored pack.
func (v *Vault) ListPacks(ctx context.Context) ([]PackInfo, error) {
	var packs []PackInfo
	err := v.store.List(ctx, "packs/", func(i blob.Info) error {
		id, err := chunk.ParseID(i.Name[len(i.Name)-min(64, len(i.Name)):])
		if err != nil || chunk.PackName(id) != i.Name {
			return fmt.Errorf("unexpected object %s under packs/", i.Name)
		}
		packs = append(packs, PackInfo{ID: id, Size: i.Size})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing packs: %w", err)
	}
	return packs, nil
}

// AdoptAfterDeadSessions adopts orphan packs only when a dead session
// marker of a writer shows that a backup, copy or prune was killed or
// failed part way, then deletes the dead markers it may: listing every
// pack is costly on a large S3 vault (one LIST request per thousand
// packs), and only an unfinished writer leaves packs without an index
// (docs/format.md, "Sessions"). If the markers cannot be read, it adopts
// anyway, which is always safe. It returns the number of packs adopted.
func (v *Vault) AdoptAfterDeadSessions(ctx context.Context, ix ChunkIndex, skipPack func(chunk.ID) bool) (int, error) {
	_, dead, err := v.ListSessions(ctx)
	if err != nil {
		return v.AdoptOrphans(ctx, ix, skipPack)
	}
	writer := false
	for _, d := range dead {
		writer = writer || d.Abandoned || d.Kind != "restore" && !d.Ended
	}
	n := 0
	if writer {
		if n, err = v.AdoptOrphans(ctx, ix, skipPack); err != nil {
			return n, err
		}
	}
	// The orphans are indexed: the markers have done their work. Only
	// sessions that are certainly finished lose their markers (a marker
	// dead because its PID is not running here may be a same-named host's,
	// SessionInfo.Finished). On an append-only store they stay, for prune;
	// a marker that cannot be deleted now only causes another listing.
	v.TidySessions(ctx, dead)
	return n, nil
}

// AdoptOrphans indexes packs that exist but no index object names (left by
// a backup killed between uploading packs and writing their index), except
// packs skip reports true for. It returns how many packs were adopted.
func (v *Vault) AdoptOrphans(ctx context.Context, ix ChunkIndex, skipPack func(chunk.ID) bool) (int, error) {
	packs, err := v.ListPacks(ctx)
	if err != nil {
		return 0, err
	}
	var orphans []PackInfo
	for _, p := range packs {
		if !ix.HasPack(p.ID) && (skipPack == nil || !skipPack(p.ID)) {
			orphans = append(orphans, p)
		}
	}
	if len(orphans) == 0 {
		return 0, nil
	}
	var mu sync.Mutex
	f := &chunk.IndexFile{}
	err = Parallel(ctx, 8, orphans, func(ctx context.Context, p PackInfo) error {
		entries, err := v.ReadPackHeader(ctx, p.ID, p.Size)
		if err != nil {
			if blob.IsNotExist(err) || errors.Is(err, chunk.ErrCorrupt) {
				return nil // deleted meanwhile, or damaged: verify reports it, backup does without it
			}
			return err
		}
		mu.Lock()
		f.Packs = append(f.Packs, chunk.IndexPack{ID: p.ID, Entries: entries})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("adopting unindexed packs: %w", err)
	}
	if len(f.Packs) == 0 {
		return 0, nil
	}
	if _, err := v.SaveIndexFile(ctx, f); err != nil {
		return 0, err
	}
	for _, p := range f.Packs {
		ix.Add(p.ID, p.Entries)
	}
	return len(f.Packs), nil
}

// ChunkReader reads chunks through an index. Safe for concurrent use.
type ChunkReader struct {
	v  *Vault
	ix ChunkIndex
	// sealed holds buffers for the sealed blobs read, reused once each
	// blob is decoded (a buffer per chunk read was a tenth of the CPU of
	// an export: allocation, zeroing and collection).
	sealed sync.Pool
}

// NewChunkReader returns a reader of chunks located by ix.
func (v *Vault) NewChunkReader(ix ChunkIndex) *ChunkReader { return &ChunkReader{v: v, ix: ix} }

// Index returns the reader's index.
func (r *ChunkReader) Index() ChunkIndex { return r.ix }

// ReadChunk returns the plaintext of chunk id, checked against id, in dst,
// from the first of its locations that holds it intact.
func (r *ChunkReader) ReadChunk(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	locs := r.ix.Locations(id)
	if len(locs) == 0 {
		return nil, fmt.Errorf("chunk %s is in no index: %w", id, blob.ErrNotExist)
	}
	var scratch []byte
	if b, ok := r.sealed.Get().(*[]byte); ok {
		scratch = *b
	}
	out, sealed, err := r.v.readBlob(ctx, id, locs, nil, dst, scratch)
	if cap(sealed) > 0 && cap(sealed) <= maxSealed {
		sealed = sealed[:0]
		r.sealed.Put(&sealed)
	}
	return out, err
}

// maxSealed bounds the sealed-blob buffers a ChunkReader keeps: a chunk's
// blob is at most the largest chunk plus its encoding's overhead.
const maxSealed = MaxChunkSize + 1<<10

// ReadBlob reads chunk id from the first of locs (other than skip, a
// location already found bad) whose blob exists and authenticates, and
// returns its plaintext, in dst, and its sealed bytes. A chunk stored more
// than once is thus read despite one bad copy. If none holds it, the
// error names each location tried; a storage failure is returned at once.
func (v *Vault) ReadBlob(ctx context.Context, id chunk.ID, locs []chunk.PackLocation, skip *chunk.PackLocation, dst []byte) (plain, sealed []byte, err error) {
	return v.readBlob(ctx, id, locs, skip, dst, nil)
}

// readBlob is ReadBlob reading the sealed blob into scratch's memory when
// it is large enough.
func (v *Vault) readBlob(ctx context.Context, id chunk.ID, locs []chunk.PackLocation, skip *chunk.PackLocation, dst, scratch []byte) (plain, sealed []byte, err error) {
	var failed []error
	for _, l := range locs {
		if skip != nil && l.Pack == skip.Pack && l.Loc.Offset == skip.Loc.Offset && l.Loc.Length == skip.Loc.Length {
			continue
		}
		name := chunk.PackName(l.Pack)
		data, err := blob.ReadRange(ctx, v.store, name, int64(l.Loc.Offset), int64(l.Loc.Length), scratch)
		if err != nil && !blob.IsNotExist(err) {
			return nil, nil, fmt.Errorf("reading chunk %s from %s: %w", id.Short(), name, err)
		}
		if err == nil {
			if plain, err = v.codec.DecodeBlob(dst, id, data, int(l.Loc.RawLength)); err == nil {
				return plain, data, nil
			}
		}
		failed = append(failed, fmt.Errorf("%s: %w", name, err))
	}
	if len(failed) == 0 {
		return nil, nil, fmt.Errorf("chunk %s has no other location: %w", id.Short(), blob.ErrNotExist)
	}
	return nil, nil, errors.Join(failed...)
}
