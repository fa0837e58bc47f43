package nbd

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"lifeboat/internal/source"
)

// FileBackend serves a raw image file or a block device. Holes come from
// SEEK_DATA/SEEK_HOLE, TRIM punches holes, WRITE_ZEROES punches or zeroes
// ranges with fallocate (writing zeros where that is not supported) and
// FLUSH is fdatasync.
type FileBackend struct {
	f       *os.File
	path    string
	size    int64
	regular bool
}

var _ AllocationBackend = (*FileBackend)(nil)

// OpenFileBackend opens path for serving; readOnly opens it read-only.
func OpenFileBackend(path string, readOnly bool) (*FileBackend, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s to serve: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening %s to serve: %w", path, err)
	}
	size, regular, err := source.DiskSize(f, st)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &FileBackend{f: f, path: path, regular: regular, size: size}, nil
}

// ReadAt reads from the file.
func (b *FileBackend) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

// WriteAt writes to the file.
func (b *FileBackend) WriteAt(p []byte, off int64) (int, error) { return b.f.WriteAt(p, off) }

// Size is the size the file had when opened.
func (b *FileBackend) Size() int64 { return b.size }

// Close closes the file.
func (b *FileBackend) Close() error { return b.f.Close() }

// Flush makes written data durable (fdatasync).
func (b *FileBackend) Flush(ctx context.Context) error {
	if err := unix.Fdatasync(int(b.f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", b.path, err)
	}
	return nil
}

// Trim punches a hole; where the file system cannot, it does nothing
// (trimming is advisory).
func (b *FileBackend) Trim(ctx context.Context, off, length int64) error {
	err := b.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err != nil && !unsupported(err) {
		return fmt.Errorf("punching a hole in %s: %w", b.path, err)
	}
	return nil
}

// WriteZeroes makes the range read as zeros: a punched hole unless noHole,
// else an allocated zeroed range, else written zeros.
func (b *FileBackend) WriteZeroes(ctx context.Context, off, length int64, noHole bool) error {
	if !noHole {
		err := b.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return fmt.Errorf("punching a hole in %s: %w", b.path, err)
		}
	}
	err := b.fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == nil {
		return nil
	}
	if !unsupported(err) {
		return fmt.Errorf("zeroing a range of %s: %w", b.path, err)
	}
	zeros := make([]byte, min(length, 1<<20))
	for done := int64(0); done < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(length-done, int64(len(zeros)))
		if _, err := b.f.WriteAt(zeros[:n], off+done); err != nil {
			return fmt.Errorf("writing zeros to %s: %w", b.path, err)
		}
		done += n
	}
	return nil
}

func (b *FileBackend) fallocate(mode uint32, off, length int64) error {
	if length == 0 {
		return nil
	}
	for {
		err := unix.Fallocate(int(b.f.Fd()), mode, off, length)
		if err != unix.EINTR {
			return err
		}
	}
}

func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENODEV)
}

// BlockStatus reports holes (StateHole|StateZero) and data with
// SEEK_DATA/SEEK_HOLE; a block device, or a file system without them, is
// all data.
func (b *FileBackend) BlockStatus(ctx context.Context, off, length int64) ([]Extent, error) {
	end := min(off+length, b.size)
	all := []Extent{{Offset: off, Length: end - off}}
	if !b.regular {
		return all, nil
	}
	fd := int(b.f.Fd())
	var out []Extent
	for pos := off; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = end // only a hole remains (or the file shrank)
		} else if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return all, nil
			}
			return nil, fmt.Errorf("SEEK_DATA in %s: %w", b.path, err)
		}
		if data > pos {
			out = append(out, Extent{Offset: pos, Length: min(data, end) - pos, Flags: StateHole | StateZero})
		}
		if data >= end {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE in %s: %w", b.path, err)
		}
		if hole <= data {
			hole = end // the file changed under us: call the rest data
		}
		hole = min(hole, end)
		out = append(out, Extent{Offset: data, Length: hole - data})
		pos = hole
	}
	return out, nil
}
