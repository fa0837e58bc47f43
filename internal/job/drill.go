package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"lifeboat/internal/boot"
	"lifeboat/internal/container"
	"lifeboat/internal/drill"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
)

// Drill boots a point in a sandbox — its disks served from the vault
// under throwaway overlays, no network — waits until the guest answers,
// records the result and the measured recovery time with the point, and
// removes everything it made.
type Drill struct {
	Machine string `json:"machine"`
	Point   string `json:"point"`
	Vault   string `json:"vault"`
	// Probe is a shell command run (again and again, until it succeeds)
	// against the sandbox, with LIFEBOAT_DRILL_QMP, LIFEBOAT_DRILL_GUEST_AGENT
	// and LIFEBOAT_DRILL_SERIAL_LOG set; ProbeSerial a regular expression
	// a console line must match. Neither: the guest agent must answer a ping.
	Probe       string   `json:"probe,omitempty"`
	ProbeSerial string   `json:"probe_serial,omitempty"`
	Timeout     Duration `json:"timeout,omitempty"`
	// Boot: the network is always none.
	Boot Boot `json:"boot"`
}

// DefaultDrillTimeout bounds a drill from start to the guest answering.
const DefaultDrillTimeout = 5 * time.Minute

// Validate reports the first thing wrong with d.
func (d Drill) Validate() error {
	if err := pointRef(d.Machine, d.Point, d.Vault, "drill from"); err != nil {
		return err
	}
	if d.Probe != "" && d.ProbeSerial != "" {
		return invalid("probe", "give one probe: a command or a console pattern")
	}
	if d.ProbeSerial != "" {
		if _, err := regexp.Compile(d.ProbeSerial); err != nil {
			return invalid("probe_serial", "%v", err)
		}
	}
	if d.Timeout < 0 {
		return invalid("timeout", "must be positive")
	}
	return d.Boot.ForDrill()
}

// ForDrill refuses boot settings a drill makes itself: its sandbox has
// no network and no display, and its console log is its own.
func (b Boot) ForDrill() error {
	if b.Network != "" && b.Network != "none" || b.VNC != "" || b.SerialLog != "" {
		return invalid("boot", "a drill runs with no network, no display and its own console log")
	}
	return nil
}

func (d Drill) probe() string {
	switch {
	case d.Probe != "":
		return "command:" + d.Probe
	case d.ProbeSerial != "":
		return "serial:" + d.ProbeSerial
	}
	return "guest-agent"
}

// RunDrill runs d against v (the vault d.Vault names, opened) and returns
// the result, recorded in the vault (a vault that refuses the write gets a
// warning). A drill that ran and failed returns its result and an error
// wrapping ErrDrillFailed.
func RunDrill(ctx context.Context, v *vault.Vault, d Drill, env Env) (*drill.Result, error) {
	start := v.Clock().Now()
	if err := d.Validate(); err != nil {
		return nil, err
	}
	p, _, err := recovery.Resolve(ctx, v, d.Machine, d.Point)
	if err != nil {
		return nil, err
	}
	res := &drill.Result{Point: p.ID.String(), Machine: p.Machine, Time: start, Host: v.Host(), Probe: d.probe()}
	timeout := time.Duration(d.Timeout)
	if timeout == 0 {
		timeout = DefaultDrillTimeout
	}
	runErr := sandbox(ctx, v, p, d, timeout, env, func(what string) {
		switch what {
		case "booted":
			res.BootMS = v.Clock().Now().Sub(start).Milliseconds()
		case "answered":
			res.RTOMS = v.Clock().Now().Sub(start).Milliseconds()
		}
	})
	if errors.Is(runErr, context.Canceled) && ctx.Err() != nil {
		return nil, ctx.Err() // interrupted: nothing proven either way
	}
	res.OK = runErr == nil
	if runErr != nil {
		res.Error, res.RTOMS = runErr.Error(), 0
	}
	if err := drill.Save(context.WithoutCancel(ctx), v, res); err != nil {
		env.warn(fmt.Sprintf("the drill's result is not recorded in the vault: %v", err))
	}
	if runErr != nil {
		return res, fmt.Errorf("drill of %s point %s: %w: %w", p.Machine, p.ID.Short(), ErrDrillFailed, runErr)
	}
	return res, nil
}

