package api

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"lifeboat/internal/catalog"
)

// GET /v1/drills, on SQLite and PostgreSQL: each machine with its newest
// drill and its newest successful one, whose measured RTO is held against
// the tier's objective; a machine never drilled is listed without either.
// Viewers may read it; agents may not.
func TestDrillsListed(t *testing.T) { engines(t, testDrillsListed) }

func testDrillsListed(t *testing.T, e *env) {
	e.ok(e.do(e.admin, "PUT", "/v1/tiers/gold", `{"rpo":"1h","rto":"1m","drill_every":"1d"}`, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/vaults/local", catalog.Vault{URL: "/srv/vault"}, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/policies/hourly", `{"every":"1h","consistency":"crash","vault":"local"}`, nil))
	for _, m := range []string{"db1", "web1"} {
		e.ok(e.do(e.admin, "POST", "/v1/machines", `{"name":"`+m+`","source":{"disks":[{"name":"root","path":"/img/`+m+`.raw"}]}}`, nil))
		e.ok(e.do(e.admin, "POST", "/v1/machines/"+m+"/protect", `{"tier":"gold","policy":"hourly"}`, nil))
	}
	agent := e.token("hv1", catalog.RoleAgent)
	viewer := e.token("v", catalog.RoleViewer)
	// drill runs one drill of web1 to its end: rtoMS measured, or failed.
	drill := func(rtoMS int64, failure string) string {
		t.Helper()
		e.ok(e.do(e.admin, "POST", "/v1/machines/web1/drill", `{}`, nil))
		var j catalog.Job
		e.ok(e.do(agent, "POST", "/v1/agent/claim", nil, &j))
		res := json.RawMessage(fmt.Sprintf(`{"version":1,"point":"p%d","machine":"web1","ok":%v,"rto_ms":%d,"error":%q}`, rtoMS, failure == "", rtoMS, failure))
		e.clock.Advance(time.Second)
		e.ok(e.do(agent, "POST", "/v1/agent/jobs/"+j.ID+"/finish", FinishJSON{Lease: j.LeaseOwner, Result: res, Error: failure}, nil))
		e.clock.Advance(time.Second)
		return j.ID
	}
	list := func() map[string]DrillsJSON {
		t.Helper()
		var got []DrillsJSON
		e.ok(e.do(viewer, "GET", "/v1/drills", nil, &got))
		out := map[string]DrillsJSON{}
		for _, d := range got {
			out[d.Machine] = d
		}
		if len(out) != 2 {
			t.Fatalf("listed %+v, want db1 and web1", got)
		}
		return out
	}

	if d := list(); d["web1"].Last != nil || d["web1"].LastOK != nil || d["web1"].RTOState != "" || d["web1"].Tier != "gold" ||
		d["web1"].RTO != Duration(time.Minute) || d["web1"].DrillEvery != Duration(24*time.Hour) {
		t.Fatalf("before any drill: %+v", d["web1"])
	}
	slow := drill(90_000, "")
	d := list()["web1"]
	if d.Last == nil || d.LastOK == nil || d.Last.Job != slow || !d.LastOK.OK || d.LastOK.RTOSeconds != 90 || d.LastOK.Point != "p90000" || d.RTOState != RTOMissed {
		t.Fatalf("after a drill of 90 s against an RTO of 1m: %+v %+v %+v", d, d.Last, d.LastOK)
	}
	failed := drill(0, "the machine stopped before the guest answered")
	d = list()["web1"]
	if d.Last.Job != failed || d.Last.OK || d.Last.State != catalog.Failed || d.Last.Error != "the machine stopped before the guest answered" ||
		d.LastOK.Job != slow || d.RTOState != RTOMissed {
		t.Fatalf("after a failed drill: %+v %+v %+v", d, d.Last, d.LastOK)
	}
	fast := drill(20_000, "")
	if d = list()["web1"]; d.Last.Job != fast || d.LastOK.Job != fast || d.LastOK.RTOSeconds != 20 || d.RTOState != RTOMet {
		t.Fatalf("after a drill of 20 s: %+v %+v %+v", d, d.Last, d.LastOK)
	}
	// A queued drill is the newest; the proven one stays.
	e.ok(e.do(e.admin, "POST", "/v1/machines/web1/drill", `{}`, nil))
	if d = list()["web1"]; d.Last.State != catalog.Queued || d.LastOK.Job != fast || d.RTOState != RTOMet {
		t.Fatalf("with a drill queued: %+v %+v %+v", d, d.Last, d.LastOK)
	}
	if db := list()["db1"]; db.Last != nil || db.LastOK != nil {
		t.Fatalf("db1 was never drilled: %+v", db)
	}
	var one []DrillsJSON
	e.ok(e.do(viewer, "GET", "/v1/drills?machine=db1", nil, &one))
	if len(one) != 1 || one[0].Machine != "db1" {
		t.Fatalf("?machine=db1 lists %+v", one)
	}
	if code, body := e.do(agent, "GET", "/v1/drills", nil, nil); code != 403 {
		t.Fatalf("an agent listed drills: %d %s", code, body)
	}
}

