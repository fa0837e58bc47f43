package api

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/catalog"
)

func TestConnect(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("  file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, c := range []struct {
		name, server, file string
		getenv             func(string) string
		url, token, err    string
	}{
		{name: "defaults", getenv: env("LIFEBOAT_TOKEN", "t1"), url: DefaultURL, token: "t1"},
		{name: "env server", getenv: env("LIFEBOAT_SERVER", "https://s:1", "LIFEBOAT_TOKEN", "t1"), url: "https://s:1", token: "t1"},
		{name: "flag wins", server: "http://f:2", getenv: env("LIFEBOAT_SERVER", "https://s:1", "LIFEBOAT_TOKEN", "t1"), url: "http://f:2", token: "t1"},
		{name: "token file wins", file: tokFile, getenv: env("LIFEBOAT_TOKEN", "t1"), url: DefaultURL, token: "file-token"},
		{name: "bad scheme", server: "ftp://x", getenv: env("LIFEBOAT_TOKEN", "t1"), err: `--server "ftp://x": want http://HOST:PORT`},
		{name: "no host", server: "http://", getenv: env("LIFEBOAT_TOKEN", "t1"), err: "want http://HOST:PORT"},
		{name: "missing token file", file: filepath.Join(dir, "none"), getenv: env(), err: "reading --token-file"},
		{name: "no token", getenv: env(), err: "no API token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := Connect(c.server, c.file, c.getenv)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrSettings) {
					t.Fatalf("err %v, want one with %q wrapping ErrSettings", err, c.err)
				}
				return
			}
			if err != nil || cl.URL != c.url || cl.Token != c.token {
				t.Fatalf("client %+v, %v; want %s with %s", cl, err, c.url, c.token)
			}
		})
	}
}

func TestVaultName(t *testing.T) {
	for ref, want := range map[string]string{
		"/srv/vault":                  "srv-vault",
		"s3://bucket/site-a":          "bucket-site-a",
		"s3://b/a//b":                 "b-a-b",
		"/data/v.1/x_y/":              "data-v.1-x_y",
		"/" + strings.Repeat("a", 70): strings.Repeat("a", 63),
	} {
		if got := VaultName(ref); got != want {
			t.Errorf("VaultName(%q) = %q, want %q", ref, got, want)
		}
	}
}

// VaultRef registers a URL under its derived name and passes a name as it is.
func TestVaultRef(t *testing.T) {
	e := newEnv(t)
	c := &Client{URL: e.url, Token: e.admin}
	ctx := context.Background()
	if name, err := c.VaultRef(ctx, "known"); err != nil || name != "known" {
		t.Fatalf("a name: %q %v", name, err)
	}
	name, err := c.VaultRef(ctx, "/srv/site-a")
	if err != nil || name != "srv-site-a" {
		t.Fatalf("a directory: %q %v", name, err)
	}
	var vs []catalog.Vault
	e.ok(e.do(e.admin, "GET", "/v1/vaults", nil, &vs))
	if len(vs) != 1 || vs[0].Name != "srv-site-a" || vs[0].URL != "/srv/site-a" {
		t.Fatalf("registered %+v", vs)
	}
	if _, err := (&Client{URL: e.url, Token: "wrong"}).VaultRef(ctx, "/srv/x"); err == nil {
		t.Fatal("registered with a bad token")
	}
}

// Discover queues a job, follows it while an agent runs it, and decodes
// its result; a failed job is an error naming it.
func TestDiscoverWaits(t *testing.T) {
	e := newEnv(t)
	c := &Client{URL: e.url, Token: e.admin}
	agent := e.token("hv1", catalog.RoleAgent)
	finish := func(result string, fail string) {
		var j catalog.Job
		for {
			code, _ := e.do(agent, "POST", "/v1/agent/claim", nil, &j)
			if code == 200 {
				break
			}
			time.Sleep(20 * time.Millisecond) // polling the queue as an agent does
		}
		if j.Kind != "discover" {
			t.Errorf("claimed %+v", j)
		}
		e.ok(e.do(agent, "POST", "/v1/agent/jobs/"+j.ID+"/finish", FinishJSON{Lease: j.LeaseOwner, Result: json.RawMessage(result), Error: fail}, nil))
	}
	go finish(`{"machines":[{"name":"vm1","qmp":"/run/vm1.qmp","disks":["vda"]}]}`, "")
	ms, err := c.Discover(context.Background(), DiscoverJSON{Under: "/run"})
	if err != nil || len(ms) != 1 || ms[0].Name != "vm1" || ms[0].QMP != "/run/vm1.qmp" {
		t.Fatalf("discovered %+v, %v", ms, err)
	}
	go finish(`null`, "no /proc")
	if _, err := c.Discover(context.Background(), DiscoverJSON{}); err == nil || !strings.Contains(err.Error(), "no /proc") {
		t.Fatalf("failed discover: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Wait(ctx, catalog.Job{ID: "x", State: catalog.Queued}, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v", err)
	}
}

