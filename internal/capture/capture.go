// Package capture makes the stable view a backup reads from disks on this
// host: image files (read as the guest sees them, through
// internal/container), block devices and NBD exports, frozen with FIFREEZE
// and bracketed by application hooks when asked, cloned with reflinks
// where the filesystem can so the freeze lasts an instant, and — for NBD
// servers that keep one — narrowed to a dirty bitmap's extents. A running
// QEMU machine is captured by internal/live instead.
package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/container"
	"lifeboat/internal/nbd"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// ErrInvalid is wrapped by errors in what was asked (bad input).
var ErrInvalid = errors.New("invalid capture request")

// Options say what to capture and how.
type Options struct {
	Machine string
	// Names and Paths are the disks, in the same order.
	Names, Paths []string
	Consistency  recovery.Consistency
	Definition   *recovery.Definition // may be nil
	// Bitmap names the NBD servers' dirty bitmap (NBDTracking).
	Bitmap            string
	PreHook, PostHook string
	HookTimeout       time.Duration
	FreezeTimeout     time.Duration
	// Executable is lifeboat's own binary, run as the thaw watchdog.
	Executable string
	// VaultDir, for a directory vault, is refused as a filesystem to freeze.
	VaultDir string
	Warn     func(string)
}

func (o Options) warn(s string) {
	if o.Warn != nil {
		o.Warn(s)
	}
}

// IsNBD tells an NBD URL from a path.
func IsNBD(path string) bool {
	return strings.HasPrefix(path, "nbd://") || strings.HasPrefix(path, "nbd+unix://") || strings.HasPrefix(path, "nbds://")
}

// Capture is the stable view a backup reads: its disks, the consistency
// it achieved, and what to undo afterwards.
type Capture struct {
	Disks       []backup.Disk
	Consistency recovery.Consistency
	Notes       []string
	closers     []func() error
	frozen      *quiesce.Frozen // still frozen while the disks are read
	after       func() error    // post-hook, once
	cancel      context.CancelCauseFunc
}

