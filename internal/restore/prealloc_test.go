package restore

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
)

func allocatedBytes(t *testing.T, f *os.File) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestPreallocate: a new image gets exactly the blocks about to be
// written reserved before any write, the last one clipped to the disk's
// size; an in-place target gets nothing reserved.
func TestPreallocate(t *testing.T) {
	const cs = 64 << 10
	size := int64(8<<20 + 12<<10) // the last block is 12 KiB
	blocks := []int{0, 1, 2, 10, 128}
	want := int64(4*cs + 12<<10)
	for _, inPlace := range []bool{false, true} {
		f, err := os.Create(filepath.Join(t.TempDir(), "d.raw"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		tg := &target{Target: Target{Disk: recovery.Disk{Name: "d"}, Path: f.Name(), InPlace: inPlace},
			f: f, m: image.NewManifest(size, cs), regular: true}
		if err := tg.preallocate(blocks); err != nil {
			t.Fatal(err)
		}
		got := allocatedBytes(t, f)
		t.Logf("in place %v: %d bytes allocated", inPlace, got)
		switch {
		case inPlace && got != 0:
			t.Errorf("in-place target: %d bytes preallocated, want none", got)
		case !inPlace && (got < want || got > want+64<<10):
			t.Errorf("new image: %d bytes preallocated, want %d (blocks %v)", got, want, blocks)
		}
		if fi, _ := f.Stat(); fi.Size() != size {
			t.Errorf("preallocation changed the size to %d", fi.Size())
		}
	}
}
