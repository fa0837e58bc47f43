package restore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"lifeboat/internal/container"
	"lifeboat/internal/nbd"
)

// ErrFormat means an image format was asked for that lifeboat does not
// write, or that contradicts the target's name or its existing format.
var ErrFormat = errors.New("bad image format")

// inPlaceFormat decides the format an in-place target is written in: the
// one asked for, else the one the point recorded for the disk, else as a
// backup would read it (container.Choose). A container format must be
// what the target's header says; raw is written as raw whatever it says.
func inPlaceFormat(ctx context.Context, tg Target) (container.Info, error) {
	sniffed, _, err := container.SniffFile(tg.Path)
	if err != nil {
		return container.Info{}, err
	}
	want, confirmed := cmp.Or(tg.Format, tg.Disk.Format), true
	if want == "" {
		if want, confirmed, _, err = container.Choose(tg.Path, ""); err != nil {
			return container.Info{}, err
		}
	}
	if want != container.Raw && want != sniffed {
		return container.Info{}, fmt.Errorf("%s is a %s image, not %s: %w", tg.Path, sniffed, want, ErrFormat)
	}
	info, err := container.Probe(ctx, tg.Path, want)
	if err != nil {
		return container.Info{}, err
	}
	if !confirmed && len(info.Files) > 0 {
		return container.Info{}, fmt.Errorf("%s has a %s header and reads other files (%s), but nothing says it is a %s image: give --format %s: %w",
			tg.Path, want, strings.Join(info.Files, ", "), want, want, container.ErrUnconfirmed)
	}
	return info, nil
}

// served is an image (qcow2, ...) written through qemu-nbd.
type served struct {
	exp *container.Export
	c   *nbd.Client
}

// create makes a new image of t.Format, sparse: the restore then writes
// only the non-zero blocks into it, which leaves every other cluster
// unallocated. The file is created as every file a restore makes
// (createNew), then formatted.
func (t *target) create(ctx context.Context) error {
	if t.Format != container.QCOW2 {
		return fmt.Errorf("restoring disk %s: format %q: lifeboat writes raw or qcow2: %w", t.Disk.Name, t.Format, ErrFormat)
	}
	f, err := createNew(t.Path)
	if err != nil {
		if errors.Is(err, ErrExists) {
			return fmt.Errorf("restoring disk %s: %w: remove it, or use --in-place to revert it", t.Disk.Name, err)
		}
		return fmt.Errorf("restoring disk %s: %w: %w", t.Disk.Name, ErrDiskWrite, err)
	}
	f.Close()
	if err := container.Create(ctx, t.Path, t.Format, t.m.Size); err != nil {
		os.Remove(t.Path)
		return fmt.Errorf("restoring disk %s: %w", t.Disk.Name, err)
	}
	if err := t.serve(ctx, container.QCOW2); err != nil {
		os.Remove(t.Path)
		return err
	}
	return nil
}

// serveInPlace opens an existing image to revert it, after the same
// checks as a raw one: not held by a running QEMU, and the same size.
func (t *target) serveInPlace(ctx context.Context, info container.Info) error {
	f, err := os.Open(t.Path)
	if err != nil {
		return fmt.Errorf("restoring disk %s in place: %w", t.Disk.Name, err)
	}
	err = checkUnlocked(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("restoring disk %s in place: %s %w", t.Disk.Name, t.Path, err)
	}
	if info.VirtualSize != t.m.Size {
		return fmt.Errorf("restoring disk %s in place: %s is a %s image of a %d-byte disk, the point's disk is %d: %w",
			t.Disk.Name, t.Path, info.Format, info.VirtualSize, t.m.Size, ErrSizeMismatch)
	}
	return t.serve(ctx, info.Format)
}

func (t *target) serve(ctx context.Context, format string) error {
	exp, err := container.Serve(ctx, t.Path, container.ServeOptions{Format: format, Writable: true})
	if err != nil {
		return fmt.Errorf("restoring disk %s: %w", t.Disk.Name, err)
	}
	c, err := exp.Dial(ctx)
	if err != nil {
		exp.Close()
		return fmt.Errorf("restoring disk %s: %w", t.Disk.Name, err)
	}
	if c.ReadOnly() || c.Size() != t.m.Size {
		c.Close()
		exp.Close()
		return fmt.Errorf("restoring disk %s: qemu-nbd serves %s read-only or as %d bytes, want %d writable", t.Disk.Name, t.Path, c.Size(), t.m.Size)
	}
	t.img = &served{exp: exp, c: c}
	return nil
}

func (t *target) readAt(ctx context.Context, p []byte, off int64) error {
	if t.img != nil {
		return t.img.c.Pread(ctx, p, off, 0)
	}
	_, err := t.f.ReadAt(p, off)
	return err
}

func (t *target) writeAt(ctx context.Context, p []byte, off int64) error {
	if t.img != nil {
		return t.img.c.Pwrite(ctx, p, off, 0)
	}
	_, err := t.w.WriteAt(p, off)
	return err
}

func (t *target) sync(ctx context.Context) error {
	if t.img != nil {
		return t.img.c.Flush(ctx)
	}
	return t.f.Sync()
}

// close closes the target; for a served image that includes qemu-nbd
// writing it out, and an error means it may not have.
func (t *target) close() error {
	if t.img != nil {
		return errors.Join(t.img.c.Close(), t.img.exp.Close())
	}
	if t.f == nil {
		return nil
	}
	t.w.Close()
	return t.f.Close()
}
