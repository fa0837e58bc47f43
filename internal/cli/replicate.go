package cli

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/lastseen"
	"lifeboat/internal/replica"
	"lifeboat/internal/replicate"
)

// Continuous replication and failover (docs/replication.md): flags and
// printing only; internal/replica is the target, internal/replicate the
// source.

func (a *app) replicationConfig() (*replicate.Config, error) {
	dir, err := lastseen.Dir(a.env.Getenv)
	if err != nil {
		return nil, err
	}
	return replicate.OpenConfig(dir), nil
}

// withReplication is a RunE that runs run with this host's replication
// settings.
func (a *app) withReplication(run func(cmd *cobra.Command, args []string, cfg *replicate.Config) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cfg, err := a.replicationConfig()
		if err != nil {
			return err
		}
		return run(cmd, args, cfg)
	}
}

// siteClient is the client of machine's site (its target, or site),
// --machine required.
func (a *app) siteClient(machine, site string) (*replicate.Client, error) {
	if machine == "" {
		return nil, usageError{errors.New("--machine is required")}
	}
	cfg, err := a.replicationConfig()
	if err != nil {
		return nil, err
	}
	cl, err := cfg.ClientFor(machine, site)
	return cl, err
}

func (a *app) replicaCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "replica", Short: "Serve replicas at a target site"}
	var rs replicate.ReplicaServer
	serve := &cobra.Command{
		Use:     "serve --listen ADDR --dir DIR --token-file F [--cert F --key F]",
		Short:   "Receive continuous replication and run failovers at this site",
		Long:    help("replica-serve"),
		Example: help("replica-serve.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := foreground(cmd.Context())
			defer stop()
			return rs.Serve(ctx, a.env.Clock, a.logger())
		},
	}
	f := serve.Flags()
	f.StringVar(&rs.Listen, "listen", "", "address to listen on, host:port")
	f.StringVar(&rs.Dir, "dir", "", "directory of the replicas and their history")
	f.StringVar(&rs.TokenFile, "token-file", "", "file holding the site token sources must present")
	f.StringVar(&rs.CertFile, "cert", "", "TLS certificate (PEM)")
	f.StringVar(&rs.KeyFile, "key", "", "TLS private key (PEM)")
	f.StringVar(&rs.SeedDir, "seed-dir", "", "directory whose images sources may name as seeds (replicate --seed), for re-protection")
	cmd.AddCommand(serve)
	return cmd
}

func (a *app) siteCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "site", Short: "Name the target sites machines replicate to"}
	var s replicate.Site
	add := &cobra.Command{
		Use:     "add NAME --url URL --token-file F [--ca F]",
		Short:   "Name a target site (its replica server)",
		Long:    help("site-add"),
		Example: help("site-add.example"),
		Args:    cobra.ExactArgs(1),
		RunE: a.withReplication(func(cmd *cobra.Command, args []string, cfg *replicate.Config) error {
			s.Name = args[0]
			if err := cfg.AddSite(s); err != nil {
				return err
			}
			return a.emit(s, func() { a.printf("site %s is %s\n", s.Name, s.URL) })
		}),
	}
	add.Flags().StringVar(&s.URL, "url", "", "the site's replica server, https://host:port")
	add.Flags().StringVar(&s.TokenFile, "token-file", "", "file holding the site token")
	add.Flags().StringVar(&s.CA, "ca", "", "CA certificate (PEM) the site's certificate is checked against")
	list := &cobra.Command{
		Use: "list", Short: "List the target sites", Args: cobra.NoArgs,
		RunE: a.withReplication(func(cmd *cobra.Command, args []string, cfg *replicate.Config) error {
			sites, err := cfg.Sites()
			if err != nil {
				return err
			}
			return a.emit(sites, func() {
				for _, s := range sites {
					a.printf("%s\t%s\n", s.Name, s.URL)
				}
			})
		}),
	}
	cmd.AddCommand(add, list)
	return cmd
}

// machineFlags are replicate enable's (and replicate run's) settings.
type machineFlags struct {
	m          replicate.Machine
	definition string
	seeds      []string
}

