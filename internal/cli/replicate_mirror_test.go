package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/nbd"
	"lifeboat/internal/vmtest"
)

// mirrorDaemon is a qemu-storage-daemon whose disk d0 (8 MiB, qcow2) the
// "guest" writes through an NBD export with qemu-io: QEMU's mirror cannot
// run under a FUSE export (it needs the resize permission the mirror
// unshares). Its NBD server is the one lifeboat is given (--nbd-server).
type mirrorDaemon struct {
	t              *testing.T
	qmp, nbdSock   string
	uri            string // the guest's view of d0
	stderr         *bytes.Buffer
	writeTimeout   time.Duration
	lastWriteTaken time.Duration
}

func newMirrorDaemon(t *testing.T) *mirrorDaemon { return newMirrorDaemonFrom(t, "") }

// newMirrorDaemonFrom is newMirrorDaemon with d0 converted from the raw
// image src ("" for an empty 8 MiB disk).
func newMirrorDaemonFrom(t *testing.T, src string) *mirrorDaemon {
	t.Helper()
	for _, tool := range []string{"qemu-storage-daemon", "qemu-img", "qemu-io"} {
		vmtest.RequireBinary(t, tool)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "d0.qcow2")
	args := []string{"create", "-q", "-f", "qcow2", img, "8M"}
	if src != "" {
		args = []string{"convert", "-q", "-f", "raw", "-O", "qcow2", src, img}
	}
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	d := &mirrorDaemon{t: t, qmp: filepath.Join(dir, "qmp.sock"), nbdSock: filepath.Join(dir, "nbd.sock"), stderr: &bytes.Buffer{}}
	d.uri = "nbd+unix:///d0?socket=" + d.nbdSock
	cmd := exec.Command("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=d0-file,filename="+img,
		// discard=unmap: the guest's discards reach the disk (and the mirror).
		"--blockdev", "driver=qcow2,node-name=d0,file=d0-file,discard=unmap",
		"--nbd-server", "addr.type=unix,addr.path="+d.nbdSock,
		"--export", "type=nbd,id=guest,node-name=d0,name=d0,writable=on",
		"--chardev", "socket,id=m,path="+d.qmp+",server=on,wait=off", "--monitor", "chardev=m")
	cmd.Stderr = d.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, 10*time.Second, "qemu-storage-daemon to listen", func() bool {
		for _, s := range []string{d.qmp, d.nbdSock} {
			c, err := net.Dial("unix", s)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
	return d
}

// write runs qemu-io commands against the guest's view (e.g. "write -P 65
// 0 4k"); they must finish within 20 s: the guest is never held up by a
// dead receiver or a slow site.
func (d *mirrorDaemon) write(cmds ...string) {
	d.t.Helper()
	d.lastWriteTaken, _ = d.writeTimed(cmds...)
}

// qemuIOTime is the time qemu-io reports for one command ("4 KiB, 1 ops;
// 00.00 sec (…)"): the write's own latency, without qemu-io's start.
var qemuIOTime = regexp.MustCompile(`ops; (?:(\d+):)?(\d+(?:\.\d+)?) sec`)

// writeTimed is write, returning how long qemu-io ran (wall) and the time
// it reports its commands took (op): how long the guest waited.
func (d *mirrorDaemon) writeTimed(cmds ...string) (wall, op time.Duration) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	start := time.Now()
	out, err := exec.CommandContext(ctx, "qemu-io", append(args, d.uri)...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("error")) || bytes.Contains(out, []byte("failed")) {
		d.t.Fatalf("qemu-io %q: %v\n%s", cmds, err, out)
	}
	for _, m := range qemuIOTime.FindAllSubmatch(out, -1) {
		mins, _ := strconv.Atoi(string(m[1]))
		secs, _ := strconv.ParseFloat(string(m[2]), 64)
		op += time.Duration(mins)*time.Minute + time.Duration(secs*float64(time.Second))
	}
	return time.Since(start), op
}

// image reads the whole disk as the guest sees it.
func (d *mirrorDaemon) image() []byte {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	disk, err := nbd.OpenDisk(ctx, d.uri)
	if err != nil {
		d.t.Fatal(err)
	}
	defer disk.Close()
	b := make([]byte, disk.Size())
	if _, err := disk.ReadAtContext(ctx, b, 0); err != nil {
		d.t.Fatal(err)
	}
	return b
}

type mirrorStatus struct {
	State        string     `json:"state"`
	Capture      string     `json:"capture"`
	LastSeq      uint64     `json:"last_seq"`
	LastCut      *time.Time `json:"last_cut"`
	Resyncs      int        `json:"resyncs"`
	Fallbacks    int        `json:"fallbacks"`
	LastFallback string     `json:"last_fallback"`
	Shipped      int64      `json:"journal_shipped_bytes"`
	Journal      int64      `json:"source_journal_bytes"`
	JournalLimit int64      `json:"source_journal_limit"`
	LagSeconds   float64    `json:"lag_seconds"`
	Error        string     `json:"error"`
}

func (s *replSite) mirrorStatus(machine string) (mirrorStatus, bool) {
	return statusOf[mirrorStatus](s, machine)
}

// mirroring waits until the machine's mirror capture runs and the target
// acknowledged a cut taken after t.
func (s *replSite) mirroring(machine string, t time.Time) mirrorStatus {
	s.t.Helper()
	var st mirrorStatus
	waitFor(s.t, 60*time.Second, "mirror capture and a cut after "+t.Format(time.RFC3339Nano), func() bool {
		var ok bool
		st, ok = s.mirrorStatus(machine)
		return ok && st.Capture == "mirror" && st.State == "protected" && st.LastCut != nil && st.LastCut.After(t)
	})
	return st
}

// Mirror capture end to end: qemu-io writes through a storage daemon,
// QEMU's write-blocking mirror copies each write into the receiver, the
// journal ships to the site, and the replica equals the source at the
// latest point and at an older one. Killing the receiver (the runner
// holding it, -9) fails the mirror without holding up the guest; the
// restarted runner reports the fallback to bitmap cuts, sends only the
// blocks written since the last acknowledged batch (no full resync),
// starts the mirror again, and the replica ends identical.
func TestReplicateMirror(t *testing.T) {
	d := newMirrorDaemon(t)
	s := newReplSite(t)
	args := []string{"replicate", "run", "--machine", "qsd", "--qmp", d.qmp, "--target", "dr", "--every", "300ms",
		"--crash-interval", "1s", "--capture", "mirror", "--nbd-server", "unix:" + d.nbdSock}
	runner := startProcEnv(t, s.env, args...)
	defer func() {
		if t.Failed() {
			runner.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, if it hangs
			time.Sleep(time.Second)
			t.Logf("runner:\n%s\nqemu-storage-daemon:\n%s", runner.stderr.String(), d.stderr.String())
		}
	}()
	// Written before the mirror starts: in the initial sync or the
	// catch-up.
	d.write("write -P 0x61 0 1M")
	st := s.mirroring("qsd", time.Now())
	t.Logf("mirror capture running at cut %d", st.LastSeq)

	d.write("write -P 0x62 1M 512k", "write -P 0x63 3M 4k", "write -z 1536k 64k")
	afterFirst := time.Now()
	st = s.mirroring("qsd", afterFirst)
	if st.Shipped == 0 {
		t.Fatalf("the journal shipped nothing: %+v", st)
	}
	firstImage := d.image()
	// A point strictly after the first writes: the next crash interval.
	s.mirroring("qsd", afterFirst.Truncate(time.Second).Add(time.Second))
	d.write("write -P 0x64 2M 1M", "write -P 0x65 5M 4k")
	afterSecond := time.Now()
	s.mirroring("qsd", afterSecond)
	points, _ := s.points("qsd")
	var older *replPoint
	for i := range points {
		if points[i].Time.After(afterFirst) && points[i].Time.Before(afterSecond) {
			older = &points[i]
		}
	}
	if older == nil {
		t.Fatalf("no point between the writes: %+v", points)
	}
	s.checkReplica("qsd", fmt.Sprint(older.ID), firstImage, "the older point's disk is not the disk between the writes")
	s.checkReplica("qsd", "latest", d.image(), "the latest point's disk differs from the source")

	// The receiver dies with its runner: the guest must not wait for it.
	if !runner.kill() {
		t.Fatal("the runner did not die of SIGKILL")
	}
	d.write("write -P 0x66 6M 256k", "write -P 0x67 100k 8k")
	t.Logf("writes with the receiver dead took %s", d.lastWriteTaken)
	// The guest keeps writing while the runner restarts, falls back, cuts
	// and catches up: writes land before, during and after the mirror's
	// start.
	stop := make(chan struct{})
	writer := make(chan int)
	go func() {
		n := 0
		defer func() { writer <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			off := (n * 37 % 2000) * 4096
			d.write(fmt.Sprintf("write -P %d %d 4k", 0x30+n%64, off), fmt.Sprintf("write -P %d %d 64k", 0x70+n%64, 4<<20+off%(1<<20)))
			n++
		}
	}()
	runner = startProcEnv(t, s.env, args...)
	var back mirrorStatus
	waitFor(t, 60*time.Second, "the fallback reported and the mirror started again", func() bool {
		var ok bool
		back, ok = s.mirrorStatus("qsd")
		return ok && back.Fallbacks >= 1 && back.Capture == "mirror" && back.State == "protected"
	})
	time.Sleep(500 * time.Millisecond) // writes under the restarted mirror too
	close(stop)
	t.Logf("%d writes while the runner restarted", <-writer)
	if back.Resyncs != 0 || !strings.Contains(back.LastFallback, "mirror") {
		t.Fatalf("after the receiver died: %+v, want a fallback naming the mirror and no full resync", back)
	}
	d.write("write -P 0x68 7M 4k")
	s.mirroring("qsd", time.Now())
	runner.kill()
	want := d.image()
	out := t.TempDir()
	if r := s.run("failover", "--machine", "qsd", "--point", "latest", "--disks-only", "--to", out); r.code != 0 {
		t.Fatalf("failover --disks-only: %s", r)
	}
	got := readFile(t, filepath.Join(out, "d0.raw"))
	for off := 0; off < len(want); off += 4096 {
		if !bytes.Equal(got[off:off+4096], want[off:off+4096]) {
			t.Errorf("block at %d: replica %x, source %x", off, got[off:off+4], want[off:off+4])
		}
	}
}

// A journal size limit hit (one write larger than the whole journal)
// fails the mirror, not the guest: replication falls back to a bitmap cut
// that sends the blocks, starts the mirror again, and loses nothing.
func TestReplicateMirrorJournalFull(t *testing.T) {
	d := newMirrorDaemon(t)
	s := newReplSite(t)
	runner := startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", d.qmp, "--target", "dr", "--every", "300ms",
		"--capture", "mirror", "--nbd-server", "unix:"+d.nbdSock, "--journal-limit", fmt.Sprint(1<<20))
	defer func() {
		if t.Failed() {
			t.Logf("runner:\n%s", runner.stderr.String())
		}
	}()
	s.mirroring("qsd", time.Now())
	d.write("write -P 0x71 1M 3M")
	var st mirrorStatus
	waitFor(t, 60*time.Second, "the fallback and the mirror started again", func() bool {
		var ok bool
		st, ok = s.mirrorStatus("qsd")
		return ok && st.Fallbacks >= 1 && st.Capture == "mirror"
	})
	if !strings.Contains(st.LastFallback, "full") && !strings.Contains(st.LastFallback, "mirror job") {
		t.Fatalf("the fallback does not say why: %+v", st)
	}
	d.write("write -P 0x72 6M 4k")
	s.mirroring("qsd", time.Now())
	s.checkReplica("qsd", "latest", d.image(), "after the journal filled the replica differs from the source")

	// A discard cannot be journaled: when it reaches the mirror it fails
	// it the same way; either way the replica follows the source.
	d.write("discard 1M 64k", "write -P 0x73 7M 4k")
	s.mirroring("qsd", time.Now())
	runner.kill()
	s.checkReplica("qsd", "latest", d.image(), "after a discard the replica differs from the source")
	if _, err := os.Stat(d.nbdSock); err != nil {
		t.Fatal(err)
	}
}
