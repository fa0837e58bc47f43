package vault

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"lifeboat/internal/chunk"
)

// indexEvery is how many uploaded packs one index object covers at most, so
// that a killed backup leaves most of its work indexed for the next run.
const indexEvery = 64

// Packer collects sealed blobs into packs, uploads full packs in parallel,
// adds them to an index once stored and writes index objects for them.
// Add is safe for concurrent use.
type Packer struct {
	v      *Vault
	sess   *Session // counts uploads not yet indexed; may be nil
	ix     ChunkIndex
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	cur     *chunk.PackBuilder
	filling *sync.WaitGroup   // blobs of cur being sealed in place (AddBlob)
	pending []chunk.IndexPack // stored, not yet in an index object
	sealed  int               // packs closed so far
	err     error

	// expect, when not negative, is the most bytes of blobs the run may
	// still add (ExpectAtMost); added counts those added.
	expect, added int64

	uploads chan sealedPack
	wg      sync.WaitGroup
	bufs    sync.Pool

	// Stats, readable while running.
	Packs       atomic.Int64
	StoredBytes atomic.Int64
}

// NewPacker starts a packer that records stored packs in ix. Uploads not
// yet named by an index object are counted in sess (if not nil), so that
// Session.Finish knows whether the run may leave orphan packs.
func (v *Vault) NewPacker(ctx context.Context, ix ChunkIndex, sess *Session) *Packer {
	ctx, cancel := context.WithCancel(ctx)
	p := &Packer{v: v, sess: sess, ix: ix, ctx: ctx, cancel: cancel, uploads: make(chan sealedPack), expect: -1}
	for i := 0; i < v.upload; i++ {
		p.wg.Add(1)
		go p.uploader()
	}
	return p
}

func (p *Packer) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel()
}

// packTarget is the size at which the n-th pack of a run (from 0) closes:
// a quarter of the vault's pack size for the first four, half for the next
// four, the whole size from then on. A small run (a live incremental of a
// few dozen MiB) thus uploads its packs while it still reads and seals,
// instead of leaving one big pack to write and sync once the data is
// done: its end waits for one small pack, not for a whole one. A large
// run pays a few smaller packs at its start.
func packTarget(packSize, n int) int {
	switch {
	case n < 4:
		return max(packSize/4, 1<<20)
	case n < 8:
		return max(packSize/2, 1<<20)
	}
	return packSize
}

// tailTarget lowers a pack's target near a run's expected end: at most
// half of what the run may still add (left, once this pack's len bytes
// are counted out), and at least 1 MiB. The packs before the end are
// stored while the run still seals, and its end waits for a pack of about
// 1 MiB to be named and written rather than for whatever had
// accumulated, up to half the pack size. left < 0: no expectation.
func tailTarget(target, len int, left int64) int {
	if left < 0 {
		return target
	}
	return int(max(min(int64(target), (int64(len)+left)/2), 1<<20))
}

// ExpectAtMost tells the packer that the run adds at most n more bytes of
// blobs (a tracked incremental knows its dirty blocks), so that it sizes
// the last packs down (tailTarget). Call it before the first Add.
func (p *Packer) ExpectAtMost(n int64) {
	p.mu.Lock()
	p.expect = n
	p.mu.Unlock()
}

// target is the size at which the current pack closes; p.mu is held.
func (p *Packer) target() int {
	t := packTarget(p.v.cfg.PackSize, p.sealed)
	if p.expect < 0 || p.cur == nil {
		return t
	}
	return tailTarget(t, p.cur.Len(), max(p.expect-p.added, 0))
}

// sealedPack is a finished pack: its bytes, ID and entries as sealed.
type sealedPack struct {
	data    []byte
	id      chunk.ID
	entries []chunk.PackEntry
}

// finish seals a full builder's header and names the pack. It runs outside
// the packer's lock: hashing a pack takes a while, and the workers adding
// blobs to the next one need not wait for it.
func (p *Packer) finish(b *chunk.PackBuilder) sealedPack {
	data, id, entries := b.Finish(p.v.codec)
	return sealedPack{data: data, id: id, entries: entries}
}

func (p *Packer) uploader() {
	defer p.wg.Done()
	for sp := range p.uploads {
		if err := p.store(sp); err != nil {
			p.fail(err)
		}
	}
}

