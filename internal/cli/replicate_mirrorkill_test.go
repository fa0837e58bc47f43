package cli_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// siteBytes is the size of every file the replica server keeps.
func siteBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// randomImage is a raw image of size bytes of incompressible data: a full
// resync of it cannot pass for a small one.
func randomImage(t *testing.T, size int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src.raw")
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return src
}

// The runner of a mirror-captured machine killed -9 while the guest
// writes: its mirror dies with its receiver, and the restarted runner
// sends what the target lacks from the dirty bitmap it kept under the
// mirror (the writes since the last acknowledged journal batch, and
// those made while no mirror ran), then starts the mirror again. No full
// resync: what reaches the site is a small part of the disk, which is
// full of incompressible data; the replica ends equal to the source.
func TestReplicateMirrorRunnerKilled(t *testing.T) {
	const size = 32 << 20
	d := newMirrorDaemonFrom(t, randomImage(t, size))
	s := newReplSite(t)
	args := []string{"replicate", "run", "--machine", "qsd", "--qmp", d.qmp, "--target", "dr", "--every", "300ms",
		"--capture", "mirror", "--nbd-server", "unix:" + d.nbdSock}
	runner := startProcEnv(t, s.env, args...)
	defer func() {
		if t.Failed() {
			t.Logf("runner:\n%s", runner.stderr.String())
		}
	}()
	s.mirroring("qsd", time.Now())
	before := siteBytes(t, s.dir)

	w := startMirrorWriter(d)
	// Killed mid-stream: once writes went through the restarted mirror.
	waitFor(t, 30*time.Second, "journal batches under the writer", func() bool {
		st, ok := s.mirrorStatus("qsd")
		return ok && st.Shipped > 64<<10
	})
	if !runner.kill() {
		t.Fatal("the runner did not die of SIGKILL")
	}
	time.Sleep(300 * time.Millisecond) // writes with no mirror running
	runner = startProcEnv(t, s.env, args...)
	waitFor(t, 60*time.Second, "the mirror to start again", func() bool {
		st, ok := s.mirrorStatus("qsd")
		return ok && st.Fallbacks >= 1 && st.Capture == "mirror" && st.State == "protected"
	})
	writes := w.halt()
	st := s.mirroring("qsd", time.Now())
	sent := siteBytes(t, s.dir) - before
	var written int
	for _, gw := range writes {
		written += gw.n
	}
	t.Logf("%d writes (%d bytes) across the kill; the site grew by %d bytes; %+v", len(writes), written, sent, st)
	if st.Resyncs != 0 || sent > size/4 {
		t.Fatalf("after the runner was killed: %d resyncs, %d bytes reached the site (the disk is %d)", st.Resyncs, sent, size)
	}
	runner.kill()
	s.checkReplica("qsd", "latest", d.image(), fmt.Sprintf("after the runner was killed the replica differs from the source (%d writes)", len(writes)))
}
