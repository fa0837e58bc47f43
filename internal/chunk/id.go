// Package chunk is lifeboat's L1: chunk IDs, the sealed blob encoding,
// packs of blobs and the index from chunk ID to pack location
// (docs/format.md, "Chunks", "Packs", "Index").
package chunk

import (
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"

	"lifeboat/internal/crypto"
)

// ID names a chunk (keyed MAC of its bytes) or an object (hash of its bytes).
type ID [32]byte

// Zero is the manifest entry of an all-zero block, which is never stored.
var Zero ID

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short is the abbreviated form shown to users.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == Zero }

// ParseID parses a full 64-character hex ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return id, fmt.Errorf("invalid ID %q: want 64 hex characters", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid ID %q: %w", s, err)
	}
	return id, nil
}

// ObjectID is the unkeyed BLAKE3-256 of a stored object: its name.
func ObjectID(data []byte) ID { return blake3.Sum256(data) }

// Hasher computes keyed chunk IDs. It is safe for concurrent use.
type Hasher struct {
	pool sync.Pool
}

// NewHasher returns a Hasher for the vault's id_key.
func NewHasher(key crypto.Key) *Hasher {
	h := &Hasher{}
	h.pool.New = func() any {
		b, err := blake3.NewKeyed(key[:])
		if err != nil {
			panic(err) // only fails for a key that is not 32 bytes
		}
		return b
	}
	return h
}

// Sum returns the chunk ID of data.
func (h *Hasher) Sum(data []byte) ID {
	b := h.pool.Get().(*blake3.Hasher)
	b.Reset()
	b.Write(data)
	var id ID
	b.Sum(id[:0])
	h.pool.Put(b)
	return id
}

// IsZeroBlock reports whether every byte of b is zero.
func IsZeroBlock(b []byte) bool {
	for len(b) >= len(zeros) {
		if string(b[:len(zeros)]) != string(zeros[:]) {
			return false
		}
		b = b[len(zeros):]
	}
	return string(b) == string(zeros[:len(b)])
}

var zeros [64 << 10]byte

// MarshalText encodes the ID as hex.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText parses a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	*id = p
	return err
}
