package image

import (
	"bytes"
	"testing"

	"lifeboat/internal/chunk"
	"lifeboat/internal/testenv"
)

// FuzzManifest: a manifest plaintext either fails to decode or decodes to
// a manifest that encodes to exactly the same bytes, and decoding
// allocates no more than the input's size (issue 10, "Proof").
func FuzzManifest(f *testing.F) {
	m := NewManifest(5<<20+17, 1<<20)
	m.IDs[0] = chunk.ID{1, 2, 3}
	m.IDs[4] = chunk.ID{9}
	f.Add(m.Encode())
	f.Add(NewManifest(0, 64<<10).Encode())
	f.Add([]byte("LBMF\x01\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00\x01\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m *Manifest
		var err error
		testenv.CheckAlloc(t, len(data), 2, 4<<10, func() { m, err = Decode(data) })
		if err != nil {
			return
		}
		if !bytes.Equal(m.Encode(), data) {
			t.Fatalf("manifest of %d bytes, chunk size %d, %d IDs does not encode to its input", m.Size, m.ChunkSize, len(m.IDs))
		}
		for i := range m.IDs {
			if n := m.BlockLen(i); n <= 0 || n > m.ChunkSize {
				t.Fatalf("block %d has length %d", i, n)
			}
		}
	})
}
