// Package schedule decides when protection runs and whether it keeps its
// objectives. Everything here is a pure function of its arguments: no clock
// is read (callers pass now, from an injectable clock), nothing is stored,
// and the same inputs give the same answer on every server, which is what
// lets several servers sharing one catalog agree on what is due.
//
// A Spec names slots: the instants a policy wants a backup, either every
// Every (slots are multiples of Every since the Unix epoch, so they do not
// drift with restarts) or at the times a cron expression names. Staggering
// spreads the machines of one policy across a window after each slot: each
// machine runs at slot + Offset(machine), an offset derived from a hash of
// the key, stable across restarts and servers.
//
// Missed slots collapse: when the server was down across several slots,
// Due returns only the newest slot whose run time has passed, so a machine
// runs once on start, not once per missed slot.
package schedule

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// ErrInvalid is wrapped by every error about a Spec that cannot be used.
var ErrInvalid = errors.New("invalid schedule")

// Spec is when a backup policy runs. Exactly one of Every and Cron is set.
type Spec struct {
	// Every is the interval between slots, at least a second.
	Every time.Duration `json:"every,omitempty"`
	// Cron is a standard five-field cron expression ("30 2 * * *") or a
	// descriptor (@hourly, @daily, @weekly, @monthly, @every 15m). Times
	// are UTC unless the expression starts with CRON_TZ=Zone.
	Cron string `json:"cron,omitempty"`
	// Stagger is the window after each slot across which the machines of
	// the policy start. Zero starts them all at the slot. It must be
	// shorter than the time between two slots.
	Stagger time.Duration `json:"stagger,omitempty"`
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parsed caches parsed cron expressions: a scheduler tick asks about every
// machine, and most share a handful of expressions.
var parsed sync.Map // string -> cron.Schedule

func parseCron(expr string) (cron.Schedule, error) {
	if v, ok := parsed.Load(expr); ok {
		return v.(cron.Schedule), nil
	}
	sched, err := cronParser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: cron expression %q: %v", ErrInvalid, expr, err)
	}
	parsed.Store(expr, sched)
	return sched, nil
}

// Validate reports what is wrong with s, wrapping ErrInvalid.
func (s Spec) Validate() error {
	next, err := s.slots()
	if err != nil {
		return err
	}
	if s.Stagger > 0 {
		if gap := minGap(next); s.Stagger >= gap {
			return fmt.Errorf("%w: stagger window %s must be shorter than the %s between two runs", ErrInvalid, s.Stagger, gap)
		}
	}
	return nil
}

// String describes s for people: "every 15m0s" or "cron 30 2 * * *",
// with ", staggered over 10m0s" when it applies.
func (s Spec) String() string {
	var b strings.Builder
	if s.Cron != "" {
		fmt.Fprintf(&b, "cron %s", s.Cron)
	} else {
		fmt.Fprintf(&b, "every %s", s.Every)
	}
	if s.Stagger > 0 {
		fmt.Fprintf(&b, ", staggered over %s", s.Stagger)
	}
	return b.String()
}

// slots returns the function giving the first slot strictly after t. The
// stagger window's length against the gap between slots is checked by
// Validate only, once when a policy is stored, not on every tick.
func (s Spec) slots() (func(time.Time) time.Time, error) {
	var next func(time.Time) time.Time
	switch {
	case s.Every != 0 && s.Cron != "":
		return nil, fmt.Errorf("%w: give an interval or a cron expression, not both", ErrInvalid)
	case s.Every != 0:
		if s.Every < time.Second {
			return nil, fmt.Errorf("%w: interval %s is shorter than a second", ErrInvalid, s.Every)
		}
		every := s.Every
		next = func(t time.Time) time.Time {
			// Slots are whole multiples of every since the epoch; Truncate
			// works on absolute time, so the zone of t does not matter.
			return t.Truncate(every).Add(every)
		}
	case s.Cron != "":
		sched, err := parseCron(s.Cron)
		if err != nil {
			return nil, err
		}
		next = func(t time.Time) time.Time { return sched.Next(t.UTC()) }
	default:
		return nil, fmt.Errorf("%w: give an interval (--every) or a cron expression (--cron)", ErrInvalid)
	}
	if s.Stagger < 0 {
		return nil, fmt.Errorf("%w: stagger window %s is negative", ErrInvalid, s.Stagger)
	}
	return next, nil
}

// minGap is the shortest time between consecutive slots over a sample of a
// few years of slots, enough for every cron pattern (the longest regular
// cycle, leap years aside, is a year). A cron expression that never fires
// again gives a zero slot; its gap counts as unlimited.
func minGap(next func(time.Time) time.Time) time.Duration {
	t := next(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	gap := time.Duration(1<<63 - 1)
	for i := 0; i < 2000 && !t.IsZero(); i++ {
		n := next(t)
		if n.IsZero() {
			break
		}
		if d := n.Sub(t); d < gap {
			gap = d
		}
		t = n
	}
	return gap
}

// Offset is where key (a machine's name, usually with the policy's) starts
// within the stagger window: a stable hash of key, in whole seconds, in
// [0, Stagger).
func (s Spec) Offset(key string) time.Duration {
	secs := int64(s.Stagger / time.Second)
	if secs <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return time.Duration(h.Sum64()%uint64(secs)) * time.Second
}

// Next returns the slot a machine (key) runs for next after last — the
// slot of its previous run, or the time it was protected when it never ran
// — and the time that run is due (slot + Offset(key)).
func (s Spec) Next(key string, last time.Time) (slot, at time.Time, err error) {
	next, err := s.slots()
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	slot = next(last)
	if slot.IsZero() {
		return time.Time{}, time.Time{}, nil
	}
	return slot, slot.Add(s.Offset(key)), nil
}

// Due reports whether the machine (key) whose previous run was for slot
// last (or which was protected at last and never ran) should run at now,
// and for which slot. When several slots were missed, the slot returned is
// the newest one whose run time has passed: record it as the new last and
// the missed ones are never run.
func (s Spec) Due(key string, last, now time.Time) (slot time.Time, due bool, err error) {
	next, err := s.slots()
	if err != nil {
		return time.Time{}, false, err
	}
	off := s.Offset(key)
	cur := next(last)
	if cur.IsZero() || cur.Add(off).After(now) {
		return time.Time{}, false, nil
	}
	return latestSlot(next, cur, now.Add(-off)), true, nil
}

// latestSlot finds the newest slot at or before limit, given one slot known
// to be at or before it, by probing backwards from limit in doubling steps:
// a few slots are visited even after years of missed minute slots.
func latestSlot(next func(time.Time) time.Time, known, limit time.Time) time.Time {
	step := time.Minute
	if n := next(known); !n.IsZero() && n.Sub(known) > step {
		step = n.Sub(known) // about one slot back: usually the first probe finds it
	}
	for ; ; step *= 2 {
		from := limit.Add(-step)
		if !from.After(known) {
			from = known
		}
		best := time.Time{}
		for t := next(from); !t.IsZero() && !t.After(limit); t = next(t) {
			best = t
		}
		if !best.IsZero() {
			return best
		}
		if from.Equal(known) {
			return known
		}
	}
}
