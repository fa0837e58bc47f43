package chunk

import (
	"encoding/binary"
	"fmt"
)

// Blob types in a pack header.
const TypeData = 1

// PackEntry locates one blob in a pack.
type PackEntry struct {
	Type      uint8
	ID        ID
	Offset    uint32
	Length    uint32
	RawLength uint32
}

const packEntrySize = 1 + 32 + 4 + 4 + 4

// PackName is the object name of the pack with the given ID.
func PackName(id ID) string {
	s := id.String()
	return "packs/" + s[:2] + "/" + s
}

// PackBuilder accumulates blobs into one pack. Not safe for concurrent use.
type PackBuilder struct {
	buf     []byte
	entries []PackEntry
}

// NewPackBuilder returns a builder with room for capacity bytes.
func NewPackBuilder(capacity int) *PackBuilder {
	return &PackBuilder{buf: make([]byte, 0, capacity)}
}

// Add appends a sealed blob.
func (p *PackBuilder) Add(id ID, blob []byte, rawLen int) {
	p.entries = append(p.entries, PackEntry{Type: TypeData, ID: id, Offset: uint32(len(p.buf)),
		Length: uint32(len(blob)), RawLength: uint32(rawLen)})
	p.buf = append(p.buf, blob...)
}

// Reserve appends room for a sealed blob of n bytes and returns it, to be
// filled before Finish. The room is in the builder's buffer, which is not
// regrown: n must be at most Room().
func (p *PackBuilder) Reserve(id ID, n, rawLen int) []byte {
	if n > p.Room() {
		panic(fmt.Sprintf("pack builder: a blob of %d bytes reserved in %d bytes of room", n, p.Room()))
	}
	off := len(p.buf)
	p.entries = append(p.entries, PackEntry{Type: TypeData, ID: id, Offset: uint32(off),
		Length: uint32(n), RawLength: uint32(rawLen)})
	p.buf = p.buf[:off+n]
	return p.buf[off : off+n : off+n]
}

// Room is how many bytes of blobs the builder's buffer still holds.
func (p *PackBuilder) Room() int { return cap(p.buf) - len(p.buf) }

// Len is the number of bytes of blobs so far.
func (p *PackBuilder) Len() int { return len(p.buf) }

// Count is the number of blobs so far.
func (p *PackBuilder) Count() int { return len(p.entries) }

// Finish seals the header and returns the pack's bytes, ID and entries.
// The builder must not be used afterwards.
func (p *PackBuilder) Finish(c *Codec) (data []byte, id ID, entries []PackEntry) {
	plain := make([]byte, 0, 9+len(p.entries)*packEntrySize)
	plain = append(plain, "LBPK"...)
	plain = append(plain, 1)
	plain = binary.LittleEndian.AppendUint32(plain, uint32(len(p.entries)))
	for _, e := range p.entries {
		plain = append(plain, e.Type)
		plain = append(plain, e.ID[:]...)
		plain = binary.LittleEndian.AppendUint32(plain, e.Offset)
		plain = binary.LittleEndian.AppendUint32(plain, e.Length)
		plain = binary.LittleEndian.AppendUint32(plain, e.RawLength)
	}
	start := len(p.buf)
	data = c.Seal(p.buf, plain, BindAAD("lifeboat pack header", c.vaultID))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(data)-start))
	return data, ObjectID(data), p.entries
}

// PackHeaderLength returns the length of the sealed header given the last
// 4 bytes of a pack, checking it fits in a pack of size bytes.
func PackHeaderLength(trailer []byte, size int64) (int64, error) {
	if len(trailer) != 4 || size < 4 {
		return 0, fmt.Errorf("pack too short: %w", ErrCorrupt)
	}
	n := int64(binary.LittleEndian.Uint32(trailer))
	if n+4 > size || n < 9 {
		return 0, fmt.Errorf("pack header length %d does not fit pack of %d bytes: %w", n, size, ErrCorrupt)
	}
	return n, nil
}

// ParsePackHeader opens a sealed pack header and checks every entry lies
// within the first blobsEnd bytes of the pack.
func ParsePackHeader(c *Codec, sealed []byte, blobsEnd int64) ([]PackEntry, error) {
	plain, err := c.Open(sealed, BindAAD("lifeboat pack header", c.vaultID))
	for _, id := range c.packIDs {
		if err == nil {
			break
		}
		if id != c.vaultID {
			plain, err = c.Open(sealed, BindAAD("lifeboat pack header", id))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pack header (of another vault, or damaged): %w", err)
	}
	if len(plain) < 9 || string(plain[:4]) != "LBPK" {
		return nil, fmt.Errorf("pack header: bad magic: %w", ErrCorrupt)
	}
	if plain[4] != 1 {
		return nil, fmt.Errorf("pack header version %d is not supported", plain[4])
	}
	n := int(binary.LittleEndian.Uint32(plain[5:]))
	rest := plain[9:]
	if len(rest) != n*packEntrySize {
		return nil, fmt.Errorf("pack header: %d bytes for %d entries: %w", len(rest), n, ErrCorrupt)
	}
	entries := make([]PackEntry, n)
	for i := range entries {
		e := &entries[i]
		e.Type = rest[0]
		copy(e.ID[:], rest[1:33])
		e.Offset = binary.LittleEndian.Uint32(rest[33:])
		e.Length = binary.LittleEndian.Uint32(rest[37:])
		e.RawLength = binary.LittleEndian.Uint32(rest[41:])
		if int64(e.Offset)+int64(e.Length) > blobsEnd {
			return nil, fmt.Errorf("pack header: entry %d outside the pack: %w", i, ErrCorrupt)
		}
		rest = rest[packEntrySize:]
	}
	return entries, nil
}

// NewPackBuilderBuf returns a builder that appends to buf[:0].
func NewPackBuilderBuf(buf []byte) *PackBuilder { return &PackBuilder{buf: buf[:0]} }
