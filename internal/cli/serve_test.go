package cli_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/cli"
)

// TestVaultServeAppendOnly: `vault serve --append-only` serves a directory
// vault to hosts that back up into it (lifeboat+http://) — backups, a copy
// into it and restores work, and delete nothing; forget and prune through
// the endpoint are refused before changing anything, naming the
// credentials they need; on the vault's own directory they run, and
// remove the markers the append-only runs left.
func TestVaultServeAppendOnly(t *testing.T) {
	ctx := context.Background()
	src, dst := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	initVault(t, src, 1<<20)
	if r := inProc(t, "--vault", dst, "-q", "vault", "init", "--copy-of", src); r.code != 0 {
		t.Fatalf("init --copy-of: %s", r)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := inProc(t, "vault", "serve", "--dir", dst, "--token-file", tokenFile, "--listen", "0.0.0.0:0")
	expect(t, "serve in clear beyond loopback", r, cli.ExitUsage, "--insecure-listen")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sctx, stop := context.WithCancel(ctx)
	served := make(chan result, 1)
	go func() {
		served <- inProcEnv(sctx, nil, "vault", "serve", "--dir", dst, "--append-only", "--listen", addr, "--token-file", tokenFile)
	}()
	defer func() {
		stop()
		if r := <-served; r.code != 0 || !strings.Contains(r.stdout, "append-only") {
			t.Errorf("vault serve: %s", r)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault serve does not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	url := "lifeboat+http://" + addr
	env := map[string]string{"LIFEBOAT_PASSWORD": testPassphrase, "LIFEBOAT_VAULT_TOKEN_FILE": tokenFile}
	store := dirStore(t, dst)
	before := storeNames(t, store)
	img, first, ids := twoBackups(t, env, url)
	if r := inProc(t, "--vault", src, "-q", "backup", "--machine", "db1", "--disk", "vda="+img); r.code != 0 {
		t.Fatalf("backup into the source: %s", r)
	}
	if r := inProcEnv(ctx, env, "-q", "vault", "copy", "--from", src, "--to", url); r.code != 0 {
		t.Fatalf("copy into the append-only endpoint: %s", r)
	}
	out := filepath.Join(t.TempDir(), "vda.raw")
	if r := inProcEnv(ctx, env, "--vault", url, "restore", "--machine", "web1", ids[0], "--disk", "vda", "--to-file", out); r.code != 0 {
		t.Fatalf("restore through the append-only endpoint: %s", r)
	}
	sameContent(t, first, out)
	after := storeNames(t, store)
	for _, name := range before {
		if _, ok := slices.BinarySearch(after, name); !ok {
			t.Errorf("%s was deleted through the append-only endpoint", name)
		}
	}
	if r := inProcEnv(ctx, env, "--vault", url, "points"); r.code != 0 || !strings.Contains(r.stdout, "db1") || !strings.Contains(r.stdout, ids[1][:8]) {
		t.Errorf("points through the endpoint: %s", r)
	}

	r = inProcEnv(ctx, env, "--vault", url, "forget", "--keep-last", "1")
	expect(t, "forget through the append-only endpoint", r, cli.ExitStorage, "maintenance credentials", "append-only", "nothing was changed")
	r = inProcEnv(ctx, env, "--vault", url, "prune")
	expect(t, "prune through the append-only endpoint", r, cli.ExitStorage, "maintenance credentials")
	if got := storeNames(t, store); !slices.Equal(got, after) {
		t.Errorf("refused forget and prune changed the vault:\nbefore %q\nafter  %q", after, got)
	}

	for _, args := range [][]string{{"forget", "--keep-last", "1"}, {"prune"}, {"verify", "--read-data"}} {
		if r := inProc(t, append([]string{"--vault", dst, "-q"}, args...)...); r.code != 0 {
			t.Fatalf("%s on the vault's directory: %s", args[0], r)
		}
	}
	for _, name := range storeNames(t, store) {
		if strings.HasPrefix(name, "sessions/") {
			t.Errorf("prune left session marker %s", name)
		}
	}
}
