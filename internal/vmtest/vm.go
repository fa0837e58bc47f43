package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Disk is one virtio-blk disk of a test VM.
type Disk struct {
	// Path is the image file on the host.
	Path string
	// Format is the image format: "raw" or "qcow2".
	Format string
	// NodeName is the block node's name in QMP (default "disk<i>").
	NodeName string
	// ID is the virtio-blk-pci device id (default "vd<i>"). The guest sees
	// the disks in order as /dev/vda, /dev/vdb, ...
	ID string
}

// Config describes a test VM.
type Config struct {
	// Disks are attached in order as /dev/vda, /dev/vdb, ...
	Disks []Disk
	// Workload is the guest workload (see the package doc); default "idle".
	Workload string
	// MemoryMB is the guest's memory; default 256.
	MemoryMB int
	// GuestAgent adds a virtio-serial port org.qemu.guest_agent.0 on a unix
	// socket (VM.GuestAgentSocket), and the guest starts qemu-ga on it.
	GuestAgent bool
	// Append holds extra words for the kernel command line, such as
	// "lifeboat.heartbeat=1" or "lifeboat.agent=0".
	Append []string
	// ExtraArgs are appended to qemu-system-x86_64's arguments.
	ExtraArgs []string
}

// VM is a running qemu-system-x86_64 under TCG. Its serial console and
// QEMU's own stderr ("qemu: " lines) are collected line by line; the whole
// log is written to the test log if the test fails (or always, with
// LIFEBOAT_VM_LOG=1). The process is killed when the test ends. With
// LIFEBOAT_VM_VERBOSE=1 the kernel is not booted "quiet".
type VM struct {
	// QMPSocket is the path of the QMP monitor's unix socket (server, no
	// wait: connect any time after Start).
	QMPSocket string
	// GuestAgentSocket is the path of the guest agent's unix socket, empty
	// without Config.GuestAgent. QEMU serves one connection at a time.
	GuestAgentSocket string
	// PID is the QEMU process id.
	PID int

	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when QEMU has exited and its output is read

	mu      sync.Mutex
	lines   []string
	next    int           // WaitLine's cursor into lines
	changed chan struct{} // closed and replaced on every new line
	exitErr error         // valid once done is closed
}

// Start boots a VM and registers its teardown with t.Cleanup. It returns once
// QEMU listens on its sockets, without waiting for the guest: use
// WaitLine(ctx, regexp.MustCompile("^LB ready$")) for that.
func Start(t testing.TB, cfg Config) *VM {
	t.Helper()
	kernel, initrd := Assets(t)
	if cfg.Workload == "" {
		cfg.Workload = "idle"
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 256
	}
	// Unix socket paths are limited to 108 bytes: t.TempDir() can be longer.
	sockDir, err := os.MkdirTemp("", "lbvm")
	if err != nil {
		t.Fatalf("creating VM socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	vm := &VM{
		QMPSocket: filepath.Join(sockDir, "qmp.sock"),
		name:      cfg.Workload,
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
	}
	appendLine := []string{"console=ttyS0", "panic=-1", "mitigations=off", "lifeboat.workload=" + cfg.Workload}
	if os.Getenv("LIFEBOAT_VM_VERBOSE") != "1" {
		appendLine = append(appendLine, "quiet")
	}
	appendLine = append(appendLine, cfg.Append...)
	args := []string{
		"-accel", "tcg", "-m", strconv.Itoa(cfg.MemoryMB), "-smp", "1",
		"-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", strings.Join(appendLine, " "),
		"-serial", "stdio",
		"-chardev", "socket,id=qmp,path=" + optEscape(vm.QMPSocket) + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
	}
	for i, d := range cfg.Disks {
		if d.Format != "raw" && d.Format != "qcow2" {
			t.Fatalf("vmtest: disk %d (%s): format %q is neither raw nor qcow2", i, d.Path, d.Format)
		}
		if d.NodeName == "" {
			d.NodeName = fmt.Sprintf("disk%d", i)
		}
		if d.ID == "" {
			d.ID = fmt.Sprintf("vd%d", i)
		}
		args = append(args,
			"-blockdev", fmt.Sprintf("driver=%s,node-name=%s,file.driver=file,file.filename=%s", d.Format, d.NodeName, optEscape(d.Path)),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=%s,id=%s", d.NodeName, d.ID))
	}
	if cfg.GuestAgent {
		vm.GuestAgentSocket = filepath.Join(sockDir, "qga.sock")
		args = append(args,
			"-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=qga0,path="+optEscape(vm.GuestAgentSocket)+",server=on,wait=off",
			"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0")
	}
	args = append(args, cfg.ExtraArgs...)

	vm.cmd = exec.Command(qemuBinary, args...)
	stdout, err := vm.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	stderr, err := vm.cmd.StderrPipe()
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	if err := vm.cmd.Start(); err != nil {
		t.Fatalf("vmtest: starting %s: %v", qemuBinary, err)
	}
	vm.PID = vm.cmd.Process.Pid
	vm.add(fmt.Sprintf("vmtest: pid %d: %s %s", vm.PID, qemuBinary, strings.Join(args, " ")))

	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); vm.read(stdout, "") }()
	go func() { defer readers.Done(); vm.read(stderr, "qemu: ") }()
	go func() {
		readers.Wait()
		err := vm.cmd.Wait()
		vm.mu.Lock()
		vm.exitErr = err
		vm.mu.Unlock()
		close(vm.done)
		vm.add(fmt.Sprintf("vmtest: qemu exited: %v", exitText(err)))
	}()

	t.Cleanup(func() {
		vm.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := vm.Wait(ctx); err != nil && errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("vmtest: qemu pid %d did not exit after SIGKILL", vm.PID)
		}
		if t.Failed() || os.Getenv("LIFEBOAT_VM_LOG") == "1" {
			t.Logf("console of VM %q (pid %d):\n%s", vm.name, vm.PID, vm.Log())
		}
	})

	// QEMU listens on its sockets before it runs the guest: once they accept,
	// clients may connect.
	for _, sock := range []string{vm.QMPSocket, vm.GuestAgentSocket} {
		if sock == "" {
			continue
		}
		if err := vm.waitSocket(sock, 30*time.Second); err != nil {
			t.Fatalf("vmtest: %v", err)
		}
	}
	return vm
}

