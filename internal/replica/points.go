package replica

import (
	"fmt"
	"strconv"
	"time"
)

// Cut is one consistent cut the target holds: the state of all of a
// machine's disks at a source instant.
type Cut struct {
	Seq         uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	Consistency string    `json:"consistency"`
	Full        bool      `json:"full,omitempty"`
	Bytes       int64     `json:"bytes"` // size of its batch file (0 for the base)
	Group       string    `json:"group,omitempty"`
	GroupCut    int64     `json:"group_cut,omitempty"`
}

// Point is a recovery point: a cut kept for failover.
type Point struct {
	ID          uint64    `json:"id"` // the cut's sequence number
	Time        time.Time `json:"time"`
	Consistency string    `json:"consistency"`
	Latest      bool      `json:"latest,omitempty"`
}

// Policy is a replication policy's target side.
type Policy struct {
	// Retention is how long points are kept (Site Recovery's default: 24 h).
	Retention time.Duration `json:"retention"`
	// CrashInterval spaces crash-consistent points (default 5 min): the
	// first cut of each interval (counted from the Unix epoch) is a point.
	CrashInterval time.Duration `json:"crash_interval"`
	// AppInterval spaces app-consistent points; 0 takes none.
	AppInterval time.Duration `json:"app_interval"`
}

// Defaults fills unset fields with Site Recovery's defaults.
func (p Policy) Defaults() Policy {
	if p.Retention <= 0 {
		p.Retention = 24 * time.Hour
	}
	if p.CrashInterval <= 0 {
		p.CrashInterval = 5 * time.Minute
	}
	return p
}

// Points chooses the recovery points among the cuts (the base first, then
// the journal's cuts in order), as of now: the base (the oldest state the
// target can produce), every app-consistent cut, the first cut of each
// crash interval, and the latest cut; those older than the retention are
// dropped, except the base. The result is in order, oldest first.
func Points(cuts []Cut, p Policy, now time.Time) []Point {
	p = p.Defaults()
	var out []Point
	horizon := now.Add(-p.Retention)
	var prevBucket int64 = -1
	for i, c := range cuts {
		bucket := c.Time.UnixNano() / int64(p.CrashInterval)
		keep := i == 0 || c.Consistency == "app" || bucket != prevBucket || i == len(cuts)-1
		prevBucket = bucket
		if !keep || (i > 0 && c.Time.Before(horizon) && i != len(cuts)-1) {
			continue
		}
		out = append(out, Point{ID: c.Seq, Time: c.Time, Consistency: c.Consistency, Latest: i == len(cuts)-1})
	}
	return out
}

// FoldTo is the newest cut the base may be advanced to: the newest full
// cut (a full resync replaces everything before it), or the newest cut
// older than the retention window, whichever is later. 0 when nothing may
// be folded. cuts[0] is the base, when there is one (folding to it is a
// no-op).
func FoldTo(cuts []Cut, p Policy, now time.Time) uint64 {
	p = p.Defaults()
	horizon := now.Add(-p.Retention)
	var to uint64
	for _, c := range cuts {
		if c.Full || !c.Time.After(horizon) {
			to = c.Seq
		}
	}
	// The oldest point kept is the first cut inside the window: folding to
	// the cut before it would lose nothing, but folding stops at points
	// still wanted, so the newest cut older than the window is the limit.
	return to
}

// ErrNoSuchPoint is returned when a point asked for does not exist.
var ErrNoSuchPoint = fmt.Errorf("no such recovery point")

// Choose finds a point: "latest" (or ""), "latest-app", a point's ID, or
// an RFC 3339 time (the newest point at or before it).
func Choose(points []Point, want string) (Point, error) {
	if len(points) == 0 {
		return Point{}, fmt.Errorf("%w: the replica has no recovery point yet (initial sync not finished)", ErrNoSuchPoint)
	}
	switch want {
	case "", "latest":
		return points[len(points)-1], nil
	case "latest-app":
		for i := len(points) - 1; i >= 0; i-- {
			if points[i].Consistency == "app" {
				return points[i], nil
			}
		}
		return Point{}, fmt.Errorf("%w: no app-consistent point", ErrNoSuchPoint)
	}
	if id, err := strconv.ParseUint(want, 10, 64); err == nil {
		for _, p := range points {
			if p.ID == id {
				return p, nil
			}
		}
		return Point{}, fmt.Errorf("%w: point %d (points %d to %d are kept)", ErrNoSuchPoint, id, points[0].ID, points[len(points)-1].ID)
	}
	t, err := time.Parse(time.RFC3339, want)
	if err != nil {
		return Point{}, fmt.Errorf("%w: %q is neither latest, latest-app, a point ID nor an RFC 3339 time", ErrNoSuchPoint, want)
	}
	for i := len(points) - 1; i >= 0; i-- {
		if !points[i].Time.After(t) {
			return points[i], nil
		}
	}
	return Point{}, fmt.Errorf("%w: no point at or before %s (the oldest is %s)", ErrNoSuchPoint, want, points[0].Time.Format(time.RFC3339))
}
