package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"lifeboat/internal/guestagent"
	"lifeboat/internal/qmp"
	"lifeboat/internal/recovery"
)

// Process says how to run an emulator command line.
type Process struct {
	Argv []string
	// QMPSocket, if set, is waited for: Start returns once QEMU accepts
	// connections on it.
	QMPSocket string
	// Stdout and Stderr receive QEMU's output (discarded if nil).
	Stdout, Stderr io.Writer
	// Detach runs QEMU in a process group of its own, so that a signal to
	// lifeboat's group (Ctrl-C in a shell) or lifeboat's death does not
	// stop the guest: instant restore leaves the machine running.
	Detach bool
}

// Machine is a running emulator.
type Machine struct {
	PID                         int
	QMPSocket, GuestAgentSocket string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
	tail *tailBuffer
}

// Start runs the emulator and, with a QMP socket, waits until QEMU listens
// on it (QEMU opens its sockets before it runs the guest).
func Start(ctx context.Context, p Process) (*Machine, error) {
	if len(p.Argv) == 0 {
		return nil, invalid("no command line")
	}
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	// QEMU's last words go into the error of a start that fails.
	tail := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = p.Stdout, io.Writer(tail)
	if p.Stderr != nil {
		cmd.Stderr = io.MultiWriter(p.Stderr, tail)
	}
	if p.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", p.Argv[0], err)
	}
	m := &Machine{PID: cmd.Process.Pid, QMPSocket: p.QMPSocket, cmd: cmd, done: make(chan struct{}), tail: tail}
	go func() {
		m.err = cmd.Wait()
		close(m.done)
	}()
	if p.QMPSocket == "" {
		return m, nil
	}
	for {
		if c, err := net.Dial("unix", p.QMPSocket); err == nil {
			c.Close()
			return m, nil
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("%s exited before listening on %s: %v: %s", p.Argv[0], p.QMPSocket, exitText(m.err), tail.String())
		case <-ctx.Done():
			m.Kill()
			return nil, fmt.Errorf("waiting for QEMU to listen on %s: %w", p.QMPSocket, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Done is closed when the emulator has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Err is how the emulator ended, once Done is closed.
func (m *Machine) Err() error {
	<-m.done
	if m.err != nil {
		return fmt.Errorf("QEMU pid %d: %w: %s", m.PID, m.err, m.tail.String())
	}
	return nil
}

// Kill ends the emulator at once (for the guest, a power cut).
func (m *Machine) Kill() {
	select {
	case <-m.done:
	default:
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.done
	}
}

// Stop asks QEMU to quit through QMP (or SIGTERM without QMP), and kills
// it if it has not exited when ctx ends.
func (m *Machine) Stop(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	quit := false
	if m.QMPSocket != "" {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if mon, err := qmp.Dial(qctx, m.QMPSocket); err == nil {
			mon.Execute(qctx, "quit", nil, nil) // QEMU may hang up before it answers
			mon.Close()
			quit = true
		}
		cancel()
	}
	if !quit {
		m.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		m.Kill()
		return fmt.Errorf("QEMU pid %d did not quit in time: killed", m.PID)
	}
}

// WaitGuestAgent waits until the guest agent on socket answers a ping,
// trying again every couple of seconds (until the guest has booted, the
// channel accepts connections but nothing answers), until ctx ends or
// done is closed (the machine exited).
func WaitGuestAgent(ctx context.Context, socket string, done <-chan struct{}) error {
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := guestagent.Dial(actx, socket)
		if err == nil {
			err = c.Ping(actx)
			c.Close()
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-done:
			return errors.New("the machine stopped before its guest agent answered")
		case <-ctx.Done():
			return fmt.Errorf("the guest agent did not answer: %w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Signal sends sig to the emulator.
func (m *Machine) Signal(sig os.Signal) error { return m.cmd.Process.Signal(sig) }

// Launch builds def's command line with opts and starts it. Without
// sockets in opts, it puts a QMP socket and a guest agent socket in
// runDir (which must exist). It returns the machine and its argv.
func Launch(ctx context.Context, def *recovery.Definition, opts Options, runDir string, out io.Writer, detach bool) (*Machine, []string, error) {
	if opts.QMPSocket == "" {
		opts.QMPSocket = filepath.Join(runDir, "qmp.sock")
	}
	if opts.GuestAgentSocket == "" {
		opts.GuestAgentSocket = filepath.Join(runDir, "qga.sock")
	}
	argv, err := Command(def, opts)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range def.Disks {
		file := d.File
		if dr, ok := opts.Drives[d.Name]; ok {
			file = dr.File
		}
		if _, err := os.Stat(file); err != nil {
			return nil, argv, fmt.Errorf("disk %s: %w", d.Name, err)
		}
	}
	m, err := Start(ctx, Process{Argv: argv, QMPSocket: opts.QMPSocket, Stdout: out, Stderr: out, Detach: detach})
	if err != nil {
		return nil, argv, err
	}
	m.GuestAgentSocket = opts.GuestAgentSocket
	return m, argv, nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
