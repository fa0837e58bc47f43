package container

import (
	"context"
	"errors"
	"fmt"
	"os"

	"lifeboat/internal/nbd"
	"lifeboat/internal/source"
)

// Disk is an image file or block device opened for backup: the disk its
// guest sees, whatever the container. It is a source.Disk named by its path.
type Disk struct {
	source.Disk
	path string
	exp  *Export
	// Info is what the image is: its format, size and backing chain.
	Info Info
	// InUse means another process (a running QEMU) held a lock on the
	// image when it was opened: it may change while it is read.
	InUse bool
}

// Open opens the image file or block device at path for reading the disk
// its guest sees: a raw image directly, any other format through qemu-nbd
// (see the package doc). Close it to stop the server.
func Open(ctx context.Context, path string) (_ *Disk, err error) {
	info, err := Probe(ctx, path)
	if err != nil {
		return nil, err
	}
	d := &Disk{path: path, Info: info, InUse: heldByOther(path)}
	if info.Format == Raw {
		f, err := source.OpenFile(path)
		if err != nil {
			return nil, err
		}
		d.Disk = f
		return d, nil
	}
	d.exp, err = Serve(ctx, path, ServeOptions{Format: info.Format, ForceShare: d.InUse})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.exp.Close()
		}
	}()
	c, err := d.exp.Dial(ctx, nbd.WithMetaContexts(nbd.ContextBaseAllocation))
	if err != nil {
		return nil, err
	}
	d.Disk = nbd.NewDisk(c, path)
	return d, nil
}

func heldByOther(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return source.HeldByOther(f)
}

// InUseWarning says what a backup of a disk a running QEMU holds open
// gets, or "" when nothing held it.
func (d *Disk) InUseWarning() string {
	if !d.InUse {
		return ""
	}
	what := "the point is crash-consistent at best"
	if d.Info.Format != Raw {
		what = "the point may not even be crash-consistent: QEMU keeps part of the " + d.Info.Format + " metadata in memory"
	}
	return fmt.Sprintf("%s is held open by another process (a running QEMU?) and may change while it is read: %s; back up a running machine with --qmp", d.path, what)
}

// Source names the disk by its path.
func (d *Disk) Source() string { return d.path }

// ReadersWanted passes on how many reads the disk wants in flight
// (backup.ConcurrentReader): several over NBD, one on a file.
func (d *Disk) ReadersWanted() int {
	if c, ok := d.Disk.(interface{ ReadersWanted() int }); ok {
		return c.ReadersWanted()
	}
	return 1
}

// Close closes the disk and stops its server.
func (d *Disk) Close() error {
	err := d.Disk.Close()
	if d.exp != nil {
		err = errors.Join(err, d.exp.Close())
	}
	return err
}