func (p *Packer) store(sp sealedPack) error {
	if p.ctx.Err() != nil {
		return p.ctx.Err()
	}
	id, data, entries := sp.id, sp.data, sp.entries
	p.unindexed(1) // before the attempt: a failed Put may still have stored it
	if err := p.v.store.Put(p.ctx, chunk.PackName(id), data); err != nil {
		return fmt.Errorf("uploading pack %s: %w", id.Short(), err)
	}
	p.Packs.Add(1)
	p.StoredBytes.Add(int64(len(data)))
	p.bufs.Put(data[:0])
	p.ix.Add(id, entries)
	p.mu.Lock()
	p.pending = append(p.pending, chunk.IndexPack{ID: id, Entries: entries})
	var batch []chunk.IndexPack
	if len(p.pending) >= indexEvery {
		batch, p.pending = p.pending, nil
	}
	p.mu.Unlock()
	if batch != nil {
		if _, err := p.v.SaveIndexFile(p.ctx, &chunk.IndexFile{Packs: batch}); err != nil {
			return err
		}
		p.unindexed(-len(batch))
	}
	return nil
}

func (p *Packer) unindexed(n int) {
	if p.sess != nil {
		p.sess.unindexed.Add(int64(n))
	}
}

// Add appends a sealed blob for chunk id. It blocks while uploads are
// behind, which keeps memory bounded.
func (p *Packer) Add(id chunk.ID, sealed []byte, rawLen int) error {
	return p.AddBlob(id, len(sealed), rawLen, func(dst []byte) { copy(dst, sealed) })
}

// AddBlob appends the sealed blob of chunk id, n bytes long, sealing it
// in place: seal is called, outside the packer's lock and beside other
// workers' calls, with the blob's n bytes in the pack to fill. A pack is
// named and uploaded only once every blob in it is filled. It blocks
// while uploads are behind, which keeps memory bounded.
func (p *Packer) AddBlob(id chunk.ID, n, rawLen int, seal func(dst []byte)) error {
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return err
	}
	if p.cur != nil && p.cur.Room() < n {
		// Never regrown while blobs are sealed into it (a blob larger
		// than the vault's chunks, from a copy): closed early instead.
		p.mu.Unlock()
		if err := p.flush(p.detach()); err != nil {
			return err
		}
		return p.AddBlob(id, n, rawLen, seal)
	}
	if p.cur == nil {
		// Room for the pack, its last blob and header: never regrown.
		need := packTarget(p.v.cfg.PackSize, p.sealed) + max(p.v.cfg.ChunkSize, n) + 1<<16
		buf, _ := p.bufs.Get().([]byte)
		if cap(buf) < need {
			buf = make([]byte, 0, need)
		}
		p.cur, p.filling = chunk.NewPackBuilderBuf(buf), &sync.WaitGroup{}
	}
	dst := p.cur.Reserve(id, n, rawLen)
	p.added += int64(n)
	filling := p.filling
	filling.Add(1)
	var full *chunk.PackBuilder
	var fullFilling *sync.WaitGroup
	if p.cur.Len() >= p.target() {
		full, fullFilling = p.detachLocked()
	}
	p.mu.Unlock()
	seal(dst)
	filling.Done()
	if full != nil {
		fullFilling.Wait()
		return p.flush(full)
	}
	return nil
}

// detachLocked takes the current pack out of the packer, with what
// counts the blobs still being sealed into it; p.mu is held.
func (p *Packer) detachLocked() (*chunk.PackBuilder, *sync.WaitGroup) {
	b, w := p.cur, p.filling
	p.cur, p.filling = nil, nil
	if b != nil {
		p.sealed++
	}
	return b, w
}

// detach takes the current pack out of the packer once every blob in it
// is sealed; nil when there is none.
func (p *Packer) detach() *chunk.PackBuilder {
	p.mu.Lock()
	b, w := p.detachLocked()
	p.mu.Unlock()
	if w != nil {
		w.Wait()
	}
	return b
}

// flush names a full pack and hands it to an uploader.
func (p *Packer) flush(full *chunk.PackBuilder) error {
	if full == nil || full.Count() == 0 {
		return nil
	}
	select {
	case p.uploads <- p.finish(full):
		return nil
	case <-p.ctx.Done():
		p.fail(p.ctx.Err())
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	}
}

// Close uploads what is left, writes the index for every stored pack and
// returns the first error of the whole run.
func (p *Packer) Close() error {
	last := p.detach()
	p.mu.Lock()
	failed := p.err != nil
	p.mu.Unlock()
	if last != nil && last.Count() > 0 && !failed {
		select {
		case p.uploads <- p.finish(last):
		case <-p.ctx.Done():
		}
	}
	close(p.uploads)
	p.wg.Wait()
	p.mu.Lock()
	err, pending := p.err, p.pending
	p.pending = nil
	p.mu.Unlock()
	if err == nil && len(pending) > 0 {
		if _, err = p.v.SaveIndexFile(p.ctx, &chunk.IndexFile{Packs: pending}); err == nil {
			p.unindexed(-len(pending))
		}
	}
	p.cancel()
	return err
}

// Abort stops the packer without writing anything more.
func (p *Packer) Abort() {
	p.fail(context.Canceled)
	p.Close()
}