// Ctx returns the backup's context: cancelled if a freeze runs out of time.
func (c *Capture) Ctx(parent context.Context) context.Context {
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

// Precommit fails when a freeze ran out of time before the point commits.
func (c *Capture) Precommit() error {
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

// Release thaws and runs the post-hook; it is safe to call again.
func (c *Capture) Release() error {
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

// Close releases and closes the disks.
func (c *Capture) Close() {
	c.Release()
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}

// Local opens image files, block devices and NBD exports, and makes them
// file- or app-consistent when asked (see the backup command's help).
func Local(ctx context.Context, o Options) (_ *Capture, err error) {
	cons, def, names, paths := o.Consistency, o.Definition, o.Names, o.Paths
	c := &Capture{Consistency: cons}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	open := func() error {
		for i, p := range paths {
			if IsNBD(p) {
				var opts []nbd.Option
				if o.Bitmap != "" {
					opts = append(opts, nbd.WithMetaContexts(nbd.DirtyBitmapContext(o.Bitmap)))
				}
				d, err := nbd.OpenDisk(ctx, p, opts...)
				if err != nil {
					return fmt.Errorf("disk %s: %w", names[i], err)
				}
				c.closers = append(c.closers, d.Close)
				c.Disks = append(c.Disks, backup.Disk{Name: names[i], Source: d})
				continue
			}
			src, err := container.Open(ctx, p, def.DiskFormat(names, names[i]))
			if err != nil {
				return err
			}
			c.closers = append(c.closers, src.Close)
			c.Disks = append(c.Disks, backup.Disk{Name: names[i], Source: src, Format: src.Info.Format, Backing: src.Info.Backing})
			for _, n := range src.Notes {
				c.Notes = append(c.Notes, fmt.Sprintf("disk %s: %s", names[i], n))
			}
		}
		return nil
	}
	if cons == recovery.Crash {
		for _, w := range quiesce.CrashWarnings(paths) {
			o.warn(w)
		}
		return c, open()
	}
	var mounts []string
	seen := map[string]bool{}
	for _, p := range paths {
		if IsNBD(p) {
			return nil, fmt.Errorf("%w: consistency %s cannot quiesce NBD disk %s: take it from a quiesced snapshot, or use --qmp for a QEMU machine", ErrInvalid, cons, p)
		}
		ms, err := quiesce.MountsOn(p)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if o.VaultDir != "" && quiesce.SameFilesystem(o.VaultDir, m) {
				return nil, fmt.Errorf("%w: the vault %s is on filesystem %s, which consistency %s would freeze: use a vault elsewhere", ErrInvalid, o.VaultDir, m.Point, cons)
			}
			if !seen[m.Point] {
				seen[m.Point] = true
				mounts = append(mounts, m.Point)
			}
		}
	}
	if len(mounts) == 0 && cons == recovery.File {
		return nil, fmt.Errorf("%w: consistency file: no filesystem on %s is mounted on this host, so there is nothing to freeze (for a running VM, use --qmp)", ErrInvalid, strings.Join(paths, ", "))
	}
	env := []string{"LIFEBOAT_MACHINE=" + o.Machine, "LIFEBOAT_DISKS=" + strings.Join(paths, " ")}
	if cons == recovery.App {
		pre := quiesce.Hook{Command: o.PreHook, Timeout: o.HookTimeout, Env: env}
		if err := pre.Run(ctx, "pre"); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			c.Consistency = recovery.File
			c.Notes = append(c.Notes, fmt.Sprintf("asked for app consistency, got %s: %v", fileOrCrash(mounts), err))
		}
		// The post-hook runs whatever happened to the pre-hook: it undoes
		// whatever part of it took effect.
		post := quiesce.Hook{Command: o.PostHook, Timeout: o.HookTimeout, Env: env}
		c.after = func() error { return post.Run(context.WithoutCancel(ctx), "post") }
		if len(mounts) == 0 && c.Consistency == recovery.File {
			c.Consistency = recovery.Crash
		}
	}
	if len(mounts) > 0 {
		fz, err := quiesce.Freeze(ctx, mounts, o.FreezeTimeout, o.Executable)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			c.Notes = append(c.Notes, fmt.Sprintf("asked for %s consistency, got crash: %v", cons, err))
			c.Consistency = recovery.Crash
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
				o.warn(fmt.Sprintf("%v: the filesystems stay frozen while the disks are read", err))
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
	if err := c.Release(); err != nil {
		return nil, err
	}
	for i, cl := range clones {
		src, err := container.OpenSnapshot(ctx, cl, paths[i], def.DiskFormat(names, names[i]))
		if err != nil {
			return nil, err
		}
		c.closers = append(c.closers, src.Close)
		c.Disks = append(c.Disks, backup.Disk{Name: names[i], Source: src, Format: src.Info.Format, Backing: src.Info.Backing})
	}
	return c, nil
}

func fileOrCrash(mounts []string) recovery.Consistency {
	if len(mounts) > 0 {
		return recovery.File
	}
	return recovery.Crash
}

// NBDTracking uses the NBD servers' dirty bitmap (o.Bitmap) when the
// machine's latest point in v was taken with it: the disks then read only
// the extents it marks (see the backup command's help).
func (c *Capture) NBDTracking(ctx context.Context, v *vault.Vault, o Options) error {
	points, err := recovery.List(ctx, v)
	if err != nil {
		return err
	}
	parent, _ := recovery.Find(points, o.Machine, "latest")
	tracking := "nbd:" + o.Bitmap
	for i := range c.Disks {
		d := &c.Disks[i]
		d.Tracking = tracking
		nd, ok := d.Source.(*nbd.Disk)
		if !ok {
			continue
		}
		if !nd.Client().HasMetaContext(nbd.DirtyBitmapContext(o.Bitmap)) {
			return fmt.Errorf("disk %s: the NBD server does not offer dirty bitmap %q (it agreed to %q)", d.Name, o.Bitmap, nd.Client().MetaContexts())
		}
		if parent == nil {
			continue
		}
		pd, ok := parent.Disk(d.Name)
		if !ok || pd.Tracking != tracking {
			o.warn(fmt.Sprintf("disk %s: point %s was not taken with bitmap %s: reading the whole disk and comparing", d.Name, parent.ID.Short(), o.Bitmap))
			continue
		}
		dirty, err := nd.DirtyExtents(ctx, o.Bitmap)
		if err != nil {
			return fmt.Errorf("disk %s: %w", d.Name, err)
		}
		d.Changed = &backup.Changes{Since: parent.ID.String(), Extents: dirty}
	}
	return nil
}
