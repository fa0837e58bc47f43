package directio

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestAlloc(t *testing.T) {
	for _, n := range []int{1, 4095, 4096, 1 << 20} {
		b := Alloc(n)
		if len(b) != n || !Aligned(b) {
			t.Errorf("Alloc(%d): len %d aligned %v", n, len(b), Aligned(b))
		}
	}
}

// TestWriter writes a file through a Writer in pieces of every kind
// (aligned, unaligned offset, unaligned memory, unaligned length, tiny) and
// checks it reads back exactly, on a real file system of this machine.
func TestWriter(t *testing.T) {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "directio-test-")
		if err == nil {
			defer os.RemoveAll(d)
			dirs["tmpfs"] = d
		}
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			const size = 3<<20 + 777
			want := make([]byte, size)
			rng := rand.New(rand.NewPCG(3, 4))
			for i := range want {
				want[i] = byte(rng.Uint32())
			}
			f, err := os.Create(filepath.Join(dir, "img"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			w := NewWriter(f)
			defer w.Close()
			write := func(off, n int, aligned bool) {
				var p []byte
				if aligned {
					p = Alloc(n)
				} else {
					p = Alloc(n + 1)[1:]
				}
				copy(p, want[off:off+n])
				if m, err := w.WriteAt(p, int64(off)); err != nil || m != n {
					t.Fatalf("WriteAt(%d bytes at %d): %d, %v", n, off, m, err)
				}
			}
			write(0, 1<<20, true)                  // aligned: direct
			write(1<<20, 100, true)                // too short for direct
			write(1<<20+100, 4000, true)           // unaligned offset
			write(1<<20+4100, 8092, false)         // unaligned memory (ends at 1M+12192)
			write(1<<20+12192, 1<<20-12192, false) // unaligned offset and memory
			write(2<<20, size-2<<20, true)         // direct, then a buffered tail
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("file differs from what was written")
			}
			if w.d != nil && !w.disabled.Load() && w.Direct() != 2<<20 {
				t.Errorf("%d bytes written directly, want the two aligned MiB", w.Direct())
			}
			t.Logf("%s: %d of %d bytes written directly", name, w.Direct(), size)
		})
	}
}
