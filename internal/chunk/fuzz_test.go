package chunk

import (
	"bytes"
	"encoding/binary"
	"testing"

	"lifeboat/internal/testenv"
)

// Fuzz targets for the parsers of packs, pack headers, blobs and index
// objects (issue 10, "Proof"): no input panics, and what a parser
// allocates is bounded by its input. scripts/test.sh runs each for a few
// seconds; the seeds are objects the real code wrote.

// fuzzPack is a real pack of three blobs (random, text, one byte) and its
// index file, sealed by c.
func fuzzPack(t testing.TB, c *Codec) (pack []byte, entries []PackEntry) {
	b := NewPackBuilder(1 << 20)
	for _, block := range [][]byte{bytes.Repeat([]byte{1, 2, 3, 5, 8, 13}, 3000), bytes.Repeat([]byte("lifeboat "), 900), {7}} {
		id := c.Hasher().Sum(block)
		sealed, _ := c.EncodeBlob(nil, id, block, nil)
		b.Add(id, sealed, len(block))
	}
	pack, _, entries = b.Finish(c)
	return pack, entries
}

// FuzzPackHeader: a pack of blobs followed by a header (sealed by the
// fuzzer's plaintext, so that it authenticates) and its length, and a pack
// of arbitrary bytes: PackHeaderLength and ParsePackHeader either fail or
// return entries inside the pack, which DecodeBlob then reads.
func FuzzPackHeader(f *testing.F) {
	c := testCodec(f)
	pack, _ := fuzzPack(f, c)
	hl, err := PackHeaderLength(pack[len(pack)-4:], int64(len(pack)))
	if err != nil {
		f.Fatal(err)
	}
	end := int64(len(pack)) - 4 - hl
	plain, err := c.Open(pack[end:len(pack)-4], BindAAD("lifeboat pack header", c.vaultID))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pack[:end], plain, pack)
	f.Add([]byte{}, []byte("LBPK\x01\xff\xff\xff\xff"), []byte{9, 0, 0, 0})
	f.Fuzz(func(t *testing.T, blobs, header, raw []byte) {
		parse := func(pack []byte) {
			if len(pack) < 4 {
				return
			}
			hl, err := PackHeaderLength(pack[len(pack)-4:], int64(len(pack)))
			if err != nil {
				return
			}
			end := int64(len(pack)) - 4 - hl
			var entries []PackEntry
			testenv.CheckAlloc(t, len(pack), 4, 64<<10, func() {
				entries, err = ParsePackHeader(c, pack[end:len(pack)-4], end)
			})
			if err != nil {
				return
			}
			for i, e := range entries {
				if int64(e.Offset)+int64(e.Length) > end {
					t.Fatalf("entry %d (%d+%d) outside the %d bytes of blobs", i, e.Offset, e.Length, end)
				}
				testenv.CheckAlloc(t, int(e.Length), 4, 4<<20, func() {
					c.DecodeBlob(nil, e.ID, pack[e.Offset:e.Offset+e.Length], int(e.RawLength))
				})
			}
		}
		sealed := append(append([]byte(nil), blobs...), c.Seal(nil, header, BindAAD("lifeboat pack header", c.vaultID))...)
		parse(binary.LittleEndian.AppendUint32(sealed, uint32(len(sealed)-len(blobs))))
		parse(raw)
	})
}

// FuzzBlob: a blob whose payload (encoding byte and body) is the fuzzer's,
// sealed so that it authenticates, decodes to at most a chunk whatever the
// length the index claims.
func FuzzBlob(f *testing.F) {
	c := testCodec(f)
	block := bytes.Repeat([]byte("lifeboat "), 900)
	id := c.Hasher().Sum(block)
	sealed, _ := c.EncodeBlob(nil, id, block, nil)
	payload, err := c.aead.Open(nil, sealed, id[:])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(payload, uint32(len(block)))
	f.Add(append([]byte{encRaw}, block...), uint32(len(block)))
	f.Add([]byte{encZstd, 0x28, 0xb5, 0x2f, 0xfd}, uint32(1<<31))
	f.Fuzz(func(t *testing.T, payload []byte, rawLen uint32) {
		blob := c.aead.Seal(nil, payload, id[:])
		testenv.CheckAlloc(t, len(payload), 4, 4<<20, func() {
			c.DecodeBlob(nil, id, blob, int(rawLen))
		})
	})
}

// FuzzIndexObject: index plaintexts and stored index objects. A decoded
// index encodes to something that decodes to the same packs and entries.
func FuzzIndexObject(f *testing.F) {
	c := testCodec(f)
	pack, entries := fuzzPack(f, c)
	file := &IndexFile{Packs: []IndexPack{{ID: ObjectID(pack), Entries: entries}, {ID: ID{1}, Entries: entries[:1]}}}
	f.Add(file.Encode())
	f.Add(c.SealIndex(file))
	f.Add([]byte("LBIX\x01\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		testenv.CheckAlloc(t, len(data), 4, 64<<10, func() { c.OpenIndex(data) })
		var got *IndexFile
		var err error
		testenv.CheckAlloc(t, len(data), 4, 64<<10, func() { got, err = DecodeIndexFile(data) })
		if err != nil {
			return
		}
		again, err := DecodeIndexFile(got.Encode())
		if err != nil {
			t.Fatalf("re-encoded index does not decode: %v", err)
		}
		if len(again.Packs) != len(got.Packs) {
			t.Fatalf("re-encoded index has %d packs, want %d", len(again.Packs), len(got.Packs))
		}
		for i := range got.Packs {
			if again.Packs[i].ID != got.Packs[i].ID || len(again.Packs[i].Entries) != len(got.Packs[i].Entries) {
				t.Fatalf("pack %d differs after re-encoding", i)
			}
		}
	})
}
