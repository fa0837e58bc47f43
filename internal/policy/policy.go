// Package policy decides which recovery points a retention policy keeps.
//
// Apply is a pure function: it reads no clock (the caller passes now), does
// no I/O and does not modify its input. The rules follow restic's `forget`:
//
//   - Points are grouped by Machine; every group is decided on its own.
//   - Within a group points are ordered newest first. Points with the same
//     Time are ordered by ID (ascending), so the point with the smaller ID
//     counts as the newer one; the result never depends on input order.
//   - KeepLast n keeps the n newest points.
//   - KeepHourly, KeepDaily, KeepWeekly, KeepMonthly and KeepYearly n keep
//     the newest point of each of the n most recent buckets (hours, days,
//     ISO 8601 weeks, months, years) that contain points. Buckets without
//     points do not count.
//   - KeepWithin d keeps every point with Time > now-d.
//   - A point is kept if any rule keeps it; Decision.Reasons lists them all.
//
// For the counted rules, -1 means unlimited: KeepLast -1 keeps every point,
// KeepDaily -1 keeps the newest point of every day, and so on. 0 means the
// rule is not used.
//
// Buckets are computed in UTC, whatever the Location of a point's Time: a
// "day" is a UTC calendar day and a "week" is an ISO week of UTC dates
// (weeks start on Monday; the first days of January may belong to the last
// week of the previous year and the last days of December to week 1 of the
// next one). Daylight saving time therefore never changes a decision, and
// the same instant is decided the same way on every host. Operators in
// other time zones see day boundaries at UTC midnight.
//
// Safety rules, so that a clock or a configuration mistake never deletes
// data:
//
//   - A point whose Time is after now (clock skew between the machine that
//     made it and the one running forget) is always kept, with reason
//     "future". Such points are also left out of every other rule, so they
//     neither use up a KeepLast slot nor claim a bucket: a point stamped in
//     2099 cannot push the real newest point out of "last 1".
//   - An empty Retention (see Empty) keeps every point, with reason
//     "empty policy". Callers that are about to delete should refuse an
//     empty policy instead of relying on this.
//   - An invalid Retention (see Validate) keeps every point, with reason
//     "invalid policy". Callers should call Validate first and report the
//     error.
package policy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Point is what retention needs to know about a recovery point.
type Point struct {
	ID      string
	Machine string
	Time    time.Time
}

// Retention says what to keep. Zero means "this rule keeps nothing"; -1
// means unlimited for the counted rules.
type Retention struct {
	KeepLast    int `json:"keep_last,omitempty"`
	KeepHourly  int `json:"keep_hourly,omitempty"`
	KeepDaily   int `json:"keep_daily,omitempty"`
	KeepWeekly  int `json:"keep_weekly,omitempty"`
	KeepMonthly int `json:"keep_monthly,omitempty"`
	KeepYearly  int `json:"keep_yearly,omitempty"`

	// KeepWithin keeps every point newer than now-KeepWithin.
	KeepWithin time.Duration `json:"keep_within,omitempty"`
}

// Decision is the result for one point.
type Decision struct {
	Point Point
	Keep  bool
	// Reasons lists why the point is kept, in the order "future", "last",
	// "hourly", "daily", "weekly", "monthly", "yearly", "within <d>" (or
	// just "empty policy" / "invalid policy"). Nil when Keep is false.
	Reasons []string
}

// Reasons given in Decision.Reasons.
const (
	ReasonFuture  = "future"
	ReasonLast    = "last"
	ReasonHourly  = "hourly"
	ReasonDaily   = "daily"
	ReasonWeekly  = "weekly"
	ReasonMonthly = "monthly"
	ReasonYearly  = "yearly"
	ReasonEmpty   = "empty policy"
	ReasonInvalid = "invalid policy"
	// The KeepWithin reason is "within " followed by the duration, e.g.
	// "within 7d" or "within 1d12h".
)

// Empty reports whether no rule is set. An empty policy keeps everything;
// a CLI should refuse it rather than silently do nothing (or, with a buggy
// caller, forget everything).
func (r Retention) Empty() bool {
	return r.KeepLast == 0 && r.KeepHourly == 0 && r.KeepDaily == 0 &&
		r.KeepWeekly == 0 && r.KeepMonthly == 0 && r.KeepYearly == 0 &&
		r.KeepWithin == 0
}

// Validate reports every invalid value: counts must be -1 (unlimited) or
// at least 0, and KeepWithin must not be negative. An empty Retention is
// valid (see Empty).
func (r Retention) Validate() error {
	var errs []error
	for _, c := range r.counts() {
		if c.n < -1 {
			errs = append(errs, fmt.Errorf("policy: keep-%s must be -1 (unlimited) or at least 0, not %d", c.name, c.n))
		}
	}
	if r.KeepWithin < 0 {
		errs = append(errs, fmt.Errorf("policy: keep-within must not be negative, not %s", r.KeepWithin))
	}
	return errors.Join(errs...)
}

