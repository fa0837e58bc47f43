package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"lifeboat/internal/recovery"
)

// Request says what to restore and where: the restore command's modes.
type Request struct {
	// Dir receives every disk as Dir/NAME.raw (and WriteDefinition the
	// machine definition).
	Dir string
	// Disk restores only this disk of the point.
	Disk string
	// File is where Disk goes: a new file, or with InPlace an existing one.
	File string
	// InPlace reverts existing disks, writing only blocks that differ:
	// File, or without it the images the point records.
	InPlace bool
}

// Validate checks that the request names exactly one mode.
func (r Request) Validate() error {
	modes := 0
	for _, on := range []bool{r.Dir != "", r.File != "", r.InPlace && r.File == ""} {
		if on {
			modes++
		}
	}
	if modes != 1 {
		return errors.New("give exactly one of --to DIR, --disk NAME --to-file PATH, or --in-place")
	}
	if (r.File != "") != (r.Disk != "") && !(r.InPlace && r.Disk != "" && r.File == "") {
		return errors.New("--to-file needs --disk NAME and --disk needs --to-file (or --in-place)")
	}
	return nil
}

// ErrFormat means a restore was asked to write an image format it cannot.
var ErrFormat = errors.New("unsupported image format")

// Plan turns a request into the targets Run writes. A disk the point
// does not have is recovery.ErrNoPoint; an in-place revert of a disk whose
// image the point does not record is recovery.ErrNoImage.
func Plan(p *recovery.Point, req Request) ([]Target, error) {
	var targets []Target
	for _, d := range p.Disks {
		if req.Disk != "" && d.Name != req.Disk {
			continue
		}
		t := Target{Disk: d, InPlace: req.InPlace, Format: "raw"}
		switch {
		case req.File != "":
			t.Path = req.File
		case req.Dir != "":
			t.Path = filepath.Join(req.Dir, d.Name+".raw")
		default:
			path, err := d.InPlacePath()
			if err != nil {
				return nil, fmt.Errorf("point %s: %w", p.ID.Short(), err)
			}
			t.Path = path
			if d.ImageFormat != "" && d.ImageFormat != "raw" {
				// Writing raw blocks into a qcow2 file would destroy it.
				return nil, fmt.Errorf("point %s: disk %s: its image %s is %s, and in-place restore writes raw images only: %w",
					p.ID.Short(), d.Name, path, d.ImageFormat, ErrFormat)
			}
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		var names []string
		for _, d := range p.Disks {
			names = append(names, d.Name)
		}
		return nil, fmt.Errorf("%w: point %s has no disk %q (it has %s)", recovery.ErrNoPoint, p.ID.Short(), req.Disk, strings.Join(names, ", "))
	}
	return targets, nil
}

// WriteDefinition writes the definition of the restored machine into dir
// as NAME.json, NAME being the machine's restored name, with every disk
// naming its image in targets (recovery.RestoredDefinition). It returns
// the file's path and the rewritten definition, whose Warnings the caller
// should show.
func WriteDefinition(p *recovery.Point, dir string, targets []Target, opts recovery.RestoreOptions) (string, *recovery.Restored, error) {
	disks := make([]recovery.RestoredDisk, len(targets))
	for i, t := range targets {
		abs, err := filepath.Abs(t.Path)
		if err != nil {
			return "", nil, fmt.Errorf("restored image %s: %w", t.Path, err)
		}
		disks[i] = recovery.RestoredDisk{Name: t.Disk.Name, File: abs, Format: t.format()}
	}
	r, err := recovery.RestoredDefinition(p.Definition, disks, opts)
	if err != nil {
		return "", nil, err
	}
	name := r.Name
	if name == "" {
		name = recovery.RestoredName(p.Machine, opts.Suffix)
	}
	if err := recovery.ValidName("restored machine", name); err != nil {
		return "", nil, err // the file name comes from the point: never a path
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, append(r.JSON, '\n'), 0o644); err != nil {
		return "", nil, fmt.Errorf("writing the restored definition: %w", err)
	}
	return path, r, nil
}
