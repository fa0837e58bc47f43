package crypto

import (
	"bytes"
	"errors"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

var fastKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func TestSealOpen(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAEAD(k)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("a disk block")
	sealed := a.Seal(nil, msg, []byte("aad"))
	if len(sealed) != len(msg)+Overhead {
		t.Fatalf("sealed length %d, want %d", len(sealed), len(msg)+Overhead)
	}
	got, err := a.Open(nil, sealed, []byte("aad"))
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %q, %v", got, err)
	}
	if _, err := a.Open(nil, sealed, []byte("other")); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong aad: %v", err)
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 1
		if _, err := a.Open(nil, bad, []byte("aad")); !errors.Is(err, ErrAuth) {
			t.Fatalf("flip at %d not detected: %v", i, err)
		}
	}
	if _, err := a.Open(nil, sealed[:10], nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("short: %v", err)
	}
	// Nonces are random: two seals differ.
	if bytes.Equal(a.Seal(nil, msg, nil), a.Seal(nil, msg, nil)) {
		t.Fatal("two seals of one message are equal")
	}
}

func TestSlot(t *testing.T) {
	payload := []byte(`{"data_key":"x"}`)
	slot, err := SealSlot([]byte("pw"), payload, fastKDF, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenSlot([]byte("pw"), slot)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("open slot: %q %v", got, err)
	}
	if _, err := OpenSlot([]byte("wrong"), slot); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := OpenSlot([]byte("pw"), []byte("{")); err == nil || errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("malformed slot: %v", err)
	}
	if _, err := SealSlot(nil, payload, fastKDF, time.Unix(0, 0)); err == nil {
		t.Fatal("empty passphrase accepted")
	}
}

// BenchmarkDerive is one key-slot unlock at the default cost, in a fresh
// process's conditions as far as a benchmark can: the heap is returned to
// the OS before each derivation, so the work area must be faulted in.
func BenchmarkDerive(b *testing.B) {
	for _, warm := range []bool{false, true} {
		b.Run(map[bool]string{false: "cold", true: "warmHeap"}[warm], func(b *testing.B) {
			p := DefaultKDF
			salt := make([]byte, 16)
			for i := 0; i < b.N; i++ {
				debug.FreeOSMemory()
				if warm {
					p.derive([]byte("pw"), salt)
				} else {
					argon2.IDKey([]byte("pw"), salt, p.Time, p.MemoryKiB, p.Threads, KeySize)
				}
			}
		})
	}
}
