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

// SealInPlace seals what Seal seals, for every generation: the same
// layout, opened by Open, and a tampered byte is refused.
func TestRingSealInPlace(t *testing.T) {
	k1, _ := NewRandomKey()
	k2, _ := NewRandomKey()
	one, _ := NewRing(map[uint16]Key{1: k1})
	both, _ := NewRing(map[uint16]Key{1: k1, 2: k2})
	aad := []byte("chunk id")
	plain := bytes.Repeat([]byte("in place "), 1000)
	for _, r := range []*Ring{one, both} {
		msg := make([]byte, len(plain)+r.Overhead())
		copy(msg[r.PlainOffset():], plain)
		r.SealInPlace(msg, aad)
		if bytes.Contains(msg, plain[:64]) {
			t.Fatalf("generation %d: the plaintext is still there", r.Current())
		}
		if len(r.Seal(nil, plain, aad)) != len(msg) {
			t.Fatalf("generation %d: in place %d bytes, Seal %d", r.Current(), len(msg), len(r.Seal(nil, plain, aad)))
		}
		if g, _ := Generation(msg); r.Current() != 1 && g != r.Current() {
			t.Fatalf("generation %d: tagged %d", r.Current(), g)
		}
		got, err := both.Open(nil, msg, aad)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("generation %d: open: %v", r.Current(), err)
		}
		msg[len(msg)/2] ^= 1
		if _, err := both.Open(nil, msg, aad); err == nil {
			t.Fatalf("generation %d: a tampered message opened", r.Current())
		}
	}
}
