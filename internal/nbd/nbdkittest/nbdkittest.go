// Package nbdkittest runs nbdkit as a throwaway NBD server for tests of
// code above the NBD client (backup, the CLI), with plugins and filters to
// make a disk that fails (--filter=error) or stalls (--filter=delay).
package nbdkittest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Start runs `nbdkit ARGS...` (plugin, size and filters) on a unix socket
// until the test ends and returns the export's URI. Without nbdkit the
// test is skipped, unless CI=true, when it fails.
func Start(t testing.TB, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("nbdkit")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nbdkit is required in CI (scripts/deps.sh installs it): %v", err)
		}
		t.Skipf("skipping: nbdkit is not installed: %v", err)
	}
	// Unix socket paths are short: t.TempDir's can be too long.
	dir, err := os.MkdirTemp("", "nbdkit")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	var out lockedBuffer
	cmd := exec.Command(bin, append([]string{"--foreground", "--exit-with-parent", "--unix", sock}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nbdkit: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return "nbd+unix:///?socket=" + sock
		}
		select {
		case <-done:
			t.Fatalf("nbdkit %q exited before listening: %s", args, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdkit %q does not listen after 15s: %v\n%s", args, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
