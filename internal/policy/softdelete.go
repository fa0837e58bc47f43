package policy

import (
	"errors"
	"sort"
	"time"
)

// DefaultSoftDelete is the soft-delete window of a new vault: how long a
// forgotten point stays restorable (undelete) before prune may purge it.
const DefaultSoftDelete = 14 * day

// WindowChange is one setting of a vault's soft-delete window: from At on,
// Window. A vault with no change has no window (soft delete off), as every
// vault made before soft delete existed.
type WindowChange struct {
	At     time.Time
	Window time.Duration
}

// SoftDeleteWindow is the window in force at t. The newest change made by t
// rules, except that every change keeps the window that was in force just
// before it for that long after it: shortening the window (or turning it
// off) does not cut short the time already promised, so whoever can write
// a setting — an operator by mistake, an intruder with the passphrase —
// cannot shorten it and purge at once. Lengthening takes effect at once.
func SoftDeleteWindow(changes []WindowChange, t time.Time) time.Duration {
	cs := append([]WindowChange(nil), changes...)
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].At.Before(cs[j].At) })
	// Each change holds the window in force just before it for that long.
	type hold struct {
		until  time.Time
		window time.Duration
	}
	var holds []hold
	at := func(t time.Time) time.Duration {
		var w time.Duration
		if len(holds) > 0 {
			w = cs[len(holds)-1].Window
		}
		for _, h := range holds {
			if t.Before(h.until) {
				w = max(w, h.window)
			}
		}
		return w
	}
	for _, c := range cs {
		if c.At.After(t) {
			break
		}
		before := at(c.At)
		holds = append(holds, hold{c.At.Add(before), before})
	}
	return at(t)
}

// PurgeAt is when a point soft-deleted at deleted may be purged, seen at
// now: after the window in force when it was deleted, or the one in force
// now if that is longer (a lengthened window extends points already
// deleted; a shortened one never shortens theirs).
func PurgeAt(changes []WindowChange, deleted, now time.Time) time.Time {
	return deleted.Add(max(SoftDeleteWindow(changes, deleted), SoftDeleteWindow(changes, now)))
}

// ErrFraction: a soft-delete window must be whole seconds.
var ErrFraction = errors.New("give whole seconds")

// ParseWindow parses a soft-delete window: a duration ParseDuration reads
// (14d, 36h, 2w) in whole seconds, or 0 for none.
func ParseWindow(s string) (time.Duration, error) {
	d, err := ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d%time.Second != 0 {
		return 0, ErrFraction
	}
	return d, nil
}

// WindowText is a soft-delete window as shown: "off" for none.
func WindowText(d time.Duration) string {
	if d == 0 {
		return "off"
	}
	return FormatDuration(d)
}
