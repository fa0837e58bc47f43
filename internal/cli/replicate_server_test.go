package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A replication enabled through the server (replicate enable --server
// --agent) is picked up by that agent — here the server's built-in agent
// (server --replicate), which runs the code lifeboat agent --replicate
// runs: the disk replicates, the server lists its status; disabled
// through the server, the agent stops running it (the replica stays at
// the target).
func TestServerEnablesReplication(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	// The server's built-in agent, named hv2, replicates this host's machines.
	url, adminToken, _ := startServerEnv(t, s.env, "--replicate", "--name", "hv2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	remote := []string{"--server", url, "--token-file", adminToken}
	enable := append([]string{"replicate", "enable", "--machine", "qsd", "--target", "dr", "--every", "200ms"}, remote...)
	if r := inProcEnv(ctx, nil, append(enable, "--qmp", sock)...); r.code != 2 || !strings.Contains(r.stderr, "--agent") {
		t.Fatalf("enable --server without --agent: %s", r)
	}
	if r := inProcEnv(ctx, nil, append(enable, "--agent", "hv2", "--qmp", "qsd.qmp")...); r.code == 0 || !strings.Contains(r.stderr, "absolute") {
		t.Fatalf("enable --server with a relative QMP path: %s", r)
	}
	if r := inProcEnv(ctx, nil, append(enable, "--agent", "hv2", "--qmp", sock)...); r.code != 0 {
		t.Fatalf("enable --server: %s", r)
	}
	writeAt(t, fuse, 1<<20, bytes.Repeat([]byte("served"), 40000))
	s.cutAfter("qsd", time.Now(), 45*time.Second)
	s.checkReplica("qsd", "latest", readFile(t, fuse), "the replica of the replication the server enabled differs from the source")
	var last result
	listed := func() []map[string]any {
		last = inProcEnv(ctx, nil, append([]string{"replicate", "status", "--json"}, remote...)...)
		var out []map[string]any
		if last.code != 0 || json.Unmarshal([]byte(last.stdout), &out) != nil {
			return nil
		}
		return out
	}
	waitFor(t, 30*time.Second, "the server to list qsd as protected", func() bool {
		l := listed()
		return len(l) == 1 && l[0]["machine"] == "qsd" && l[0]["agent"] == "hv2" && l[0]["state"] == "protected"
	})

	if r := inProcEnv(ctx, nil, append([]string{"replicate", "disable", "--machine", "qsd"}, remote...)...); r.code != 0 {
		t.Fatalf("disable --server: %s", r)
	}
	waitFor(t, 30*time.Second, "the agent to stop replicating qsd", func() bool {
		l := listed()
		return last.code == 0 && len(l) == 0
	})
	if r := s.run("replicate", "status", "--machine", "qsd"); r.code == 0 {
		t.Fatalf("qsd still enabled on the agent's host: %s", r)
	}
	if r := s.run("replicate", "points", "--machine", "qsd", "--site", "dr"); r.code != 0 {
		t.Fatalf("the replica was not kept at the target: %s", r)
	}
	if r := inProcEnv(ctx, nil, append([]string{"replicate", "disable", "--machine", "qsd"}, remote...)...); r.code == 0 {
		t.Fatalf("disable --server twice: %s", r)
	}
}
