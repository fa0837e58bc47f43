package policy

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenHistory is a fixed synthetic history of about two years:
//
//   - vm-a: a point every 6 hours from 2023-01-01 00:00Z to 2024-12-31
//     18:00Z.
//   - vm-b: a point every 6 hours, offset by 3 hours, from 2023-03-15
//     03:00Z to 2025-01-01 03:00Z, with an outage from 2024-06-10 to
//     2024-07-20 (no points), and the last point 3 hours after now (clock
//     skew).
func goldenHistory() []Point {
	var out []Point
	add := func(machine string, from, to time.Time, skip func(time.Time) bool) {
		n := 0
		for t := from; !t.After(to); t = t.Add(6 * time.Hour) {
			if skip != nil && skip(t) {
				continue
			}
			out = append(out, Point{
				ID:      fmt.Sprintf("%s-%04d", strings.TrimPrefix(machine, "vm-"), n),
				Machine: machine,
				Time:    t,
			})
			n++
		}
	}
	utc := func(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, time.UTC) }
	add("vm-a", utc(2023, 1, 1, 0), utc(2024, 12, 31, 18), nil)
	outageFrom, outageTo := utc(2024, 6, 10, 0), utc(2024, 7, 20, 0)
	add("vm-b", utc(2023, 3, 15, 3), utc(2025, 1, 1, 3), func(t time.Time) bool {
		return !t.Before(outageFrom) && t.Before(outageTo)
	})
	return out
}

// renderGolden writes one line per kept point and one line per run of
// consecutive forgotten points, per machine, newest first.
func renderGolden(points []Point, r Retention, now time.Time, ds []Decision) []byte {
	var b bytes.Buffer
	tf := func(t time.Time) string {
		y, w := t.ISOWeek()
		return fmt.Sprintf("%s %s %d-W%02d", t.Format("2006-01-02 15:04"), t.Format("Mon"), y, w)
	}
	fmt.Fprintf(&b, "# Golden output of policy.Apply; regenerate with: go test ./internal/policy -run Golden -update\n")
	fmt.Fprintf(&b, "# policy: %s\n", r)
	fmt.Fprintf(&b, "# now:    %s\n", now.Format(time.RFC3339+" Mon"))
	fmt.Fprintf(&b, "# history: %d points, see goldenHistory in golden_test.go\n", len(points))
	fmt.Fprintf(&b, "# times are UTC, with the weekday and the ISO week; runs of forgotten points are collapsed\n")

	var run []Decision
	flush := func() {
		if len(run) == 0 {
			return
		}
		first, last := run[0].Point, run[len(run)-1].Point
		if len(run) == 1 {
			fmt.Fprintf(&b, "  forget %-6s  %s\n", first.ID, tf(first.Time))
		} else {
			fmt.Fprintf(&b, "  forget %-6s .. %-6s  %s .. %s  (%d points)\n",
				first.ID, last.ID, first.Time.Format("2006-01-02 15:04"), last.Time.Format("2006-01-02 15:04"), len(run))
		}
		run = run[:0]
	}
	for i, d := range ds {
		if i == 0 || d.Point.Machine != ds[i-1].Point.Machine {
			flush()
			total, kept := 0, 0
			for _, e := range ds {
				if e.Point.Machine == d.Point.Machine {
					total++
					if e.Keep {
						kept++
					}
				}
			}
			fmt.Fprintf(&b, "\nmachine %s: keep %d, forget %d of %d\n", d.Point.Machine, kept, total-kept, total)
		}
		if !d.Keep {
			run = append(run, d)
			continue
		}
		flush()
		fmt.Fprintf(&b, "  keep   %-6s  %s  %s\n", d.Point.ID, tf(d.Point.Time), strings.Join(d.Reasons, ", "))
	}
	flush()
	return b.Bytes()
}

func TestGoldenForget(t *testing.T) {
	points := goldenHistory()
	r := Retention{KeepLast: 3, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12, KeepYearly: 2, KeepWithin: 2 * day}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ds := Apply(points, r, now)
	checkConsistent(t, points, ds)
	got := renderGolden(points, r, now, ds)

	path := filepath.Join("testdata", "golden_forget.txt")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs from line %d:\n got: %s\nwant: %s\n(run with -update if the change is intended)", path, i+1, g, w)
			}
		}
	}
}
