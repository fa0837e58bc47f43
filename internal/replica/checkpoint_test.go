package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/clock"
)

// history is a replica with cuts written at random (data and zero records
// of random sizes, overlapping earlier ones) and what each disk holds at
// every cut.
type history struct {
	dir   string
	clk   *clock.Fake
	spec  Spec
	rng   *rand.Rand
	cur   [][]byte
	last  uint64
	state map[uint64][][]byte // cut → disk contents at it
}

var checkpointDisks = []DiskSpec{{Name: "a", Size: 2<<20 + 64<<10}, {Name: "b", Size: 512 << 10}}

// newHistory registers machine m in a new replica directory and sends it
// cuts batches, one every 20 s (one in five app-consistent).
func newHistory(t *testing.T, cuts int) *history {
	t.Helper()
	h := &history{dir: t.TempDir(), clk: clock.NewFake(t0.Add(time.Duration(cuts) * 20 * time.Second)),
		spec:  Spec{Machine: "m", Disks: checkpointDisks, Policy: Policy{Retention: time.Hour, CrashInterval: time.Minute}},
		rng:   rand.New(rand.NewPCG(7, uint64(cuts))),
		state: map[uint64][][]byte{}}
	s, err := Open(h.dir, h.clk)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register(context.Background(), h.spec); err != nil {
		t.Fatal(err)
	}
	h.cur = make([][]byte, len(h.spec.Disks))
	for i, d := range h.spec.Disks {
		h.cur[i] = make([]byte, d.Size)
	}
	for range cuts {
		h.send(t, s, false)
	}
	return h
}

// send sends the next cut, 20 s after the last: random writes, or, full,
// every disk's whole content after them (a resync).
func (h *history) send(t *testing.T, s *Store, full bool) {
	t.Helper()
	h.last++
	seq, rng := h.last, h.rng
	cons := "crash"
	if seq%5 == 0 {
		cons = "app"
	}
	// A batch's records never overlap: each goes to its own slot.
	b := batch(t, Header{Seq: seq, Cut: t0.Add(time.Duration(seq) * 20 * time.Second), Consistency: cons, Full: full}, func(bw *BatchWriter) {
		for disk, d := range h.spec.Disks {
			if full {
				bw.Data(disk, 0, h.cur[disk])
				continue
			}
			slots := d.Size / (64 << 10)
			for _, slot := range rng.Perm(int(slots))[:1+rng.IntN(4)] {
				off := int64(slot)*(64<<10) + rng.Int64N(64)*512
				n := min(512*(1+rng.Int64N(100)), int64(slot+1)*(64<<10)-off)
				if rng.IntN(4) == 0 {
					bw.Zero(disk, off, n)
					clear(h.cur[disk][off : off+n])
					continue
				}
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				bw.Data(disk, off, p)
				copy(h.cur[disk][off:], p)
			}
		}
	})
	if err := s.Receive(context.Background(), "m", seq, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	snap := make([][]byte, len(h.cur))
	for i := range h.cur {
		snap[i] = bytes.Clone(h.cur[i])
	}
	h.state[seq] = snap
}

func (h *history) open(t *testing.T, every int) *Store {
	t.Helper()
	s, err := Open(h.dir, h.clk)
	if err != nil {
		t.Fatal(err)
	}
	s.CheckpointEvery = every
	return s
}

// checkPoints holds every recovery point of the replica and compares its
// overlays, read through qemu-img, with the disks at its cut, byte for
// byte; it returns the points.
func (h *history) checkPoints(t *testing.T, s *Store) []Point {
	t.Helper()
	ctx := context.Background()
	st, err := s.Status(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	every := s.CheckpointEvery
	for _, pt := range st.Points {
		hd, err := s.Hold(ctx, "m", HoldOptions{Point: strconv.FormatUint(pt.ID, 10)})
		if err != nil {
			t.Fatalf("holding point %d: %v", pt.ID, err)
		}
		if pt.ID <= st.CheckpointSeq && hd.Batches >= every {
			t.Errorf("point %d: %d batches applied over checkpoint %d (checkpoints every %d)", pt.ID, hd.Batches, hd.Checkpoint, every)
		}
		for i, d := range hd.Disks {
			out := filepath.Join(t.TempDir(), d.Name+".raw")
			if msg, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", d.File, out).CombinedOutput(); err != nil {
				t.Fatalf("reading point %d of disk %s: %v: %s", pt.ID, d.Name, err, msg)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, h.state[pt.ID][i]) {
				t.Fatalf("point %d (over checkpoint %d, %d batches): disk %s differs from the source at that cut", pt.ID, hd.Checkpoint, hd.Batches, d.Name)
			}
		}
		if err := s.Release(ctx, "m", hd.ID); err != nil {
			t.Fatal(err)
		}
	}
	return st.Points
}

// checkCuts writes every cut the journal holds as raw disks (failover
// --disks-only to an exact cut, as a group failover asks) and compares
// them with the source.
func (h *history) checkCuts(t *testing.T, s *Store, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		out := t.TempDir()
		if _, err := s.Failover(context.Background(), "m", FailoverOptions{Cut: seq, DisksOnly: true, To: out}); err != nil {
			t.Fatalf("cut %d: %v", seq, err)
		}
		for i, d := range h.spec.Disks {
			got, err := os.ReadFile(filepath.Join(out, d.Name+".raw"))
			if err != nil || !bytes.Equal(got, h.state[seq][i]) {
				t.Fatalf("cut %d: disk %s differs from the source (%v)", seq, d.Name, err)
			}
		}
	}
}

