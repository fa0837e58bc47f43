package crypto

import (
	"bytes"
	"errors"
	"testing"
)

// TestRing: generation 1 seals untagged (as before rekeying existed), a
// later one tags; a ring opens every generation it holds, names one it
// lacks, and an untagged message whose nonce looks like a tag still opens.
func TestRing(t *testing.T) {
	k1, _ := NewRandomKey()
	k2, _ := NewRandomKey()
	old, err := NewRing(map[uint16]Key{1: k1})
	if err != nil {
		t.Fatal(err)
	}
	both, _ := NewRing(map[uint16]Key{1: k1, 2: k2})
	aad := []byte("aad")
	m1 := old.Seal(nil, []byte("one"), aad)
	a1, _ := NewAEAD(k1)
	if p, err := a1.Open(nil, m1, aad); err != nil || string(p) != "one" {
		t.Fatalf("generation 1 is not sealed as plain AEAD: %q %v", p, err)
	}
	m2 := both.Seal(nil, []byte("two"), aad)
	if g, ok := Generation(m2); !ok || g != 2 || len(m2) != 3+both.Overhead() {
		t.Fatalf("generation 2 tag: %d %v, len %d", g, ok, len(m2))
	}
	for _, m := range [][]byte{m1, m2} {
		if _, err := both.Open(nil, m, aad); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.Open(nil, m2, aad); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("generation 2 with a generation 1 ring: %v", err)
	}
	// An untagged message that happens to start with "LK".
	for i := 0; ; i++ {
		m := old.Seal(nil, []byte("x"), aad)
		if !bytes.HasPrefix(m, []byte("LK")) {
			if i < 1<<20 {
				continue
			}
			t.Fatal("no nonce starting with LK in 2^20 tries (chance e^-16)")
		}
		if p, err := both.Open(nil, m, aad); err != nil || string(p) != "x" {
			t.Fatalf("untagged message looking tagged: %q %v", p, err)
		}
		break
	}
	if _, err := both.Open(nil, append([]byte("LK\x00\x02"), m1[4:]...), aad); err == nil {
		t.Fatal("tampered message opened")
	}
}
