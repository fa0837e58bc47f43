package chunk

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestFramesInterchangeable checks the frame codecs against each other: each
// one's frames decode with every other (the implementation is not part of
// the format), output past the limit is refused, and truncated frames never
// decode to the original. (A flipped byte is caught by the blob's MAC before
// decompression, and is tested there: chunk_test.go.)
func TestFramesInterchangeable(t *testing.T) {
	native, err := newFrames(LevelFastest, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	pure, err := newGoFrames(LevelFastest, 1<<20, 1<<20+1<<16, runtime.GOMAXPROCS(0))
	if err != nil {
		t.Fatal(err)
	}
	impls := map[string]frameCodec{fmt.Sprintf("native(%T)", native): native, "go": pure}
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := map[string][]byte{
		"text":   bytes.Repeat([]byte("lifeboat keeps every disk of a machine. "), 6000),
		"random": randomBytes(rng, 256<<10),
		"mixed":  append(bytes.Repeat([]byte{7}, 100<<10), randomBytes(rng, 100<<10)...),
		"small":  []byte("x"),
	}
	for encName, enc := range impls {
		for decName, dec := range impls {
			for inName, in := range inputs {
				t.Run(encName+"/"+decName+"/"+inName, func(t *testing.T) {
					prefix := []byte{encZstd}
					frame, ok := enc.compress(append([]byte(nil), prefix...), in)
					if !ok {
						t.Fatal("compress refused")
					}
					if !bytes.Equal(frame[:1], prefix) {
						t.Fatal("compress did not append to dst")
					}
					out, err := dec.decompress(nil, frame[1:], len(in))
					if err != nil {
						t.Fatalf("decompress: %v", err)
					}
					if !bytes.Equal(out, in) {
						t.Fatal("round trip differs")
					}
					// Reusing a buffer that is too small or large enough.
					buf := make([]byte, 3, 5)
					if out, err = dec.decompress(buf, frame[1:], len(in)); err != nil || !bytes.Equal(out, in) {
						t.Fatalf("decompress into small buffer: %v", err)
					}
					if _, err := dec.decompress(nil, frame[1:], len(in)-1); err == nil {
						t.Error("output past the limit accepted")
					}
					for _, cut := range []int{0, 1, len(frame) / 2} {
						if out, err := dec.decompress(nil, frame[1:1+cut], len(in)); err == nil && bytes.Equal(out, in) {
							t.Errorf("frame cut to %d bytes decoded to the original", cut)
						}
					}
				})
			}
		}
	}
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
