package schedule

import (
	"testing"
	"time"
)

func TestCopyLag(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name                   string
		pending, expected, now time.Time
		want                   time.Duration
	}{
		{"nothing pending", time.Time{}, t0, t0.Add(time.Hour), 0},
		{"pending since its point", t0.Add(10 * time.Minute), t0, t0.Add(time.Hour), 50 * time.Minute},
		{"old point, copy asked for later", t0.Add(-24 * time.Hour), t0, t0.Add(time.Hour), time.Hour},
		{"point from the future", t0.Add(2 * time.Hour), t0, t0.Add(time.Hour), 0},
	} {
		if got := CopyLag(c.pending, c.expected, c.now); got != c.want {
			t.Errorf("%s: CopyLag = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestCopyLagMissed(t *testing.T) {
	gold := Tier{Name: "gold", RPO: time.Hour}
	for _, c := range []struct {
		tier Tier
		lag  time.Duration
		want bool
	}{
		{gold, 0, false},
		{gold, time.Hour, false},
		{gold, time.Hour + time.Second, true},
		{Tier{Name: "none", None: true}, 100 * time.Hour, false},
		{Tier{}, 100 * time.Hour, false}, // no tier: no objective
	} {
		if got := CopyLagMissed(c.tier, c.lag); got != c.want {
			t.Errorf("CopyLagMissed(%+v, %v) = %v, want %v", c.tier, c.lag, got, c.want)
		}
	}
}
