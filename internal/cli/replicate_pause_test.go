package cli_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// replicate pause stops shipping while the guest goes on writing: status
// says paused, the mirror is stopped, nothing reaches the site; replicate
// resume sends what was written meanwhile from the dirty bitmap (no full
// resync), the mirror starts again, and the replica equals the source. A
// group member alone cannot be paused, and an unknown machine is named.
func TestReplicatePauseResume(t *testing.T) {
	const size = 16 << 20
	d := newMirrorDaemonFrom(t, randomImage(t, size))
	s := newReplSite(t)
	runner := startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", d.qmp, "--target", "dr", "--every", "300ms",
		"--capture", "mirror", "--nbd-server", "unix:"+d.nbdSock)
	defer func() {
		if t.Failed() {
			t.Logf("runner:\n%s", runner.stderr.String())
		}
	}()
	s.mirroring("qsd", time.Now())

	if r := s.run("replicate", "pause", "--machine", "qsd"); r.code != 0 || !strings.Contains(r.stdout, "qsd paused") {
		t.Fatalf("replicate pause: %s", r)
	}
	var st mirrorStatus
	waitFor(t, 30*time.Second, "the replication to be paused", func() bool {
		var ok bool
		st, ok = s.mirrorStatus("qsd")
		return ok && st.State == "paused"
	})
	time.Sleep(time.Second) // a cycle or three: anything still under way has landed
	before := siteBytes(t, s.dir)
	w := startMirrorWriter(d)
	time.Sleep(2 * time.Second)
	writes := w.halt()
	if len(writes) == 0 {
		t.Fatal("the guest wrote nothing while replication was paused")
	}
	time.Sleep(time.Second)
	if got := siteBytes(t, s.dir); got != before {
		t.Fatalf("the site grew by %d bytes while replication was paused", got-before)
	}
	if st, _ = s.mirrorStatus("qsd"); st.State != "paused" {
		t.Fatalf("status while paused: %+v", st)
	}

	if r := s.run("replicate", "resume", "--machine", "qsd"); r.code != 0 {
		t.Fatalf("replicate resume: %s", r)
	}
	st = s.mirroring("qsd", time.Now())
	sent := siteBytes(t, s.dir) - before
	if st.Resyncs != 0 || sent > size/4 {
		t.Fatalf("after resume: %d resyncs, %d bytes reached the site (the disk is %d)", st.Resyncs, sent, size)
	}
	s.checkReplica("qsd", "latest", d.image(), fmt.Sprintf("after resume the replica differs from the source (%d writes while paused)", len(writes)))

	if r := s.run("replicate", "pause", "--machine", "nosuch"); r.code == 0 || !strings.Contains(r.stderr, "nosuch") {
		t.Fatalf("pausing an unknown machine: %s", r)
	}
	if r := s.run("replicate", "pause"); r.code != 2 {
		t.Fatalf("pause with neither --machine nor --group: %s, want exit 2", r)
	}
}
