package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob/s3test"
)

// Vault credentials kept by the server: an S3 vault (versitygw) whose
// passphrase and keys neither the server's process nor the agent's has is
// registered with `vault add`; the built-in agent and a remote agent back
// up into it with the credentials received per job. The secrets are in
// DATA/secrets.json (0600) only: not in the API's answers, job specs,
// job logs or either process's log.
func TestServerKeepsVaultCredentials(t *testing.T) {
	s3 := s3test.Start(t)
	cfg := s3.Config
	vaultURL := "s3://" + cfg.Bucket + "/vaults/kept"
	const vaultPass = "s3 vault passphrase 7f3a"
	s3env := map[string]string{"LIFEBOAT_PASSWORD": vaultPass, "LIFEBOAT_S3_ENDPOINT": "http://" + s3.Addr(),
		"AWS_ACCESS_KEY_ID": cfg.AccessKey, "AWS_SECRET_ACCESS_KEY": cfg.SecretKey}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r := inProcEnv(ctx, s3env, "--vault", vaultURL, "vault", "init"); r.code != 0 {
		t.Fatalf("vault init: %s", r)
	}

	work := t.TempDir()
	passFile := filepath.Join(work, "vault.pass")
	os.WriteFile(passFile, []byte(vaultPass+"\n"), 0o600)
	keyFile := filepath.Join(work, "s3.keys")
	os.WriteFile(keyFile, []byte("# versitygw\nAWS_ACCESS_KEY_ID="+cfg.AccessKey+"\nAWS_SECRET_ACCESS_KEY="+cfg.SecretKey+
		"\nLIFEBOAT_S3_ENDPOINT=http://"+s3.Addr()+"\n"), 0o600)
	img := filepath.Join(work, "web1.img")
	makeExt4(t, img, 16, []fileSpec{{path: "/srv/data", size: 1 << 20, kind: 1, seed: 5}})

	c := newControlPlane(t)
	srv := c.serve()
	secret := strings.TrimSpace(c.ok("token", "add", "hv2", "--role", "agent").stdout)
	agentToken := filepath.Join(work, "hv2.token")
	os.WriteFile(agentToken, []byte(secret+"\n"), 0o600)
	agent := startProc(t, "agent", "--server", c.url, "--token-file", agentToken)

	if r := c.ok("vault", "add", "offsite", "--url", vaultURL, "--password-file", passFile, "--s3-key-file", keyFile); !strings.Contains(r.stdout, "registered") {
		t.Fatalf("vault add: %s", r)
	}
	c.ok("tier", "add", "gold", "--rpo", "1h")
	c.ok("policy", "add", "daily", "--cron", "@daily", "--vault", "offsite")
	c.ok("machine", "add", "local1", "--disk", "root="+img)
	c.ok("machine", "add", "remote1", "--agent", "hv2", "--disk", "root="+img)
	for _, m := range []string{"local1", "remote1"} {
		c.ok("protect", m, "--policy", "daily", "--tier", "gold")
		if r := c.ok("backup-now", m, "--wait"); !strings.Contains(r.stdout, "succeeded") {
			t.Fatalf("backup-now %s: %s", m, r)
		}
	}
	r := inProcEnv(ctx, s3env, "--vault", vaultURL, "points", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"machine": "local1"`) || !strings.Contains(r.stdout, `"machine": "remote1"`) {
		t.Fatalf("points in the S3 vault: %s", r)
	}

	fi, err := os.Stat(filepath.Join(c.data, "secrets.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file: %v %v", fi, err)
	}
	kept, _ := os.ReadFile(filepath.Join(c.data, "secrets.json"))
	if !strings.Contains(string(kept), vaultPass) || !strings.Contains(string(kept), cfg.SecretKey) {
		t.Fatalf("the secrets file does not hold the credentials")
	}
	var seen strings.Builder
	seen.WriteString(c.ok("vault", "list", "--json").stdout)
	for _, m := range []string{"local1", "remote1"} {
		for _, j := range c.jobs(m) {
			seen.WriteString(c.logs(j["id"].(string)))
		}
		seen.WriteString(c.ok("job", "list", "--json", "--machine", m).stdout)
	}
	seen.WriteString(srv.stderr.String())
	seen.WriteString(srv.stdout.String())
	seen.WriteString(agent.stderr.String())
	for _, s := range []string{vaultPass, cfg.SecretKey} {
		if strings.Contains(seen.String(), s) {
			t.Fatalf("a secret shows in the API's answers, job logs or process logs")
		}
	}
	if !strings.Contains(seen.String(), "offsite") {
		t.Fatalf("vault list shows no vault: %s", seen.String())
	}
}
