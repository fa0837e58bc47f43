package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/location"
	"lifeboat/internal/vault"
)

// A server is lost — its data directory deleted but for the vault — and
// rebuilt with --recover-from: tiers, policies, machines and their
// protection come back from the catalog snapshot in the vault, with the
// job history and its logs; the points
// from the vault itself, agents' tokens still work, the schedule runs and
// a backup through the rebuilt server succeeds.
func TestServerRecoverFromVault(t *testing.T) {
	work := t.TempDir()
	img := filepath.Join(work, "web1.img")
	makeExt4(t, img, 16, []fileSpec{{path: "/srv/index.html", size: 1 << 20, kind: 1, seed: 3}})

	c := newControlPlane(t)
	srv := c.serve()
	c.ok("tier", "add", "gold", "--rpo", "1h", "--rto", "15m")
	c.ok("policy", "add", "daily", "--cron", "@daily", "--stagger", "10m", "--keep-last", "3")
	c.ok("machine", "add", "web1", "--disk", "root="+img)
	c.ok("protect", "web1", "--policy", "daily", "--tier", "gold")
	agentSecret := strings.TrimSpace(c.ok("token", "add", "hv2", "--role", "agent").stdout)
	if r := c.ok("backup-now", "web1", "--wait"); !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("backup-now: %s", r)
	}
	var before []map[string]any
	json.Unmarshal([]byte(c.ok("machine", "list", "--json").stdout), &before)
	// Its history: the backup job and the forget job of its retention.
	jobsBefore := c.jobs("web1")
	var jobIDs []string
	jobID := ""
	for _, j := range jobsBefore {
		if j["state"] != "succeeded" {
			t.Fatalf("web1's jobs: %v", jobsBefore)
		}
		jobIDs = append(jobIDs, j["id"].(string))
		if j["kind"] == "backup" {
			jobID = j["id"].(string)
		}
	}
	logBefore := c.logs(jobID)
	if jobID == "" || !strings.Contains(logBefore, "committed") {
		t.Fatalf("web1's backup job %q, its log: %s", jobID, logBefore)
	}

	// The snapshot in the vault holds the machine under its policy.
	vaultDir := filepath.Join(c.data, "vault")
	pass, err := os.ReadFile(filepath.Join(c.data, "vault.passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.TrimSpace(string(pass))
	ctx := context.Background()
	v, err := location.Open(ctx, vaultDir, func(string) string { return "" }, []byte(pw), vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := v.LatestCatalog(ctx)
		if err == nil && strings.Contains(string(s.Doc), `"policy":"daily"`) && strings.Contains(string(s.Doc), `"hv2"`) &&
			!slices.ContainsFunc(jobIDs, func(id string) bool { return !strings.Contains(string(s.Doc), id) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no catalog snapshot with web1 protected, hv2's token and jobs %v in the vault: %v %s", jobIDs, err, s.Doc)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The server is lost: killed, its data directory gone but the vault.
	srv.kill()
	entries, _ := os.ReadDir(c.data)
	for _, e := range entries {
		if e.Name() != "vault" {
			os.RemoveAll(filepath.Join(c.data, e.Name()))
		}
	}
	os.Remove(c.tokenFile)
	// Recovering into a catalog that is not empty is refused elsewhere
	// (catalog tests); here the passphrase kept apart unlocks the vault.
	passFile := filepath.Join(work, "kept-elsewhere.pass")
	os.WriteFile(passFile, []byte(pw+"\n"), 0o600)
	rec := c.serveEnv(map[string]string{"LIFEBOAT_PASSWORD_FILE": passFile}, "--recover-from", vaultDir)
	var history int
	if i := strings.Index(rec.stdout.String(), " jobs of history"); i > 0 {
		fmt.Sscan(rec.stdout.String()[strings.LastIndex(rec.stdout.String()[:i], " ")+1:i], &history)
	}
	if !strings.Contains(rec.stdout.String(), "recovered from") || history < len(jobIDs) {
		t.Fatalf("the recovering server said: %s", rec.stdout.String())
	}
	// The job history came back, with the job's log.
	if after := c.jobs("web1"); !reflect.DeepEqual(after, jobsBefore) {
		t.Fatalf("web1's jobs after recovery:\n%v\nbefore:\n%v", after, jobsBefore)
	}
	if got := c.logs(jobID); got != logBefore {
		t.Fatalf("job %s's log after recovery:\n%s\nbefore:\n%s", jobID, got, logBefore)
	}

	var after []map[string]any
	json.Unmarshal([]byte(c.ok("machine", "list", "--json").stdout), &after)
	if len(after) != 1 || after[0]["name"] != "web1" || after[0]["tier"] != "gold" || after[0]["policy"] != "daily" ||
		after[0]["rpo_state"] != "green" || after[0]["last_point"] != before[0]["last_point"] || after[0]["next_run"] != before[0]["next_run"] {
		t.Fatalf("machines after recovery:\n%v\nbefore:\n%v", after, before)
	}
	var points []map[string]any
	json.Unmarshal([]byte(c.ok("points", "--machine", "web1", "--json").stdout), &points)
	if len(points) != 1 {
		t.Fatalf("points after recovery: %v", points)
	}
	if r := c.ok("policy", "list", "--json"); !strings.Contains(r.stdout, `"last": 3`) || !strings.Contains(r.stdout, "@daily") {
		t.Fatalf("policies after recovery: %s", r.stdout)
	}
	if r := c.ok("tier", "list", "--json"); !strings.Contains(r.stdout, "gold") {
		t.Fatalf("tiers after recovery: %s", r.stdout)
	}
	// The agent's token still works.
	req, _ := http.NewRequest("POST", c.url+"/v1/agent/heartbeat", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+agentSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("hv2's token after recovery: %s", resp.Status)
	}
	// The rebuilt server backs up into the same vault.
	if r := c.ok("backup-now", "web1", "--wait"); !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("backup-now after recovery: %s", r)
	}
	json.Unmarshal([]byte(c.ok("points", "--machine", "web1", "--json").stdout), &points)
	if len(points) != 2 {
		t.Fatalf("points after a backup by the recovered server: %v", points)
	}
	mustRun(t, "--vault", vaultDir, "--password-file", passFile, "verify", "--read-data")
}
