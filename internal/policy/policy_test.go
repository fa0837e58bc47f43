package policy

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // America/New_York for the DST tests, whatever the host has
)

// ts parses "2006-01-02T15:04" or "2006-01-02T15:04:05" as UTC.
func ts(t testing.TB, s string) time.Time {
	t.Helper()
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if v, err := time.Parse(layout, s); err == nil {
			return v
		}
	}
	t.Fatalf("bad test time %q", s)
	return time.Time{}
}

// pts returns points of one machine whose IDs are their times.
func pts(t testing.TB, machine string, times ...string) []Point {
	t.Helper()
	var out []Point
	for _, s := range times {
		out = append(out, Point{ID: s, Machine: machine, Time: ts(t, s)})
	}
	return out
}

// render gives one line per decision: "machine id reasons", "-" if forgotten.
func render(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		r := "-"
		if d.Keep {
			r = strings.Join(d.Reasons, ",")
		}
		out = append(out, d.Point.Machine+" "+d.Point.ID+" "+r)
	}
	return out
}

func checkConsistent(t *testing.T, in []Point, ds []Decision) {
	t.Helper()
	if len(ds) != len(in) {
		t.Fatalf("%d decisions for %d points", len(ds), len(in))
	}
	for _, d := range ds {
		if d.Keep != (len(d.Reasons) > 0) {
			t.Errorf("%s/%s: Keep=%v with reasons %q", d.Point.Machine, d.Point.ID, d.Keep, d.Reasons)
		}
	}
}

