package quiesce

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"lifeboat/internal/secretenv"
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
// an error carrying the script's last output lines, which may end up in a
// point's notes: so the hook runs without lifeboat's secrets in its
// environment (secretenv), and any secret value it prints anyway is
// redacted from the error.
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
	env, secrets := secretenv.Split(os.Environ())
	cmd.Env = append(append(env, h.Env...), "LIFEBOAT_HOOK="+phase)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	// Redacted before it is cut, so no part of a secret survives the cut.
	tail := strings.TrimSpace(secretenv.Redact(out.String(), secrets))
	if len(tail) > 2000 {
		tail = "…" + tail[len(tail)-2000:]
	}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	msg := fmt.Sprintf("%s hook %q: %v", phase, h.Command, err)
	if tail != "" {
		msg += "; output:\n" + tail
	}
	return &hookError{msg: secretenv.Redact(msg, secrets), err: err}
}

// hookError is a hook's failure, with its message redacted; it unwraps to
// the cause (an exit status, a timeout, a cancelled context).
type hookError struct {
	msg string
	err error
}

func (e *hookError) Error() string { return e.msg }
func (e *hookError) Unwrap() error { return e.err }