func (mf *machineFlags) add(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&mf.m.Name, "machine", "", "the machine's name")
	f.StringVar(&mf.m.QMP, "qmp", "", "the machine's QMP unix socket (qemu-system or qemu-storage-daemon)")
	f.StringVar(&mf.m.GuestAgent, "guest-agent", "", "the guest agent's unix socket, for app-consistent points")
	f.StringVar(&mf.m.Target, "target", "", "the target site (lifeboat site add)")
	f.DurationVar(&mf.m.Policy.Retention, "retention", 24*time.Hour, "how long recovery points are kept")
	f.DurationVar(&mf.m.Policy.CrashInterval, "crash-interval", 5*time.Minute, "spacing of crash-consistent points (the latest cut is always a point)")
	f.DurationVar(&mf.m.Policy.AppInterval, "app-interval", 0, "spacing of app-consistent points, the guest frozen through its agent (0: none)")
	f.DurationVar(&mf.m.Every, "every", replicate.DefaultEvery, "how often a consistent cut is taken and shipped (the RPO is about this)")
	f.StringVar(&mf.definition, "definition", "", "machine definition JSON file to fail over with (default: read from the running machine)")
	f.StringArrayVar(&mf.seeds, "seed", nil, "DISK=IMAGE: start the replica of DISK from IMAGE on the target site's host (re-protection; repeatable)")
	f.StringVar(&mf.m.Capture, "capture", "", "how writes are captured: mirror (the default: QEMU's write-blocking mirror into the source journal, shipped as it fills, an RPO under a second; falls back to bitmap cuts while the mirror cannot run) or bitmap (a dirty-bitmap cut every --every)")
	f.Int64Var(&mf.m.JournalLimit, "journal-limit", replicate.DefaultJournalLimit, "mirror capture: the most unshipped bytes the source journal holds (a WAN outage); past it, bitmap cuts stand in until the mirror starts again")
	f.StringVar(&mf.m.NBDServer, "nbd-server", "", "unix:PATH of an NBD server the machine's QEMU already runs for others: lifeboat adds its exports there instead of starting QEMU's NBD server")
	f.StringVar(&mf.m.PreHook, "pre-hook", "", "shell command run before the guest is frozen for an app-consistent cut (flush and lock the application); if it fails the cut is crash-consistent")
	f.StringVar(&mf.m.PostHook, "post-hook", "", "shell command run after the app-consistent cut, once the guest is thawed; it always runs")
	f.DurationVar(&mf.m.HookTimeout, "hook-timeout", 0, "the most each hook may run (default 5m)")
	f.StringVar(&mf.m.Group, "group", "", "replication group: its members' cuts are taken together, and fail over together (replicate run --group); with mirror capture on every member (the default), each group cut is one instant across their journals, never retried")
}

func (mf *machineFlags) machine() (replicate.Machine, error) {
	m := mf.m
	err := m.Load(mf.definition, mf.seeds)
	return m, err
}