func TestApplyTable(t *testing.T) {
	now := ts(t, "2024-06-15T12:00") // a Saturday
	cat := func(lists ...[]Point) []Point { return slices.Concat(lists...) }

	tests := []struct {
		name   string
		points []Point
		r      Retention
		now    time.Time // default now
		want   []string
	}{
		{
			name:   "no points",
			points: nil,
			r:      Retention{KeepLast: 1},
			want:   nil,
		},
		{
			name:   "empty policy keeps all",
			points: pts(t, "m", "2024-06-15T10:00", "2020-01-01T00:00", "2024-06-14T10:00"),
			r:      Retention{},
			want: []string{
				"m 2024-06-15T10:00 empty policy",
				"m 2024-06-14T10:00 empty policy",
				"m 2020-01-01T00:00 empty policy",
			},
		},
		{
			name:   "invalid policy keeps all",
			points: pts(t, "m", "2024-06-15T10:00", "2024-06-14T10:00"),
			r:      Retention{KeepLast: 1, KeepDaily: -2},
			want: []string{
				"m 2024-06-15T10:00 invalid policy",
				"m 2024-06-14T10:00 invalid policy",
			},
		},
		{
			name:   "invalid negative within keeps all",
			points: pts(t, "m", "2024-06-15T10:00", "2024-06-14T10:00"),
			r:      Retention{KeepLast: 1, KeepWithin: -time.Hour},
			want: []string{
				"m 2024-06-15T10:00 invalid policy",
				"m 2024-06-14T10:00 invalid policy",
			},
		},
		{
			name:   "last 2",
			points: pts(t, "m", "2024-06-13T10:00", "2024-06-15T10:00", "2024-06-15T09:00", "2024-06-14T10:00"),
			r:      Retention{KeepLast: 2},
			want: []string{
				"m 2024-06-15T10:00 last",
				"m 2024-06-15T09:00 last",
				"m 2024-06-14T10:00 -",
				"m 2024-06-13T10:00 -",
			},
		},
		{
			name:   "last more than points",
			points: pts(t, "m", "2024-06-15T10:00", "2024-06-14T10:00"),
			r:      Retention{KeepLast: 5},
			want: []string{
				"m 2024-06-15T10:00 last",
				"m 2024-06-14T10:00 last",
			},
		},
		{
			name:   "last unlimited",
			points: pts(t, "m", "2024-06-15T10:00", "2024-06-14T10:00", "1999-01-01T00:00"),
			r:      Retention{KeepLast: -1},
			want: []string{
				"m 2024-06-15T10:00 last",
				"m 2024-06-14T10:00 last",
				"m 1999-01-01T00:00 last",
			},
		},
		{
			name:   "hourly 2 keeps newest of each hour",
			points: pts(t, "m", "2024-06-15T10:50", "2024-06-15T10:10", "2024-06-15T09:59", "2024-06-15T09:00", "2024-06-15T07:30"),
			r:      Retention{KeepHourly: 2},
			want: []string{
				"m 2024-06-15T10:50 hourly",
				"m 2024-06-15T10:10 -",
				"m 2024-06-15T09:59 hourly",
				"m 2024-06-15T09:00 -",
				"m 2024-06-15T07:30 -",
			},
		},
		{
			name:   "hourly unlimited",
			points: pts(t, "m", "2024-06-15T10:50", "2024-06-15T10:10", "2024-06-15T09:59", "2024-06-14T07:30", "2024-06-14T07:00"),
			r:      Retention{KeepHourly: -1},
			want: []string{
				"m 2024-06-15T10:50 hourly",
				"m 2024-06-15T10:10 -",
				"m 2024-06-15T09:59 hourly",
				"m 2024-06-14T07:30 hourly",
				"m 2024-06-14T07:00 -",
			},
		},
		{
			name: "daily 3 counts only days with points",
			points: pts(t, "m", "2024-06-15T12:00", "2024-06-15T08:00", "2024-06-14T23:59:59",
				"2024-06-14T00:00", "2024-06-12T10:00", "2024-06-10T09:00"),
			r: Retention{KeepDaily: 3},
			want: []string{
				"m 2024-06-15T12:00 daily",
				"m 2024-06-15T08:00 -",
				"m 2024-06-14T23:59:59 daily",
				"m 2024-06-14T00:00 -",
				"m 2024-06-12T10:00 daily",
				"m 2024-06-10T09:00 -",
			},
		},
		{
			name:   "daily unlimited",
			points: pts(t, "m", "2024-06-15T12:00", "2024-06-15T08:00", "2024-06-12T10:00", "2023-01-10T09:00", "2023-01-10T08:00"),
			r:      Retention{KeepDaily: -1},
			want: []string{
				"m 2024-06-15T12:00 daily",
				"m 2024-06-15T08:00 -",
				"m 2024-06-12T10:00 daily",
				"m 2023-01-10T09:00 daily",
				"m 2023-01-10T08:00 -",
			},
		},
		{
			name: "weekly weeks start on Monday",
			// Sat 15, Sun 16 are ISO 2024-W24; Mon 17 is W25.
			points: pts(t, "m", "2024-06-17T00:00", "2024-06-16T23:59", "2024-06-15T10:00", "2024-06-10T00:00", "2024-06-09T23:00"),
			r:      Retention{KeepWeekly: -1},
			now:    ts(t, "2024-06-20T00:00"),
			want: []string{
				"m 2024-06-17T00:00 weekly",
				"m 2024-06-16T23:59 weekly",
				"m 2024-06-15T10:00 -",
				"m 2024-06-10T00:00 -",
				"m 2024-06-09T23:00 weekly",
			},
		},
		{
			name: "weekly across 2020/2021: Jan 1-3 2021 are 2020-W53",
			points: pts(t, "m", "2021-01-05T10:00", "2021-01-04T00:00", "2021-01-03T23:00",
				"2021-01-01T10:00", "2020-12-28T00:00", "2020-12-27T10:00", "2020-12-21T10:00"),
			r:   Retention{KeepWeekly: 3},
			now: ts(t, "2021-01-10T00:00"),
			want: []string{
				"m 2021-01-05T10:00 weekly", // 2021-W01
				"m 2021-01-04T00:00 -",
				"m 2021-01-03T23:00 weekly", // 2020-W53
				"m 2021-01-01T10:00 -",
				"m 2020-12-28T00:00 -",
				"m 2020-12-27T10:00 weekly", // 2020-W52
				"m 2020-12-21T10:00 -",      // 2020-W52 too
			},
		},
		{
			name: "weekly across 2018/2019: Dec 31 2018 is 2019-W01",
			points: pts(t, "m", "2019-01-01T10:00", "2018-12-31T10:00", "2018-12-30T10:00",
				"2018-12-24T00:00", "2018-01-01T10:00", "2017-12-31T10:00"),
			r:   Retention{KeepWeekly: -1},
			now: ts(t, "2019-01-10T00:00"),
			want: []string{
				"m 2019-01-01T10:00 weekly", // 2019-W01
				"m 2018-12-31T10:00 -",      // 2019-W01 as well
				"m 2018-12-30T10:00 weekly", // 2018-W52
				"m 2018-12-24T00:00 -",
				"m 2018-01-01T10:00 weekly", // 2018-W01
				"m 2017-12-31T10:00 weekly", // 2017-W52
			},
		},
		{
			name: "weekly across 2024/2025: Dec 30 2024 is 2025-W01",
			points: pts(t, "m", "2025-01-05T10:00", "2025-01-01T10:00", "2024-12-30T00:00",
				"2024-12-29T23:59", "2024-12-23T00:00"),
			r:   Retention{KeepWeekly: 2},
			now: ts(t, "2025-01-06T00:00"),
			want: []string{
				"m 2025-01-05T10:00 weekly", // 2025-W01
				"m 2025-01-01T10:00 -",
				"m 2024-12-30T00:00 -",
				"m 2024-12-29T23:59 weekly", // 2024-W52
				"m 2024-12-23T00:00 -",
			},
		},
		{
			name: "monthly 2",
			points: pts(t, "m", "2024-06-01T00:00", "2024-05-31T23:59", "2024-05-01T00:00",
				"2024-03-15T00:00", "2024-02-29T10:00"),
			r: Retention{KeepMonthly: 2},
			want: []string{
				"m 2024-06-01T00:00 monthly",
				"m 2024-05-31T23:59 monthly",
				"m 2024-05-01T00:00 -",
				"m 2024-03-15T00:00 -",
				"m 2024-02-29T10:00 -",
			},
		},
		{
			name: "monthly unlimited skips empty months",
			points: pts(t, "m", "2024-06-01T00:00", "2024-05-31T23:59", "2024-05-01T00:00",
				"2024-03-15T00:00", "2024-02-29T10:00", "2024-02-01T10:00"),
			r: Retention{KeepMonthly: -1},
			want: []string{
				"m 2024-06-01T00:00 monthly",
				"m 2024-05-31T23:59 monthly",
				"m 2024-05-01T00:00 -",
				"m 2024-03-15T00:00 monthly",
				"m 2024-02-29T10:00 monthly",
				"m 2024-02-01T10:00 -",
			},
		},
		{
			name: "yearly 2",
			points: pts(t, "m", "2024-01-01T00:00", "2023-12-31T23:59:59", "2023-01-01T00:00",
				"2022-07-01T00:00"),
			r: Retention{KeepYearly: 2},
			want: []string{
				"m 2024-01-01T00:00 yearly",
				"m 2023-12-31T23:59:59 yearly",
				"m 2023-01-01T00:00 -",
				"m 2022-07-01T00:00 -",
			},
		},
		{
			name: "within 2d is strict at the boundary",
			points: pts(t, "m", "2024-06-15T12:00", "2024-06-15T11:00", "2024-06-13T12:00:01",
				"2024-06-13T12:00", "2024-06-10T00:00"),
			r: Retention{KeepWithin: 2 * day},
			want: []string{
				"m 2024-06-15T12:00 within 2d", // exactly now: not future, within
				"m 2024-06-15T11:00 within 2d",
				"m 2024-06-13T12:00:01 within 2d",
				"m 2024-06-13T12:00 -", // exactly now-2d
				"m 2024-06-10T00:00 -",
			},
		},
		{
			name:   "within 36h",
			points: pts(t, "m", "2024-06-15T11:00", "2024-06-14T00:00:01", "2024-06-14T00:00"),
			r:      Retention{KeepWithin: 36 * time.Hour},
			want: []string{
				"m 2024-06-15T11:00 within 1d12h",
				"m 2024-06-14T00:00:01 within 1d12h",
				"m 2024-06-14T00:00 -",
			},
		},
		{
			name: "future points kept and not counted",
			points: pts(t, "m", "2099-01-01T00:00", "2024-06-15T12:00:01", "2024-06-15T12:00",
				"2024-06-15T11:00", "2024-06-14T10:00"),
			r: Retention{KeepLast: 1, KeepDaily: 1, KeepYearly: 1},
			want: []string{
				"m 2099-01-01T00:00 future",
				"m 2024-06-15T12:00:01 future",
				"m 2024-06-15T12:00 last,daily,yearly",
				"m 2024-06-15T11:00 -",
				"m 2024-06-14T10:00 -",
			},
		},
		{
			name:   "future points kept by a policy that keeps little",
			points: pts(t, "m", "2024-07-01T00:00", "2024-06-16T00:00", "2024-06-01T00:00"),
			r:      Retention{KeepWithin: time.Hour},
			want: []string{
				"m 2024-07-01T00:00 future",
				"m 2024-06-16T00:00 future",
				"m 2024-06-01T00:00 -",
			},
		},
		{
			name: "combination with several reasons per point",
			points: pts(t, "m", "2024-05-20T00:00", "2024-06-19T18:00", "2024-06-19T06:00", "2024-06-18T18:00",
				"2024-06-17T09:00", "2024-06-16T20:00", "2024-06-09T10:00"),
			r:   Retention{KeepLast: 1, KeepDaily: 2, KeepWeekly: 2, KeepMonthly: 2, KeepWithin: day},
			now: ts(t, "2024-06-20T00:00"),
			want: []string{
				"m 2024-06-19T18:00 last,daily,weekly,monthly,within 1d",
				"m 2024-06-19T06:00 within 1d",
				"m 2024-06-18T18:00 daily",
				"m 2024-06-17T09:00 -",
				"m 2024-06-16T20:00 weekly", // Sunday: the week before
				"m 2024-06-09T10:00 -",
				"m 2024-05-20T00:00 monthly",
			},
		},
		{
			name: "every rule at once",
			points: pts(t, "m", "2024-06-15T11:30", "2024-06-15T11:00", "2024-06-15T10:00",
				"2024-06-14T10:00", "2024-06-03T10:00", "2024-05-10T00:00", "2023-08-01T00:00", "2022-08-01T00:00"),
			r: Retention{KeepLast: 2, KeepHourly: 2, KeepDaily: 2, KeepWeekly: 2, KeepMonthly: 2,
				KeepYearly: 2, KeepWithin: time.Hour},
			want: []string{
				"m 2024-06-15T11:30 last,hourly,daily,weekly,monthly,yearly,within 1h",
				"m 2024-06-15T11:00 last",
				"m 2024-06-15T10:00 hourly",
				"m 2024-06-14T10:00 daily",
				"m 2024-06-03T10:00 weekly",
				"m 2024-05-10T00:00 monthly",
				"m 2023-08-01T00:00 yearly",
				"m 2022-08-01T00:00 -",
			},
		},
		{
			name: "unlimited bucket rules with a limited one",
			points: pts(t, "m", "2024-06-15T11:00", "2024-06-15T10:00", "2024-06-14T10:00",
				"2024-05-14T10:00", "2023-05-14T10:00"),
			r: Retention{KeepDaily: 2, KeepMonthly: -1, KeepYearly: -1},
			want: []string{
				"m 2024-06-15T11:00 daily,monthly,yearly",
				"m 2024-06-15T10:00 -",
				"m 2024-06-14T10:00 daily",
				"m 2024-05-14T10:00 monthly",
				"m 2023-05-14T10:00 monthly,yearly",
			},
		},
		{
			name: "machines are independent",
			points: cat(
				pts(t, "web", "2024-06-15T10:00"),
				pts(t, "db", "2024-01-02T00:00"),
				pts(t, "web", "2024-06-15T09:00"),
				pts(t, "db", "2024-01-01T00:00"),
				pts(t, "web", "2024-06-14T10:00"),
				pts(t, "db", "2024-06-15T10:00"),
			),
			r: Retention{KeepLast: 1, KeepDaily: 2},
			want: []string{
				"db 2024-06-15T10:00 last,daily",
				"db 2024-01-02T00:00 daily",
				"db 2024-01-01T00:00 -",
				"web 2024-06-15T10:00 last,daily",
				"web 2024-06-15T09:00 -",
				"web 2024-06-14T10:00 daily",
			},
		},
		{
			name: "a machine with only old points keeps its newest",
			points: cat(
				pts(t, "new", "2024-06-15T10:00", "2024-06-15T09:00"),
				pts(t, "old", "2019-03-01T00:00", "2019-02-01T00:00"),
			),
			r: Retention{KeepLast: 1, KeepWithin: 7 * day},
			want: []string{
				"new 2024-06-15T10:00 last,within 7d",
				"new 2024-06-15T09:00 within 7d",
				"old 2019-03-01T00:00 last",
				"old 2019-02-01T00:00 -",
			},
		},
		{
			name: "ties broken by ID",
			points: []Point{
				{ID: "c", Machine: "m", Time: ts(t, "2024-06-15T10:00")},
				{ID: "old", Machine: "m", Time: ts(t, "2024-06-14T10:00")},
				{ID: "a", Machine: "m", Time: ts(t, "2024-06-15T10:00")},
				{ID: "b", Machine: "m", Time: ts(t, "2024-06-15T10:00")},
			},
			r: Retention{KeepLast: 2, KeepDaily: 2},
			want: []string{
				"m a last,daily",
				"m b last",
				"m c -",
				"m old daily",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := now
			if !tt.now.IsZero() {
				n = tt.now
			}
			in := slices.Clone(tt.points)
			got := Apply(in, tt.r, n)
			if !slices.Equal(in, tt.points) {
				t.Errorf("Apply modified its input")
			}
			checkConsistent(t, tt.points, got)
			if g := render(got); !slices.Equal(g, tt.want) {
				t.Errorf("Apply(%v):\ngot:\n  %s\nwant:\n  %s", tt.r, strings.Join(g, "\n  "), strings.Join(tt.want, "\n  "))
			}
			// The result must not depend on the input order.
			rng := rand.New(rand.NewPCG(1, uint64(len(in))))
			for range 5 {
				rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
				if g := render(Apply(in, tt.r, n)); !slices.Equal(g, tt.want) {
					t.Fatalf("shuffled input %v: got\n  %s", in, strings.Join(g, "\n  "))
				}
			}
		})
	}
}

