package chunk

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"lifeboat/internal/crypto"
)

// Blob encodings (the first byte of a sealed blob's payload).
const (
	encRaw  = 0
	encZstd = 1
)

// ErrCorrupt marks data that failed authentication or its ID check.
var ErrCorrupt = errors.New("corrupt data")

// Codec turns blocks into sealed blobs and back, and seals metadata objects.
// It is safe for concurrent use.
type Codec struct {
	aead   *crypto.Ring
	hasher *Hasher
	frames frameCodec // chunk payloads
	meta   *goFrames  // metadata objects
	// payloads are scratch buffers for opened blobs; samples for the
	// compression probe (mayCompress).
	payloads, samples sync.Pool
	// vaultID binds index objects and pack headers to the vault (set by
	// Bind; empty for a version 1 vault, whose objects are not bound), and
	// packIDs are the vault IDs whose pack headers it accepts.
	vaultID string
	packIDs []string
}

// Bind makes the codec seal index objects and pack headers bound to the
// vault vaultID, and accept only those when opening, except that pack
// headers bound to origin (the vault a copy was made from; "" for none)
// are accepted too, so that packs can be copied verbatim
// (docs/format.md, "Binding objects to their vault"). Call it before any
// use. Without it, the codec reads and writes version 1 objects, bound to
// no vault.
func (c *Codec) Bind(vaultID, origin string) {
	c.vaultID = vaultID
	c.packIDs = []string{vaultID}
	if origin != "" && origin != vaultID {
		c.packIDs = append(c.packIDs, origin)
	}
}

// UseRing makes the codec seal with ring's current data key and open
// what any of its keys sealed, instead of the one data key NewCodec was
// given (a rekeyed vault, docs/format.md "Data key generations"). Call it
// before any use.
func (c *Codec) UseRing(ring *crypto.Ring) { c.aead = ring }

// Ring is the codec's data keys.
func (c *Codec) Ring() *crypto.Ring { return c.aead }

// BindAAD is the associated data of an object labelled label (as
// "lifeboat index") bound to vault vaultID, or its version 1 form,
// bound to no vault, when vaultID is empty.
func BindAAD(label, vaultID string) string {
	if vaultID == "" {
		return label + " v1"
	}
	return label + " v2 " + vaultID
}

// NewCodec returns a codec sealing with dataKey and checking IDs with hasher.
func NewCodec(dataKey crypto.Key, hasher *Hasher, level Level, maxChunk int) (*Codec, error) {
	aead, err := crypto.NewRing(map[uint16]crypto.Key{1: dataKey})
	if err != nil {
		return nil, err
	}
	frames, err := newFrames(level, maxChunk)
	if err != nil {
		return nil, err
	}
	// Metadata objects (index, manifests) can be much larger than a chunk.
	meta, err := newGoFrames(level, maxChunk, metaMax, 2)
	if err != nil {
		return nil, err
	}
	c := &Codec{aead: aead, hasher: hasher, frames: frames, meta: meta}
	c.payloads.New = func() any { b := make([]byte, 0, maxChunk+64); return &b }
	c.samples.New = func() any { b := make([]byte, 0, probeSlices*probeSlice); return &b }
	return c, nil
}

// Hasher returns the codec's chunk ID hasher.
func (c *Codec) Hasher() *Hasher { return c.hasher }

// EncodeBlob appends the sealed blob of block (whose ID is id) to dst.
// scratch is reused for the compressed payload and returned for reuse.
func (c *Codec) EncodeBlob(dst []byte, id ID, block []byte, scratch []byte) (out, scratchOut []byte) {
	b, scratch := c.PrepareBlob(block, scratch)
	n := len(dst)
	dst = slices.Grow(dst, b.SealedLen())[:n+b.SealedLen()]
	c.SealBlob(dst[n:], id, b)
	return dst, scratch
}

// A Blob is a block ready to seal: its encoding chosen and, when it pays,
// compressed. body is the block itself (raw) or scratch memory.
type Blob struct {
	enc      byte
	body     []byte
	overhead int
}

// SealedLen is the length of the sealed blob.
func (b Blob) SealedLen() int { return b.overhead + 1 + len(b.body) }

// PrepareBlob chooses how block is stored: compressed (into scratch,
// returned for reuse) when that saves at least 1/16, else raw.
func (c *Codec) PrepareBlob(block, scratch []byte) (Blob, []byte) {
	payload, ok := scratch[:0], false
	if c.mayCompress(block, &payload) {
		payload, ok = c.frames.compress(append(payload[:0], encZstd), block)
	}
	if !ok || len(payload)-1 > len(block)-len(block)/16 {
		return Blob{enc: encRaw, body: block, overhead: c.aead.Overhead()}, payload
	}
	return Blob{enc: encZstd, body: payload[1:], overhead: c.aead.Overhead()}, payload
}

