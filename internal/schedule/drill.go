package schedule

import "time"

// DrillInterval is how often machines of tier t are drilled: the tier's
// own interval, else fallback (the server's default; 0: never). A tier
// with no protection is never drilled.
func DrillInterval(t Tier, fallback time.Duration) time.Duration {
	switch {
	case t.None:
		return 0
	case t.DrillEvery > 0:
		return t.DrillEvery
	}
	return max(fallback, 0)
}

// DrillDue reports whether a machine of tier t is due a drill at now:
// it has a point to drill, drills are scheduled for its tier, and the
// last one was queued (last; zero: never) an interval or more ago.
func DrillDue(t Tier, fallback time.Duration, hasPoint bool, last, now time.Time) bool {
	every := DrillInterval(t, fallback)
	return every > 0 && hasPoint && (last.IsZero() || now.Sub(last) >= every)
}

// RTOMissed reports whether a drill that measured rto missed tier t's
// recovery time objective (a tier without one is never missed).
func RTOMissed(t Tier, rto time.Duration) bool {
	return !t.None && t.RTO > 0 && rto > t.RTO
}
