package journal

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func now() time.Time { return time.Unix(1700000000, 0) }

// Records come back in the order they were appended, across segments;
// acknowledging removes the segments below the position, and the limit
// counts only what is not acknowledged.
func TestAppendReadAck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j, err := Create(dir, 3*SegmentSize, now)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	block := bytes.Repeat([]byte{7}, 1<<20)
	var ends []int64
	for i := range 40 { // 40 MiB: three segments
		block[0] = byte(i)
		end, err := j.Append(KindData, i%2, int64(i)<<20, 0, block)
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, end)
	}
	if _, err := j.Append(KindZero, 1, 0, 4096, nil); err != nil {
		t.Fatal(err)
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	r := j.NewReader(0)
	defer r.Close()
	for i := range 40 {
		rec, err := r.Next(j.Stats().End)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if rec.Kind != KindData || rec.Disk != i%2 || rec.Off != int64(i)<<20 || rec.Data[0] != byte(i) || rec.End() != ends[i] {
			t.Fatalf("record %d: %+v", i, rec)
		}
	}
	if rec, err := r.Next(j.Stats().End); err != nil || rec.Kind != KindZero || rec.Len != 4096 {
		t.Fatalf("zero record: %+v %v", rec, err)
	}
	if _, err := r.Next(j.Stats().End); err != io.EOF {
		t.Fatalf("past the end: %v", err)
	}
	segs, _ := segments(dir)
	if len(segs) != 3 {
		t.Fatalf("segments %v, want 3", segs)
	}
	if err := j.Ack(ends[35]); err != nil {
		t.Fatal(err)
	}
	if segs, _ = segments(dir); len(segs) != 1 {
		t.Fatalf("after the ack: segments %v, want 1", segs)
	}
	// What is left reads from the acknowledged position.
	r2 := j.NewReader(ends[35])
	defer r2.Close()
	if rec, err := r2.Next(j.Stats().End); err != nil || rec.Off != 36<<20 {
		t.Fatalf("after the ack: %+v %v", rec, err)
	}
	if _, err := r.Next(ends[0]); err != io.EOF {
		t.Fatalf("a limit before the next record: %v", err)
	}
}

// The limit counts the unacknowledged bytes; once hit, the journal stays
// full (the capture falls back to change tracking).
func TestFull(t *testing.T) {
	j, err := Create(filepath.Join(t.TempDir(), "j"), 10000, now)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	end, err := j.Append(KindData, 0, 0, 0, make([]byte, 4096))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(KindData, 0, 0, 0, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(KindData, 0, 0, 0, make([]byte, 4096)); !errors.Is(err, ErrFull) {
		t.Fatalf("third 4 KiB write under a 10000-byte limit: %v", err)
	}
	j.Ack(end)
	if _, err := j.Append(KindData, 0, 0, 0, make([]byte, 16)); !errors.Is(err, ErrFull) {
		t.Fatalf("after ErrFull an append succeeded: %v", err)
	}
	if !errors.Is(j.Err(), ErrFull) || !j.Stats().Full {
		t.Fatalf("Err %v", j.Err())
	}
}

// Concurrent appends and syncs: every record is read back whole, in
// positions that tile the journal.
func TestConcurrentAppendSync(t *testing.T) {
	j, err := Create(filepath.Join(t.TempDir(), "j"), 1<<30, now)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := j.Append(KindData, w, int64(i)*4096, 0, bytes.Repeat([]byte{byte(w)}, 4096)); err != nil {
					t.Error(err)
					return
				}
				if i%5 == 0 {
					if err := j.Sync(); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	r := j.NewReader(0)
	defer r.Close()
	n := 0
	for {
		rec, err := r.Next(j.Stats().End)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec.Data, bytes.Repeat([]byte{byte(rec.Disk)}, 4096)) {
			t.Fatalf("record at %d is not disk %d's", rec.Pos, rec.Disk)
		}
		n++
	}
	if n != 400 || r.Pos() != j.Stats().End {
		t.Fatalf("read %d records to %d, want 400 to %d", n, r.Pos(), j.Stats().End)
	}
}

// Wait returns at its timeout even when the timer fires before it waits
// (a lost wake-up hung the shipper once), and at once on an append.
func TestWait(t *testing.T) {
	j, err := Create(filepath.Join(t.TempDir(), "j"), 1<<20, now)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for range 2000 {
		j.Wait(0, time.Microsecond)
	}
	done := make(chan int64)
	go func() { done <- j.Wait(0, time.Hour) }()
	end, _ := j.Append(KindZero, 0, 0, 4096, nil)
	select {
	case got := <-done:
		if got != end {
			t.Fatalf("Wait returned %d, want %d", got, end)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after an append")
	}
}
