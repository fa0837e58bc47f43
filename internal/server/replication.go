package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/replicate"
	"lifeboat/internal/schedule"
)

// AlertReplicationLag: a machine's continuous replication lags beyond its
// tier's RPO (the age of the last cut its target acknowledged: what a
// failover would lose), or has failed or stopped (its runner, or the agent
// reporting it, is gone).
const AlertReplicationLag = "replication-lag"

// ReplicationLag says whether a replication needs someone, and why. rpo
// is the machine's tier's RPO, 0 when it has none (then only a failed or
// stopped replication alerts). A machine failed over to its target is not
// replicating on purpose: no alert.
func ReplicationLag(st replicate.Status, rpo time.Duration) (bool, string) {
	switch st.State {
	case replicate.StateFailedOver:
		return false, ""
	case replicate.StateError, replicate.StateStopped:
		return true, fmt.Sprintf("the replication of %s to %s is %s: %s", st.Machine, st.Target, st.State, st.Error)
	}
	if rpo <= 0 || st.LastCut == nil {
		return false, ""
	}
	lag := time.Duration(st.LagSeconds * float64(time.Second))
	if lag <= rpo {
		return false, ""
	}
	return true, fmt.Sprintf("the replication of %s to %s lags %s (state %s), beyond its RPO of %s", st.Machine, st.Target, lag.Round(time.Second), st.State, rpo)
}

// replicationAlerts raises and clears replication-lag on each machine the
// agents report a replication of, and clears it on those no longer
// reported (replication disabled).
func (s *Scheduler) replicationAlerts(ctx context.Context, rep *TickReport, machines []catalog.Machine, tiers map[string]schedule.Tier, now time.Time) error {
	reps, err := s.Catalog.Replications(ctx)
	if err != nil {
		return err
	}
	rpo := map[string]time.Duration{}
	for _, m := range machines {
		if t, ok := tiers[m.Tier]; ok && !t.None {
			rpo[m.Name] = t.RPO
		}
	}
	reported := map[string]bool{}
	for _, r := range reps {
		reported[r.Machine] = true
		on, msg := ReplicationLag(api.Replication(r, now).Status, rpo[r.Machine])
		s.alert(ctx, rep, on, AlertReplicationLag, r.Machine, msg, now)
	}
	for key := range rep.open {
		if subject, ok := strings.CutPrefix(key, AlertReplicationLag+" "); ok && !reported[subject] {
			s.alert(ctx, rep, false, AlertReplicationLag, subject, "", now)
		}
	}
	return nil
}
