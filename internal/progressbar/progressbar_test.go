package progressbar

import (
	"strings"
	"testing"
	"time"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		elapsed     time.Duration
		final       bool
		want        string
	}{
		{done: 25 << 20, total: 100 << 20, elapsed: 10 * time.Second, want: "backup 25.00 MiB / 100.00 MiB   25.0%  2.50 MiB/s  ETA 30s"},
		{done: 1 << 30, total: 4 << 30, elapsed: time.Minute, want: "ETA 3m0s"},
		{done: 0, total: 100, elapsed: time.Second, want: "ETA --"},
		{done: 100, total: 100, elapsed: time.Second, want: "ETA --"},
		{done: 100 << 20, total: 100 << 20, elapsed: 10 * time.Second, final: true, want: "backup 100.00 MiB in 10s  10.00 MiB/s"},
	} {
		if got := Line("backup", tc.done, tc.total, tc.elapsed, tc.final); !strings.HasSuffix(got, tc.want) {
			t.Errorf("%d of %d in %s: got %q, want it to end in %q", tc.done, tc.total, tc.elapsed, got, tc.want)
		}
	}
}

// A bar redraws its line in place, padding over a longer one, ends the
// line when final, and draws nothing when off or not on a terminal.
func TestBarRedraws(t *testing.T) {
	var out strings.Builder
	b := &Bar{w: &out, label: "copy", on: true}
	b.Update(1<<20, 4<<20, time.Second, false)
	first := out.String()
	b.Update(4<<20, 4<<20, 2*time.Second, true)
	rest := strings.TrimPrefix(out.String(), first)
	if !strings.HasPrefix(first, "\rcopy 1.00 MiB / 4.00 MiB") || !strings.HasPrefix(rest, "\rcopy 4.00 MiB in 2s") || !strings.HasSuffix(rest, " \n") {
		t.Fatalf("drew %q then %q", first, rest)
	}
	out.Reset()
	New(&out, "copy", true).Update(1, 2, time.Second, true) // a strings.Builder is no terminal
	if out.Len() != 0 {
		t.Fatalf("drew on a non-terminal: %q", out.String())
	}
}
