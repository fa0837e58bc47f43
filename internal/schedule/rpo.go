package schedule

import (
	"fmt"
	"time"
)

// Tier is a protection tier: the objectives an application is held to.
// A tier with None set asks for no protection; it is a choice, shown as
// such, never an alert.
type Tier struct {
	Name string        `json:"name"`
	RPO  time.Duration `json:"rpo,omitempty"`
	RTO  time.Duration `json:"rto,omitempty"`
	None bool          `json:"none,omitempty"`
	// DrillEvery is how often the control plane drills the latest point
	// of each machine of the tier (0: the server's default, if any).
	DrillEvery time.Duration `json:"drill_every,omitempty"`
}

// Validate reports what is wrong with t, wrapping ErrInvalid.
func (t Tier) Validate() error {
	switch {
	case t.Name == "":
		return fmt.Errorf("%w: a tier needs a name", ErrInvalid)
	case t.None && (t.RPO != 0 || t.RTO != 0 || t.DrillEvery != 0):
		return fmt.Errorf("%w: tier %q asks for no protection and so takes no objectives", ErrInvalid, t.Name)
	case t.None:
		return nil
	case t.RPO <= 0:
		return fmt.Errorf("%w: tier %q needs an RPO greater than zero", ErrInvalid, t.Name)
	case t.RTO < 0:
		return fmt.Errorf("%w: tier %q has a negative RTO", ErrInvalid, t.Name)
	case t.DrillEvery < 0:
		return fmt.Errorf("%w: tier %q has a negative drill interval", ErrInvalid, t.Name)
	case t.DrillEvery > 0 && t.DrillEvery < time.Minute:
		return fmt.Errorf("%w: tier %q drills every %s: at least a minute apart (a drill boots the machine)", ErrInvalid, t.Name, t.DrillEvery)
	}
	return nil
}

// State is where a machine stands against its tier's RPO.
type State string

const (
	// Green: the newest good point is younger than WarnFraction of the RPO.
	Green State = "green"
	// Warning: the newest good point is within the last WarnFraction..1 of
	// the RPO: one more missed or slow backup misses the objective.
	Warning State = "warning"
	// Missed: the newest good point is older than the RPO, or there is none
	// and the machine has been protected for longer than the RPO.
	Missed State = "missed"
	// Unprotected: the machine's tier asks for no protection.
	Unprotected State = "unprotected"
)

// WarnFraction is the share of the RPO a point may age before the state
// turns from green to warning.
const WarnFraction = 0.8

// RPOStatus is a machine's standing against its RPO at one instant.
type RPOStatus struct {
	State State `json:"state"`
	// Age of the newest good point; zero when there is none.
	Age time.Duration `json:"age"`
	// Objective is the tier's RPO.
	Objective time.Duration `json:"objective"`
	// Breach is when the state turns (or turned) to missed: the newest
	// point's time (or the protection time) plus the RPO.
	Breach time.Time `json:"breach,omitzero"`
}

// Assess returns the RPO status at now of a machine held to tier, whose
// newest good point was taken at newest (zero if none) and which was put
// under protection at since. A point stamped in the future (clock skew)
// counts as taken now.
func Assess(tier Tier, newest, since, now time.Time) RPOStatus {
	if tier.None {
		return RPOStatus{State: Unprotected}
	}
	st := RPOStatus{Objective: tier.RPO}
	from := since
	if !newest.IsZero() {
		from = newest
		if newest.After(now) {
			from = now
		}
		st.Age = now.Sub(from)
	}
	st.Breach = from.Add(tier.RPO)
	age := now.Sub(from)
	switch {
	case age > tier.RPO:
		st.State = Missed
	case newest.IsZero():
		// Protected recently and no point yet: not missed, but not yet
		// protected either.
		st.State = Warning
	case float64(age) > WarnFraction*float64(tier.RPO):
		st.State = Warning
	default:
		st.State = Green
	}
	return st
}
