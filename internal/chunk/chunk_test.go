package chunk

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"lifeboat/internal/crypto"
)

func testCodec(t testing.TB) *Codec {
	t.Helper()
	dk, _ := crypto.NewRandomKey()
	ik, _ := crypto.NewRandomKey()
	c, err := NewCodec(dk, NewHasher(ik), LevelDefault, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func blocks() map[string][]byte {
	random := make([]byte, 256<<10)
	rand.Read(random)
	text := bytes.Repeat([]byte("lifeboat keeps disks safe. "), 10000)
	return map[string][]byte{"random": random, "text": text, "one": {7}, "empty": {}}
}

func TestBlobRoundTrip(t *testing.T) {
	c := testCodec(t)
	for name, block := range blocks() {
		t.Run(name, func(t *testing.T) {
			id := c.Hasher().Sum(block)
			blob, _ := c.EncodeBlob(nil, id, block, nil)
			got, err := c.DecodeBlob(nil, id, blob, len(block))
			if err != nil || !bytes.Equal(got, block) {
				t.Fatalf("roundtrip: %v", err)
			}
			if name == "text" && len(blob) > len(block)/4 {
				t.Errorf("text compressed to %d of %d bytes", len(blob), len(block))
			}
			if name == "random" && len(blob) != len(block)+1+crypto.Overhead {
				t.Errorf("random block stored in %d bytes, want raw %d", len(blob), len(block)+1+crypto.Overhead)
			}
			// Every single flipped bit is caught.
			for _, i := range []int{0, 12, len(blob) / 2, len(blob) - 1} {
				bad := bytes.Clone(blob)
				bad[i] ^= 0x10
				if _, err := c.DecodeBlob(nil, id, bad, len(block)); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("flip at %d: %v", i, err)
				}
			}
			// A blob presented under another ID is rejected.
			var other ID
			other[0] = 1
			if _, err := c.DecodeBlob(nil, other, blob, len(block)); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("swapped ID: %v", err)
			}
		})
	}
}

func TestHasherKeyed(t *testing.T) {
	k1, _ := crypto.NewRandomKey()
	k2, _ := crypto.NewRandomKey()
	b := []byte("block")
	if NewHasher(k1).Sum(b) == NewHasher(k2).Sum(b) {
		t.Fatal("different keys gave the same ID")
	}
	if NewHasher(k1).Sum(b) != NewHasher(k1).Sum(b) {
		t.Fatal("same key gave different IDs")
	}
}

func TestIsZeroBlock(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 64 << 10, 1<<20 + 3} {
		b := make([]byte, n)
		if !IsZeroBlock(b) {
			t.Fatalf("zero block of %d not detected", n)
		}
		if n > 0 {
			b[n-1] = 1
			if IsZeroBlock(b) {
				t.Fatalf("non-zero block of %d called zero", n)
			}
		}
	}
}

