package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"lifeboat/internal/bytesize"
	"lifeboat/internal/job"
	"lifeboat/internal/progressbar"
	"lifeboat/internal/vault"
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

// table prints items under header, a line each: row's cells separated
// by tabs, aligned.
func table[T any](a *app, header string, items []T, row func(T) string) {
	w := tabwriter.NewWriter(a.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, it := range items {
		fmt.Fprintln(w, row(it))
	}
	w.Flush()
}

// newBar is a progress bar on a terminal (internal/progressbar).
var newBar = progressbar.New

// size formats a byte count in binary units.
var size = bytesize.Format

// infof prints a progress line on stderr unless --quiet.
func (a *app) infof(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.env.Stderr, format, args...)
	}
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

// withVault is a RunE that opens the vault (--vault and the passphrase)
// and runs run on it.
func (a *app) withVault(run func(ctx context.Context, v *vault.Vault, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		v, err := a.open(cmd.Context())
		if err != nil {
			return err
		}
		return run(cmd.Context(), v, args)
	}
}
