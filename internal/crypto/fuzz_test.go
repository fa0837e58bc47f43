package crypto

import (
	"encoding/json"
	"testing"
	"time"

	"lifeboat/internal/testenv"
)

// FuzzKeySlot: a key slot of any content is opened or refused without a
// panic, and parsing it costs what it weighs (issue 10, "Proof"). Slots
// that declare a KDF cost above the cheap one are only parsed, not
// derived: bounding the cost a slot may ask for is the key-slot work of
// issue 10 item 9, and a fuzzer would find the 4 GiB one at once.
func FuzzKeySlot(f *testing.F) {
	slot, err := SealSlot([]byte("fuzz"), []byte(`{"data_key":"AAAA"}`), fastKDF, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(slot)
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":1,"memory_kib":8,"threads":1,"salt":"","sealed":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Slot
		testenv.CheckAlloc(t, len(data), 64, 0, func() { err = json.Unmarshal(data, &s) })
		if err == nil && (s.Time > fastKDF.Time || s.MemoryKiB > fastKDF.MemoryKiB || s.Threads > 4) {
			return
		}
		var payload []byte
		testenv.CheckAlloc(t, len(data), 64, uint64(fastKDF.MemoryKiB)<<10, func() { payload, err = OpenSlot([]byte("fuzz"), data) })
		if err == nil && len(payload) > len(data) {
			t.Fatalf("a slot of %d bytes opened to a payload of %d", len(data), len(payload))
		}
	})
}

// FuzzRing: a sealed message of any content, tagged or not, is opened or
// refused by a ring of two generations without a panic, and never opens
// unless it was sealed by one of them.
func FuzzRing(f *testing.F) {
	ring, err := NewRing(map[uint16]Key{1: {1}, 2: {2}})
	if err != nil {
		f.Fatal(err)
	}
	other, _ := NewRing(map[uint16]Key{1: {3}, 7: {4}})
	f.Add(ring.Seal(nil, []byte("two"), nil))
	f.Add(other.Seal(nil, []byte("seven"), nil))
	f.Add([]byte("LK\x00\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := ring.Open(nil, data, nil); err == nil && len(p)+Overhead > len(data) {
			t.Fatalf("%d bytes opened to %d", len(data), len(p))
		}
	})
}