// SealBlob seals b, the block of chunk id, into dst, which is exactly
// b.SealedLen() bytes (a blob's place in a pack): the payload is written
// there once and encrypted in place.
func (c *Codec) SealBlob(dst []byte, id ID, b Blob) {
	at := c.aead.PlainOffset()
	dst[at] = b.enc
	copy(dst[at+1:], b.body)
	c.aead.SealInPlace(dst, id[:])
}

// A block of at least probeMin bytes is compressed only if a sample of it
// does: probeSlices slices of probeSlice bytes (a 128th of the block below
// 256 KiB: the sample stays a sixteenth of the block) spread evenly over
// it, compressed together, must save 1/16 (the rule for storing a block
// compressed). Incompressible blocks (encrypted or compressed files, media)
// then cost a sixteenth of a compression at most instead of a whole one,
// which was most of the time of sealing them; a block with any redundancy
// the sample sees is compressed whole as before. Only redundancy confined
// to the gaps between the slices is missed.
const (
	probeMin    = 64 << 10
	probeSlices = 8
	probeSlice  = 2 << 10
)

// probeSliceFor is the length of each probe slice of a block of n bytes.
func probeSliceFor(n int) int { return min(probeSlice, n/(probeSlices*16)) }

// mayCompress reports whether compressing block can save enough to be
// stored compressed, judging by a sample; buf is scratch space.
func (c *Codec) mayCompress(block []byte, buf *[]byte) bool {
	if len(block) < probeMin {
		return true
	}
	sb := c.samples.Get().(*[]byte)
	defer c.samples.Put(sb)
	sample := (*sb)[:0]
	step, slice := len(block)/probeSlices, probeSliceFor(len(block))
	for i := range probeSlices {
		sample = append(sample, block[i*step:i*step+slice]...)
	}
	*sb = sample
	out, ok := c.frames.compress((*buf)[:0], sample)
	*buf = out[:0]
	return ok && len(out) <= len(sample)-len(sample)/16
}

// DecodeBlob opens a sealed blob, decompresses it into dst[:0] and checks
// that its keyed hash is id and its length rawLen.
func (c *Codec) DecodeBlob(dst []byte, id ID, blob []byte, rawLen int) ([]byte, error) {
	pb := c.payloads.Get().(*[]byte)
	defer c.payloads.Put(pb)
	payload, err := c.aead.Open((*pb)[:0], blob, id[:])
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w: %w", id, ErrCorrupt, err)
	}
	*pb = payload
	if len(payload) == 0 {
		return nil, fmt.Errorf("chunk %s: empty payload: %w", id, ErrCorrupt)
	}
	var out []byte
	switch payload[0] {
	case encRaw:
		out = append(dst[:0], payload[1:]...)
	case encZstd:
		out, err = c.frames.decompress(dst, payload[1:], rawLen)
		if err != nil {
			return nil, fmt.Errorf("chunk %s: decompressing: %w: %w", id, ErrCorrupt, err)
		}
	default:
		return nil, fmt.Errorf("chunk %s: unknown encoding %d: %w", id, payload[0], ErrCorrupt)
	}
	if len(out) != rawLen {
		return nil, fmt.Errorf("chunk %s: length %d, index says %d: %w", id, len(out), rawLen, ErrCorrupt)
	}
	if got := c.hasher.Sum(out); got != id {
		return nil, fmt.Errorf("chunk %s: content hashes to %s: %w", id, got, ErrCorrupt)
	}
	return out, nil
}

// SealObject compresses and seals a metadata object (index, manifest, point).
func (c *Codec) SealObject(plain []byte, aad string) []byte {
	return c.aead.Seal(nil, c.meta.enc.EncodeAll(plain, nil), []byte(aad))
}

// OpenObject reverses SealObject.
func (c *Codec) OpenObject(sealed []byte, aad string) ([]byte, error) {
	return c.OpenObjectMax(sealed, aad, 0)
}

// metaMax is the most any metadata object may decompress to.
const metaMax = 4 << 30

// OpenObjectMax is OpenObject refusing a plaintext of more than max bytes
// (0: the 4 GiB every metadata object is held to) before decoding it all.
func (c *Codec) OpenObjectMax(sealed []byte, aad string, max uint64) ([]byte, error) {
	z, err := c.aead.Open(nil, sealed, []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	var plain []byte
	if max == 0 || max >= metaMax {
		plain, err = c.meta.dec.DecodeAll(z, nil)
	} else {
		plain, err = decodeAllMax(z, max)
	}
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w: %w", ErrCorrupt, err)
	}
	return plain, nil
}

// Seal seals without compression (pack headers).
func (c *Codec) Seal(dst, plain []byte, aad string) []byte {
	return c.aead.Seal(dst, plain, []byte(aad))
}

// Open reverses Seal.
func (c *Codec) Open(sealed []byte, aad string) ([]byte, error) {
	p, err := c.aead.Open(nil, sealed, []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return p, nil
}
