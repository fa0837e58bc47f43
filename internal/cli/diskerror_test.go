package cli_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/cli"
	"lifeboat/internal/nbd/nbdkittest"
)

// TestLocalDiskErrorsExitCode: an unreadable source disk (real EIO from
// nbdkit's error filter) and a restore target without room (a 4 MiB tmpfs)
// exit 9, not 7: a script that retries on "storage unreachable" must not
// retry a dead disk. A missing --disk file is a plain error (1).
func TestLocalDiskErrorsExitCode(t *testing.T) {
	work := t.TempDir()
	dir := filepath.Join(work, "vault")
	initVault(t, dir, 1<<20)

	uri := nbdkittest.Start(t, "--filter=error", "pattern", "16M", "error-pread=EIO", "error-pread-rate=100%")
	r := inProc(t, "--vault", dir, "-q", "backup", "--machine", "web1", "--disk", "vda="+uri)
	expect(t, "backup of a disk that fails with EIO", r, cli.ExitDisk, "input/output error", "unreadable")

	r = inProc(t, "--vault", dir, "-q", "backup", "--machine", "web1", "--disk", "vda="+filepath.Join(work, "missing.img"))
	expect(t, "backup of a missing disk file", r, cli.ExitError, "missing.img")

	// A point with 16 MiB of data, restored into 4 MiB.
	good := nbdkittest.Start(t, "pattern", "16M")
	mustIn(t, "--vault", dir, "-q", "backup", "--machine", "web1", "--disk", "vda="+good)
	small := filepath.Join(work, "small")
	os.Mkdir(small, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("skipping the restore half: cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", small).Run() })
	out := filepath.Join(small, "vda.raw")
	r = inProc(t, "--vault", dir, "-q", "restore", "--machine", "web1", "latest", "--disk", "vda", "--to-file", out)
	expect(t, "restore into a file system too small", r, cli.ExitDisk, "not enough space", small)
	if _, err := os.Stat(out); err == nil {
		t.Errorf("the failed restore left %s", out)
	}
}

// mustIn runs lifeboat in-process and fails the test unless it exits 0.
func mustIn(t *testing.T, args ...string) result {
	t.Helper()
	r := inProc(t, args...)
	if r.code != 0 {
		t.Fatalf("lifeboat %v: %s", args, r)
	}
	return r
}

// TestCancelBackupOfStalledDisk: cancelling (SIGINT, a cancelled job) a
// backup whose NBD export stalls (nbdkit's delay filter holding every read
// for 1000 s) returns at once with exit 130, and leaves no session marker
// to defer prunes; it used to wait on the read forever.
func TestCancelBackupOfStalledDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vault")
	initVault(t, dir, 1<<20)
	// The log filter, outside the delay, records each read as it starts.
	log := filepath.Join(t.TempDir(), "nbdkit.log")
	uri := nbdkittest.Start(t, "--filter=log", "--filter=delay", "pattern", "16M", "delay-read=1000", "logfile="+log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- inProcEnv(ctx, map[string]string{"LIFEBOAT_PASSWORD": testPassphrase},
			"--vault", dir, "-q", "backup", "--machine", "web1", "--disk", "vda="+uri)
	}()
	for {
		if data, _ := os.ReadFile(log); strings.Contains(string(data), "Read ") {
			break // a read is stalled in the delay filter
		}
		select {
		case r := <-done:
			t.Fatalf("the backup ended before reading: %s", r)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	select {
	case r := <-done:
		expect(t, "cancelled backup of a stalled disk", r, cli.ExitInterrupted)
	case <-time.After(20 * time.Second):
		t.Fatal("the cancelled backup is still waiting on the stalled disk after 20s")
	}
	if m := objectFiles(t, dir, "sessions"); len(m) > 0 {
		t.Errorf("session markers left by the cancelled backup: %v", m)
	}
}
