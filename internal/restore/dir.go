package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"lifeboat/internal/recovery"
)

// ErrExists means a file a restore would create is already there.
var ErrExists = errors.New("already exists")

// createNew creates a file a restore writes: images and definitions. It
// must not exist (O_EXCL), a symbolic link in its place is refused rather
// than followed (O_NOFOLLOW; O_EXCL alone refuses one too, this says so),
// and only its owner can read it (0600): a restored disk holds everything
// the machine held.
func createNew(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s %w: remove it first", path, ErrExists)
		}
		return nil, err
	}
	return f, nil
}

// DirPlan restores every disk of a point into a directory: DIR/NAME.raw for
// each disk, and the machine definition DIR/MACHINE<suffix>.json.
type DirPlan struct {
	Targets    []Target
	Definition string // path of the definition file
	point      *recovery.Point
	suffix     string
}

// PlanDir plans the restore of p into dir. The disk names come from the
// vault, so they are checked again here (recovery.Point.Check): a name
// that is not a plain file name would put the image outside dir. A
// definition file that already exists is refused now, before any image is
// written.
func PlanDir(p *recovery.Point, dir, suffix string) (*DirPlan, error) {
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("point %s: %w", p.ID.Short(), err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("restoring into %s: %w", dir, err)
	}
	def := p.Machine + suffix + ".json"
	if def != filepath.Base(def) || !filepath.IsLocal(def) {
		return nil, fmt.Errorf("suffix %q: the definition's file name %q is not a plain file name", suffix, def)
	}
	plan := &DirPlan{Definition: filepath.Join(dir, def), point: p, suffix: suffix}
	if _, err := os.Lstat(plan.Definition); err == nil {
		return nil, fmt.Errorf("machine definition %s %w: remove it first", plan.Definition, ErrExists)
	}
	for _, d := range p.Disks {
		plan.Targets = append(plan.Targets, Target{Disk: d, Path: filepath.Join(dir, d.Name+".raw")})
	}
	return plan, nil
}

// WriteDefinition writes the point's definition for the restored machine:
// its name suffixed, its disks pointing at the restored images (absolute
// paths, as PlanDir makes them). Like the images, it is a new file of mode 0600.
func (d *DirPlan) WriteDefinition() error {
	files := map[string]string{}
	for _, t := range d.Targets {
		files[t.Disk.Name] = t.Path
	}
	def, err := recovery.RestoredDefinition(d.point.Definition, d.suffix, files)
	if err != nil {
		return err
	}
	f, err := createNew(d.Definition)
	if err != nil {
		return fmt.Errorf("writing machine definition: %w", err)
	}
	_, err = f.Write(append(def, '\n'))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(d.Definition)
		return fmt.Errorf("writing machine definition %s: %w", d.Definition, err)
	}
	return nil
}
