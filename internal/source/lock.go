package source

import (
	"os"

	"golang.org/x/sys/unix"
)

// HeldByOther reports whether another process holds a lock on any byte of
// the open file: QEMU takes open file description locks on every image it
// has open (a running guest's disk, an export), as do other tools that
// guard disk images. It reports false when the file system cannot tell.
func HeldByOther(f *os.File) bool {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}
