package qmp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/qmp"
)

// startMachine starts qemu-system-x86_64 (TCG, paused with -S) with one
// qcow2 disk on a virtio-blk device "vda" and returns a monitor on it.
func startMachine(t *testing.T) (*qmp.Monitor, string) {
	t.Helper()
	need(t, "qemu-system-x86_64", "qemu-img")
	dir := shortDir(t)
	img := filepath.Join(dir, "vda.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "32M")
	sock := filepath.Join(dir, "qmp.sock")
	var log bytes.Buffer
	cmd := exec.Command("qemu-system-x86_64",
		"-accel", "tcg", "-M", "pc", "-m", "64", "-nodefaults", "-display", "none", "-S",
		"-blockdev", "driver=file,node-name=vda-file,filename="+img,
		"-blockdev", "driver=qcow2,node-name=vda-disk,file=vda-file",
		"-device", "virtio-blk-pci,drive=vda-disk,id=vda",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil { // listening, not just bound
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("qemu-system-x86_64 exited: %s", log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-system-x86_64 did not create its QMP socket: %s", log.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, dir
}

func TestSystemEmulator(t *testing.T) {
	m, dir := startMachine(t)
	ctx := testCtx(t)

	st, err := m.QueryStatus(ctx)
	if err != nil || st.Running || st.Status != "prelaunch" {
		t.Fatalf("query-status with -S = %+v, %v", st, err)
	}
	disks, err := m.Disks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 1 {
		t.Fatalf("Disks = %+v, want the one virtio disk", disks)
	}
	t.Logf("disk: %+v", disks[0])
	if d := disks[0]; d.Node != "vda-disk" || d.Driver != "qcow2" || d.Size != 32<<20 ||
		d.Filename != filepath.Join(dir, "vda.qcow2") || !strings.Contains(d.QDev, "vda") {
		t.Fatalf("disk = %+v", d)
	}
	out, err := m.HumanMonitorCommand(ctx, "info block")
	if err != nil || !strings.Contains(out, "vda-disk") {
		t.Fatalf("HMP info block = %q, %v", out, err)
	}

	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.QueryStatus(ctx); err != nil || !st.Running || st.Status != "running" {
		t.Fatalf("after cont: %+v, %v", st, err)
	}

	// Fleece a disk in use by a device of a running machine.
	before := stateOf(t, m)
	s, err := qmp.Fleece(ctx, m, []qmp.FleeceDisk{{Node: "vda-disk", NewBitmap: "lifeboat-1"}},
		qmp.FleeceOptions{Dir: dir, Server: qmp.UnixSocket(dir + "/nbd.sock"), StartServer: true})
	if err != nil {
		t.Fatal(err)
	}
	need(t, "nbdinfo")
	if !strings.Contains(run(t, "nbdinfo", s.Disks[0].URI), fmt.Sprint("export-size: ", 32<<20)) {
		t.Fatal("fleecing export of the device disk has the wrong size")
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	want := before
	want.Bitmaps = []string{"vda-disk/lifeboat-1 recording=true persistent=true"}
	if after := stateOf(t, m); !reflect.DeepEqual(after, want) {
		t.Fatalf("after fleecing:\n got %+v\nwant %+v", after, want)
	}

	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.QueryStatus(ctx); err != nil || st.Running || st.Status != "paused" {
		t.Fatalf("after stop: %+v, %v", st, err)
	}

	// quit: QEMU exits and the monitor reports the connection lost.
	if err := m.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, qmp.ErrDisconnected) {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("monitor did not notice QEMU exit")
	}
	if !errors.Is(m.Err(), qmp.ErrDisconnected) {
		t.Fatalf("Err after quit = %v", m.Err())
	}
}
