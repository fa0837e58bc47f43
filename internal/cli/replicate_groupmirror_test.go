package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lifeboat/internal/nbd"
)

// groupMemberStatus is a group member's replicate status --json.
type groupMemberStatus struct {
	mirrorStatus
	LastGroupCut *time.Time `json:"last_group_cut"`
	GroupCutMode string     `json:"group_cut_mode"`
	HoldSeconds  float64    `json:"group_cut_hold_seconds"`
	HoldMax      float64    `json:"group_cut_hold_max_seconds"`
	CutsDropped  int        `json:"group_cuts_dropped"`
	CannotPause  string     `json:"cannot_pause"`
	LagSeconds   float64    `json:"lag_seconds"`
	PauseSeconds float64    `json:"group_pause_seconds"`
	PauseMax     float64    `json:"group_pause_max_seconds"`
}

// statusOf decodes replicate status --json of machine into a T.
func statusOf[T any](s *replSite, machine string) (T, bool) {
	r := s.run("replicate", "status", "--machine", machine, "--json")
	var st T
	return st, r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil
}

func (s *replSite) groupMemberStatus(machine string) (groupMemberStatus, bool) {
	return statusOf[groupMemberStatus](s, machine)
}

// runGroup enables each member (name → its own flags, such as --qmp) in
// group g at site dr, with the common flags after the defaults (--every
// 200ms --crash-interval 1ms), and starts replicate run --group g with its
// directories apart from other tests' machines of the same names. A failed
// test logs a's status and the runner's log.
func (s *replSite) runGroup(t *testing.T, members map[string][]string, common ...string) *proc {
	t.Helper()
	s.env["TMPDIR"] = t.TempDir()
	for name, own := range members {
		args := append([]string{"replicate", "enable", "--machine", name, "--target", "dr", "--group", "g",
			"--every", "200ms", "--crash-interval", "1ms"}, own...)
		if r := s.run(append(args, common...)...); r.code != 0 {
			t.Fatalf("replicate enable: %s", r)
		}
	}
	runner := startProcEnv(t, s.env, "replicate", "run", "--group", "g")
	t.Cleanup(func() {
		if t.Failed() {
			st, _ := s.groupMemberStatus("a")
			t.Logf("status of a: %+v", st)
			t.Logf("replicate run:\n%s", runner.stderr.String())
		}
	})
	return runner
}

// daemonGroup is runGroup's members for storage daemons name→d.
func daemonGroup(daemons map[string]*mirrorDaemon) map[string][]string {
	m := map[string][]string{}
	for name, d := range daemons {
		m[name] = []string{"--qmp", d.qmp, "--nbd-server", "unix:" + d.nbdSock}
	}
	return m
}

// counterWriter writes a shared counter to two disks without pause: odd
// numbers to the first, even ones to the second, each write (a 4 KiB
// block at offset 0) completed before the next is issued. At any instant
// the disks' counters differ by exactly one.
type counterWriter struct {
	n       atomic.Int64
	stop    chan struct{}
	stopped chan error
}

