package quiesce

import (
	"fmt"
	"io"
	"os"
	"os/exec"
)

// Watchdog is a helper process that undoes a freeze if lifeboat dies:
// it waits for its standard input to close (which happens when lifeboat
// exits, however it exits) and then thaws.
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
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting thaw watchdog: %w", err)
	}
	return &Watchdog{cmd: cmd, in: in}, nil
}

// tell sends the watchdog one line; a nil watchdog ignores it. A failed
// write means the watchdog is gone: the freeze goes on without it.
func (w *Watchdog) tell(line string) {
	if w == nil {
		return
	}
	io.WriteString(w.in, line+"\n")
}

// Stop lets the watchdog thaw (again: thawing what is thawed is harmless)
// and waits for it.
func (w *Watchdog) Stop() error {
	w.in.Close()
	if err := w.cmd.Wait(); err != nil {
		return fmt.Errorf("thaw watchdog: %w", err)
	}
	return nil
}
