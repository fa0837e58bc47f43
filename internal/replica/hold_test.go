package replica

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"lifeboat/internal/clock"
)

// A hold keeps its point's overlays and the base under them: nothing folds
// while it exists, even once the history is out of the retention; it says
// which extents were written since an earlier cut of the same replica (and
// nothing for another replica or a cut folded away); a restart removes
// holds left behind.
func TestHoldKeepsBaseAndReportsChanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(t0)
	s, err := Open(dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Machine: "m1", Disks: []DiskSpec{{Name: "a", Size: 1 << 20}, {Name: "b", Size: 1 << 20}},
		Policy: Policy{Retention: time.Hour, CrashInterval: time.Nanosecond}}
	if err := s.Register(ctx, spec); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		b := batch(t, Header{Seq: seq, Cut: t0.Add(time.Duration(seq) * time.Second), Consistency: "crash"}, func(bw *BatchWriter) {
			bw.Data(0, int64(seq)*8192, bytes.Repeat([]byte{byte(seq)}, 4096))
			if seq == 3 {
				bw.Data(0, 3*8192+4096, bytes.Repeat([]byte{9}, 4096)) // touches the one before: merged
				bw.Zero(1, 0, 65536)
			}
		})
		if err := s.Receive(ctx, "m1", seq, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.Hold(ctx, "m1", HoldOptions{Point: "latest"})
	if err != nil {
		t.Fatal(err)
	}
	if h.Point.ID != 3 || h.SinceKnown || h.Replica == "" || len(h.Disks) != 2 {
		t.Fatalf("hold of latest: %+v", h)
	}
	h2, err := s.Hold(ctx, "m1", HoldOptions{Point: "3", Since: 1, Replica: h.Replica})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]Extent{{{2 * 8192, 4096}, {3 * 8192, 8192}}, {{0, 65536}}}
	if !h2.SinceKnown || !reflect.DeepEqual(h2.Disks[0].Changed, want[0]) || !reflect.DeepEqual(h2.Disks[1].Changed, want[1]) {
		t.Fatalf("changes since cut 1: %+v %+v", h2.Disks[0].Changed, h2.Disks[1].Changed)
	}
	if h3, err := s.Hold(ctx, "m1", HoldOptions{Since: 1, Replica: "another"}); err != nil || h3.SinceKnown {
		t.Fatalf("changes since a cut of another replica: %+v, %v", h3, err)
	} else if err := s.Release(ctx, "m1", h3.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "m1", h2.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "m1", h2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("releasing twice: %v", err)
	}
	if err := s.Release(ctx, "m1", "../x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("releasing a path: %v", err)
	}

	clk.Advance(2 * time.Hour)
	if n, err := s.Fold(ctx, "m1"); err != nil || n != 0 {
		t.Fatalf("fold while held: %d, %v", n, err)
	}
	if _, err := os.Stat(h.Disks[0].File); err != nil {
		t.Fatalf("the held overlay: %v", err)
	}
	// A hold past HoldMaxAge is removed (its reader died without releasing).
	hdir := filepath.Dir(h.Disks[0].File)
	old := clk.Now().Add(-HoldMaxAge - time.Minute)
	if err := os.Chtimes(hdir, old, old); err != nil {
		t.Fatal(err)
	}
	young, err := s.Hold(ctx, "m1", HoldOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	os.Chtimes(filepath.Dir(young.Disks[0].File), now, now)
	if n, err := s.ExpireHolds(ctx); err != nil || n != 1 {
		t.Fatalf("expiring holds: %d, %v", n, err)
	}
	if _, err := os.Stat(hdir); !os.IsNotExist(err) {
		t.Fatal("an expired hold survived")
	}
	if _, err := os.Stat(young.Disks[0].File); err != nil {
		t.Fatalf("a young hold was expired: %v", err)
	}
	s, err = Open(dir, clk) // a restart: the hold's reader is gone
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(h.Disks[0].File)); !os.IsNotExist(err) {
		t.Fatal("a hold survived the restart")
	}
	if n, err := s.Fold(ctx, "m1"); err != nil || n != 3 {
		t.Fatalf("fold after the hold: %d, %v", n, err)
	}
	st, _ := s.Status(ctx, "m1")
	h4, err := s.Hold(ctx, "m1", HoldOptions{Since: 1, Replica: h.Replica})
	if err != nil || h4.SinceKnown {
		t.Fatalf("changes since a folded cut: %+v, %v (status %+v)", h4, err, st)
	}
}