// TestDSTIrrelevant checks that buckets are UTC: local calendar days and
// hours around a daylight saving change do not matter.
func TestDSTIrrelevant(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	// On 2021-11-07 New York falls back from EDT to EST: 01:30 happens twice.
	p := func(id, utc, local string) Point {
		tm := ts(t, utc).In(ny)
		if got := tm.Format("2006-01-02 15:04 MST"); got != local {
			t.Fatalf("test setup: %s is %s in New York, not %s", utc, got, local)
		}
		return Point{ID: id, Machine: "m", Time: tm}
	}
	points := []Point{
		p("0130EST", "2021-11-07T06:30", "2021-11-07 01:30 EST"),
		p("0130EDT", "2021-11-07T05:30", "2021-11-07 01:30 EDT"),
		p("2330EDT", "2021-11-07T03:30", "2021-11-06 23:30 EDT"), // Nov 6 locally, Nov 7 in UTC
		p("1930EDT", "2021-11-06T23:30", "2021-11-06 19:30 EDT"),
	}
	now := time.Date(2021, 11, 8, 0, 0, 0, 0, time.UTC)
	got := render(Apply(points, Retention{KeepHourly: -1, KeepDaily: -1}, now))
	want := []string{
		"m 0130EST hourly,daily",
		"m 0130EDT hourly",
		"m 2330EDT hourly", // same UTC day as the 01:30s
		"m 1930EDT hourly,daily",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestLocationIrrelevant: the same instants in different locations give the
// same decisions, across both DST changes of a year.
func TestLocationIrrelevant(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	locs := []*time.Location{time.UTC, ny, time.FixedZone("odd", 13*3600+45*60), time.FixedZone("west", -11*3600)}
	start := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	var base []Point
	for i := 0; i < 365*24/5; i++ {
		base = append(base, Point{ID: fmt.Sprint(i), Machine: "m", Time: start.Add(time.Duration(i) * 5 * time.Hour)})
	}
	now := start.AddDate(1, 0, 0)
	r := Retention{KeepLast: 3, KeepHourly: 30, KeepDaily: 40, KeepWeekly: 20, KeepMonthly: -1, KeepYearly: 1, KeepWithin: 3 * day}
	want := render(Apply(base, r, now))
	for _, loc := range locs {
		in := make([]Point, len(base))
		for i, p := range base {
			p.Time = p.Time.In(loc)
			in[i] = p
		}
		if got := render(Apply(in, r, now.In(loc))); !slices.Equal(got, want) {
			t.Errorf("location %s changes the decisions", loc)
		}
	}
}

func TestApplyKeepsPointValues(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	in := []Point{{ID: "x", Machine: "m", Time: time.Date(2024, 1, 2, 3, 4, 5, 6, ny)}}
	got := Apply(in, Retention{KeepLast: 1}, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if len(got) != 1 || got[0].Point != in[0] {
		t.Fatalf("got %+v, want the point unchanged", got)
	}
}

// reference is a deliberately different, slow implementation of the same
// rules, to compare Apply against on random histories.
func reference(points []Point, r Retention, now time.Time) map[Point][]string {
	out := map[Point][]string{}
	groups := map[string][]Point{}
	for _, p := range points {
		if p.Time.After(now) {
			out[p] = []string{ReasonFuture}
			continue
		}
		groups[p.Machine] = append(groups[p.Machine], p)
	}
	newer := func(a, b Point) bool { // a comes before b
		return a.Time.After(b.Time) || a.Time.Equal(b.Time) && a.ID < b.ID
	}
	for _, g := range groups {
		add := map[Point]map[string]bool{}
		mark := func(p Point, why string) {
			if add[p] == nil {
				add[p] = map[string]bool{}
			}
			add[p][why] = true
		}
		// last: the points with fewer than n newer points.
		for _, p := range g {
			rank := 0
			for _, q := range g {
				if newer(q, p) {
					rank++
				}
			}
			if r.KeepLast == -1 || rank < r.KeepLast {
				mark(p, ReasonLast)
			}
		}
		for _, rule := range []struct {
			name   string
			n      int
			format string
		}{
			{ReasonHourly, r.KeepHourly, "2006-01-02 15"},
			{ReasonDaily, r.KeepDaily, "2006-01-02"},
			{ReasonWeekly, r.KeepWeekly, "week"},
			{ReasonMonthly, r.KeepMonthly, "2006-01"},
			{ReasonYearly, r.KeepYearly, "2006"},
		} {
			if rule.n == 0 {
				continue
			}
			best := map[string]Point{}
			for _, p := range g {
				var k string
				if rule.format == "week" {
					y, w := p.Time.UTC().ISOWeek()
					k = fmt.Sprintf("%04d-W%02d", y, w)
				} else {
					k = p.Time.UTC().Format(rule.format)
				}
				if b, ok := best[k]; !ok || newer(p, b) {
					best[k] = p
				}
			}
			var reps []Point
			for _, p := range best {
				reps = append(reps, p)
			}
			slices.SortFunc(reps, func(a, b Point) int {
				if newer(a, b) {
					return -1
				}
				return 1
			})
			for i, p := range reps {
				if rule.n == -1 || i < rule.n {
					mark(p, rule.name)
				}
			}
		}
		for _, p := range g {
			if r.KeepWithin > 0 && now.Sub(p.Time) < r.KeepWithin {
				mark(p, "within "+FormatDuration(r.KeepWithin))
			}
		}
		order := []string{ReasonLast, ReasonHourly, ReasonDaily, ReasonWeekly, ReasonMonthly, ReasonYearly}
		for _, p := range g {
			var rs []string
			for _, o := range order {
				if add[p][o] {
					rs = append(rs, o)
				}
			}
			for why := range add[p] {
				if strings.HasPrefix(why, "within ") {
					rs = append(rs, why)
				}
			}
			out[p] = rs
		}
	}
	return out
}

func TestApplyMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	count := func() int { return rng.IntN(6) - 1 } // -1..4
	for iter := range 300 {
		now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		var points []Point
		for i := range rng.IntN(60) {
			m := fmt.Sprint("m", rng.IntN(3))
			// Up to ~3 years back, a few hours into the future; coarse
			// steps so that ties happen.
			back := time.Duration(rng.IntN(3*365*24*4)-8) * 15 * time.Minute
			if rng.IntN(4) == 0 {
				back = time.Duration(rng.IntN(100)-4) * time.Hour
			}
			points = append(points, Point{ID: fmt.Sprint("p", i), Machine: m, Time: now.Add(-back)})
		}
		r := Retention{KeepLast: count(), KeepHourly: count(), KeepDaily: count(), KeepWeekly: count(),
			KeepMonthly: count(), KeepYearly: count()}
		if rng.IntN(2) == 0 {
			r.KeepWithin = time.Duration(rng.IntN(200)) * time.Hour
		}
		if r.Empty() {
			continue
		}
		got := Apply(points, r, now)
		checkConsistent(t, points, got)
		want := reference(points, r, now)
		for i, d := range got {
			if i > 0 {
				prev := got[i-1].Point
				if prev.Machine > d.Point.Machine || prev.Machine == d.Point.Machine &&
					(prev.Time.Before(d.Point.Time) || prev.Time.Equal(d.Point.Time) && prev.ID > d.Point.ID) {
					t.Fatalf("iteration %d: output out of order at %d", iter, i)
				}
			}
			if !reflect.DeepEqual(d.Reasons, want[d.Point]) {
				t.Fatalf("iteration %d, policy %v: point %+v: got %q, reference %q",
					iter, r, d.Point, d.Reasons, want[d.Point])
			}
		}
	}
}

func TestEmpty(t *testing.T) {
	if !(Retention{}).Empty() {
		t.Error("zero Retention is not Empty")
	}
	for _, r := range []Retention{
		{KeepLast: 1}, {KeepHourly: 1}, {KeepDaily: 1}, {KeepWeekly: 1}, {KeepMonthly: 1}, {KeepYearly: 1},
		{KeepLast: -1}, {KeepWithin: time.Second}, {KeepDaily: -5}, {KeepWithin: -time.Hour},
	} {
		if r.Empty() {
			t.Errorf("%+v is Empty", r)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		r    Retention
		errs []string // substrings of the error; none means valid
	}{
		{Retention{}, nil},
		{Retention{KeepLast: 3, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12, KeepYearly: 2, KeepWithin: 2 * day}, nil},
		{Retention{KeepLast: -1, KeepHourly: -1, KeepDaily: -1, KeepWeekly: -1, KeepMonthly: -1, KeepYearly: -1}, nil},
		{Retention{KeepLast: -2}, []string{"keep-last", "-2"}},
		{Retention{KeepHourly: -3}, []string{"keep-hourly"}},
		{Retention{KeepDaily: -100}, []string{"keep-daily"}},
		{Retention{KeepWeekly: -2}, []string{"keep-weekly"}},
		{Retention{KeepMonthly: -2}, []string{"keep-monthly"}},
		{Retention{KeepYearly: -2}, []string{"keep-yearly"}},
		{Retention{KeepWithin: -time.Second}, []string{"keep-within"}},
		{Retention{KeepDaily: -2, KeepYearly: -9, KeepWithin: -time.Hour}, []string{"keep-daily", "keep-yearly", "keep-within"}},
	}
	for _, tt := range tests {
		err := tt.r.Validate()
		if len(tt.errs) == 0 {
			if err != nil {
				t.Errorf("%+v: unexpected error %v", tt.r, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v: no error", tt.r)
			continue
		}
		for _, s := range tt.errs {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%+v: error %q does not mention %q", tt.r, err, s)
			}
		}
	}
}

func TestRetentionString(t *testing.T) {
	tests := []struct {
		r    Retention
		want string
	}{
		{Retention{}, "empty"},
		{Retention{KeepLast: 3, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12, KeepYearly: 2, KeepWithin: 2 * day},
			"last 3, daily 7, weekly 4, monthly 12, yearly 2, within 2d"},
		{Retention{KeepHourly: -1, KeepWithin: 90 * time.Minute}, "hourly unlimited, within 1h30m"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.r, got, tt.want)
		}
	}
}
