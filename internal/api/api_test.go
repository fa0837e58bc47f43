package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/catalog/pgtest"
	"lifeboat/internal/clock"
)

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	url   string
	cat   *catalog.Catalog
	clock *clock.Fake
	admin string
}

func newEnv(t *testing.T) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv with set, if not nil, completing the server.
func newEnvWith(t *testing.T, set func(*Server)) *env {
	t.Helper()
	return newEnvOn(t, filepath.Join(t.TempDir(), "catalog.db"), set)
}

// engines runs fn on a server over an SQLite catalog and one over a
// PostgreSQL catalog.
func engines(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, eng := range []catalog.Engine{catalog.SQLite, catalog.Postgres} {
		t.Run(string(eng), func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "catalog.db")
			if eng == catalog.Postgres {
				dsn = pgtest.Database(t)
			}
			fn(t, newEnvOn(t, dsn, nil))
		})
	}
}

// newEnvOn is newEnvWith on the catalog at dsn.
func newEnvOn(t *testing.T, dsn string, set func(*Server)) *env {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	fc := clock.NewFake(t0)
	api := &Server{Catalog: cat, Clock: fc, DefaultAgent: "hv1"}
	if set != nil {
		set(api)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e := &env{t: t, url: srv.URL, cat: cat, clock: fc}
	e.admin = e.token("admin", catalog.RoleAdmin)
	return e
}

// token makes a token straight in the catalog, as the server's first start does.
func (e *env) token(name, role string) string {
	secret, err := NewSecret()
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.cat.AddToken(context.Background(), name, role, HashToken(secret), t0); err != nil {
		e.t.Fatal(err)
	}
	return secret
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (e *env) do(token, method, path string, body any, out any) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, string(raw)
}

// ok fails the test unless the answer is a success.
func (e *env) ok(code int, body string) {
	e.t.Helper()
	if code < 200 || code > 299 {
		e.t.Fatalf("status %d: %s", code, body)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	if code, _ := e.do("", "GET", "/healthz", nil, nil); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	code, body := e.do("", "GET", "/v1/machines", nil, nil)
	if code != 401 || !strings.Contains(body, "no token") {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, body := e.do("lbt_wrong", "GET", "/v1/machines", nil, nil); code != 401 || !strings.Contains(body, "unknown or revoked") {
		t.Fatalf("unknown token: %d %s", code, body)
	}
	viewer := e.token("watcher", catalog.RoleViewer)
	operator := e.token("ops", catalog.RoleOperator)
	agent := e.token("hv1", catalog.RoleAgent)
	e.ok(e.do(viewer, "GET", "/v1/machines", nil, nil))
	if code, body := e.do(viewer, "PUT", "/v1/tiers/gold", TierJSON{RPO: Duration(time.Hour)}, nil); code != 403 || !strings.Contains(body, "admin role") {
		t.Fatalf("viewer writing: %d %s", code, body)
	}
	if code, _ := e.do(operator, "PUT", "/v1/tiers/gold", TierJSON{RPO: Duration(time.Hour)}, nil); code != 403 {
		t.Fatalf("operator changing a tier: %d", code)
	}
	if code, body := e.do(agent, "GET", "/v1/machines", nil, nil); code != 403 || !strings.Contains(body, "agent tokens") {
		t.Fatalf("agent on a human route: %d %s", code, body)
	}
	if code, _ := e.do(e.admin, "POST", "/v1/agent/claim", nil, nil); code != 403 {
		t.Fatalf("admin on an agent route: %d", code)
	}
	// Tokens made through the API work at once; revoked ones stop at once.
	var made NewTokenJSON
	e.ok(e.do(e.admin, "POST", "/v1/tokens", NewTokenJSON{Name: "ci", Role: "viewer"}, &made))
	if !strings.HasPrefix(made.Secret, "lbt_") {
		t.Fatalf("token secret %q", made.Secret)
	}
	e.ok(e.do(made.Secret, "GET", "/v1/tiers", nil, nil))
	if code, body := e.do(e.admin, "DELETE", "/v1/tokens/admin", nil, nil); code != 400 || !strings.Contains(body, "cannot revoke itself") {
		t.Fatalf("self-revocation: %d %s", code, body)
	}
	e.ok(e.do(e.admin, "DELETE", "/v1/tokens/ci", nil, nil))
	if code, _ := e.do(made.Secret, "GET", "/v1/tiers", nil, nil); code != 401 {
		t.Fatalf("revoked token: %d", code)
	}
	if code, body := e.do(e.admin, "POST", "/v1/tokens", NewTokenJSON{Name: "x", Role: "root"}, nil); code != 400 || !strings.Contains(body, "role") {
		t.Fatalf("bad role: %d %s", code, body)
	}
	var list []catalog.Token
	e.ok(e.do(e.admin, "GET", "/v1/tokens", nil, &list))
	for _, tk := range list {
		raw, _ := json.Marshal(tk)
		if strings.Contains(string(raw), "lbt_") {
			t.Fatalf("token listing shows a secret: %s", raw)
		}
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path, body, want string
		code                     int
	}{
		{"PUT", "/v1/tiers/gold", `{"rpo":"an hour"}`, "rpo", 400},
		{"PUT", "/v1/tiers/gold", `{"rpo":"1h","colour":"gold"}`, "unknown field", 400},
		{"PUT", "/v1/tiers/gold", `{"name":"silver","rpo":"1h"}`, "the body says", 400},
		{"PUT", "/v1/tiers/gold", ``, "empty body", 400},
		{"PUT", "/v1/tiers/gold", `{"rpo":"1h"}{}`, "more than one", 400},
		{"PUT", "/v1/tiers/gold", `{}`, "RPO", 400},
		{"PUT", "/v1/tiers/a..b", `{"rpo":"1h"}`, "", 200}, // a valid name
		{"PUT", "/v1/tiers/gold", `{"rpo":"1h","drill_every":"10s"}`, "at least a minute", 400},
		{"PUT", "/v1/tiers/gold", `{"none":true,"drill_every":"1d"}`, "no objectives", 400},
		{"PUT", "/v1/policies/p", `{"every":"1h","consistency":"crash","vault":"nowhere"}`, "does not know", 400},
		{"PUT", "/v1/vaults/local", `{"url":""}`, "no URL", 400},
		{"POST", "/v1/machines", `{"name":"web1","source":{}}`, "source.disks", 400},
		{"POST", "/v1/machines", `{"name":"web1","source":{"disks":[{"name":"root","path":"root.raw"}]}}`, "not absolute", 400},
		{"POST", "/v1/machines", `{"name":"../x","source":{"disks":[{"name":"root","path":"/r.raw"}]}}`, "machine name", 400},
		{"GET", "/v1/machines/nope", ``, "not found", 404},
		{"GET", "/v1/jobs?limit=-3", ``, "limit", 400},
		{"POST", "/v1/machines/nope/protect", `{"tier":"gold","policy":"p"}`, "not found", 404},
	} {
		code, body := e.do(e.admin, tc.method, tc.path, tc.body, nil)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s %s: %d %s; want %d containing %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.want)
		}
	}
	// The refused policy was not half-created.
	if code, _ := e.do(e.admin, "GET", "/v1/policies/p", nil, nil); code != 404 {
		t.Fatalf("refused policy exists: %d", code)
	}
}

// The whole path an operator and an agent take: objects, protection, a
// manual backup claimed, renewed, logged and finished by an agent, and
// the machine's RPO standing moving from missed to green.
func TestProtectAndRunThroughAgent(t *testing.T) {
	e := newEnv(t)
	e.ok(e.do(e.admin, "PUT", "/v1/tiers/gold", `{"rpo":"1h","rto":"15m","drill_every":"1d"}`, nil))
	var tiers []map[string]any
	e.ok(e.do(e.admin, "GET", "/v1/tiers", nil, &tiers))
	if len(tiers) != 1 || tiers[0]["drill_every"] != "1d" || tiers[0]["rto"] != "15m" {
		t.Fatalf("tiers on the wire: %v", tiers)
	}
	e.ok(e.do(e.admin, "PUT", "/v1/tiers/none", TierJSON{None: true}, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/vaults/local", catalog.Vault{URL: "/srv/vault"}, nil))
	var pol PolicyJSON
	e.ok(e.do(e.admin, "PUT", "/v1/policies/hourly", `{"every":"1h","stagger":"10m","keep":{"last":24,"daily":7,"within":"2d"},"consistency":"crash","vault":"local"}`, &pol))
	if time.Duration(pol.Every) != time.Hour || pol.Keep.Daily != 7 || time.Duration(pol.Keep.Within) != 48*time.Hour {
		t.Fatalf("policy %+v", pol)
	}
	var raw map[string]any
	e.ok(e.do(e.admin, "GET", "/v1/policies/hourly", nil, &raw))
	if raw["every"] != "1h" || raw["stagger"] != "10m" {
		t.Fatalf("durations on the wire: %v", raw)
	}
	e.ok(e.do(e.admin, "POST", "/v1/machines", `{"name":"web1","agent":"hv1","source":{"disks":[{"name":"root","path":"/img/web1.raw"}]}}`, nil))
	e.ok(e.do(e.admin, "POST", "/v1/machines", `{"name":"scratch","source":{"disks":[{"name":"root","path":"/img/s.raw"}]}}`, nil))
	if code, body := e.do(e.admin, "POST", "/v1/machines", `{"name":"web1","source":{"disks":[{"name":"root","path":"/img/web1.raw"}]}}`, nil); code != 409 {
		t.Fatalf("second web1: %d %s", code, body)
	}
	if code, body := e.do(e.admin, "POST", "/v1/machines/web1/protect", ProtectJSON{Tier: "gold"}, nil); code != 400 || !strings.Contains(body, "needs a backup policy") {
		t.Fatalf("gold without a policy: %d %s", code, body)
	}
	e.ok(e.do(e.admin, "POST", "/v1/machines/scratch/protect", ProtectJSON{Tier: "none"}, nil))
	var m MachineJSON
	e.ok(e.do(e.admin, "POST", "/v1/machines/web1/protect", ProtectJSON{Policy: "hourly", Tier: "gold"}, &m))
	if m.RPOState != "warning" || m.NextRun.Before(t0.Add(time.Hour)) || m.NextRun.After(t0.Add(70*time.Minute)) {
		t.Fatalf("just protected: %+v", m)
	}

	e.clock.Advance(2 * time.Hour)
	var ms []MachineJSON
	e.ok(e.do(e.admin, "GET", "/v1/machines", nil, &ms))
	if len(ms) != 2 || ms[0].Name != "scratch" || ms[0].RPOState != "unprotected" || ms[1].RPOState != "missed" {
		t.Fatalf("machines %+v", ms)
	}

	operator := e.token("ops", catalog.RoleOperator)
	var queued catalog.Job
	e.ok(e.do(operator, "POST", "/v1/machines/web1/backup", nil, &queued))
	if queued.State != catalog.Queued || queued.Agent != "hv1" || queued.Machine != "web1" {
		t.Fatalf("queued %+v", queued)
	}
	var spec map[string]any
	json.Unmarshal(queued.Spec, &spec)
	if spec["vault"] != "/srv/vault" || spec["consistency"] != "crash" {
		t.Fatalf("job spec %s", queued.Spec)
	}
	if code, body := e.do(operator, "POST", "/v1/machines/scratch/backup", nil, nil); code != 400 || !strings.Contains(body, "no backup policy") {
		t.Fatalf("backup-now without a policy: %d %s", code, body)
	}

	other := e.token("hv2", catalog.RoleAgent)
	if code, _ := e.do(other, "POST", "/v1/agent/claim", nil, nil); code != 204 {
		t.Fatalf("hv2 claimed hv1's job: %d", code)
	}
	agent := e.token("hv1", catalog.RoleAgent)
	e.ok(e.do(agent, "POST", "/v1/agent/heartbeat", HeartbeatJSON{Info: json.RawMessage(`{"version":"test"}`)}, nil))
	var claimed catalog.Job
	e.ok(e.do(agent, "POST", "/v1/agent/claim", nil, &claimed))
	if claimed.ID != queued.ID || claimed.State != catalog.Running {
		t.Fatalf("claimed %+v", claimed)
	}
	var renewed map[string]bool
	if !strings.HasPrefix(claimed.LeaseOwner, "hv1/") || len(claimed.LeaseOwner) < 12 {
		t.Fatalf("lease token %q", claimed.LeaseOwner)
	}
	if code, _ := e.do(agent, "POST", "/v1/agent/jobs/"+claimed.ID+"/renew", RenewJSON{Lease: "hv1/forged"}, nil); code != 409 {
		t.Fatalf("renewal with a forged lease: %d", code)
	}
	if code, _ := e.do(agent, "POST", "/v1/agent/jobs/"+claimed.ID+"/renew", RenewJSON{}, nil); code != 400 {
		t.Fatalf("renewal without a lease: %d", code)
	}
	e.ok(e.do(agent, "POST", "/v1/agent/jobs/"+claimed.ID+"/renew", RenewJSON{Lease: claimed.LeaseOwner, Progress: json.RawMessage(`{"bytes":1048576,"total":4194304}`)}, &renewed))
	if renewed["cancel"] {
		t.Fatal("told to cancel")
	}
	if code, _ := e.do(other, "POST", "/v1/agent/jobs/"+claimed.ID+"/log", LogJSON{Lease: claimed.LeaseOwner, Level: "info", Message: "x"}, nil); code != 409 {
		t.Fatalf("another agent logged to hv1's job: %d", code)
	}
	if code, _ := e.do(other, "POST", "/v1/agent/jobs/"+claimed.ID+"/finish", FinishJSON{Lease: claimed.LeaseOwner}, nil); code != 409 {
		t.Fatalf("another agent finished hv1's job: %d", code)
	}
	e.ok(e.do(agent, "POST", "/v1/agent/jobs/"+claimed.ID+"/log", LogJSON{Lease: claimed.LeaseOwner, Level: "info", Message: "read 4 MiB"}, nil))
	pointTime := e.clock.Now().Add(-time.Minute)
	var done catalog.Job
	if code, _ := e.do(agent, "POST", "/v1/agent/jobs/"+claimed.ID+"/finish", FinishJSON{Lease: claimed.LeaseOwner,
		Points: []catalog.Point{{Vault: "local", ID: "fake", Machine: "scratch", Time: pointTime, Consistency: "crash"}}}, nil); code != 400 {
		t.Fatalf("a point of another machine reported: %d", code)
	}
	e.ok(e.do(agent, "POST", "/v1/agent/jobs/"+claimed.ID+"/finish", FinishJSON{Lease: claimed.LeaseOwner, Result: json.RawMessage(`{"point":"3fa9c2"}`),
		Points: []catalog.Point{{Vault: "local", ID: "3fa9c2", Machine: "web1", Time: pointTime, Consistency: "crash", ChangeSource: "full"}}}, &done))
	if done.State != catalog.Succeeded {
		t.Fatalf("finished %+v", done)
	}
	var logs []catalog.LogLine
	e.ok(e.do(e.admin, "GET", "/v1/jobs/"+claimed.ID+"/logs", nil, &logs))
	if len(logs) != 1 || logs[0].Message != "read 4 MiB" {
		t.Fatalf("logs %+v", logs)
	}
	e.ok(e.do(e.admin, "GET", "/v1/machines/web1", nil, &m))
	if m.RPOState != "green" || !m.LastPoint.Equal(pointTime) {
		t.Fatalf("after the backup: %+v", m)
	}
	var points []catalog.Point
	e.ok(e.do(e.admin, "GET", "/v1/machines/web1/points", nil, &points))
	if len(points) != 1 || points[0].Job != claimed.ID {
		t.Fatalf("points %+v", points)
	}
	var jobs []catalog.Job
	e.ok(e.do(e.admin, "GET", "/v1/jobs?machine=web1&state=succeeded", nil, &jobs))
	if len(jobs) != 1 {
		t.Fatalf("jobs %+v", jobs)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/policies/hourly", nil, nil); code != 409 {
		t.Fatalf("deleting a policy in use: %d", code)
	}

	// Metrics: what this server saw end, and the catalog's state.
	if code, _ := e.do("", "GET", "/metrics", nil, nil); code != 401 {
		t.Fatalf("metrics without a token: %d", code)
	}
	viewer := e.token("prometheus", catalog.RoleViewer)
	code, body := e.do(viewer, "GET", "/metrics", nil, nil)
	if code != 200 {
		t.Fatalf("metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`lifeboat_jobs_finished_total{kind="backup",result="succeeded"} 1`,
		`lifeboat_job_duration_seconds_count{kind="backup"} 1`,
		`lifeboat_points_total{consistency="crash"} 1`,
		`lifeboat_rpo_state{machine="web1",state="green"} 1`,
		`lifeboat_rpo_state{machine="scratch",state="unprotected"} 1`,
		`lifeboat_rpo_age_seconds{machine="web1",tier="gold"} 60`,
		`lifeboat_rpo_objective_seconds{machine="web1",tier="gold"} 3600`,
		`lifeboat_agent_up{agent="hv1"} 1`,
		`lifeboat_jobs{state="succeeded"} 1`,
		`lifeboat_machines 2`,
		`lifeboat_catalog_up 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// Every handler is in openapi.json with its method and least role, and
// the document lists nothing the server does not serve.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Role string `json:"x-role"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	served := map[string]string{}
	for _, rt := range (&Server{}).routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		served[strings.ToLower(method)+" "+path] = rt.role
	}
	documented := map[string]string{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if path == "/healthz" || path == "/openapi.json" {
				continue
			}
			documented[method+" "+path] = op.Role
		}
	}
	for k, role := range served {
		if documented[k] != role {
			t.Errorf("%s: served for %s, documented for %q", k, role, documented[k])
		}
	}
	for k := range documented {
		if _, ok := served[k]; !ok {
			t.Errorf("%s is documented but not served", k)
		}
	}
	e := newEnv(t)
	code, body := e.do("", "GET", "/openapi.json", nil, nil)
	if code != 200 || !strings.Contains(body, `"openapi": "3.1.0"`) {
		t.Fatalf("GET /openapi.json: %d", code)
	}
}

// A drill job that fails raises drill-failed and tells Alerted (the
// server's webhooks), once; the next one that succeeds clears it and
// tells Alerted again.
func TestDrillAlerted(t *testing.T) {
	type told struct {
		raised                 bool
		kind, subject, message string
	}
	var got []told
	var mu sync.Mutex
	e := newEnvWith(t, func(s *Server) {
		s.Alerted = func(raised bool, kind, subject, message string, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, told{raised, kind, subject, message})
		}
	})
	e.ok(e.do(e.admin, "PUT", "/v1/tiers/gold", `{"rpo":"1h","drill_every":"1d"}`, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/vaults/local", catalog.Vault{URL: "/srv/vault"}, nil))
	e.ok(e.do(e.admin, "PUT", "/v1/policies/hourly", `{"every":"1h","consistency":"crash","vault":"local"}`, nil))
	e.ok(e.do(e.admin, "POST", "/v1/machines", `{"name":"web1","source":{"disks":[{"name":"root","path":"/img/web1.raw"}]}}`, nil))
	e.ok(e.do(e.admin, "POST", "/v1/machines/web1/protect", `{"tier":"gold","policy":"hourly"}`, nil))
	agent := e.token("hv1", catalog.RoleAgent)
	drill := func(failure string) {
		t.Helper()
		e.ok(e.do(e.admin, "POST", "/v1/machines/web1/drill", `{}`, nil))
		var j catalog.Job
		e.ok(e.do(agent, "POST", "/v1/agent/claim", nil, &j))
		if j.Kind != "drill" {
			t.Fatalf("claimed %+v", j)
		}
		e.ok(e.do(agent, "POST", "/v1/agent/jobs/"+j.ID+"/finish", FinishJSON{Lease: j.LeaseOwner, Error: failure}, nil))
	}
	drill("the machine stopped before the guest answered")
	drill("the machine stopped before the guest answered")
	drill("")
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[0].raised || got[0].kind != AlertDrill || got[0].subject != "web1" || !strings.Contains(got[0].message, "stopped before") ||
		got[1].raised || got[1].kind != AlertDrill {
		t.Fatalf("Alerted was told %+v; want drill-failed raised once, then cleared", got)
	}
}
