package cli_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/guestagent"
	"lifeboat/internal/qmp"
	"lifeboat/internal/vmtest"
)

// writingVM boots a TCG VM whose guest writes its disk without a pause:
// a shell loop (started through the guest agent) writing and syncing a
// block of /dev/vda, over and over.
func writingVM(t *testing.T, ctx context.Context) *vmtest.VM {
	t.Helper()
	disk := vmtest.NewRawDisk(t, filepath.Join(t.TempDir(), "d0.raw"), 8)
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "idle", GuestAgent: true})
	if _, err := vm.WaitLine(ctx, vmReady); err != nil {
		t.Fatal(err)
	}
	var ga *guestagent.Client
	waitFor(t, 60*time.Second, "the guest agent to answer", func() bool {
		c, err := guestagent.Dial(ctx, vm.GuestAgentSocket)
		if err == nil && c.Ping(ctx) == nil {
			ga = c
			return true
		}
		if c != nil {
			c.Close()
		}
		return false
	})
	defer ga.Close()
	var started struct {
		PID int `json:"pid"`
	}
	if err := ga.Call(ctx, "guest-exec", map[string]any{"path": "/bin/sh", "arg": []string{"-c",
		"while :; do dd if=/dev/urandom of=/dev/vda bs=4096 count=1 conv=fsync 2>/dev/null; done"}}, &started); err != nil || started.PID == 0 {
		t.Fatalf("starting the guest's writer: %v", err)
	}
	return vm
}

// A group of two TCG VMs whose guests write without a pause: optimistic
// bitmap cuts are dropped (a member wrote while the cut was taken); after
// 3 in a row the group pauses the guests around its cut (QMP stop/cont),
// the paused cut is kept, and cuts keep coming, each pause bounded and
// measured in the status, the guests running again after each.
func TestReplicateGroupPausedCut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	a, b := writingVM(t, ctx), writingVM(t, ctx)
	s := newReplSite(t)
	s.env["TMPDIR"] = t.TempDir() // the runner's directories: apart from other tests' machines a and b
	for name, vm := range map[string]*vmtest.VM{"a": a, "b": b} {
		if r := s.run("replicate", "enable", "--machine", name, "--qmp", vm.QMPSocket, "--target", "dr", "--group", "g",
			"--every", "300ms", "--crash-interval", "1ms"); r.code != 0 {
			t.Fatalf("replicate enable: %s", r)
		}
	}
	runner := startProcEnv(t, s.env, "replicate", "run", "--group", "g")
	defer func() {
		if t.Failed() {
			st, _ := s.groupMemberStatus("a")
			t.Logf("status of a: %+v", st)
			t.Logf("replicate run:\n%s", runner.stderr.String())
		}
	}()
	var sta, stb groupMemberStatus
	status := func() bool {
		var oka, okb bool
		sta, oka = s.groupMemberStatus("a")
		stb, okb = s.groupMemberStatus("b")
		return oka && okb
	}
	// A member's status is written after each cut: in mode paused with no
	// error, the paused cut was kept.
	waitFor(t, 90*time.Second, "a paused group cut kept", func() bool {
		return status() && sta.GroupCutMode == "paused" && sta.State == "protected" && sta.Error == "" &&
			sta.PauseMax > 0 && stb.PauseMax > 0 && sta.LastGroupCut != nil
	})
	t.Logf("paused: a %+v", sta)
	// The guests write on; group cuts keep coming.
	prev := *sta.LastGroupCut
	for round := range 3 {
		waitFor(t, 30*time.Second, "a newer group cut", func() bool {
			return status() && sta.LastGroupCut != nil && sta.LastGroupCut.After(prev) && stb.LastGroupCut != nil && !stb.LastGroupCut.Before(*sta.LastGroupCut)
		})
		t.Logf("round %d: group cut %s, mode %s, dropped %d, pause %.3fs (max %.3fs)", round, sta.LastGroupCut.Format(time.RFC3339Nano),
			sta.GroupCutMode, sta.CutsDropped, sta.PauseSeconds, sta.PauseMax)
		prev = *sta.LastGroupCut
	}
	for _, st := range []groupMemberStatus{sta, stb} {
		if st.CannotPause != "" || st.PauseMax <= 0 || st.PauseMax > 2.5 {
			t.Fatalf("member status %+v: want a pause measured, bounded by 2 s", st)
		}
	}
	// Both guests still run (every pause ended in a cont).
	for name, vm := range map[string]*vmtest.VM{"a": a, "b": b} {
		if st := qmpRunState(t, ctx, vm.QMPSocket); st != "running" {
			t.Fatalf("%s is %s after the paused cuts", name, st)
		}
	}
}

// qmpRunState is the run state QEMU at sock reports (running, paused...).
func qmpRunState(t *testing.T, ctx context.Context, sock string) string {
	t.Helper()
	mon, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	st, err := mon.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.Status
}
