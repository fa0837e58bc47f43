// Package libvirttest runs a private libvirt daemon for tests, and test
// domains in it that boot internal/vmtest's kernel and initramfs under TCG.
//
// The daemon is the system one (libvirtd, as root) started in its own mount
// namespace with a temporary directory bound over /run/libvirt,
// /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt:
// it shares nothing with a daemon the host may run, and everything it
// leaves goes with the directory. There is no systemd here, so its QEMUs
// log to files (stdio_handler "file") instead of virtlogd, and run as root
// without security drivers, namespaces or cgroups. Clients reach it at
// URI(), qemu:///system?socket=... .
package libvirttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lifeboat/internal/libvirt"
	"lifeboat/internal/vmtest"
)

// Daemon is a private libvirtd.
type Daemon struct {
	Dir    string
	cmd    *exec.Cmd
	pid    int
	exited chan error
	log    bytes.Buffer
}

var shared struct {
	once sync.Once
	d    *Daemon
	err  error
}

// Start returns the test binary's daemon, starting it on first use. It
// skips the test when libvirtd, unshare or root is missing, unless VMs are
// required (vmtest.Required). Call Stop from TestMain.
func Start(t testing.TB) *Daemon {
	t.Helper()
	vmtest.RequireBinary(t, "libvirtd")
	vmtest.RequireBinary(t, "unshare")
	if os.Geteuid() != 0 {
		if vmtest.Required() {
			t.Fatal("libvirt tests need root (a private system daemon)")
		}
		t.Skip("libvirt tests need root (a private system daemon)")
	}
	shared.once.Do(func() { shared.d, shared.err = startDaemon() })
	if shared.err != nil {
		t.Fatalf("starting a private libvirtd: %v", shared.err)
	}
	return shared.d
}

// Stop stops the daemon Start started, after destroying its domains.
func Stop() {
	if shared.d != nil {
		shared.d.stop()
	}
}

const qemuConf = `user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
`

// binds are the daemon's directories and the names of their private
// copies.
var binds = [][2]string{{"/run/libvirt", "run"}, {"/var/lib/libvirt", "lib"}, {"/var/cache/libvirt", "cache"},
	{"/var/log/libvirt", "log"}, {"/etc/libvirt", "etc"}}

func startDaemon() (*Daemon, error) {
	// Short: the daemon's sockets live here (108-byte limit).
	dir, err := os.MkdirTemp("", "lblv")
	if err != nil {
		return nil, err
	}
	d := &Daemon{Dir: dir}
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, b := range binds {
		src := filepath.Join(dir, b[1])
		if err := os.MkdirAll(src, 0o755); err != nil {
			return nil, err
		}
		fmt.Fprintf(&script, "mkdir -p %s && mount --bind %s %s\n", b[0], src, b[0])
	}
	// Its own pid file: libvirtd's default, /run/libvirtd.pid, is shared
	// with any other libvirtd on the host (another package's tests).
	fmt.Fprintf(&script, "exec libvirtd --pid-file %s\n", filepath.Join(dir, "run", "libvirtd.pid"))
	etc := filepath.Join(dir, "etc")
	if err := os.WriteFile(filepath.Join(etc, "qemu.conf"), []byte(qemuConf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(etc, "libvirtd.conf"), []byte("log_outputs = \"3:stderr\"\n"), 0o644); err != nil {
		return nil, err
	}
	d.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script.String())
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting libvirtd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	sock := d.Socket()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("libvirtd exited (%v):\n%s", err, d.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.cmd.Process.Kill()
			return nil, fmt.Errorf("libvirtd did not listen on %s within a minute:\n%s", sock, d.log.String())
		}
	}
	d.pid, d.exited = d.cmd.Process.Pid, exited
	return d, nil
}

// Socket is the daemon's read-write socket.
func (d *Daemon) Socket() string { return filepath.Join(d.Dir, "run", "libvirt-sock") }

// URI connects to the daemon.
func (d *Daemon) URI() string { return "qemu:///system?socket=" + d.Socket() }

func (d *Daemon) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, err := libvirt.Dial(ctx, d.URI()); err == nil {
		if doms, err := c.Domains(ctx); err == nil {
			for _, dom := range doms {
				if dom.Running {
					c.Destroy(ctx, &dom)
				}
			}
		}
		c.Close()
	}
	if d.pid > 0 { // never 0 or -1: those signal whole groups
		syscall.Kill(d.pid, syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(d.pid, syscall.SIGKILL)
			<-d.exited
		}
	}
	os.RemoveAll(d.Dir)
}

