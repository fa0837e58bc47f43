package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/qmp"
)

// guestWrite is one write of mirrorWriter, and when it ran.
type guestWrite struct {
	off, n     int
	pattern    byte
	start, end time.Time
	op         time.Duration // the write's latency, as qemu-io measured it
}

// mirrorWriter writes d's disk with qemu-io until stopped, one write per
// qemu-io run (so the writes are ordered), and records them.
type mirrorWriter struct {
	d      *mirrorDaemon
	mu     sync.Mutex
	writes []guestWrite
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func startMirrorWriter(d *mirrorDaemon) *mirrorWriter {
	w := &mirrorWriter{d: d, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			gw := guestWrite{off: (i * 37 % 1900) * 4096, n: 4096 << (i % 3), pattern: byte(0x20 + i%200), start: time.Now()}
			_, gw.op = d.writeTimed(fmt.Sprintf("write -P %d %d %d", gw.pattern, gw.off, gw.n))
			gw.end = time.Now()
			w.mu.Lock()
			w.writes = append(w.writes, gw)
			w.mu.Unlock()
		}
	}()
	return w
}

// during is a copy of the writes that started at or after from and
// ended by to.
func (w *mirrorWriter) during(from, to time.Time) []guestWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []guestWrite
	for _, gw := range w.writes {
		if !gw.start.Before(from) && !gw.end.After(to) {
			out = append(out, gw)
		}
	}
	return out
}

// halt stops the writer (again: a no-op) and returns its writes.
func (w *mirrorWriter) halt() []guestWrite {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	return w.writes
}

// instantOf finds how many of writes (in order, applied to base) make
// got, among those that may have been before an instant taken between
// from and to; -1 if none does.
func instantOf(base, got []byte, writes []guestWrite, from, to time.Time) int {
	img := bytes.Clone(base)
	for k := 0; k <= len(writes); k++ {
		if k > 0 {
			w := writes[k-1]
			copy(img[w.off:w.off+w.n], bytes.Repeat([]byte{w.pattern}, w.n))
		}
		// Writes that ended before the backup started are in; those that
		// started after it ended are not.
		if k < len(writes) && writes[k].end.Before(from) {
			continue
		}
		if k > 0 && writes[k-1].start.After(to) {
			return -1
		}
		if bytes.Equal(img, got) {
			return k
		}
	}
	return -1
}

