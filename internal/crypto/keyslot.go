package crypto

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/sys/unix"
)

// KDFParams are the Argon2id parameters of a key slot.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF costs about a quarter of a second on one core of a 2026 server
// and 64 MiB of memory: slow for a guesser, unnoticeable for a backup.
var DefaultKDF = KDFParams{Time: 2, MemoryKiB: 64 * 1024, Threads: 2}

// Slot is a key slot as stored in keys/<id>.
type Slot struct {
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	KDF     string    `json:"kdf"`
	KDFParams
	Salt   []byte `json:"salt"`
	Sealed []byte `json:"sealed"`
	// Name labels the slot for people (vault key list, remove); slots
	// written before names existed have none. Generation is the newest
	// data key generation the slot wraps (0: the first). Neither is
	// authenticated: they are labels and hints, never trusted for keys.
	Name       string `json:"name,omitempty"`
	Generation uint16 `json:"generation,omitempty"`
}

var slotAAD = []byte("lifeboat key slot v1")

// ErrWrongPassphrase means no key slot opens with the passphrase given.
var ErrWrongPassphrase = errors.New("wrong passphrase")

func (p KDFParams) derive(passphrase, salt []byte) Key {
	var k Key
	warmHeap(int(p.MemoryKiB) << 10)
	copy(k[:], argon2.IDKey(passphrase, salt, p.Time, p.MemoryKiB, p.Threads, KeySize))
	// Free the work area now, while it is still mapped and faulted in, so
	// that the buffers of the operation that follows (packs, chunks,
	// restore runs) are carved from it rather than from fresh memory: a
	// live incremental backup took 14,500–17,000 page faults without this
	// and 2,000–2,900 with it (perf stat -e page-faults). Only for work
	// areas worth it, as warmHeap.
	if int(p.MemoryKiB)<<10 >= warmMin {
		runtime.GC()
	}
	return k
}

// warmMin is the work area from which warming and freeing it pay.
const warmMin = 4 << 20

// warmHeap makes the heap hold n bytes of memory that is already mapped,
// in huge pages where the kernel allows it, before Argon2 allocates its
// n-byte work area. Without it the work area is faulted in 4 KiB at a
// time: 16,384 page faults for 64 MiB, which on a virtual machine cost
// more than the hashing itself (0.16 s of 0.2 s measured; 0.04 s with
// it, see BenchmarkDerive). The freed block is reused by Argon2's
// allocation; the garbage collector zeroes it as for any allocation. Best
// effort: where madvise fails nothing is lost but the speed.
func warmHeap(n int) {
	if n < warmMin {
		return
	}
	b := make([]byte, n+2<<20)
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	b = nil
	runtime.GC()
}

// SealSlot wraps payload under passphrase in a new key slot.
func SealSlot(passphrase, payload []byte, params KDFParams, now time.Time) ([]byte, error) {
	return SealNamedSlot(passphrase, payload, params, now, "", 0)
}

// SealNamedSlot is SealSlot for a slot labelled name, wrapping data keys
// up to generation gen.
func SealNamedSlot(passphrase, payload []byte, params KDFParams, now time.Time, name string, gen uint16) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("empty passphrase")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("reading salt: %w", err)
	}
	aead, err := NewAEAD(params.derive(passphrase, salt))
	if err != nil {
		return nil, err
	}
	slot := Slot{Version: 1, Created: now.UTC(), KDF: "argon2id", KDFParams: params, Salt: salt,
		Sealed: aead.Seal(nil, payload, slotAAD), Name: name, Generation: gen}
	return json.MarshalIndent(slot, "", "  ")
}

// Maxima of a key slot's KDF parameters. Opening a vault derives a key for
// every slot the passphrase does not open, so one planted slot with a huge
// cost would make every open slow and memory-hungry: slots beyond these
// (16 times the default memory, 8 times its passes) are refused unread.
const (
	MaxKDFTime      = 16
	MaxKDFMemoryKiB = 1 << 20 // 1 GiB
	MaxKDFThreads   = 16
)

// Cost is the work of deriving a key with p, in KiB-passes: what cheapest-
// first ordering of slots compares.
func (p KDFParams) Cost() uint64 { return uint64(p.Time) * uint64(p.MemoryKiB) }

// ParseSlot reads a key slot's JSON and checks its format and KDF
// parameters against the maxima, without deriving anything.
func ParseSlot(slotJSON []byte) (*Slot, error) {
	var slot Slot
	if err := json.Unmarshal(slotJSON, &slot); err != nil {
		return nil, fmt.Errorf("malformed key slot: %w", err)
	}
	if slot.Version != 1 || slot.KDF != "argon2id" {
		return nil, fmt.Errorf("key slot version %d kdf %q is not supported", slot.Version, slot.KDF)
	}
	p := slot.KDFParams
	if p.Time == 0 || p.Time > MaxKDFTime || p.MemoryKiB < 8 || p.MemoryKiB > MaxKDFMemoryKiB || p.Threads == 0 || p.Threads > MaxKDFThreads {
		return nil, fmt.Errorf("key slot KDF parameters (time %d, memory %d KiB, threads %d) are beyond the maxima (time %d, memory %d KiB, threads %d): refused unread",
			p.Time, p.MemoryKiB, p.Threads, MaxKDFTime, MaxKDFMemoryKiB, MaxKDFThreads)
	}
	return &slot, nil
}

// OpenSlot returns the payload of a key slot, ErrWrongPassphrase if the
// passphrase does not open it, or an error naming what is malformed.
func OpenSlot(passphrase, slotJSON []byte) ([]byte, error) {
	slot, err := ParseSlot(slotJSON)
	if err != nil {
		return nil, err
	}
	return slot.Open(passphrase)
}

// Open derives the slot's key from passphrase and returns its payload, or
// ErrWrongPassphrase.
func (slot *Slot) Open(passphrase []byte) ([]byte, error) {
	aead, err := NewAEAD(slot.derive(passphrase, slot.Salt))
	if err != nil {
		return nil, err
	}
	payload, err := aead.Open(nil, slot.Sealed, slotAAD)
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return payload, nil
}