// Checkpoints change no point and no cut: every point held and every cut
// written out reads as the source did, bit for bit, before and after the
// base folds past some checkpoints (dropping them), after a restart, and
// when the checkpoints are lost and made again.
func TestCheckpointsKeepEveryPoint(t *testing.T) {
	ctx := context.Background()
	h := newHistory(t, 24)
	s := h.open(t, 4)
	if n, err := s.Checkpoint(ctx, "m"); err != nil || n != 6 {
		t.Fatalf("checkpointing 24 cuts every 4: %d, %v", n, err)
	}
	if n, err := s.Checkpoint(ctx, "m"); err != nil || n != 0 {
		t.Fatalf("checkpointing again: %d, %v", n, err)
	}
	st, _ := s.Status(ctx, "m")
	if st.Checkpoints != 6 || st.CheckpointSeq != 24 {
		t.Fatalf("status: %d checkpoints, newest %d", st.Checkpoints, st.CheckpointSeq)
	}
	h.checkPoints(t, s)
	h.checkCuts(t, s, 1, 24)

	// failover commit of a machine not running makes its disks standalone
	// (qemu-img rebase) through the whole chain.
	hd, err := s.Hold(ctx, "m", HoldOptions{Point: "21"})
	if err != nil || hd.Checkpoint != 20 || hd.Batches != 1 {
		t.Fatalf("hold of cut 21: %+v, %v", hd, err)
	}
	fo := &Failover{}
	for _, d := range hd.Disks {
		fo.Disks = append(fo.Disks, FailedDisk{Name: d.Name, File: d.File, Format: "qcow2"})
	}
	if err := standalone(ctx, fo); err != nil {
		t.Fatal(err)
	}
	for i, d := range hd.Disks {
		if got, err := qcow2Backing(d.File); err != nil || got != "" {
			t.Fatalf("disk %s after commit reads %q (%v)", d.Name, got, err)
		}
		out := filepath.Join(t.TempDir(), "x.raw")
		if msg, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", d.File, out).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, msg)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, h.state[21][i]) {
			t.Fatalf("disk %s made standalone differs from cut 21", d.Name)
		}
	}
	if err := s.Release(ctx, "m", hd.ID); err != nil {
		t.Fatal(err)
	}

	// The base folds to cut 10 (an hour and 200 s later): checkpoints 4
	// and 8 go, 12 reads the base.
	h.clk.Advance(time.Hour + 210*time.Second - 24*20*time.Second)
	if n, err := s.Fold(ctx, "m"); err != nil || n != 10 {
		t.Fatalf("fold: %d, %v", n, err)
	}
	if st, _ := s.Status(ctx, "m"); st.Checkpoints != 4 {
		t.Fatalf("after folding to cut 10: %d checkpoints, want 4", st.Checkpoints)
	}
	if got, err := qcow2Backing(filepath.Join(h.dir, "machines", "m", "checkpoints", seqName(12), "a.qcow2")); err != nil || got != filepath.Join(h.dir, "machines", "m", "base", "a.raw") {
		t.Fatalf("checkpoint 12 reads %q (%v), want the base", got, err)
	}
	pts := h.checkPoints(t, s)
	if pts[0].ID != 10 {
		t.Fatalf("after folding the oldest point is %d, want 10", pts[0].ID)
	}
	h.checkCuts(t, s, 10, 24)

	s = h.open(t, 4) // a restart
	if st, _ := s.Status(ctx, "m"); st.Checkpoints != 4 {
		t.Fatalf("after a restart: %d checkpoints, want 4", st.Checkpoints)
	}
	h.checkPoints(t, s)

	// Lost checkpoints (or a replica from before them) are made again.
	os.RemoveAll(filepath.Join(h.dir, "machines", "m", "checkpoints"))
	s = h.open(t, 4)
	if st, _ := s.Status(ctx, "m"); st.Checkpoints != 0 {
		t.Fatalf("with no checkpoint directory: %d checkpoints", st.Checkpoints)
	}
	h.checkPoints(t, s)
	if n, err := s.Checkpoint(ctx, "m"); err != nil || n != 3 {
		t.Fatalf("checkpointing cuts 11 to 24 again: %d, %v", n, err)
	}
	h.checkPoints(t, s)
}

