// Package mount shows a recovery point's disks as files and its file
// systems as directories, read-only, so that a lost file is a cp away:
//
//	DIR/disks/NAME      each disk, a read-only file served by FUSE from the
//	                    vault (internal/pointdisk: on demand, cached)
//	DIR/NAME/partN      each ext4 or XFS partition, loop-mounted read-only
//	DIR/NAME/disk       a disk that is one file system, without a table
//
// What a mount sets up is recorded in DIR/.lifeboat-mount.json before it
// is set up, so that Cleanup — lifeboat umount, or the next mount of DIR —
// undoes everything a killed mount left: file system mounts, loop devices,
// the FUSE mount (its process gone, "transport endpoint is not connected")
// and the directories.
package mount

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"lifeboat/internal/pointdisk"
	"lifeboat/internal/quiesce"
)

// stateFile records what a mount of DIR set up.
const stateFile = ".lifeboat-mount.json"

type state struct {
	PID    int      `json:"pid"`
	FUSE   string   `json:"fuse"`
	Loops  []string `json:"loops,omitempty"`
	Mounts []string `json:"mounts,omitempty"`
	Dirs   []string `json:"dirs,omitempty"`
}

// FS is a mounted point. Close undoes it.
type FS struct {
	Dir string
	// Disks are the disk files; Mounted the file systems mounted, by
	// directory, with their type.
	Disks   map[string]string
	Mounted map[string]string
	// Skipped says why partitions were not mounted.
	Skipped []string

	srv *fuse.Server
	st  state
}

