package testenv

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/nbd"
)

// ServeImage serves the image file img read-only over lifeboat's own NBD
// server, in this process, on a unix socket, until the test ends, and
// returns its nbd+unix URL: a disk whose reads the test controls through
// wrap (nil: plain reads), which outlives any process the test kills.
func ServeImage(t testing.TB, img string, wrap func(*nbd.FileBackend) nbd.Backend) string {
	t.Helper()
	fb, err := nbd.OpenFileBackend(img, true)
	if err != nil {
		t.Fatal(err)
	}
	var backend nbd.Backend = fb
	if wrap != nil {
		backend = wrap(fb)
	}
	srv, err := nbd.NewServer(nbd.Export{Backend: backend, ReadOnly: true})
	if err != nil {
		fb.Close()
		t.Fatal(err)
	}
	// Not t.TempDir: a unix socket's path must stay short.
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		fb.Close()
		os.RemoveAll(dir)
	})
	return "nbd+unix:///?socket=" + sock
}
