package replicate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/clock"
	"lifeboat/internal/journal"
	"lifeboat/internal/replica"
)

// A held gate lets the writes in flight finish (its idle channel closes
// after the last), makes new ones wait until release, and a release
// without a hold changes nothing.
func TestWriteGate(t *testing.T) {
	var g writeGate
	g.release()
	g.enter() // a write in flight
	idle := g.hold()
	select {
	case <-idle:
		t.Fatal("idle while a write is in flight")
	default:
	}
	entered := make(chan struct{})
	go func() {
		g.enter()
		close(entered)
		g.leave()
	}()
	g.leave()
	select {
	case <-idle:
	case <-time.After(10 * time.Second):
		t.Fatal("not idle once the write in flight ended")
	}
	select {
	case <-entered:
		t.Fatal("a new write went through a held gate")
	case <-time.After(50 * time.Millisecond):
	}
	g.release()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the held write did not go on after the release")
	}
	select {
	case <-g.hold():
	default:
		t.Fatal("a gate with no write in flight is not idle at once")
	}
	g.release()
}

// A shipper waits for a marker's verdict; a marker never decided counts as
// dropped after the timeout.
func TestGroupMarks(t *testing.T) {
	ctx := context.Background()
	gm := newGroupMarks(time.Now().UnixNano())
	kept, dropped, never := gm.newID(), gm.newID(), gm.newID()
	at := time.Unix(100, 0)
	go func() {
		time.Sleep(20 * time.Millisecond)
		gm.decide(kept, markVerdict{cut: at, app: true})
		gm.decide(dropped, markVerdict{})
	}()
	if v, ok, err := gm.verdict(ctx, kept, 10*time.Second); err != nil || !ok || !v.cut.Equal(at) || !v.app {
		t.Fatalf("kept marker: %+v %v %v", v, ok, err)
	}
	if _, ok, err := gm.verdict(ctx, dropped, 10*time.Second); err != nil || ok {
		t.Fatalf("dropped marker: %v %v", ok, err)
	}
	if _, ok, err := gm.verdict(ctx, never, 30*time.Millisecond); err != nil || ok {
		t.Fatalf("undecided marker: %v %v", ok, err)
	}
}

// groupOfJournals is a group of n members with a journal and a receiver's
// gate each, as a mirrored group has (no QEMU: the cut touches only those).
func groupOfJournals(t *testing.T, n int) *GroupRunner {
	t.Helper()
	g := &GroupRunner{Group: "g", Clock: clock.Real{}, marks: newGroupMarks(time.Now().UnixNano())}
	for i := range n {
		j, err := journal.Create(filepath.Join(t.TempDir(), "journal"), 1<<30, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { j.Remove() })
		r := &Runner{Machine: Machine{Name: fmt.Sprintf("m%d", i), Group: "g"}, Log: slog.New(slog.DiscardHandler), marks: g.marks,
			mirror: &mirrorSession{j: j, rc: &receiver{j: j, gate: &writeGate{}}}}
		g.Members = append(g.Members, r)
	}
	return g
}

// markers are the group markers in a member's journal.
func markers(t *testing.T, r *Runner) []int64 {
	t.Helper()
	rd := r.mirror.j.NewReader(0)
	defer rd.Close()
	var ids []int64
	for {
		rec, err := rd.Next(r.mirror.j.Stats().End)
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind == journal.KindMarker && rec.Disk == markGroup {
			ids = append(ids, rec.Off)
		}
	}
}

