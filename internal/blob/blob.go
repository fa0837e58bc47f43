// Package blob is lifeboat's lowest storage layer: a flat namespace of
// immutable objects on a local directory, an S3 bucket or memory.
//
// The contract every Store must meet (checked by blobtest.Run):
//
//   - Names are slash-separated relative paths of [a-z0-9/._-]. A Store maps
//     them to files or keys; it never interprets them.
//   - Put creates an object atomically: a reader sees either no object or the
//     whole of it, never a prefix, including after a crash of the writer.
//     Putting a name that already exists replaces it with the same guarantee;
//     lifeboat itself only ever re-puts identical content (content-addressed
//     names) or the few documented mutable names, so a write-once store works.
//   - Get and GetRange return ErrNotExist (test with IsNotExist) for a
//     missing object. GetRange of a range past the end fails with
//     ErrOutOfRange.
//   - GetRange returns exactly length bytes or an error naming the object,
//     whatever the server announces. Get refuses an object larger than
//     MaxSize(name), the cap of its kind (limits.go), with ErrTooLarge, and
//     Put refuses to store one: a damaged or hostile store cannot make
//     lifeboat allocate more than a cap.
//   - List calls fn for every object whose name starts with prefix, in no
//     particular order; an error from fn stops the listing and is returned.
//   - Delete of a missing object is not an error.
//   - Errors that retrying cannot fix (missing bucket, access denied, invalid
//     name) are wrapped with ErrPermanent so that the Retry wrapper stops.
//
// Every method takes a context first and honours its cancellation.
package blob

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
)

// Info describes one stored object.
type Info struct {
	Name string
	Size int64
	// Stored is when the store wrote the object, by the store's own clock
	// (a file's modification time, S3's Last-Modified); zero where the
	// store does not say (memory). Soft delete trusts it over the times
	// sealed in objects, which whoever holds the passphrase can backdate.
	Stored time.Time
}

// Store is the storage interface the vault is built on.
type Store interface {
	// Put stores data under name, atomically.
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the whole object.
	Get(ctx context.Context, name string) ([]byte, error)
	// GetRange returns length bytes starting at offset.
	GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error)
	// Stat returns the object's size, or ErrNotExist.
	Stat(ctx context.Context, name string) (Info, error)
	// List calls fn for each object whose name has the given prefix.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Delete removes the object; a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// String names the store for messages, e.g. "s3://bucket/prefix".
	String() string
}

// ErrNotExist is returned (wrapped) when an object does not exist.
var ErrNotExist = errors.New("object does not exist")

// ErrPermanent marks errors a retry cannot fix.
var ErrPermanent = errors.New("permanent storage error")

// ErrOutOfRange marks a range read past the end of an object. lifeboat
// reads ranges its index recorded, so for it this is a truncated object:
// damage, not an outage. It is permanent (it wraps ErrPermanent).
var ErrOutOfRange = fmt.Errorf("object shorter than the range read: %w", ErrPermanent)

// IsNotExist reports whether err means the object is missing.
func IsNotExist(err error) bool { return errors.Is(err, ErrNotExist) }

// IsPermanent reports whether retrying err is pointless. The context's
// errors count as permanent, except a timeout of the transport's own
// (net/http's "timeout awaiting response headers" is also a
// context.DeadlineExceeded): a server that paused may answer the next
// attempt. Whether the caller's context ended is for the caller to ask
// its context, as Retry does.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrPermanent) || errors.Is(err, ErrNotExist) {
		return true
	}
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return !isTimeout(err)
}

// IsRefused reports whether the storage refused a write for good: a
// permanent error (access denied, say) or a file system that is read-only,
// full or not permitted.
func IsRefused(err error) bool {
	if errors.Is(err, ErrPermanent) {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EROFS, syscall.ENOSPC, syscall.EDQUOT, syscall.EACCES, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// IsUnreachable reports whether err is a network failure: a net.Error (a
// timeout, a refused or reset connection), but not a bare syscall.Errno,
// which satisfies net.Error too and is as often a local file's error (a
// missing file is ENOENT, not a network outage).
func IsUnreachable(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	var ne net.Error
	if !errors.As(err, &ne) {
		return false
	}
	_, errno := ne.(syscall.Errno)
	return !errno
}

// isTimeout reports whether err or an error it wraps is a timeout of the
// network (a net.Error's Timeout), not the bare context error.
func isTimeout(err error) bool {
	for err != nil {
		if err == context.DeadlineExceeded {
			return false
		}
		if t, ok := err.(interface{ Timeout() bool }); ok && t.Timeout() {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if isTimeout(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// notExist wraps ErrNotExist with the store and the name.
func notExist(store Store, name string) error {
	return fmt.Errorf("%s: %s: %w", store, name, ErrNotExist)
}

// ValidName reports whether name is acceptable as an object name.
func ValidName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
		return fmt.Errorf("invalid object name %q: %w", name, ErrPermanent)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("invalid object name %q: %w", name, ErrPermanent)
		}
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '/' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("invalid object name %q: %w", name, ErrPermanent)
		}
	}
	return nil
}

// RangeReaderInto is implemented by stores that can read a range into the
// caller's buffer, saving an allocation per read on hot paths (restore).
type RangeReaderInto interface {
	// GetRangeInto is GetRange, returning dst[:length] when dst has the
	// capacity and a new slice otherwise.
	GetRangeInto(ctx context.Context, name string, offset, length int64, dst []byte) ([]byte, error)
}

// ReadRange reads a range of an object, into dst when s supports it.
func ReadRange(ctx context.Context, s Store, name string, offset, length int64, dst []byte) ([]byte, error) {
	if r, ok := s.(RangeReaderInto); ok {
		return r.GetRangeInto(ctx, name, offset, length, dst)
	}
	return s.GetRange(ctx, name, offset, length)
}
