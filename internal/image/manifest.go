// Package image is lifeboat's L2: a disk as a list of chunk IDs (the disk
// manifest, docs/format.md) and readers over it.
package image

import (
	"context"
	"encoding/binary"
	"fmt"

	"lifeboat/internal/chunk"
	"lifeboat/internal/vault"
)

// Manifest lists the chunks of one disk image, chunk.Zero for zero blocks.
type Manifest struct {
	Size      int64
	ChunkSize int
	IDs       []chunk.ID
}

// NewManifest returns a manifest of an all-zero disk of size bytes.
func NewManifest(size int64, chunkSize int) *Manifest {
	return &Manifest{Size: size, ChunkSize: chunkSize, IDs: make([]chunk.ID, Blocks(size, chunkSize))}
}

// Blocks is the number of chunk-size blocks covering size bytes.
func Blocks(size int64, chunkSize int) int {
	return int((size + int64(chunkSize) - 1) / int64(chunkSize))
}

// BlockLen is the length of block i.
func (m *Manifest) BlockLen(i int) int {
	start := int64(i) * int64(m.ChunkSize)
	return int(min(int64(m.ChunkSize), m.Size-start))
}

// Encode returns the manifest's plaintext encoding.
func (m *Manifest) Encode() []byte {
	out := make([]byte, 0, 21+32*len(m.IDs))
	out = append(out, "LBMF"...)
	out = append(out, 1)
	out = binary.LittleEndian.AppendUint64(out, uint64(m.Size))
	out = binary.LittleEndian.AppendUint32(out, uint32(m.ChunkSize))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(m.IDs)))
	for _, id := range m.IDs {
		out = append(out, id[:]...)
	}
	return out
}

// Decode parses a manifest's plaintext encoding.
func Decode(b []byte) (*Manifest, error) {
	if len(b) < 21 || string(b[:4]) != "LBMF" {
		return nil, fmt.Errorf("manifest: bad magic: %w", chunk.ErrCorrupt)
	}
	if b[4] != 1 {
		return nil, fmt.Errorf("manifest version %d is not supported", b[4])
	}
	m := &Manifest{Size: int64(binary.LittleEndian.Uint64(b[5:])), ChunkSize: int(binary.LittleEndian.Uint32(b[13:]))}
	n := int(binary.LittleEndian.Uint32(b[17:]))
	if m.Size < 0 || vault.ValidChunkSize(m.ChunkSize) != nil || n != Blocks(m.Size, m.ChunkSize) || len(b)-21 != n*32 {
		return nil, fmt.Errorf("manifest: size %d, chunk size %d and %d entries in %d bytes do not agree: %w",
			m.Size, m.ChunkSize, n, len(b), chunk.ErrCorrupt)
	}
	m.IDs = make([]chunk.ID, n)
	for i := range m.IDs {
		copy(m.IDs[i][:], b[21+32*i:])
	}
	return m, nil
}

// Save stores a manifest and returns its ID.
func Save(ctx context.Context, v *vault.Vault, m *Manifest) (chunk.ID, error) {
	return v.SaveObject(ctx, vault.KindManifest, m.Encode())
}

// EncodedSize is the size of the plaintext of the manifest of a disk of
// size bytes in chunks of chunkSize: the most a manifest a point records
// for that disk may decompress to.
func EncodedSize(size int64, chunkSize int) uint64 {
	if size < 0 || vault.ValidChunkSize(chunkSize) != nil {
		return 21
	}
	return 21 + 32*uint64(Blocks(size, chunkSize))
}

// Load reads the manifest of a disk that its point says has size bytes in
// chunks of chunkSize. A manifest that would decompress to more than such
// a disk needs is refused before it is decoded, and one that describes
// another disk is corrupt.
func Load(ctx context.Context, v *vault.Vault, id chunk.ID, size int64, chunkSize int) (*Manifest, error) {
	name := vault.ObjectName(vault.KindManifest, id)
	plain, err := v.LoadObjectMax(ctx, vault.KindManifest, id, EncodedSize(size, chunkSize))
	if err != nil {
		return nil, err
	}
	return DecodeDisk(name, plain, size, chunkSize)
}

// DecodeDisk decodes the manifest object name and checks that it
// describes a disk of size bytes in chunks of chunkSize.
func DecodeDisk(name string, plain []byte, size int64, chunkSize int) (*Manifest, error) {
	m, err := Decode(plain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if m.Size != size || m.ChunkSize != chunkSize {
		return nil, fmt.Errorf("%s: describes a disk of %d bytes in chunks of %d, the point one of %d in chunks of %d: %w",
			name, m.Size, m.ChunkSize, size, chunkSize, chunk.ErrCorrupt)
	}
	return m, nil
}
