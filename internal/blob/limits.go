package blob

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrTooLarge is returned (wrapped, with ErrPermanent) for an object larger
// than MaxSize allows for its name, and for a response that does not have
// the length asked for.
var ErrTooLarge = errors.New("object larger than its kind allows")

// Caps on whole objects by kind (the first component of the name), from
// the limits of docs/format.md ("Object sizes"). They bound what a damaged
// or hostile store can make lifeboat allocate; every lifeboat writer stays
// far below them, and Put refuses an object over its cap so that nothing
// stored is unreadable.
const (
	maxSmall     = 1 << 20  // config, keys/, sessions/, copied/, settings/, deleted/: JSON of a few hundred bytes
	maxPoint     = 64 << 20 // points/, catalog/: a compressed JSON document with the user's definition
	maxCondemned = 1 << 30  // condemned/: 67 bytes of JSON per pack of the vault
	// maxLarge bounds packs (uint32 offsets, pack_size at most 1 GiB plus
	// a header), index objects and manifests (metadata decompresses to at
	// most 4 GiB), and names of no known kind.
	maxLarge = 4 << 30
)

// MaxSize is the largest object Get returns and Put stores under name.
func MaxSize(name string) int64 {
	kind, _, _ := strings.Cut(name, "/")
	switch kind {
	case "config", "keys", "sessions", "copied", "settings", "deleted":
		return maxSmall
	case "points", "catalog":
		return maxPoint
	case "condemned":
		return maxCondemned
	}
	return maxLarge
}

// tooLarge is the error for an object of size bytes over its cap.
func tooLarge(store Store, name string, size int64) error {
	return fmt.Errorf("%s: %s is %d bytes, more than the %d an object of its kind may have: %w: %w",
		store, name, size, MaxSize(name), ErrTooLarge, ErrPermanent)
}

// checkSize refuses to store or return an object of size bytes under name.
func checkSize(store Store, name string, size int64) error {
	if size > MaxSize(name) {
		return tooLarge(store, name, size)
	}
	return nil
}

// readCapped reads all of r, refusing more than MaxSize(name) bytes. size,
// when not negative, is the length the object is said to have, which sizes
// the buffer once it is known to be within the cap: a store that claims
// more than it sends costs no memory it did not send.
func readCapped(store Store, name string, r io.Reader, size int64) ([]byte, error) {
	limit := MaxSize(name)
	if size > limit {
		return nil, tooLarge(store, name, size)
	}
	if size < 0 {
		data, err := io.ReadAll(io.LimitReader(r, limit+1))
		if err != nil {
			return nil, err
		}
		if int64(len(data)) > limit {
			return nil, tooLarge(store, name, int64(len(data)))
		}
		return data, nil
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, err
	}
	// More bytes than said: the object changed or the store is lying.
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return nil, fmt.Errorf("%s: %s: more than the %d bytes announced: %w: %w", store, name, size, ErrTooLarge, ErrPermanent)
	}
	return data, nil
}
