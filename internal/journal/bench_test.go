package journal

import (
	"path/filepath"
	"testing"
)

// BenchmarkAppend4K is the receiver's side of the journal: 4 KiB writes
// appended one after the other (page cache, no fsync).
func BenchmarkAppend4K(b *testing.B) {
	benchAppend(b, 0)
}

// BenchmarkAppend4KSync64 adds an fsync every 64 appends, as FLUSHes
// from a guest committing in small groups would.
func BenchmarkAppend4KSync64(b *testing.B) {
	benchAppend(b, 64)
}

func benchAppend(b *testing.B, syncEvery int) {
	j, err := Create(filepath.Join(b.TempDir(), "j"), 1<<40, now)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	data := make([]byte, 4096)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		end, err := j.Append(KindData, 0, int64(i%1000)*4096, 0, data)
		if err != nil {
			b.Fatal(err)
		}
		if syncEvery > 0 && i%syncEvery == 0 {
			if err := j.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		if i%4096 == 0 { // keep the journal small, as the shipper would
			j.Ack(end)
		}
	}
}