// Domain is a test domain defined in the daemon.
type Domain struct {
	Name string
	// Console is the file the guest's serial console is written to.
	Console string
	XML     string
}

// DomainConfig describes a test domain.
type DomainConfig struct {
	Name     string
	Disks    []vmtest.Disk // attached in order as vda, vdb, ... (virtio)
	Workload string        // vmtest's workloads; default idle
	Append   []string
	// Agent adds the guest agent's channel (qemu-ga runs in the guest).
	Agent bool
}

// DomainXML is the XML of a TCG test domain booting vmtest's assets.
func DomainXML(t testing.TB, cfg DomainConfig, console string) string {
	kernel, initrd := vmtest.Assets(t)
	if cfg.Workload == "" {
		cfg.Workload = "idle"
	}
	cmdline := append([]string{"console=ttyS0", "panic=-1", "mitigations=off", "quiet", "lifeboat.workload=" + cfg.Workload}, cfg.Append...)
	var disks strings.Builder
	for i, d := range cfg.Disks {
		fmt.Fprintf(&disks, "<disk type='file' device='disk'><driver name='qemu' type='%s'/><source file='%s'/><target dev='vd%c' bus='virtio'/></disk>\n",
			d.Format, d.Path, 'a'+i)
	}
	agent := ""
	if cfg.Agent {
		agent = "<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
	}
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
%s    <serial type='file'><source path='%s' append='on'/><target port='0'/></serial>
    %s
    <interface type='user'><mac address='52:54:00:00:00:0a'/><model type='virtio'/></interface>
    <memballoon model='none'/>
  </devices>
</domain>`, cfg.Name, kernel, initrd, strings.Join(cmdline, " "), disks.String(), console, agent)
}

// Define defines a test domain and registers its removal with t.Cleanup.
func (d *Daemon) Define(t testing.TB, cfg DomainConfig) *Domain {
	t.Helper()
	console := filepath.Join(t.TempDir(), "console.log")
	doc := DomainXML(t, cfg, console)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := d.Conn(t)
	if _, err := c.Define(ctx, doc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Remove(t, cfg.Name) })
	return &Domain{Name: cfg.Name, Console: console, XML: doc}
}

// Remove destroys (if running) and undefines a domain, if it exists.
func (d *Daemon) Remove(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := libvirt.Dial(ctx, d.URI())
	if err != nil {
		t.Errorf("removing domain %s: %v", name, err)
		return
	}
	defer c.Close()
	dom, err := c.Lookup(ctx, name)
	if errors.Is(err, libvirt.ErrNoDomain) {
		return
	}
	if err != nil {
		t.Errorf("removing domain %s: %v", name, err)
		return
	}
	if dom.Running {
		if err := c.Destroy(ctx, dom); err != nil {
			t.Errorf("removing domain %s: %v", name, err)
		}
	}
	if err := c.Undefine(ctx, dom); err != nil {
		t.Errorf("removing domain %s: %v", name, err)
	}
}

// Conn connects to the daemon for the rest of the test.
func (d *Daemon) Conn(t testing.TB) *libvirt.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := libvirt.Dial(ctx, d.URI())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// WaitConsole waits until a line of the console file matches re, past the
// first skip matching lines, and returns its submatches. The guest's
// "LB error" lines end the wait with an error.
func WaitConsole(ctx context.Context, console string, re *regexp.Regexp, skip int) ([]string, error) {
	for {
		data, _ := os.ReadFile(console)
		seen := 0
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimRight(line, "\r")
			if strings.HasPrefix(line, "LB error") {
				return nil, fmt.Errorf("guest: %s", line)
			}
			if m := re.FindStringSubmatch(line); m != nil {
				if seen >= skip {
					return m, nil
				}
				seen++
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %q on the console %s: %w; console so far:\n%s", re, console, ctx.Err(), tail(data))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// KillQEMU kills the QEMU of a running domain with SIGKILL, as a crash
// would (libvirt's destroy lets QEMU close its images cleanly), and waits
// until libvirt sees the domain stopped.
func (d *Daemon) KillQEMU(t testing.TB, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.Dir, "run", "qemu", name+".pid"))
	if err != nil {
		t.Fatalf("QEMU of domain %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("QEMU of domain %s: pid file holds %q", name, b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing QEMU %d of domain %s: %v", pid, name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := d.Conn(t)
	for {
		dom, err := c.Lookup(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !dom.Running {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("libvirt still shows domain %s running a minute after its QEMU was killed", name)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
