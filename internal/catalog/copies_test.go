package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// Where a copy stands: expected before any copy ran, a failed attempt
// counted (retried or not), a success recording the newest point copied
// (never moving it back) and clearing the failures, the oldest point the
// copy lacks worked out from the primary's points, a cancelled run
// changing nothing, and the machine's removal forgetting it.
func TestCopyStates(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		must(t, c.AddMachine(ctx, Machine{Name: "web1", Spec: json.RawMessage(`{}`)}, t0))
		one := func() CopyState {
			t.Helper()
			ss, err := c.CopyStates(ctx)
			must(t, err)
			if len(ss) != 1 {
				t.Fatalf("copy states %+v, want one", ss)
			}
			return ss[0]
		}
		point := func(id string, at time.Time) {
			must(t, c.RecordPoint(ctx, Point{Vault: "local", ID: id, Machine: "web1", Time: at, Consistency: "crash"}))
		}
		// copyRun runs the copy job claimable at at (queued anew unless
		// retry: the attempt the last run left queued).
		copyRun := func(at time.Time, run CopyRun, runErr error, retry ...bool) {
			t.Helper()
			if len(retry) == 0 {
				_, err := c.Enqueue(ctx, Job{Kind: "copy", Machine: "web1", Vault: "dr", MaxAttempts: 2}, at)
				must(t, err)
			}
			j, err := c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, at)
			must(t, err)
			if j == nil || j.Kind != "copy" {
				t.Fatalf("claimed %+v, want a copy", j)
			}
			must(t, c.FinishCopy(ctx, j.ID, "s", nil, run, runErr, at))
		}

		point("p1", t0.Add(-48*time.Hour)) // before anyone asked for a copy
		must(t, c.ExpectCopies(ctx, []CopyKey{{Machine: "web1", Source: "local", Target: "dr"}}, t0))
		must(t, c.ExpectCopies(ctx, []CopyKey{{Machine: "web1", Source: "local", Target: "dr"}}, t0.Add(time.Hour))) // kept as it was
		st := one()
		if !st.Expected.Equal(t0) || !st.Pending.Equal(t0.Add(-48*time.Hour)) || !st.Newest.IsZero() {
			t.Fatalf("expected copy %+v", st)
		}

		point("p2", t0.Add(time.Minute))
		copyRun(t0.Add(2*time.Minute), CopyRun{Source: "local"}, errors.New("dr unreachable")) // queued again
		copyRun(t0.Add(3*time.Minute), CopyRun{Source: "local"}, errors.New("dr still unreachable"), true)
		if st = one(); st.Failures != 2 || st.LastError != "dr still unreachable" || !st.Copied.IsZero() {
			t.Fatalf("after two failed attempts %+v", st)
		}

		copyRun(t0.Add(4*time.Minute), CopyRun{Source: "local", Newest: t0.Add(time.Minute)}, nil)
		if st = one(); st.Failures != 0 || st.LastError != "" || !st.Newest.Equal(t0.Add(time.Minute)) || !st.Pending.IsZero() ||
			!st.Copied.Equal(t0.Add(4*time.Minute)) {
			t.Fatalf("after a copy %+v", st)
		}
		point("p3", t0.Add(5*time.Minute))
		point("p4", t0.Add(6*time.Minute))
		if st = one(); !st.Pending.Equal(t0.Add(5 * time.Minute)) {
			t.Fatalf("pending %s, want p3's time", st.Pending)
		}
		// A run that found nothing to copy keeps the newest point; one
		// reporting an older point does not move it back.
		copyRun(t0.Add(7*time.Minute), CopyRun{Source: "local"}, nil)
		copyRun(t0.Add(8*time.Minute), CopyRun{Source: "local", Newest: t0}, nil)
		if st = one(); !st.Newest.Equal(t0.Add(time.Minute)) || !st.Pending.Equal(t0.Add(5*time.Minute)) {
			t.Fatalf("newest moved: %+v", st)
		}
		// Points of the machine in another vault are not the copy's business.
		must(t, c.RecordPoint(ctx, Point{Vault: "other", ID: "q", Machine: "web1", Time: t0.Add(time.Second), Consistency: "crash"}))
		copyRun(t0.Add(9*time.Minute), CopyRun{Source: "local", Newest: t0.Add(6 * time.Minute)}, nil)
		if st = one(); !st.Pending.IsZero() {
			t.Fatalf("pending %s after copying the newest point", st.Pending)
		}

		// A cancelled run changes nothing.
		id, _ := c.Enqueue(ctx, Job{Kind: "copy", Machine: "web1", Vault: "dr"}, t0.Add(10*time.Minute))
		c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0.Add(10*time.Minute))
		must(t, c.CancelJob(ctx, id, t0.Add(10*time.Minute)))
		must(t, c.FinishCopy(ctx, id, "s", nil, CopyRun{Source: "local"}, errors.New("cancelled"), t0.Add(10*time.Minute)))
		if st = one(); st.Failures != 0 {
			t.Fatalf("a cancelled copy counted as failed: %+v", st)
		}

		// A copy whose report was lost (the agent killed after its points
		// were committed): the next run finds nothing to copy, and the
		// points whose backups had ended before it began count as copied.
		bid, _ := c.Enqueue(ctx, Job{Kind: "backup", Machine: "web1", Vault: "local"}, t0.Add(11*time.Minute))
		if j, _ := c.Claim(ctx, "hv1", "s", Limits{}, time.Minute, t0.Add(11*time.Minute)); j == nil || j.ID != bid {
			t.Fatalf("claimed %+v, want the backup", j)
		}
		must(t, c.Finish(ctx, bid, "s", nil, []Point{{Vault: "local", ID: "p5", Machine: "web1", Time: t0.Add(11 * time.Minute), Consistency: "crash"}}, nil, t0.Add(12*time.Minute)))
		if st = one(); !st.Pending.Equal(t0.Add(11 * time.Minute)) {
			t.Fatalf("pending %s, want p5's time", st.Pending)
		}
		copyRun(t0.Add(13*time.Minute), CopyRun{Source: "local"}, nil)
		if st = one(); !st.Newest.Equal(t0.Add(11*time.Minute)) || !st.Pending.IsZero() {
			t.Fatalf("after a copy that found p5 copied: %+v", st)
		}

		must(t, c.DeleteMachine(ctx, "web1", t0.Add(time.Hour)))
		if ss, _ := c.CopyStates(ctx); len(ss) != 0 {
			t.Fatalf("copy states of a removed machine: %+v", ss)
		}
	})
}
