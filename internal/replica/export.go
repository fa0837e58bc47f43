package replica

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"lifeboat/internal/nbd"
	"lifeboat/internal/qmp"
)

// A failover with ExportNBD set starts no machine: the site serves the
// failover's overlays over NBD for another hypervisor to boot. The server
// is a qemu-storage-daemon in its own session (it outlives the site's
// process, as a started machine does), one writable export per disk named
// after it. It opens the qcow2 overlays read-write and their backing chain
// (the replica's checkpoints and base) read-only, as QEMU always does, so
// a client's writes land in the overlays and never in the replica or its
// history. Its QMP socket is the failover's (failover.json), so commit
// (block-stream inside the daemon) and test cleanup (the daemon killed)
// work as for a started machine.

// exportNode is the daemon's node of disk i.
func exportNode(i int) string { return "lbdr-" + strconv.Itoa(i) }

// checkExportListen reports whether listen is a place an export can be
// served at: unix:PATH or HOST:PORT with a port (the daemon reports no
// port it picked itself).
func checkExportListen(listen string) (qmp.SocketAddress, error) {
	network, addr, err := nbd.ParseListen(listen)
	if err != nil {
		return qmp.SocketAddress{}, fmt.Errorf("%w: --export-nbd: %v", ErrInvalid, err)
	}
	if network == "unix" {
		if !filepath.IsAbs(addr) {
			return qmp.SocketAddress{}, fmt.Errorf("%w: --export-nbd: the socket path %q must be absolute (it is on the site's host)", ErrInvalid, addr)
		}
		return qmp.UnixSocket(addr), nil
	}
	host, port, _ := net.SplitHostPort(addr)
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return qmp.SocketAddress{}, fmt.Errorf("%w: --export-nbd: port %q: give a port number from 1 to 65535", ErrInvalid, port)
	}
	return qmp.SocketAddress{Type: "inet", Host: host, Port: port}, nil
}

// serveDisks starts the daemon serving fo's disks at listen and records
// its PID, QMP socket and each disk's NBD URI in fo. dir is the failover's
// directory (its log and PID file go there). On error nothing is left
// running.
func serveDisks(ctx context.Context, fo *Failover, dir, listen string) (err error) {
	addr, err := checkExportListen(listen)
	if err != nil {
		return err
	}
	if addr.Type == "unix" {
		if err := os.MkdirAll(filepath.Dir(addr.Path), 0o755); err != nil {
			return fmt.Errorf("creating the directory of %s: %w", addr.Path, err)
		}
		// A socket file nobody listens on is a killed export's: replace it.
		if c, err := net.Dial("unix", addr.Path); err == nil {
			c.Close()
			return fmt.Errorf("%w: --export-nbd: something already listens on %s", ErrInvalid, addr.Path)
		} else if fi, serr := os.Lstat(addr.Path); serr == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(addr.Path)
		}
	}
	sockDir, err := os.MkdirTemp("", "lbdr")
	if err != nil {
		return err
	}
	fo.QMP = filepath.Join(sockDir, "qmp.sock")
	// The PID file's path names the failover, which stopMachine checks
	// before it kills the PID.
	argv := []string{"qemu-storage-daemon",
		"--chardev", "socket,id=m,path=" + fo.QMP + ",server=on,wait=off", "--monitor", "chardev=m",
		"--pidfile", filepath.Join(dir, "nbd.pid")}
	if err := startDetached(ctx, fo, dir, argv); err != nil {
		os.RemoveAll(sockDir)
		return err
	}
	defer func() {
		if err != nil {
			stopMachine(fo)
			os.RemoveAll(sockDir)
			if addr.Type == "unix" {
				os.Remove(addr.Path)
			}
		}
	}()
	mon, err := qmp.Dial(ctx, fo.QMP)
	if err != nil {
		return fmt.Errorf("connecting to the NBD server of %s: %w", fo.Name, err)
	}
	defer mon.Close()
	for i, d := range fo.Disks {
		node := map[string]any{"driver": "qcow2", "node-name": exportNode(i),
			"file": map[string]any{"driver": "file", "filename": d.File}}
		if err := mon.BlockdevAdd(ctx, node); err != nil {
			return fmt.Errorf("opening the overlay of disk %s: %w", d.Name, err)
		}
	}
	if err := mon.NBDServerStart(ctx, addr); err != nil {
		return fmt.Errorf("%w: --export-nbd: %v", ErrInvalid, err)
	}
	if addr.Type == "unix" {
		os.Chmod(addr.Path, 0o600) // the disks are as private as the replica
	}
	for i := range fo.Disks {
		d := &fo.Disks[i]
		err := mon.BlockExportAdd(ctx, qmp.ExportOptions{ID: exportNode(i), NodeName: exportNode(i), Name: d.Name, Writable: true,
			Description: fmt.Sprintf("%s point %d disk %s", fo.Name, fo.Point.ID, d.Name)})
		if err != nil {
			return err
		}
		network, at, _ := nbd.ParseListen(listen)
		d.NBD = nbd.ListenURI(network, at, d.Name)
	}
	fo.Export = listen
	return nil
}

// startDetached starts argv in its own session (it outlives this
// process), its output in dir/qemu.log, records its PID in fo, and waits
// until fo.QMP answers.
func startDetached(ctx context.Context, fo *Failover, dir string, argv []string) error {
	logf, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", fo.Name, err)
	}
	fo.PID = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if err := waitSocket(ctx, fo.QMP, exited); err != nil {
		stopMachine(fo)
		if errors.Is(err, errExited) {
			log, _ := os.ReadFile(filepath.Join(dir, "qemu.log"))
			return fmt.Errorf("%s exited at once: %s", fo.Name, strings.TrimSpace(string(log)))
		}
		return fmt.Errorf("%s: %w", fo.Name, err)
	}
	return nil
}

// stopExport removes what a failover's NBD server leaves once killed: its
// socket file.
func stopExport(fo *Failover) {
	if path, ok := strings.CutPrefix(fo.Export, "unix:"); ok {
		os.Remove(path)
	}
}
