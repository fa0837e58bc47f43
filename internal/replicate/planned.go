package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"lifeboat/internal/clock"
	"lifeboat/internal/qmp"
	"lifeboat/internal/replica"
)

// DrainTimeout bounds how long a planned failover waits for the last cut.
var DrainTimeout = 5 * time.Minute

// PlannedFailover fails a machine over without losing a write: the guest
// is paused, cuts are taken until one taken after the pause is
// acknowledged by the target (the journal is drained), the target starts
// the copy from exactly that cut, and then the source QEMU is shut down.
// If anything fails before the copy runs, the guest is resumed. It runs
// on the source host (it needs the machine's QMP socket).
func (c *Config) PlannedFailover(ctx context.Context, name string, opts replica.FailoverOptions, clk clock.Clock, log *slog.Logger) (*replica.Failover, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	if opts.Test || opts.DisksOnly {
		return nil, fmt.Errorf("%w: a planned failover starts the machine for good: it takes no --test or --disks-only", ErrInvalid)
	}
	m, err := c.Machine(name)
	if err != nil {
		return nil, err
	}
	client, err := c.ClientFor(name, "")
	if err != nil {
		return nil, err
	}
	monitor := func(f func(*qmp.Monitor) error) error { return withMonitor(ctx, m, f) }
	if err := monitor(func(mon *qmp.Monitor) error { return mon.Stop(ctx) }); err != nil {
		return nil, fmt.Errorf("pausing %s (a planned failover needs a qemu-system machine): %w", name, err)
	}
	paused := clk.Now()
	resume := func(cause error) error {
		if err := monitor(func(mon *qmp.Monitor) error { return mon.Cont(context.WithoutCancel(ctx)) }); err != nil {
			return errors.Join(cause, fmt.Errorf("resuming %s: %w", name, err))
		}
		return fmt.Errorf("%w (%s was resumed at the source)", cause, name)
	}

	// Drain: a cut taken after the pause holds every write the guest made.
	drain := m
	drain.Policy.AppInterval = 0 // a paused guest's agent cannot answer a freeze
	r := &Runner{Config: c, Machine: drain, Clock: clk, Log: log}
	dctx, cancel := context.WithTimeout(ctx, DrainTimeout)
	defer cancel()
	var last uint64
	for {
		st, err := client.Status(dctx, name)
		if err == nil && st.LastCut != nil && st.LastCut.Time.After(paused) {
			last = st.LastSeq
			break
		}
		if err := r.Cycle(dctx); err != nil && dctx.Err() == nil {
			// Another runner may be shipping the same cut: try again.
			if log != nil {
				log.Warn("draining", "machine", name, "err", err)
			}
			t := time.NewTimer(200 * time.Millisecond)
			select {
			case <-dctx.Done():
			case <-t.C:
			}
		}
		if dctx.Err() != nil {
			return nil, resume(fmt.Errorf("draining the replication of %s: no cut after the pause was acknowledged within %s", name, DrainTimeout))
		}
	}
	opts.Point = strconv.FormatUint(last, 10)
	fo, err := client.Failover(ctx, name, opts)
	if err != nil {
		return nil, resume(err)
	}
	// The copy runs at the target: the source must not run on.
	if err := monitor(func(mon *qmp.Monitor) error {
		err := mon.Execute(ctx, "quit", nil, nil)
		if errors.Is(err, qmp.ErrDisconnected) {
			return nil
		}
		return err
	}); err != nil {
		return fo, fmt.Errorf("%s runs at the target as %s, but shutting the source down failed (it stays paused): %w", name, fo.Name, err)
	}
	return fo, nil
}

// Reprotect prepares the protection of a machine's failed-over copy back
// to another site (its old one): it finds the copy at site, and enables
// the copy's replication to back, seeded from the images seed names on
// back's host, with the original machine's definition (so a fail-back
// with suffix "none" restores the original name). replicate run then
// does the work.
func (c *Config) Reprotect(ctx context.Context, machine, site, back string, seed map[string]string, policy replica.Policy) (Machine, error) {
	client, err := c.ClientFor(machine, site)
	if err != nil {
		return Machine{}, err
	}
	st, err := client.Status(ctx, machine)
	if err != nil {
		return Machine{}, err
	}
	var fo *replica.Failover
	for i := range st.FailedOver {
		if !st.FailedOver[i].Test {
			fo = &st.FailedOver[i]
		}
	}
	if fo == nil || fo.QMP == "" {
		return Machine{}, fmt.Errorf("%w: %s is not failed over at that site: nothing to re-protect", ErrInvalid, machine)
	}
	m := Machine{Name: fo.Name, QMP: fo.QMP, Target: back, Policy: policy, Seed: seed, Definition: st.Definition, Origin: machine}
	if err := c.Enable(m); err != nil {
		return Machine{}, err
	}
	return m, nil
}

// Failback fails a re-protected machine back to its old site: a planned
// failover (no write lost) of its copy, which Reprotect enabled on this
// host, under the original name. name is the original machine's name or
// its copy's.
func (c *Config) Failback(ctx context.Context, name string, opts replica.FailoverOptions, clk clock.Clock, log *slog.Logger) (*replica.Failover, error) {
	ms, err := c.Machines()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Origin != "" && (m.Origin == name || m.Name == name) {
			opts.Suffix, opts.Name = "none", m.Origin
			return c.PlannedFailover(ctx, m.Name, opts, clk, log)
		}
	}
	return nil, fmt.Errorf("%w: no re-protected copy of %s replicates from this host (lifeboat reprotect first, on the host where the copy runs)", ErrNotFound, name)
}
