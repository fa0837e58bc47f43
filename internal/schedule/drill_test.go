package schedule

import (
	"testing"
	"time"
)

func TestDrillDue(t *testing.T) {
	gold := Tier{Name: "gold", RPO: time.Hour, DrillEvery: 24 * time.Hour}
	plain := Tier{Name: "plain", RPO: time.Hour}
	none := Tier{Name: "none", None: true}
	for _, tc := range []struct {
		name     string
		tier     Tier
		fallback time.Duration
		point    bool
		last     time.Time
		now      time.Time
		every    time.Duration
		due      bool
	}{
		{"tier interval, never drilled", gold, 0, true, time.Time{}, t0, 24 * time.Hour, true},
		{"tier interval, drilled recently", gold, 0, true, t0, t0.Add(23 * time.Hour), 24 * time.Hour, false},
		{"tier interval, drilled an interval ago", gold, 0, true, t0, t0.Add(24 * time.Hour), 24 * time.Hour, true},
		{"tier interval wins over the server's", gold, time.Hour, true, t0, t0.Add(2 * time.Hour), 24 * time.Hour, false},
		{"no point to drill", gold, 0, false, time.Time{}, t0, 24 * time.Hour, false},
		{"server default", plain, time.Hour, true, t0, t0.Add(time.Hour), time.Hour, true},
		{"neither: never", plain, 0, true, time.Time{}, t0, 0, false},
		{"no protection: never", none, time.Hour, true, time.Time{}, t0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DrillInterval(tc.tier, tc.fallback); got != tc.every {
				t.Errorf("DrillInterval = %s, want %s", got, tc.every)
			}
			if got := DrillDue(tc.tier, tc.fallback, tc.point, tc.last, tc.now); got != tc.due {
				t.Errorf("DrillDue = %v, want %v", got, tc.due)
			}
		})
	}
}

func TestRTOMissed(t *testing.T) {
	for _, tc := range []struct {
		tier   Tier
		rto    time.Duration
		missed bool
	}{
		{Tier{Name: "gold", RPO: time.Hour, RTO: time.Minute}, 59 * time.Second, false},
		{Tier{Name: "gold", RPO: time.Hour, RTO: time.Minute}, time.Minute, false},
		{Tier{Name: "gold", RPO: time.Hour, RTO: time.Minute}, 61 * time.Second, true},
		{Tier{Name: "plain", RPO: time.Hour}, time.Hour, false},
		{Tier{Name: "none", None: true}, time.Hour, false},
	} {
		if got := RTOMissed(tc.tier, tc.rto); got != tc.missed {
			t.Errorf("RTOMissed(%+v, %s) = %v, want %v", tc.tier, tc.rto, got, tc.missed)
		}
	}
}
