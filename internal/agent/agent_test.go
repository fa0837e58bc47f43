package agent

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
)

// serverAt runs the real API over cat on addr until the returned stop is
// called; a stopped server can be started again on the same address.
func serverAt(t *testing.T, cat *catalog.Catalog, addr string) (stop func()) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ { // the port may linger briefly after a stop
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: (&api.Server{Catalog: cat, Clock: clock.Real{}}).Handler()}
	go srv.Serve(ln)
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			srv.Close()
		}
	}
	t.Cleanup(stop)
	return stop
}

// stepRunner reports, then waits for release (or its context) and
// returns one point.
type stepRunner struct {
	started chan catalog.Job
	release chan struct{}
}

func (s *stepRunner) Run(ctx context.Context, j catalog.Job, r Reporter) (Outcome, error) {
	r.Log("info", "reading disk root")
	r.Progress(map[string]int{"done": 1, "total": 4})
	s.started <- j
	select {
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	case <-s.release:
	}
	r.Log("info", "point committed")
	return Outcome{Result: []byte(`{"point":"abc123"}`),
		Points: []catalog.Point{{Vault: "local", ID: "abc123", Machine: j.Machine, Time: time.Now().UTC(), Consistency: "crash"}}}, nil
}

type fixture struct {
	cat    *catalog.Catalog
	addr   string
	runner *stepRunner
	stop   func()
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.Open(ctx, filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	f := &fixture{cat: cat, addr: addr, runner: &stepRunner{started: make(chan catalog.Job, 1), release: make(chan struct{})}, done: make(chan error, 1)}
	f.stop = serverAt(t, cat, addr)
	secret, _ := api.NewSecret()
	if _, err := cat.AddToken(ctx, "hv1", catalog.RoleAgent, api.HashToken(secret), time.Now()); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Client: &api.Client{URL: "http://" + addr, Token: secret}, Runner: f.runner,
		Poll: 20 * time.Millisecond, Heartbeat: 50 * time.Millisecond, Renew: 50 * time.Millisecond}
	actx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	go func() { f.done <- a.Run(actx) }()
	t.Cleanup(func() { cancel(); <-f.done })
	return f
}

func (f *fixture) waitState(t *testing.T, id, state string) catalog.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := f.cat.Job(context.Background(), id)
		if err == nil && j.State == state {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s, not %s: %+v", id, j.State, state, j)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The server goes away while a job runs and comes back on the same
// address: the job finishes meanwhile and its outcome arrives after.
func TestJobSurvivesServerRestart(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	id, err := f.cat.Enqueue(ctx, catalog.Job{Kind: "backup", Machine: "web1", Agent: "hv1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	j := <-f.runner.started
	if j.ID != id {
		t.Fatalf("ran %s, queued %s", j.ID, id)
	}
	// Progress arrives with a renewal.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, _ := f.cat.Job(ctx, id)
		if string(cur.Progress) == `{"done":1,"total":4}` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress never arrived: %s", cur.Progress)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.stop()
	close(f.runner.release) // the job ends while the server is down
	time.Sleep(300 * time.Millisecond)
	if cur, _ := f.cat.Job(ctx, id); cur.State != catalog.Running {
		t.Fatalf("state changed with the server down: %s", cur.State)
	}
	serverAt(t, f.cat, f.addr)
	done := f.waitState(t, id, catalog.Succeeded)
	if string(done.Result) != `{"point":"abc123"}` {
		t.Fatalf("result %s", done.Result)
	}
	ps, _ := f.cat.Points(ctx, "web1", 0)
	if len(ps) != 1 || ps[0].ID != "abc123" || ps[0].Job != id {
		t.Fatalf("points %+v", ps)
	}
	logs, _ := f.cat.Logs(ctx, id, 0)
	if len(logs) == 0 || logs[0].Message != "reading disk root" {
		t.Fatalf("logs %+v", logs)
	}
	agents, _ := f.cat.Agents(ctx)
	if len(agents) != 1 || agents[0].Name != "hv1" {
		t.Fatalf("agent not registered by its heartbeat: %+v", agents)
	}
}

func TestCancelThroughServer(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	id, _ := f.cat.Enqueue(ctx, catalog.Job{Kind: "backup", Machine: "web1", MaxAttempts: 3}, time.Now())
	<-f.runner.started
	if err := f.cat.CancelJob(ctx, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	j := f.waitState(t, id, catalog.Cancelled)
	if !strings.Contains(j.Error, "cancelled through the server") {
		t.Fatalf("cancelled job has no reason: %+v", j)
	}
}

// The server hands the job to someone else (its lease expired as far as
// the server knows): the local run is cancelled at its next renewal and
// its late report refused, so the job stays with its new owner.
func TestLeaseLostCancelsRun(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	id, _ := f.cat.Enqueue(ctx, catalog.Job{Kind: "backup", Machine: "web1", MaxAttempts: 3}, time.Now())
	<-f.runner.started
	reaped, err := f.cat.Reap(ctx, time.Now().Add(2*api.Lease))
	if err != nil || len(reaped) != 1 {
		t.Fatalf("reaped %v, %v", reaped, err)
	}
	// The run is cancelled: the runner returns without being released.
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs, _ := f.cat.Logs(ctx, id, 0)
		j, _ := f.cat.Job(ctx, id)
		if j.State != catalog.Queued || !strings.Contains(j.Error, "interrupted") {
			t.Fatalf("the lost run's report overwrote the new state: %+v", j)
		}
		if len(logs) > 0 && time.Since(j.Created) > 500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case f.runner.release <- struct{}{}:
		t.Fatal("the run was still waiting: not cancelled after its lease was lost")
	case <-time.After(200 * time.Millisecond):
	}
}

// A heartbeat carries the host's offers beside its fixed info, computed
// anew each time.
func TestHeartbeatOffers(t *testing.T) {
	n := 0
	a := &Agent{Info: json.RawMessage(`{"host":"hv1"}`), Offers: func(context.Context) any { n++; return map[string]int{"libvirt": n} }}
	for want := 1; want <= 2; want++ {
		var got struct {
			Host   string         `json:"host"`
			Offers map[string]int `json:"offers"`
		}
		if err := json.Unmarshal(a.info(context.Background()), &got); err != nil {
			t.Fatal(err)
		}
		if got.Host != "hv1" || got.Offers["libvirt"] != want {
			t.Fatalf("heartbeat %d info %+v", want, got)
		}
	}
	if string((&Agent{Info: json.RawMessage(`{"host":"hv1"}`)}).info(context.Background())) != `{"host":"hv1"}` {
		t.Fatal("info without offers changed")
	}
}

// An agent's fixed info names its host (this host when none is given),
// and marks the server's built-in agent.
func TestHostInfo(t *testing.T) {
	self, _ := os.Hostname()
	for _, c := range []struct {
		host     string
		builtin  bool
		name, js string
	}{
		{"hv1", false, "hv1", `{"host":"hv1"}`},
		{"hv1", true, "hv1", `{"builtin":true,"host":"hv1"}`},
		{"", false, self, `{"host":"` + self + `"}`},
	} {
		name, info := HostInfo(c.host, c.builtin)
		if name != c.name || string(info) != c.js {
			t.Errorf("HostInfo(%q, %v) = %q, %s; want %q, %s", c.host, c.builtin, name, info, c.name, c.js)
		}
	}
}
