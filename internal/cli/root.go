// Package cli is the lifeboat command line. It is a library so that tests
// run commands in-process: Main(ctx, args, stdin, stdout, stderr) returns
// the exit code.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"lifeboat/internal/bytesize"
	"lifeboat/internal/clock"
	"lifeboat/internal/indexcache"
	"lifeboat/internal/lastseen"
	"lifeboat/internal/location"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Env is what a command runs with; tests replace any part.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Clock          clock.Clock
	// KDF overrides the key-slot cost for new slots (tests use a cheap one).
	KDF *vault.Options
	// Executable is lifeboat's own binary, re-run for helper processes
	// (the thaw watchdog); empty means os.Executable().
	Executable string
}

type app struct {
	env          Env
	vaultURL     string
	passwordFile string
	jsonOut      bool
	quiet        bool
	cacheDir     string
}

// Main runs lifeboat with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Stdout == nil {
		env.Stdout = os.Stdout
	}
	if env.Stderr == nil {
		env.Stderr = os.Stderr
	}
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Clock == nil {
		env.Clock = clock.Real{}
	}
	a := &app{env: env}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err != nil {
		code := ExitCode(err)
		if a.jsonOut {
			json.NewEncoder(env.Stdout).Encode(map[string]any{"error": err.Error(), "exit_code": code})
		}
		fmt.Fprintf(env.Stderr, "lifeboat: %v\n", err)
		return code
	}
	return ExitOK
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "lifeboat",
		Short:         "Backup and disaster recovery for virtual machine disks",
		Long:          help("lifeboat"),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			if a.vaultURL == "" {
				a.vaultURL = a.env.Getenv("LIFEBOAT_VAULT")
			}
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.vaultURL, "vault", "", "vault location: a directory, s3://bucket/prefix or lifeboat+https://host:port (env LIFEBOAT_VAULT)")
	pf.StringVar(&a.passwordFile, "password-file", "", "read the passphrase from this file (env LIFEBOAT_PASSWORD_FILE; LIFEBOAT_PASSWORD gives it directly)")
	pf.BoolVar(&a.jsonOut, "json", false, "print machine-readable JSON on stdout")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "no progress output")
	pf.StringVar(&a.cacheDir, "cache-dir", "", "local index cache directory, or \"off\" (env LIFEBOAT_CACHE_DIR; default $XDG_CACHE_HOME/lifeboat or ~/.cache/lifeboat; docs/indexcache.md)")
	root.AddCommand(a.vaultCommand(), a.backupCommand(), a.pointsCommand(), a.restoreCommand(),
		a.verifyCommand(), a.forgetCommand(), a.undeleteCommand(), a.pruneCommand(), a.watchdogCommand(),
		a.serverCommand(), a.tierCommand(), a.policyCommand(), a.machineCommand(), a.protectCommand(),
		a.backupNowCommand(), a.jobCommand(), a.alertCommand(), a.agentCommand(), a.tokenCommand(),
		a.exportCommand(), a.startCommand(), a.drillCommand(), a.mountCommand(), a.umountCommand(), a.libvirtCommand())
	root.AddCommand(a.replicaCommand(), a.siteCommand(), a.replicateCommand(), a.failoverCommand(), a.reprotectCommand(), a.failbackCommand())
	return root
}

// passphrase is location.Passphrase of --password-file and the environment.
func (a *app) passphrase() ([]byte, error) {
	return location.Passphrase(a.passwordFile, "--password-file", a.env.Getenv, a.warn)
}

func (a *app) options() vault.Options {
	o := vault.Options{Clock: a.env.Clock, Warn: func(s string) { a.warnf("%s", s) }, CacheDir: indexcache.Dir(a.cacheDir, a.env.Getenv)}
	// Without a state directory book() warns; here it is enough to skip.
	if b, err := lastseen.FromEnv(a.env.Getenv); err == nil {
		o.Keys = b
	}
	if a.env.KDF != nil {
		o.KDF = a.env.KDF.KDF
	}
	return o
}

// open opens the vault named by --vault; a missing or newer vault is
// reported before the passphrase is asked for.
func (a *app) open(ctx context.Context) (*vault.Vault, error) {
	store, err := location.Existing(ctx, a.vaultURL, a.env.Getenv)
	if err != nil {
		return nil, err
	}
	pw, err := a.passphrase()
	if err != nil {
		return nil, err
	}
	return vault.Open(ctx, store, pw, a.options())
}

// book is this host's record of the newest points seen in each vault
// (internal/lastseen); nil, with a warning, without a state directory.
func (a *app) book() *lastseen.Book {
	b, err := lastseen.FromEnv(a.env.Getenv)
	if err != nil {
		a.warnf("%v", err)
	}
	return b
}

// checkSeen warns of points of v this host saw that have vanished.
func (a *app) checkSeen(v *vault.Vault, points []*recovery.Point) {
	for _, w := range a.book().CheckPoints(v.Config().ID, points, a.env.Clock.Now()) {
		a.warnf("%s: %s", v.Store(), w)
	}
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) printf(format string, args ...any) {
	fmt.Fprintf(a.env.Stdout, format, args...)
}

func (a *app) warnf(format string, args ...any) {
	fmt.Fprintf(a.env.Stderr, "lifeboat: warning: "+format+"\n", args...)
}

var parseSize = bytesize.Parse
