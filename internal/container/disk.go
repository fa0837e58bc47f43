package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
	// Notes say what a backup of the disk should record: an image in
	// use, a container header read as raw.
	Notes []string
}

// ErrUnconfirmed means an image's header names a container format that
// reads other files, and nothing else says the image is one.
var ErrUnconfirmed = errors.New("image format not confirmed")

// Choose decides how to read the image at path whose format the user
// stated ("" for not stated) — the rule that keeps a guest from making
// the host read files for it by writing an image header into its raw
// disk, as QEMU's format probing once did:
//
//   - no container header: raw;
//   - stated raw, or named .raw: raw, whatever the header (with a note);
//   - a block device: raw unless stated (with a note);
//   - a regular file: the header's format, confirmed when the statement or
//     the file's extension (.qcow2, .vmdk, ...) names the same format.
//
// Open refuses an unconfirmed image that reads other files.
func Choose(path, stated string) (format string, confirmed bool, note string, err error) {
	sniffed, regular, err := SniffFile(path)
	if err != nil {
		return "", false, "", err
	}
	named := FormatOfName(path)
	if strings.EqualFold(filepath.Ext(path), ".img") {
		named = "" // .img is as often qcow2 as raw
	}
	switch {
	case sniffed == Raw:
		return Raw, true, "", nil
	case stated == Raw || (stated == "" && named == Raw):
		by := "its name"
		if stated == Raw {
			by = "the definition"
		}
		return Raw, true, fmt.Sprintf("%s starts with a %s header, but %s says it is raw: read as raw", path, sniffed, by), nil
	case stated == sniffed || named == sniffed:
		return sniffed, true, "", nil
	case !regular:
		return Raw, true, fmt.Sprintf("%s starts with a %s header: read as raw, as a block device is unless the definition gives its disk format %s", path, sniffed, sniffed), nil
	}
	return sniffed, false, "", nil
}

// Open opens the image file or block device at path for reading the disk
// its guest sees: a raw image directly, any other format through qemu-nbd
// (see the package doc), as Choose decides from the format the user
// stated ("" for none). Close it to stop the server.
func Open(ctx context.Context, path, stated string) (*Disk, error) {
	return open(ctx, path, path, stated)
}

// OpenSnapshot opens snapshot, an instant copy of the image at path (a
// reflink clone), as Open opens path: named path, its format chosen as
// path's is.
func OpenSnapshot(ctx context.Context, snapshot, path, stated string) (*Disk, error) {
	return open(ctx, snapshot, path, stated)
}

func open(ctx context.Context, read, path, stated string) (_ *Disk, err error) {
	format, confirmed, note, err := Choose(path, stated)
	if err != nil {
		return nil, err
	}
	info, err := Probe(ctx, read, format)
	if err != nil {
		return nil, err
	}
	if !confirmed && len(info.Files) > 0 {
		return nil, fmt.Errorf("disk %s has a %s header and reads other files (%s), but nothing says it is a %s image (a guest could write such a header into a raw disk): name it .%s, or give its disk format %s in the --definition: %w",
			path, format, strings.Join(info.Files, ", "), format, format, format, ErrUnconfirmed)
	}
	d := &Disk{path: path, Info: info, InUse: heldByOther(read)}
	if note != "" {
		d.Notes = append(d.Notes, note)
	}
	if w := d.inUseWarning(); w != "" {
		d.Notes = append(d.Notes, w)
	}
	if info.Format == Raw {
		f, err := source.OpenFile(read)
		if err != nil {
			return nil, err
		}
		d.Disk = f
		return d, nil
	}
	d.exp, err = Serve(ctx, read, ServeOptions{Format: info.Format, ForceShare: d.InUse})
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

// inUseWarning says what a backup of a disk a running QEMU holds open
// gets, or "" when nothing held it.
func (d *Disk) inUseWarning() string {
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
