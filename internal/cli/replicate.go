package cli

import (
	"errors"
	"fmt"
	"net"
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
	return cl, notFound(err)
}

func (a *app) replicaCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "replica", Short: "Serve replicas at a target site"}
	var listen, dir, tokenFile, cert, key, seedDir string
	serve := &cobra.Command{
		Use:   "serve --listen ADDR --dir DIR --token-file F [--cert F --key F]",
		Short: "Receive continuous replication and run failovers at this site",
		Long: `Run the target side of continuous replication in the foreground: receive each
protected machine's consistent cuts from its source host (lifeboat replicate run)
into replica disks plus a journal of history under --dir, keep recovery points
for each machine's retention, and fail machines over on request (lifeboat
failover). Every request must carry the site token read from --token-file.

A cut is acknowledged only once it is durable (fsynced, renamed, directory
fsynced), so a server killed at any moment loses no acknowledged point; a cut
cut short is discarded on restart and sent again. The on-disk format is in
docs/replication.md.

With --cert and --key the server speaks HTTPS; without them plain HTTP, which
sources accept only for loopback addresses.

--seed-dir lets sources start a new replica from an image already on this host
(replicate --seed DISK=IMAGE, IMAGE under --seed-dir): re-protecting a
failed-over machine back to this, its old, site sends only the blocks that
differ from its old disks.`,
		Example: `  lifeboat replica serve --listen :8443 --dir /srv/replica --token-file /etc/lifeboat/site.token \
      --cert /etc/lifeboat/site.crt --key /etc/lifeboat/site.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if listen == "" || dir == "" {
				return usageError{errors.New("--listen and --dir are required")}
			}
			if (cert == "") != (key == "") {
				return usageError{errors.New("--cert and --key go together")}
			}
			token, err := replicate.ReadSecret(tokenFile, "--token-file")
			if err != nil {
				return err
			}
			store, err := replica.Open(dir, a.env.Clock)
			if err != nil {
				return err
			}
			store.SeedDir = seedDir
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return usageError{fmt.Errorf("--listen: %w", err)}
			}
			ctx, stop := foreground(cmd.Context())
			defer stop()
			log := a.logger()
			log.Info("serving replicas", "listen", l.Addr().String(), "dir", dir, "tls", cert != "")
			return store.Serve(ctx, l, replica.ServeOptions{Token: token, CertFile: cert, KeyFile: key, Log: log})
		},
	}
	f := serve.Flags()
	f.StringVar(&listen, "listen", "", "address to listen on, host:port")
	f.StringVar(&dir, "dir", "", "directory of the replicas and their history")
	f.StringVar(&tokenFile, "token-file", "", "file holding the site token sources must present")
	f.StringVar(&cert, "cert", "", "TLS certificate (PEM)")
	f.StringVar(&key, "key", "", "TLS private key (PEM)")
	f.StringVar(&seedDir, "seed-dir", "", "directory whose images sources may name as seeds (replicate --seed), for re-protection")
	cmd.AddCommand(serve)
	return cmd
}

func (a *app) siteCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "site", Short: "Name the target sites machines replicate to"}
	var s replicate.Site
	add := &cobra.Command{
		Use:   "add NAME --url URL --token-file F [--ca F]",
		Short: "Name a target site (its replica server)",
		Long: `Name a target site for this host's replications: the URL of its replica server
(lifeboat replica serve), the file holding its site token, and the CA that
signed its certificate when it is not one the system trusts. http:// is
accepted for loopback addresses only; use https:// otherwise. Adding a site of
an existing name replaces it.`,
		Example: `  lifeboat site add dr1 --url https://dr1.example.net:8443 --token-file /etc/lifeboat/dr1.token --ca /etc/lifeboat/dr1-ca.pem`,
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
	f.StringVar(&mf.m.Capture, "capture", replicate.CaptureBitmap, "how writes are captured: bitmap (a dirty-bitmap cut every --every) or mirror (QEMU's write-blocking mirror into the source journal, shipped as it fills: an RPO under a second; falls back to bitmap cuts when the mirror fails)")
	f.Int64Var(&mf.m.JournalLimit, "journal-limit", replicate.DefaultJournalLimit, "mirror capture: the most unshipped bytes the source journal holds (a WAN outage); past it, bitmap cuts stand in until the mirror starts again")
	f.StringVar(&mf.m.NBDServer, "nbd-server", "", "unix:PATH of an NBD server the machine's QEMU already runs for others: lifeboat adds its exports there instead of starting QEMU's NBD server")
	f.StringVar(&mf.m.Group, "group", "", "replication group: its members' cuts are taken together, and fail over together (replicate run --group)")
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
		Use:   "enable --machine NAME --qmp SOCKET --target SITE",
		Short: "Protect a machine by continuous replication",
		Long: `Record that a running QEMU machine replicates to a target site. The replication
itself runs in lifeboat replicate run (a long-lived process, e.g. a systemd
service): a crash-consistent cut of all the machine's disks every --every
(2 s), the writes since the previous cut shipped to the site, where recovery
points are kept for --retention: the first cut of every --crash-interval, every
app-consistent cut (--app-interval, the guest frozen through its agent) and
always the latest cut.

With --server and --agent, the replication is recorded in the lifeboat
server's catalog instead, for the agent named to run: its lifeboat agent
--replicate enables it on its host within a few seconds (the target site must
be named there with lifeboat site add; --qmp and --guest-agent are absolute
paths on that host), and disables it again after replicate disable --server
(the replica is kept at the target). Machines enabled on a host by hand are
left as they are.`,
		Example: `  lifeboat replicate enable --machine db1 --qmp /run/db1.qmp --target dr1 --retention 24h --crash-interval 5m
  lifeboat replicate enable --server https://lifeboat:8080 --token-file admin.token --agent hv2 --machine db1 --qmp /run/db1.qmp --target dr1`,
		Args: cobra.NoArgs,
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
		Use:   "run [--machine NAME [--qmp SOCKET --target SITE] | --group GROUP]",
		Short: "Run the replication of this host's machines (foreground)",
		Long: `Replicate every enabled machine of this host, or only --machine, in the
foreground until interrupted (for systemd when no agent runs; lifeboat agent
--replicate does the same). Without --machine or --group, machines enabled or
disabled while it runs are followed within seconds. With --qmp and
--target the machine is enabled first, as replicate enable does. Failures (QEMU
or the site unreachable, a cut refused) are reported by replicate status and
retried every cycle; lost change tracking makes the next cycle a full resync.
The members of a group (replicate enable --group) are replicated together:
--group GROUP runs only that group's members, each cycle one consistent cut
across all of them (docs/replication.md, Groups).`,
		Example: `  lifeboat replicate run --machine db1 --qmp /run/db1.qmp --target dr1`,
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
			var machines []replicate.Machine
			var err error
			switch {
			case rf.m.Name == "" && rf.m.Group != "":
				machines, err = groupMembers(cfg, rf.m.Group)
			case rf.m.Name != "":
				machines, err = cfg.Selected(rf.m.Name)
			}
			if err != nil {
				return err
			}
			ctx, stop := foreground(cmd.Context())
			defer stop()
			exe, err := a.executable()
			if err != nil {
				return err
			}
			template := replicate.Runner{Config: cfg, Clock: a.env.Clock, Log: a.logger(), Executable: exe, StallTimeout: stall}
			if rf.m.Name == "" && rf.m.Group == "" {
				return replicate.Supervise(ctx, cfg, template)
			}
			return replicate.RunMachines(ctx, machines, template)
		}),
	}
	rf.add(run)
	run.Flags().DurationVar(&stall, "stall-timeout", replicate.DefaultStallTimeout, "abandon and retry a cut whose shipping makes no progress this long (a cut link)")

	var statusMachine string
	var statusRemote remote
	status := &cobra.Command{
		Use:   "status [--machine NAME] [--server URL --token-file F] [--json]",
		Short: "Show the replication state of this host's machines",
		Long: `Show each replicated machine's state — starting, initial-sync (with progress),
protected, resyncing, error, failed-over, or stopped when no replicate run is
running — its RPO lag (the age of the last cut the target acknowledged: what a
failover to the latest point would lose), the target's history (journal) size,
its number of recovery points and the last app-consistent cut, and how writes
are captured: "mirror N%" (QEMU's write-blocking mirror into the source
journal, N% of its --journal-limit unshipped) or "bitmap" (dirty-bitmap cuts;
"fell back Nx" when the mirror failed and bitmap cuts stand in until it is
started again). --json adds capture, source_journal_bytes,
source_journal_limit, journal_shipped_bytes, fallbacks, last_fallback and
last_fallback_at.

With --server (or --token-file), the status comes from a lifeboat server
instead: the latest report of every agent that replicates (lifeboat agent
--replicate), with an AGENT column and, in --json, "agent" and "reported".
The lag is worked out by the server as of now, and a replication whose agent
has not reported for 2 minutes shows as stopped.`,
		Args: cobra.NoArgs,
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
		Long: `Stop replicating a machine: its replica and history are removed at the target
site (unless --keep-replica, or while it is failed over there) and its settings
on this host are forgotten. A running replicate run stops replicating it at its
next cycle; the dirty bitmaps it added stay on the disks until QEMU restarts.

With --server, the replication enabled there (replicate enable --server) is
forgotten by the server, and its agent stops running it within a few seconds;
the replica and its history are kept at the target.`,
		Args: cobra.NoArgs,
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
					return notFound(err)
				}
			}
			if err := cfg.Disable(disableMachine); err != nil {
				return notFound(err)
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
		Long: `List the recovery points the target site holds for a machine, oldest first: the
base (the oldest state kept), the first cut of every crash interval, every
app-consistent cut, and the latest cut. IDs and times are what failover --point
takes. With --group, the group's points: the group cuts every member holds
(what failover --group --point takes).`,
		Args: cobra.NoArgs,
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
				return notFound(err)
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
	return cmd
}