// String describes the policy, e.g.
// "last 3, daily 7, weekly 4, monthly 12, yearly 2, within 2d".
func (r Retention) String() string {
	if r.Empty() {
		return "empty"
	}
	var parts []string
	for _, c := range r.counts() {
		switch {
		case c.n == 0:
		case c.n == -1:
			parts = append(parts, c.name+" unlimited")
		default:
			parts = append(parts, c.name+" "+strconv.Itoa(c.n))
		}
	}
	if r.KeepWithin != 0 {
		parts = append(parts, "within "+FormatDuration(r.KeepWithin))
	}
	return strings.Join(parts, ", ")
}

type namedCount struct {
	name string
	n    int
}

func (r Retention) counts() []namedCount {
	return []namedCount{
		{ReasonLast, r.KeepLast},
		{ReasonHourly, r.KeepHourly},
		{ReasonDaily, r.KeepDaily},
		{ReasonWeekly, r.KeepWeekly},
		{ReasonMonthly, r.KeepMonthly},
		{ReasonYearly, r.KeepYearly},
	}
}

// bucketKey identifies a bucket. Keys are monotonic in time, so walking
// points newest first, a key different from the previous one starts a new
// bucket.
type bucketKey [4]int

type bucketRule struct {
	reason string
	n      int
	key    func(t time.Time) bucketKey // t is in UTC
}

func hourKey(t time.Time) bucketKey  { return bucketKey{t.Year(), int(t.Month()), t.Day(), t.Hour()} }
func dayKey(t time.Time) bucketKey   { return bucketKey{t.Year(), int(t.Month()), t.Day()} }
func monthKey(t time.Time) bucketKey { return bucketKey{t.Year(), int(t.Month())} }
func yearKey(t time.Time) bucketKey  { return bucketKey{t.Year()} }
func weekKey(t time.Time) bucketKey {
	y, w := t.ISOWeek()
	return bucketKey{y, w}
}

// Apply decides, per machine, which points to keep. now is the reference
// for KeepWithin and for detecting points from the future. The result has
// one Decision per input point, ordered by Machine, then newest first (ties
// by ID). The input slice is not modified.
func Apply(points []Point, r Retention, now time.Time) []Decision {
	sorted := slices.Clone(points)
	slices.SortStableFunc(sorted, func(a, b Point) int {
		if c := cmp.Compare(a.Machine, b.Machine); c != 0 {
			return c
		}
		if c := b.Time.Compare(a.Time); c != 0 {
			return c // newest first
		}
		return cmp.Compare(a.ID, b.ID)
	})

	var fallback string // keep everything, for this reason
	switch {
	case r.Validate() != nil:
		fallback = ReasonInvalid
	case r.Empty():
		fallback = ReasonEmpty
	}

	out := make([]Decision, 0, len(sorted))
	if fallback != "" {
		for _, p := range sorted {
			out = append(out, Decision{Point: p, Keep: true, Reasons: []string{fallback}})
		}
		return out
	}
	for start := 0; start < len(sorted); {
		end := start + 1
		for end < len(sorted) && sorted[end].Machine == sorted[start].Machine {
			end++
		}
		out = applyGroup(out, sorted[start:end], r, now)
		start = end
	}
	return out
}

// applyGroup appends the decisions for one machine's points, which are
// sorted newest first, under a valid, non-empty policy.
func applyGroup(out []Decision, group []Point, r Retention, now time.Time) []Decision {
	rules := []bucketRule{
		{ReasonHourly, r.KeepHourly, hourKey},
		{ReasonDaily, r.KeepDaily, dayKey},
		{ReasonWeekly, r.KeepWeekly, weekKey},
		{ReasonMonthly, r.KeepMonthly, monthKey},
		{ReasonYearly, r.KeepYearly, yearKey},
	}
	type ruleState struct {
		kept    int
		last    bucketKey
		started bool
	}
	states := make([]ruleState, len(rules))
	var within string
	var cutoff time.Time
	if r.KeepWithin > 0 {
		within = "within " + FormatDuration(r.KeepWithin)
		cutoff = now.Add(-r.KeepWithin)
	}

	seen := 0 // points not from the future, for KeepLast
	for _, p := range group {
		if p.Time.After(now) {
			out = append(out, Decision{Point: p, Keep: true, Reasons: []string{ReasonFuture}})
			continue
		}
		var reasons []string
		if r.KeepLast == -1 || seen < r.KeepLast {
			reasons = append(reasons, ReasonLast)
		}
		seen++
		utc := p.Time.UTC()
		for i, rule := range rules {
			if rule.n == 0 {
				continue
			}
			st := &states[i]
			k := rule.key(utc)
			if st.started && k == st.last {
				continue // a newer point already represents this bucket
			}
			st.started, st.last = true, k
			if rule.n == -1 || st.kept < rule.n {
				st.kept++
				reasons = append(reasons, rule.reason)
			}
		}
		if within != "" && p.Time.After(cutoff) {
			reasons = append(reasons, within)
		}
		out = append(out, Decision{Point: p, Keep: len(reasons) > 0, Reasons: reasons})
	}
	return out
}
