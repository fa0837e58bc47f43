package quiesce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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

// WaitParent is the first half of a watchdog process (lifeboat re-runs
// itself with a hidden command): it returns once its standard input
// closes (the parent finished or died) or timeout passes.
func WaitParent(stdin io.Reader, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// WatchdogMain is the mounts watchdog. Its parent tells it, one line on
// standard input each, "+MOUNT" before freezing a mount and "-MOUNT" if
// that freeze failed (the mount is someone else's freeze, or none). When
// the input closes (the parent finished or died) or timeout passes, it
// thaws the mounts announced and not retracted: never a filesystem that
// another tool froze.
func WatchdogMain(stdin io.Reader, timeout time.Duration) error {
	var mu sync.Mutex
	var mounts []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			line := sc.Text()
			if len(line) < 2 {
				continue
			}
			mu.Lock()
			switch line[0] {
			case '+':
				mounts = append(mounts, line[1:])
			case '-':
				mounts = slices.DeleteFunc(mounts, func(m string) bool { return m == line[1:] })
			}
			mu.Unlock()
		}
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
	mu.Lock()
	defer mu.Unlock()
	var errs []error
	for _, m := range mounts {
		if err := ThawFS(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
		// Announced before the freeze: a parent that dies between the two
		// leaves the watchdog thawing a filesystem that is not frozen,
		// which is harmless; the other order could leave one frozen.
		fz.dog.tell("+" + m)
		if err := FreezeFS(m); err != nil {
			fz.dog.tell("-" + m)
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
			}
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
