package replica

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/clock"
)

var t0 = time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)

func batch(t testing.TB, h Header, recs func(*BatchWriter)) []byte {
	t.Helper()
	var buf bytes.Buffer
	bw, err := NewBatchWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	recs(bw)
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBatchRoundTripAndTorn(t *testing.T) {
	data := batch(t, Header{Seq: 3, Cut: t0, Consistency: "crash"}, func(bw *BatchWriter) {
		bw.Data(0, 4096, bytes.Repeat([]byte{7}, 8192))
		bw.Data(1, 0, make([]byte, 4096)) // zeros become a zero record
		bw.Zero(0, 1<<20, 1<<20)
	})
	h, recs, err := ReadBatch(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if h.Seq != 3 || !h.Cut.Equal(t0) || len(recs) != 3 {
		t.Fatalf("read back %+v %+v", h, recs)
	}
	if recs[0].Zero || recs[0].Len != 8192 || data[recs[0].FileOff] != 7 || !recs[1].Zero || !recs[2].Zero || recs[2].Len != 1<<20 {
		t.Fatalf("records %+v", recs)
	}
	// Every truncation and every flipped byte is refused.
	for n := 0; n < len(data); n += 97 {
		if _, _, err := ReadBatch(bytes.NewReader(data[:n])); !errors.Is(err, ErrTorn) {
			t.Fatalf("batch cut at %d: %v", n, err)
		}
	}
	for i := 12; i < len(data); i += 501 {
		bad := bytes.Clone(data)
		bad[i] ^= 1
		if _, _, err := ReadBatch(bytes.NewReader(bad)); !errors.Is(err, ErrTorn) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
}

func TestPoints(t *testing.T) {
	p := Policy{Retention: time.Hour, CrashInterval: 5 * time.Minute}
	at := func(min, sec int) time.Time {
		return t0.Add(time.Duration(min)*time.Minute + time.Duration(sec)*time.Second)
	}
	cuts := []Cut{
		{Seq: 10, Time: at(-90, 0), Consistency: "crash"}, // the base, older than the retention: kept
		{Seq: 11, Time: at(-70, 0), Consistency: "crash"}, // outside the retention
		{Seq: 12, Time: at(-10, 1), Consistency: "crash"}, // first of its interval
		{Seq: 13, Time: at(-10, 3), Consistency: "crash"}, // same interval: not a point
		{Seq: 14, Time: at(-9, 0), Consistency: "app"},    // app-consistent: a point
		{Seq: 15, Time: at(-4, 59), Consistency: "crash"}, // next interval
		{Seq: 16, Time: at(-4, 58), Consistency: "crash"}, // latest
	}
	var got []uint64
	for _, pt := range Points(cuts, p, t0) {
		got = append(got, pt.ID)
	}
	want := []uint64{10, 12, 14, 15, 16}
	if len(got) != len(want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("points %v, want %v", got, want)
		}
	}
	if to := FoldTo(cuts, p, t0); to != 11 {
		t.Fatalf("fold to %d, want 11 (the newest cut older than the retention)", to)
	}
	cuts[4].Full = true
	if to := FoldTo(cuts, p, t0); to != 14 {
		t.Fatalf("fold to %d, want 14 (a full cut replaces all before it)", to)
	}

	pts := Points(cuts, p, t0)
	for _, c := range []struct {
		want string
		id   uint64
		err  bool
	}{
		{"latest", 16, false}, {"", 16, false}, {"latest-app", 14, false}, {"12", 12, false}, {"13", 0, true},
		{at(-9, 30).Format(time.RFC3339), 14, false}, {at(-100, 0).Format(time.RFC3339), 0, true}, {"yesterday", 0, true},
	} {
		pt, err := Choose(pts, c.want)
		if (err != nil) != c.err || (!c.err && pt.ID != c.id) {
			t.Errorf("Choose(%q) = %d, %v; want %d (error %v)", c.want, pt.ID, err, c.id, c.err)
		}
		if err != nil && !errors.Is(err, ErrNoSuchPoint) {
			t.Errorf("Choose(%q): %v is not ErrNoSuchPoint", c.want, err)
		}
	}
}

// The store acknowledges only whole batches in order, keeps them across a
// reopen (a restart), drops a half-received one, and folds old history
// into the base without changing what any kept point reads as.
func TestStoreReceiveFoldReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(t0)
	s, err := Open(dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Machine: "m1", Disks: []DiskSpec{{Name: "a", Size: 1 << 20}}, Policy: Policy{Retention: time.Hour, CrashInterval: time.Minute}}
	if err := s.Register(ctx, spec); err != nil {
		t.Fatal(err)
	}
	send := func(seq uint64, at time.Time, full bool, fill byte) error {
		b := batch(t, Header{Seq: seq, Cut: at, Consistency: "crash", Full: full}, func(bw *BatchWriter) {
			bw.Data(0, int64(seq)*4096, bytes.Repeat([]byte{fill}, 4096))
		})
		return s.Receive(ctx, "m1", seq, bytes.NewReader(b))
	}
	if err := send(2, t0, false, 1); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("batch 2 first: %v", err)
	}
	for seq := uint64(1); seq <= 4; seq++ {
		if err := send(seq, t0.Add(time.Duration(seq)*time.Minute), seq == 1, byte(seq)); err != nil {
			t.Fatal(err)
		}
	}
	if err := send(3, t0, false, 9); err != nil {
		t.Fatalf("a batch held already is acknowledged again: %v", err)
	}
	// A torn batch is refused and leaves nothing behind.
	b := batch(t, Header{Seq: 5, Cut: t0}, func(bw *BatchWriter) { bw.Data(0, 0, []byte{1}) })
	if err := s.Receive(ctx, "m1", 5, bytes.NewReader(b[:len(b)-3])); !errors.Is(err, ErrInvalid) {
		t.Fatalf("torn batch: %v", err)
	}
	// Writes outside the disk are refused.
	b = batch(t, Header{Seq: 5, Cut: t0}, func(bw *BatchWriter) { bw.Data(0, 1<<20, []byte{1}) })
	if err := s.Receive(ctx, "m1", 5, bytes.NewReader(b)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("write past the disk: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "machines", "m1", "journal", "tmp-123"), []byte("half"), 0o600)

	s, err = Open(dir, clk) // the target restarts
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if st.LastSeq != 4 {
		t.Fatalf("after reopening the replica holds up to %d, want 4", st.LastSeq)
	}
	if _, err := os.Stat(filepath.Join(dir, "machines", "m1", "journal", "tmp-123")); !os.IsNotExist(err) {
		t.Fatal("a half-received batch survived the restart")
	}
	image := func(point string) []byte {
		out := t.TempDir()
		if _, err := s.Failover(ctx, "m1", FailoverOptions{Point: point, DisksOnly: true, To: out}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(out, "a.raw"))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	want3 := image("3")
	for seq := 1; seq <= 4; seq++ {
		if got := want3[seq*4096]; (seq <= 3 && got != byte(seq)) || (seq == 4 && got != 0) {
			t.Fatalf("point 3: block %d holds %d", seq, got)
		}
	}
	// Batch 1 is full: folded at once. An hour later 2 and 3 fall out of
	// the retention and are folded too; point 3's image stays the same.
	if n, err := s.Fold(ctx, "m1"); err != nil || n != 1 {
		t.Fatalf("fold: %d, %v", n, err)
	}
	clk.Advance(time.Hour + 3*time.Minute + 30*time.Second)
	if n, err := s.Fold(ctx, "m1"); err != nil || n != 2 {
		t.Fatalf("fold: %d, %v", n, err)
	}
	st, _ = s.Status(ctx, "m1")
	if len(st.Points) != 2 || st.Points[0].ID != 3 || st.Points[1].ID != 4 || st.JournalCuts != 1 {
		t.Fatalf("after folding: %+v", st)
	}
	if got := image("3"); !bytes.Equal(got, want3) {
		t.Fatal("folding changed point 3")
	}
	if got := image("latest"); got[4*4096] != 4 {
		t.Fatal("latest point lacks batch 4")
	}
}

// A journal batch damaged after it was acknowledged is found when it is
// applied: the failover fails naming it instead of serving wrong data.
func TestDamagedBatchRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, Spec{Machine: "m1", Disks: []DiskSpec{{Name: "a", Size: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	b := batch(t, Header{Seq: 1, Cut: t0}, func(bw *BatchWriter) { bw.Data(0, 0, bytes.Repeat([]byte{5}, 4096)) })
	if err := s.Receive(ctx, "m1", 1, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "machines", "m1", "journal", batchName(1))
	data, _ := os.ReadFile(path)
	data[len(data)-100] ^= 0xff
	os.WriteFile(path, data, 0o600)
	if s, err = Open(dir, clock.NewFake(t0)); err != nil {
		t.Fatalf("reopening with a damaged batch (only headers are read at start): %v", err)
	}
	_, err = s.Failover(ctx, "m1", FailoverOptions{DisksOnly: true, To: t.TempDir()})
	if !errors.Is(err, ErrTorn) || !strings.Contains(err.Error(), batchName(1)) {
		t.Fatalf("failover over a damaged batch: %v", err)
	}
}

// Seeds are read only from the site's seed directory, and must have the
// disk's size.
func TestSeedConfined(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "replica"), clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	seeds := filepath.Join(dir, "seeds")
	os.Mkdir(seeds, 0o700)
	img := filepath.Join(seeds, "a.raw")
	os.WriteFile(img, bytes.Repeat([]byte{9}, 1<<20), 0o600)
	outside := filepath.Join(dir, "secret.raw")
	os.WriteFile(outside, make([]byte, 1<<20), 0o600)
	os.Symlink(outside, filepath.Join(seeds, "link.raw"))
	spec := func(seed string) Spec {
		return Spec{Machine: "m1", Disks: []DiskSpec{{Name: "a", Size: 1 << 20}}, Seed: map[string]string{"a": seed}}
	}
	if err := s.Register(ctx, spec(img)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("seed without a seed directory: %v", err)
	}
	s.SeedDir = seeds
	for _, bad := range []string{outside, filepath.Join(seeds, "link.raw"), filepath.Join(seeds, "..", "secret.raw")} {
		if err := s.Register(ctx, spec(bad)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("seed %s outside the seed directory: %v", bad, err)
		}
	}
	small := filepath.Join(seeds, "small.raw")
	os.WriteFile(small, make([]byte, 4096), 0o600)
	if err := s.Register(ctx, spec(small)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("seed of the wrong size: %v", err)
	}
	if err := s.Register(ctx, spec(img)); err != nil {
		t.Fatal(err)
	}
	st, _ := s.Status(ctx, "m1")
	if st.LastSeq != 1 || len(st.Points) != 1 || st.Points[0].Consistency != "seed" {
		t.Fatalf("seeded replica: %+v", st)
	}
	out := t.TempDir()
	if _, err := s.Failover(ctx, "m1", FailoverOptions{DisksOnly: true, To: out}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "a.raw")); !bytes.Equal(got, bytes.Repeat([]byte{9}, 1<<20)) {
		t.Fatal("the seeded replica does not read as the seed")
	}
}

// TestMachineStateRefused: a spec.json altered on the target's disk — a
// disk name that leaves the machine's directory, or another machine's
// spec — is refused when the store opens, naming it.
func TestMachineStateRefused(t *testing.T) {
	for name, spec := range map[string]string{
		"path":  `{"machine":"m1","disks":[{"name":"../../x","size":4096}]}`,
		"other": `{"machine":"m2","disks":[{"name":"a","size":4096}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, clock.NewFake(t0))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Register(context.Background(), Spec{Machine: "m1", Disks: []DiskSpec{{Name: "a", Size: 4096}}}); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "machines", "m1", "spec.json"), []byte(spec), 0o600)
			if _, err := Open(dir, clock.NewFake(t0)); err == nil || !strings.Contains(err.Error(), "spec.json") {
				t.Fatalf("opening with an altered spec.json: %v", err)
			}
		})
	}
}
