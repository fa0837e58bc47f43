// Package testenv holds helpers shared by the tests of several packages.
package testenv

import (
	"runtime"
	"testing"
)

// Allocated returns the bytes fn allocated on the heap. Fuzz targets use it
// to check that a parser's allocations are bounded by its input: each fuzz
// worker is a process of its own that runs one input at a time, so what
// else runs meanwhile allocates little.
func Allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// allocSlack is what the fuzzing engine's own goroutines may allocate
// while fn runs (a few KiB were seen): the bounds are meant to catch
// allocations sized by a length field, which are megabytes to gigabytes.
const allocSlack = 64 << 10

// CheckAlloc fails t if fn allocates more than perByte bytes for each of
// the n input bytes plus fixed (plus a slack for the fuzzing engine).
func CheckAlloc(t testing.TB, n int, perByte, fixed uint64, fn func()) {
	t.Helper()
	if got, limit := Allocated(fn), uint64(n)*perByte+fixed+allocSlack; got > limit {
		t.Fatalf("parsing %d bytes allocated %d bytes, more than the bound of %d", n, got, limit)
	}
}
