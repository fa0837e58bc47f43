package job_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/job"
	"lifeboat/internal/nbd"
	"lifeboat/internal/recovery"
	"lifeboat/internal/source"
)

// exported backs up a dense disk of LIFEBOAT_BENCH_EXPORT_MIB MiB (default
// 256) of half-compressible data into a directory vault with the default
// chunk size, and serves it with job.ServePoint.
func exported(b *testing.B) (uri string, size int64, stop func()) {
	b.Helper()
	ctx := context.Background()
	mib := 256
	if s := os.Getenv("LIFEBOAT_BENCH_EXPORT_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	dir := b.TempDir()
	v := newDirVault(b, filepath.Join(dir, "vault"))
	img := filepath.Join(dir, "d.raw")
	f, err := os.Create(img)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 1<<20)
	for range mib {
		for i := 0; i < len(buf); i += 8 {
			x := rng.Uint64() & 0x0f0f0f0f0f0f0f0f // half the entropy: compresses about 2:1
			for k := range 8 {
				buf[i+k] = byte(x >> (8 * k))
			}
		}
		f.Write(buf)
	}
	f.Close()
	src, err := source.OpenFile(img)
	if err != nil {
		b.Fatal(err)
	}
	p, err := backup.Run(ctx, v, backup.Options{Machine: "m", Consistency: recovery.Crash, Disks: []backup.Disk{{Name: "d", Source: src}}})
	src.Close()
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(b.TempDir(), "e.sock")
	if len(sock) > 100 {
		d, _ := os.MkdirTemp("", "lbb")
		b.Cleanup(func() { os.RemoveAll(d) })
		sock = filepath.Join(d, "e.sock")
	}
	x, err := job.ServePoint(ctx, v, p, job.Export{Listen: "unix:" + sock}, job.Env{}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return x.URI("d"), p.Disks[0].Size, func() { x.Close(ctx) }
}

// BenchmarkExport: lifeboat's NBD client reading a point served by
// lifeboat export from a directory vault. seq reads the whole disk in
// 2 MiB requests, 4 in flight (MB/s of disk data); rand4k reads 4 KiB at
// random offsets one at a time from a cold cache and reports p50 and p99.
//
//	go test -run '^$' -bench Export -benchtime 3x ./internal/job
func BenchmarkExport(b *testing.B) {
	uri, size, stop := exported(b)
	defer stop()
	ctx := context.Background()
	b.Run("seq", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			c, err := nbd.Dial(ctx, uri)
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			next := make(chan int64)
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 2<<20)
					for off := range next {
						if _, err := c.ReadAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			for off := int64(0); off < size; off += 2 << 20 {
				next <- off
			}
			close(next)
			wg.Wait()
			c.Close()
		}
	})
	b.Run("rand4k", func(b *testing.B) {
		c, err := nbd.Dial(ctx, uri)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		rng := rand.New(rand.NewPCG(2, 2))
		buf := make([]byte, 4096)
		var lat []time.Duration
		for range b.N {
			for range 500 {
				off := rng.Int64N(size/4096) * 4096
				t0 := time.Now()
				if _, err := c.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	})
}
