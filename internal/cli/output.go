package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"lifeboat/internal/job"
)

// Helpers for what many commands do alike.

// emit prints v as JSON with --json, else calls text.
func (a *app) emit(v any, text func()) error {
	if a.jsonOut {
		return a.printJSON(v)
	}
	text()
	return nil
}

// warn is a warning callback for the libraries.
func (a *app) warn(s string) { a.warnf("%s", s) }

// jobEnv is the job.Env of a command that only warns.
func (a *app) jobEnv() job.Env { return job.Env{Warn: a.warn} }

// logger logs as text on stderr, for the long-running commands.
func (a *app) logger() *slog.Logger { return slog.New(slog.NewTextHandler(a.env.Stderr, nil)) }

// foreground is ctx, ended by SIGINT or SIGTERM: a command that runs
// until stopped.
func foreground(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}
