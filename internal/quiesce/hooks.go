package quiesce

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Hook is an operator's script run before (pre) or after (post) the
// snapshot instant, to make applications consistent (app consistency):
// flush and lock a database before, unlock after.
type Hook struct {
	Command string        // run by /bin/sh -c
	Timeout time.Duration // 0: 5 minutes
	Env     []string      // added to the environment (LIFEBOAT_MACHINE=..., ...)
}

// Run runs the hook. A non-zero exit, a timeout or a failure to start is
// an error carrying the script's last output lines.
func (h Hook) Run(ctx context.Context, phase string) error {
	if h.Command == "" {
		return nil
	}
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", h.Command)
	cmd.Env = append(append(os.Environ(), h.Env...), "LIFEBOAT_HOOK="+phase)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	tail := strings.TrimSpace(out.String())
	if len(tail) > 2000 {
		tail = "…" + tail[len(tail)-2000:]
	}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	if tail != "" {
		return fmt.Errorf("%s hook %q: %w; output:\n%s", phase, h.Command, err, tail)
	}
	return fmt.Errorf("%s hook %q: %w", phase, h.Command, err)
}
