package replica

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/clock"
)

// BenchmarkFailoverPointAge measures how long a failover takes to make a
// machine's disks ready to boot (Store.Hold: the same qcow2 overlays, over
// the newest checkpoint at or before the point with the journal's batches
// after it written into them, that Failover makes before starting QEMU)
// for a 4 GiB and a 16 GiB disk, to the latest point and to a point an
// hour old, over a history of 2 h (or those of $LIFEBOAT_BENCH_HISTORY,
// e.g. "2h,6h": building a 6 h one takes several minutes): a cut every 2 s (replicate run's default), each holding 8
// random 4 KiB writes; $LIFEBOAT_BENCH_CHECKPOINT_EVERY sets the store's
// CheckpointEvery. For the 2 h history it measures the same points
// without checkpoints too (journal-only: every batch since the base
// applied, as before checkpoints). bench/RESULTS.md has the figures.
//
//	LIFEBOAT_BENCH_HISTORY=2h,6h go test -count=1 -timeout 0 -run XXX -bench FailoverPointAge -benchtime 3x ./internal/replica
func BenchmarkFailoverPointAge(b *testing.B) {
	histories := []time.Duration{2 * time.Hour}
	if env := os.Getenv("LIFEBOAT_BENCH_HISTORY"); env != "" {
		histories = nil
		for _, f := range strings.Split(env, ",") {
			d, err := time.ParseDuration(f)
			if err != nil {
				b.Fatal(err)
			}
			histories = append(histories, d)
		}
	}
	for _, history := range histories {
		b.Run(fmt.Sprintf("history=%s", strings.TrimSuffix(history.String(), "0m0s")), func(b *testing.B) {
			for _, size := range []int64{4 << 30, 16 << 30} {
				b.Run(fmt.Sprintf("%dGiB", size>>30), func(b *testing.B) {
					benchmarkFailoverPointAge(b, history, size)
				})
			}
		})
	}
}

