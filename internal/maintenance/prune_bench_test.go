package maintenance_test

import (
	"context"
	"encoding/binary"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// BenchmarkPruneMillionChunks measures prune's peak heap on a synthetic
// vault of one million chunks (tiny chunks: memory must follow their number,
// not their bytes), in a directory store so stored data is not on the heap.
// Two points each reference half; one is forgotten, so prune drops half.
//
//	go test -run XXX -bench PruneMillionChunks -benchtime 1x ./internal/maintenance
func BenchmarkPruneMillionChunks(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		store, _ := blob.NewDir(b.TempDir())
		v, err := vault.Init(ctx, store, []byte("pw"), cheap)
		if err != nil {
			b.Fatal(err)
		}
		ix := chunk.NewIndex()
		packer := v.NewPacker(ctx, ix, nil)
		m1 := image.NewManifest(int64(n/2)*int64(cheap.ChunkSize), cheap.ChunkSize)
		m2 := image.NewManifest(int64(n/2)*int64(cheap.ChunkSize), cheap.ChunkSize)
		var data [16]byte
		var sealed []byte
		for c := 0; c < n; c++ {
			binary.LittleEndian.PutUint64(data[:], uint64(c))
			id := v.Codec().Hasher().Sum(data[:])
			sealed, _ = v.Codec().EncodeBlob(sealed[:0], id, data[:], nil)
			if err := packer.Add(id, sealed, len(data)); err != nil {
				b.Fatal(err)
			}
			if c < n/2 {
				m1.IDs[c] = id
			} else {
				m2.IDs[c-n/2] = id
			}
		}
		if err := packer.Close(); err != nil {
			b.Fatal(err)
		}
		var points []*recovery.Point
		for _, m := range []*image.Manifest{m1, m2} {
			mid, err := image.Save(ctx, v, m)
			if err != nil {
				b.Fatal(err)
			}
			p := &recovery.Point{Machine: "m", Time: time.Unix(int64(len(points)), 0), Consistency: recovery.Crash,
				Disks: []recovery.Disk{{Name: "d", Size: m.Size, ChunkSize: m.ChunkSize, Manifest: mid}}}
			if err := recovery.Save(ctx, v, p); err != nil {
				b.Fatal(err)
			}
			points = append(points, p)
		}
		store.Delete(ctx, vault.ObjectName(vault.KindPoint, points[0].ID))
		ix, m1, m2, points = nil, nil, nil, nil
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		var peak atomic.Uint64
		stop := make(chan struct{})
		go func() {
			var ms runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
				}
			}
		}()
		b.StartTimer()
		rep, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{})
		b.StopTimer()
		close(stop)
		if err != nil {
			b.Fatal(err)
		}
		if rep.ReferencedChunks != n/2 {
			b.Fatalf("prune saw %d referenced chunks, want %d", rep.ReferencedChunks, n/2)
		}
		b.ReportMetric(float64(peak.Load()-base)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(peak.Load()-base)/n, "heap-B/chunk")
	}
}
