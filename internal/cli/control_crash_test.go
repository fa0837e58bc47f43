package cli_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/nbd"
	"lifeboat/internal/testenv"
)

// controlPlane is a server (and maybe agents) run as real processes on
// one data directory and address, so that they can be killed and
// started again.
type controlPlane struct {
	t               *testing.T
	data, addr, url string
	tokenFile       string
}

func newControlPlane(t *testing.T) *controlPlane {
	data := t.TempDir()
	addr := freeAddr(t)
	return &controlPlane{t: t, data: data, addr: addr, url: "http://" + addr, tokenFile: filepath.Join(data, "admin.token")}
}

// serve starts `lifeboat server` on the plane's data directory and
// address, and waits until it answers.
func (c *controlPlane) serve(args ...string) *proc {
	c.t.Helper()
	return c.serveEnv(nil, args...)
}

// serveEnv is serve with env added to the server's environment.
func (c *controlPlane) serveEnv(env map[string]string, args ...string) *proc {
	c.t.Helper()
	srv := startProcEnv(c.t, env, append([]string{"server", "--data", c.data, "--listen", c.addr, "--tick", "1s"}, args...)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return srv
		}
		if time.Now().After(deadline) || srv.exited() {
			c.t.Fatalf("server did not come up: %v\n%s", err, srv.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ok runs a command against the plane's server and fails the test unless
// it exits 0.
func (c *controlPlane) ok(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := inProcEnv(ctx, nil, append(args, "--server", c.url, "--token-file", c.tokenFile)...)
	if r.code != 0 {
		c.t.Fatalf("lifeboat %v: %s", args, r)
	}
	return r
}

// jobs lists a machine's jobs, newest first.
func (c *controlPlane) jobs(machine string) []map[string]any {
	c.t.Helper()
	var js []map[string]any
	if err := json.Unmarshal([]byte(c.ok("job", "list", "--json", "--machine", machine).stdout), &js); err != nil {
		c.t.Fatal(err)
	}
	return js
}

// waitJob waits until the job satisfies cond, and returns it.
func (c *controlPlane) waitJob(id, what string, timeout time.Duration, cond func(j map[string]any) bool) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r := inProcEnv(ctx, nil, "job", "list", "--json", "--server", c.url, "--token-file", c.tokenFile)
		cancel()
		var js []map[string]any
		json.Unmarshal([]byte(r.stdout), &js)
		for _, j := range js {
			if j["id"] == id && cond(j) {
				return j
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("job %s: not %s after %v: %s", id, what, timeout, r.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logs returns a job's log lines.
func (c *controlPlane) logs(id string) string {
	c.t.Helper()
	token, _ := os.ReadFile(c.tokenFile)
	req, _ := http.NewRequest("GET", c.url+"/v1/jobs/"+id+"/logs", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []struct{ Message string }
	json.NewDecoder(resp.Body).Decode(&lines)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Message + "\n")
	}
	return b.String()
}

// slowDisk is a 16 MiB disk of random data served by lifeboat's own NBD
// server in the test process, read at about 2 MB/s: a backup of it runs
// for seconds, long enough to be killed in the middle, and the export
// outlives the processes killed.
func slowDisk(t *testing.T, seed int) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(img, fill(16<<20, random, uint64(seed)), 0o600); err != nil {
		t.Fatal(err)
	}
	return testenv.ServeImage(t, img, func(fb *nbd.FileBackend) nbd.Backend { return slowReads{fb} })
}

// slowReads delays each read as a 2 MB/s disk would.
type slowReads struct{ *nbd.FileBackend }

func (s slowReads) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(len(p)) * time.Second / (2 << 20))
	return s.FileBackend.ReadAt(p, off)
}

// waitPacks waits until the vault holds at least n packs: a backup is
// under way and writing.
func waitPacks(t *testing.T, vaultDir string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(packFiles(t, vaultDir)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no backup writing into %s after %v", vaultDir, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func state(s string) func(map[string]any) bool {
	return func(j map[string]any) bool { return j["state"] == s }
}

// waitEnded waits until a job is neither queued nor running.
func (c *controlPlane) waitEnded(id string) map[string]any {
	c.t.Helper()
	return c.waitJob(id, "ended", 90*time.Second, func(j map[string]any) bool { return j["state"] != "running" && j["state"] != "queued" })
}

// kill -9 of the server while its built-in agent runs a backup: the
// restarted server's agent ends the dead run as interrupted and runs the
// job again at once; the vault stays consistent.
func TestServerKill9MidJob(t *testing.T) {
	work := t.TempDir()
	vaultDir := filepath.Join(work, "vault")
	initVault(t, vaultDir, 1<<20)
	disk := slowDisk(t, 11)

	c := newControlPlane(t)
	srv := c.serve()
	c.ok("tier", "add", "gold", "--rpo", "1h")
	c.ok("policy", "add", "daily", "--cron", "@daily", "--vault", vaultDir)
	c.ok("machine", "add", "web1", "--disk", "root="+disk)
	c.ok("protect", "web1", "--policy", "daily", "--tier", "gold")
	c.ok("backup-now", "web1")
	id := c.jobs("web1")[0]["id"].(string)
	c.waitJob(id, "running", 30*time.Second, state("running"))
	waitPacks(t, vaultDir, 1, 30*time.Second)
	if !srv.kill() {
		t.Fatal("the server was not killed by SIGKILL")
	}
	before := len(packFiles(t, vaultDir))

	c.serve()
	j := c.waitEnded(id)
	if j["state"] != "succeeded" || j["attempt"] != float64(2) {
		t.Fatalf("the job interrupted by the server's death: %v", j)
	}
	if l := c.logs(id); !strings.Contains(l, "interrupted: agent") || !strings.Contains(l, "restarted") {
		t.Fatalf("the job's log does not say it was interrupted:\n%s", l)
	}
	if after := len(packFiles(t, vaultDir)); after < before {
		t.Fatalf("packs went from %d to %d", before, after)
	}
	mustRun(t, "--vault", vaultDir, "verify", "--read-data")
	if pts := listPoints(t, vaultDir); len(pts) != 1 {
		t.Fatalf("%d points after one interrupted and retried backup", len(pts))
	}
}

// kill -9 of an agent while it runs a backup, and its restart: the job
// ends as interrupted and is run again. Then kill -9 of the server while
// the agent runs one: the agent finishes it and reports it to the
// restarted server, with no second attempt. The vault stays consistent.
func TestAgentKill9MidJob(t *testing.T) {
	work := t.TempDir()
	vaultDir := filepath.Join(work, "vault")
	initVault(t, vaultDir, 1<<20)
	disk := slowDisk(t, 11)

	c := newControlPlane(t)
	srv := c.serve()
	secret := strings.TrimSpace(c.ok("token", "add", "hv2", "--role", "agent").stdout)
	agentToken := filepath.Join(work, "hv2.token")
	os.WriteFile(agentToken, []byte(secret+"\n"), 0o600)
	agent := startProc(t, "agent", "--server", c.url, "--token-file", agentToken)
	c.ok("tier", "add", "gold", "--rpo", "1h")
	c.ok("policy", "add", "daily", "--cron", "@daily", "--vault", vaultDir)
	c.ok("machine", "add", "db1", "--agent", "hv2", "--disk", "root="+disk)
	c.ok("protect", "db1", "--policy", "daily", "--tier", "gold")

	c.ok("backup-now", "db1")
	id := c.jobs("db1")[0]["id"].(string)
	c.waitJob(id, "running", 30*time.Second, state("running"))
	waitPacks(t, vaultDir, 1, 30*time.Second)
	if !agent.kill() {
		t.Fatal("the agent was not killed by SIGKILL")
	}
	startProc(t, "agent", "--server", c.url, "--token-file", agentToken)
	j := c.waitEnded(id)
	if j["state"] != "succeeded" || j["attempt"] != float64(2) || j["agent"] != "hv2" {
		t.Fatalf("the job interrupted by its agent's death: %v\n%s", j, c.logs(id))
	}
	if l := c.logs(id); !strings.Contains(l, "interrupted: agent hv2 restarted") {
		t.Fatalf("the job's log does not say it was interrupted:\n%s", l)
	}
	mustRun(t, "--vault", vaultDir, "verify", "--read-data")

	// The server dies while the agent backs up (another machine, whose
	// data is new to the vault); the agent goes on, and reports to the
	// server started again.
	c.ok("machine", "add", "db2", "--agent", "hv2", "--disk", "root="+slowDisk(t, 12))
	c.ok("protect", "db2", "--policy", "daily", "--tier", "gold")
	c.ok("backup-now", "db2")
	id2 := c.jobs("db2")[0]["id"].(string)
	c.waitJob(id2, "running", 30*time.Second, state("running"))
	packs := len(packFiles(t, vaultDir))
	waitPacks(t, vaultDir, packs+1, 30*time.Second)
	if !srv.kill() {
		t.Fatal("the server was not killed by SIGKILL")
	}
	c.serve()
	j = c.waitEnded(id2)
	if j["state"] != "succeeded" || j["attempt"] != float64(1) {
		t.Fatalf("the job its agent ran through the server's death: %v", j)
	}
	mustRun(t, "--vault", vaultDir, "verify", "--read-data")
	if pts := listPoints(t, vaultDir); len(pts) != 2 {
		t.Fatalf("%d points after two backups", len(pts))
	}
}
