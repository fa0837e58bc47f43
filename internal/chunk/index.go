package chunk

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
)

// Location says where a chunk's blob is.
type Location struct {
	Pack      uint32 // number of the pack in the owning Index
	Offset    uint32
	Length    uint32
	RawLength uint32
}

// Index maps chunk IDs to blob locations. It is safe for concurrent use.
// Memory is about 80 bytes per chunk (a map of 48-byte entries); the
// further locations of a chunk stored more than once (rare: two backups
// stored it at once, or prune repacked it) are kept aside, so that a
// reader can fall back to them when one fails.
type Index struct {
	mu      sync.RWMutex
	packs   []ID
	packNum map[ID]uint32
	chunks  map[ID]Location
	more    map[ID][]Location // locations after the first; nil until there is one
}

// PackLocation is a chunk's location with its pack's ID.
type PackLocation struct {
	Pack ID
	Loc  Location
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{packNum: map[ID]uint32{}, chunks: map[ID]Location{}}
}

// Add records the entries of one pack. A chunk already located elsewhere
// keeps its first location for Lookup; the new one is kept for Locations.
func (ix *Index) Add(pack ID, entries []PackEntry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n, ok := ix.packNum[pack]
	if !ok {
		n = uint32(len(ix.packs))
		ix.packs = append(ix.packs, pack)
		ix.packNum[pack] = n
	}
	for _, e := range entries {
		loc := Location{Pack: n, Offset: e.Offset, Length: e.Length, RawLength: e.RawLength}
		first, dup := ix.chunks[e.ID]
		if !dup {
			ix.chunks[e.ID] = loc
			continue
		}
		if first == loc || slices.Contains(ix.more[e.ID], loc) {
			continue
		}
		if ix.more == nil {
			ix.more = map[ID][]Location{}
		}
		ix.more[e.ID] = append(ix.more[e.ID], loc)
	}
}

// Locations returns every location of chunk id, the one Lookup returns
// first.
func (ix *Index) Locations(id ID) []PackLocation {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	first, ok := ix.chunks[id]
	if !ok {
		return nil
	}
	out := []PackLocation{{ix.packs[first.Pack], first}}
	for _, l := range ix.more[id] {
		out = append(out, PackLocation{ix.packs[l.Pack], l})
	}
	return out
}

// Lookup returns where chunk id is stored.
func (ix *Index) Lookup(id ID) (pack ID, loc Location, ok bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	loc, ok = ix.chunks[id]
	if !ok {
		return pack, loc, false
	}
	return ix.packs[loc.Pack], loc, true
}

// Has reports whether chunk id is stored.
func (ix *Index) Has(id ID) bool {
	ix.mu.RLock()
	_, ok := ix.chunks[id]
	ix.mu.RUnlock()
	return ok
}

// HasPack reports whether any chunk of pack is indexed.
func (ix *Index) HasPack(pack ID) bool {
	ix.mu.RLock()
	_, ok := ix.packNum[pack]
	ix.mu.RUnlock()
	return ok
}

// Len is the number of distinct chunks.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.chunks)
}

// Each calls fn for every chunk.
func (ix *Index) Each(fn func(id ID, pack ID, loc Location)) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for id, loc := range ix.chunks {
		fn(id, ix.packs[loc.Pack], loc)
	}
}

// IndexFile is the content of one index object: packs and their entries.
type IndexFile struct {
	Packs []IndexPack
}

// IndexPack lists the blobs of one pack in an index object.
type IndexPack struct {
	ID      ID
	Entries []PackEntry
}

// Encode returns the index object's plaintext (docs/format.md, "Index").
func (f *IndexFile) Encode() []byte {
	total := 0
	for _, p := range f.Packs {
		total += len(p.Entries)
	}
	out := make([]byte, 0, 13+len(f.Packs)*32+total*48)
	out = append(out, "LBIX"...)
	out = append(out, 1)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(f.Packs)))
	for _, p := range f.Packs {
		out = append(out, p.ID[:]...)
	}
	out = binary.LittleEndian.AppendUint32(out, uint32(total))
	for n, p := range f.Packs {
		for _, e := range p.Entries {
			out = append(out, e.ID[:]...)
			out = binary.LittleEndian.AppendUint32(out, uint32(n))
			out = binary.LittleEndian.AppendUint32(out, e.Offset)
			out = binary.LittleEndian.AppendUint32(out, e.Length)
			out = binary.LittleEndian.AppendUint32(out, e.RawLength)
		}
	}
	return out
}

// DecodeIndexFile parses an index object's plaintext.
func DecodeIndexFile(b []byte) (*IndexFile, error) {
	if len(b) < 13 || string(b[:4]) != "LBIX" {
		return nil, fmt.Errorf("index: bad magic: %w", ErrCorrupt)
	}
	if b[4] != 1 {
		return nil, fmt.Errorf("index version %d is not supported", b[4])
	}
	np := int(binary.LittleEndian.Uint32(b[5:]))
	b = b[9:]
	if len(b) < np*32+4 {
		return nil, fmt.Errorf("index: truncated pack table: %w", ErrCorrupt)
	}
	f := &IndexFile{Packs: make([]IndexPack, np)}
	for i := range f.Packs {
		copy(f.Packs[i].ID[:], b[i*32:])
	}
	b = b[np*32:]
	ne := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if len(b) != ne*48 {
		return nil, fmt.Errorf("index: %d bytes for %d entries: %w", len(b), ne, ErrCorrupt)
	}
	// Size each pack's entry list exactly: index objects can hold millions.
	counts := make([]int, np)
	for i := 0; i < ne; i++ {
		n := binary.LittleEndian.Uint32(b[i*48+32:])
		if int(n) >= np {
			return nil, fmt.Errorf("index: entry %d names pack %d of %d: %w", i, n, np, ErrCorrupt)
		}
		counts[n]++
	}
	for i, c := range counts {
		f.Packs[i].Entries = make([]PackEntry, 0, c)
	}
	for i := 0; i < ne; i++ {
		e := b[i*48 : i*48+48]
		n := binary.LittleEndian.Uint32(e[32:])
		var pe PackEntry
		pe.Type = TypeData
		copy(pe.ID[:], e[:32])
		pe.Offset = binary.LittleEndian.Uint32(e[36:])
		pe.Length = binary.LittleEndian.Uint32(e[40:])
		pe.RawLength = binary.LittleEndian.Uint32(e[44:])
		f.Packs[n].Entries = append(f.Packs[n].Entries, pe)
	}
	return f, nil
}

// SealIndex returns the stored bytes of an index object.
func (c *Codec) SealIndex(f *IndexFile) []byte {
	return c.SealObject(f.Encode(), BindAAD("lifeboat index", c.vaultID))
}

// OpenIndex parses a stored index object.
func (c *Codec) OpenIndex(sealed []byte) (*IndexFile, error) {
	plain, err := c.OpenObject(sealed, BindAAD("lifeboat index", c.vaultID))
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	return DecodeIndexFile(plain)
}
