package boot

import (
	"context"
	"io"
	"os"
	"strings"
	"time"

	"lifeboat/internal/recovery"
)

// Run launches def as Launch does and waits until the machine stops, or
// until ctx ends, when it asks QEMU to quit (a power cut for the guest)
// and waits up to 30 s for it. With runDir "" the sockets go in a new
// temporary directory, removed at the end. started is called once the
// machine runs.
func Run(ctx context.Context, def *recovery.Definition, opts Options, runDir string, out io.Writer, started func(*Machine)) error {
	if runDir == "" {
		dir, err := os.MkdirTemp("", "lifeboat-"+def.Name+"-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		runDir = dir
	}
	m, _, err := Launch(ctx, def, opts, runDir, out, false)
	if err != nil {
		return err
	}
	started(m)
	select {
	case <-m.Done():
		return m.Err()
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return m.Stop(sctx)
	}
}

// ShellQuote joins argv as a shell would read it back.
func ShellQuote(argv []string) string {
	out := make([]string, len(argv))
	for i, s := range argv {
		if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,@+") == "" {
			out[i] = s
			continue
		}
		out[i] = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