// RunJob returns a queued job at once, or, asked to wait, says it is
// queued and follows it until an agent finishes it.
func TestRunJob(t *testing.T) {
	e := newEnv(t)
	c := &Client{URL: e.url, Token: e.admin}
	ctx := context.Background()
	j, err := c.RunJob(ctx, "/v1/discover", DiscoverJSON{}, false, func(catalog.Job) { t.Error("queued called without wait") })
	if err != nil || j.State != catalog.Queued || j.Kind != "discover" {
		t.Fatalf("without wait: %+v, %v", j, err)
	}
	agent := e.token("hv1", catalog.RoleAgent)
	finishAll := func() {
		for n := 0; n < 2; {
			var claimed catalog.Job
			if code, _ := e.do(agent, "POST", "/v1/agent/claim", nil, &claimed); code != 200 {
				time.Sleep(20 * time.Millisecond) // polling the queue as an agent does
				continue
			}
			e.ok(e.do(agent, "POST", "/v1/agent/jobs/"+claimed.ID+"/finish", FinishJSON{Lease: claimed.LeaseOwner, Result: json.RawMessage(`{"machines":[]}`)}, nil))
			n++
		}
	}
	go finishAll()
	var said []string
	j, err = c.RunJob(ctx, "/v1/discover", DiscoverJSON{}, true, func(q catalog.Job) { said = append(said, q.ID+" "+q.State) })
	if err != nil || j.State != catalog.Succeeded || len(said) != 1 || said[0] != j.ID+" "+catalog.Queued {
		t.Fatalf("with wait: %+v, %v, queued said %q", j, err, said)
	}
	if _, err := c.RunJob(ctx, "/v1/nowhere", nil, true, nil); err == nil {
		t.Fatal("queued at a path the server does not serve")
	}
}

// JobsPath asks for the jobs of the filter's fields that are set, and the
// server lists those.
func TestJobsPath(t *testing.T) {
	for f, want := range map[catalog.JobFilter]string{
		{}:                                  "/v1/jobs?",
		{Machine: "web 1", State: "queued"}: "/v1/jobs?machine=web+1&state=queued",
		{Kind: "discover", Limit: 5}:        "/v1/jobs?kind=discover&limit=5",
	} {
		if got := JobsPath(f); got != want {
			t.Errorf("%+v: %q, want %q", f, got, want)
		}
	}
	e := newEnv(t)
	c := &Client{URL: e.url, Token: e.admin}
	ctx := context.Background()
	if _, err := c.Queue(ctx, "/v1/discover", DiscoverJSON{}); err != nil {
		t.Fatal(err)
	}
	var jobs []catalog.Job
	if err := c.Do(ctx, "GET", JobsPath(catalog.JobFilter{State: catalog.Queued, Kind: "discover"}), nil, &jobs); err != nil || len(jobs) != 1 {
		t.Fatalf("queued discover jobs: %+v, %v", jobs, err)
	}
	if err := c.Do(ctx, "GET", JobsPath(catalog.JobFilter{State: catalog.Running}), nil, &jobs); err != nil || len(jobs) != 0 {
		t.Fatalf("running jobs: %+v, %v", jobs, err)
	}
}

// A job that ended in any state but succeeded is an error naming the job,
// its state and its error.
func TestJobError(t *testing.T) {
	if err := JobError(catalog.Job{ID: "j1", State: catalog.Succeeded}); err != nil {
		t.Fatalf("succeeded: %v", err)
	}
	for _, st := range []string{catalog.Failed, catalog.Cancelled, catalog.Queued} {
		err := JobError(catalog.Job{ID: "j2", State: st, Error: "disk gone"})
		if err == nil || err.Error() != "job j2 "+st+": disk gone" {
			t.Errorf("state %s: %v", st, err)
		}
	}
}
