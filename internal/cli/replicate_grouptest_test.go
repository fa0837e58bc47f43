package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/qmp"
	"lifeboat/internal/vmtest"
)

type groupFailoverJSON struct {
	Point struct {
		ID   int64     `json:"id"`
		Time time.Time `json:"time"`
	} `json:"point"`
	Failovers []struct {
		Machine string `json:"machine"`
		Name    string `json:"name"`
		PID     int    `json:"pid"`
		QMP     string `json:"qmp"`
		Disks   []struct {
			File string `json:"file"`
		} `json:"disks"`
	} `json:"failovers"`
}

// enableGroup enables machines name→QMP socket in group g at site dr and
// starts replicate run --group g, under bitmap capture: its tests export
// disks over FUSE (which QEMU cannot mirror) or write them through HMP's
// qemu-io on the disk's node (beneath a mirror's filter).
func (s *replSite) enableGroup(t *testing.T, socks map[string]string) {
	t.Helper()
	for name, sock := range socks {
		if r := s.run("replicate", "enable", "--machine", name, "--qmp", sock, "--target", "dr", "--group", "g",
			"--every", "200ms", "--crash-interval", "1ms", "--capture", "bitmap"); r.code != 0 {
			t.Fatalf("replicate enable: %s", r)
		}
	}
	runner := startProcEnv(t, s.env, "replicate", "run", "--group", "g")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replicate run stderr:\n%s", runner.stderr.String())
		}
	})
}

// A group's test failover starts an isolated copy of every member at the
// site while replication goes on; --test-cleanup removes them all and
// leaves every replica as the source is.
func TestReplicateGroupTestFailover(t *testing.T) {
	_, sockA, fuseA := storageDaemon(t)
	_, sockB, fuseB := storageDaemon(t)
	s := newReplSite(t)
	s.enableGroup(t, map[string]string{"a": sockA, "b": sockB})
	writeAt(t, fuseA, 0, bytes.Repeat([]byte("a1"), 4096))
	writeAt(t, fuseB, 0, bytes.Repeat([]byte("b1"), 4096))
	s.cutAfter("a", time.Now(), 30*time.Second)
	s.cutAfter("b", time.Now(), 30*time.Second)

	r := s.run("--json", "failover", "--group", "g", "--test")
	var gf groupFailoverJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &gf) != nil || len(gf.Failovers) != 2 {
		t.Fatalf("failover --group --test: %s", r)
	}
	for _, fo := range gf.Failovers {
		t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
		if fo.Name != fo.Machine+"-dr-test" {
			t.Fatalf("test copy of %s is named %q", fo.Machine, fo.Name)
		}
		c, err := net.Dial("unix", fo.QMP)
		if err != nil {
			t.Fatalf("the test copy %s does not answer: %v", fo.Name, err)
		}
		c.Close()
	}
	if r := s.run("failover", "--group", "g", "--test"); r.code == 0 {
		t.Fatalf("a second group test failover while one runs: %s", r)
	}
	// Replication goes on.
	writeAt(t, fuseA, 1<<20, bytes.Repeat([]byte("a2"), 4096))
	writeAt(t, fuseB, 1<<20, bytes.Repeat([]byte("b2"), 4096))
	s.cutAfter("a", time.Now(), 30*time.Second)
	s.cutAfter("b", time.Now(), 30*time.Second)

	r = s.run("--json", "failover", "--group", "g", "--test-cleanup")
	var cleaned groupFailoverJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &cleaned) != nil || len(cleaned.Failovers) != 2 {
		t.Fatalf("failover --group --test-cleanup: %s", r)
	}
	for _, fo := range gf.Failovers {
		waitFor(t, 10*time.Second, "the test copy to stop", func() bool {
			return syscall.Kill(fo.PID, 0) != nil || isZombie(fo.PID)
		})
	}
	if r := s.run("failover", "--group", "g", "--test-cleanup"); r.code != 8 {
		t.Fatalf("second cleanup: %s, want exit 8", r)
	}
	s.cutAfter("a", time.Now(), 30*time.Second)
	s.cutAfter("b", time.Now(), 30*time.Second)
	s.checkReplica("a", "latest", readFile(t, fuseA), "after the group test failover a's replica differs from the source")
	s.checkReplica("b", "latest", readFile(t, fuseB), "after the group test failover b's replica differs from the source")
}

