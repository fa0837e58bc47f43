package replica

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"syscall"
	"testing"

	"lifeboat/internal/vmtest"
)

// A batch streaming in when a real failover chooses its point is not
// kept: the failover started at the cut before it, and the replica must
// not hold a cut past that (it would no longer list the failed-over
// point, and a reprotect would start from the wrong place). Batches sent
// after are refused too.
func TestFailoverDropsBatchInFlight(t *testing.T) {
	vmtest.RequireBinary(t, "qemu-storage-daemon")
	ctx := context.Background()
	h := newHistory(t, 5)
	s := h.open(t, 256)
	b := batch(t, Header{Seq: 6, Cut: t0.Add(6 * 20 * 1e9), Consistency: "crash"}, func(bw *BatchWriter) {
		bw.Data(0, 0, bytes.Repeat([]byte{0x66}, 64<<10))
	})
	pr, pw := io.Pipe()
	received := make(chan error, 1)
	go func() { received <- s.Receive(ctx, "m", 6, pr) }()
	if _, err := pw.Write(b[:len(b)/2]); err != nil { // the site is reading it
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	fo, err := s.Failover(ctx, "m", FailoverOptions{Point: "latest", ExportNBD: "unix:" + sock})
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(fo.PID, syscall.SIGKILL)
	if fo.Point.ID != 5 {
		t.Fatalf("failed over to cut %d, want 5 (6 was still arriving)", fo.Point.ID)
	}
	pw.Write(b[len(b)/2:])
	pw.Close()
	if err := <-received; !errors.Is(err, ErrFailedOver) {
		t.Fatalf("the batch in flight during the failover: %v, want ErrFailedOver", err)
	}
	st, err := s.Status(ctx, "m")
	if err != nil || st.LastSeq != 5 {
		t.Fatalf("after the failover the replica holds up to %d (%v), want 5", st.LastSeq, err)
	}
	if err := s.Receive(ctx, "m", 6, bytes.NewReader(b)); !errors.Is(err, ErrFailedOver) {
		t.Fatalf("a batch after the failover: %v, want ErrFailedOver", err)
	}
}
