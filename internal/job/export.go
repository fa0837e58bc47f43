package job

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"lifeboat/internal/nbd"
	"lifeboat/internal/pointdisk"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Export serves the disks of one point over NBD, read on demand from the
// vault: each disk is an export named after it.
type Export struct {
	Machine string `json:"machine"`
	// Point is a point ID, a unique prefix of one, or "latest".
	Point string `json:"point"`
	Vault string `json:"vault"`
	// Disk serves only this disk (default: every disk).
	Disk string `json:"disk,omitempty"`
	// Listen is unix:PATH or HOST:PORT.
	Listen string `json:"listen"`
	// Writable puts a copy-on-write overlay in front of each disk, in
	// OverlayDir (default: the system's temporary directory); writes are
	// dropped when the export ends and never reach the vault.
	Writable   bool   `json:"writable,omitempty"`
	OverlayDir string `json:"overlay_dir,omitempty"`
	// CacheMiB bounds each disk's cache of decoded chunks (default 64).
	CacheMiB int `json:"cache_mib,omitempty"`
}

// Validate reports the first thing wrong with e.
func (e Export) Validate() error {
	if err := pointRef(e.Machine, e.Point, e.Vault, "export from"); err != nil {
		return err
	}
	if e.Disk != "" {
		if err := recovery.ValidName("disk", e.Disk); err != nil {
			return invalid("disk", "%v", err)
		}
	}
	if _, _, err := ParseListen(e.Listen); err != nil {
		return invalid("listen", "%v", err)
	}
	if e.OverlayDir != "" && !e.Writable {
		return invalid("overlay_dir", "an overlay directory is for --writable exports only")
	}
	if e.CacheMiB < 0 {
		return invalid("cache_mib", "must not be negative")
	}
	return nil
}

// pointRef checks the machine, point and vault every job on a point
// names; what says what the job does with the vault.
func pointRef(machine, point, vaultURL, what string) error {
	if err := recovery.ValidName("machine", machine); err != nil {
		return invalid("machine", "%v", err)
	}
	if point == "" {
		return invalid("point", "name a point (an ID, a prefix of one, or latest)")
	}
	if vaultURL == "" {
		return invalid("vault", "no vault to %s", what)
	}
	return nil
}

// ParseListen parses where an export listens: unix:PATH (a new socket
// file) or HOST:PORT.
func ParseListen(s string) (network, addr string, err error) { return nbd.ParseListen(s) }

// ExportedDisk is one disk being served.
type ExportedDisk struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// URI is the export's NBD URI (nbd+unix:///NAME?socket=PATH or
	// nbd://HOST:PORT/NAME).
	URI string `json:"uri"`
}

// Exporting is a running export.
type Exporting struct {
	Point    *recovery.Point `json:"-"`
	PointID  string          `json:"point"`
	Machine  string          `json:"machine"`
	Writable bool            `json:"writable"`
	Disks    []ExportedDisk  `json:"disks"`
	// ReadyMS is the time from the command to the export accepting
	// clients: opening the vault's index and the disks' manifests.
	ReadyMS int64 `json:"ready_ms"`

	srv      *nbd.Server
	pd       *pointdisk.Point
	overlays []*pointdisk.Overlay
	l        net.Listener
	sock     string
	served   chan error
}

// StartExport resolves the point e names in v (which must be the vault
// e.Vault names, opened), opens its disks and serves them in the
// background until Close.
func StartExport(ctx context.Context, v *vault.Vault, e Export, env Env) (_ *Exporting, err error) {
	start := v.Clock().Now()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	p, _, err := recovery.Resolve(ctx, v, e.Machine, e.Point)
	if err != nil {
		return nil, err
	}
	if e.Disk != "" {
		if _, ok := p.Disk(e.Disk); !ok {
			return nil, fmt.Errorf("point %s of %s has no disk %q: %w", p.ID.Short(), p.Machine, e.Disk, recovery.ErrNoPoint)
		}
	}
	return ServePoint(ctx, v, p, e, env, start)
}

