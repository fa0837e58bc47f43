package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/backup"
	"lifeboat/internal/container"
	"lifeboat/internal/live"
	"lifeboat/internal/nbd"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

type backupFlags struct {
	machine, definition, consistency string
	disks, tags                      []string
	preHook, postHook                string
	hookTimeout, freezeTimeout       time.Duration
	audit                            float64
	qmp, guestAgent, bitmap          string
	fleeceDir                        string
	requireConsistency               bool
}

func (a *app) backupCommand() *cobra.Command {
	var bf backupFlags
	cmd := &cobra.Command{
		Use:   "backup --machine NAME (--disk PATH [--disk PATH ...] | --qmp SOCKET)",
		Short: "Back up every disk of a machine as one recovery point",
		Long: `Back up the given disks of a machine into one recovery point and print its ID.

Each --disk is an image file, a block device or an NBD export
(nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH), optionally named as
NAME=PATH. Without a name, disks take the names of the --definition's disks in
order, or the file's base name. A qcow2, vmdk, vhdx, vdi or qed image is read
as its guest sees it, backing chain included, through qemu-nbd (when a header
is trusted: docs/live.md); an image a running QEMU holds open gets a warning
(back up running machines with --qmp).
The first point of a machine stores everything;
later ones store only the chunks the vault does not already hold, and chunks
shared with other disks and machines are stored once.

--definition is the machine's definition (JSON, schema lifeboat.machine/v1,
see docs/definition.md): CPUs, memory, firmware, disks, NICs. It is stored in the
point as given, and restore writes it back with the target suffix. Its disks pair
with the backed-up disks by name, else by bus and order: a warning says where the
names differ.

Live QEMU machines (--qmp SOCKET, the QMP socket of qemu-system-x86_64 or
qemu-storage-daemon): every disk of the machine (or those named with
--disk NAME) is backed up at one instant across all disks, taken by one QMP
transaction while the guest runs: a point-in-time view of each disk is
exported over NBD and read, and a dirty bitmap started at the instant lets
the next backup read only the blocks written since. The bitmap is trusted
only if it is the one the machine's latest point started, still recording
and consistent, and the disk kept its size; otherwise (QEMU restarted or
crashed, an earlier backup was killed) the whole disk is read and compared
with the latest point, never skipped. --audit re-reads a fraction of the
blocks the bitmap calls unchanged and falls back to comparing on a mismatch.
Bitmaps are persistent in qcow2 images. The fleecing overlays are created in
--fleece-dir, which QEMU must be able to write.

An NBD --disk with --bitmap NAME reads only the extents the server's dirty
bitmap NAME (qemu:dirty-bitmap:NAME) marks, when the machine's latest point
was taken with the same bitmap; the bitmap must record every write since that
point (clearing it is up to whoever runs the server).

Consistency (--consistency), recorded in the point as achieved:
  crash  the disks as they are read (default). Take the backup from a stable
         view: a disk written while it is read is not even crash-consistent
         unless it is a snapshot; a disk whose filesystem is mounted
         read-write on this host gets a warning.
  file   the filesystems on the disks that are mounted on this host (a block
         device, or an image attached to a loop device) are frozen with
         FIFREEZE around the snapshot instant. Where the image's own
         filesystem can clone files (XFS, Btrfs: reflinks), the instant is a
         clone and the freeze lasts milliseconds; otherwise the filesystems stay
         frozen while the disks are read, at most --freeze-timeout, after which
         they are thawed and the backup fails without writing a point. A
         watchdog process thaws them if lifeboat dies. If freezing fails the
         point is crash-consistent and says so.
         With --qmp, the guest's filesystems are frozen by the QEMU guest
         agent (--guest-agent SOCKET) for the instant only, at most
         --freeze-timeout; a watchdog process thaws the guest if lifeboat
         dies while it is frozen.
  app    file, plus --pre-hook (required) before the freeze and --post-hook after the
         thaw (shell commands, run with LIFEBOAT_MACHINE and LIFEBOAT_HOOK set,
         and without lifeboat's secrets: LIFEBOAT_PASSWORD, AWS_SECRET_ACCESS_KEY,
         AWS_SESSION_TOKEN, LIFEBOAT_*SECRET*/*PASSWORD*/*TOKEN*; a secret a
         failing hook prints is redacted from the note that keeps its output).
         A failing pre-hook leaves a file-consistent point and a note in it;
         the post-hook always runs once the pre-hook has.
A point that falls short of the consistency asked for is still written, with
notes saying why; lifeboat then exits 0 with a warning, or, with
--require-consistency, exits 9 (see lifeboat --help).`,
		Example: `  lifeboat backup --vault /srv/vault --machine web1 --disk /var/lib/images/web1.raw
  lifeboat backup --machine db1 --disk root=/dev/vg0/db1-root --disk data=/dev/vg0/db1-data --definition db1.json
  lifeboat backup --machine files --disk /dev/loop0 --consistency file
  lifeboat backup --machine vm1 --qmp /run/vm1.qmp --guest-agent /run/vm1.qga --consistency file
  lifeboat backup --machine nas --disk nbd+unix:///nas?socket=/run/nas.nbd --bitmap b0
  lifeboat backup --machine db1 --disk /dev/vg0/db1 --consistency app \
      --pre-hook 'psql -c "CHECKPOINT"' --post-hook 'logger db1 backed up'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.runBackup(cmd.Context(), bf) },
	}
	f := cmd.Flags()
	f.StringVar(&bf.machine, "machine", "", "machine name (required)")
	f.StringArrayVar(&bf.disks, "disk", nil, "disk to back up: PATH or NAME=PATH (repeat for each disk)")
	f.StringVar(&bf.definition, "definition", "", "machine definition JSON file (schema lifeboat.machine/v1)")
	f.StringVar(&bf.consistency, "consistency", "crash", "consistency wanted: crash, file or app")
	f.BoolVar(&bf.requireConsistency, "require-consistency", false, "exit 9 when the point written is less consistent than --consistency asked")
	f.StringVar(&bf.preHook, "pre-hook", "", "shell command run before the snapshot instant (--consistency app)")
	f.StringVar(&bf.postHook, "post-hook", "", "shell command run after the snapshot instant (--consistency app)")
	f.DurationVar(&bf.hookTimeout, "hook-timeout", 5*time.Minute, "longest a hook may run")
	f.DurationVar(&bf.freezeTimeout, "freeze-timeout", time.Minute, "longest the filesystems may stay frozen")
	f.Float64Var(&bf.audit, "audit", 0, "fraction (0-1) of blocks change tracking calls unchanged to re-read and compare")
	f.StringArrayVar(&bf.tags, "tag", nil, "tag the point (repeatable)")
	f.StringVar(&bf.qmp, "qmp", "", "QMP socket of a running QEMU machine: back up its disks live")
	f.StringVar(&bf.guestAgent, "guest-agent", "", "QEMU guest agent socket, for --qmp with --consistency file or app")
	f.StringVar(&bf.bitmap, "bitmap", "", "dirty bitmap of the NBD --disk servers that records changes since the last point")
	f.StringVar(&bf.fleeceDir, "fleece-dir", "", "directory for --qmp's temporary overlays (default: a new one in $TMPDIR)")
	return cmd
}

func (a *app) runBackup(ctx context.Context, bf backupFlags) error {
	if bf.machine == "" {
		return usageError{errors.New("--machine is required")}
	}
	if err := recovery.ValidName("machine", bf.machine); err != nil {
		return usageError{err}
	}
	if len(bf.disks) == 0 && bf.qmp == "" {
		return usageError{errors.New("at least one --disk, or --qmp, is required")}
	}
	if bf.guestAgent != "" && bf.qmp == "" {
		return usageError{errors.New("--guest-agent needs --qmp")}
	}
	if bf.fleeceDir != "" && bf.qmp == "" {
		return usageError{errors.New("--fleece-dir needs --qmp")}
	}
	if bf.bitmap != "" && bf.qmp != "" {
		return usageError{errors.New("--bitmap is for NBD --disk sources; with --qmp lifeboat manages the bitmaps itself")}
	}
	cons, err := recovery.ParseConsistency(bf.consistency)
	if err != nil {
		return usageError{err}
	}
	if bf.guestAgent != "" && cons == recovery.Crash {
		a.warnf("--guest-agent is ignored with --consistency crash: the guest is not frozen (use --consistency file or app)")
	}
	if (bf.preHook != "" || bf.postHook != "") && cons != recovery.App {
		return usageError{errors.New("--pre-hook and --post-hook need --consistency app")}
	}
	if cons == recovery.App && bf.preHook == "" {
		return usageError{errors.New("--consistency app needs a --pre-hook that quiesces the application (without one, use --consistency file)")}
	}
	if bf.freezeTimeout <= 0 || bf.hookTimeout <= 0 {
		return usageError{errors.New("--freeze-timeout and --hook-timeout must be positive")}
	}
	if bf.audit < 0 || bf.audit > 1 {
		return usageError{fmt.Errorf("--audit %g: want a fraction from 0 to 1", bf.audit)}
	}
	var defRaw json.RawMessage
	var def *recovery.Definition
	if bf.definition != "" {
		data, err := os.ReadFile(bf.definition)
		if err != nil {
			return usageError{fmt.Errorf("reading --definition: %w", err)}
		}
		if def, err = recovery.ParseDefinition(data); err != nil {
			return usageError{fmt.Errorf("%s: %w", bf.definition, err)}
		}
		if def.Name != bf.machine {
			return usageError{fmt.Errorf("%s names machine %q, but --machine is %q", bf.definition, def.Name, bf.machine)}
		}
		defRaw = data
	}
	if bf.qmp != "" {
		return a.runLiveBackup(ctx, bf, cons, defRaw)
	}
	names, paths, err := diskSpecs(bf.disks, def)
	if err != nil {
		return err
	}
	if bf.bitmap != "" {
		for _, p := range paths {
			if !isNBD(p) {
				return usageError{fmt.Errorf("--bitmap is for NBD disks, and %s is not one", p)}
			}
		}
	}
	v, err := a.open(ctx)
	if err != nil {
		return err
	}
	capt, err := a.captureLocal(ctx, bf, cons, def, names, paths)
	if err != nil {
		return err
	}
	if bf.bitmap != "" {
		if err := a.nbdTracking(ctx, v, bf, capt); err != nil {
			capt.close()
			return err
		}
	}
	if err != nil {
		return err
	}
	defer capt.close()
	opts := backup.Options{Machine: bf.machine, Definition: defRaw, Consistency: capt.consistency, Tags: bf.tags,
		Warn: func(s string) { a.warnf("%s", s) }, Disks: capt.disks, Notes: capt.notes, Audit: bf.audit,
		Precommit: capt.precommit, Seen: a.book()}
	pb := newBar(a.env.Stderr, "backup "+bf.machine, !a.quiet)
	opts.Progress = func(p backup.Progress) { pb.update(p.DoneBytes, p.TotalBytes, p.Elapsed, p.Final) }
	bctx := capt.ctx(ctx)
	p, err := backup.Run(bctx, v, opts)
	if err != nil && ctx.Err() == nil && context.Cause(bctx) != nil {
		err = context.Cause(bctx) // the freeze ran out, not the user
	}
	if rerr := capt.release(); rerr != nil {
		if err == nil {
			// The point is committed and consistent; the thaw or hook
			// after it failed. Say so loudly, but the point stands.
			a.warnf("%v", rerr)
		} else {
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("backup of %s: %w", bf.machine, err)
	}
	return a.reportPoint(bf.machine, p, cons, bf.requireConsistency)
}

// reportPoint prints a new point: its ID on stdout (or JSON), a summary
// and any notes on stderr. With require, a point less consistent than
// asked is an error (after it is printed).
func (a *app) reportPoint(machine string, p *recovery.Point, asked recovery.Consistency, require bool) (err error) {
	if require {
		defer func() {
			if err == nil {
				err = p.RequireConsistency(asked)
			}
		}()
	}
	for _, n := range p.Notes {
		a.warnf("%s", n)
	}
	if a.jsonOut {
		return a.printJSON(pointJSON(p))
	}
	var newBytes int64
	for _, d := range p.Disks {
		newBytes += d.Stats.NewBytes
	}
	if !a.quiet {
		fmt.Fprintf(a.env.Stderr, "point %s of %s (%s-consistent): %d disk(s), %s, %s new, %s stored in %s\n", p.ID.Short(), machine,
			p.Consistency, len(p.Disks), size(p.Size()), size(newBytes), size(p.Stats.StoredBytes), time.Duration(p.Stats.DurationMS)*time.Millisecond)
	}
	a.printf("%s\n", p.ID)
	return nil
}

// capture is the stable view a backup reads: its disks, the consistency
// it achieved, and what to undo afterwards.
type capture struct {
	disks       []backup.Disk
	consistency recovery.Consistency
	notes       []string
	closers     []func() error
	frozen      *quiesce.Frozen // still frozen while the disks are read
	after       func() error    // post-hook, once
	cancel      context.CancelCauseFunc
}

// ctx returns the backup's context: cancelled if a freeze runs out of time.
func (c *capture) ctx(parent context.Context) context.Context {
	fz := c.frozen
	if fz == nil {
		return parent
	}
	ctx, cancel := context.WithCancelCause(parent)
	c.cancel = cancel
	go func() {
		select {
		case <-fz.Expired:
			cancel(expired(fz))
		case <-ctx.Done():
		}
	}()
	return ctx
}

func expired(fz *quiesce.Frozen) error {
	return fmt.Errorf("filesystems %s stayed frozen longer than --freeze-timeout and were thawed: no point written", fz.Mounts())
}

func (c *capture) precommit() error {
	fz := c.frozen
	if fz == nil {
		return nil
	}
	select {
	case <-fz.Expired:
		return expired(fz)
	default:
		return nil
	}
}

// release thaws and runs the post-hook; it is safe to call again.
func (c *capture) release() error {
	var errs []error
	if c.frozen != nil {
		if err := c.frozen.Thaw(); err != nil {
			errs = append(errs, err)
		}
		c.frozen = nil
	}
	if c.after != nil {
		if err := c.after(); err != nil {
			errs = append(errs, err)
		}
		c.after = nil
	}
	if c.cancel != nil {
		c.cancel(nil)
	}
	return errors.Join(errs...)
}

func (c *capture) close() {
	c.release()
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}

// captureLocal opens image files and block devices, and makes them file-
// or app-consistent when asked (see the backup command's help).
func (a *app) captureLocal(ctx context.Context, bf backupFlags, cons recovery.Consistency, def *recovery.Definition, names, paths []string) (_ *capture, err error) {
	c := &capture{consistency: cons}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	open := func() error {
		for i, p := range paths {
			if isNBD(p) {
				var opts []nbd.Option
				if bf.bitmap != "" {
					opts = append(opts, nbd.WithMetaContexts(nbd.DirtyBitmapContext(bf.bitmap)))
				}
				d, err := nbd.OpenDisk(ctx, p, opts...)
				if err != nil {
					return fmt.Errorf("disk %s: %w", names[i], err)
				}
				c.closers = append(c.closers, d.Close)
				c.disks = append(c.disks, backup.Disk{Name: names[i], Source: d})
				continue
			}
			src, err := container.Open(ctx, p, def.DiskFormat(names, names[i]))
			if err != nil {
				return err
			}
			c.closers = append(c.closers, src.Close)
			c.disks = append(c.disks, backup.Disk{Name: names[i], Source: src, Format: src.Info.Format, Backing: src.Info.Backing})
			for _, n := range src.Notes {
				c.notes = append(c.notes, fmt.Sprintf("disk %s: %s", names[i], n))
			}
		}
		return nil
	}
	if cons == recovery.Crash {
		for _, w := range quiesce.CrashWarnings(paths) {
			a.warnf("%s", w)
		}
		return c, open()
	}
	var mounts []string
	seen := map[string]bool{}
	for _, p := range paths {
		if isNBD(p) {
			return nil, usageError{fmt.Errorf("--consistency %s cannot quiesce NBD disk %s: take it from a quiesced snapshot, or use --qmp for a QEMU machine", cons, p)}
		}
		ms, err := quiesce.MountsOn(p)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if a.vaultURL != "" && !strings.Contains(a.vaultURL, "://") && quiesce.SameFilesystem(a.vaultURL, m) {
				return nil, usageError{fmt.Errorf("the vault %s is on filesystem %s, which --consistency %s would freeze: use a vault elsewhere", a.vaultURL, m.Point, cons)}
			}
			if !seen[m.Point] {
				seen[m.Point] = true
				mounts = append(mounts, m.Point)
			}
		}
	}
	if len(mounts) == 0 && cons == recovery.File {
		return nil, usageError{fmt.Errorf("--consistency file: no filesystem on %s is mounted on this host, so there is nothing to freeze (for a running VM, use --qmp)", strings.Join(paths, ", "))}
	}
	env := []string{"LIFEBOAT_MACHINE=" + bf.machine, "LIFEBOAT_DISKS=" + strings.Join(paths, " ")}
	if cons == recovery.App {
		pre := quiesce.Hook{Command: bf.preHook, Timeout: bf.hookTimeout, Env: env}
		if err := pre.Run(ctx, "pre"); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			c.consistency = recovery.File
			c.notes = append(c.notes, fmt.Sprintf("asked for app consistency, got %s: %v", fileOrCrash(mounts), err))
		}
		// The post-hook runs whatever happened to the pre-hook: it undoes
		// whatever part of it took effect.
		post := quiesce.Hook{Command: bf.postHook, Timeout: bf.hookTimeout, Env: env}
		c.after = func() error { return post.Run(context.WithoutCancel(ctx), "post") }
		if len(mounts) == 0 && c.consistency == recovery.File {
			c.consistency = recovery.Crash
		}
	}
	if len(mounts) > 0 {
		exe, err := a.executable()
		if err != nil {
			return nil, err
		}
		fz, err := quiesce.Freeze(ctx, mounts, bf.freezeTimeout, exe)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			c.notes = append(c.notes, fmt.Sprintf("asked for %s consistency, got crash: %v", cons, err))
			c.consistency = recovery.Crash
		} else {
			c.frozen = fz
		}
	}
	if c.frozen == nil {
		// Nothing frozen: the hooks (if any) bracket the read.
		return c, open()
	}
	// Frozen: an instant copy lets us thaw at once.
	var clones []string
	for _, p := range paths {
		clone, err := quiesce.Clone(p)
		if err != nil {
			if !quiesce.NoReflinks(err) {
				a.warnf("%v: the filesystems stay frozen while the disks are read", err)
			}
			for _, cl := range clones {
				os.Remove(cl)
			}
			clones = nil
			break
		}
		clones = append(clones, clone)
	}
	if clones == nil {
		return c, open() // frozen while read; released after the backup
	}
	for _, cl := range clones {
		c.closers = append(c.closers, func() error { return os.Remove(cl) })
	}
	select {
	case <-c.frozen.Expired:
		// The timeout thawed the filesystems while cloning: the clones
		// are not one frozen instant.
		return nil, expired(c.frozen)
	default:
	}
	if err := c.release(); err != nil {
		return nil, err
	}
	for i, cl := range clones {
		src, err := container.OpenSnapshot(ctx, cl, paths[i], def.DiskFormat(names, names[i]))
		if err != nil {
			return nil, err
		}
		c.closers = append(c.closers, src.Close)
		c.disks = append(c.disks, backup.Disk{Name: names[i], Source: src, Format: src.Info.Format, Backing: src.Info.Backing})
	}
	return c, nil
}

func fileOrCrash(mounts []string) recovery.Consistency {
	if len(mounts) > 0 {
		return recovery.File
	}
	return recovery.Crash
}

// watchdogCommand is the hidden helper process quiesce.Freeze and live
// start: it thaws what they announce on its stdin when lifeboat exits (its
// stdin closes), the freeze times out, or it gets SIGTERM.
func (a *app) watchdogCommand() *cobra.Command {
	var timeout time.Duration
	var agent string
	var mounts bool
	cmd := &cobra.Command{
		Use:    "__thaw-watchdog --timeout D (--mounts-on-stdin | --guest-agent SOCKET)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case mounts && agent == "":
				return quiesce.WatchdogMain(cmd.Context(), os.Stdin, timeout)
			case agent != "" && !mounts:
				return live.GuestWatchdogMain(cmd.Context(), os.Stdin, timeout, agent)
			}
			return usageError{errors.New("want one of --mounts-on-stdin and --guest-agent")}
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "thaw after this long")
	cmd.Flags().StringVar(&agent, "guest-agent", "", "thaw the guest through this agent socket (when +guest is announced on stdin)")
	cmd.Flags().BoolVar(&mounts, "mounts-on-stdin", false, "thaw the mounts announced on stdin (+MOUNT, -MOUNT)")
	return cmd
}

func isNBD(path string) bool {
	return strings.HasPrefix(path, "nbd://") || strings.HasPrefix(path, "nbd+unix://") || strings.HasPrefix(path, "nbds://")
}

// nbdTracking uses the NBD servers' dirty bitmap bf.bitmap when the
// machine's latest point was taken with it (see the backup help).
func (a *app) nbdTracking(ctx context.Context, v *vault.Vault, bf backupFlags, c *capture) error {
	points, err := recovery.List(ctx, v)
	if err != nil {
		return err
	}
	parent, _ := recovery.Find(points, bf.machine, "latest")
	tracking := "nbd:" + bf.bitmap
	for i := range c.disks {
		d := &c.disks[i]
		d.Tracking = tracking
		nd, ok := d.Source.(*nbd.Disk)
		if !ok {
			continue
		}
		if !nd.Client().HasMetaContext(nbd.DirtyBitmapContext(bf.bitmap)) {
			return fmt.Errorf("disk %s: the NBD server does not offer dirty bitmap %q (it agreed to %q)", d.Name, bf.bitmap, nd.Client().MetaContexts())
		}
		if parent == nil {
			continue
		}
		pd, ok := parent.Disk(d.Name)
		if !ok || pd.Tracking != tracking {
			a.warnf("disk %s: point %s was not taken with bitmap %s: reading the whole disk and comparing", d.Name, parent.ID.Short(), bf.bitmap)
			continue
		}
		dirty, err := nd.DirtyExtents(ctx, bf.bitmap)
		if err != nil {
			return fmt.Errorf("disk %s: %w", d.Name, err)
		}
		d.Changed = &backup.Changes{Since: parent.ID.String(), Extents: dirty}
	}
	return nil
}

// runLiveBackup backs up a running QEMU machine (--qmp).
func (a *app) runLiveBackup(ctx context.Context, bf backupFlags, cons recovery.Consistency, def []byte) error {
	var only []string
	for _, d := range bf.disks {
		if recovery.ValidName("disk", d) != nil {
			return usageError{fmt.Errorf("with --qmp, --disk names a disk of the machine (vda, ...), not %q", d)}
		}
		only = append(only, d)
	}
	v, err := a.open(ctx)
	if err != nil {
		return err
	}
	env := []string{"LIFEBOAT_MACHINE=" + bf.machine, "LIFEBOAT_QMP=" + bf.qmp}
	pb := newBar(a.env.Stderr, "backup "+bf.machine, !a.quiet)
	exe, err := a.executable()
	if err != nil {
		return err
	}
	p, err := live.Backup(ctx, v, live.Options{Machine: bf.machine, QMP: bf.qmp, Consistency: cons, GuestAgent: bf.guestAgent, Executable: exe,
		FreezeTimeout: bf.freezeTimeout, Disks: only, Dir: bf.fleeceDir, Definition: def, Tags: bf.tags, Audit: bf.audit,
		PreHook:  quiesce.Hook{Command: bf.preHook, Timeout: bf.hookTimeout, Env: env},
		PostHook: quiesce.Hook{Command: bf.postHook, Timeout: bf.hookTimeout, Env: env},
		Progress: func(p backup.Progress) { pb.update(p.DoneBytes, p.TotalBytes, p.Elapsed, p.Final) },
		Warn:     func(s string) { a.warnf("%s", s) }})
	if err != nil {
		return fmt.Errorf("backup of %s: %w", bf.machine, err)
	}
	return a.reportPoint(bf.machine, p, cons, bf.requireConsistency)
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
