package quiesce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Clone makes an instant copy-on-write copy of the regular file src next
// to it (FICLONE), for filesystems that share extents (XFS, Btrfs, ...).
// It returns errNoReflink-wrapped errors where the filesystem cannot.
func Clone(src string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("cloning %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(src), "."+filepath.Base(src)+".lifeboat-snap-*")
	if err != nil {
		return "", fmt.Errorf("cloning %s: %w", src, err)
	}
	name := out.Name()
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	out.Close()
	if err != nil {
		os.Remove(name)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			return "", fmt.Errorf("cloning %s: %w", src, errNoReflink)
		}
		return "", fmt.Errorf("cloning %s: %w", src, err)
	}
	return name, nil
}

var errNoReflink = errors.New("the filesystem cannot clone files")

// NoReflinks reports whether err from Clone only means the filesystem
// cannot clone files (as opposed to a real failure worth a warning).
func NoReflinks(err error) bool { return errors.Is(err, errNoReflink) }