func (a *app) failoverCommand() *cobra.Command {
	var machine, site, to, accel, group string
	var opts replica.FailoverOptions
	var cleanup, planned bool
	cmd := &cobra.Command{
		Use:   "failover --machine NAME|--group GROUP [--point latest|latest-app|ID|TIME] [--planned | --test | --test-cleanup] [--disks-only --to DIR]",
		Short: "Start a replicated machine at its target site",
		Long: `Fail a replicated machine over to its target site (unplanned: the source may be
gone). The site materialises the recovery point's disks as qcow2 overlays over
its replica, writing only the history since its base (so it takes about as
long whatever the disks' size), and starts the machine from its stored
definition with the -dr suffix under TCG (--accel kvm where the site has it).
While failed over the replica takes no more cuts from the source.

--point is latest (the last cut, default), latest-app, a point ID, or an RFC
3339 time (the newest point at or before it).
--planned (run on the source host) loses nothing: the guest is paused, cuts are
shipped until one taken after the pause is acknowledged, the site starts the
copy from exactly that cut, and the source QEMU is shut down; if anything fails
first, the guest is resumed.
--test starts an isolated copy (no network, new MAC addresses, name -dr-test)
while replication goes on; --test-cleanup stops and removes it and leaves the
replica untouched.
--group GROUP fails every member of a replication group over to one group cut
(a cut all members hold, taken at one instant): no member is ahead of another.
--point then chooses among the group's points (IDs are group cut IDs). With
--planned every member's guest is paused first and a group cut taken after the
last pause is shipped before the failover; with --test every member gets an
isolated copy (all or none), and --test-cleanup removes them all.
--disks-only --to DIR has the site write the point's disks as raw images into
DIR on its host (named after the disks) with the -dr definition, starting
nothing.

The site is the machine's replication target on this host, or --site.`,
		Example: `  lifeboat failover --machine db1 --point latest
  lifeboat failover --machine db1 --test && lifeboat failover --machine db1 --test-cleanup
  lifeboat failover --site dr1 --machine db1 --point 2026-12-07T01:00:00Z --disks-only --to /srv/restore`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if group != "" {
				return a.groupFailover(cmd, group, machine, site, to, accel, opts, planned, cleanup)
			}
			opts.To, opts.Accel = to, accel
			req := replicate.FailoverRequest{Machine: machine, Site: site, Planned: planned, Cleanup: cleanup, PointGiven: cmd.Flags().Changed("point"), Options: opts}
			if err := req.Validate(); err != nil {
				return usageError{err}
			}
			cfg, err := a.replicationConfig()
			if err != nil {
				return err
			}
			fo, err := cfg.Failover(cmd.Context(), req, a.env.Clock, a.logger())
			if err != nil {
				return notFound(err)
			}
			return a.emit(fo, func() {
				switch {
				case cleanup:
					a.printf("removed test failover %s of %s\n", fo.Name, machine)
				case opts.DisksOnly:
					a.printf("wrote the disks of %s at point %d (%s) to %s in %.1fs\n", fo.Name, fo.Point.ID, fo.Point.Time.Format(time.RFC3339), to, fo.Seconds)
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
	f.StringVar(&accel, "accel", "tcg", "tcg or kvm")
	f.StringVar(&opts.Suffix, "suffix", "-dr", `added to the machine's name; "none" keeps the name (failing back)`)
	var commitMachine, commitSite string
	commit := &cobra.Command{
		Use:   "commit --machine NAME [--site SITE]",
		Short: "Make a failover final: the failed-over disks become standalone",
		Long: `Commit a machine's failover: the site makes the failed-over machine's disks
standalone images — streamed from the replica inside the running machine, or
rebased offline when it is not running — so the replica's history may be folded
again. The failed-over machine keeps running throughout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.siteClient(commitMachine, commitSite)
			if err != nil {
				return err
			}
			fo, err := cl.Commit(cmd.Context(), commitMachine)
			if err != nil {
				return notFound(err)
			}
			return a.emit(fo, func() { a.printf("committed: %s runs on standalone disks at the target\n", fo.Name) })
		},
	}
	commit.Flags().StringVar(&commitMachine, "machine", "", "the failed-over machine")
	commit.Flags().StringVar(&commitSite, "site", "", "the target site (default: the machine's replication target)")
	cmd.AddCommand(commit)
	return cmd
}

// notFound makes a missing site, machine or point exit with ExitNotFound
// and bad settings with ExitUsage.
func notFound(err error) error {
	var se *replicate.SiteError
	switch {
	case replicate.IsInvalid(err):
		return usageError{err}
	case errors.Is(err, replicate.ErrNotFound), errors.As(err, &se) && se.Code == "not_found":
		if !errors.Is(err, replicate.ErrNotFound) {
			return fmt.Errorf("%w: %w", replicate.ErrNotFound, err)
		}
	}
	return err
}

func (a *app) reprotectCommand() *cobra.Command {
	var machine, site, back string
	var mf machineFlags
	cmd := &cobra.Command{
		Use:   "reprotect --machine NAME --site SITE --to OLD-SITE [--seed DISK=IMAGE]...",
		Short: "Protect a failed-over machine back to its old site",
		Long: `Re-protect a machine after a failover: find its running copy (NAME-dr) at --site
and enable the copy's replication to --to (its old site, which serves replicas
again), with the original machine's definition. --seed DISK=IMAGE names the
machine's old disk image on the old site's host (under its replica serve
--seed-dir): the new replica starts from it and the first sync sends only the
blocks whose hashes differ. Run on the host where the copy runs; then run
lifeboat replicate run --machine NAME-dr there. Fail back later with
lifeboat failover --machine NAME-dr --planned --suffix none.`,
		Example: `  lifeboat reprotect --machine db1 --site dr1 --to orig --seed vd0=/var/lib/vm/db1.qcow2
  lifeboat replicate run --machine db1-dr`,
		Args: cobra.NoArgs,
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
				return notFound(err)
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