func (a *app) replicateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "replicate", Short: "Replicate machines continuously to a target site"}
	var ef machineFlags
	var enableRemote remote
	var enableAgent string
	enable := &cobra.Command{
		Use:     "enable --machine NAME --qmp SOCKET --target SITE",
		Short:   "Protect a machine by continuous replication",
		Long:    help("replicate-enable"),
		Example: help("replicate-enable.example"),
		Args:    cobra.NoArgs,
		RunE: a.withReplication(func(cmd *cobra.Command, args []string, cfg *replicate.Config) error {
			m, err := ef.machine()
			if err != nil {
				return err
			}
			if enableRemote.server != "" || enableRemote.tokenFile != "" {
				return a.serverEnableReplication(cmd, &enableRemote, enableAgent, m)
			}
			if err := cfg.Enable(m); err != nil {
				return err
			}
			if !a.quiet {
				a.printf("machine %s replicates to %s once lifeboat replicate run runs\n", m.Name, m.Target)
			}
			return nil
		}),
	}
	ef.add(enable)
	a.addRemoteFlags(enable, &enableRemote)
	enable.Flags().StringVar(&enableAgent, "agent", "", "with --server: the agent whose host runs the machine")

	var rf machineFlags
	var stall time.Duration
	run := &cobra.Command{
		Use:     "run [--machine NAME [--qmp SOCKET --target SITE] | --group GROUP]",
		Short:   "Run the replication of this host's machines (foreground)",
		Long:    help("replicate-run"),
		Example: help("replicate-run.example"),
		Args:    cobra.NoArgs,
		RunE: a.withReplication(func(cmd *cobra.Command, args []string, cfg *replicate.Config) error {
			if rf.m.QMP != "" || rf.m.Target != "" {
				m, err := rf.machine()
				if err != nil {
					return err
				}
				if err := cfg.Enable(m); err != nil {
					return err
				}
			}
			ctx, stop := foreground(cmd.Context())
			defer stop()
			template, err := a.replicationTemplate(a.logger())
			if err != nil {
				return err
			}
			template.StallTimeout = stall
			return cfg.Run(ctx, rf.m.Name, rf.m.Group, template)
		}),
	}
	rf.add(run)
	run.Flags().DurationVar(&stall, "stall-timeout", replicate.DefaultStallTimeout, "abandon and retry a cut whose shipping makes no progress, or whose connection gets no acknowledgement, this long (a cut link)")

	var statusMachine string
	var statusRemote remote
	status := &cobra.Command{
		Use:   "status [--machine NAME] [--server URL --token-file F] [--json]",
		Short: "Show the replication state of this host's machines",
		Long:  help("replicate-status"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if statusRemote.server != "" || statusRemote.tokenFile != "" {
				return a.serverReplicationStatus(cmd, &statusRemote, statusMachine)
			}
			return a.withReplication(a.localReplicationStatus(&statusMachine))(cmd, args)
		},
	}
	a.addRemoteFlags(status, &statusRemote)
	status.Flags().StringVar(&statusMachine, "machine", "", "only this machine")

	var disableMachine string
	var keepReplica bool
	var disableRemote remote
	disable := &cobra.Command{
		Use:   "disable --machine NAME [--keep-replica]",
		Short: "Stop protecting a machine and remove its replica",
		Long:  help("replicate-disable"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if disableMachine == "" {
				return usageError{errors.New("--machine is required")}
			}
			if disableRemote.server != "" || disableRemote.tokenFile != "" {
				return a.serverDisableReplication(cmd, &disableRemote, disableMachine)
			}
			cfg, err := a.replicationConfig()
			if err != nil {
				return err
			}
			if !keepReplica {
				if err := cfg.DisableRemote(cmd.Context(), disableMachine); err != nil {
					return err
				}
			}
			if err := cfg.Disable(disableMachine); err != nil {
				return err
			}
			if !a.quiet {
				a.printf("machine %s is no longer replicated\n", disableMachine)
			}
			return nil
		},
	}
	disable.Flags().StringVar(&disableMachine, "machine", "", "the machine")
	a.addRemoteFlags(disable, &disableRemote)
	disable.Flags().BoolVar(&keepReplica, "keep-replica", false, "keep the replica and its history at the target site")
	var pointsMachine, pointsSite, pointsGroup string
	points := &cobra.Command{
		Use:   "points --machine NAME|--group GROUP [--site SITE]",
		Short: "List a replicated machine's recovery points at its target site",
		Long:  help("replicate-points"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pointsGroup != "" {
				return a.groupPoints(cmd, pointsGroup, pointsSite)
			}
			if pointsMachine == "" {
				return usageError{errors.New("--machine or --group is required")}
			}
			cl, err := a.siteClient(pointsMachine, pointsSite)
			if err != nil {
				return err
			}
			st, err := cl.Status(cmd.Context(), pointsMachine)
			if err != nil {
				return err
			}
			return a.emit(st, func() {
				a.printPoints(st.Points)
				a.printf("history: %s in %d cuts\n", size(st.JournalBytes), st.JournalCuts)
			})
		},
	}
	points.Flags().StringVar(&pointsMachine, "machine", "", "the machine")
	points.Flags().StringVar(&pointsSite, "site", "", "the target site (default: the machine's replication target)")
	points.Flags().StringVar(&pointsGroup, "group", "", "list the points of this replication group")
	cmd.AddCommand(enable, run, status, disable, points, a.replicateCopyCommand())
	cmd.AddCommand(a.replicatePauseCommands()...)
	return cmd
}

