package job

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"lifeboat/internal/boot"
	"lifeboat/internal/container"
	"lifeboat/internal/qmp"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
)

// Boot says how a restored machine is started (boot.Options without
// what lifeboat decides itself: sockets, drives).
type Boot struct {
	Accel     string `json:"accel,omitempty"`
	Network   string `json:"network,omitempty"`
	VNC       string `json:"vnc,omitempty"`
	SerialLog string `json:"serial_log,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	Initrd    string `json:"initrd,omitempty"`
	Append    string `json:"append,omitempty"`
	UEFICode  string `json:"uefi_code,omitempty"`
	QEMU      string `json:"qemu,omitempty"`
}

func (b Boot) options() boot.Options {
	return boot.Options{QEMU: b.QEMU, Accel: b.Accel, Network: b.Network, VNC: b.VNC, SerialLog: b.SerialLog,
		Kernel: b.Kernel, Initrd: b.Initrd, Append: b.Append, UEFICode: b.UEFICode, StopOnError: true}
}

// InstantRestore starts a point's machine at once, on qcow2 images in Dir
// whose backing is the point served over NBD from the vault, and copies
// the data into those images while the guest runs. Once the copy is done
// the images are standalone and the export ends; the machine runs on.
type InstantRestore struct {
	Machine string `json:"machine"`
	Point   string `json:"point"`
	Vault   string `json:"vault"`
	Dir     string `json:"dir"`
	Suffix  string `json:"suffix,omitempty"`
	NewMACs bool   `json:"new_macs,omitempty"`
	Boot    Boot   `json:"boot"`
	// StreamSpeed bounds the background copy of each disk, bytes/s (0:
	// as fast as the vault gives it).
	StreamSpeed int64 `json:"stream_speed,omitempty"`
	// WaitGuest measures the time to the guest agent answering
	// (Instant.AnsweredMS) while the copy runs.
	WaitGuest bool `json:"wait_guest,omitempty"`
}

// Validate reports the first thing wrong with r.
func (r InstantRestore) Validate() error {
	if err := pointRef(r.Machine, r.Point, r.Vault, "restore from"); err != nil {
		return err
	}
	if !filepath.IsAbs(r.Dir) {
		return invalid("dir", "an instant restore needs --to DIR, an absolute directory for the machine's images (got %q)", r.Dir)
	}
	if r.StreamSpeed < 0 {
		return invalid("stream_speed", "must not be negative")
	}
	if _, err := boot.Command(&recovery.Definition{Name: "x", CPUs: 1, MemoryMiB: 16,
		Disks: []recovery.DefinitionDisk{{Name: "x", File: "/x"}}}, r.Boot.options()); err != nil {
		return invalid("boot", "%v", err)
	}
	return nil
}

// InstantState is where an instant restore of Dir keeps its sockets: a
// short directory (unix socket paths are limited to 108 bytes) derived
// from Dir, so that a second run finds the first one's machine.
func InstantState(dir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(dir)))
	return filepath.Join(os.TempDir(), "lifeboat-instant-"+hex.EncodeToString(sum[:6]))
}

// Instant is what an instant restore did.
type Instant struct {
	Point      string            `json:"point"`
	Machine    string            `json:"machine"`
	Definition string            `json:"definition"`
	Images     map[string]string `json:"images"`
	PID        int               `json:"pid"`
	QMP        string            `json:"qmp"`
	GuestAgent string            `json:"guest_agent"`
	// Resumed is set when the machine was already running (a previous
	// run was interrupted): this run served the export again and
	// finished the copy.
	Resumed bool `json:"resumed,omitempty"`
	// StartedMS: from the command to the machine running; CopiedMS: to
	// every image standalone.
	// Size is the total size of the disks.
	Size      int64 `json:"size"`
	StartedMS int64 `json:"started_ms"`
	CopiedMS  int64 `json:"copied_ms,omitempty"`
	// AnsweredMS (with WaitGuest): from the command to the guest agent
	// answering, and how much of the disks was copied by then.
	AnsweredMS     int64 `json:"answered_ms,omitempty"`
	AnsweredCopied int64 `json:"answered_copied_bytes,omitempty"`
}

// InstantHooks are told how an instant restore goes.
type InstantHooks struct {
	// Started is called once the machine runs, before the copy.
	Started func(*Instant)
	// Progress is called during the copy, about twice a second.
	Progress func(boot.StreamProgress)
}

// instantState is recorded in the state directory for a rerun.
type instantState struct {
	Point      string            `json:"point"`
	Definition string            `json:"definition"`
	Images     map[string]string `json:"images"`
}

// RunInstantRestore runs r against v (the vault r.Vault names, opened):
// it serves the point over NBD on a socket of InstantState(r.Dir), creates
// a qcow2 image per disk in r.Dir backed by the export (reconnecting
// should the export restart), writes the -dr definition naming them,
// starts the machine (detached: it outlives lifeboat; a disk error pauses
// the guest rather than reaching it) and streams the data into the images
// through QMP block-stream. It returns once every image is standalone.
//
// If lifeboat is killed during the copy, the guest pauses at its next
// read of a block not yet copied (or runs on if it needs none); running
// the same command again serves the export again, resumes the guest and
// finishes the copy, copying only what is still missing.
func RunInstantRestore(ctx context.Context, v *vault.Vault, r InstantRestore, env Env, hooks InstantHooks) (*Instant, error) {
	start := v.Clock().Now()
	if err := r.Validate(); err != nil {
		return nil, err
	}
	state := InstantState(r.Dir)
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", state, err)
	}
	qmpSock, qgaSock, exportSock := filepath.Join(state, "qmp.sock"), filepath.Join(state, "qga.sock"), filepath.Join(state, "export.sock")
	var st instantState
	resumed := false
	if b, err := os.ReadFile(filepath.Join(state, "state.json")); err == nil && json.Unmarshal(b, &st) == nil && machineAlive(state) {
		resumed = true
	}
	var p *recovery.Point
	var err error
	if resumed {
		p, _, err = recovery.Resolve(ctx, v, r.Machine, st.Point)
	} else {
		p, _, err = recovery.Resolve(ctx, v, r.Machine, r.Point)
	}
	if err != nil {
		return nil, err
	}
	x, err := ServePoint(ctx, v, p, Export{Listen: "unix:" + exportSock}, env, start)
	if err != nil {
		return nil, err
	}
	defer x.Close(context.WithoutCancel(ctx))

	out := &Instant{Point: p.ID.String(), Machine: p.Machine, Size: p.Size(), QMP: qmpSock, GuestAgent: qgaSock, Resumed: resumed}
	var nodes []boot.StreamDisk
	var machine *boot.Machine
	if resumed {
		out.Definition, out.Images = st.Definition, st.Images
		raw, err := os.ReadFile(st.Definition)
		if err != nil {
			return nil, fmt.Errorf("the machine of the interrupted instant restore: %w", err)
		}
		def, err := recovery.ParseDefinition(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.Definition, err)
		}
		for _, d := range def.Disks {
			nodes = append(nodes, boot.StreamDisk{Node: boot.NodeName(def, d.Name), Size: imageSize(p, out.Images, d.File)})
		}
	} else {
		def, err := prepareInstant(ctx, p, r, x, out, env)
		if err == nil {
			err = writeInstantState(state, out)
		}
		var m *boot.Machine
		if err == nil {
			opts := r.Boot.options()
			opts.QMPSocket, opts.GuestAgentSocket = qmpSock, qgaSock
			opts.Extra = append(opts.Extra, "-pidfile", filepath.Join(state, "qemu.pid"))
			var log *os.File
			if log, err = os.OpenFile(filepath.Join(state, "qemu.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
				m, _, err = boot.Launch(ctx, def, opts, state, log, true)
				log.Close() // QEMU has its own descriptor
			}
		}
		if err != nil {
			undoInstant(state, out)
			return nil, err
		}
		out.PID, machine = m.PID, m
		for _, d := range def.Disks {
			nodes = append(nodes, boot.StreamDisk{Node: boot.NodeName(def, d.Name), Size: imageSize(p, out.Images, d.File)})
		}
	}
	out.StartedMS = v.Clock().Now().Sub(start).Milliseconds()
	mon, err := dialQMP(ctx, qmpSock)
	if err != nil {
		if machine != nil {
			select {
			case <-machine.Done():
				undoInstant(state, out)
				return nil, fmt.Errorf("the machine did not start: %w", machine.Err())
			case <-time.After(2 * time.Second):
			}
		}
		return out, fmt.Errorf("connecting to the machine: %w", err)
	}
	defer mon.Close()
	if pid, err := mon.PeerPID(); err == nil {
		out.PID = pid
	}
	if resumed {
		// A guest paused on a read error while the export was gone.
		if s, err := mon.QueryStatus(ctx); err == nil && !s.Running {
			if err := mon.Cont(ctx); err != nil {
				env.warn(fmt.Sprintf("resuming the paused guest: %v", err))
			}
		}
	}
	if hooks.Started != nil {
		hooks.Started(out)
	}
	var copied atomic.Int64
	answered := make(chan int64, 1)
	if r.WaitGuest {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		go func() {
			if boot.WaitGuestAgent(wctx, qgaSock, nil) == nil {
				out.AnsweredCopied = copied.Load()
				answered <- v.Clock().Now().Sub(start).Milliseconds()
			}
			close(answered)
		}()
	}
	err = boot.Stream(ctx, mon, nodes, r.StreamSpeed, func(pr boot.StreamProgress) {
		copied.Store(pr.DoneBytes)
		writeInstantStatus(state, InstantStatus{Machine: out.Machine, Point: out.Point, PID: out.PID, Dir: r.Dir,
			DoneBytes: pr.DoneBytes, TotalBytes: pr.TotalBytes, Updated: v.Clock().Now()})
		if hooks.Progress != nil {
			hooks.Progress(pr)
		}
	})
	if err != nil {
		return out, err
	}
	out.CopiedMS = v.Clock().Now().Sub(start).Milliseconds()
	os.Remove(filepath.Join(state, "state.json"))
	writeInstantStatus(state, InstantStatus{Machine: out.Machine, Point: out.Point, PID: out.PID, Dir: r.Dir,
		DoneBytes: out.Size, TotalBytes: out.Size, Standalone: true, Updated: v.Clock().Now()})
	if r.WaitGuest {
		select {
		case out.AnsweredMS = <-answered:
		case <-time.After(2 * time.Minute):
			env.warn("the guest agent did not answer within 2 minutes of the copy's end")
		}
	}
	return out, nil
}

// imageSize is the size of the point's disk restored into file.
func imageSize(p *recovery.Point, images map[string]string, file string) int64 {
	for name, img := range images {
		if img == file {
			if d, ok := p.Disk(name); ok {
				return d.Size
			}
		}
	}
	return 0
}

// InstantStatus is how far the copy of an instant restore has come, as
// its last run recorded it (InstantState(dir)/status.json).
type InstantStatus struct {
	Machine    string    `json:"machine"`
	Point      string    `json:"point"`
	PID        int       `json:"pid"`
	Dir        string    `json:"dir"`
	DoneBytes  int64     `json:"done_bytes"`
	TotalBytes int64     `json:"total_bytes"`
	Standalone bool      `json:"standalone"`
	Updated    time.Time `json:"updated"`
	// Running says whether the restore's machine runs and the lifeboat
	// that copies its disks (filled in by ReadInstantStatus).
	MachineRunning bool `json:"machine_running"`
	Copying        bool `json:"copying"`
}

// StateText says where the copy stands, as restore --instant --status
// shows it: copying, done, or interrupted with what to do.
func (st InstantStatus) StateText() string {
	switch {
	case st.Standalone:
		return "done: the images are standalone"
	case !st.Copying:
		return "INTERRUPTED: run the same restore --instant --start again to finish the copy"
	}
	return "copying"
}

// Percent is how much of the disks is copied, 0 to 100.
func (st InstantStatus) Percent() float64 {
	return 100 * float64(st.DoneBytes) / float64(max(st.TotalBytes, 1))
}

func writeInstantStatus(state string, st InstantStatus) {
	b, _ := json.Marshal(st)
	tmp := filepath.Join(state, "status.json.tmp")
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, filepath.Join(state, "status.json"))
	}
}

// ReadInstantStatus reports the instant restore into dir: how much is
// copied, whether its machine runs, and whether a lifeboat is copying
// (one holds the export's socket).
func ReadInstantStatus(dir string) (*InstantStatus, error) {
	state := InstantState(dir)
	b, err := os.ReadFile(filepath.Join(state, "status.json"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("no instant restore into %s has started copying: %w", dir, recovery.ErrNoPoint)
		}
		return nil, err
	}
	var st InstantStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(state, "status.json"), err)
	}
	st.MachineRunning = machineAlive(state)
	st.Copying = listening(filepath.Join(state, "export.sock"))
	return &st, nil
}

// undoInstant removes what an instant restore whose machine never ran
// created, so that the same command can be run again.
func undoInstant(state string, out *Instant) {
	for _, img := range out.Images {
		os.Remove(img)
	}
	if out.Definition != "" {
		os.Remove(out.Definition)
	}
	os.Remove(filepath.Join(state, "state.json"))
}

func writeInstantState(state string, out *Instant) error {
	b, _ := json.Marshal(instantState{Point: out.Point, Definition: out.Definition, Images: out.Images})
	if err := os.WriteFile(filepath.Join(state, "state.json"), b, 0o600); err != nil {
		return fmt.Errorf("recording the instant restore: %w", err)
	}
	return nil
}

// prepareInstant creates the disks' overlays over the export and writes
// the -dr definition naming them; it returns the definition to start.
func prepareInstant(ctx context.Context, p *recovery.Point, r InstantRestore, x *Exporting, out *Instant, env Env) (*recovery.Definition, error) {
	suffix := r.Suffix
	if suffix == "" {
		suffix = DefaultSuffix
	}
	req := restore.Request{Dir: r.Dir, Format: container.QCOW2, Definition: recovery.RestoreOptions{Suffix: suffix, NewMACs: r.NewMACs}}
	targets, err := restore.Plan(p, req)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", r.Dir, err)
	}
	out.Images = map[string]string{}
	for _, t := range targets {
		if _, err := os.Lstat(t.Path); err == nil {
			return nil, fmt.Errorf("restoring disk %s: %s %w: remove it first", t.Disk.Name, t.Path, restore.ErrExists)
		}
		backing, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{"driver": "nbd", "export": t.Disk.Name,
			"reconnect-delay": 3600, "server": map[string]any{"type": "unix", "path": x.sock}}})
		if err := container.CreateOverlay(ctx, t.Path, "json:"+string(backing), container.Raw, t.Disk.Size); err != nil {
			return nil, fmt.Errorf("restoring disk %s: %w", t.Disk.Name, err)
		}
		os.Chmod(t.Path, 0o600)
		out.Images[t.Disk.Name] = t.Path
	}
	path, restored, err := restore.WriteDefinition(p, req, targets)
	if err != nil {
		return nil, err
	}
	for _, w := range restored.Warnings {
		env.warn(w)
	}
	out.Definition = path
	return startable(restored.JSON, env)
}

// startable parses a restored definition, giving a point recorded without
// one (no CPUs, no memory) 1 CPU and 1 GiB, with a warning.
func startable(raw []byte, env Env) (*recovery.Definition, error) {
	var d recovery.Definition
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("the restored definition: %w", err)
	}
	if d.CPUs == 0 || d.MemoryMiB == 0 {
		d.CPUs, d.MemoryMiB = max(d.CPUs, 1), cmp.Or(d.MemoryMiB, 1024)
		env.warn(fmt.Sprintf("the point records no CPUs or memory for %s (backed up without --definition): starting it with %d CPU(s) and %d MiB", d.Name, d.CPUs, d.MemoryMiB))
		raw, _ = json.Marshal(d)
	}
	def, err := recovery.ParseDefinition(raw)
	if err != nil {
		return nil, fmt.Errorf("the restored definition: %w", err)
	}
	return def, nil
}

// dialQMP connects to a machine's QMP socket, trying again for a few
// seconds while another client holds it (QEMU serves one at a time and
// its backlog is short: a connect can fail with EAGAIN).
func dialQMP(ctx context.Context, sock string) (*qmp.Monitor, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		mon, err := qmp.Dial(ctx, sock)
		if err == nil || time.Now().After(deadline) || !(errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ECONNREFUSED)) {
			return mon, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// machineAlive reports whether the QEMU an instant restore started (its
// -pidfile in the state directory) still runs. Not a probe of its QMP
// socket: QEMU serves one client at a time, and a copying lifeboat holds it.
func machineAlive(state string) bool {
	b, err := os.ReadFile(filepath.Join(state, "qemu.pid"))
	if err != nil {
		return false
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// listening reports whether something accepts connections on a unix socket.
func listening(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// BootOf is the Boot of opts (what a job spec keeps of them).
func BootOf(o boot.Options) Boot {
	return Boot{Accel: o.Accel, Network: o.Network, VNC: o.VNC, SerialLog: o.SerialLog, Kernel: o.Kernel,
		Initrd: o.Initrd, Append: o.Append, UEFICode: o.UEFICode, QEMU: o.QEMU}
}
