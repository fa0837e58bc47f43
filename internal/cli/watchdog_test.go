package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/guestagent"
	"lifeboat/internal/vmtest"
)

// watchdogOf returns the pid of the thaw watchdog that process parent
// started, failing the test if there is none.
func watchdogOf(t *testing.T, parent int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		cmdline, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err1 != nil || err2 != nil || !bytes.Contains(cmdline, []byte("__thaw-watchdog")) {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(parent) {
			return pid
		}
	}
	t.Fatalf("no thaw watchdog started by pid %d", parent)
	return 0
}

// waitExited waits until process pid has exited (gone, or a zombie that
// nobody reaps) and fails the test after timeout.
func waitExited(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			return
		}
		if fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(fields) > 0 && fields[0] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thaw watchdog pid %d still running %v after its parent died", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdInstant forwards one QMP connection to the QMP socket upstream, and
// holds back the live backup's instant (the transaction that starts
// blockdev-backup), so that lifeboat waits there with the guest frozen.
// held is closed when the instant arrives.
func holdInstant(t *testing.T, upstream string) (sock string, held <-chan struct{}) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lbqp") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.Dial("unix", upstream)
	if err != nil {
		t.Fatal(err)
	}
	var down net.Conn
	accepted := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		up.Close()
		<-accepted
		if down != nil {
			down.Close()
		}
	})
	ch := make(chan struct{})
	go func() {
		defer close(accepted)
		c, err := l.Accept()
		if err != nil {
			return
		}
		down = c
		go io.Copy(c, up)
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadBytes('\n')
			if bytes.Contains(line, []byte(`"transaction"`)) && bytes.Contains(line, []byte(`"blockdev-backup"`)) {
				close(ch)
				io.Copy(io.Discard, r) // held until lifeboat hangs up
				return
			}
			if _, werr := up.Write(line); werr != nil || err != nil {
				return
			}
		}
	}()
	return sock, ch
}

// Killing lifeboat's whole process group (kill -9 -- -PGID: a service
// manager's stop timeout, timeout -s KILL) while the guest is frozen
// leaves the watchdog alive, in its own session, to thaw the guest through
// the real qemu-ga; the watchdog then exits.
func TestGuestWatchdogOutlivesProcessGroup(t *testing.T) {
	vmtest.Assets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	disk := vmtest.NewExt4Disk(t, filepath.Join(t.TempDir(), "root.raw"), "raw", 32)
	vm := vmtest.Start(t, vmtest.Config{Disks: []vmtest.Disk{disk}, Workload: "idle", GuestAgent: true,
		Append: []string{"lifeboat.heartbeat=1"}})
	if _, err := vm.WaitLine(ctx, regexp.MustCompile(`^LB ready$`)); err != nil {
		t.Fatal(err)
	}
	qmpSock, held := holdInstant(t, vm.QMPSocket)
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)
	p := startGroupProc(t, "--vault", vaultDir, "backup", "--machine", "vm", "--qmp", qmpSock, "--fleece-dir", t.TempDir(),
		"--guest-agent", vm.GuestAgentSocket, "--consistency", "file", "--freeze-timeout", "10m")
	select {
	case <-held: // the guest is frozen: the instant comes after the freeze
	case <-p.done:
		t.Fatalf("the backup ended before its instant: %s", p.wait(t, time.Second))
	case <-ctx.Done():
		t.Fatal("the backup never reached its instant")
	}
	dog := watchdogOf(t, p.cmd.Process.Pid)
	mark := len(vm.Lines())
	if !p.killGroup() {
		t.Fatalf("the backup ended before it could be killed: %s", p.wait(t, time.Second))
	}
	// The guest's writes resume: two heartbeats written after the kill.
	heartbeat := regexp.MustCompile(`^LB heartbeat \d+$`)
	deadline := time.Now().Add(45 * time.Second) // the watchdog's agent retries last at most 60 s
	for n := 0; n < 2; {
		n = 0
		for _, l := range vm.Lines()[mark:] {
			if heartbeat.MatchString(l) {
				n++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest's writes did not resume after lifeboat's process group was killed (%d heartbeats)", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitExited(t, dog, 30*time.Second)
	ga, err := guestagent.Dial(ctx, vm.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	if st, err := ga.FreezeStatus(ctx); err != nil || st != guestagent.Thawed {
		t.Fatalf("after the group kill: freeze status %v %v, want thawed", st, err)
	}
}
