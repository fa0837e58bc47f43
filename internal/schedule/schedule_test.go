package schedule

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"interval", Spec{Every: time.Hour}, true},
		{"cron", Spec{Cron: "30 2 * * *"}, true},
		{"descriptor", Spec{Cron: "@hourly"}, true},
		{"cron with zone", Spec{Cron: "CRON_TZ=Europe/Paris 0 3 * * *"}, true},
		{"stagger inside interval", Spec{Every: time.Hour, Stagger: 10 * time.Minute}, true},
		{"neither", Spec{}, false},
		{"both", Spec{Every: time.Hour, Cron: "@daily"}, false},
		{"sub-second", Spec{Every: time.Millisecond}, false},
		{"negative interval", Spec{Every: -time.Hour}, false},
		{"bad cron", Spec{Cron: "61 * * * *"}, false},
		{"six fields", Spec{Cron: "0 0 0 * * *"}, false},
		{"stagger as long as interval", Spec{Every: time.Hour, Stagger: time.Hour}, false},
		{"stagger longer than cron gap", Spec{Cron: "*/5 * * * *", Stagger: 5 * time.Minute}, false},
		{"stagger within cron gap", Spec{Cron: "0 9,17 * * *", Stagger: 7 * time.Hour}, true},
		{"negative stagger", Spec{Every: time.Hour, Stagger: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestDue(t *testing.T) {
	hourly := Spec{Every: time.Hour}
	nightly := Spec{Cron: "30 2 * * *"}
	for _, tc := range []struct {
		name     string
		spec     Spec
		last     time.Time
		now      time.Time
		wantDue  bool
		wantSlot time.Time
	}{
		{"not yet", hourly, t0, t0.Add(59 * time.Minute), false, time.Time{}},
		{"at the slot", hourly, t0, t0.Add(time.Hour), true, t0.Add(time.Hour)},
		{"protected mid-interval waits for the next slot", hourly, t0.Add(20 * time.Minute), t0.Add(50 * time.Minute), false, time.Time{}},
		{"protected mid-interval runs at the slot", hourly, t0.Add(20 * time.Minute), t0.Add(61 * time.Minute), true, t0.Add(time.Hour)},
		{"missed slots collapse to the newest", hourly, t0, t0.Add(5*time.Hour + 10*time.Minute), true, t0.Add(5 * time.Hour)},
		{"cron before its time", nightly, t0, t0.Add(16 * time.Hour), false, time.Time{}},
		{"cron at its time", nightly, t0, time.Date(2026, 12, 7, 2, 30, 0, 0, time.UTC), true, time.Date(2026, 12, 7, 2, 30, 0, 0, time.UTC)},
		{"cron three nights down", nightly, t0, time.Date(2026, 12, 10, 9, 0, 0, 0, time.UTC), true, time.Date(2026, 12, 10, 2, 30, 0, 0, time.UTC)},
		{"cron every minute, a year down", Spec{Cron: "* * * * *"}, t0, t0.AddDate(1, 0, 0).Add(30 * time.Second), true, t0.AddDate(1, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slot, due, err := tc.spec.Due("web1", tc.last, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			if due != tc.wantDue || !slot.Equal(tc.wantSlot) {
				t.Fatalf("Due = %v, %v; want %v, %v", slot, due, tc.wantSlot, tc.wantDue)
			}
			if due {
				// Recording the slot as done makes nothing due until the next one.
				if _, again, _ := tc.spec.Due("web1", slot, tc.now); again {
					t.Fatalf("due again right after running slot %v", slot)
				}
			}
		})
	}
}

func TestOffsetStableAndInsideWindow(t *testing.T) {
	s := Spec{Every: time.Hour, Stagger: 10 * time.Minute}
	seen := map[time.Duration]bool{}
	for _, m := range []string{"web1", "web2", "db1", "db2", "mail", "dns", "ci", "git"} {
		off := s.Offset("nightly/" + m)
		if off < 0 || off >= s.Stagger {
			t.Fatalf("offset of %s = %v, outside [0, %v)", m, off, s.Stagger)
		}
		if off != s.Offset("nightly/"+m) {
			t.Fatalf("offset of %s not stable", m)
		}
		seen[off] = true
	}
	if len(seen) < 4 {
		t.Fatalf("8 machines got only %d distinct offsets: not spread", len(seen))
	}
	if (Spec{Every: time.Hour}).Offset("web1") != 0 {
		t.Fatal("no stagger window must mean no offset")
	}
}

// An hour of fake time, ticked every 5 s as a scheduler would: every
// machine runs once per slot, inside the stagger window, never twice.
func TestSimulatedHour(t *testing.T) {
	s := Spec{Every: time.Minute, Stagger: 40 * time.Second}
	machines := []string{"p/web1", "p/web2", "p/db1"}
	last := map[string]time.Time{}
	runs := map[string][]time.Time{}
	for _, m := range machines {
		last[m] = t0
	}
	for now := t0; now.Before(t0.Add(time.Hour)); now = now.Add(5 * time.Second) {
		for _, m := range machines {
			slot, due, err := s.Due(m, last[m], now)
			if err != nil {
				t.Fatal(err)
			}
			if !due {
				continue
			}
			if late := now.Sub(slot); late < 0 || late >= s.Stagger+5*time.Second {
				t.Fatalf("%s ran %v after its slot %v", m, late, slot)
			}
			last[m] = slot
			runs[m] = append(runs[m], slot)
		}
	}
	offsets := map[time.Duration]bool{}
	for _, m := range machines {
		if n := len(runs[m]); n < 59 || n > 60 {
			t.Fatalf("%s ran %d times in an hour of one-minute slots", m, n)
		}
		for i := 1; i < len(runs[m]); i++ {
			if runs[m][i].Sub(runs[m][i-1]) != time.Minute {
				t.Fatalf("%s skipped or repeated a slot: %v then %v", m, runs[m][i-1], runs[m][i])
			}
		}
		offsets[s.Offset(m)] = true
	}
	if len(offsets) < 2 {
		t.Fatal("all machines start at the same offset: nothing staggered")
	}
}

func TestNext(t *testing.T) {
	s := Spec{Every: 15 * time.Minute, Stagger: 5 * time.Minute}
	slot, at, err := s.Next("web1", t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !slot.Equal(t0.Add(15*time.Minute)) || at.Sub(slot) != s.Offset("web1") {
		t.Fatalf("Next = %v, %v", slot, at)
	}
	if _, _, err := (Spec{}).Next("web1", t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Next of an empty spec: %v", err)
	}
}

func TestAssess(t *testing.T) {
	gold := Tier{Name: "gold", RPO: time.Hour, RTO: 15 * time.Minute}
	now := t0.Add(24 * time.Hour)
	for _, tc := range []struct {
		name   string
		tier   Tier
		newest time.Time
		since  time.Time
		want   State
	}{
		{"fresh point", gold, now.Add(-10 * time.Minute), t0, Green},
		{"near the objective", gold, now.Add(-50 * time.Minute), t0, Warning},
		{"at the objective", gold, now.Add(-time.Hour), t0, Warning},
		{"past the objective", gold, now.Add(-61 * time.Minute), t0, Missed},
		{"never backed up, protected long ago", gold, time.Time{}, t0, Missed},
		{"never backed up, just protected", gold, time.Time{}, now.Add(-time.Minute), Warning},
		{"point from the future", gold, now.Add(time.Hour), t0, Green},
		{"no protection asked", Tier{Name: "none", None: true}, time.Time{}, t0, Unprotected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Assess(tc.tier, tc.newest, tc.since, now)
			if st.State != tc.want {
				t.Fatalf("state %s, want %s (%+v)", st.State, tc.want, st)
			}
		})
	}
	st := Assess(gold, now.Add(-10*time.Minute), t0, now)
	if st.Age != 10*time.Minute || !st.Breach.Equal(now.Add(50*time.Minute)) {
		t.Fatalf("age %v breach %v", st.Age, st.Breach)
	}
}

func TestTierValidate(t *testing.T) {
	for _, tc := range []struct {
		tier Tier
		ok   bool
	}{
		{Tier{Name: "gold", RPO: time.Hour, RTO: time.Minute}, true},
		{Tier{Name: "none", None: true}, true},
		{Tier{Name: "", RPO: time.Hour}, false},
		{Tier{Name: "x"}, false},
		{Tier{Name: "x", None: true, RPO: time.Hour}, false},
		{Tier{Name: "x", RPO: time.Hour, RTO: -1}, false},
		{Tier{Name: "gold", RPO: time.Hour, RTO: time.Minute, DrillEvery: 24 * time.Hour}, true},
		{Tier{Name: "x", RPO: time.Hour, DrillEvery: -time.Hour}, false},
		{Tier{Name: "x", RPO: time.Hour, DrillEvery: time.Second}, false},
		{Tier{Name: "x", None: true, DrillEvery: time.Hour}, false},
	} {
		err := tc.tier.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("%+v: Validate() = %v", tc.tier, err)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: error does not wrap ErrInvalid: %v", tc.tier, err)
		}
	}
}

// BenchmarkTick decides what is due for 1,000 machines, as one scheduler
// tick does: go test -bench Tick ./internal/schedule
func BenchmarkTick(b *testing.B) {
	specs := []Spec{{Every: 15 * time.Minute, Stagger: 5 * time.Minute}, {Cron: "30 2 * * *", Stagger: time.Hour}}
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "policy/machine-" + time.Duration(i).String()
	}
	now := t0.Add(36 * time.Hour)
	b.ResetTimer()
	for b.Loop() {
		for i, k := range keys {
			if _, _, err := specs[i%2].Due(k, t0, now); err != nil {
				b.Fatal(err)
			}
		}
	}
}