func TestPackAndIndex(t *testing.T) {
	c := testCodec(t)
	pb := NewPackBuilder(1 << 20)
	var ids []ID
	for i := 0; i < 10; i++ {
		block := []byte(fmt.Sprintf("block %d %s", i, bytes.Repeat([]byte{byte(i)}, 1000)))
		id := c.Hasher().Sum(block)
		ids = append(ids, id)
		blob, _ := c.EncodeBlob(nil, id, block, nil)
		pb.Add(id, blob, len(block))
	}
	data, packID, entries := pb.Finish(c)
	if packID != ObjectID(data) {
		t.Fatal("pack ID is not the hash of the pack")
	}
	hl, err := PackHeaderLength(data[len(data)-4:], int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	blobsEnd := int64(len(data)) - 4 - hl
	parsed, err := ParsePackHeader(c, data[blobsEnd:len(data)-4], blobsEnd)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(parsed) != fmt.Sprint(entries) {
		t.Fatal("parsed header differs from entries")
	}
	for _, e := range parsed {
		if _, err := c.DecodeBlob(nil, e.ID, data[e.Offset:e.Offset+e.Length], int(e.RawLength)); err != nil {
			t.Fatal(err)
		}
	}
	f := &IndexFile{Packs: []IndexPack{{ID: packID, Entries: entries}}}
	sealed := c.SealIndex(f)
	g, err := c.OpenIndex(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(g) != fmt.Sprint(f) {
		t.Fatal("index roundtrip differs")
	}
	ix := NewIndex()
	for _, p := range g.Packs {
		ix.Add(p.ID, p.Entries)
	}
	for _, id := range ids {
		p, loc, ok := ix.Lookup(id)
		if !ok || p != packID || loc.RawLength == 0 {
			t.Fatalf("lookup %s: %v %v", id, ok, loc)
		}
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)/2] ^= 1
	if _, err := c.OpenIndex(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt index: %v", err)
	}
	if _, err := DecodeIndexFile([]byte("LBIX\x01\x05\x00\x00\x00")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated index: %v", err)
	}
}

func FuzzDecodeIndexFile(f *testing.F) {
	f.Add((&IndexFile{Packs: []IndexPack{{Entries: []PackEntry{{RawLength: 5}}}}}).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := DecodeIndexFile(b)
		if err == nil && !bytes.Equal(g.Encode(), b) {
			// Decoding accepts only canonical encodings, except entry order.
			if len(g.Encode()) != len(b) {
				t.Fatalf("decoded index re-encodes to %d bytes, was %d", len(g.Encode()), len(b))
			}
		}
	})
}

// The compression probe stores incompressible blocks raw without
// compressing them whole, and misses no block whose redundancy it can
// see: a random block with a run of zeros, text, or a binary compress
// exactly as they would without it.
func TestCompressionProbe(t *testing.T) {
	c := testCodec(t)
	random := make([]byte, 256<<10)
	rand.Read(random)
	tail := bytes.Clone(random)
	clear(tail[len(tail)*7/8:]) // an eighth of zeros at the end
	head := bytes.Clone(random)
	copy(head, bytes.Repeat([]byte("abc "), 8<<10)) // an eighth of text at the start
	text := bytes.Repeat([]byte("lifeboat keeps disks safe. "), 10000)
	// The same at 64 KiB (a tracked disk's chunk size), whose probe is a
	// quarter as long.
	tail64 := bytes.Clone(random[:64<<10])
	clear(tail64[len(tail64)*7/8:])
	head64 := bytes.Clone(random[:64<<10])
	copy(head64, bytes.Repeat([]byte("abc "), 2<<10))
	for _, tc := range []struct {
		name  string
		block []byte
		probe bool
	}{{"random", random, false}, {"zeros at the end", tail, true}, {"text at the start", head, true},
		{"text", text, true}, {"small random", random[:probeMin-1], true},
		{"random 64 KiB", random[:64<<10], false}, {"zeros at the end of 64 KiB", tail64, true},
		{"text at the start of 64 KiB", head64, true}, {"text 64 KiB", text[:64<<10], true}} {
		var buf []byte
		if got := c.mayCompress(tc.block, &buf); got != tc.probe {
			t.Errorf("%s: probe says %v", tc.name, got)
		}
		id := c.Hasher().Sum(tc.block)
		blob, _ := c.EncodeBlob(nil, id, tc.block, nil)
		whole, ok := c.frames.compress(nil, tc.block)
		compressed := ok && len(whole) <= len(tc.block)-len(tc.block)/16
		if raw := len(blob) == len(tc.block)+1+crypto.Overhead; raw == compressed {
			t.Errorf("%s: stored in %d bytes (raw %v), but compressed whole it takes %d of %d", tc.name, len(blob), raw, len(whole), len(tc.block))
		}
		if got, err := c.DecodeBlob(nil, id, blob, len(tc.block)); err != nil || !bytes.Equal(got, tc.block) {
			t.Errorf("%s: roundtrip: %v", tc.name, err)
		}
	}
}
