package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"lifeboat/internal/nbd"
)

// Export is qemu-nbd serving one image, with its backing chain, on a unix
// socket in a private temporary directory, to one client.
//
// Its lifetime is bounded by lifeboat's: the server is killed if lifeboat
// dies (parent-death signal), terminated when the context it was started
// with ends, and Close stops it and removes the directory. A writable
// export is closed cleanly — the server exits by itself once its client
// disconnects, after writing its metadata out — and Close reports whether
// it did.
type Export struct {
	path, format string
	writable     bool
	dir, socket  string
	cmd          *exec.Cmd
	stderr       bytes.Buffer // read only once exited is closed
	exited       chan struct{}
	waitErr      error
	dialed       bool
	closeOnce    sync.Once
	closeErr     error
}

// ServeOptions say how to serve an image.
type ServeOptions struct {
	// Format is the image's format (Info.Format); never guessed by QEMU.
	Format string
	// Writable serves the image for writing; otherwise read-only.
	Writable bool
	// ForceShare serves a read-only image even though another process (a
	// running QEMU) holds its locks. What it reads may be inconsistent.
	ForceShare bool
}

const exportName = "disk"

// Serve starts qemu-nbd on the image at path. Call Dial to connect, and
// Close when done.
func Serve(ctx context.Context, path string, opts ServeOptions) (*Export, error) {
	if opts.Format == "" {
		return nil, errors.New("serving an image: no format given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("serving %s: %w", path, err)
	}
	dir, err := os.MkdirTemp("", "lifeboat-nbd-")
	if err != nil {
		return nil, fmt.Errorf("serving %s: %w", path, err)
	}
	e := &Export{path: path, format: opts.Format, writable: opts.Writable, dir: dir,
		socket: filepath.Join(dir, "nbd.sock"), exited: make(chan struct{})}
	args := []string{"--socket=" + e.socket, "--export-name=" + exportName, "--shared=1"}
	image := []string{"--format=" + opts.Format, abs}
	switch {
	case opts.Writable:
		// Zero blocks written in place may become unallocated clusters.
		args = append(args, "--discard=unmap", "--cache=writeback")
	case opts.ForceShare:
		// qemu-nbd has no flag for it: the image's options say it, and
		// the backing chain inherits it.
		protocol := "file"
		if st, err := os.Stat(abs); err == nil && st.Mode()&os.ModeDevice != 0 {
			protocol = "host_device"
		}
		args = append(args, "--read-only")
		image = []string{"--image-opts", fmt.Sprintf("driver=%s,file.driver=%s,file.filename=%s,read-only=on,force-share=on",
			opts.Format, protocol, strings.ReplaceAll(abs, ",", ",,"))}
	default:
		args = append(args, "--read-only")
	}
	e.cmd = exec.CommandContext(ctx, "qemu-nbd", append(args, image...)...)
	e.cmd.Stderr = &e.stderr
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Cancellation asks for a clean stop first: a writable image's
	// metadata is then consistent.
	e.cmd.Cancel = func() error { return e.cmd.Process.Signal(syscall.SIGTERM) }
	e.cmd.WaitDelay = 5 * time.Second
	if err := e.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("disk %s is a %s image, which lifeboat reads and writes through QEMU: install qemu-nbd (qemu-utils): %w", path, opts.Format, err)
		}
		return nil, fmt.Errorf("serving %s: starting qemu-nbd: %w", path, err)
	}
	go func() {
		e.waitErr = e.cmd.Wait()
		close(e.exited)
	}()
	return e, nil
}

// startTimeout bounds how long qemu-nbd may take to open an image.
const startTimeout = 30 * time.Second

// Dial connects to the export once qemu-nbd listens, with the NBD
// client's options. There is one client per export.
func (e *Export) Dial(ctx context.Context, opts ...nbd.Option) (*nbd.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", e.socket)
		if err == nil {
			e.dialed = true
			c, err := nbd.DialConn(ctx, conn, exportName, opts...)
			if err != nil {
				return nil, fmt.Errorf("reading %s image %s through qemu-nbd: %w%s", e.format, e.path, err, e.exitText(time.Second))
			}
			return c, nil
		}
		// Not listening yet: wait for the socket, or for qemu-nbd to give up.
		select {
		case <-e.exited:
			return nil, fmt.Errorf("qemu-nbd could not serve %s image %s%s", e.format, e.path, e.exitText(0))
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu-nbd serving %s image %s: not listening: %w", e.format, e.path, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// exitText waits up to wait for qemu-nbd to exit and returns what it said.
func (e *Export) exitText(wait time.Duration) string {
	select {
	case <-e.exited:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-e.exited:
		case <-t.C:
			return ""
		}
	}
	msg := strings.TrimSpace(e.stderr.String())
	if msg == "" && e.waitErr != nil {
		msg = e.waitErr.Error()
	}
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// exitTimeout is how long a server whose client has disconnected gets to
// write its image out and exit by itself.
const exitTimeout = 30 * time.Second

// Close stops the server and removes its directory. Close the client
// first: the server then exits by itself. An error means a writable image
// may not have been written out completely.
func (e *Export) Close() error {
	e.closeOnce.Do(func() {
		if e.dialed {
			t := time.NewTimer(exitTimeout)
			select {
			case <-e.exited:
			case <-t.C:
			}
			t.Stop()
		}
		clean := true
		select {
		case <-e.exited:
		default:
			clean = false
			e.cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(5 * time.Second)
			select {
			case <-e.exited:
			case <-t.C:
				e.cmd.Process.Kill()
				<-e.exited
			}
			t.Stop()
		}
		os.RemoveAll(e.dir)
		switch {
		case !e.writable:
		case !clean:
			e.closeErr = fmt.Errorf("qemu-nbd writing %s did not exit after its client left, and was stopped", e.path)
		case e.waitErr != nil:
			e.closeErr = fmt.Errorf("qemu-nbd writing %s: %w: %s", e.path, e.waitErr, strings.TrimSpace(e.stderr.String()))
		}
	})
	return e.closeErr
}
