package schedule

import "time"

// CopyLag is how long the copy of a machine's points to a second vault
// has lacked a point, at now: 0 when it lacks none (pending is zero);
// otherwise the time since the oldest point it lacks was taken (pending),
// or since the copy was first expected (expected: when the policy began
// to copy the machine there), whichever is later — a point taken before
// anyone asked for a copy lags only from when one was asked for. A point
// stamped in the future (clock skew) lags from now.
func CopyLag(pending, expected, now time.Time) time.Duration {
	if pending.IsZero() {
		return 0
	}
	from := pending
	if expected.After(from) {
		from = expected
	}
	return max(now.Sub(from), 0)
}

// CopyLagMissed reports whether a copy lagging by lag misses tier t's
// RPO: a copy is held to the objective of the points it copies. A tier
// with no protection (or no RPO) never misses.
func CopyLagMissed(t Tier, lag time.Duration) bool {
	return !t.None && t.RPO > 0 && lag > t.RPO
}
