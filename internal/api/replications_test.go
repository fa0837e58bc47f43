package api

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/replica"
	"lifeboat/internal/replicate"
)

// An agent reports its replications; viewers list them with the lag as of
// now and the reporting agent; a stale report shows stopped; bad reports
// are refused naming what was wrong; only agents report.
func TestReplicationsReport(t *testing.T) {
	e := newEnv(t)
	hv := e.token("hv1", catalog.RoleAgent)
	viewer := e.token("v", catalog.RoleViewer)
	cut := t0.Add(-3 * time.Second).Format(time.RFC3339Nano)
	report := `{"replications":[{"machine":"web1","target":"dr","state":"protected","last_seq":7,"last_cut":"` + cut + `","capture":"mirror","some_future_field":1}]}`
	if code, body := e.do(hv, "POST", "/v1/agent/replications", report, nil); code != 200 {
		t.Fatalf("report: %d %s", code, body)
	}
	e.clock.Advance(10 * time.Second)
	var got []ReplicationJSON
	if code, body := e.do(viewer, "GET", "/v1/replications", nil, &got); code != 200 || len(got) != 1 {
		t.Fatalf("list: %d %s", code, body)
	}
	r := got[0]
	if r.Machine != "web1" || r.Agent != "hv1" || r.State != "protected" || r.LastSeq != 7 || r.Capture != "mirror" || r.LagSeconds != 13 || !r.Reported.Equal(t0) {
		t.Fatalf("listed: %+v", r)
	}
	e.clock.Advance(ReportStale)
	got = nil
	e.do(viewer, "GET", "/v1/replications", nil, &got)
	if len(got) != 1 || got[0].State != "stopped" || !strings.Contains(got[0].Error, "hv1 has not reported") {
		t.Fatalf("a stale report: %+v", got)
	}
	for _, c := range []struct{ token, body, want string }{
		{hv, `{"replications":[{"machine":"../x","state":"protected"}]}`, "machine"},
		{hv, `{"replications":[{"machine":"a","last_seq":"x"}]}`, "replications[0]"},
		{hv, `{"replicashuns":[]}`, "replicashuns"},
	} {
		if code, body := e.do(c.token, "POST", "/v1/agent/replications", c.body, nil); code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("report %s: %d %s", c.body, code, body)
		}
	}
	if code, _ := e.do(e.admin, "POST", "/v1/agent/replications", `{"replications":[]}`, nil); code != 403 {
		t.Errorf("an admin token reported replications: %d", code)
	}
	// The failed reports changed nothing.
	got = nil
	e.do(viewer, "GET", "/v1/replications", nil, &got)
	if len(got) != 1 || got[0].Machine != "web1" {
		t.Fatalf("after refused reports: %+v", got)
	}
}

// The client enables a replication for an agent, lists reports (all, or
// one machine's, naming a machine with none as not found) and disables it.
func TestReplicationsClient(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := &Client{URL: e.url, Token: e.admin}
	m := replicate.Machine{Name: "web1", QMP: "/run/web1.qmp", Target: "dr", Policy: replica.Policy{Retention: time.Hour, CrashInterval: time.Minute}}
	rs, err := c.EnableReplication(ctx, "hv1", m)
	if err != nil || rs.Machine != "web1" || rs.Agent != "hv1" {
		t.Fatalf("enable: %+v, %v", rs, err)
	}
	var specs []catalog.ReplicationSpec
	hv1 := e.token("hv1", catalog.RoleAgent)
	e.do(hv1, "GET", "/v1/agent/replications", nil, &specs)
	if len(specs) != 1 || specs[0].Machine != "web1" {
		t.Fatalf("the agent's specs: %+v", specs)
	}
	if got, err := c.Replications(ctx, ""); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("no reports: %#v, %v", got, err)
	}
	if _, err := c.Replications(ctx, "web1"); !errors.Is(err, replicate.ErrNotFound) || !strings.Contains(err.Error(), `machine "web1"`) {
		t.Fatalf("a machine with no report: %v", err)
	}
	report := `{"replications":[{"machine":"web1","state":"protected"},{"machine":"db1","state":"protected"}]}`
	e.ok(e.do(e.token("hv2", catalog.RoleAgent), "POST", "/v1/agent/replications", report, nil))
	if got, err := c.Replications(ctx, "db1"); err != nil || len(got) != 1 || got[0].Machine != "db1" || got[0].Agent != "hv2" {
		t.Fatalf("db1's report: %+v, %v", got, err)
	}
	if got, err := c.Replications(ctx, ""); err != nil || len(got) != 2 {
		t.Fatalf("every report: %+v, %v", got, err)
	}
	if err := c.DisableReplication(ctx, "web1"); err != nil {
		t.Fatal(err)
	}
	specs = nil
	e.do(hv1, "GET", "/v1/agent/replications", nil, &specs)
	if len(specs) != 0 {
		t.Fatalf("the agent's specs after disable: %+v", specs)
	}
	if _, err := c.EnableReplication(ctx, "hv1", replicate.Machine{Name: "x"}); err == nil {
		t.Fatal("enabled an invalid machine")
	}
}
