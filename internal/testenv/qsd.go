package testenv

import (
	"bytes"
	"net"
	"os"
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
	return startDaemon(t, "", size, false).QMP
}

// Daemon is a running qemu-storage-daemon with one disk, node d0.
type Daemon struct {
	Dir   string // its directory, holding the image d0.qcow2
	Image string // the qcow2 image it serves
	QMP   string // its QMP socket
	// FUSE is the disk exported writable over FUSE: what is written there
	// is written by the "guest", through QEMU, and marks its dirty bitmaps.
	FUSE string
}

// WritableStorageDaemon is StorageDaemon on a qcow2 copy of the raw image
// src (size of zeros when src is ""), the disk also exported writable
// over FUSE. The caller also checks that fusermount3 is installed.
func WritableStorageDaemon(t testing.TB, src, size string) Daemon {
	t.Helper()
	return startDaemon(t, src, size, true)
}

func startDaemon(t testing.TB, src, size string, fuse bool) Daemon {
	t.Helper()
	d := Daemon{Dir: t.TempDir()}
	d.Image, d.QMP = filepath.Join(d.Dir, "d0.qcow2"), filepath.Join(d.Dir, "qmp.sock")
	mk := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", d.Image, size)
	if src != "" {
		mk = exec.Command("qemu-img", "convert", "-O", "qcow2", src, d.Image)
	}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", mk.Args, out)
	}
	args := []string{
		"--blockdev", "driver=file,node-name=d0-file,filename=" + d.Image,
		"--blockdev", "driver=qcow2,node-name=d0,file=d0-file",
		"--chardev", "socket,id=m,path=" + d.QMP + ",server=on,wait=off", "--monitor", "chardev=m"}
	if fuse {
		d.FUSE = filepath.Join(d.Dir, "d0.fuse")
		if err := os.WriteFile(d.FUSE, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--export", "type=fuse,id=fuse0,node-name=d0,mountpoint="+d.FUSE+",writable=on")
	}
	cmd := exec.Command("qemu-storage-daemon", args...)
	cleanup := func() {}
	if fuse {
		cleanup = func() { exec.Command("fusermount3", "-u", d.FUSE).Run() }
	}
	// Ready when the export has its size and QMP accepts a connection.
	startQEMU(t, cmd, d.QMP, 10*time.Second, cleanup, func() bool {
		st, err := os.Stat(d.FUSE)
		return !fuse || err == nil && st.Size() > 0
	})
	return d
}

// startQEMU starts cmd, a QEMU process, kills it (then runs cleanup) when
// the test ends, and returns once ready says so and QEMU accepts
// connections on its QMP socket qmp (the socket file exists a moment
// before QEMU listens on it), failing the test after timeout.
func startQEMU(t testing.TB, cmd *exec.Cmd, qmp string, timeout time.Duration, cleanup func(), ready func() bool) {
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
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		cleanup()
	})
	for deadline := time.Now().Add(timeout); ; time.Sleep(25 * time.Millisecond) {
		if ready() {
			if c, err := net.Dial("unix", qmp); err == nil {
				c.Close()
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("%s exited:\n%s", name, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited // stderr is written no more
			t.Fatalf("%s did not start in %s:\n%s", name, timeout, stderr.String())
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
	qmpSock = filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-m", "32", "-nodefaults",
		"-display", "none", "-S", "-qmp", "unix:"+qmpSock+",server=on,wait=off")
	startQEMU(t, cmd, qmpSock, 20*time.Second, func() {}, func() bool { return true })
	return qmpSock
}