func benchmarkFailoverPointAge(b *testing.B, history time.Duration, size int64) {
	const every = 2 * time.Second
	ctx := context.Background()
	now := t0.Add(history)
	s, err := Open(b.TempDir(), clock.NewFake(now))
	if err != nil {
		b.Fatal(err)
	}
	spec := Spec{Machine: "m", Disks: []DiskSpec{{Name: "d0", Size: size}},
		Policy: Policy{Retention: 24 * time.Hour, CrashInterval: 5 * time.Minute}}
	if err := s.Register(ctx, spec); err != nil {
		b.Fatal(err)
	}
	if env := os.Getenv("LIFEBOAT_BENCH_CHECKPOINT_EVERY"); env != "" {
		if s.CheckpointEvery, err = strconv.Atoi(env); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	var seq uint64
	for at := t0; at.Before(now); at = at.Add(every) {
		seq++
		if err := s.Receive(ctx, "m", seq, bytes.NewReader(randomBatch(b, rng, seq, at, size))); err != nil {
			b.Fatal(err)
		}
	}
	received := time.Since(start)
	if _, err := s.Fold(ctx, "m"); err != nil { // the first cut, full, as the site's fold tick does
		b.Fatal(err)
	}
	hourOld := now.Add(-time.Hour).Format(time.RFC3339)
	points := []struct{ name, point string }{{"latest", "latest"}, {"hour-old", hourOld}}
	measure := func(name, point string) {
		b.Run(name, func(b *testing.B) {
			var h *Hold
			for b.Loop() {
				var err error
				if h, err = s.Hold(ctx, "m", HoldOptions{Point: point}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Release(ctx, "m", h.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(h.Batches), "batches")
			b.ReportMetric(float64(h.Point.ID), "point")
		})
	}
	if history <= 2*time.Hour {
		for _, pt := range points {
			measure("journal-only/"+pt.name, pt.point)
		}
	}
	start = time.Now()
	n, err := s.Checkpoint(ctx, "m")
	if err != nil {
		b.Fatal(err)
	}
	checkpointed := time.Since(start)
	// The point with the most batches after its checkpoint.
	worst, most := uint64(0), -1
	st, _ := s.Status(ctx, "m")
	for _, pt := range st.Points {
		m, _ := s.machine("m")
		m.mu.Lock()
		_, batches := m.startFor(pt.ID)
		m.mu.Unlock()
		if len(batches) > most {
			worst, most = pt.ID, len(batches)
		}
	}
	points = append(points, struct{ name, point string }{"most-batches", strconv.FormatUint(worst, 10)})
	for _, pt := range points {
		measure("checkpoints/"+pt.name, pt.point)
	}
	du := dirBytes(s.dir + "/machines/m/checkpoints")
	b.Logf("%s, %d GiB, a checkpoint every %d cuts: %d cuts received in %.1f s (%.0f/s), %d MiB of journal; %d checkpoints made in %.1f s (%.1f ms a cut), %d MiB",
		history, size>>30, cmp.Or(s.CheckpointEvery, DefaultCheckpointEvery), st.JournalCuts, received.Seconds(), float64(st.JournalCuts)/received.Seconds(), st.JournalBytes>>20,
		n, checkpointed.Seconds(), checkpointed.Seconds()*1000/float64(st.JournalCuts), du>>20)
	os.RemoveAll(s.dir)
}

// randomBatch is cut seq of the benchmarks: 8 random 4 KiB writes.
func randomBatch(b *testing.B, rng *rand.Rand, seq uint64, at time.Time, size int64) []byte {
	data := make([]byte, 4096)
	return batch(b, Header{Seq: seq, Cut: at, Consistency: "crash", Full: seq == 1}, func(bw *BatchWriter) {
		for range 8 {
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			bw.Data(0, rng.Int64N(size/4096)*4096, data)
		}
	})
}

// dirBytes is the space the files under dir take.
func dirBytes(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := dir + "/" + e.Name()
		if e.IsDir() {
			n += dirBytes(p)
		} else if st, err := os.Stat(p); err == nil {
			n += st.Size()
		}
	}
	return n
}

// BenchmarkReceiveCheckpointing measures the receive path (Store.Receive
// of cuts of 8 random 4 KiB writes: checked, fsynced, renamed) alone and
// while checkpoints of the history are made beside it (64 cuts each), as a
// site's fold tick does: checkpoints take no lock the receive path waits on for
// long, so the difference is the CPU and disk they share.
//
//	go test -count=1 -run XXX -bench ReceiveCheckpointing -benchtime 3000x ./internal/replica
func BenchmarkReceiveCheckpointing(b *testing.B) {
	for _, checkpointing := range []bool{false, true} {
		b.Run(map[bool]string{false: "alone", true: "checkpointing"}[checkpointing], func(b *testing.B) {
			const size = 4 << 30
			ctx := context.Background()
			s, err := Open(b.TempDir(), clock.NewFake(t0))
			if err != nil {
				b.Fatal(err)
			}
			s.CheckpointEvery = 64
			if err := s.Register(ctx, Spec{Machine: "m", Disks: []DiskSpec{{Name: "d0", Size: size}}}); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			stop := make(chan struct{})
			done := make(chan int)
			go func() {
				made := 0
				for checkpointing {
					select {
					case <-stop:
						done <- made
						return
					case <-time.After(100 * time.Millisecond): // a fold tick, faster than the site's
					}
					if _, err := s.Fold(ctx, "m"); err != nil { // the first cut, full
						b.Error(err)
					}
					n, err := s.Checkpoint(ctx, "m")
					if err != nil {
						b.Error(err)
					}
					made += n
				}
				<-stop
				done <- made
			}()
			var seq uint64
			for b.Loop() {
				seq++
				if err := s.Receive(ctx, "m", seq, bytes.NewReader(randomBatch(b, rng, seq, t0.Add(time.Duration(seq)*2*time.Second), size))); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cuts/s")
			close(stop)
			b.ReportMetric(float64(<-done), "checkpoints")
		})
	}
}
