package agent

import (
	"context"
	"log/slog"

	"lifeboat/internal/clock"
	"lifeboat/internal/replicate"
)

// ReplicateWith makes the agent report the status of the replications of
// this host (cfg) to the server, and run those the server enables for it
// (replicate.Config.Apply). The replications themselves are run by
// replicate.Supervise on cfg, which follows what Apply enables.
func (a *Agent) ReplicateWith(cfg *replicate.Config, clk clock.Clock) {
	a.Replications = func(ctx context.Context) ([]replicate.Status, error) {
		return cfg.Statuses(ctx, "", clk.Now())
	}
	warned := map[string]bool{} // skipped machines, warned of once
	a.Enable = func(ctx context.Context, specs []replicate.Machine) error {
		done, err := cfg.Apply(specs)
		logApplied(a.log(), done, warned)
		return err
	}
}

// logApplied logs what the server's replications changed on this host.
func logApplied(log *slog.Logger, done replicate.Applied, warned map[string]bool) {
	for _, m := range done.Enabled {
		log.Info("replication enabled by the server", "machine", m)
	}
	for _, m := range done.Disabled {
		log.Info("replication disabled by the server", "machine", m)
	}
	for _, m := range done.Skipped {
		if warned[m] {
			continue
		}
		warned[m] = true
		log.Warn("the server enabled the replication of a machine enabled here by hand (replicate enable): left as it is", "machine", m)
	}
}
