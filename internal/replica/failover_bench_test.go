package replica

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"lifeboat/internal/clock"
)

// BenchmarkFailoverPointAge measures how long a failover takes to make a
// machine's disks ready to boot (Store.Hold: the same qcow2 overlays over
// the base with the journal's batches up to the point written into them
// that Failover makes before starting QEMU) for a 4 GiB and a 16 GiB disk,
// to the latest point and to a point an hour old, over two hours of
// history: a cut every 2 s (replicate run's default), each holding 8
// random 4 KiB writes. bench/RESULTS.md has the figures.
//
//	go test -run XXX -bench FailoverPointAge -benchtime 3x ./internal/replica
func BenchmarkFailoverPointAge(b *testing.B) {
	const (
		history = 2 * time.Hour
		every   = 2 * time.Second
		writes  = 8
	)
	for _, size := range []int64{4 << 30, 16 << 30} {
		ctx := context.Background()
		now := t0.Add(history)
		clk := clock.NewFake(now)
		s, err := Open(b.TempDir(), clk)
		if err != nil {
			b.Fatal(err)
		}
		spec := Spec{Machine: "m", Disks: []DiskSpec{{Name: "d0", Size: size}},
			Policy: Policy{Retention: 24 * time.Hour, CrashInterval: 5 * time.Minute}}
		if err := s.Register(ctx, spec); err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		data := make([]byte, 4096)
		var seq uint64
		for at := t0; at.Before(now); at = at.Add(every) {
			seq++
			batch := batch(b, Header{Seq: seq, Cut: at, Consistency: "crash", Full: seq == 1}, func(bw *BatchWriter) {
				for range writes {
					for i := range data {
						data[i] = byte(rng.Uint32())
					}
					bw.Data(0, rng.Int64N(size/4096)*4096, data)
				}
			})
			if err := s.Receive(ctx, "m", seq, bytes.NewReader(batch)); err != nil {
				b.Fatal(err)
			}
		}
		hourOld := now.Add(-time.Hour).Format(time.RFC3339)
		for _, pt := range []struct{ name, point string }{{"latest", "latest"}, {"hour-old", hourOld}} {
			b.Run(fmt.Sprintf("%dGiB/%s", size>>30, pt.name), func(b *testing.B) {
				var applied int
				for b.Loop() {
					h, err := s.Hold(ctx, "m", HoldOptions{Point: pt.point})
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					applied = int(h.Point.ID) - 1
					if err := s.Release(ctx, "m", h.ID); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(applied), "batches")
			})
		}
		st, _ := s.Status(ctx, "m")
		b.Logf("%d GiB: %d cuts, %d MiB of history", size>>30, st.JournalCuts, st.JournalBytes>>20)
		os.RemoveAll(s.dir)
	}
}
