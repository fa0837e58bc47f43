package live_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/live"
	"lifeboat/internal/qmp"
)

// assertClean checks the machine carries nothing of lifeboat's but the
// named bitmaps (disk -> bitmap).
func assertClean(t *testing.T, sock string, bitmaps map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mon, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	disks, err := mon.Disks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		var ours []string
		for _, b := range d.Bitmaps {
			if strings.HasPrefix(b.Name, live.BitmapPrefix) {
				ours = append(ours, b.Name)
			}
		}
		want, ok := bitmaps[d.Node]
		if !ok {
			continue
		}
		if len(ours) != 1 || ours[0] != want {
			t.Fatalf("disk %s has lifeboat bitmaps %q, want only %s", d.Node, ours, want)
		}
	}
	nodes, err := mon.QueryNamedBlockNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if strings.HasPrefix(n.NodeName, qmp.FleeceNodePrefix) {
			t.Fatalf("fleecing node %s left behind", n.NodeName)
		}
	}
	jobs, err := mon.QueryBlockJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 0 {
		t.Fatalf("block jobs left behind: %+v", jobs)
	}
}