func (a *app) failoverCommand() *cobra.Command {
	var machine, site, to, accel, group string
	var opts replica.FailoverOptions
	var cleanup, planned bool
	cmd := &cobra.Command{
		Use:     "failover --machine NAME|--group GROUP [--point latest|latest-app|ID|TIME] [--planned | --test | --test-cleanup] [--disks-only --to DIR | --export-nbd unix:PATH|HOST:PORT]",
		Short:   "Start a replicated machine at its target site",
		Long:    help("failover"),
		Example: help("failover.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.To, opts.Accel = to, accel
			if group != "" {
				return a.groupFailover(cmd, replicate.GroupFailoverRequest{Group: group, Machine: machine, Site: site, Planned: planned, Cleanup: cleanup, Options: opts})
			}
			req := replicate.FailoverRequest{Machine: machine, Site: site, Planned: planned, Cleanup: cleanup, PointGiven: cmd.Flags().Changed("point"), Options: opts}
			if err := req.Validate(); err != nil {
				return err
			}
			cfg, err := a.replicationConfig()
			if err != nil {
				return err
			}
			fo, err := cfg.Failover(cmd.Context(), req, a.env.Clock, a.logger())
			if err != nil {
				return err
			}
			return a.emit(fo, func() {
				switch {
				case cleanup:
					a.printf("removed test failover %s of %s\n", fo.Name, machine)
				case opts.DisksOnly:
					a.printf("wrote the disks of %s at point %d (%s) to %s in %.1fs\n", fo.Name, fo.Point.ID, fo.Point.Time.Format(time.RFC3339), to, fo.Seconds)
				case fo.Export != "":
					a.printf("the disks of %s at point %d (%s) are served over NBD at the target (pid %d); ready in %.1fs:\n",
						fo.Name, fo.Point.ID, fo.Point.Time.Format(time.RFC3339), fo.PID, fo.Seconds)
					for _, d := range fo.Disks {
						a.printf("%s\t%s\n", d.Name, d.NBD)
					}
				default:
					a.printf("%s runs at the target (pid %d) from point %d (%s); disks ready in %.1fs; console %s, QMP %s\n",
						fo.Name, fo.PID, fo.Point.ID, fo.Point.Time.Format(time.RFC3339), fo.Seconds, fo.Console, fo.QMP)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&machine, "machine", "", "the machine to fail over")
	f.StringVar(&group, "group", "", "fail every member of this replication group over to the same group cut")
	f.StringVar(&site, "site", "", "the target site (default: the machine's replication target)")
	f.StringVar(&opts.Point, "point", "latest", "latest, latest-app, a point ID, or an RFC 3339 time")
	f.BoolVar(&planned, "planned", false, "pause the source, ship its last writes, fail over, shut the source down (on the source host)")
	f.BoolVar(&opts.Test, "test", false, "start an isolated test copy while replication goes on")
	f.BoolVar(&cleanup, "test-cleanup", false, "stop and remove the test copy")
	f.BoolVar(&opts.DisksOnly, "disks-only", false, "write the disks as raw images into --to, start nothing")
	f.StringVar(&to, "to", "", "directory on the site's host for --disks-only")
	f.StringVar(&opts.ExportNBD, "export-nbd", "", "start nothing: serve the disks over NBD, writable, at unix:PATH or HOST:PORT on the site's host")
	f.StringVar(&accel, "accel", "tcg", "tcg or kvm")
	f.StringVar(&opts.Suffix, "suffix", "-dr", `added to the machine's name; "none" keeps the name (failing back)`)
	var commitMachine, commitSite string
	commit := &cobra.Command{
		Use:   "commit --machine NAME [--site SITE]",
		Short: "Make a failover final: the failed-over disks become standalone",
		Long:  help("failover-commit"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.siteClient(commitMachine, commitSite)
			if err != nil {
				return err
			}
			fo, err := cl.Commit(cmd.Context(), commitMachine)
			if err != nil {
				return err
			}
			return a.emit(fo, func() { a.printf("committed: %s runs on standalone disks at the target\n", fo.Name) })
		},
	}
	commit.Flags().StringVar(&commitMachine, "machine", "", "the failed-over machine")
	commit.Flags().StringVar(&commitSite, "site", "", "the target site (default: the machine's replication target)")
	cmd.AddCommand(commit)
	return cmd
}

func (a *app) reprotectCommand() *cobra.Command {
	var machine, site, back string
	var mf machineFlags
	cmd := &cobra.Command{
		Use:     "reprotect --machine NAME --site SITE --to OLD-SITE [--seed DISK=IMAGE]...",
		Short:   "Protect a failed-over machine back to its old site",
		Long:    help("reprotect"),
		Example: help("reprotect.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if machine == "" || site == "" || back == "" {
				return usageError{errors.New("--machine, --site and --to are required")}
			}
			cfg, err := a.replicationConfig()
			if err != nil {
				return err
			}
			m, err := mf.machine()
			if err != nil {
				return err
			}
			got, err := cfg.Reprotect(cmd.Context(), machine, site, back, m.Seed, m.Policy)
			if err != nil {
				return err
			}
			return a.emit(got, func() {
				a.printf("%s replicates to %s once lifeboat replicate run --machine %s runs\n", got.Name, back, got.Name)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&machine, "machine", "", "the failed-over machine (its original name)")
	f.StringVar(&site, "site", "", "the site where its copy runs")
	f.StringVar(&back, "to", "", "the site to protect it back to")
	f.StringArrayVar(&mf.seeds, "seed", nil, "DISK=IMAGE: start the replica of DISK from IMAGE on the old site's host (repeatable)")
	f.DurationVar(&mf.m.Policy.Retention, "retention", 24*time.Hour, "how long recovery points are kept")
	f.DurationVar(&mf.m.Policy.CrashInterval, "crash-interval", 5*time.Minute, "spacing of crash-consistent points")
	return cmd
}
