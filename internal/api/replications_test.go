package api

import (
	"strings"
	"testing"
	"time"

	"lifeboat/internal/catalog"
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
