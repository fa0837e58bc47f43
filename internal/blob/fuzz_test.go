package blob

import (
	"bytes"
	"strings"
	"testing"

	"lifeboat/internal/testenv"
)

// FuzzRemoteListing: a listing from a `vault serve` endpoint (or whatever
// answers in its place) is refused, or gives valid names under the prefix
// asked for with sizes not negative, and tells a complete listing from
// one cut short, costing what it weighs.
func FuzzRemoteListing(f *testing.F) {
	f.Add([]byte("12 points/abc\n4096 points/def\n.\n"), "points/")
	f.Add([]byte("12 points/abc\n"), "points/")
	f.Add([]byte("-1 ../x\n.\n"), "")
	f.Add([]byte("99999999999999999999 keys/a\n"), "keys/")
	f.Fuzz(func(t *testing.T, data []byte, prefix string) {
		if validPrefix(prefix) != nil {
			return
		}
		var got []Info
		var complete bool
		var err error
		testenv.CheckAlloc(t, len(data), 64, 0, func() {
			complete, err = readListing(bytes.NewReader(data), prefix, func(i Info) error { got = append(got, i); return nil })
		})
		for _, i := range got {
			if ValidName(i.Name) != nil || !strings.HasPrefix(i.Name, prefix) || i.Size < 0 {
				t.Fatalf("listing gave %+v for prefix %q", i, prefix)
			}
		}
		if complete && (err != nil || !bytes.Contains(data, []byte(".\n")) && !bytes.HasSuffix(data, []byte("."))) {
			t.Fatalf("complete listing without its final line, or with an error: %v", err)
		}
	})
}
