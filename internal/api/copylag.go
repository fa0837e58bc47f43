package api

import (
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/schedule"
)

// AlertCopyLag: a machine's copy to its policy's second vault has lacked
// a point for longer than its tier's RPO (schedule.CopyLag); cleared once
// a copy catches up. Raised by the scheduler.
const AlertCopyLag = "copy-lag"

// CopyJSON is where a machine's copy to its policy's second vault stands.
type CopyJSON struct {
	// Target is the copy's vault.
	Target string `json:"target"`
	// Lag is how long the copy has lacked a point (schedule.CopyLag): 0
	// when it has every point the server knows of in the policy's vault.
	Lag Duration `json:"lag"`
	// Missed: Lag is beyond the tier's RPO (the copy-lag alert is open or
	// about to be).
	Missed bool `json:"missed,omitempty"`
	// NewestCopied is the newest point a copy job reported copied;
	// OldestMissing the oldest point the copy lacks.
	NewestCopied  time.Time `json:"newest_copied,omitzero"`
	OldestMissing time.Time `json:"oldest_missing,omitzero"`
	// LastCopy is when a copy job last succeeded.
	LastCopy time.Time `json:"last_copy,omitzero"`
	// Failures counts failed copy attempts since the last success.
	Failures  int    `json:"failures,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// CurrentCopies picks, of the recorded copy states, the one of each
// machine's policy as it is now (its copy target and source vault), by
// machine; a machine whose policy copies but which has no state yet is
// left out (the scheduler records it: catalog.ExpectCopies).
func CurrentCopies(states []catalog.CopyState, machines []catalog.Machine, policies map[string]catalog.Policy) map[string]catalog.CopyState {
	type key struct{ machine, target, source string }
	have := make(map[key]catalog.CopyState, len(states))
	for _, c := range states {
		have[key{c.Machine, c.Target, c.Source}] = c
	}
	out := map[string]catalog.CopyState{}
	for _, m := range machines {
		p, ok := policies[m.Policy]
		if !ok || p.CopyTo == "" {
			continue
		}
		if c, ok := have[key{m.Name, p.CopyTo, p.Vault}]; ok {
			out[m.Name] = c
		}
	}
	return out
}

// CopyStatus is a copy's standing at now against tier.
func CopyStatus(c catalog.CopyState, tier schedule.Tier, now time.Time) CopyJSON {
	lag := schedule.CopyLag(c.Pending, c.Expected, now)
	return CopyJSON{Target: c.Target, Lag: Duration(lag), Missed: schedule.CopyLagMissed(tier, lag),
		NewestCopied: c.Newest, OldestMissing: c.Pending, LastCopy: c.Copied, Failures: c.Failures, LastError: c.LastError}
}