func (vm *VM) waitSocket(path string, timeout time.Duration) error {
	// The file appears at bind, before QEMU listens: wait for a connection
	// to go through. QEMU serves the next client once this one hangs up.
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-vm.done:
			return fmt.Errorf("qemu pid %d exited (%s) before listening on %s", vm.PID, exitText(vm.exitErr), path)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("qemu pid %d is not listening on %s after %v: %w", vm.PID, path, timeout, err)
		}
	}
}

// optEscape escapes a value for QEMU's comma-separated option syntax.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (vm *VM) read(r io.Reader, prefix string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		vm.add(prefix + strings.TrimRight(sc.Text(), "\r"))
	}
	// Drain whatever is left so QEMU never blocks on a full pipe.
	io.Copy(io.Discard, r)
}

func (vm *VM) add(line string) {
	vm.mu.Lock()
	vm.lines = append(vm.lines, line)
	close(vm.changed)
	vm.changed = make(chan struct{})
	vm.mu.Unlock()
}

// Lines returns a copy of every line so far: console output, QEMU's stderr
// (prefixed "qemu: ") and vmtest's own notes (prefixed "vmtest: ").
func (vm *VM) Lines() []string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]string(nil), vm.lines...)
}

// Log returns all lines joined by newlines.
func (vm *VM) Log() string { return strings.Join(vm.Lines(), "\n") }

// guestError is how a workload says it cannot go on.
var guestError = regexp.MustCompile(`^LB error `)

// WaitLine waits for the next line matching re and returns its submatches.
// Lines are consumed: each call starts after the line the previous call
// matched, so successive calls see successive events. It fails early when
// the guest prints "LB error ..." or QEMU exits before a match, and when ctx
// ends.
func (vm *VM) WaitLine(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		vm.mu.Lock()
		for vm.next < len(vm.lines) {
			line := vm.lines[vm.next]
			vm.next++
			if m := re.FindStringSubmatch(line); m != nil {
				vm.mu.Unlock()
				return m, nil
			}
			if guestError.MatchString(line) {
				vm.mu.Unlock()
				return nil, fmt.Errorf("VM %q: guest reported %q while waiting for a line matching %q", vm.name, line, re)
			}
		}
		changed := vm.changed
		vm.mu.Unlock()

		select {
		case <-changed:
		case <-vm.done:
			// Lines added before done closed are all visible: rescan once.
			vm.mu.Lock()
			pending := vm.next < len(vm.lines)
			exitErr := vm.exitErr
			vm.mu.Unlock()
			if pending {
				continue
			}
			return nil, fmt.Errorf("VM %q exited (%s) before a line matching %q", vm.name, exitText(exitErr), re)
		case <-ctx.Done():
			return nil, fmt.Errorf("VM %q: waiting for a line matching %q: %w", vm.name, re, ctx.Err())
		}
	}
}

// Kill sends SIGKILL to QEMU: for the guest, a power cut. Killing a VM that
// has exited is not an error.
func (vm *VM) Kill() error {
	select {
	case <-vm.done:
		return nil
	default:
	}
	if err := vm.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing qemu pid %d: %w", vm.PID, err)
	}
	return nil
}

// Wait waits for QEMU to exit and returns its exit error (nil for status 0,
// which is how a guest's "poweroff -f" ends).
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
		vm.mu.Lock()
		defer vm.mu.Unlock()
		if vm.exitErr != nil {
			return fmt.Errorf("qemu pid %d: %w", vm.PID, vm.exitErr)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for qemu pid %d to exit: %w", vm.PID, ctx.Err())
	}
}
