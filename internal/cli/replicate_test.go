package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/qmp"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vmtest"
)

// replSite is a replica server (lifeboat replica serve, a subprocess that
// can be killed -9 and restarted) and a source host's state directory
// naming it as site "dr".
type replSite struct {
	t                  *testing.T
	dir, token, listen string
	env                map[string]string
	srv                *proc
	serveArgs          []string
	// netns, when set, is the network namespace the server runs in,
	// reached over the veth link, named by its end there (newNetnsSite).
	netns, link string
}

func newReplSite(t *testing.T, serveArgs ...string) *replSite {
	t.Helper()
	s := &replSite{t: t, dir: filepath.Join(t.TempDir(), "replica"), token: filepath.Join(t.TempDir(), "token"), serveArgs: serveArgs}
	os.WriteFile(s.token, []byte("site-secret\n"), 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.listen = l.Addr().String()
	l.Close()
	// TMPDIR apart: the runners keep their NBD sockets under it, in a
	// directory named for the machine, which other tests name alike.
	s.env = map[string]string{"LIFEBOAT_STATE_DIR": filepath.Join(t.TempDir(), "state"), "TMPDIR": t.TempDir()}
	s.start()
	if r := s.run("site", "add", "dr", "--url", "http://"+s.listen, "--token-file", s.token); r.code != 0 {
		t.Fatalf("site add: %s", r)
	}
	return s
}

func (s *replSite) start() {
	s.t.Helper()
	args := append([]string{"replica", "serve", "--listen", s.listen, "--dir", s.dir, "--token-file", s.token}, s.serveArgs...)
	if s.netns != "" {
		s.srv = startProcIn(s.t, s.netns, args...)
	} else {
		s.srv = startProc(s.t, args...)
	}
	waitFor(s.t, 20*time.Second, "the replica server to listen", func() bool {
		c, err := net.DialTimeout("tcp", s.listen, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (s *replSite) run(args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return inProcEnv(ctx, s.env, args...)
}

type replStatus struct {
	State      string     `json:"state"`
	LastSeq    uint64     `json:"last_seq"`
	LastCut    *time.Time `json:"last_cut"`
	LagSeconds float64    `json:"lag_seconds"`
	Error      string     `json:"error"`
	Points     int        `json:"points"`
}

func (s *replSite) status(machine string) replStatus {
	s.t.Helper()
	st, r, ok := s.tryStatus(machine)
	if !ok {
		s.t.Fatalf("replicate status: %s", r)
	}
	return st
}

// tryStatus is status, without failing while the runner has not enabled
// the machine yet.
func (s *replSite) tryStatus(machine string) (replStatus, result, bool) {
	r := s.run("replicate", "status", "--machine", machine, "--json")
	var st replStatus
	return st, r, r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil
}

// cutAfter waits until the target acknowledged a cut taken after t.
func (s *replSite) cutAfter(machine string, t time.Time, timeout time.Duration) replStatus {
	s.t.Helper()
	var st replStatus
	waitFor(s.t, timeout, "a cut after "+t.Format(time.RFC3339Nano), func() bool {
		var ok bool
		if st, _, ok = s.tryStatus(machine); !ok {
			return false
		}
		return st.State == "protected" && st.LastCut != nil && st.LastCut.After(t)
	})
	return st
}

type replPoint struct {
	ID   uint64    `json:"id"`
	Time time.Time `json:"time"`
}

func (s *replSite) points(machine string) (points []replPoint, lastSeq uint64) {
	s.t.Helper()
	r := s.run("--json", "replicate", "points", "--machine", machine)
	var st struct {
		Points  []replPoint `json:"points"`
		LastSeq uint64      `json:"last_seq"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		s.t.Fatalf("replicate points: %s", r)
	}
	return st.Points, st.LastSeq
}

// checkReplica fails the test unless the machine's disk d0 at point, as
// failover --disks-only writes it, is want.
func (s *replSite) checkReplica(machine, point string, want []byte, msg string) {
	s.t.Helper()
	out := s.t.TempDir()
	if r := s.run("failover", "--machine", machine, "--point", point, "--disks-only", "--to", out); r.code != 0 {
		s.t.Fatalf("failover --disks-only --point %s: %s", point, r)
	}
	if !bytes.Equal(readFile(s.t, filepath.Join(out, "d0.raw")), want) {
		s.t.Fatal(msg)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A storage daemon's disk replicates to a replica server killed -9 and
// restarted in the middle: no acknowledged cut is lost, replication picks
// up again by itself, the latest point's disk equals the source byte for
// byte, an older point shows the older data, and a test failover runs
// while replication goes on and is cleaned up leaving the replica as it was.
func TestReplicateKillTargetFailover(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	runner := startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr",
		"--every", "200ms", "--crash-interval", "1s")

	writeAt(t, fuse, 1<<20, bytes.Repeat([]byte("first "), 20000))
	afterFirst := time.Now()
	st := s.cutAfter("qsd", afterFirst, 30*time.Second)
	t.Logf("first data replicated at cut %d, lag %.2fs", st.LastSeq, st.LagSeconds)
	firstImage := readFile(t, fuse)
	// A point strictly between the two writes, for the older failover.
	// A cut in the next crash interval is a point.
	s.cutAfter("qsd", afterFirst.Truncate(time.Second).Add(time.Second), 30*time.Second)

	// The target dies: the runner notices, the guest keeps writing.
	acked := s.status("qsd").LastSeq
	if !s.srv.kill() {
		t.Fatal("replica server did not die of SIGKILL")
	}
	writeAt(t, fuse, 3<<20, bytes.Repeat([]byte("second"), 30000))
	afterSecond := time.Now()
	waitFor(t, 20*time.Second, "the runner to report the target down", func() bool {
		st := s.status("qsd")
		return st.State == "error" && st.Error != ""
	})
	s.start()
	st = s.cutAfter("qsd", afterSecond, 30*time.Second)
	if st.LastSeq <= acked {
		t.Fatalf("after the restart the replica is at cut %d, not past %d", st.LastSeq, acked)
	}
	points, _ := s.points("qsd")
	var older *replPoint
	for i := range points {
		if points[i].Time.After(afterFirst) && points[i].Time.Before(afterSecond) {
			older = &points[i]
		}
	}
	if older == nil {
		t.Fatalf("no point between the writes (%s, %s): %+v", afterFirst, afterSecond, points)
	}
	if !runner.exited() {
		runner.kill() // the source stops: no more cuts
	}
	want := readFile(t, fuse)

	out := t.TempDir()
	if r := s.run("failover", "--machine", "qsd", "--point", "latest", "--disks-only", "--to", out); r.code != 0 {
		t.Fatalf("failover --disks-only: %s", r)
	}
	if got := readFile(t, filepath.Join(out, "d0.raw")); !bytes.Equal(got, want) {
		t.Fatal("the latest point's disk differs from the source")
	}
	if _, err := os.Stat(filepath.Join(out, "qsd-dr.json")); err != nil {
		t.Fatalf("no -dr definition: %v", err)
	}
	s.checkReplica("qsd", strconv.FormatUint(older.ID, 10), firstImage, "the older point's disk is not the disk between the writes")
	if r := s.run("failover", "--machine", "qsd", "--point", "99999", "--disks-only", "--to", out); r.code != 8 {
		t.Fatalf("failover to a missing point: %s, want exit 8", r)
	}
}

// A test failover starts an isolated copy while replication goes on;
// cleaning it up leaves the replica taking cuts.
func TestReplicateTestFailover(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "200ms")
	writeAt(t, fuse, 0, bytes.Repeat([]byte("boot"), 1000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)

	r := s.run("--json", "failover", "--machine", "qsd", "--test")
	var fo struct {
		Name string `json:"name"`
		PID  int    `json:"pid"`
		QMP  string `json:"qmp"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fo) != nil {
		t.Fatalf("failover --test: %s", r)
	}
	t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
	if fo.Name != "qsd-dr-test" {
		t.Fatalf("test copy is named %q", fo.Name)
	}
	if c, err := net.Dial("unix", fo.QMP); err != nil {
		t.Fatalf("the test copy's QMP does not answer: %v", err)
	} else {
		c.Close()
	}
	// Replication goes on during the test.
	writeAt(t, fuse, 1<<20, bytes.Repeat([]byte("during"), 1000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	s.cleanupTest("qsd", fo.PID)
	after := time.Now()
	s.cutAfter("qsd", after, 30*time.Second)
	if r := s.run("failover", "--machine", "qsd", "--test-cleanup"); r.code != 8 {
		t.Fatalf("second cleanup: %s, want exit 8", r)
	}
	s.checkReplica("qsd", "latest", readFile(t, fuse), "after the test failover the replica differs from the source")
}

// failoverCounter fails machine over with args and returns the counter the
// started copy reads (readcounter workload) and how long its disks took.
func (s *replSite) failoverCounter(ctx context.Context, machine string, args ...string) (int, float64) {
	t := s.t
	t.Helper()
	r := s.run(append([]string{"--json", "failover", "--machine", machine}, args...)...)
	var fo struct {
		PID     int     `json:"pid"`
		Console string  `json:"console"`
		Seconds float64 `json:"seconds"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fo) != nil {
		t.Fatalf("failover %v: %s", args, r)
	}
	t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
	var m []string
	waitFor(t, vmBootDeadline, "the failed-over machine to read its counter", func() bool {
		b, _ := os.ReadFile(fo.Console)
		m = vmReadcounter.FindStringSubmatch(string(b))
		return m != nil
	})
	n, _ := strconv.Atoi(m[1])
	return n, fo.Seconds
}

// counterVM boots a TCG VM counting on ext4 (with its guest agent when
// agent) and replicates it as vm1 (replicate run gets extra too).
func counterVM(t *testing.T, ctx context.Context, agent bool, extra ...string) (*replSite, *vmtest.VM) {
	disk := vmtest.NewExt4Disk(t, filepath.Join(t.TempDir(), "root.qcow2"), "qcow2", 32)
	kernel, initrd := vmtest.Assets(t)
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "counter", GuestAgent: agent})
	if _, err := vm.WaitLine(ctx, vmReady); err != nil {
		t.Fatal(err)
	}
	s := newReplSite(t)
	if agent {
		extra = append(extra, "--guest-agent", vm.GuestAgentSocket)
	}
	def := filepath.Join(t.TempDir(), "vm1.json")
	os.WriteFile(def, []byte(fmt.Sprintf(`{"schema": "lifeboat.machine/v1", "name": "vm1", "cpus": 1, "memory_mib": 256,
		"disks": [{"name": "vd0", "bus": "virtio", "format": "qcow2"}],
		"kernel": %q, "initrd": %q, "cmdline": "console=ttyS0 panic=-1 quiet lifeboat.workload=readcounter"}`, kernel, initrd)), 0o600)
	startProcEnv(t, s.env, append([]string{"replicate", "run", "--machine", "vm1", "--qmp", vm.QMPSocket, "--target", "dr",
		"--every", "300ms", "--crash-interval", "1s", "--definition", def}, extra...)...)
	return s, vm
}

// lastCounter is the last counter value the VM reported as synced.
func lastCounter(vm *vmtest.VM) int {
	last := -1
	for _, l := range vm.Lines() {
		if m := vmCounter.FindStringSubmatch(l); m != nil {
			last, _ = strconv.Atoi(m[1])
		}
	}
	return last
}

// A planned failover loses nothing: the copy reads the last counter the
// source guest synced (or the one it was syncing when paused), and the
// source QEMU is shut down.
func TestReplicateVMPlannedFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	s, vm := counterVM(t, ctx, false)
	for {
		m, err := vm.WaitLine(ctx, vmCounter)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(m[1]); n >= 3 {
			break
		}
	}
	got, _ := s.failoverCounter(ctx, "vm1", "--planned")
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("the source QEMU did not shut down cleanly: %v", err)
	}
	last := lastCounter(vm)
	t.Logf("planned failover: the copy reads %d, the source last synced %d", got, last)
	if got != last && got != last+1 {
		t.Fatalf("the copy reads counter %d; the source synced %d before it was paused", got, last)
	}
	if st := s.status("vm1"); st.State != "failed-over" {
		waitFor(t, 30*time.Second, "the runner to report failed-over", func() bool { return s.status("vm1").State == "failed-over" })
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && bytes.Contains(b, []byte(") Z "))
}

var (
	vmReady        = regexp.MustCompile(`^LB ready$`)
	vmCounter      = regexp.MustCompile(`^LB counter (\d+)$`)
	vmReadcounter  = regexp.MustCompile(`LB readcounter (\d+)`)
	vmBootDeadline = 3 * time.Minute
)

// A TCG VM counting on ext4 (each value synced) is replicated, then
// killed -9. Failover to the latest point starts the -dr machine at the
// target from the stored definition, and it reads a counter at least the
// last value the guest had synced before the last acknowledged cut; a test
// failover to an older point reads that point's counter.
func TestReplicateVMFailoverBoots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	s, vm := counterVM(t, ctx, false)

	counter := func() (int, time.Time) {
		t.Helper()
		m, err := vm.WaitLine(ctx, vmCounter)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(m[1])
		return n, time.Now()
	}
	n1, t1 := counter()
	// A cut in the next crash interval is a point after counter n1.
	s.cutAfter("vm1", t1.Truncate(time.Second).Add(time.Second), time.Minute)
	tp := time.Now()
	var n2 int
	var t2 time.Time
	for n2 < n1+3 {
		n2, t2 = counter()
	}
	st := s.cutAfter("vm1", t2, time.Minute)
	t.Logf("counter %d synced before cut %d (lag %.2fs)", n2, st.LastSeq, st.LagSeconds)
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	vm.Wait(ctx)
	last := lastCounter(vm)
	points, _ := s.points("vm1")
	var older *replPoint
	for i := range points {
		if points[i].Time.After(t1) && points[i].Time.Before(tp) {
			older = &points[i]
		}
	}

	failover := func(args ...string) (int, float64) {
		t.Helper()
		return s.failoverCounter(ctx, "vm1", args...)
	}
	got, secs := failover("--point", "latest")
	t.Logf("failed over to latest in %.2fs: counter %d (synced before the cut: %d, last reported: %d)", secs, got, n2, last)
	if got < n2 || got > last+1 {
		t.Fatalf("the -dr machine reads counter %d; want %d..%d", got, n2, last+1)
	}
	if older == nil {
		t.Fatalf("no point after counter %d and before %s: %+v", n1, tp, points)
	}
	// The older point holds what the guest had synced when it was cut: at
	// least n1, at most what the latest point holds.
	latest := got
	got, _ = failover("--test", "--point", strconv.FormatUint(older.ID, 10))
	t.Logf("the test copy of point %d reads counter %d (n1 %d, latest %d)", older.ID, got, n1, latest)
	if got < n1 || got > latest {
		t.Fatalf("the test copy of point %d reads counter %d; want %d..%d", older.ID, got, n1, latest)
	}
}

// The shipper killed -9 at random moments of its cycles and restarted
// resumes from its dirty bitmaps — no full resync — and the replica ends
// equal to the source.
func TestReplicateRunnerKilled(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	args := []string{"replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "100ms"}
	runner := startProcEnv(t, s.env, args...)
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	for i := range 4 {
		writeAt(t, fuse, int64(i)<<20, bytes.Repeat([]byte{byte('a' + i)}, 256<<10))
		time.Sleep(time.Duration(50+i*70) * time.Millisecond) // a different moment of the cycle each time
		if !runner.kill() {
			t.Fatal("runner did not die of SIGKILL")
		}
		runner = startProcEnv(t, s.env, args...)
	}
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	var st struct {
		Resyncs int `json:"resyncs"`
	}
	r := s.run("replicate", "status", "--machine", "qsd", "--json")
	json.Unmarshal([]byte(r.stdout), &st)
	if st.Resyncs != 0 {
		t.Fatalf("killing the runner caused %d full resyncs:\n%s", st.Resyncs, r)
	}
	runner.kill()
	s.checkReplica("qsd", "latest", readFile(t, fuse), "after the runner was killed four times the replica differs from the source")
}

// Change tracking lost (the bitmaps removed, as a QEMU restart loses them)
// while the guest writes and discards: the runner notices and resyncs,
// sending only the blocks whose hashes differ from the replica's latest
// cut, and the replica equals the source again.
func TestReplicateResyncAfterLostTracking(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "200ms")
	writeAt(t, fuse, 0, bytes.Repeat([]byte("before"), 1<<20)) // 6 MiB
	s.cutAfter("qsd", time.Now(), 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mon, err := qmp.Dial(ctx, sock) // waits for the runner to finish its cycle
	if err != nil {
		t.Fatal(err)
	}
	disks, err := mon.Disks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for _, b := range disks[0].Bitmaps {
		if strings.HasPrefix(b.Name, "lbrep-") {
			if err := mon.Transaction(ctx, qmp.BitmapRemove(disks[0].Node, b.Name)); err != nil {
				t.Fatal(err)
			}
			removed++
		}
	}
	if removed == 0 {
		t.Fatalf("no replication bitmap on the disk: %+v", disks[0].Bitmaps)
	}
	// Unrecorded: new data, and zeros over data the replica holds.
	writeAt(t, fuse, 5<<20, bytes.Repeat([]byte("unseen"), 30000))
	writeAt(t, fuse, 2<<20, make([]byte, 300000))
	mon.Close()

	var resync struct {
		Resyncs int   `json:"resyncs"`
		Bytes   int64 `json:"last_resync_bytes"`
	}
	waitFor(t, 30*time.Second, "a resync", func() bool {
		r := s.run("replicate", "status", "--machine", "qsd", "--json")
		return json.Unmarshal([]byte(r.stdout), &resync) == nil && resync.Resyncs == 1
	})
	// Only the blocks whose hashes differ from the replica's went: the
	// new data and the zeroed range, not the disk's 6 MiB.
	if resync.Bytes > 1<<20 {
		t.Fatalf("the resync sent %d bytes, want under 1 MiB", resync.Bytes)
	}
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	s.checkReplica("qsd", "latest", readFile(t, fuse), "after the resync the replica differs from the source")
}

// A real failover stops replication (the runner reports failed-over);
// committing it makes the running copy's disks standalone, holding the
// source's data.
func TestReplicateFailoverCommit(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "200ms")
	writeAt(t, fuse, 1<<20, bytes.Repeat([]byte("commit"), 40000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	want := readFile(t, fuse)

	r := s.run("--json", "failover", "--machine", "qsd")
	var fo struct {
		PID   int `json:"pid"`
		Disks []struct {
			File string `json:"file"`
		} `json:"disks"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fo) != nil || len(fo.Disks) != 1 {
		t.Fatalf("failover: %s", r)
	}
	t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
	waitFor(t, 30*time.Second, "the runner to report failed-over", func() bool { return s.status("qsd").State == "failed-over" })
	if r := s.run("failover", "commit", "--machine", "qsd"); r.code != 0 {
		t.Fatalf("failover commit: %s", r)
	}
	info := vmtest.QEMU(t, "qemu-img", "info", "-U", "--output=json", fo.Disks[0].File)
	if strings.Contains(info, "backing-filename") {
		t.Fatalf("after commit the disk still has a backing file:\n%s", info)
	}
	raw := filepath.Join(t.TempDir(), "d0.raw")
	vmtest.QEMU(t, "qemu-img", "convert", "-U", "-O", "raw", fo.Disks[0].File, raw)
	if !bytes.Equal(readFile(t, raw), want) {
		t.Fatal("the committed disk differs from the source")
	}
	if r := s.run("replicate", "disable", "--machine", "qsd"); r.code == 0 {
		t.Fatalf("disable removed the replica of a failed-over machine: %s", r)
	}
}

// With --app-interval and the guest agent, cuts are taken with the guest's
// filesystems frozen: such a point's ext4 needs no journal recovery and
// checks clean, and --point latest-app fails over to it.
func TestReplicateVMAppConsistent(t *testing.T) {
	vmtest.RequireBinary(t, "e2fsck")
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	s, _ := counterVM(t, ctx, true, "--app-interval", "2s")
	var st replStatus
	waitFor(t, 2*time.Minute, "an app-consistent cut", func() bool {
		r := s.run("replicate", "status", "--machine", "vm1", "--json")
		var full struct {
			LastAppCut *time.Time `json:"last_app_cut"`
		}
		json.Unmarshal([]byte(r.stdout), &full)
		json.Unmarshal([]byte(r.stdout), &st)
		return full.LastAppCut != nil
	})
	out := t.TempDir()
	r := s.run("--json", "failover", "--machine", "vm1", "--point", "latest-app", "--disks-only", "--to", out)
	var fo struct {
		Point struct {
			Consistency string `json:"consistency"`
		} `json:"point"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fo) != nil || fo.Point.Consistency != "app" {
		t.Fatalf("failover --point latest-app: %s", r)
	}
	// The point's image is what the frozen guest had on disk: ext4 with
	// its journal flushed.
	raw := filepath.Join(out, "vd0.raw")
	if got := vmtest.QEMU(t, "dumpe2fs", "-h", raw); strings.Contains(got, "needs_recovery") {
		t.Fatalf("the app-consistent point's ext4 needs journal recovery:\n%s", got)
	}
	vmtest.QEMU(t, "e2fsck", "-fn", raw)
}

// Re-protection: after a failover, the copy replicates back to the old
// site, whose replica starts from the machine's old disk (--seed): the
// first sync sends under 5% of the disk, and the old site's replica equals
// the copy.
func TestReplicateReprotect(t *testing.T) {
	dir, sock, fuse := storageDaemon(t)
	dr := newReplSite(t)
	runner := startProcEnv(t, dr.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "200ms")
	writeAt(t, fuse, 0, bytes.Repeat([]byte("origin"), 700000)) // 4 MiB of the 8
	dr.cutAfter("qsd", time.Now(), 30*time.Second)
	want := readFile(t, fuse)
	runner.kill()
	// The source site goes down: its machine stops, its disk stays.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mon, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	mon.Execute(ctx, "quit", nil, nil)
	mon.Close()

	r := dr.run("--json", "failover", "--machine", "qsd")
	var fo struct {
		PID int    `json:"pid"`
		QMP string `json:"qmp"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &fo) != nil {
		t.Fatalf("failover: %s", r)
	}
	t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
	// The copy runs and writes 1% of its disk (80 KiB of the 8 MiB) before
	// it is protected back: re-protection must send those blocks, and
	// little else.
	fmon, err := qmp.Dial(ctx, fo.QMP)
	if err != nil {
		t.Fatal(err)
	}
	var hmp string
	if err := fmon.Execute(ctx, "human-monitor-command", map[string]any{"command-line": `qemu-io -d /machine/peripheral/d0/virtio-backend "write -P 0x5a 0 81920"`}, &hmp); err != nil || strings.TrimSpace(hmp) != "" && !strings.Contains(hmp, "wrote") {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", fo.PID))
		t.Fatalf("writing into the failed-over copy: %v %q\n%s", err, hmp, bytes.ReplaceAll(cmdline, []byte{0}, []byte(" ")))
	}
	fmon.Close()
	copy(want, bytes.Repeat([]byte{0x5a}, 81920))

	// The old site comes back and serves a replica seeded from the old disk.
	old := newReplSite(t, "--seed-dir", dir)
	// This host names the second site too.
	if r := old.run("site", "add", "second", "--url", "http://"+dr.listen, "--token-file", dr.token); r.code != 0 {
		t.Fatalf("site add: %s", r)
	}
	if r := old.run("reprotect", "--machine", "qsd", "--site", "second", "--to", "dr", "--seed", "d0="+filepath.Join(dir, "d0.qcow2")); r.code != 0 {
		t.Fatalf("reprotect: %s", r)
	}
	startProcEnv(t, old.env, "replicate", "run", "--machine", "qsd-dr", "--every", "1h")
	var st struct {
		State   string `json:"state"`
		LastSeq uint64 `json:"last_seq"`
		Bytes   int64  `json:"last_batch_bytes"`
	}
	waitFor(t, 30*time.Second, "the copy to be protected back", func() bool {
		r := old.run("replicate", "status", "--machine", "qsd-dr", "--json")
		return json.Unmarshal([]byte(r.stdout), &st) == nil && st.State == "protected"
	})
	if st.LastSeq != 2 || st.Bytes > int64(len(want))/20 {
		t.Fatalf("re-protection's first cut is %d and sent %d bytes; want cut 2 (after the seed) under 5%% of %d", st.LastSeq, st.Bytes, len(want))
	}
	old.checkReplica("qsd-dr", "latest", want, "the old site's replica of the copy differs from the machine's data")

	// Fail back: the copy is paused, drained and shut down; the old site
	// runs the machine under its original name from a cut after the pause.
	beforeBack := time.Now()
	r = old.run("--json", "failback", "--machine", "qsd")
	var back struct {
		Name  string `json:"name"`
		PID   int    `json:"pid"`
		Point struct {
			ID   uint64    `json:"id"`
			Time time.Time `json:"time"`
		} `json:"point"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &back) != nil {
		t.Fatalf("failback: %s", r)
	}
	t.Cleanup(func() { syscall.Kill(back.PID, syscall.SIGKILL) })
	if back.Name != "qsd" || back.PID == 0 || !back.Point.Time.After(beforeBack) {
		t.Fatalf("failback started %q (pid %d) from a cut at %s; want qsd from a cut after %s", back.Name, back.PID, back.Point.Time, beforeBack)
	}
	waitFor(t, 30*time.Second, "the copy at the second site to shut down", func() bool {
		return syscall.Kill(fo.PID, 0) != nil || isZombie(fo.PID)
	})
	if r := old.run("failback", "--machine", "nosuch"); r.code != 8 {
		t.Fatalf("failback of a machine never re-protected: %s, want exit 8", r)
	}
}

// The link to the site — a replica server in its own network namespace,
// over HTTPS — is cut while the guest writes: the runner reports the site
// unreachable, and once the link is back it catches up from its bitmaps
// without a resync; the replica equals the source.
func TestReplicateLinkCut(t *testing.T) {
	s := newNetnsSite(t)
	_, sock, fuse := storageDaemon(t)
	startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr",
		"--every", "200ms", "--stall-timeout", "2s")
	writeAt(t, fuse, 0, bytes.Repeat([]byte("linked"), 200000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)

	s.setLink(false)
	writeAt(t, fuse, 3<<20, bytes.Repeat([]byte("cutoff"), 200000))
	waitFor(t, 30*time.Second, "the runner to report the site unreachable", func() bool {
		st := s.status("qsd")
		return st.State == "error" && st.Error != ""
	})
	s.setLink(true)
	s.cutAfter("qsd", time.Now(), time.Minute)
	r := s.run("replicate", "status", "--machine", "qsd", "--json")
	var st struct {
		Resyncs int `json:"resyncs"`
	}
	if json.Unmarshal([]byte(r.stdout), &st) != nil || st.Resyncs != 0 {
		t.Fatalf("the cut link caused a resync: %s", r)
	}
	s.checkReplica("qsd", "latest", readFile(t, fuse), "after the link came back the replica differs from the source")
}

// netnsSeq tells apart the namespaces of the tests of one process.
var netnsSeq atomic.Int32

// newNetnsSite is a replSite whose replica server runs in a network
// namespace of its own, over HTTPS, reached through a veth pair whose
// far end setLink takes down (the link cut: packets go nowhere, nothing
// is reset; the host's route stays, so they do not leave by its default
// route instead) and up again. It needs root.
func newNetnsSite(t *testing.T) *replSite {
	t.Helper()
	if os.Geteuid() != 0 {
		if vmtest.Required() {
			t.Fatal("cutting a link needs root (network namespaces)")
		}
		t.Skip("cutting a link needs root (network namespaces)")
	}
	ns, peer, _, nsIP := newNetns(t)
	dir := t.TempDir()
	cert, key, _ := testenv.SelfSignedCert(t, dir, net.ParseIP(nsIP))
	s := &replSite{t: t, dir: filepath.Join(dir, "replica"), token: filepath.Join(dir, "token"), listen: nsIP + ":8443",
		serveArgs: []string{"--cert", cert, "--key", key}, netns: ns, link: peer,
		// TMPDIR apart, as newReplSite's.
		env: map[string]string{"LIFEBOAT_STATE_DIR": filepath.Join(dir, "state"), "TMPDIR": t.TempDir()}}
	os.WriteFile(s.token, []byte("site-secret\n"), 0o600)
	s.start()
	if r := s.run("site", "add", "dr", "--url", "https://"+s.listen, "--token-file", s.token, "--ca", cert); r.code != 0 {
		t.Fatalf("site add: %s", r)
	}
	return s
}

// newNetns makes a network namespace (removed when the test ends) joined
// to this host by a veth pair on a /30 of its own: it returns the
// namespace, its end of the link, and the host's and the namespace's
// addresses. It needs root and ip(8).
func newNetns(t *testing.T) (ns, link, hostIP, nsIP string) {
	t.Helper()
	vmtest.RequireBinary(t, "ip")
	// The namespace's number names its links and subnet too: claimed by
	// creating the namespace, which fails when another test process (of
	// this tree or another) holds it.
	var n int
	for try := 0; ; try++ {
		n = (os.Getpid() + int(netnsSeq.Add(1))) % 250
		ns = fmt.Sprintf("lbrepl%d", n)
		out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput()
		if err == nil {
			break
		}
		if try == 20 {
			t.Fatalf("ip netns add %s: %v\n%s", ns, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	host, peer := fmt.Sprintf("lbrh%d", n), fmt.Sprintf("lbrp%d", n)
	hostIP, nsIP = fmt.Sprintf("10.251.%d.1", n), fmt.Sprintf("10.251.%d.2", n)
	ipCmd(t, "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	ipCmd(t, "link", "set", peer, "netns", ns)
	ipCmd(t, "addr", "add", hostIP+"/30", "dev", host)
	ipCmd(t, "link", "set", host, "up")
	ipCmd(t, "netns", "exec", ns, "ip", "addr", "add", nsIP+"/30", "dev", peer)
	ipCmd(t, "netns", "exec", ns, "ip", "link", "set", peer, "up")
	return ns, peer, hostIP, nsIP
}

// setLink takes the link to a newNetnsSite's namespace down or up.
func (s *replSite) setLink(up bool) {
	s.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	ipCmd(s.t, "netns", "exec", s.netns, "ip", "link", "set", s.link, state)
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