func startCounterWriter(t *testing.T, uris ...string) *counterWriter {
	t.Helper()
	var disks []*nbd.Disk
	for _, u := range uris {
		d, err := nbd.OpenDisk(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		disks = append(disks, d)
	}
	w := &counterWriter{stop: make(chan struct{}), stopped: make(chan error, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			select {
			case <-w.stop:
				w.stopped <- nil
				return
			default:
			}
			k := w.n.Load() + 1
			copy(buf, fmt.Appendf(nil, "%-16d", k))
			if _, err := disks[(k+1)%2].Client().WriteAt(buf, 0); err != nil {
				w.stopped <- err
				return
			}
			w.n.Store(k)
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *counterWriter) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
}

// counterAt reads the counter a failed-over disk holds (0 when never
// written).
func counterAt(t *testing.T, path string) int64 {
	t.Helper()
	b := readFile(t, path)[:16]
	if bytes.Equal(b, make([]byte, 16)) {
		return 0
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s holds %q", path, b)
	}
	return v
}

// A group under mirror capture keeps its cuts coming while both members
// write without a pause (no cut is ever retried: each is one instant
// across both journals, the receivers holding writes for well under a
// second), and every group failover shows the two disks at one instant:
// the writer's counters differ by exactly one (ten failovers in a row,
// each to a newer group point).
func TestReplicateGroupMirrorNonstopWriter(t *testing.T) {
	da, db := newMirrorDaemon(t), newMirrorDaemon(t)
	s := newReplSite(t)
	// The writer starts first: the bitmap cuts that start the mirrors
	// face it too (a dropped group cut, then a cut of each member alone).
	w := startCounterWriter(t, da.uri, db.uri)
	s.runGroup(t, daemonGroup(map[string]*mirrorDaemon{"a": da, "b": db}), "--capture", "mirror")
	var sta, stb groupMemberStatus
	waitFor(t, 60*time.Second, "both members mirroring with marker group cuts", func() bool {
		var oka, okb bool
		sta, oka = s.groupMemberStatus("a")
		stb, okb = s.groupMemberStatus("b")
		return oka && okb && sta.Capture == "mirror" && stb.Capture == "mirror" && sta.GroupCutMode == "marker" && sta.LastGroupCut != nil && stb.LastGroupCut != nil
	})
	started := time.Now()
	t.Logf("mirroring at writer count %d", w.n.Load())
	prev := started
	for round := range 10 {
		// A group cut newer than the last round's, on both members, with
		// the writer never pausing.
		waitFor(t, 20*time.Second, fmt.Sprintf("round %d: a group cut after %s", round, prev.Format(time.RFC3339Nano)), func() bool {
			var oka, okb bool
			sta, oka = s.groupMemberStatus("a")
			stb, okb = s.groupMemberStatus("b")
			return oka && okb && sta.LastGroupCut != nil && stb.LastGroupCut != nil && sta.LastGroupCut.After(prev) && stb.LastGroupCut.After(prev)
		})
		out := t.TempDir()
		r := s.run("--json", "failover", "--group", "g", "--disks-only", "--to", out)
		var gf groupFailoverJSON
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &gf) != nil || len(gf.Failovers) != 2 {
			t.Fatalf("failover --group: %s", r)
		}
		a, b := counterAt(t, filepath.Join(out, "a", "d0.raw")), counterAt(t, filepath.Join(out, "b", "d0.raw"))
		t.Logf("round %d: group point %s: a=%d b=%d (writer at %d); hold %.6fs (max %.6fs)", round,
			gf.Point.Time.Format(time.RFC3339Nano), a, b, w.n.Load(), sta.HoldSeconds, sta.HoldMax)
		if !gf.Point.Time.After(prev) {
			t.Fatalf("round %d: the group point %s is not newer than %s", round, gf.Point.Time.Format(time.RFC3339Nano), prev.Format(time.RFC3339Nano))
		}
		if a-b != 1 && b-a != 1 {
			t.Fatalf("group point %d shows a at %d and b at %d: not one instant", gf.Point.ID, a, b)
		}
		if a%2 != 1 && a != 0 || b%2 != 0 {
			t.Fatalf("group point %d: a=%d (odd), b=%d (even)", gf.Point.ID, a, b)
		}
		prev = gf.Point.Time
	}
	w.close()
	if err := <-w.stopped; err != nil {
		t.Fatal(err)
	}
	if n := w.n.Load(); n < 100 {
		t.Fatalf("the writer wrote only %d times: the guest was held up", n)
	}
	for _, st := range []groupMemberStatus{sta, stb} {
		if st.State != "protected" || st.Error != "" || st.HoldMax <= 0 || st.HoldMax > 0.5 || st.LagSeconds > 10 {
			t.Fatalf("member status: %+v, want protected, a measured hold under the 500 ms bound", st)
		}
	}
}

// A group under bitmap capture whose members write without a pause drops
// its cuts (a member wrote while the cut was taken); after a few it tries
// a paused cut, but storage daemons have no vCPUs to stop: replicate
// status says the group starves and why (state error, so the
// replication-lag alert fires), and once the writes stop a cut is kept
// and the member is protected again.
func TestReplicateGroupBitmapStarving(t *testing.T) {
	da, db := newMirrorDaemon(t), newMirrorDaemon(t)
	s := newReplSite(t)
	runner := s.runGroup(t, daemonGroup(map[string]*mirrorDaemon{"a": da, "b": db}), "--capture", "bitmap")
	s.cutAfter("a", time.Now(), 30*time.Second)
	w := startCounterWriter(t, da.uri, db.uri)
	var st groupMemberStatus
	waitFor(t, 60*time.Second, "the status to say the group starves", func() bool {
		var ok bool
		st, ok = s.groupMemberStatus("a")
		return ok && st.State == "error" && st.CannotPause != ""
	})
	t.Logf("starving: %+v (writer at %d)", st, w.n.Load())
	if !strings.Contains(st.Error, "starves") || !strings.Contains(st.Error, "cannot be paused") ||
		!strings.Contains(st.Error, "no vCPUs") || st.CutsDropped < 3 {
		t.Fatalf("status of a starving group: %+v", st)
	}
	if r := s.run("replicate", "status"); !strings.Contains(r.stdout, "error") {
		t.Fatalf("replicate status does not show the error: %s", r)
	}
	w.close()
	if err := <-w.stopped; err != nil {
		t.Fatal(err)
	}
	s.cutAfter("a", time.Now(), 30*time.Second)
	s.cutAfter("b", time.Now(), 30*time.Second)
	if !strings.Contains(runner.stderr.String(), "group cuts starve") {
		t.Fatalf("the log does not say the group starves:\n%s", runner.stderr.String())
	}
}
