package replicate

import "testing"

func TestPlanGroupCut(t *testing.T) {
	for _, c := range []struct {
		name                         string
		dropped, members, unpausable int
		want                         cutPlan
	}{
		{"kept last time", 0, 2, 0, cutPlan{}},
		{"a few drops: optimistic still", escalateAfter - 1, 2, 0, cutPlan{}},
		{"escalates to a paused cut", escalateAfter, 2, 0, cutPlan{Pause: true}},
		{"pauses those that can", escalateAfter, 2, 1, cutPlan{Pause: true}},
		{"none can pause: starving at once", escalateAfter, 2, 2, cutPlan{Starving: true}},
		{"none can pause, a few drops", 1, 2, 2, cutPlan{}},
		{"paused cuts dropped too: starving", 2 * escalateAfter, 3, 1, cutPlan{Pause: true, Starving: true}},
		{"paused cuts dropped, all pausable", 2*escalateAfter - 1, 2, 0, cutPlan{Pause: true}},
	} {
		if got := planGroupCut(c.dropped, c.members, c.unpausable); got != c.want {
			t.Errorf("%s: planGroupCut(%d, %d, %d) = %+v, want %+v", c.name, c.dropped, c.members, c.unpausable, got, c.want)
		}
	}
}
