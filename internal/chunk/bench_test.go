package chunk

import (
	"crypto/rand"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

// benchData is real-ish data: a slice of the Go toolchain binary, which
// compresses about like a disk full of programs.
func benchData(b *testing.B, n int) []byte {
	data, err := os.ReadFile("/usr/local/go/bin/go")
	if err != nil || len(data) < n {
		data = make([]byte, n)
		rand.Read(data)
	}
	return data[:n]
}

func BenchmarkHash(b *testing.B) {
	c := testCodec(b)
	for _, size := range []int{64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dK", size>>10), func(b *testing.B) {
			data := benchData(b, size)
			b.SetBytes(int64(size))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.Hasher().Sum(data)
				}
			})
		})
	}
}

func BenchmarkEncodeBlob(b *testing.B) {
	for _, lvl := range []struct {
		name  string
		level Level
	}{{"fastest", LevelFastest}, {"default", LevelDefault}} {
		for _, size := range []int{64 << 10, 256 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%dK", lvl.name, size>>10), func(b *testing.B) {
				c := testCodec(b)
				c2, _ := NewCodec([32]byte{1}, c.Hasher(), lvl.level, 1<<20)
				data := benchData(b, size)
				id := c.Hasher().Sum(data)
				b.SetBytes(int64(size))
				var total, n atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					var dst, scratch []byte
					for pb.Next() {
						dst, scratch = c2.EncodeBlob(dst[:0], id, data, scratch)
						total.Add(int64(len(dst)))
						n.Add(1)
					}
				})
				b.ReportMetric(float64(total.Load())/float64(n.Load())/float64(size), "ratio")
			})
		}
	}
}

func BenchmarkDecodeBlob(b *testing.B) {
	c := testCodec(b)
	for _, size := range []int{256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dK", size>>10), func(b *testing.B) {
			data := benchData(b, size)
			id := c.Hasher().Sum(data)
			blob, _ := c.EncodeBlob(nil, id, data, nil)
			b.SetBytes(int64(size))
			b.RunParallel(func(pb *testing.PB) {
				var dst []byte
				for pb.Next() {
					var err error
					if dst, err = c.DecodeBlob(dst, id, blob, size); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkFrames compares the frame codecs at the default level on one
// core: libzstd through cgo (native, when built with cgo) and pure Go.
// LIFEBOAT_BENCH_DATA=FILE benchmarks on that whole file instead
// of the Go toolchain binary (e.g. the non-zero chunks of bench/'s image).
func BenchmarkFrames(b *testing.B) {
	const size = 256 << 10
	data := benchData(b, 4<<20)
	if path := os.Getenv("LIFEBOAT_BENCH_DATA"); path != "" {
		d, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		data = d[:len(d)/size*size]
	}
	native, err := newFrames(LevelFastest, size)
	if err != nil {
		b.Fatal(err)
	}
	pure, err := newGoFrames(LevelFastest, size, size+1<<16, 1)
	if err != nil {
		b.Fatal(err)
	}
	for _, impl := range []struct {
		name string
		f    frameCodec
	}{{fmt.Sprintf("native=%T", native), native}, {"go", pure}} {
		var frames [][]byte
		var total int
		b.Run(impl.name+"/compress", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				frames, total = frames[:0], 0
				for off := 0; off < len(data); off += size {
					f, ok := impl.f.compress(nil, data[off:off+size])
					if !ok {
						b.Fatal("compress refused")
					}
					frames = append(frames, f)
					total += len(f)
				}
			}
			b.ReportMetric(float64(len(data))/float64(total), "ratio")
		})
		b.Run(impl.name+"/decompress", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			dst := make([]byte, size)
			for i := 0; i < b.N; i++ {
				for _, f := range frames {
					var err error
					if dst, err = impl.f.decompress(dst, f, size); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
