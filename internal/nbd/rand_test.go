package nbd

import "math/rand/v2"

// newRand returns a deterministic byte and number source for tests.
func newRand(seed int64) *testRand {
	return &testRand{rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))}
}

type testRand struct{ *rand.Rand }

// Read fills p with pseudo-random bytes.
func (r *testRand) Read(p []byte) {
	for i := 0; i < len(p); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(p); j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
}
