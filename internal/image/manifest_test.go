package image

import (
	"errors"
	"testing"

	"lifeboat/internal/chunk"
)

func TestManifestRoundTrip(t *testing.T) {
	m := NewManifest(5<<20+17, 1<<20)
	if len(m.IDs) != 6 || m.BlockLen(5) != 17 || m.BlockLen(0) != 1<<20 {
		t.Fatalf("blocks %d last %d", len(m.IDs), m.BlockLen(5))
	}
	m.IDs[2][0] = 9
	g, err := Decode(m.Encode())
	if err != nil || g.Size != m.Size || g.ChunkSize != m.ChunkSize || g.IDs[2] != m.IDs[2] {
		t.Fatalf("roundtrip: %+v %v", g, err)
	}
	bad := m.Encode()
	bad[17]++
	if _, err := Decode(bad); !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("count mismatch: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(NewManifest(3<<20, 1<<20).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err == nil && len(m.IDs) != Blocks(m.Size, m.ChunkSize) {
			t.Fatal("decoded manifest with wrong entry count")
		}
	})
}