// pausable is a qemu-system machine without CPUs or devices (so it needs no
// guest) whose disk d0 the test writes through a second QMP monitor with
// HMP's qemu-io, so that stop, cont and quit act as on any qemu-system.
type pausable struct {
	qmp, ctl string
	cmd      *exec.Cmd
	exited   chan struct{}
}

func startPausable(t *testing.T) *pausable {
	t.Helper()
	vmtest.RequireBinary(t, "qemu-system-x86_64")
	dir := t.TempDir()
	img := filepath.Join(dir, "d0.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	p := &pausable{qmp: filepath.Join(dir, "qmp.sock"), ctl: filepath.Join(dir, "ctl.sock"), exited: make(chan struct{})}
	p.cmd = exec.Command("qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
		"-blockdev", "driver=file,node-name=d0-file,filename="+img, "-blockdev", "driver=qcow2,node-name=d0,file=d0-file",
		"-qmp", "unix:"+p.qmp+",server=on,wait=off", "-qmp", "unix:"+p.ctl+",server=on,wait=off")
	var stderr bytes.Buffer
	p.cmd.Stderr = &stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.exited })
	waitFor(t, 20*time.Second, "qemu-system to listen", func() bool {
		c, err := net.Dial("unix", p.ctl)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// io runs a qemu-io command on d0 through the control monitor.
func (p *pausable) io(t *testing.T, command string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mon, err := qmp.Dial(ctx, p.ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	var out string
	if err := mon.Execute(ctx, "human-monitor-command", map[string]any{"command-line": `qemu-io d0 "` + command + `"`}, &out); err != nil || strings.Contains(out, "Error") {
		t.Fatalf("qemu-io %s: %v %s", command, err, out)
	}
	return out
}

// A planned failover of a group pauses every member, ships a group cut
// taken after the pauses, fails every member over to exactly it (so the
// last writes, made just before and never waited for, are there on both)
// and shuts the sources down.
func TestReplicateGroupPlannedFailover(t *testing.T) {
	a, b := startPausable(t), startPausable(t)
	s := newReplSite(t)
	s.enableGroup(t, map[string]string{"a": a.qmp, "b": b.qmp})
	a.io(t, "write -P 0x11 0 64k")
	b.io(t, "write -P 0x12 0 64k")
	s.cutAfter("a", time.Now(), 30*time.Second)
	s.cutAfter("b", time.Now(), 30*time.Second)
	// The last writes: the planned failover must carry them.
	a.io(t, "write -P 0x21 1M 64k")
	b.io(t, "write -P 0x22 1M 64k")

	r := s.run("--json", "failover", "--group", "g", "--planned")
	var gf groupFailoverJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &gf) != nil || len(gf.Failovers) != 2 {
		t.Fatalf("failover --group --planned: %s", r)
	}
	for _, fo := range gf.Failovers {
		t.Cleanup(func() { syscall.Kill(fo.PID, syscall.SIGKILL) })
	}
	for _, p := range []*pausable{a, b} {
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			t.Fatal("a source QEMU still runs after the planned failover")
		}
	}
	pattern := map[string][2]string{"a": {"0x11", "0x21"}, "b": {"0x12", "0x22"}}
	for _, fo := range gf.Failovers {
		if fo.Name != fo.Machine+"-dr" || len(fo.Disks) != 1 {
			t.Fatalf("failover %+v", fo)
		}
		for i, off := range []string{"0", "1M"} {
			out, err := exec.Command("qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P "+pattern[fo.Machine][i]+" "+off+" 64k", fo.Disks[0].File).CombinedOutput()
			if err != nil || strings.Contains(string(out), "verification failed") {
				t.Fatalf("%s's failed-over disk at %s: %v\n%s", fo.Machine, off, err, out)
			}
		}
	}
	if !gf.Point.Time.After(time.Time{}) {
		t.Fatalf("group point %+v", gf.Point)
	}
	if r := s.run("failover", "--group", "g", "--planned", "--test"); r.code != 2 {
		t.Fatalf("--planned with --test: %s, want exit 2", r)
	}
}
