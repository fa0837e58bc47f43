package blob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"lifeboat/internal/directio"
)

// Dir is a Store on a local directory. Objects are files; a Put writes a
// temporary file, fsyncs it, renames it into place and fsyncs the directory,
// so a crash leaves either the old state or the whole new object.
type Dir struct {
	root string
}

// NewDir returns a Store rooted at dir, which must exist.
func NewDir(dir string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("vault directory %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("vault directory %s: %w", dir, ErrNotExist)
		}
		return nil, fmt.Errorf("vault directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("vault directory %s: not a directory: %w", dir, ErrPermanent)
	}
	return &Dir{root: abs}, nil
}

func (d *Dir) String() string { return d.root }

func (d *Dir) path(name string) string { return filepath.Join(d.root, filepath.FromSlash(name)) }

func (d *Dir) Put(ctx context.Context, name string, data []byte) error {
	return d.put(ctx, name, data, false)
}

// ErrExists is returned (wrapped) by Create for a name already taken.
var ErrExists = fmt.Errorf("object already exists: %w", ErrPermanent)

// Create is Put that never replaces an object: the temporary file is
// linked to the name, which fails if the name exists (ErrExists), and
// then removed. An append-only endpoint (vault serve) stores with it.
func (d *Dir) Create(ctx context.Context, name string, data []byte) error {
	return d.put(ctx, name, data, true)
}

func (d *Dir) put(ctx context.Context, name string, data []byte, noReplace bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkSize(d, name, int64(len(data))); err != nil {
		return err
	}
	final := d.path(name)
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%s: creating directory for %s: %w", d, name, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("%s: writing %s: %w", d, name, err)
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	if err := writeObject(tmp, data); err != nil {
		cleanup()
		return fmt.Errorf("%s: writing %s: %w", d, name, err)
	}
	if err := tmp.Sync(); err != nil {
		cleanup()
		return fmt.Errorf("%s: syncing %s: %w", d, name, err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("%s: writing %s: %w", d, name, err)
	}
	if noReplace {
		err := os.Link(tmp.Name(), final)
		os.Remove(tmp.Name())
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %s: %w", d, name, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("%s: linking %s: %w", d, name, err)
		}
		return syncDir(dir)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("%s: renaming %s: %w", d, name, err)
	}
	return syncDir(dir)
}

// directMin is the size from which Put writes around the page cache: pack
// files, which nothing reads back soon after a backup.
const directMin = 1 << 20

func writeObject(f *os.File, data []byte) error {
	if len(data) < directMin || !directio.Aligned(data) {
		_, err := f.Write(data)
		return err
	}
	w := directio.NewWriter(f)
	_, err := w.WriteAt(data, 0)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// missing reports whether a file system error means that there is no such
// object: the file is missing, or one of its parents is missing or a file.
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// open opens the object's file. A directory is not an object: the leading
// components of an object's name do not exist as objects.
func (d *Dir) open(name string) (*os.File, fs.FileInfo, error) {
	if err := ValidName(name); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(d.path(name))
	if err != nil {
		if missing(err) {
			return nil, nil, notExist(d, name)
		}
		return nil, nil, fmt.Errorf("%s: opening %s: %w", d, name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: opening %s: %w", d, name, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, nil, notExist(d, name)
	}
	return f, st, nil
}

func (d *Dir) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, st, err := d.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := readCapped(d, name, f, st.Size())
	if errors.Is(err, ErrTooLarge) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", d, name, err)
	}
	return data, nil
}

func (d *Dir) GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error) {
	return d.GetRangeInto(ctx, name, offset, length, nil)
}

// GetRangeInto is GetRange reading into dst's memory when it is large
// enough (RangeReaderInto).
func (d *Dir) GetRangeInto(ctx context.Context, name string, offset, length int64, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("%s: %s: invalid range %d+%d: %w", d, name, offset, length, ErrPermanent)
	}
	f, st, err := d.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size := st.Size(); offset > size || length > size-offset {
		return nil, fmt.Errorf("%s: %s: range %d+%d past the end of the object of %d bytes: %w",
			d, name, offset, length, size, ErrOutOfRange)
	}
	buf := dst[:0]
	if int64(cap(buf)) < length {
		buf = make([]byte, length)
	}
	buf = buf[:length]
	if _, err := f.ReadAt(buf, offset); err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", d, name, err)
	}
	return buf, nil
}

func (d *Dir) Stat(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	st, err := os.Stat(d.path(name))
	if err != nil {
		if missing(err) {
			return Info{}, notExist(d, name)
		}
		return Info{}, fmt.Errorf("%s: %s: %w", d, name, err)
	}
	if st.IsDir() {
		return Info{}, notExist(d, name)
	}
	return Info{Name: name, Size: st.Size(), Stored: st.ModTime()}, nil
}

// validPrefix checks that prefix can begin a valid name, so that a listing
// cannot escape the store: the components before its last slash form a valid
// name and the rest uses only the characters of names.
func validPrefix(prefix string) error {
	i := strings.LastIndex(prefix, "/")
	if i >= 0 && ValidName(prefix[:i]) != nil {
		return fmt.Errorf("invalid prefix %q: %w", prefix, ErrPermanent)
	}
	for _, r := range prefix[i+1:] {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("invalid prefix %q: %w", prefix, ErrPermanent)
		}
	}
	return nil
}

func (d *Dir) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("%s: listing: %w", d, err)
	}
	// Walk from the deepest directory the prefix names completely.
	start := d.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = d.path(prefix[:i])
	}
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if missing(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		return fn(Info{Name: name, Size: info.Size(), Stored: info.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("%s: listing %q: %w", d, prefix, err)
	}
	return nil
}

func (d *Dir) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	p := d.path(name)
	err := os.Remove(p)
	if err != nil && !missing(err) {
		if st, serr := os.Lstat(p); serr == nil && st.IsDir() {
			return nil // a directory is not an object: nothing to delete
		}
		return fmt.Errorf("%s: deleting %s: %w", d, name, err)
	}
	return nil
}
