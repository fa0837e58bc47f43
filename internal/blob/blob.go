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
//     missing object. GetRange of a range past the end is an error.
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
	"strings"
)

// Info describes one stored object.
type Info struct {
	Name string
	Size int64
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

// IsNotExist reports whether err means the object is missing.
func IsNotExist(err error) bool { return errors.Is(err, ErrNotExist) }

// IsPermanent reports whether retrying err is pointless.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) || errors.Is(err, ErrNotExist) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
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