// ErrDrillFailed marks a drill whose guest did not answer.
var ErrDrillFailed = errors.New("drill failed")

// sandbox boots p under overlays in a new temporary directory, waits for
// the probe and tears everything down; mark is told "booted" and
// "answered".
func sandbox(ctx context.Context, v *vault.Vault, p *recovery.Point, d Drill, timeout time.Duration, env Env, mark func(string)) error {
	work, err := os.MkdirTemp("", "lifeboat-drill-")
	if err != nil {
		return fmt.Errorf("creating the drill's directory: %w", err)
	}
	defer os.RemoveAll(work)
	x, err := ServePoint(ctx, v, p, Export{Listen: "unix:" + filepath.Join(work, "export.sock")}, env, v.Clock().Now())
	if err != nil {
		return err
	}
	defer x.Close(context.WithoutCancel(ctx))
	dir := filepath.Join(work, "disks")
	req := restore.Request{Dir: dir, Format: container.QCOW2, Definition: recovery.RestoreOptions{Suffix: "-drill"}}
	targets, err := restore.Plan(p, req)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, t := range targets {
		backing, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{"driver": "nbd", "export": t.Disk.Name,
			"server": map[string]any{"type": "unix", "path": x.sock}}})
		if err := container.CreateOverlay(ctx, t.Path, "json:"+string(backing), container.Raw, t.Disk.Size); err != nil {
			return fmt.Errorf("disk %s: %w", t.Disk.Name, err)
		}
	}
	_, restored, err := restore.WriteDefinition(p, req, targets)
	if err != nil {
		return err
	}
	def, err := startable(restored.JSON, Env{})
	if err != nil {
		return err
	}
	opts := d.Boot.options()
	opts.Network, opts.VNC = "none", ""
	opts.SerialLog = filepath.Join(work, "console.log")
	// A guest that reboots during a drill is in a boot loop: QEMU exits.
	opts.Extra = append(opts.Extra, "-no-reboot")
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log, err := os.Create(filepath.Join(work, "qemu.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	m, _, err := boot.Launch(tctx, def, opts, work, log, false)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		m.Stop(sctx)
	}()
	mark("booted")
	err = waitProbe(tctx, d, m, opts.SerialLog)
	if err == nil {
		mark("answered")
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if tctx.Err() != nil {
		err = fmt.Errorf("the guest did not answer within %v (%s)", timeout, d.probe())
	}
	if tail := lastLines(opts.SerialLog, 5); tail != "" {
		err = fmt.Errorf("%w; last console lines: %s", err, tail)
	}
	return err
}

// waitProbe waits until the guest answers d's probe, the machine stops,
// or ctx ends.
func waitProbe(ctx context.Context, d Drill, m *boot.Machine, serialLog string) error {
	stopped := errors.New("the machine stopped before the guest answered")
	switch {
	case d.ProbeSerial != "":
		re := regexp.MustCompile(d.ProbeSerial)
		for {
			b, _ := os.ReadFile(serialLog)
			for _, line := range strings.Split(string(b), "\n") {
				if re.MatchString(strings.TrimRight(line, "\r")) {
					return nil
				}
			}
			select {
			case <-m.Done():
				return stopped
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	case d.Probe != "":
		var last string
		for {
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			cmd := exec.CommandContext(pctx, "/bin/sh", "-c", d.Probe)
			cmd.Env = append(os.Environ(), "LIFEBOAT_DRILL_QMP="+m.QMPSocket, "LIFEBOAT_DRILL_GUEST_AGENT="+m.GuestAgentSocket,
				"LIFEBOAT_DRILL_SERIAL_LOG="+serialLog)
			out, err := cmd.CombinedOutput()
			cancel()
			if err == nil {
				return nil
			}
			last = strings.TrimSpace(string(out))
			select {
			case <-m.Done():
				return stopped
			case <-ctx.Done():
				return fmt.Errorf("%w (the probe's last output: %q)", ctx.Err(), last)
			case <-time.After(2 * time.Second):
			}
		}
	}
	err := boot.WaitGuestAgent(ctx, m.GuestAgentSocket, m.Done())
	if err != nil && isDone(m.Done()) {
		return stopped
	}
	return err
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// lastLines returns the last n non-empty lines of a file, joined by " | ".
func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