// ServePoint serves the disks of point p as e says (e's machine, point
// and vault are not looked at). start is when the caller decided to
// export, for ReadyMS.
func ServePoint(ctx context.Context, v *vault.Vault, p *recovery.Point, e Export, env Env, start time.Time) (_ *Exporting, err error) {
	opts := pointdisk.Options{Warn: env.Warn, CacheBytes: int64(e.CacheMiB) << 20}
	pd, err := pointdisk.Open(ctx, v, p, e.Disk, opts)
	if err != nil {
		return nil, err
	}
	x := &Exporting{Point: p, PointID: p.ID.String(), Machine: p.Machine, Writable: e.Writable, pd: pd, served: make(chan error, 1)}
	defer func() {
		if err != nil {
			x.close(context.WithoutCancel(ctx))
		}
	}()
	network, addr, err := ParseListen(e.Listen)
	if err != nil {
		return nil, invalid("listen", "%v", err)
	}
	var exports []nbd.Export
	for _, d := range pd.Disks {
		var b nbd.Backend = d
		if e.Writable {
			o, err := pointdisk.NewOverlay(d, e.OverlayDir)
			if err != nil {
				return nil, err
			}
			x.overlays = append(x.overlays, o)
			b = o
		}
		exports = append(exports, nbd.Export{Name: d.Name(), Description: fmt.Sprintf("%s point %s disk %s", p.Machine, p.ID.Short(), d.Name()),
			Backend: b, ReadOnly: !e.Writable, MultiConn: true})
	}
	if x.srv, err = nbd.NewServer(exports...); err != nil {
		return nil, err
	}
	x.srv.Logf = func(format string, args ...any) { env.warn(fmt.Sprintf(format, args...)) }
	if network == "unix" {
		if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
			return nil, fmt.Errorf("creating the socket's directory: %w", err)
		}
		// A socket file nobody listens on is a killed export's: replace it.
		if c, err := net.Dial("unix", addr); err == nil {
			c.Close()
		} else if fi, serr := os.Lstat(addr); serr == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(addr)
		}
	}
	x.l, err = net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", e.Listen, err)
	}
	if network == "unix" {
		x.sock = addr
		os.Chmod(addr, 0o600) // the disks' contents are as private as the vault's
	}
	for _, d := range pd.Disks {
		x.Disks = append(x.Disks, ExportedDisk{Name: d.Name(), Size: d.Size(), URI: nbd.ListenURI(network, x.l.Addr().String(), d.Name())})
	}
	go func() { x.served <- x.srv.Serve(context.WithoutCancel(ctx), x.l) }()
	x.ReadyMS = v.Clock().Now().Sub(start).Milliseconds()
	return x, nil
}

// URI returns the NBD URI of disk name, or "".
func (x *Exporting) URI(name string) string {
	for _, d := range x.Disks {
		if d.Name == name {
			return d.URI
		}
	}
	return ""
}

// Close stops serving (clients are disconnected once their requests in
// flight are answered, or at once when ctx ends), drops the overlays,
// removes the socket and ends the vault read session.
func (x *Exporting) Close(ctx context.Context) error {
	return x.close(ctx)
}

func (x *Exporting) close(ctx context.Context) error {
	var errs []error
	if x.srv != nil {
		x.srv.Shutdown(ctx)
		if x.l != nil {
			if err := <-x.served; err != nil && !errors.Is(err, nbd.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
	}
	if x.sock != "" {
		os.Remove(x.sock)
	}
	for _, o := range x.overlays {
		o.Close()
	}
	if err := x.pd.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RunExport serves the point e names until ctx ends (SIGINT, SIGTERM),
// calling ready once clients can connect.
func RunExport(ctx context.Context, v *vault.Vault, e Export, env Env, ready func(*Exporting)) error {
	x, err := StartExport(ctx, v, e, env)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(x)
	}
	select {
	case <-ctx.Done():
	case err := <-x.served:
		x.served <- err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return x.Close(cctx)
}
