package recovery

import (
	"strings"
	"testing"
)

func TestPointSummaries(t *testing.T) {
	disks := func(src ...string) []Disk {
		var out []Disk
		for i, s := range src {
			out = append(out, Disk{Name: []string{"vda", "vdb"}[i], ChangeSource: s})
		}
		return out
	}
	for _, tc := range []struct {
		disks []Disk
		want  string
	}{
		{disks("tracking", "tracking"), "tracking"},
		{disks("tracking", "compare"), "vda:tracking,vdb:compare"},
		{disks("", ""), "-"}, // older points
		{disks("full", ""), "vda:full,vdb:-"},
		{nil, "-"},
	} {
		if got := (&Point{Disks: tc.disks}).ChangeSummary(); got != tc.want {
			t.Errorf("ChangeSummary(%+v) = %q, want %q", tc.disks, got, tc.want)
		}
	}
	long := "asked for file consistency, got crash: freezing the guest's filesystems:\n  guest agent: timeout"
	for _, tc := range []struct {
		notes []string
		want  string
		cut   bool
	}{
		{nil, "", false},
		{[]string{"short note"}, "short note", false},
		{[]string{long}, "asked for file consistency, got crash: freezing the guest's…", true},
		{[]string{"one", "two", "three"}, "one (+2 more)", true},
	} {
		got, cut := (&Point{Notes: tc.notes}).NoteSummary(60)
		if got != tc.want || cut != tc.cut || strings.Contains(got, "\n") || len([]rune(got)) > 60 && len(tc.notes) < 2 {
			t.Errorf("NoteSummary(%q) = %q, %v; want %q, %v", tc.notes, got, cut, tc.want, tc.cut)
		}
	}
}