// A group cut puts one marker in every member's journal, after every
// write already received and before every write held meanwhile; the
// shippers end a batch there with the group's instant. A write that does
// not finish makes the cut fail within the bound, releasing the writes,
// and its markers are passed over.
func TestMarkCut(t *testing.T) {
	ctx := context.Background()
	g := groupOfJournals(t, 2)
	a, b := g.Members[0], g.Members[1]
	a.mirror.j.Append(journal.KindData, 0, 0, 0, []byte("before"))
	cut, hold, err := g.markCut(ctx, false)
	if err != nil || cut.IsZero() || hold > groupHoldTimeout {
		t.Fatalf("markCut: %v %v %v", cut, hold, err)
	}
	ids := markers(t, a)
	if len(ids) != 1 {
		t.Fatalf("a's markers: %v", ids)
	}
	id := ids[0]
	if got := markers(t, b); len(got) != 1 || got[0] != id {
		t.Fatalf("b's markers %v, a's %v", got, ids)
	}
	h := replica.Header{Cut: time.Unix(1, 0)}
	if stop, err := b.stopAt(ctx, &h, journal.Record{Kind: journal.KindMarker, Disk: markGroup, Off: id}); err != nil || !stop ||
		h.Group != "g" || h.GroupCut != cut.UnixNano() || !h.Cut.Equal(cut) || h.Consistency != "" {
		t.Fatalf("stopAt a kept group marker: %v %v %+v", stop, err, h)
	}

	// A write stuck in b's receiver: the cut fails in time, and releases.
	b.mirror.rc.gate.enter()
	stuck := time.Now()
	_, _, err = g.markCut(ctx, false)
	if err == nil || time.Since(stuck) > 4*groupHoldTimeout {
		t.Fatalf("markCut with a stuck write: %v after %s", err, time.Since(stuck))
	}
	t.Logf("stuck: %v", err)
	b.mirror.rc.gate.leave()
	done := make(chan struct{})
	go func() {
		a.mirror.rc.gate.enter()
		a.mirror.rc.gate.leave()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the writes stay held after a failed cut")
	}
	h = replica.Header{}
	if stop, err := a.stopAt(ctx, &h, journal.Record{Kind: journal.KindMarker, Disk: markGroup, Off: id + 1}); err != nil || stop || h.GroupCut != 0 {
		t.Fatalf("stopAt a dropped group marker: %v %v %+v", stop, err, h)
	}
	// A marker a previous runner left (a lower id, never decided here)
	// is passed over at once.
	start := time.Now()
	if stop, err := a.stopAt(ctx, &h, journal.Record{Kind: journal.KindMarker, Disk: markGroup, Off: id - 5000}); err != nil || stop || time.Since(start) > groupHoldTimeout {
		t.Fatalf("stopAt an earlier runner's marker: %v %v after %s", stop, err, time.Since(start))
	}
	// A cut taken with every guest frozen is an app-consistent group cut.
	cut, _, err = g.markCut(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	ids = markers(t, b)
	h = replica.Header{}
	if stop, err := b.stopAt(ctx, &h, journal.Record{Kind: journal.KindMarker, Disk: markGroup, Off: ids[len(ids)-1]}); err != nil || !stop ||
		h.Consistency != "app" || h.GroupCut != cut.UnixNano() {
		t.Fatalf("stopAt an app-consistent group marker: %v %v %+v", stop, err, h)
	}
	// A member whose mirror QEMU dropped (a live backup took its disks
	// over) journals none of its writes since: no group cut is kept.
	b.mirror.rc.dropped.Store(true)
	if _, _, err := g.markCut(ctx, false); err == nil {
		t.Fatal("a group cut was kept with a member whose mirror QEMU dropped")
	}
	ids = markers(t, a)
	h = replica.Header{}
	if stop, err := a.stopAt(ctx, &h, journal.Record{Kind: journal.KindMarker, Disk: markGroup, Off: ids[len(ids)-1]}); err != nil || stop {
		t.Fatalf("stopAt the marker of a cut with a dropped member: %v %v %+v", stop, err, h)
	}
	b.mirror.rc.dropped.Store(false)
	// An app-consistent marker (disk 0) still ends a batch as one.
	h = replica.Header{}
	if stop, _ := a.stopAt(ctx, &h, journal.Record{Kind: journal.KindMarker, Time: cut}); !stop || h.Consistency != "app" || h.GroupCut != 0 {
		t.Fatalf("stopAt an app marker: %v %+v", stop, h)
	}
}
