package cli_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/vmtest"
)

// ext4Counter reads /counter from the ext4 filesystem image img, its
// journal replayed first (as the kernel would when mounting it).
func ext4Counter(t *testing.T, img string) int {
	t.Helper()
	for _, tool := range []string{"e2fsck", "debugfs"} {
		vmtest.RequireBinary(t, tool)
	}
	// 0: clean, 1: errors corrected (the journal replayed).
	if out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck %s: %v\n%s", img, err, out)
		}
	}
	out, err := exec.Command("debugfs", "-R", "cat /counter", img).Output()
	if err != nil {
		t.Fatalf("debugfs cat /counter: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("the replica's /counter holds %q", out)
	}
	return n
}

// A TCG VM counting on ext4 (each value synced) is replicated with mirror
// capture, then killed -9: the runner ships what the journal holds, and
// the replica's latest point holds the last counter the guest synced —
// write-blocking journaled every write before the guest saw it complete.
func TestReplicateVMMirror(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	s, vm := counterVM(t, ctx, false, "--capture", "mirror")
	st := s.mirroring("vm1", time.Now())
	t.Logf("mirror capture running at cut %d", st.LastSeq)
	var first, n int
	for first == 0 || n < first+5 {
		m, err := vm.WaitLine(ctx, vmCounter)
		if err != nil {
			t.Fatal(err)
		}
		n, _ = strconv.Atoi(m[1])
		if first == 0 {
			first = n
		}
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	vm.Wait(ctx)
	killed := time.Now()
	last := lastCounter(vm)
	// QEMU gone, the receiver's connection dropped: the runner ships what
	// the journal holds, cut at its last record, then falls back (and
	// cannot cut any more: QEMU is gone).
	waitFor(t, 30*time.Second, "the journal shipped and the fallback", func() bool {
		var ok bool
		st, ok = s.mirrorStatus("vm1")
		return ok && st.Fallbacks >= 1
	})
	if st.Resyncs != 0 || !strings.Contains(st.LastFallback, "dropped") || st.LastCut == nil || st.LastCut.After(killed) {
		t.Fatalf("after the VM was killed: %+v, want a fallback saying QEMU dropped the receiver, and no cut after the kill", st)
	}
	out := t.TempDir()
	if r := s.run("failover", "--machine", "vm1", "--point", "latest", "--disks-only", "--to", out); r.code != 0 {
		t.Fatalf("failover --disks-only: %s", r)
	}
	got := ext4Counter(t, filepath.Join(out, "vd0.raw"))
	t.Logf("the replica holds counter %d; the guest last reported %d as synced", got, last)
	// The guest may have synced one more value before it printed it.
	if got != last && got != last+1 {
		t.Fatalf("the replica holds counter %d; the guest synced %d before it was killed", got, last)
	}
}
