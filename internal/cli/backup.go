package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/backup"
	"lifeboat/internal/job"
	"lifeboat/internal/live"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/recovery"
)

func (a *app) backupCommand() *cobra.Command {
	var spec job.Backup
	var disks []string
	var definition string
	cmd := &cobra.Command{
		Use:     "backup --machine NAME (--disk PATH [--disk PATH ...] | --qmp SOCKET | --libvirt DOMAIN)",
		Short:   "Back up every disk of a machine as one recovery point",
		Long:    help("backup"),
		Example: help("backup.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBackup(cmd.Context(), spec, disks, definition)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Machine, "machine", "", "machine name (required)")
	f.StringArrayVar(&disks, "disk", nil, "disk to back up: PATH or NAME=PATH (repeat for each disk)")
	f.StringVar(&definition, "definition", "", "machine definition JSON file (schema lifeboat.machine/v1)")
	f.StringVar(&spec.Consistency, "consistency", "crash", "consistency wanted: crash, file or app")
	f.BoolVar(&spec.RequireConsistency, "require-consistency", false, "exit 10 when the point written is less consistent than --consistency asked")
	f.StringVar(&spec.PreHook, "pre-hook", "", "shell command run before the snapshot instant (--consistency app)")
	f.StringVar(&spec.PostHook, "post-hook", "", "shell command run after the snapshot instant (--consistency app)")
	f.DurationVar((*time.Duration)(&spec.HookTimeout), "hook-timeout", job.DefaultHookTimeout, "longest a hook may run")
	f.DurationVar((*time.Duration)(&spec.FreezeTimeout), "freeze-timeout", job.DefaultFreezeTimeout, "longest the filesystems may stay frozen")
	f.Float64Var(&spec.Audit, "audit", 0, "fraction (0-1) of blocks change tracking calls unchanged to re-read and compare")
	f.StringArrayVar(&spec.Tags, "tag", nil, "tag the point (repeatable)")
	f.StringVar(&spec.QMP, "qmp", "", "QMP socket of a running QEMU machine: back up its disks live")
	f.StringVar(&spec.GuestAgent, "guest-agent", "", "QEMU guest agent socket, for --qmp with --consistency file or app")
	f.StringVar(&spec.Bitmap, "bitmap", "", "dirty bitmap of the NBD --disk servers that records changes since the last point")
	f.StringVar(&spec.FleeceDir, "fleece-dir", "", "directory for --qmp's temporary overlays or --libvirt's scratch images (default: one in $TMPDIR)")
	f.StringVar(&spec.NBDServer, "nbd-server", "", "unix:PATH of an NBD server the --qmp machine's QEMU already runs for others: the backup adds its exports there")
	f.StringVar(&spec.Libvirt, "libvirt", "", "libvirt domain to back up through libvirt's backup API")
	f.StringVar(&spec.Connect, "connect", "", "libvirt daemon URI for --libvirt (default qemu:///system)")
	return cmd
}

func (a *app) runBackup(ctx context.Context, spec job.Backup, disks []string, definition string) error {
	if spec.Machine == "" {
		return usageError{errors.New("--machine is required")}
	}
	spec.Vault, spec.QMP, spec.GuestAgent = a.vaultURL, absPath(spec.QMP), absPath(spec.GuestAgent)
	if spec.FreezeTimeout <= 0 || spec.HookTimeout <= 0 {
		return usageError{errors.New("--freeze-timeout and --hook-timeout must be positive")}
	}
	var def *recovery.Definition
	if definition != "" {
		var err error
		if def, spec.Definition, err = readDefinition(definition); err != nil {
			return err
		}
	}
	if err := spec.SetDisks(disks, def); err != nil {
		var ie *job.InvalidError
		if errors.As(err, &ie) {
			return usageError{errors.New(ie.Reason)}
		}
		return err
	}
	if err := spec.Validate(); err != nil {
		var ie *job.InvalidError
		if errors.As(err, &ie) && ie.Field == "definition" {
			return usageError{fmt.Errorf("%s: %s", definition, ie.Reason)}
		}
		return flagError(err)
	}
	v, err := a.open(ctx)
	if err != nil {
		return err
	}
	exe, err := a.executable()
	if err != nil {
		return err
	}
	pb := newBar(a.env.Stderr, "backup "+spec.Machine, !a.quiet)
	p, err := job.RunBackup(ctx, v, spec, job.Env{Executable: exe, Seen: a.book(),
		Warn:     func(s string) { a.warnf("%s", s) },
		Progress: func(p backup.Progress) { pb.Update(p.DoneBytes, p.TotalBytes, p.Elapsed, p.Final) }})
	if p == nil {
		return flagError(err)
	}
	if rerr := a.reportPoint(spec.Machine, p); rerr != nil {
		return rerr
	}
	return err // a point less consistent than required
}

var absPath = job.AbsPath

// specFlags names the flag behind each field of a job spec; "" says the
// reason stands alone.
var specFlags = map[string]string{"machine": "--machine", "point": "POINT", "disks": "--disk", "disk": "--disk", "consistency": "--consistency",
	"pre_hook": "--pre-hook", "post_hook": "--post-hook", "hook_timeout": "--hook-timeout", "freeze_timeout": "--freeze-timeout",
	"audit": "--audit", "fleece_dir": "--fleece-dir", "nbd_server": "--nbd-server", "bitmap": "--bitmap", "qmp": "--qmp", "guest_agent": "--guest-agent",
	"definition": "--definition", "libvirt": "--libvirt", "connect": "--connect", "dir": "", "file": "--to-file",
	"libvirt_define": "--libvirt-define", "start": "--start", "name": "--name", "listen": "--nbd", "overlay_dir": "--overlay-dir", "cache_mib": "--cache"}

// flagError turns a job spec's invalid field into a usage error naming
// the flag; other errors pass.
func flagError(err error) error {
	var ie *job.InvalidError
	if !errors.As(err, &ie) {
		return err
	}
	field, _, _ := strings.Cut(ie.Field, "[")
	field, _, _ = strings.Cut(field, ".")
	if field == "vault" {
		return usageError{errors.New("no vault given: use --vault or set LIFEBOAT_VAULT")}
	}
	if flag := specFlags[field]; flag != "" {
		return usageError{fmt.Errorf("%s: %s", flag, ie.Reason)}
	}
	return usageError{errors.New(ie.Reason)}
}

// reportPoint prints a new point: its ID on stdout (or JSON), a summary
// and any notes on stderr.
func (a *app) reportPoint(machine string, p *recovery.Point) error {
	for _, n := range p.Notes {
		a.warnf("%s", n)
	}
	return a.emit(pointJSON(p), func() {
		if !a.quiet {
			fmt.Fprintf(a.env.Stderr, "point %s of %s (%s-consistent): %d disk(s), %s, %s new, %s stored in %s\n", p.ID.Short(), machine,
				p.Consistency, len(p.Disks), size(p.Size()), size(pointJSON(p).NewBytes()), size(p.Stats.StoredBytes), time.Duration(p.Stats.DurationMS)*time.Millisecond)
		}
		a.printf("%s\n", p.ID)
	})
}

// watchdogCommand is the hidden helper process quiesce.Freeze and live
// start: it thaws what they announce on its stdin when lifeboat exits (its
// stdin closes), the freeze times out, or it gets SIGTERM.
func (a *app) watchdogCommand() *cobra.Command {
	var timeout time.Duration
	var agent, domain, connect string
	var mounts bool
	cmd := &cobra.Command{
		Use:    "__thaw-watchdog --timeout D (--mounts-on-stdin | --guest-agent SOCKET | --libvirt DOMAIN [--connect URI])",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case mounts && agent == "":
				return quiesce.WatchdogMain(cmd.Context(), os.Stdin, timeout)
			case agent != "" && !mounts && domain == "":
				return live.GuestWatchdogMain(cmd.Context(), os.Stdin, timeout, agent)
			case domain != "" && !mounts && agent == "":
				return live.LibvirtWatchdogMain(cmd.Context(), os.Stdin, timeout, connect, domain)
			}
			return usageError{errors.New("want one of --mounts-on-stdin, --guest-agent and --libvirt")}
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "thaw after this long")
	cmd.Flags().StringVar(&agent, "guest-agent", "", "thaw the guest through this agent socket (when +guest is announced on stdin)")
	cmd.Flags().StringVar(&domain, "libvirt", "", "thaw this libvirt domain through libvirt (when +guest is announced on stdin)")
	cmd.Flags().StringVar(&connect, "connect", "", "libvirt daemon URI for --libvirt")
	cmd.Flags().BoolVar(&mounts, "mounts-on-stdin", false, "thaw the mounts announced on stdin (+MOUNT, -MOUNT)")
	return cmd
}

// executable is lifeboat's own binary, which thaw watchdogs re-run.
func (a *app) executable() (string, error) {
	if a.env.Executable != "" {
		return a.env.Executable, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding lifeboat's own path for the thaw watchdog: %w", err)
	}
	return exe, nil
}
