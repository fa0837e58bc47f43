package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"lifeboat/internal/clock"
	"lifeboat/internal/qmp"
	"lifeboat/internal/replica"
)

// GroupPlannedFailover fails a whole replication group over without losing
// a write and without one member ahead of another: every member's guest is
// paused first, then group cuts are taken until one taken after the last
// pause is acknowledged by the site for every member (each member's
// history drained), the site fails every member over to exactly that
// group cut, and the source QEMUs are shut down. If anything fails before
// the copies run, every paused guest is resumed. It runs on the source
// host (it needs the members' QMP sockets); members must be qemu-system
// machines (a storage daemon has no guest to pause).
func (c *Config) GroupPlannedFailover(ctx context.Context, group string, opts replica.FailoverOptions, clk clock.Clock, log *slog.Logger) (*replica.GroupFailover, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	if opts.Test || opts.DisksOnly {
		return nil, fmt.Errorf("%w: a planned failover starts the machines for good: it takes no --test or --disks-only", ErrInvalid)
	}
	members, err := c.GroupMembers(group)
	if err != nil {
		return nil, err
	}
	client, err := c.GroupClient(group, "")
	if err != nil {
		return nil, err
	}
	var paused []Machine
	resume := func(cause error) error {
		errs := []error{cause}
		for _, m := range paused {
			if err := withMonitor(context.WithoutCancel(ctx), m, func(mon *qmp.Monitor) error { return mon.Cont(context.WithoutCancel(ctx)) }); err != nil {
				errs = append(errs, fmt.Errorf("resuming %s: %w", m.Name, err))
			}
		}
		return fmt.Errorf("%w (the group's guests were resumed at the source)", errors.Join(errs...))
	}
	for _, m := range members {
		if err := withMonitor(ctx, m, func(mon *qmp.Monitor) error { return mon.Stop(ctx) }); err != nil {
			return nil, resume(fmt.Errorf("pausing %s (a planned failover needs qemu-system machines): %w", m.Name, err))
		}
		paused = append(paused, m)
	}
	after := clk.Now() // every guest is paused: a group cut from now on holds every write

	// The group's runner (replicate run, the agent) takes the cuts when it
	// runs: a second runner on the same machines would race it for their
	// bitmaps and status. Without one, the cuts are taken here.
	var gr *GroupRunner
	if !c.groupRunnerAlive(ctx, members, clk) {
		gr = &GroupRunner{Group: group, Clock: clk}
		for _, m := range members {
			m.Policy.AppInterval = 0 // a paused guest's agent cannot answer a freeze
			r := &Runner{Config: c, Machine: m, Clock: clk, Log: log}
			if err := r.init(); err != nil {
				return nil, resume(err)
			}
			gr.Members = append(gr.Members, r)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, DrainTimeout)
	defer cancel()
	var point uint64
	for {
		st, err := client.GroupStatus(dctx, group)
		if err == nil && len(st.Points) > 0 {
			if p := st.Points[len(st.Points)-1]; p.Time.After(after) {
				point = p.ID
				break
			}
		}
		if gr != nil {
			gr.cycle(dctx)
		} else {
			t := time.NewTimer(100 * time.Millisecond) // polling the site for the runner's next cut
			select {
			case <-dctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		if dctx.Err() != nil {
			return nil, resume(fmt.Errorf("draining the replication of group %s: no group cut after the pause was acknowledged within %s", group, DrainTimeout))
		}
	}
	opts.Point = strconv.FormatUint(point, 10)
	gf, err := client.GroupFailover(ctx, group, opts)
	if err != nil {
		if gf == nil || len(gf.Failovers) == 0 {
			return nil, resume(err)
		}
		return gf, fmt.Errorf("%w (the group's guests stay paused at the source: some members run at the target)", err)
	}
	// The copies run at the target: the sources must not run on.
	var errs []error
	for _, m := range members {
		if err := withMonitor(ctx, m, func(mon *qmp.Monitor) error {
			err := mon.Execute(ctx, "quit", nil, nil)
			if errors.Is(err, qmp.ErrDisconnected) {
				return nil
			}
			return err
		}); err != nil {
			errs = append(errs, fmt.Errorf("shutting %s down (it stays paused): %w", m.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return gf, fmt.Errorf("group %s runs at the target, but: %w", group, err)
	}
	return gf, nil
}

// groupRunnerAlive tells whether another process runs the replication of
// every member.
func (c *Config) groupRunnerAlive(ctx context.Context, members []Machine, clk clock.Clock) bool {
	for _, m := range members {
		st, err := c.MachineStatus(ctx, m.Name, clk.Now())
		if err != nil || st.State == StateStopped || st.State == StateFailedOver || st.PID == os.Getpid() {
			return false
		}
	}
	return true
}

// withMonitor runs f on a new connection to m's QMP socket.
func withMonitor(ctx context.Context, m Machine, f func(*qmp.Monitor) error) error {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	mon, err := qmp.Dial(dctx, m.QMP)
	cancel()
	if err != nil {
		return fmt.Errorf("connecting to QEMU of %s at %s: %w", m.Name, m.QMP, err)
	}
	defer mon.Close()
	return f(mon)
}
