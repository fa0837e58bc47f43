// Package discover finds the running QEMU machines of a host that
// lifeboat can protect through QMP: qemu-system and qemu-storage-daemon
// processes (from /proc/*/cmdline: their -qmp, -chardev + -mon and
// --monitor sockets, their -name and guest agent channel) and QMP sockets
// left in /run/qemu* directories. Sockets under libvirt's directories are
// libvirt's, not ours: a libvirt domain is protected through libvirt.
//
// Each QMP socket found is probed (a greeting and the list of disks,
// within a short deadline): QEMU serves one QMP client at a time, so a
// socket busy with another client is reported as such, not skipped.
package discover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"lifeboat/internal/qmp"
)

// Machine is one QEMU machine found.
type Machine struct {
	// Name is the machine's -name, else its QMP socket's base name.
	Name       string   `json:"name"`
	PID        int      `json:"pid,omitempty"`
	Program    string   `json:"program,omitempty"`
	QMP        string   `json:"qmp"`
	GuestAgent string   `json:"guest_agent,omitempty"`
	Disks      []string `json:"disks,omitempty"`
	// Error says why the probe failed (busy, refused); the socket is
	// still listed.
	Error string `json:"error,omitempty"`
}

// PIDText is the process ID as a table shows it: "-" when unknown.
func (m Machine) PIDText() string {
	if m.PID == 0 {
		return "-"
	}
	return strconv.Itoa(m.PID)
}

// Options say where to look. Zero values are the defaults.
type Options struct {
	// Proc is the proc file system (default /proc).
	Proc string
	// Dirs are globs of directories holding QMP sockets (default
	// /run/qemu*, /var/run/qemu*), searched two levels deep.
	Dirs []string
	// Probe is the deadline of each socket's probe (default 2 s); a
	// negative value probes nothing.
	Probe time.Duration
	// Under, when set, keeps only the sockets under this directory (the
	// probe of a socket takes QEMU's one QMP client slot for a moment:
	// tests on a shared host touch only their own).
	Under string
}

// notOurs are the directories of sockets that belong to libvirt.
var notOurs = []string{"/run/libvirt/", "/var/run/libvirt/", "/var/lib/libvirt/"}

func ours(path string) bool {
	for _, p := range notOurs {
		if strings.HasPrefix(path, p) {
			return false
		}
	}
	return true
}

// Find lists the QEMU machines of this host, by QMP socket path.
func Find(ctx context.Context, o Options) ([]Machine, error) {
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	if o.Dirs == nil {
		o.Dirs = []string{"/run/qemu*", "/var/run/qemu*"}
	}
	if o.Probe == 0 {
		o.Probe = 2 * time.Second
	}
	var found []Machine
	seen := map[string]bool{}
	entries, err := os.ReadDir(o.Proc)
	if err != nil {
		return nil, fmt.Errorf("listing processes in %s: %w", o.Proc, err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(o.Proc, e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or a kernel thread
		}
		args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		m, ok := ParseCmdline(args)
		if !ok {
			continue
		}
		m.PID = pid
		cwd, _ := os.Readlink(filepath.Join(o.Proc, e.Name(), "cwd"))
		m.QMP = absolute(cwd, m.QMP)
		if m.GuestAgent != "" {
			m.GuestAgent = absolute(cwd, m.GuestAgent)
		}
		if !ours(m.QMP) || seen[m.QMP] {
			continue
		}
		seen[m.QMP] = true
		found = append(found, m)
	}
	for _, glob := range o.Dirs {
		dirs, _ := filepath.Glob(glob)
		for _, dir := range dirs {
			for _, sock := range sockets(dir, 2) {
				if !ours(sock) || seen[sock] {
					continue
				}
				seen[sock] = true
				found = append(found, Machine{Name: baseName(sock), QMP: sock})
			}
		}
	}
	var out []Machine
	for _, m := range found {
		if o.Under != "" && !strings.HasPrefix(m.QMP, filepath.Clean(o.Under)+"/") {
			continue
		}
		if o.Probe > 0 {
			disks, err := probe(ctx, m.QMP, o.Probe)
			switch {
			case err == nil:
				m.Disks = disks
			case m.PID == 0:
				continue // a socket in a directory that does not speak QMP (a guest agent's)
			default:
				m.Error = err.Error()
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Machine) int { return strings.Compare(a.Name+a.QMP, b.Name+b.QMP) })
	return out, nil
}

func absolute(cwd, p string) string {
	if filepath.IsAbs(p) || cwd == "" {
		return filepath.Clean(p)
	}
	return filepath.Join(cwd, p)
}

// sockets lists the unix sockets in dir and below it, depth levels deep.
func sockets(dir string, depth int) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case e.Type()&os.ModeSocket != 0:
			out = append(out, path)
		case e.IsDir() && depth > 1:
			out = append(out, sockets(path, depth-1)...)
		}
	}
	return out
}

