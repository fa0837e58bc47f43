package replicate

import (
	"context"
	"testing"
	"time"
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
	gm := newGroupMarks()
	kept, dropped, never := gm.newID(), gm.newID(), gm.newID()
	at := time.Unix(100, 0)
	go func() {
		time.Sleep(20 * time.Millisecond)
		gm.decide(kept, at)
		gm.decide(dropped, time.Time{})
	}()
	if cut, ok, err := gm.verdict(ctx, kept, 10*time.Second); err != nil || !ok || !cut.Equal(at) {
		t.Fatalf("kept marker: %v %v %v", cut, ok, err)
	}
	if _, ok, err := gm.verdict(ctx, dropped, 10*time.Second); err != nil || ok {
		t.Fatalf("dropped marker: %v %v", ok, err)
	}
	if _, ok, err := gm.verdict(ctx, never, 30*time.Millisecond); err != nil || ok {
		t.Fatalf("undecided marker: %v %v", ok, err)
	}
}
