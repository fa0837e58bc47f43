package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `lifeboat machine discover` asks an agent for the QEMU machines of its
// host: a real qemu-storage-daemon is found with its QMP socket and disk,
// by the built-in agent and by a remote one; added with --qmp on the
// remote agent, it is backed up live through the server.
func TestMachineDiscover(t *testing.T) {
	dir, qmpSock, _ := storageDaemon(t)
	work := t.TempDir()
	vaultDir := filepath.Join(work, "vault")
	initVault(t, vaultDir, 0)

	c := newControlPlane(t)
	c.serve()
	secret := strings.TrimSpace(c.ok("token", "add", "hv2", "--role", "agent").stdout)
	agentToken := filepath.Join(work, "hv2.token")
	os.WriteFile(agentToken, []byte(secret+"\n"), 0o600)
	startProc(t, "agent", "--server", c.url, "--token-file", agentToken)

	for _, agent := range []string{"", "hv2"} {
		args := []string{"machine", "discover", "--under", dir, "--json"}
		if agent != "" {
			args = append(args, "--agent", agent)
		}
		var found []map[string]any
		out := c.ok(args...).stdout
		if err := json.Unmarshal([]byte(out), &found); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if len(found) != 1 || found[0]["qmp"] != qmpSock || found[0]["program"] != "qemu-storage-daemon" || found[0]["error"] != nil {
			t.Fatalf("discover by agent %q: %s", agent, out)
		}
		if disks, _ := found[0]["disks"].([]any); len(disks) != 1 || disks[0] != "d0" {
			t.Fatalf("discover by agent %q: disks %v", agent, found[0]["disks"])
		}
	}
	if r := c.ok("machine", "discover", "--under", dir); !strings.Contains(r.stdout, qmpSock) || !strings.Contains(r.stdout, "QMP") {
		t.Fatalf("discover table:\n%s", r.stdout)
	}

	c.ok("tier", "add", "gold", "--rpo", "1h")
	c.ok("policy", "add", "daily", "--cron", "@daily", "--vault", vaultDir)
	c.ok("machine", "add", "qsd1", "--qmp", qmpSock, "--agent", "hv2")
	c.ok("protect", "qsd1", "--policy", "daily", "--tier", "gold")
	if r := c.ok("backup-now", "qsd1", "--wait"); !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("backup of the discovered machine: %s", r)
	}
	mustRun(t, "--vault", vaultDir, "verify", "--read-data")
}