// Live backups of a machine whose writes a mirror replicates: QEMU allows
// no fleecing beside the mirror, so the backup takes the disk over (it
// ends the mirror); replication sends the blocks written meanwhile from
// its dirty bitmap, with no full resync, and starts the mirror again. A
// full then an incremental backup taken while the guest writes restore to
// the disk exactly as it was at their instants, and the replica still
// equals the source afterwards.
func TestReplicateMirrorLiveBackup(t *testing.T) {
	d := newMirrorDaemon(t)
	s := newReplSite(t)
	runner := startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", d.qmp, "--target", "dr", "--every", "300ms",
		"--crash-interval", "100ms", "--capture", "mirror", "--nbd-server", "unix:"+d.nbdSock)
	defer func() {
		if t.Failed() {
			t.Logf("runner:\n%s\nqemu-storage-daemon:\n%s", runner.stderr.String(), d.stderr.String())
		}
	}()
	d.write("write -P 0x61 0 2M")
	s.mirroring("qsd", time.Now())
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)

	base := d.image()
	w := startMirrorWriter(d)
	type taken struct {
		id       string
		from, to time.Time
		change   string
	}
	var points []taken
	for i := range 2 {
		if i > 0 {
			// The mirror is back before the next backup takes it over.
			waitFor(t, 60*time.Second, "the mirror to start again", func() bool {
				st, ok := s.mirrorStatus("qsd")
				return ok && st.Capture == "mirror" && st.Fallbacks >= 1
			})
		}
		from := time.Now()
		r := mustRun(t, "--vault", vaultDir, "--json", "backup", "--machine", "qsd", "--qmp", d.qmp, "--nbd-server", "unix:"+d.nbdSock)
		to := time.Now()
		if !strings.Contains(r.stderr, "replication's mirror capture") {
			t.Fatalf("backup %d did not say it took the disk from the mirror:\n%s", i, r)
		}
		var pt struct {
			ID    string     `json:"id"`
			Disks []liveDisk `json:"disks"`
		}
		decode(t, r.stdout, &pt)
		points = append(points, taken{pt.ID, from, to, pt.Disks[0].ChangeSource})
	}
	writes := w.halt()
	if points[1].change != "tracking" {
		t.Fatalf("the second backup read %q, want an incremental from its dirty bitmap", points[1].change)
	}
	for i, p := range points {
		out := filepath.Join(t.TempDir(), "d0.raw")
		mustRun(t, "--vault", vaultDir, "restore", "--machine", "qsd", p.id, "--disk", "d0", "--to-file", out)
		k := instantOf(base, readFile(t, out), writes, p.from, p.to)
		if k < 0 {
			t.Fatalf("point %d (%s) is not the disk at any instant of its backup (%d writes)", i, p.id, len(writes))
		}
		t.Logf("point %d holds the first %d of %d writes", i, k, len(writes))
	}
	if len(writes) < 4 {
		t.Fatalf("only %d writes during the backups", len(writes))
	}
	st := s.mirroring("qsd", time.Now())
	if st.Resyncs != 0 || st.Fallbacks < 2 {
		t.Fatalf("after the backups: %+v, want two fallbacks and no resync", st)
	}
	// QEMU's monitor held by another client (as a long backup does) is
	// a wait, not an error: the runner's checks cannot reach QEMU, the
	// mirror keeps journaling and the lag stays low.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mon, err := qmp.Dial(ctx, d.qmp)
	if err != nil {
		t.Fatal(err)
	}
	var held mirrorStatus
	waitFor(t, 25*time.Second, "the runner to find QEMU's monitor busy", func() bool {
		var ok bool
		held, ok = s.mirrorStatus("qsd")
		return ok && strings.Contains(held.Error, "busy")
	})
	d.write("write -P 0x7e 5M 4k")
	held = s.mirroring("qsd", time.Now())
	mon.Close()
	if held.State != "protected" || held.Fallbacks != st.Fallbacks {
		t.Fatalf("with QEMU's monitor held: %+v, want the mirror protecting on", held)
	}
	runner.kill()
	s.checkReplica("qsd", "latest", d.image(), "after the live backups the replica differs from the source")

	// Every replica point cut while the writer ran holds exactly the
	// writes made before its time: none claims a time the mirror (handed
	// over to a backup) did not capture.
	t.Logf("%d replica points checked against the writes", s.checkPointsHoldWrites("qsd", base, writes))
}

// checkPointsHoldWrites fails the test unless every replica point of
// machine cut while the writer ran holds exactly the writes (applied to
// base) made before its time; it returns how many points it checked.
func (s *replSite) checkPointsHoldWrites(machine string, base []byte, writes []guestWrite) int {
	t := s.t
	t.Helper()
	all, _ := s.points(machine)
	checked := 0
	for _, p := range all {
		if p.Time.Before(writes[0].start) || p.Time.After(writes[len(writes)-1].end) {
			continue
		}
		out := t.TempDir()
		if r := s.run("failover", "--machine", machine, "--point", fmt.Sprint(p.ID), "--disks-only", "--to", out); r.code != 0 {
			t.Fatalf("failover --disks-only --point %d: %s", p.ID, r)
		}
		if instantOf(base, readFile(t, filepath.Join(out, "d0.raw")), writes, p.Time, p.Time) < 0 {
			t.Fatalf("replica point %d (%s) does not hold exactly the writes made before its time", p.ID, p.Time.Format(time.RFC3339Nano))
		}
		checked++
	}
	return checked
}
