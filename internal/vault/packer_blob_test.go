package vault_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/vault"
)

// Workers sealing blobs in place into shared packs at once (AddBlob),
// with packs closing under them: every blob reads back from the packs
// and index the packer wrote, and each pack's header matches its blobs.
func TestPackerAddBlobConcurrent(t *testing.T) {
	ctx := context.Background()
	opts := cheap
	opts.PackSize = 1 << 20
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := v.StartSession(ctx, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.End(ctx)
	ix := chunk.NewIndex()
	p := v.NewPacker(ctx, ix, sess)
	const workers, each = 4, 60
	blocks := map[chunk.ID][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var scratch []byte
			for i := range each {
				// Compressible and incompressible blocks of varied sizes.
				block := bytes.Repeat([]byte(fmt.Sprintf("worker %d block %d ", w, i)), 64<<10)[:4<<10+i*1000]
				if i%2 == 0 {
					rand.NewChaCha8([32]byte{byte(w), byte(i)}).Read(block) // incompressible: stored raw
				}
				id := v.Codec().Hasher().Sum(block)
				var b chunk.Blob
				b, scratch = v.Codec().PrepareBlob(block, scratch)
				if err := p.AddBlob(id, b.SealedLen(), len(block), func(dst []byte) { v.Codec().SealBlob(dst, id, b) }); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				blocks[id] = block
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Packs.Load() < 4 {
		t.Fatalf("%d packs: the test wants several to close under the workers", p.Packs.Load())
	}
	// Read back through a fresh index, from the stored index objects.
	stored, err := v.LoadIndex(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for id, block := range blocks {
		got, _, err := v.ReadBlob(ctx, id, stored.Locations(id), nil, nil)
		if err != nil || !bytes.Equal(got, block) {
			t.Fatalf("chunk %s: %v", id.Short(), err)
		}
	}
	packs, err := v.ListPacks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, pk := range packs {
		if _, err := v.ReadPackHeader(ctx, pk.ID, pk.Size); err != nil {
			t.Fatalf("pack %s: %v", pk.ID.Short(), err)
		}
	}
}

// A blob too large for the room left in the current pack (one copied
// from elsewhere) closes that pack early rather than regrow a buffer
// other workers seal into: both packs are whole and indexed.
func TestPackerBlobLargerThanRoom(t *testing.T) {
	ctx := context.Background()
	v, err := vault.Init(ctx, blob.NewMem(), []byte("pw"), cheap) // 64 KiB chunks, 1 MiB packs
	if err != nil {
		t.Fatal(err)
	}
	sess, err := v.StartSession(ctx, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.End(ctx)
	ix := chunk.NewIndex()
	p := v.NewPacker(ctx, ix, sess)
	add := func(i, n int) chunk.ID {
		t.Helper()
		sealed := bytes.Repeat([]byte{byte(i)}, n)
		id := chunk.ObjectID(append(sealed, byte(i)))
		if err := p.Add(id, sealed, n); err != nil {
			t.Fatal(err)
		}
		return id
	}
	var ids []chunk.ID
	for i := range 15 { // 960 KiB: under the 1 MiB target, little room left
		ids = append(ids, add(i, 64<<10))
	}
	ids = append(ids, add(99, 300<<10))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Packs.Load() != 2 {
		t.Fatalf("%d packs, want the first closed early and the large blob in a second", p.Packs.Load())
	}
	packs, _ := v.ListPacks(ctx)
	n := 0
	for _, pk := range packs {
		entries, err := v.ReadPackHeader(ctx, pk.ID, pk.Size)
		if err != nil {
			t.Fatal(err)
		}
		n += len(entries)
	}
	stored, err := v.LoadIndex(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !stored.Has(id) {
			t.Fatalf("blob %s not indexed", id.Short())
		}
	}
	if n != len(ids) {
		t.Fatalf("pack headers list %d blobs, want %d", n, len(ids))
	}
}
