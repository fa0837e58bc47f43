package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
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
	s.runGroup(t, map[string][]string{"a": {"--qmp", a.QMPSocket}, "b": {"--qmp", b.QMPSocket}}, "--every", "300ms", "--capture", "bitmap")
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

// A group of two TCG VMs under mirror capture, each writing a heartbeat
// to ext4 with its guest agent running: the group's cuts are markers in
// both journals, and with --app-interval every guest is frozen around one
// of them — an app-consistent group point, to which failover --group
// --point latest-app fails both machines over, each ext4 with its journal
// flushed.
func TestReplicateGroupMirrorAppConsistent(t *testing.T) {
	vmtest.RequireBinary(t, "e2fsck")
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	vms := map[string]*vmtest.VM{}
	for _, name := range []string{"a", "b"} {
		disk := vmtest.NewExt4Disk(t, filepath.Join(t.TempDir(), "root.qcow2"), "qcow2", 32)
		vms[name] = vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "idle", GuestAgent: true, Append: []string{"lifeboat.heartbeat=1"}})
	}
	for _, vm := range vms {
		if _, err := vm.WaitLine(ctx, vmReady); err != nil {
			t.Fatal(err)
		}
	}
	members := map[string][]string{}
	for name, vm := range vms {
		members[name] = []string{"--qmp", vm.QMPSocket, "--guest-agent", vm.GuestAgentSocket}
	}
	s := newReplSite(t)
	s.runGroup(t, members, "--every", "300ms", "--app-interval", "2s", "--capture", "mirror")
	waitFor(t, 2*time.Minute, "both members mirroring with marker group cuts", func() bool {
		sta, oka := s.groupMemberStatus("a")
		stb, okb := s.groupMemberStatus("b")
		return oka && okb && sta.Capture == "mirror" && stb.Capture == "mirror" && sta.GroupCutMode == "marker" &&
			sta.LastGroupCut != nil && stb.LastGroupCut != nil
	})
	var gf struct {
		Point struct {
			ID          int64     `json:"id"`
			Time        time.Time `json:"time"`
			Consistency string    `json:"consistency"`
		} `json:"point"`
	}
	out := t.TempDir()
	waitFor(t, time.Minute, "an app-consistent group point", func() bool {
		r := s.run("--json", "failover", "--group", "g", "--point", "latest-app", "--disks-only", "--to", out)
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &gf) == nil
	})
	if gf.Point.Consistency != "app" {
		t.Fatalf("failover --group --point latest-app went to %+v", gf.Point)
	}
	for name := range vms {
		raw := filepath.Join(out, name, "vd0.raw")
		if got := vmtest.QEMU(t, "dumpe2fs", "-h", raw); strings.Contains(got, "needs_recovery") {
			t.Fatalf("%s at the app-consistent group point needs journal recovery:\n%s", name, got)
		}
		vmtest.QEMU(t, "e2fsck", "-fn", raw)
	}
	t.Logf("app-consistent group point %d at %s", gf.Point.ID, gf.Point.Time.Format(time.RFC3339Nano))
}