// A checkpoint whose image does not read the one before it (damage, not
// a crash) is removed on start with every one after it, and made again;
// a full cut (a resync) is not put in a checkpoint but folded, and
// checkpoints go on after it.
func TestCheckpointRepair(t *testing.T) {
	ctx := context.Background()
	h := newHistory(t, 12)
	s := h.open(t, 3)
	if _, err := s.Checkpoint(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	skip := filepath.Join(h.dir, "machines", "m", "checkpoints", seqName(9), "a.qcow2")
	if msg, err := exec.Command("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", filepath.Join(filepath.Dir(filepath.Dir(skip)), seqName(3), "a.qcow2"), skip).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, msg)
	}
	s = h.open(t, 3)
	if st, _ := s.Status(ctx, "m"); st.Checkpoints != 2 || st.CheckpointSeq != 6 {
		t.Fatalf("checkpoint 9 reads 3: %d checkpoints left, the newest %d; want 3 and 6", st.Checkpoints, st.CheckpointSeq)
	}
	h.checkPoints(t, s)
	if n, err := s.Checkpoint(ctx, "m"); err != nil || n != 2 {
		t.Fatalf("making 9 and 12 again: %d, %v", n, err)
	}
	h.checkPoints(t, s)

	h.send(t, s, true) // 13, full
	h.send(t, s, false)
	h.send(t, s, false)
	if n, err := s.Checkpoint(ctx, "m"); err != nil || n != 0 {
		t.Fatalf("checkpointing over a full cut: %d, %v", n, err)
	}
	if n, err := s.Fold(ctx, "m"); err != nil || n != 13 {
		t.Fatalf("folding to the full cut: %d, %v", n, err)
	}
	h.send(t, s, false)
	if n, err := s.Checkpoint(ctx, "m"); err != nil || n != 1 {
		t.Fatalf("checkpointing after the full cut: %d, %v", n, err)
	}
	if st, _ := s.Status(ctx, "m"); st.Checkpoints != 1 || st.CheckpointSeq != 16 {
		t.Fatalf("after the full cut: %d checkpoints, the newest %d; want 1 at 16", st.Checkpoints, st.CheckpointSeq)
	}
	h.checkPoints(t, s)
	h.checkCuts(t, s, 13, 16)

	// A replica directory moved: its checkpoints name images at the old
	// place, so they are dropped and made again.
	moved := h.dir + "-moved"
	if err := os.Rename(h.dir, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(moved) })
	h.dir = moved
	s = h.open(t, 3)
	if st, _ := s.Status(ctx, "m"); st.Checkpoints != 0 {
		t.Fatalf("a moved replica kept %d checkpoints naming the old place", st.Checkpoints)
	}
	h.checkPoints(t, s)
	if n, err := s.Checkpoint(ctx, "m"); err != nil || n != 1 {
		t.Fatalf("checkpointing the moved replica: %d, %v", n, err)
	}
	h.checkPoints(t, s)
}

