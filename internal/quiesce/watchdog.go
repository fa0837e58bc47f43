package quiesce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"lifeboat/internal/secretenv"
)

// Watchdog is a helper process that undoes a freeze if lifeboat dies: it
// waits for its standard input to close (which happens when lifeboat
// exits, however it exits) and then thaws what lifeboat announced it was
// freezing (RunWatchdog).
//
// It runs in a session of its own, so that killing lifeboat's process
// group (a service manager's stop, `timeout -s KILL`, `kill -- -PGID`)
// leaves it alive to thaw; it never outlives the freeze it guards, since
// it exits once its input closes or its timeout passes.
type Watchdog struct {
	cmd *exec.Cmd
	in  io.WriteCloser
}

// StartWatchdog runs exe with args as a watchdog.
func StartWatchdog(exe string, args ...string) (*Watchdog, error) {
	cmd := exec.Command(exe, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting thaw watchdog: %w", err)
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// It may outlive lifeboat: it needs none of lifeboat's secrets.
	cmd.Env, _ = secretenv.Split(os.Environ())
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting thaw watchdog: %w", err)
	}
	return &Watchdog{cmd: cmd, in: in}, nil
}

// Arm tells the watchdog that item (a mount point, the guest) is about to
// be frozen: it thaws item if lifeboat dies. Arm before freezing: a parent
// dying between the two leaves the watchdog thawing what is not frozen,
// which is harmless; the other order could leave it frozen. A nil
// watchdog ignores it; a failed write means the watchdog is gone, and the
// freeze goes on without it.
func (w *Watchdog) Arm(item string) { w.tell("+" + item) }

// Disarm tells the watchdog not to thaw item: its freeze failed (it may be
// someone else's), or lifeboat has thawed it itself.
func (w *Watchdog) Disarm(item string) { w.tell("-" + item) }

func (w *Watchdog) tell(line string) {
	if w == nil {
		return
	}
	io.WriteString(w.in, line+"\n")
}

// Stop lets the watchdog thaw what is still armed and waits for it.
func (w *Watchdog) Stop() error {
	w.in.Close()
	if err := w.cmd.Wait(); err != nil {
		return fmt.Errorf("thaw watchdog: %w", err)
	}
	return nil
}

// RunWatchdog is the body of a watchdog process. Its parent tells it, one
// line on standard input each, "+ITEM" before freezing ITEM and "-ITEM"
// when the watchdog must leave ITEM alone (Arm, Disarm). When the input
// closes (the parent finished or died), timeout passes, or ctx ends (the
// watchdog is told to stop, as a service manager does when it stops the
// whole unit), it calls thaw for each item armed and not disarmed: never
// for a filesystem that another tool froze. Then it returns: a watchdog
// with nothing armed exits as soon as its parent is gone.
func RunWatchdog(ctx context.Context, stdin io.Reader, timeout time.Duration, thaw func(context.Context, string) error) error {
	var mu sync.Mutex
	var items []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			line := sc.Text()
			if len(line) < 2 {
				continue
			}
			mu.Lock()
			switch line[0] {
			case '+':
				items = append(items, line[1:])
			case '-':
				items = slices.DeleteFunc(items, func(m string) bool { return m == line[1:] })
			}
			mu.Unlock()
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	var errs []error
	for _, it := range items {
		if err := thaw(context.WithoutCancel(ctx), it); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
