package server

import (
	"context"
	"fmt"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/schedule"
)

// AlertCopyLag: a machine's copy to its policy's second vault has lacked
// a point for longer than its tier's RPO.
const AlertCopyLag = api.AlertCopyLag

// copies returns where the copy of each machine whose policy copies
// stands, by machine, first recording the copies it did not expect yet
// (catalog.ExpectCopies: their lag counts from now for older points).
// One query, and one write only when a policy began to copy.
func (s *Scheduler) copies(ctx context.Context, machines []catalog.Machine, policies map[string]catalog.Policy, now time.Time) (map[string]catalog.CopyState, error) {
	states, err := s.Catalog.CopyStates(ctx)
	if err != nil {
		return nil, err
	}
	current := api.CurrentCopies(states, machines, policies)
	var missing []catalog.CopyKey
	for _, m := range machines {
		if p, ok := policies[m.Policy]; ok && p.CopyTo != "" {
			if _, ok := current[m.Name]; !ok {
				missing = append(missing, catalog.CopyKey{Machine: m.Name, Source: p.Vault, Target: p.CopyTo})
			}
		}
	}
	if len(missing) == 0 {
		return current, nil
	}
	if err := s.Catalog.ExpectCopies(ctx, missing, now); err != nil {
		return nil, err
	}
	if states, err = s.Catalog.CopyStates(ctx); err != nil {
		return nil, err
	}
	return api.CurrentCopies(states, machines, policies), nil
}

// copyLag raises copy-lag on m while its copy c lags beyond its tier's
// RPO, and clears it otherwise (ok false: the machine's policy copies
// nowhere, nothing can lag).
func (s *Scheduler) copyLag(ctx context.Context, rep *TickReport, m catalog.Machine, tier schedule.Tier, c catalog.CopyState, ok bool, now time.Time) {
	lag := schedule.CopyLag(c.Pending, c.Expected, now)
	msg := fmt.Sprintf("the copy of %s to vault %s has lacked point(s) of vault %s for %s (the oldest taken %s), beyond its RPO of %s (tier %s)",
		m.Name, c.Target, c.Source, lag.Round(time.Second), c.Pending.Format(time.RFC3339), tier.RPO, tier.Name)
	if c.Newest.IsZero() {
		msg += "; no copy of it was reported yet"
	} else {
		msg += "; newest point copied: " + c.Newest.Format(time.RFC3339)
	}
	if c.LastError != "" {
		msg += "; last copy error: " + c.LastError
	}
	s.alert(ctx, rep, ok && schedule.CopyLagMissed(tier, lag), AlertCopyLag, m.Name, msg, now)
}

// failing is the job-failing alert's verdict on m: its backups' failures
// in a row, or its copies' (c, when its policy copies), whichever are
// more, and a message naming them.
func failing(m catalog.Machine, c catalog.CopyState, failuresToAlert int) (bool, string) {
	if c.Failures > m.Failures {
		return c.Failures >= failuresToAlert, fmt.Sprintf("the last %d attempts to copy %s to vault %s failed; the newest: %s", c.Failures, m.Name, c.Target, c.LastError)
	}
	return m.Failures >= failuresToAlert, fmt.Sprintf("the last %d attempts to protect %s failed; the newest: %s", m.Failures, m.Name, m.LastError)
}
