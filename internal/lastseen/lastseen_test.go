package lastseen_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/lastseen"
	"lifeboat/internal/recovery"
)

func point(id byte, machine string, t time.Time) *recovery.Point {
	return &recovery.Point{ID: chunk.ID{id}, Machine: machine, Time: t}
}

// TestRecordMovesForward: the record keeps the newest point per machine,
// warns while it is gone, is not lowered by an older listing, and is
// reset only by Reset (this host's forget).
func TestRecordMovesForward(t *testing.T) {
	dir := t.TempDir()
	b := lastseen.Open(dir)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	p1, p2, q1 := point(1, "web1", t0), point(2, "web1", t0.Add(time.Hour)), point(3, "db1", t0)
	if w := b.CheckPoints("v", []*recovery.Point{p1, p2, q1}, t0); len(w) != 0 {
		t.Fatalf("first look: %q", w)
	}
	for i := 0; i < 2; i++ { // the warning stays until this host forgets
		w := b.CheckPoints("v", []*recovery.Point{p1, q1}, t0)
		if len(w) != 1 || !strings.Contains(w[0], chunk.ID{2}.Short()) || !strings.Contains(w[0], "web1") {
			t.Fatalf("after the newest web1 point vanished (look %d): %q", i, w)
		}
	}
	if err := b.Reset("v", []*recovery.Point{p1, q1}, t0); err != nil {
		t.Fatal(err)
	}
	if w := b.CheckPoints("v", []*recovery.Point{p1, q1}, t0); len(w) != 0 {
		t.Fatalf("after Reset: %q", w)
	}
	if w := b.CheckPoints("other", nil, t0); len(w) != 0 {
		t.Fatalf("another vault: %q", w)
	}
	// A damaged record is a warning, never a failure.
	os.WriteFile(filepath.Join(dir, "vaults", "v.json"), []byte("{"), 0o600)
	if w := b.CheckPoints("v", []*recovery.Point{p1}, t0); len(w) != 1 || !strings.Contains(w[0], "v.json") {
		t.Fatalf("damaged record: %q", w)
	}
	var none *lastseen.Book
	if w := none.CheckPoints("v", nil, t0); w != nil {
		t.Fatal("a nil book checked something")
	}
}

// TestKeyGenerationMovesForward: the key generation recorded for a vault
// only goes up, and survives this host's forget (Reset).
func TestKeyGenerationMovesForward(t *testing.T) {
	b := lastseen.Open(t.TempDir())
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, g := range []uint16{2, 1, 3, 2} {
		if err := b.SawKeyGeneration("v", g); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Reset("v", []*recovery.Point{point(1, "web1", t0)}, t0); err != nil {
		t.Fatal(err)
	}
	if g, err := b.KeyGeneration("v"); err != nil || g != 3 {
		t.Fatalf("generation %d, %v; want 3", g, err)
	}
	if g, err := b.KeyGeneration("other"); err != nil || g != 0 {
		t.Fatalf("another vault: %d, %v", g, err)
	}
	var nilBook *lastseen.Book
	if g, err := nilBook.KeyGeneration("v"); g != 0 || err != nil || nilBook.SawKeyGeneration("v", 2) != nil {
		t.Fatal("a nil book records something")
	}
}
