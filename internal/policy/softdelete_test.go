package policy

import (
	"strings"
	"testing"
	"time"
)

func TestSoftDeleteWindow(t *testing.T) {
	d := func(n int) time.Duration { return time.Duration(n) * day }
	init14 := WindowChange{ts(t, "2026-01-01T00:00"), d(14)}
	cases := []struct {
		name    string
		changes []WindowChange
		at      string
		want    time.Duration
	}{
		{"no setting: off", nil, "2026-01-05T00:00", 0},
		{"before the first setting", []WindowChange{init14}, "2025-12-31T00:00", 0},
		{"at init", []WindowChange{init14}, "2026-01-01T00:00", d(14)},
		{"lengthened: at once", []WindowChange{init14, {ts(t, "2026-02-01T00:00"), d(30)}}, "2026-02-01T00:00", d(30)},
		{"shortened: old window holds", []WindowChange{init14, {ts(t, "2026-02-01T00:00"), d(7)}}, "2026-02-14T23:59", d(14)},
		{"shortened: in force after the old window", []WindowChange{init14, {ts(t, "2026-02-01T00:00"), d(7)}}, "2026-02-15T00:00", d(7)},
		{"turned off: old window holds", []WindowChange{init14, {ts(t, "2026-02-01T00:00"), 0}}, "2026-02-10T00:00", d(14)},
		{"turned off: off after", []WindowChange{init14, {ts(t, "2026-02-01T00:00"), 0}}, "2026-02-16T00:00", 0},
		{"shortened twice: the longest pending holds", []WindowChange{{ts(t, "2026-01-01T00:00"), d(30)},
			{ts(t, "2026-02-01T00:00"), d(14)}, {ts(t, "2026-02-02T00:00"), 0}}, "2026-02-20T00:00", d(30)},
		{"shortened twice: the second holds the 30 days it found", []WindowChange{{ts(t, "2026-01-01T00:00"), d(30)},
			{ts(t, "2026-02-01T00:00"), d(14)}, {ts(t, "2026-02-02T00:00"), 0}}, "2026-03-03T12:00", d(30)},
		{"shortened twice: finally off", []WindowChange{{ts(t, "2026-01-01T00:00"), d(30)},
			{ts(t, "2026-02-01T00:00"), d(14)}, {ts(t, "2026-02-02T00:00"), 0}}, "2026-03-04T00:00", 0},
		{"order of the list does not matter", []WindowChange{{ts(t, "2026-02-01T00:00"), d(7)}, init14}, "2026-02-05T00:00", d(14)},
		{"a change in the future is not in force", []WindowChange{init14, {ts(t, "2027-01-01T00:00"), d(90)}}, "2026-06-01T00:00", d(14)},
	}
	for _, c := range cases {
		if got := SoftDeleteWindow(c.changes, ts(t, c.at)); got != c.want {
			t.Errorf("%s: window at %s = %v, want %v", c.name, c.at, got, c.want)
		}
	}
}

func TestPurgeAt(t *testing.T) {
	d := func(n int) time.Duration { return time.Duration(n) * day }
	init14 := WindowChange{ts(t, "2026-01-01T00:00"), d(14)}
	cases := []struct {
		name    string
		changes []WindowChange
		deleted string
		now     string
		want    string
	}{
		{"plain", []WindowChange{init14}, "2026-03-01T00:00", "2026-03-02T00:00", "2026-03-15T00:00"},
		{"off: at once", nil, "2026-03-01T00:00", "2026-03-01T00:00", "2026-03-01T00:00"},
		{"lengthened after the delete: extends it", []WindowChange{init14, {ts(t, "2026-03-05T00:00"), d(30)}},
			"2026-03-01T00:00", "2026-03-06T00:00", "2026-03-31T00:00"},
		{"shortened after the delete: keeps its 14 days", []WindowChange{init14, {ts(t, "2026-03-05T00:00"), d(1)}},
			"2026-03-01T00:00", "2026-04-01T00:00", "2026-03-15T00:00"},
		{"turned off and deleted at once: still 14 days", []WindowChange{init14, {ts(t, "2026-03-01T00:00"), 0}},
			"2026-03-01T00:00", "2026-03-01T00:00", "2026-03-15T00:00"},
		{"deleted after the shorter window is in force", []WindowChange{init14, {ts(t, "2026-03-01T00:00"), d(2)}},
			"2026-03-20T00:00", "2026-03-20T00:00", "2026-03-22T00:00"},
	}
	for _, c := range cases {
		got := PurgeAt(c.changes, ts(t, c.deleted), ts(t, c.now))
		if !got.Equal(ts(t, c.want)) {
			t.Errorf("%s: purge at %s, want %s", c.name, got.Format(time.RFC3339), c.want)
		}
	}
}

func TestParseWindow(t *testing.T) {
	for _, c := range []struct {
		in, text string
		want     time.Duration
		err      string
	}{
		{"14d", "14d", 14 * 24 * time.Hour, ""},
		{"36h", "1d12h", 36 * time.Hour, ""},
		{"0", "off", 0, ""},
		{"1.5s", "", 0, "give whole seconds"},
		{"-1d", "", 0, "negative"},
		{"", "", 0, "empty"},
	} {
		d, err := ParseWindow(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseWindow(%q) = %v, %v; want error %q", c.in, d, err, c.err)
			}
			continue
		}
		if err != nil || d != c.want || WindowText(d) != c.text {
			t.Errorf("ParseWindow(%q) = %v (%s), %v", c.in, d, WindowText(d), err)
		}
	}
}
