package discover

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want Machine
		ok   bool
	}{
		{[]string{"/usr/bin/qemu-system-x86_64", "-name", "guest=web1,debug-threads=on", "-qmp", "unix:/run/qemu/web1.qmp,server=on,wait=off"},
			Machine{Name: "web1", Program: "qemu-system-x86_64", QMP: "/run/qemu/web1.qmp"}, true},
		{[]string{"qemu-system-x86_64", "-name", "db1", "-chardev", "socket,id=mon0,path=/run/db1.mon,server=on,wait=off",
			"-mon", "chardev=mon0,mode=control", "-chardev", "socket,path=/run/db1.qga,server=on,wait=off,id=qga0",
			"-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"},
			Machine{Name: "db1", Program: "qemu-system-x86_64", QMP: "/run/db1.mon", GuestAgent: "/run/db1.qga"}, true},
		{[]string{"qemu-storage-daemon", "--chardev", "socket,path=/tmp/qsd.sock,server=on,wait=off,id=qmp0", "--monitor", "chardev=qmp0",
			"--blockdev", "file,node-name=f,filename=/img"},
			Machine{Name: "qsd", Program: "qemu-storage-daemon", QMP: "/tmp/qsd.sock"}, true},
		{[]string{"qemu-storage-daemon", "--chardev=socket,path=/tmp/a,,b.sock,server=on,id=m", "--monitor=m"},
			Machine{Name: "a,b", Program: "qemu-storage-daemon", QMP: "/tmp/a,b.sock"}, true},
		// An HMP monitor is no QMP socket; nor is a TCP one.
		{[]string{"qemu-system-x86_64", "-chardev", "socket,id=h,path=/run/h.sock,server=on", "-mon", "chardev=h,mode=readline"}, Machine{}, false},
		{[]string{"qemu-system-x86_64", "-qmp", "tcp:127.0.0.1:4444,server"}, Machine{}, false},
		{[]string{"/usr/sbin/sshd", "-qmp", "unix:/x"}, Machine{}, false},
		{nil, Machine{}, false},
	} {
		got, ok := ParseCmdline(tc.args)
		if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCmdline(%q) = %+v, %v; want %+v, %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}
}

// start runs a QEMU program until the test ends and waits for its socket.
func start(t *testing.T, sock string, name string, args ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("LIFEBOAT_REQUIRE_VM") == "1" || os.Getenv("CI") == "true" {
			t.Fatalf("%s is required: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(name, args...)
	out, _ := os.CreateTemp(t.TempDir(), "log")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(out.Name())
			t.Fatalf("%s did not listen on %s: %s", name, sock, log)
		}
	}
}

// Real QEMU processes are found from /proc: a storage daemon with its
// disk, a (paused) qemu-system with its -name and guest agent socket; a
// unix socket in a QMP directory that is not QMP is not listed.
func TestFindRealProcesses(t *testing.T) {
	dir, err := os.MkdirTemp("", "disc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	img := filepath.Join(dir, "d.raw")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	qsdSock := filepath.Join(dir, "qsd.sock")
	qsd := start(t, qsdSock, "qemu-storage-daemon", "--chardev", "socket,path="+qsdSock+",server=on,wait=off,id=qmp0",
		"--monitor", "chardev=qmp0", "--blockdev", "file,node-name=disk0,filename="+img)
	vmSock, gaSock := filepath.Join(dir, "vm.qmp"), filepath.Join(dir, "vm.qga")
	vm := start(t, vmSock, "qemu-system-x86_64", "-S", "-machine", "pc,accel=tcg", "-nodefaults", "-display", "none",
		"-name", "guest=web7", "-qmp", "unix:"+vmSock+",server=on,wait=off",
		"-chardev", "socket,id=qga0,path="+gaSock+",server=on,wait=off",
		"-device", "virtio-serial-pci", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0")
	other := filepath.Join(dir, "qemu-run", "not-qmp.sock")
	os.MkdirAll(filepath.Dir(other), 0o700)
	ln, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	found, err := Find(context.Background(), Options{Dirs: []string{filepath.Join(dir, "qemu-*")}, Probe: 3 * time.Second, Under: dir})
	if err != nil {
		t.Fatal(err)
	}
	byPID := map[int]Machine{}
	for _, m := range found {
		if m.QMP == other {
			t.Fatalf("a socket that does not speak QMP is listed: %+v", m)
		}
		byPID[m.PID] = m
	}
	if m := byPID[qsd.Process.Pid]; m.QMP != qsdSock || m.Name != "qsd" || !slices.Equal(m.Disks, []string{"disk0"}) || m.Error != "" {
		t.Fatalf("the storage daemon: %+v (all: %+v)", m, found)
	}
	if m := byPID[vm.Process.Pid]; m.QMP != vmSock || m.Name != "web7" || m.GuestAgent != gaSock || m.Error != "" {
		t.Fatalf("the qemu-system: %+v (all: %+v)", m, found)
	}
}

func TestPIDText(t *testing.T) {
	if got := (Machine{}).PIDText(); got != "-" {
		t.Errorf("no PID: %q", got)
	}
	if got := (Machine{PID: 4242}).PIDText(); got != "4242" {
		t.Errorf("PID 4242: %q", got)
	}
}