// GET /v1/replications holds each replication's lag against its
// machine's tier's RPO, by the rule of backups: green, warning past 80 %,
// missed beyond; a machine of no tier and one failed over have no RPO
// state. On SQLite and PostgreSQL.
func TestReplicationsRPO(t *testing.T) { engines(t, testReplicationsRPO) }

func testReplicationsRPO(t *testing.T, e *env) {
	e.ok(e.do(e.admin, "PUT", "/v1/tiers/gold", `{"rpo":"1m"}`, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/tiers/off", `{"none":true}`, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/vaults/local", catalog.Vault{URL: "/srv/vault"}, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/policies/hourly", `{"every":"1h","consistency":"crash","vault":"local"}`, nil))
	for m, tier := range map[string]string{"web1": "gold", "web2": "gold", "off1": "off"} {
		e.ok(e.do(e.admin, "POST", "/v1/machines", `{"name":"`+m+`","source":{"disks":[{"name":"root","path":"/img/`+m+`.raw"}]}}`, nil))
		e.ok(e.do(e.admin, "POST", "/v1/machines/"+m+"/protect", `{"tier":"`+tier+`","policy":"hourly"}`, nil))
	}
	hv := e.token("hv1", catalog.RoleAgent)
	viewer := e.token("v", catalog.RoleViewer)
	cut := func(ago time.Duration) string { return t0.Add(-ago).Format(time.RFC3339Nano) }
	report := `{"replications":[
		{"machine":"web1","target":"dr","group":"shop","state":"protected","last_cut":"` + cut(10*time.Second) + `"},
		{"machine":"web2","target":"dr","group":"shop","state":"protected","last_cut":"` + cut(50*time.Second) + `"},
		{"machine":"off1","target":"dr","state":"protected","last_cut":"` + cut(time.Hour) + `"},
		{"machine":"lone","target":"dr","state":"protected","last_cut":"` + cut(time.Hour) + `"},
		{"machine":"gone","target":"dr","state":"initial-sync"}]}`
	e.ok(e.do(hv, "POST", "/v1/agent/replications", report, nil))
	list := func() map[string]ReplicationJSON {
		t.Helper()
		var got []ReplicationJSON
		e.ok(e.do(viewer, "GET", "/v1/replications", nil, &got))
		out := map[string]ReplicationJSON{}
		for _, r := range got {
			out[r.Machine] = r
		}
		return out
	}
	for _, c := range []struct {
		after              time.Duration
		web1, web2, lone   string
		web1Lag, web2Group string
	}{
		{0, "green", "warning", "", "10", "shop"},
		{40 * time.Second, "warning", "missed", "", "50", "shop"},
		{time.Minute, "missed", "missed", "", "70", "shop"},
	} {
		e.clock.Set(t0.Add(c.after))
		got := list()
		if got["web1"].RPOState != c.web1 || got["web2"].RPOState != c.web2 || got["lone"].RPOState != c.lone ||
			fmt.Sprint(got["web1"].LagSeconds) != c.web1Lag || got["web2"].Group != c.web2Group ||
			got["web1"].Tier != "gold" || got["web1"].RPO != Duration(time.Minute) || got["lone"].Tier != "" {
			t.Fatalf("after %s: web1 %+v, web2 %+v, lone %+v", c.after, got["web1"], got["web2"], got["lone"])
		}
		if got["off1"].RPOState != "unprotected" {
			t.Fatalf("a machine of a tier of no protection: %+v", got["off1"])
		}
	}
	var one []ReplicationJSON
	e.ok(e.do(viewer, "GET", "/v1/replications?machine=web2", nil, &one))
	if len(one) != 1 || one[0].Machine != "web2" || one[0].RPOState != "missed" {
		t.Fatalf("?machine=web2 lists %+v", one)
	}
	// Failed over: not replicating on purpose, no RPO state.
	e.ok(e.do(hv, "POST", "/v1/agent/replications", `{"replications":[{"machine":"web1","target":"dr","state":"failed-over","last_cut":"`+cut(time.Hour)+`"}]}`, nil))
	if got := list()["web1"]; got.State != "failed-over" || got.RPOState != "" {
		t.Fatalf("failed over: %+v", got)
	}
}
