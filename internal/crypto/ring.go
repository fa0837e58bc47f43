package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// A Ring seals with the newest of a vault's data keys and opens what any
// of them sealed (docs/format.md, "Data key generations"). Generation 1 is
// the key a vault was created with; what it seals carries no tag, exactly
// as before rekeying existed. What a later generation g seals is prefixed
// with the 4-byte tag 'L' 'K' g (uint16, big-endian), naming its key.
// Safe for concurrent use.
type Ring struct {
	keys    map[uint16]*AEAD
	current uint16
}

// TagSize is what a generation after the first adds to a sealed message.
const TagSize = 4

// ErrUnknownKey means a message names a data key generation the ring
// does not hold: it was sealed after the key slot in use was made.
var ErrUnknownKey = errors.New("sealed with a data key this key slot does not hold")

// NewRing returns a ring sealing with the highest generation of keys.
func NewRing(keys map[uint16]Key) (*Ring, error) {
	if len(keys) == 0 {
		return nil, errors.New("no data keys")
	}
	r := &Ring{keys: map[uint16]*AEAD{}}
	for g, k := range keys {
		if g == 0 {
			return nil, errors.New("data key generation 0 is invalid")
		}
		a, err := NewAEAD(k)
		if err != nil {
			return nil, err
		}
		r.keys[g] = a
		r.current = max(r.current, g)
	}
	return r, nil
}

// Current is the generation Seal uses.
func (r *Ring) Current() uint16 { return r.current }

// Generations lists the ring's generations, oldest first.
func (r *Ring) Generations() []uint16 {
	gs := make([]uint16, 0, len(r.keys))
	for g := range r.keys {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i] < gs[j] })
	return gs
}

// Overhead is what Seal adds to a plaintext.
func (r *Ring) Overhead() int {
	if r.current == 1 {
		return Overhead
	}
	return Overhead + TagSize
}

// Seal appends the sealed plaintext, under the current generation, to dst.
func (r *Ring) Seal(dst, plaintext, aad []byte) []byte {
	if r.current != 1 {
		dst = append(dst, 'L', 'K')
		dst = binary.BigEndian.AppendUint16(dst, r.current)
	}
	return r.keys[r.current].Seal(dst, plaintext, aad)
}

// PlainOffset is where the plaintext goes in a message SealInPlace seals.
func (r *Ring) PlainOffset() int { return r.Overhead() - 16 }

// SealInPlace seals, under the current generation, the plaintext at
// msg[PlainOffset():len(msg)-16] in place (msg is Overhead() bytes longer
// than the plaintext): msg then holds exactly what Seal appends, and the
// plaintext was never copied.
func (r *Ring) SealInPlace(msg, aad []byte) {
	if r.current != 1 {
		msg[0], msg[1] = 'L', 'K'
		binary.BigEndian.PutUint16(msg[2:], r.current)
		msg = msg[TagSize:]
	}
	r.keys[r.current].SealInPlace(msg, aad)
}

// Open authenticates and decrypts what Seal sealed with any generation of
// the ring, appending the plaintext to dst. A message without a tag is of
// generation 1; one whose first bytes only look like a tag (a random
// nonce, once in 65,536) is tried as untagged too, so authentication alone
// decides.
func (r *Ring) Open(dst, sealed, aad []byte) ([]byte, error) {
	var tagErr error
	if g, ok := Generation(sealed); ok && g != 1 {
		if a := r.keys[g]; a != nil {
			out, err := a.Open(dst, sealed[TagSize:], aad)
			if err == nil {
				return out, nil
			}
			tagErr = err
		} else {
			tagErr = fmt.Errorf("data key generation %d: %w", g, ErrUnknownKey)
		}
	}
	a := r.keys[1]
	if a == nil {
		if tagErr != nil {
			return nil, tagErr
		}
		return nil, fmt.Errorf("data key generation 1: %w", ErrUnknownKey)
	}
	out, err := a.Open(dst, sealed, aad)
	if err != nil && tagErr != nil {
		return nil, tagErr
	}
	return out, err
}

// Generation returns the data key generation a sealed message's tag
// names; ok is false for an untagged (generation 1) message.
func Generation(sealed []byte) (g uint16, ok bool) {
	if len(sealed) < TagSize+Overhead || sealed[0] != 'L' || sealed[1] != 'K' {
		return 1, false
	}
	return binary.BigEndian.Uint16(sealed[2:]), true
}
