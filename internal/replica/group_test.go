package replica

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/clock"
)

// A group point is a group cut every member holds: a member that missed
// the newest group cut (its shipping failed) holds the group back to the
// previous one, and a group failover shows every member at that one.
func TestGroupPointsHeldByAll(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), clock.NewFake(t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ name, group string }{{"a", "g"}, {"b", "g"}, {"c", ""}} {
		spec := Spec{Machine: m.name, Group: m.group, Disks: []DiskSpec{{Name: "d0", Size: 1 << 20}}, Policy: Policy{CrashInterval: time.Minute}}
		if err := s.Register(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	// send gives machine its cut seq, share of group cut gc, writing fill
	// into block seq.
	send := func(machine string, seq uint64, gc int64, fill byte) {
		t.Helper()
		h := Header{Seq: seq, Cut: time.Unix(0, gc), Consistency: "crash", Full: seq == 1, Group: "g", GroupCut: gc}
		if machine == "c" {
			h.Group, h.GroupCut = "", 0
		}
		b := batch(t, h, func(bw *BatchWriter) { bw.Data(0, int64(seq)*4096, bytes.Repeat([]byte{fill}, 4096)) })
		if err := s.Receive(ctx, machine, seq, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	g1, g2, g3, g4 := t0.UnixNano(), t0.Add(time.Minute).UnixNano(), t0.Add(2*time.Minute).UnixNano(), t0.Add(3*time.Minute).UnixNano()
	send("a", 1, g1, 1)
	send("a", 2, g2, 2)
	send("a", 3, g3, 3) // b's share of g3 never arrived
	send("b", 1, g1, 1)
	send("b", 2, g2, 2)
	send("b", 3, g4, 4) // b's first cut of the next group cut
	send("c", 1, g1, 1)

	st, err := s.GroupStatus(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 2 || st.Members[0] != "a" || st.Members[1] != "b" {
		t.Fatalf("members %v, want [a b]", st.Members)
	}
	if n := len(st.Points); n != 2 || st.Points[0].ID != uint64(g1) || st.Points[1].ID != uint64(g2) || !st.Points[1].Latest {
		t.Fatalf("group points %+v, want g1 and g2 (latest)", st.Points)
	}
	out := t.TempDir()
	gf, err := s.GroupFailover(ctx, "g", FailoverOptions{Point: "latest", DisksOnly: true, To: out})
	if err != nil {
		t.Fatal(err)
	}
	if gf.Point.ID != uint64(g2) || len(gf.Failovers) != 2 {
		t.Fatalf("group failover %+v", gf)
	}
	for _, m := range []string{"a", "b"} {
		data, err := os.ReadFile(filepath.Join(out, m, "d0.raw"))
		if err != nil {
			t.Fatal(err)
		}
		if data[2*4096] != 2 || data[3*4096] != 0 {
			t.Fatalf("%s at group point g2: block 2 holds %d, block 3 holds %d; want 2 and 0", m, data[2*4096], data[3*4096])
		}
	}
	if _, err := s.GroupFailover(ctx, "g", FailoverOptions{Point: "1", DisksOnly: true, To: t.TempDir()}); !errors.Is(err, ErrNoSuchPoint) {
		t.Fatalf("a point that is no group cut: %v", err)
	}
	if _, err := s.GroupStatus(ctx, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing group: %v", err)
	}
}