func baseName(sock string) string {
	b := filepath.Base(sock)
	for _, ext := range []string{".qmp", ".sock", ".socket", ".monitor"} {
		b = strings.TrimSuffix(b, ext)
	}
	return b
}

// probe greets the QMP socket and lists its disks.
func probe(ctx context.Context, sock string, within time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	mon, err := qmp.Dial(ctx, sock)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return nil, fmt.Errorf("no QMP greeting within %s (another client holds the socket?)", within)
		}
		return nil, err
	}
	defer mon.Close()
	disks, err := mon.Disks(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range disks {
		name := d.Device
		if name == "" {
			name = d.Node
		}
		names = append(names, name)
	}
	return names, nil
}

// ParseCmdline reads a QEMU process's arguments: whether it is
// qemu-system or qemu-storage-daemon with a QMP unix socket, and its
// name, socket and guest agent socket. Pure, for table tests.
func ParseCmdline(args []string) (Machine, bool) {
	if len(args) == 0 {
		return Machine{}, false
	}
	prog := filepath.Base(args[0])
	daemon := strings.HasPrefix(prog, "qemu-storage-daemon")
	if !daemon && !strings.HasPrefix(prog, "qemu-system-") && prog != "qemu-kvm" && prog != "kvm" {
		return Machine{}, false
	}
	m := Machine{Program: prog}
	chardevs := map[string]string{} // id -> unix socket path
	var monitors []string           // chardev ids of QMP monitors
	var gaDev string
	for i := 1; i < len(args); i++ {
		opt := args[i]
		if !strings.HasPrefix(opt, "-") {
			continue
		}
		opt = "-" + strings.TrimLeft(opt, "-")
		val := ""
		if k, v, ok := strings.Cut(opt, "="); ok && !strings.Contains(k, ",") {
			opt, val = k, v
		} else if i+1 < len(args) {
			val = args[i+1]
		}
		switch opt {
		case "-qmp", "-qmp-pretty":
			if p, ok := strings.CutPrefix(val, "unix:"); ok {
				p, _, _ = strings.Cut(p, ",")
				p = strings.TrimPrefix(p, "path=")
				if m.QMP == "" {
					m.QMP = p
				}
			}
		case "-chardev":
			kv := props(val)
			if strings.HasPrefix(val, "socket,") && kv["path"] != "" && kv["id"] != "" {
				chardevs[kv["id"]] = kv["path"]
			}
		case "-mon":
			kv := props(val)
			if kv["mode"] == "control" {
				monitors = append(monitors, kv["chardev"])
			}
		case "-monitor":
			if daemon {
				kv := props(val)
				id := kv["chardev"]
				if id == "" {
					id = strings.Split(val, ",")[0]
				}
				monitors = append(monitors, id)
			}
		case "-device":
			kv := props(val)
			if kv["name"] == "org.qemu.guest_agent.0" {
				gaDev = kv["chardev"]
			}
		case "-name":
			kv := props(val)
			if g := kv["guest"]; g != "" {
				m.Name = g
			} else if first := strings.Split(val, ",")[0]; !strings.Contains(first, "=") {
				m.Name = first
			}
		}
	}
	if m.QMP == "" {
		for _, id := range monitors {
			if p := chardevs[id]; p != "" {
				m.QMP = p
				break
			}
		}
	}
	if m.QMP == "" {
		return Machine{}, false
	}
	m.GuestAgent = chardevs[gaDev]
	if m.Name == "" {
		m.Name = baseName(m.QMP)
	}
	return m, true
}

// props reads QEMU's comma-separated key=value options (",," is a comma).
func props(s string) map[string]string {
	out := map[string]string{}
	s = strings.ReplaceAll(s, ",,", "\x00")
	for _, part := range strings.Split(s, ",") {
		part = strings.ReplaceAll(part, "\x00", ",")
		if k, v, ok := strings.Cut(part, "="); ok {
			out[k] = v
		}
	}
	return out
}
