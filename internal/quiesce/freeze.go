package quiesce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// FIFREEZE and FITHAW from linux/fs.h: _IOWR('X', 119, int), _IOWR('X', 120, int).
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// FreezeFS freezes one mounted filesystem: writes to it block until ThawFS.
func FreezeFS(mountPoint string) error {
	return fsIoctl(mountPoint, fiFreeze, "freezing")
}

// ThawFS thaws a filesystem. Thawing one that is not frozen is not an error.
func ThawFS(mountPoint string) error {
	err := fsIoctl(mountPoint, fiThaw, "thawing")
	if errors.Is(err, unix.EINVAL) {
		return nil // not frozen
	}
	return err
}

func fsIoctl(mountPoint string, req uint, what string) error {
	f, err := os.Open(mountPoint)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, mountPoint, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), req, 0); err != nil {
		return fmt.Errorf("%s filesystem %s: %w", what, mountPoint, err)
	}
	return nil
}

// WatchdogMain is the mounts watchdog (RunWatchdog): the items are mount
// points, thawed with FITHAW.
func WatchdogMain(ctx context.Context, stdin io.Reader, timeout time.Duration) error {
	return RunWatchdog(ctx, stdin, timeout, func(_ context.Context, m string) error { return ThawFS(m) })
}

// Frozen is a set of frozen filesystems.
type Frozen struct {
	mounts []string
	once   sync.Once
	err    error
	dog    *Watchdog
	timer  *time.Timer
	// Expired is closed if the timeout thawed the filesystems before Thaw.
	Expired chan struct{}
}

// Freeze freezes every mount, in order. On error the ones already frozen
// are thawed. The filesystems are thawed by Thaw, by the timeout, or by
// the watchdog process if this one dies.
func Freeze(ctx context.Context, mounts []string, timeout time.Duration, exe string) (*Frozen, error) {
	fz := &Frozen{Expired: make(chan struct{})}
	if exe != "" {
		// The watchdog starts first: nothing is frozen without it.
		// It thaws a little after our own timer, as the backstop.
		dog, err := StartWatchdog(exe, "__thaw-watchdog", "--timeout", (timeout + 5*time.Second).String(), "--mounts-on-stdin")
		if err != nil {
			return nil, err
		}
		fz.dog = dog
	}
	for _, m := range mounts {
		if err := ctx.Err(); err != nil {
			fz.Thaw()
			return nil, err
		}
		if strings.ContainsAny(m, "\n") {
			fz.Thaw()
			return nil, fmt.Errorf("freezing %q: a mount point with a newline in its name", m)
		}
		fz.dog.Arm(m)
		if err := FreezeFS(m); err != nil {
			fz.dog.Disarm(m)
			fz.Thaw()
			return nil, err
		}
		fz.mounts = append(fz.mounts, m)
	}
	fz.timer = time.AfterFunc(timeout, func() {
		close(fz.Expired)
		fz.Thaw()
	})
	return fz, nil
}

// Thaw thaws every frozen filesystem, once; later calls return the first
// result.
func (fz *Frozen) Thaw() error {
	fz.once.Do(func() {
		if fz.timer != nil {
			fz.timer.Stop()
		}
		var errs []error
		for i := len(fz.mounts) - 1; i >= 0; i-- {
			if err := ThawFS(fz.mounts[i]); err != nil {
				errs = append(errs, err)
				continue
			}
			// Thawed: if someone freezes it now, that is theirs.
			fz.dog.Disarm(fz.mounts[i])
		}
		if fz.dog != nil {
			if err := fz.dog.Stop(); err != nil {
				errs = append(errs, err)
			}
		}
		fz.err = errors.Join(errs...)
	})
	return fz.err
}

// Mounts lists the frozen mount points.
func (fz *Frozen) Mounts() string { return strings.Join(fz.mounts, ", ") }
