// Package quiesce makes a point more than crash-consistent: it freezes the
// filesystems on a disk (FIFREEZE) around the snapshot instant, takes
// instant copies of image files where the host filesystem can (reflinks),
// and runs the operator's pre- and post-snapshot hooks.
//
// A frozen filesystem blocks every writer on it, so every freeze here is
// bounded: thaw runs on every return path, a watchdog process thaws the
// filesystems if lifeboat itself dies while they are frozen, and a
// timeout thaws them if the backup overruns.
package quiesce

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is a mounted filesystem.
type Mount struct {
	Point  string // mount point
	Device string // major:minor of the mounted device
	FSType string
	// ReadOnly is true when this mount or the filesystem itself is
	// mounted read-only.
	ReadOnly bool
}

// MountsOn returns the mounted filesystems whose data lives on path: a
// block device mounted directly, or an image file attached to loop
// devices that are mounted. It returns none for a disk nothing mounts.
func MountsOn(path string) ([]Mount, error) {
	all, err := mountsOf(path)
	return oncePerDevice(all), err
}

// WritableMounts returns the filesystems on path that are mounted
// read-write here: a backup that reads path without freezing them is at
// best crash-consistent, and their journal needs replaying after restore.
func WritableMounts(path string) ([]Mount, error) {
	all, err := mountsOf(path)
	return oncePerDevice(slices.DeleteFunc(all, func(m Mount) bool { return m.ReadOnly })), err
}

// CrashWarnings says, for each of paths mounted read-write here, that
// reading it unfrozen gives a crash-consistent point. A path that is not
// a local file or block device (an NBD URI) gives none.
func CrashWarnings(paths []string) []string {
	var out []string
	for _, p := range paths {
		ms, _ := WritableMounts(p)
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%s is mounted read-write at %s: the point is crash-consistent, and its filesystem will need journal replay after a restore (use --consistency file to freeze it)", p, m.Point))
		}
	}
	return out
}

// oncePerDevice keeps the first mount of each device: a filesystem
// mounted twice (bind mounts) is one filesystem.
func oncePerDevice(all []Mount) []Mount {
	var out []Mount
	seen := map[string]bool{}
	for _, m := range all {
		if !seen[m.Device] {
			seen[m.Device] = true
			out = append(out, m)
		}
	}
	return out
}

// mountsOf returns every mount whose device holds path's data.
func mountsOf(path string) ([]Mount, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("finding mounts of %s: %w", path, err)
	}
	var devs []string
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		var sys unix.Stat_t
		if err := unix.Stat(path, &sys); err != nil {
			return nil, fmt.Errorf("finding mounts of %s: %w", path, err)
		}
		devs = append(devs, fmt.Sprintf("%d:%d", unix.Major(sys.Rdev), unix.Minor(sys.Rdev)))
	case st.Mode().IsRegular():
		devs, err = loopDevicesOf(path)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s is not a regular file or block device", path)
	}
	if len(devs) == 0 {
		return nil, nil
	}
	devs = withStacked("/sys", devs)
	all, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []Mount
	for _, m := range all {
		if slices.Contains(devs, m.Device) {
			out = append(out, m)
		}
	}
	return out, nil
}

// withStacked adds to devs (major:minor) every block device built on
// them: their partitions, and the devices holding them (device-mapper,
// LVM, dm-crypt, md), recursively. A filesystem mounted on any of those
// lives on the disk.
func withStacked(sys string, devs []string) []string {
	seen := map[string]bool{}
	var out []string
	var walk func(dev string)
	walk = func(dev string) {
		if seen[dev] {
			return
		}
		seen[dev] = true
		out = append(out, dev)
		dir := filepath.Join(sys, "dev/block", dev)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			// Partitions are subdirectories with a "partition" file.
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err == nil {
				if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev")); err == nil {
					walk(strings.TrimSpace(string(b)))
				}
			}
		}
		holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
		for _, h := range holders {
			if b, err := os.ReadFile(filepath.Join(sys, "class/block", h.Name(), "dev")); err == nil {
				walk(strings.TrimSpace(string(b)))
			}
		}
	}
	for _, d := range devs {
		walk(d)
	}
	return out
}

// loopDevicesOf lists the major:minor of loop devices backed by file.
func loopDevicesOf(file string) ([]string, error) {
	abs, err := filepath.EvalSymlinks(file)
	if err != nil {
		return nil, err
	}
	var fst unix.Stat_t
	if err := unix.Stat(abs, &fst); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, fmt.Errorf("listing block devices: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err != nil {
			continue // not attached
		}
		backing := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		var bst unix.Stat_t
		if unix.Stat(backing, &bst) != nil || bst.Dev != fst.Dev || bst.Ino != fst.Ino {
			continue
		}
		dev, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "dev"))
		if err != nil {
			return nil, err
		}
		out = append(out, strings.TrimSpace(string(dev)))
	}
	return out, nil
}

func readMountinfo(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountinfoLine(sc.Text())
		if ok {
			out = append(out, m)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	return out, nil
}

// parseMountinfoLine reads one line of /proc/PID/mountinfo (proc(5)).
func parseMountinfoLine(line string) (Mount, bool) {
	fields := strings.Fields(line)
	if len(fields) < 10 {
		return Mount{}, false
	}
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+1 >= len(fields) {
		return Mount{}, false
	}
	ro := slices.Contains(strings.Split(fields[5], ","), "ro")
	if sep+3 < len(fields) && slices.Contains(strings.Split(fields[sep+3], ","), "ro") {
		ro = true
	}
	return Mount{Point: unescapeOctal(fields[4]), Device: fields[2], FSType: fields[sep+1], ReadOnly: ro}, true
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// IsMountPoint reports whether path is where something is mounted, in
// this process's mount namespace.
func IsMountPoint(path string) bool {
	all, err := readMountinfo("/proc/self/mountinfo")
	return err == nil && slices.ContainsFunc(all, func(m Mount) bool { return m.Point == path })
}

// SameFilesystem reports whether path lives on mount m (so freezing m
// would block writes to path).
func SameFilesystem(path string, m Mount) bool {
	var st unix.Stat_t
	for p := path; ; p = filepath.Dir(p) {
		if unix.Stat(p, &st) == nil {
			break
		}
		if p == filepath.Dir(p) {
			return false
		}
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)) == m.Device
}
