package replicate

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"lifeboat/internal/journal"
)

// Overlapping records become pieces that do not overlap, each byte from
// the newest record that wrote it; pieces of one record stay joined.
func TestCoalesce(t *testing.T) {
	h := int64(journal.HeaderSize)
	rec := func(pos int64, kind byte, disk int, off, n int64) journal.Record {
		return journal.Record{Pos: pos, Kind: kind, Disk: disk, Off: off, Len: n}
	}
	got := coalesce([]journal.Record{
		rec(0, journal.KindData, 0, 0, 100),    // A: [0,100)
		rec(200, journal.KindData, 0, 50, 20),  // B: [50,70) over A
		rec(300, journal.KindZero, 0, 90, 30),  // Z: [90,120) over A's end
		rec(400, journal.KindData, 1, 0, 10),   // disk 1
		rec(500, journal.KindMarker, 0, 0, 0),  // ignored
		rec(600, journal.KindData, 0, 200, 10), // C
		rec(700, journal.KindData, 0, 200, 10), // D: C rewritten whole
		rec(800, journal.KindData, 0, 210, 10), // E: right after D
	})
	want := []piece{
		{Disk: 0, Off: 0, Len: 50, Src: h},
		{Disk: 0, Off: 50, Len: 20, Src: 200 + h},
		{Disk: 0, Off: 70, Len: 20, Src: h + 70},
		{Disk: 0, Off: 90, Len: 30, Zero: true},
		{Disk: 0, Off: 200, Len: 10, Src: 700 + h},
		{Disk: 0, Off: 210, Len: 10, Src: 800 + h},
		{Disk: 1, Off: 0, Len: 10, Src: 400 + h},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("coalesce:\n got %+v\nwant %+v", got, want)
	}
}

// Random overlapping writes: applying the pieces in any order gives what
// applying the records in journal order gives.
func TestCoalesceRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		const size = 512
		var recs []journal.Record
		in := [2][size]int64{} // per byte: the journal position of its source byte, -1 zero, 0 unwritten
		pos := int64(1000)
		for range 1 + rng.IntN(20) {
			disk, off := rng.IntN(2), rng.Int64N(size-1)
			n := 1 + rng.Int64N(size-off)
			kind := byte(journal.KindData)
			if rng.IntN(4) == 0 {
				kind = journal.KindZero
			}
			r := journal.Record{Pos: pos, Kind: kind, Disk: disk, Off: off, Len: n}
			recs = append(recs, r)
			for b := off; b < off+n; b++ {
				in[disk][b] = -1
				if kind == journal.KindData {
					in[disk][b] = pos + journal.HeaderSize + b - off
				}
			}
			pos = r.End() + 7
		}
		out := [2][size]int64{}
		ps := coalesce(recs)
		for i, p := range ps {
			for b := p.Off; b < p.Off+p.Len; b++ {
				if out[p.Disk][b] != 0 {
					t.Fatalf("round %d: piece %d overlaps another at %d", round, i, b)
				}
				out[p.Disk][b] = -1
				if !p.Zero {
					out[p.Disk][b] = p.Src + b - p.Off
				}
			}
		}
		if in != out {
			t.Fatalf("round %d: pieces %+v differ from records %+v", round, ps, recs)
		}
	}
}
