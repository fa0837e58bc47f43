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
	pending []chunk.IndexPack // stored, not yet in an index object
	err     error

	uploads chan []byte
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
	p := &Packer{v: v, sess: sess, ix: ix, ctx: ctx, cancel: cancel, uploads: make(chan []byte)}
	p.bufs.New = func() any { return make([]byte, 0, v.cfg.PackSize+v.cfg.ChunkSize+1<<16) }
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

func (p *Packer) uploader() {
	defer p.wg.Done()
	for data := range p.uploads {
		if err := p.store(data); err != nil {
			p.fail(err)
		}
	}
}

func (p *Packer) store(data []byte) error {
	if p.ctx.Err() != nil {
		return p.ctx.Err()
	}
	id := chunk.ObjectID(data)
	// The entries were sealed into the pack; re-parse them from our own bytes
	// rather than carrying them separately.
	hl, err := chunk.PackHeaderLength(data[len(data)-4:], int64(len(data)))
	if err != nil {
		return err
	}
	end := int64(len(data)) - 4 - hl
	entries, err := chunk.ParsePackHeader(p.v.codec, data[end:len(data)-4], end)
	if err != nil {
		return err
	}
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
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return err
	}
	if p.cur == nil {
		p.cur = chunk.NewPackBuilderBuf(p.bufs.Get().([]byte))
	}
	p.cur.Add(id, sealed, rawLen)
	var full []byte
	if p.cur.Len() >= p.v.cfg.PackSize {
		full, _, _ = p.cur.Finish(p.v.codec)
		p.cur = nil
	}
	p.mu.Unlock()
	if full != nil {
		select {
		case p.uploads <- full:
		case <-p.ctx.Done():
			p.fail(p.ctx.Err())
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.err
		}
	}
	return nil
}

// Close uploads what is left, writes the index for every stored pack and
// returns the first error of the whole run.
func (p *Packer) Close() error {
	p.mu.Lock()
	var last []byte
	if p.cur != nil && p.cur.Count() > 0 && p.err == nil {
		last, _, _ = p.cur.Finish(p.v.codec)
	}
	p.cur = nil
	p.mu.Unlock()
	if last != nil {
		select {
		case p.uploads <- last:
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
