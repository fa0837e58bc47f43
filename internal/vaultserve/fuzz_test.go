package vaultserve

import (
	"fmt"
	"testing"
)

// FuzzParseRange: a Range header a client sends is refused or read as
// 0 <= from <= to, the range it says, whose length to-from+1 does not
// overflow.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=5-4", "bytes=-1-3", "bytes=0-9223372036854775807", "bytes=1-", "items=0-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		from, to, ok := parseRange(s)
		if !ok {
			return
		}
		if from < 0 || to < from || to-from+1 <= 0 {
			t.Fatalf("%q read as %d-%d", s, from, to)
		}
		if again, _, _ := parseRange(fmt.Sprintf("bytes=%d-%d", from, to)); again != from {
			t.Fatalf("%q read as %d-%d, which does not read back", s, from, to)
		}
	})
}