// Mount mounts the disks of pt under dir (created if missing; it must be
// empty apart from a previous mount's leftovers, which are cleaned first).
// warn receives what is skipped.
func Mount(ctx context.Context, pt *pointdisk.Point, dir string) (_ *FS, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := Cleanup(ctx, dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if ents, err := os.ReadDir(dir); err != nil {
		return nil, err
	} else if len(ents) > 0 {
		return nil, fmt.Errorf("%s is not empty: mount a point on an empty directory", dir)
	}
	m := &FS{Dir: dir, Disks: map[string]string{}, Mounted: map[string]string{}}
	m.st = state{PID: os.Getpid(), FUSE: filepath.Join(dir, "disks")}
	defer func() {
		if err != nil {
			m.Close(context.WithoutCancel(ctx))
		}
	}()
	if err := os.Mkdir(m.st.FUSE, 0o755); err != nil {
		return nil, err
	}
	m.st.Dirs = append(m.st.Dirs, m.st.FUSE)
	if err := m.save(); err != nil {
		return nil, err
	}
	root := &rootNode{disks: pt.Disks}
	timeout := time.Hour // the point never changes
	m.srv, err = fs.Mount(m.st.FUSE, root, &fs.Options{
		MountOptions: fuse.MountOptions{FsName: "lifeboat:" + pt.Point.ID.Short(), Name: "lifeboat", DirectMount: true,
			Options: []string{"ro"}, MaxReadAhead: 1 << 20},
		EntryTimeout: &timeout, AttrTimeout: &timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("mounting the disks with FUSE on %s: %w", m.st.FUSE, err)
	}
	for _, d := range pt.Disks {
		file := filepath.Join(m.st.FUSE, d.Name())
		m.Disks[d.Name()] = file
		parts, err := Partitions(d, d.Size())
		if err != nil {
			m.Skipped = append(m.Skipped, fmt.Sprintf("disk %s: %v", d.Name(), err))
			continue
		}
		for _, p := range parts {
			if p.FS == "" {
				if p.Number != 0 {
					m.Skipped = append(m.Skipped, fmt.Sprintf("disk %s %s: no ext4 or XFS file system", d.Name(), p.Name()))
				}
				continue
			}
			if err := m.mountPart(ctx, d.Name(), file, p); err != nil {
				m.Skipped = append(m.Skipped, fmt.Sprintf("disk %s %s (%s): %v", d.Name(), p.Name(), p.FS, err))
			}
		}
	}
	return m, nil
}

// mountPart loop-mounts one partition read-only under DIR/DISK/partN.
func (m *FS) mountPart(ctx context.Context, disk, file string, p Partition) error {
	where := filepath.Join(m.Dir, disk, p.Name())
	if err := os.MkdirAll(where, 0o755); err != nil {
		return err
	}
	m.st.Dirs = append(m.st.Dirs, where, filepath.Dir(where))
	out, err := run(ctx, "losetup", "--find", "--show", "--read-only", "--offset", fmt.Sprint(p.Offset), "--sizelimit", fmt.Sprint(p.Length), file)
	if err != nil {
		return err
	}
	loop := strings.TrimSpace(out)
	m.st.Loops = append(m.st.Loops, loop)
	m.st.Mounts = append(m.st.Mounts, where)
	if err := m.save(); err != nil {
		return err
	}
	// No journal replay: the device is read-only, and so is the point.
	opts := "ro,noload"
	if p.FS == "xfs" {
		opts = "ro,norecovery"
	}
	if _, err := run(ctx, "mount", "-t", p.FS, "-o", opts, loop, where); err != nil {
		return err
	}
	m.Mounted[where] = p.FS
	return nil
}

func (m *FS) save() error {
	b, _ := json.Marshal(m.st)
	if err := os.WriteFile(filepath.Join(m.Dir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("recording the mount: %w", err)
	}
	return nil
}

// Wait blocks until the FUSE file system is unmounted (by Close, or from
// outside).
func (m *FS) Wait() { m.srv.Wait() }

// Close unmounts everything and removes what the mount created.
func (m *FS) Close(ctx context.Context) error {
	return undo(ctx, m.Dir, m.st, m.srv)
}

// Cleanup undoes what a mount of dir left, if anything: lifeboat umount,
// and the start of every mount. A mount whose process still runs is
// refused.
func Cleanup(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.PID != os.Getpid() && st.PID > 0 && syscall.Kill(st.PID, 0) == nil {
		// A live mount: ask it to finish (it unmounts everything itself).
		syscall.Kill(st.PID, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for syscall.Kill(st.PID, 0) == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("the mount of %s (pid %d) did not end after SIGTERM", dir, st.PID)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := os.Stat(filepath.Join(dir, stateFile)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	return undo(ctx, dir, st, nil)
}

// undo unmounts the file systems (lazily, if busy), detaches the loop
// devices, unmounts FUSE and removes the directories and the state file.
func undo(ctx context.Context, dir string, st state, srv *fuse.Server) error {
	var errs []error
	for i := len(st.Mounts) - 1; i >= 0; i-- {
		if mounted(st.Mounts[i]) {
			if err := syscall.Unmount(st.Mounts[i], 0); err != nil {
				if err := syscall.Unmount(st.Mounts[i], syscall.MNT_DETACH); err != nil {
					errs = append(errs, fmt.Errorf("unmounting %s: %w", st.Mounts[i], err))
				}
			}
		}
	}
	for _, loop := range st.Loops {
		run(ctx, "losetup", "--detach", loop) // gone already is fine
	}
	if srv != nil {
		if err := srv.Unmount(); err != nil && mounted(st.FUSE) {
			syscall.Unmount(st.FUSE, syscall.MNT_DETACH)
		}
	} else if st.FUSE != "" && mounted(st.FUSE) {
		if err := syscall.Unmount(st.FUSE, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", st.FUSE, err))
		}
	}
	for range 2 { // a disk's directory empties once its partitions' are gone
		for i := len(st.Dirs) - 1; i >= 0; i-- {
			os.Remove(st.Dirs[i]) // only if empty: never a file of the user's
		}
	}
	if len(errs) == 0 {
		os.Remove(filepath.Join(dir, stateFile))
	}
	return errors.Join(errs...)
}

// mounted reports whether path is a mount point.
func mounted(path string) bool { return quiesce.IsMountPoint(path) }

func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