// A site that dies while making or dropping a checkpoint — an injected
// failure at each step, and the process killed (-9) while it applies a
// checkpoint's batches — loses no point: on restart every point reads as
// the source did, the store holds only whole checkpoints, and
// checkpointing goes on.
func TestCheckpointCrash(t *testing.T) {
	ctx := context.Background()
	for _, step := range []string{"checkpoint-written", "rebase", "rebase-second-disk", "drop"} {
		t.Run(step, func(t *testing.T) {
			h := newHistory(t, 14)
			s := h.open(t, 3)
			fold := step != "checkpoint-written"
			if fold {
				if _, err := s.Checkpoint(ctx, "m"); err != nil {
					t.Fatal(err)
				}
				h.clk.Advance(time.Hour + 100*time.Second - 14*20*time.Second) // folds cuts 1-5: drops 3, rebases 6
			}
			calls := 0
			checkpointFault = func(at string) error {
				if at == step || (step == "rebase-second-disk" && at == "rebase") {
					if calls++; step != "rebase-second-disk" || calls == 2 {
						return errors.New("injected crash")
					}
				}
				return nil
			}
			var err error
			if fold {
				_, err = s.Fold(ctx, "m")
			} else {
				_, err = s.Checkpoint(ctx, "m")
			}
			checkpointFault = nil
			if err == nil {
				t.Fatalf("no injected failure at %s", step)
			}
			h.checkPoints(t, s) // the failure left the running site right too
			s = h.open(t, 3)    // the restart
			pts := h.checkPoints(t, s)
			ents, _ := os.ReadDir(filepath.Join(h.dir, "machines", "m", "checkpoints"))
			for _, e := range ents {
				if seq, ok := parseSeq(e.Name()); !ok || (fold && seq <= 5) {
					t.Fatalf("after the restart the checkpoints hold %s", e.Name())
				}
			}
			if _, err := s.Checkpoint(ctx, "m"); err != nil {
				t.Fatal(err)
			}
			if st, _ := s.Status(ctx, "m"); st.CheckpointSeq != 12 {
				t.Fatalf("checkpointing after the restart reaches cut %d, want 12", st.CheckpointSeq)
			}
			if got := h.checkPoints(t, s); len(got) != len(pts) {
				t.Fatalf("points %v, then %v", pts, got)
			}
		})
	}
	t.Run("kill", func(t *testing.T) {
		h := newHistory(t, 30)
		for round := range 3 {
			// A child process makes the checkpoints; it is killed once it is
			// applying batches into one (its temporary directory exists).
			cmd := exec.Command(os.Args[0], "-test.run=^TestCheckpointChild$")
			cmd.Env = append(os.Environ(), "LIFEBOAT_CHECKPOINT_CHILD="+h.dir)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			killed := false
			for deadline := time.Now().Add(30 * time.Second); !killed && time.Now().Before(deadline); {
				select {
				case err := <-done:
					t.Fatalf("round %d: the child ended before it was killed: %v", round, err)
				case <-time.After(5 * time.Millisecond): // polling for the temporary directory
				}
				matches, _ := filepath.Glob(filepath.Join(h.dir, "machines", "m", "checkpoints", "tmp-*", "a.qcow2"))
				if len(matches) > 0 {
					time.Sleep(time.Duration(round) * 20 * time.Millisecond) // further into the checkpoint
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					killed = true
				}
			}
			if !killed {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				t.Fatalf("round %d: the child made no checkpoint within 30 s", round)
			}
			<-done
			s := h.open(t, 3)
			h.checkPoints(t, s)
		}
		s := h.open(t, 3)
		// The killed children made one checkpoint per cut, up to some cut
		// L; checkpointing every 3 cuts goes on from L while 3 cuts remain.
		before, _ := s.Status(ctx, "m")
		want := before.CheckpointSeq + 3*((30-before.CheckpointSeq)/3)
		if _, err := s.Checkpoint(ctx, "m"); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.Status(ctx, "m"); st.CheckpointSeq != want {
			t.Fatalf("checkpointing after the kills (from cut %d) reaches cut %d, want %d", before.CheckpointSeq, st.CheckpointSeq, want)
		}
		h.checkPoints(t, s)
		h.checkCuts(t, s, 1, 30)
	})
}

// TestCheckpointChild is TestCheckpointCrash's child process: it makes
// the checkpoints of the replica in $LIFEBOAT_CHECKPOINT_CHILD, one cut
// each, slowly enough to be killed in the middle.
func TestCheckpointChild(t *testing.T) {
	dir := os.Getenv("LIFEBOAT_CHECKPOINT_CHILD")
	if dir == "" {
		t.Skip("run by TestCheckpointCrash")
	}
	s, err := Open(dir, clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	s.CheckpointEvery = 1
	for {
		n, err := s.Checkpoint(context.Background(), "m")
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			fmt.Println("all checkpoints made")
			return
		}
	}
}

// TestFoldRebasesWithoutLock: the copy that rebases a checkpoint onto the
// base when a fold drops the one before it (as large as the blocks
// written in CheckpointEvery cuts) is made while the machine's lock is
// free, so the site answers (and receives) meanwhile; the fold then uses
// that copy and every point still reads as the source did.
func TestFoldRebasesWithoutLock(t *testing.T) {
	ctx := context.Background()
	h := newHistory(t, 14)
	s := h.open(t, 3)
	if _, err := s.Checkpoint(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(time.Hour + 100*time.Second - 14*20*time.Second) // folds cuts 1-5: drops 3, rebases 6
	prepared := 0
	checkpointFault = func(at string) error {
		if at != "rebase-prepared" {
			return nil
		}
		prepared++
		answered := make(chan error, 1)
		go func() { _, err := s.Status(ctx, "m"); answered <- err }()
		select {
		case err := <-answered:
			if err != nil {
				t.Errorf("status while the rebase is copied: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the site did not answer while a checkpoint was copied for its rebase: the machine's lock is held")
		}
		return nil
	}
	defer func() { checkpointFault = nil }()
	if _, err := s.Fold(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	checkpointFault = nil
	if prepared != 1 {
		t.Fatalf("the rebase was prepared %d times, want once", prepared)
	}
	tmps, _ := filepath.Glob(filepath.Join(h.dir, "machines", "m", "checkpoints", "*", "*.tmp"))
	if len(tmps) > 0 {
		t.Fatalf("the fold left %v", tmps)
	}
	h.checkPoints(t, s)
	s = h.open(t, 3)
	h.checkPoints(t, s)
}
