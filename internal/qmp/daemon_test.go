package qmp_test

// Fixtures: a real qemu-storage-daemon (and qemu-system-x86_64) started from
// the tests with qcow2 disks and a QMP socket, plus the qemu-io, qemu-img and
// nbdinfo runners the fleecing tests read and write through.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/qmp"
)

// need skips the test when a binary is missing, except under CI where
// everything must be installed (scripts/deps.sh).
func need(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required under CI: %v", b, err)
			}
			t.Skipf("%s not installed: %v", b, err)
		}
	}
}

// shortDir is a temporary directory with a short path: unix socket paths
// are limited to 107 bytes and t.TempDir's can be longer.
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// disk is one qcow2 image a daemon opens as nodes NAME-file and NAME.
type disk struct {
	name string
	size int64
}

// daemon is a qemu-storage-daemon under test.
type daemon struct {
	t     testing.TB
	dir   string
	sock  string // QMP socket
	disks []disk
	cmd   *exec.Cmd
	log   *bytes.Buffer
	// exited is closed when the running process has exited; nil when none runs.
	exited chan struct{}
}

func (d *daemon) image(name string) string { return filepath.Join(d.dir, name+".qcow2") }

// startDaemon creates the qcow2 images and starts qemu-storage-daemon.
func startDaemon(t testing.TB, disks ...disk) *daemon {
	t.Helper()
	need(t, "qemu-storage-daemon", "qemu-img")
	d := &daemon{t: t, dir: shortDir(t), disks: disks}
	d.sock = filepath.Join(d.dir, "qmp.sock")
	for _, k := range disks {
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", d.image(k.name), fmt.Sprint(k.size))
	}
	d.start()
	t.Cleanup(d.kill)
	return d
}

// start runs the daemon on the existing images and waits for its socket.
func (d *daemon) start() {
	t := d.t
	t.Helper()
	os.Remove(d.sock)
	var args []string
	for _, k := range d.disks {
		args = append(args,
			"--blockdev", fmt.Sprintf("driver=file,node-name=%s-file,filename=%s", k.name, d.image(k.name)),
			"--blockdev", fmt.Sprintf("driver=qcow2,node-name=%s,file=%s-file", k.name, k.name))
	}
	args = append(args,
		"--chardev", "socket,id=m,path="+d.sock+",server=on,wait=off",
		"--monitor", "chardev=m")
	d.log = new(bytes.Buffer)
	d.cmd = exec.Command("qemu-storage-daemon", args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting qemu-storage-daemon: %v", err)
	}
	exited := make(chan struct{})
	go func() { d.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket file appears at bind(), a moment before listen():
		// ready is when a connection is accepted (QEMU frees its one
		// client slot when this probe closes).
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("qemu-storage-daemon exited at start: %s", d.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-storage-daemon did not listen on %s: %s", d.sock, d.log)
		}
	}
	d.exited = exited
}

// signal sends sig to the daemon.
func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signalling qemu-storage-daemon: %v", err)
	}
}

// kill is kill -9, waiting for the process to be gone.
func (d *daemon) kill() {
	if d.cmd == nil || d.exited == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.exited = nil
}

// stop is a clean shutdown (SIGTERM), waiting for the process to exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		d.exited = nil
	case <-time.After(10 * time.Second):
		d.t.Fatalf("qemu-storage-daemon did not exit on SIGTERM: %s", d.log)
	}
}

func (d *daemon) dial() *qmp.Monitor {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := qmp.Dial(ctx, d.sock)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { m.Close() })
	return m
}

// testCtx is a context bounded well below the test timeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run runs a command and fails the test if it fails; it returns stdout.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// qemuIO runs qemu-io commands on a raw NBD URI; any failure fails the test.
func qemuIO(t testing.TB, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, uri)...)
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io %v on %s: %s", cmds, uri, out)
	}
}

// readExport copies a whole NBD export with qemu-img convert.
func readExport(t testing.TB, uri string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export.raw")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// extent is one entry of nbdinfo --map --json.
type extent struct {
	Offset      int64  `json:"offset"`
	Length      int64  `json:"length"`
	Type        int    `json:"type"`
	Description string `json:"description"`
}

// dirtyExtents reads a dirty bitmap's meta context through an export with
// nbdinfo and returns the dirty ranges as [offset, length] pairs.
func dirtyExtents(t testing.TB, uri, bitmap string) [][2]int64 {
	t.Helper()
	need(t, "nbdinfo")
	out := run(t, "nbdinfo", "--json", "--map=qemu:dirty-bitmap:"+bitmap, uri)
	var exts []extent
	if err := json.Unmarshal([]byte(out), &exts); err != nil {
		t.Fatalf("parsing nbdinfo --map output %q: %v", out, err)
	}
	var dirty [][2]int64
	for _, e := range exts {
		if e.Type&1 == 0 {
			continue
		}
		if n := len(dirty); n > 0 && dirty[n-1][0]+dirty[n-1][1] == e.Offset {
			dirty[n-1][1] += e.Length
			continue
		}
		dirty = append(dirty, [2]int64{e.Offset, e.Length})
	}
	return dirty
}
