package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A replication group of two storage daemons, written by one writer that
// numbers its writes with a shared counter — odd numbers to a's disk, even
// ones to b's, each write completed before the next — fails over to group
// cuts that always show both disks at one instant: the two counters differ
// by exactly one, never with one machine ahead.
func TestReplicateGroupFailover(t *testing.T) {
	_, sockA, fuseA := storageDaemon(t)
	_, sockB, fuseB := storageDaemon(t)
	s := newReplSite(t)
	s.enableGroup(t, map[string]string{"a": sockA, "b": sockB})

	files := make([]*os.File, 2)
	for i, p := range []string{fuseA, fuseB} {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	var n atomic.Int64
	stop, stopped := make(chan struct{}), make(chan error, 1)
	// Bursts of writes as fast as they complete for 100 ms, then 100 ms of
	// quiet: cuts taken back to back inside a burst, unchecked, would show
	// one disk many writes ahead of the other.
	go func() {
		for {
			for burst := time.Now(); time.Since(burst) < 100*time.Millisecond; {
				k := n.Load() + 1
				// Synced, so each write reaches its disk inside the burst,
				// not when the page cache of the FUSE file is flushed later.
				f := files[(k+1)%2]
				if _, err := f.WriteAt(fmt.Appendf(nil, "%-16d", k), 0); err != nil {
					stopped <- err
					return
				}
				if err := f.Sync(); err != nil {
					stopped <- err
					return
				}
				n.Store(k)
			}
			select {
			case <-stop:
				stopped <- nil
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	counter := func(path string) int64 {
		b := readFile(t, path)[:16]
		v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
		if err != nil && !bytes.Equal(b, make([]byte, 16)) {
			t.Fatalf("%s holds %q", path, b)
		}
		return v
	}
	waitFor(t, 10*time.Second, "the writer to write both disks", func() bool { return n.Load() >= 2 })
	started := time.Now()
	for round := range 6 {
		s.cutAfter("a", time.Now(), 30*time.Second)
		s.cutAfter("b", time.Now(), 30*time.Second)
		out := t.TempDir()
		r := s.run("--json", "failover", "--group", "g", "--disks-only", "--to", out)
		var gf groupFailoverJSON
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &gf) != nil || len(gf.Failovers) != 2 {
			t.Fatalf("failover --group: %s", r)
		}
		a, b := counter(filepath.Join(out, "a", "d0.raw")), counter(filepath.Join(out, "b", "d0.raw"))
		t.Logf("round %d: group point %s: a=%d b=%d (writer at %d)", round, gf.Point.Time.Format(time.RFC3339Nano), a, b, n.Load())
		if gf.Point.Time.After(started) && (a-b != 1 && b-a != 1) {
			t.Fatalf("group point %d shows a at %d and b at %d: not one instant", gf.Point.ID, a, b)
		}
	}
	close(stop)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	r := s.run("--json", "replicate", "points", "--group", "g")
	var gp struct {
		Members []string `json:"members"`
		Points  []struct {
			ID     uint64 `json:"id"`
			Latest bool   `json:"latest"`
		} `json:"points"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &gp) != nil || len(gp.Members) != 2 || len(gp.Points) == 0 || !gp.Points[len(gp.Points)-1].Latest {
		t.Fatalf("replicate points --group: %s", r)
	}
	if r := s.run("failover", "--group", "nosuch", "--site", "dr", "--disks-only", "--to", t.TempDir()); r.code != 8 {
		t.Fatalf("failover of a missing group: %s, want exit 8", r)
	}
}

// lifeboat agent --replicate runs the replication of this host's machines
// (the code replicate run runs): a machine enabled while the agent runs is
// picked up and replicated, and its replica equals the source.
func TestAgentReplicates(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	url, adminToken, _ := startServer(t, "--no-agent")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := inProcEnv(ctx, nil, "token", "add", "hv2", "--role", "agent", "--server", url, "--token-file", adminToken)
	if r.code != 0 {
		t.Fatalf("token add: %s", r)
	}
	agentToken := filepath.Join(t.TempDir(), "hv2.token")
	os.WriteFile(agentToken, []byte(strings.TrimSpace(r.stdout)+"\n"), 0o600)
	startProcEnv(t, s.env, "agent", "--server", url, "--token-file", agentToken, "--replicate")

	if r := s.run("replicate", "enable", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "200ms"); r.code != 0 {
		t.Fatalf("replicate enable: %s", r)
	}
	writeAt(t, fuse, 2<<20, bytes.Repeat([]byte("agent"), 50000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	s.checkReplica("qsd", "latest", readFile(t, fuse), "the agent's replica differs from the source")

	// The agent reports the replication to the server, which serves it to
	// replicate status --server (the same JSON, with the agent).
	var got struct {
		replStatus
		Machine  string    `json:"machine"`
		Agent    string    `json:"agent"`
		Reported time.Time `json:"reported"`
	}
	var last result
	waitFor(t, 30*time.Second, "the server to list qsd as protected", func() bool {
		last = inProcEnv(ctx, nil, "replicate", "status", "--server", url, "--token-file", adminToken, "--machine", "qsd", "--json")
		return last.code == 0 && json.Unmarshal([]byte(last.stdout), &got) == nil && got.State == "protected" && got.LastCut != nil
	})
	if got.Machine != "qsd" || got.Agent != "hv2" || got.LastSeq == 0 || got.Reported.IsZero() || got.LagSeconds <= 0 || got.LagSeconds > 60 {
		t.Fatalf("the server's status of qsd: %s", last)
	}
	if r := inProcEnv(ctx, nil, "replicate", "status", "--server", url, "--token-file", adminToken); r.code != 0 ||
		!strings.Contains(r.stdout, "AGENT") || !strings.Contains(r.stdout, "hv2") || !strings.Contains(r.stdout, "protected") {
		t.Fatalf("replicate status --server: %s", r)
	}
	if r := inProcEnv(ctx, nil, "replicate", "status", "--server", url, "--token-file", adminToken, "--machine", "nosuch"); r.code == 0 || !strings.Contains(r.stderr, "nosuch") {
		t.Fatalf("replicate status --server of an unknown machine: %s", r)
	}
}
