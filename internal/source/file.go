// Package source opens the disks lifeboat backs up: raw image files and
// block devices (and, later, NBD exports and live QEMU machines), and says
// which of their extents hold data.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Extent is a byte range of a disk.
type Extent struct {
	Offset, Length int64
}

// Disk is a disk to read. ReadAt must be safe for concurrent use.
type Disk interface {
	io.ReaderAt
	// Size is the disk's size in bytes.
	Size() int64
	// Source names the disk for messages and the point record.
	Source() string
	// DataExtents returns the extents that may hold non-zero data, sorted;
	// everything else reads as zeros. ok is false when unknown.
	DataExtents(ctx context.Context) (extents []Extent, ok bool, err error)
	Close() error
}

// ErrOpen marks a disk that could not be opened (missing, not permitted,
// not a disk): a mistake in what was asked for rather than a failing disk
// or storage.
var ErrOpen = errors.New("cannot open disk")

// File is a raw image file or a block device.
type File struct {
	f       *os.File
	path    string
	size    int64
	regular bool
}

// OpenFile opens a raw image or block device for reading.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrOpen, path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	size, regular, err := DiskSize(f, st)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	d := &File{f: f, path: path, regular: regular, size: size}
	// Reading a disk is one pass: tell the kernel to read ahead eagerly.
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	return d, nil
}

// DiskSize returns the size of an open disk — a regular file or a block
// device — and whether it is a regular file; anything else is an error.
func DiskSize(f *os.File, st os.FileInfo) (size int64, regular bool, err error) {
	switch {
	case st.Mode().IsRegular():
		return st.Size(), true, nil
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		n, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, false, fmt.Errorf("reading block device size: %w", err)
		}
		return n, false, nil
	}
	return 0, false, errors.New("not a regular file or block device")
}

func (d *File) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }
func (d *File) Size() int64                             { return d.size }
func (d *File) Source() string                          { return d.path }
func (d *File) Close() error                            { return d.f.Close() }

// DataExtents uses SEEK_DATA/SEEK_HOLE on regular files, so holes in
// sparse images are never read.
func (d *File) DataExtents(ctx context.Context) ([]Extent, bool, error) {
	if !d.regular {
		return nil, false, nil
	}
	fd := int(d.f.Fd())
	var out []Extent
	off := int64(0)
	for off < d.size {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return nil, false, nil
			}
			return nil, false, fmt.Errorf("disk %s: SEEK_DATA: %w", d.path, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, false, fmt.Errorf("disk %s: SEEK_HOLE: %w", d.path, err)
		}
		if end > d.size {
			end = d.size
		}
		out = append(out, Extent{Offset: start, Length: end - start})
		off = end
	}
	return out, true, nil
}
