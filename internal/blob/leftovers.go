package blob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Leftover is a partial object a Put left when its process was killed
// mid-write: never an object, never read, only taking space.
type Leftover struct {
	Name    string // relative to the store, as object names are
	Size    int64
	ModTime time.Time
}

// Leftovers is implemented by stores whose Put can leave partial objects
// behind (the directory store's temporary files; an S3 PUT leaves none).
type Leftovers interface {
	// ListLeftovers calls fn for every partial object.
	ListLeftovers(ctx context.Context, fn func(Leftover) error) error
	// DeleteLeftover removes one; a missing one is not an error.
	DeleteLeftover(ctx context.Context, name string) error
}

const tmpPrefix = ".tmp-"

// ListLeftovers lists the temporary files of Puts that never finished.
func (d *Dir) ListLeftovers(ctx context.Context, fn func(Leftover) error) error {
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if missing(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || !strings.HasPrefix(e.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // renamed into place or removed meanwhile
			}
			return err
		}
		return fn(Leftover{Name: filepath.ToSlash(rel), Size: info.Size(), ModTime: info.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("%s: listing partial uploads: %w", d, err)
	}
	return nil
}

// DeleteLeftover removes one temporary file named by ListLeftovers.
func (d *Dir) DeleteLeftover(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil || !strings.HasPrefix(path.Base(name), tmpPrefix) {
		return fmt.Errorf("%s: %q is not a partial upload: %w", d, name, ErrPermanent)
	}
	if err := os.Remove(d.path(name)); err != nil && !missing(err) {
		return fmt.Errorf("%s: removing partial upload %s: %w", d, name, err)
	}
	return nil
}
