package replica

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/zeebo/blake3"
)

// HashBlock is the block size of the hashes a resync compares.
const HashBlock = 256 << 10

// Hashes is the BLAKE3-256 hash of every HashBlock-sized block (the last
// one shorter) of each disk as of cut Seq, for a resync that sends only
// the blocks whose hashes differ.
type Hashes struct {
	Seq   uint64     `json:"seq"`
	Block int64      `json:"block"`
	Disks [][]byte   `json:"disks"` // per disk, 32 bytes per block
	Specs []DiskSpec `json:"specs"`
}

// BlockHash is the hash Hashes holds for p.
func BlockHash(p []byte) [32]byte { return blake3.Sum256(p) }

// Hashes hashes every block of the machine's latest cut. It materialises
// the cut's disks beside the replica first (as failover --disks-only does),
// so it reads and writes about the disks' data once: a resync reads the
// whole disk at the source anyway.
func (s *Store) Hashes(ctx context.Context, name string) (*Hashes, error) {
	m, err := s.machine(name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	h := &Hashes{Seq: m.lastSeq(), Block: HashBlock, Specs: m.spec.Disks}
	tmp := filepath.Join(m.dir, "failover", ".hashes-"+randomHex())
	if err := os.Mkdir(tmp, 0o700); err != nil { // holds off folding
		m.mu.Unlock()
		return nil, err
	}
	from, batches := m.startFor(h.Seq)
	m.mu.Unlock()
	defer os.RemoveAll(tmp)
	source := func(d DiskSpec) (string, string) { return m.startSource(from, d.Name) }
	if err := writeRawDisks(ctx, source, h.Specs, batches, tmp); err != nil {
		return nil, fmt.Errorf("materialising the latest cut of %s to hash it: %w", name, err)
	}
	buf := make([]byte, HashBlock)
	for _, d := range h.Specs {
		f, err := os.Open(filepath.Join(tmp, d.Name+".raw"))
		if err != nil {
			return nil, err
		}
		var sums []byte
		for off := int64(0); off < d.Size; off += HashBlock {
			if err := ctx.Err(); err != nil {
				f.Close()
				return nil, err
			}
			n := min(HashBlock, d.Size-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil && err != io.EOF {
				f.Close()
				return nil, err
			}
			sum := BlockHash(buf[:n])
			sums = append(sums, sum[:]...)
		}
		f.Close()
		h.Disks = append(h.Disks, sums)
	}
	return h, nil
}
