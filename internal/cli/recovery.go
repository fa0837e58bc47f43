package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"lifeboat/internal/api"
	"lifeboat/internal/boot"
	"lifeboat/internal/job"
	"lifeboat/internal/mount"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Recovery commands: export (and, below, start, drill, mount). Flags and
// printing only; the work is in internal/job, pointdisk and boot.

func (a *app) exportCommand() *cobra.Command {
	var spec job.Export
	cmd := &cobra.Command{
		Use:     "export --machine NAME POINT|latest --nbd unix:PATH|HOST:PORT [--disk NAME] [--writable]",
		Short:   "Serve a recovery point's disks over NBD, read from the vault on demand",
		Long:    help("export"),
		Example: help("export.example"),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			spec.Point, spec.Vault = args[0], a.vaultURL
			v, err := a.openFor(ctx, spec.Machine, spec.Validate)
			if err != nil {
				return err
			}
			return job.RunExport(ctx, v, spec, a.jobEnv(), func(x *job.Exporting) {
				a.emit(x, func() {
					a.infof("serving point %s of %s (%d disk(s), ready in %d ms); stop with Ctrl-C\n", x.PointID[:12], x.Machine, len(x.Disks), x.ReadyMS)
					for _, d := range x.Disks {
						a.printf("%s\t%s\n", d.Name, d.URI)
					}
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Machine, "machine", "", "machine name (required)")
	f.StringVar(&spec.Listen, "nbd", "", "where to listen: unix:PATH or HOST:PORT (required)")
	f.StringVar(&spec.Disk, "disk", "", "export only this disk")
	f.BoolVar(&spec.Writable, "writable", false, "accept writes into a throwaway copy-on-write overlay (never the vault)")
	f.StringVar(&spec.OverlayDir, "overlay-dir", "", "with --writable: directory of the overlay files (default: the temporary directory)")
	f.IntVar(&spec.CacheMiB, "cache", 0, "MiB of decoded chunks cached per disk (default 64)")
	return cmd
}

// openFor checks the spec of a command on a point (--machine given, then
// validate) and opens its vault.
func (a *app) openFor(ctx context.Context, machine string, validate func() error) (*vault.Vault, error) {
	if machine == "" {
		return nil, usageError{errors.New("--machine is required")}
	}
	if err := validate(); err != nil {
		return nil, flagError(err)
	}
	return a.open(ctx)
}

func (a *app) startCommand() *cobra.Command {
	var defFile, runDir string
	var opts boot.Options
	var dryRun bool
	cmd := &cobra.Command{
		Use:     "start --definition FILE [--accel kvm|tcg] [--network none|user|bridge:NAME] [--vnc ADDR] [--serial-log FILE]",
		Short:   "Start a machine from its definition (the -dr one restore writes)",
		Long:    help("start"),
		Example: help("start.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if defFile == "" {
				return usageError{errors.New("--definition is required")}
			}
			def, _, err := readDefinition(defFile)
			if err != nil {
				return err
			}
			if dryRun {
				argv, err := boot.Command(def, opts)
				if err != nil {
					return usageError{err}
				}
				return a.emit(map[string]any{"argv": argv}, func() { a.printf("%s\n", boot.ShellQuote(argv)) })
			}
			err = boot.Run(ctx, def, opts, runDir, a.env.Stderr, func(m *boot.Machine) {
				a.emit(map[string]any{"machine": def.Name, "pid": m.PID, "qmp": m.QMPSocket, "guest_agent": m.GuestAgentSocket}, func() {
					a.printf("machine\t%s\npid\t%d\nqmp\t%s\nguest-agent\t%s\n", def.Name, m.PID, m.QMPSocket, m.GuestAgentSocket)
				})
			})
			if errors.Is(err, boot.ErrInvalid) {
				return usageError{err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&defFile, "definition", "", "the machine definition (JSON, lifeboat.machine/v1; required)")
	startFlags(f, &opts)
	f.StringVar(&runDir, "run-dir", "", "directory for the QMP and guest agent sockets (default: a new temporary one)")
	f.BoolVar(&dryRun, "dry-run", false, "print the QEMU command line and exit")
	return cmd
}

// readDefinition reads and parses the machine definition of --definition.
func readDefinition(file string) (*recovery.Definition, []byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, usageError{fmt.Errorf("reading --definition: %w", err)}
	}
	def, err := recovery.ParseDefinition(raw)
	if err != nil {
		return nil, nil, usageError{fmt.Errorf("%s: %w", file, err)}
	}
	return def, raw, nil
}

// startFlags are the flags of every command that starts a machine.
func startFlags(f *pflag.FlagSet, opts *boot.Options) {
	f.StringVar(&opts.Accel, "accel", "", "accelerator: kvm or tcg (default: kvm where available, else tcg)")
	f.StringVar(&opts.Network, "network", "none", "none, user or bridge:NAME")
	f.StringVar(&opts.VNC, "vnc", "", "show the display on VNC at this address (127.0.0.1:0 if none given)")
	f.Lookup("vnc").NoOptDefVal = "127.0.0.1:0"
	f.StringVar(&opts.SerialLog, "serial-log", "", "append the serial console to this file")
	f.StringVar(&opts.Kernel, "kernel", "", "boot this kernel directly")
	f.StringVar(&opts.Initrd, "initrd", "", "with --kernel: its initial ramdisk")
	f.StringVar(&opts.Append, "append", "", "with --kernel: its command line")
	f.StringVar(&opts.UEFICode, "uefi-code", "", "UEFI firmware for firmware uefi (default "+boot.DefaultUEFICode+")")
	f.StringVar(&opts.QEMU, "qemu", "", "the emulator (default "+boot.DefaultQEMU+")")
}

// instantFlags are restore's flags for an instant restore.
type instantFlags struct {
	instant, start, waitGuest, status bool
	speed                             string
	boot                              boot.Options
}

func (f *instantFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&f.instant, "instant", false, "with --to DIR and --start: start the machine at once from the vault, copy the data in the background")
	fs.StringVar(&f.speed, "stream-speed", "", "with --instant: bound the background copy of each disk (bytes/s: 50M)")
	fs.BoolVar(&f.status, "status", false, "with --instant --to DIR: show how far the copy into DIR has come, and exit")
	fs.BoolVar(&f.waitGuest, "wait-guest", false, "with --instant: also measure the time to the guest agent answering (answered_ms)")
	startFlags(fs, &f.boot)
}

// runInstant runs restore --instant --start.
func (a *app) runInstant(cmd *cobra.Command, f *instantFlags, spec job.InstantRestore) error {
	ctx := cmd.Context()
	if !f.start {
		return usageError{errors.New("--instant starts the machine: give --start too")}
	}
	for _, name := range []string{"disk", "to-file", "in-place", "format", "server"} {
		if cmd.Flags().Changed(name) {
			return usageError{fmt.Errorf("--%s does not go with --instant (which restores every disk into --to DIR as qcow2)", name)}
		}
	}
	if f.speed != "" {
		n, err := parseSize(f.speed)
		if err != nil {
			return usageError{fmt.Errorf("--stream-speed: %w", err)}
		}
		spec.StreamSpeed = int64(n)
	}
	spec.WaitGuest = f.waitGuest
	spec.Boot = job.BootOf(f.boot)
	if spec.Boot.SerialLog != "" {
		spec.Boot.SerialLog = absPath(spec.Boot.SerialLog)
	}
	if err := spec.Validate(); err != nil {
		return flagError(err)
	}
	v, err := a.open(ctx)
	if err != nil {
		return err
	}
	pb := newBar(a.env.Stderr, "copy "+spec.Machine, !a.quiet && !a.jsonOut)
	start := a.env.Clock.Now()
	res, err := job.RunInstantRestore(ctx, v, spec, a.jobEnv(), job.InstantHooks{
		Started: func(in *job.Instant) {
			if a.quiet || a.jsonOut {
				return
			}
			what := "started"
			if in.Resumed {
				what = "resuming the copy of"
			}
			fmt.Fprintf(a.env.Stderr, "%s machine %s (pid %d) from point %s in %d ms; copying its disks into %s\n",
				what, in.Machine, in.PID, in.Point[:12], in.StartedMS, spec.Dir)
			fmt.Fprintf(a.env.Stderr, "qmp %s, guest agent %s, definition %s\n", in.QMP, in.GuestAgent, in.Definition)
		},
		Progress: func(p boot.StreamProgress) {
			pb.Update(p.DoneBytes, p.TotalBytes, a.env.Clock.Now().Sub(start), false)
		},
	})
	if err != nil {
		if res != nil && res.PID != 0 {
			a.warnf("the machine (pid %d) keeps running; its disks still read from the vault: run the same command again to finish the copy", res.PID)
		}
		return err
	}
	pb.Update(1, 1, a.env.Clock.Now().Sub(start), true)
	return a.emit(res, func() {
		if !a.quiet {
			if res.AnsweredMS > 0 {
				fmt.Fprintf(a.env.Stderr, "the guest agent answered after %s, with %s of %s copied\n",
					(time.Duration(res.AnsweredMS) * time.Millisecond).Round(time.Millisecond), size(res.AnsweredCopied), size(res.Size))
			}
			fmt.Fprintf(a.env.Stderr, "copy done in %s: the machine no longer needs the vault\n", (time.Duration(res.CopiedMS) * time.Millisecond).Round(time.Millisecond))
		}
		for name, img := range res.Images {
			a.printf("%s\t%s\n", name, img)
		}
		a.printf("definition\t%s\npid\t%d\nqmp\t%s\nguest-agent\t%s\n", res.Definition, res.PID, res.QMP, res.GuestAgent)
	})
}

func (a *app) drillCommand() *cobra.Command {
	var spec job.Drill
	var opts boot.Options
	var timeout time.Duration
	var rem remote
	var agentName string
	var wait bool
	cmd := &cobra.Command{
		Use:     "drill --machine NAME [POINT|latest] [--probe CMD | --probe-serial REGEX] [--timeout 5m]",
		Short:   "Prove a point: boot it in a sandbox, wait for the guest, record the result",
		Long:    help("drill"),
		Example: help("drill.example"),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			spec.Point, spec.Vault, spec.Timeout = "latest", a.vaultURL, job.Duration(timeout)
			if len(args) == 1 {
				spec.Point = args[0]
			}
			if spec.Machine == "" {
				return usageError{errors.New("--machine is required")}
			}
			spec.Boot = job.BootOf(opts)
			if err := spec.Boot.ForDrill(); err != nil {
				return flagError(err)
			}
			if rem.server != "" {
				// On an agent's host: paths are as that host sees them.
				body := api.DrillJSON{Point: spec.Point, Agent: agentName, Probe: spec.Probe, ProbeSerial: spec.ProbeSerial,
					Timeout: spec.Timeout, Boot: spec.Boot}
				return a.queueAndWait(ctx, &rem, "/v1/machines/"+url.PathEscape(spec.Machine)+"/drill", body, wait)
			}
			v, err := a.openFor(ctx, spec.Machine, spec.Validate)
			if err != nil {
				return err
			}
			res, err := job.RunDrill(ctx, v, spec, a.jobEnv())
			if res == nil {
				return err
			}
			a.emit(res, func() {
				if res.OK {
					a.printf("point %s of %s proven: the guest answered (%s) after %.1f s (machine running after %.1f s)\n",
						res.Point[:12], res.Machine, res.Probe, float64(res.RTOMS)/1000, float64(res.BootMS)/1000)
				} else {
					a.printf("point %s of %s NOT proven: %s\n", res.Point[:12], res.Machine, res.Error)
				}
			})
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Machine, "machine", "", "machine name (required)")
	f.StringVar(&spec.Probe, "probe", "", "shell command that succeeds once the guest answers")
	f.StringVar(&spec.ProbeSerial, "probe-serial", "", "regular expression a serial console line must match")
	f.DurationVar(&timeout, "timeout", job.DefaultDrillTimeout, "how long the guest has to answer")
	startFlags(f, &opts)
	rem.addServerFlags(f, "run the drill through this lifeboat server, on an agent's host (see --agent)", &wait)
	f.StringVar(&agentName, "agent", "", "with --server: the host that boots the sandbox (default: the machine's agent)")
	return cmd
}

// instantStatus prints how far the instant restore into dir has come.
func (a *app) instantStatus(dir string) error {
	if dir == "" {
		return usageError{errors.New("--status needs --to DIR, the instant restore's directory")}
	}
	st, err := job.ReadInstantStatus(dir)
	if err != nil {
		return err
	}
	return a.emit(st, func() {
		a.printf("%s point %s into %s: %s of %s copied (%.0f%%), %s\n", st.Machine, st.Point[:12], st.Dir, size(st.DoneBytes), size(st.TotalBytes),
			st.Percent(), st.StateText())
		a.printf("machine pid %d: %s\n", st.PID, map[bool]string{true: "running", false: "not running"}[st.MachineRunning])
	})
}

func (a *app) mountCommand() *cobra.Command {
	var spec job.Mount
	cmd := &cobra.Command{
		Use:     "mount --machine NAME POINT|latest DIR",
		Short:   "Show a point's disks as read-only files and mount their file systems",
		Long:    help("mount"),
		Example: help("mount.example"),
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			spec.Point, spec.Dir, spec.Vault = args[0], absPath(args[1]), a.vaultURL
			v, err := a.openFor(ctx, spec.Machine, spec.Validate)
			if err != nil {
				return err
			}
			return job.RunMount(ctx, v, spec, a.jobEnv(), func(p *recovery.Point, fs *mount.FS) {
				a.emit(map[string]any{"point": p.ID.String(), "disks": fs.Disks, "mounted": fs.Mounted, "skipped": fs.Skipped}, func() {
					for name, file := range fs.Disks {
						a.printf("disk\t%s\t%s\n", name, file)
					}
					for dir, typ := range fs.Mounted {
						a.printf("%s\t%s\n", typ, dir)
					}
					a.infof("point %s of %s mounted on %s; stop with Ctrl-C or lifeboat umount %s\n", p.ID.Short(), p.Machine, fs.Dir, fs.Dir)
				})
			})
		},
	}
	cmd.Flags().StringVar(&spec.Machine, "machine", "", "machine name (required)")
	return cmd
}

func (a *app) umountCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "umount DIR",
		Short: "Undo lifeboat mount DIR (also after a mount that was killed)",
		Long:  help("umount"),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mount.Cleanup(cmd.Context(), absPath(args[0]))
		},
	}
}
