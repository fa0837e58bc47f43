package testenv

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// StorageDaemon starts a qemu-storage-daemon serving one qcow2 disk of
// size (a qemu-img size: "8M"), node d0, in a new directory, with a QMP
// socket (returned) that accepts a connection: a live machine for tests
// that capture or replicate through QMP. It is killed when the test ends.
// The caller checks that qemu-storage-daemon and qemu-img are installed
// (vmtest.RequireBinary).
func StorageDaemon(t testing.TB, size string) (qmpSock string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "d0.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, size).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	qmpSock = filepath.Join(dir, "qmp.sock")
	cmd := exec.Command("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=d0-file,filename="+img,
		"--blockdev", "driver=qcow2,node-name=d0,file=d0-file",
		"--chardev", "socket,id=m,path="+qmpSock+",server=on,wait=off", "--monitor", "chardev=m")
	return startQMP(t, cmd, qmpSock)
}

// startQMP starts cmd, a QEMU process, kills it when the test ends, and
// returns qmpSock once QEMU accepts connections on it.
func startQMP(t testing.TB, cmd *exec.Cmd, qmpSock string) string {
	t.Helper()
	name := filepath.Base(cmd.Path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	// Ready when QMP accepts a connection (the socket file exists a moment
	// before QEMU listens on it).
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(25 * time.Millisecond) {
		if c, err := net.Dial("unix", qmpSock); err == nil {
			c.Close()
			return qmpSock
		}
		select {
		case <-exited:
			t.Fatalf("%s exited:\n%s", name, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited // stderr is written no more
			t.Fatalf("%s did not listen on %s in 20 s:\n%s", name, qmpSock, stderr.String())
		}
	}
}

// Emulator starts qemu-system-x86_64 under TCG with no disks, paused
// before its first instruction (-S: status "prelaunch"), with a QMP socket
// (returned) that accepts a connection: a machine whose vCPUs tests can
// stop and resume. It is killed when the test ends. The caller checks
// that qemu-system-x86_64 is installed (vmtest.RequireBinary).
func Emulator(t testing.TB) (qmpSock string) {
	t.Helper()
	dir := t.TempDir()
	qmpSock = filepath.Join(dir, "qmp.sock")
	cmd := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-m", "32", "-nodefaults",
		"-display", "none", "-S", "-qmp", "unix:"+qmpSock+",server=on,wait=off")
	return startQMP(t, cmd, qmpSock)
}
