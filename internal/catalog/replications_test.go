package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestReplications(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		now := time.UnixMilli(1_700_000_000_000).UTC()
		cut := now.Add(-5 * time.Second)
		must(t, c.ReportReplications(ctx, "host1", []Replication{
			{Machine: "web", State: "protected", LastCut: cut, Status: json.RawMessage(`{"machine":"web"}`)},
			{Machine: "db", State: "initial-sync", Status: json.RawMessage(`{"machine":"db"}`)},
		}, now))
		must(t, c.ReportReplications(ctx, "host2", []Replication{
			{Machine: "mail", State: "error", Status: json.RawMessage(`{}`)},
		}, now))
		got, err := c.Replications(ctx)
		must(t, err)
		if len(got) != 3 || got[0].Machine != "db" || got[1].Machine != "mail" || got[2].Machine != "web" {
			t.Fatalf("replications: %+v", got)
		}
		if w := got[2]; w.Agent != "host1" || w.State != "protected" || !w.LastCut.Equal(cut) || !w.Reported.Equal(now) || string(w.Status) != `{"machine":"web"}` {
			t.Fatalf("web: %+v", w)
		}
		if !got[0].LastCut.IsZero() {
			t.Fatalf("db has a last cut: %v", got[0].LastCut)
		}
		// A new report replaces the agent's old one: db is gone, web moved
		// on; host2's machines stay.
		later := now.Add(time.Minute)
		must(t, c.ReportReplications(ctx, "host1", []Replication{
			{Machine: "web", State: "resyncing", LastCut: later, Status: json.RawMessage(`{}`)},
		}, later))
		got, err = c.Replications(ctx)
		must(t, err)
		if len(got) != 2 || got[0].Machine != "mail" || got[1].State != "resyncing" || !got[1].Reported.Equal(later) {
			t.Fatalf("after the second report: %+v", got)
		}
		// A machine moves to the agent that reports it now.
		must(t, c.ReportReplications(ctx, "host2", []Replication{{Machine: "web", State: "protected", Status: json.RawMessage(`{}`)}}, later))
		got, err = c.Replications(ctx)
		must(t, err)
		if len(got) != 1 || got[0].Agent != "host2" || got[0].Machine != "web" {
			t.Fatalf("after the move: %+v", got)
		}
		// An empty report forgets the agent's replications.
		must(t, c.ReportReplications(ctx, "host2", nil, later))
		if got, _ := c.Replications(ctx); len(got) != 0 {
			t.Fatalf("after an empty report: %+v", got)
		}
		// Bad input is refused and changes nothing.
		for _, bad := range [][]Replication{
			{{Machine: "../x", State: "protected", Status: json.RawMessage(`{}`)}},
			{{Machine: "ok", State: "protected", Status: json.RawMessage(`{`)}},
		} {
			if err := c.ReportReplications(ctx, "host1", bad, later); !errors.Is(err, ErrInvalid) {
				t.Fatalf("report %+v: %v", bad, err)
			}
		}
	})
}

func TestReplicationSpecs(t *testing.T) {
	engines(t, func(t *testing.T, c *Catalog, _ func() *Catalog) {
		ctx := context.Background()
		now := time.UnixMilli(1_700_000_000_000).UTC()
		must(t, c.PutReplicationSpec(ctx, ReplicationSpec{Machine: "web", Agent: "hv1", Spec: json.RawMessage(`{"name":"web"}`)}, now))
		must(t, c.PutReplicationSpec(ctx, ReplicationSpec{Machine: "db", Agent: "hv2", Spec: json.RawMessage(`{"name":"db"}`)}, now))
		must(t, c.PutReplicationSpec(ctx, ReplicationSpec{Machine: "web", Agent: "hv1", Spec: json.RawMessage(`{"name":"web","every":1}`)}, now.Add(time.Second)))
		all, err := c.ReplicationSpecs(ctx, "")
		must(t, err)
		if len(all) != 2 || all[0].Machine != "db" || all[1].Machine != "web" || string(all[1].Spec) != `{"name":"web","every":1}` || !all[1].Updated.Equal(now.Add(time.Second)) {
			t.Fatalf("all specs: %+v", all)
		}
		mine, err := c.ReplicationSpecs(ctx, "hv2")
		must(t, err)
		if len(mine) != 1 || mine[0].Machine != "db" {
			t.Fatalf("hv2's specs: %+v", mine)
		}
		must(t, c.DeleteReplicationSpec(ctx, "db"))
		if err := c.DeleteReplicationSpec(ctx, "db"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting twice: %v", err)
		}
		if err := c.PutReplicationSpec(ctx, ReplicationSpec{Machine: "x", Agent: "", Spec: json.RawMessage(`{}`)}, now); !errors.Is(err, ErrInvalid) {
			t.Fatalf("no agent: %v", err)
		}
		if mine, _ := c.ReplicationSpecs(ctx, "hv2"); len(mine) != 0 {
			t.Fatalf("hv2's specs after delete: %+v", mine)
		}
	})
}
