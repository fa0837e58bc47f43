package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// --cache-dir, LIFEBOAT_CACHE_DIR and "off" choose where backup and
// restore keep the vault's index cache (docs/indexcache.md).
func TestIndexCacheDirectory(t *testing.T) {
	dir := t.TempDir()
	vaultDir := filepath.Join(dir, "vault")
	initVault(t, vaultDir, 0)
	disk := filepath.Join(dir, "disk.raw")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	segments := func(root string) int {
		m, _ := filepath.Glob(filepath.Join(root, "*", "*.seg"))
		return len(m)
	}
	for _, c := range []struct {
		name  string
		env   map[string]string
		flags []string
		where string // where segments must appear, "" for nowhere
	}{
		{"flag", nil, []string{"--cache-dir", filepath.Join(dir, "flag")}, filepath.Join(dir, "flag")},
		{"env", map[string]string{"LIFEBOAT_CACHE_DIR": filepath.Join(dir, "env")}, nil, filepath.Join(dir, "env")},
		{"xdg", map[string]string{"XDG_CACHE_HOME": filepath.Join(dir, "xdg")}, nil, filepath.Join(dir, "xdg", "lifeboat")},
		{"off", map[string]string{"XDG_CACHE_HOME": filepath.Join(dir, "off")}, []string{"--cache-dir", "off"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"LIFEBOAT_PASSWORD": testPassphrase}
			for k, v := range c.env {
				env[k] = v
			}
			args := append([]string{"--vault", vaultDir, "-q"}, c.flags...)
			if r := inProcEnv(ctx, env, append(args, "backup", "--machine", "m", "--disk", "disk0="+disk)...); r.code != 0 {
				t.Fatal(r)
			}
			out := filepath.Join(dir, c.name+".raw")
			if r := inProcEnv(ctx, env, append(args, "restore", "--machine", "m", "latest", "--disk", "disk0", "--to-file", out)...); r.code != 0 {
				t.Fatal(r)
			}
			if got, _ := os.ReadFile(out); string(got) != string(data) {
				t.Fatal("restored disk differs")
			}
			if c.where == "" {
				if segments(filepath.Join(dir, "off", "lifeboat")) != 0 {
					t.Fatal("--cache-dir off wrote a cache")
				}
				return
			}
			if segments(c.where) == 0 {
				t.Fatalf("no index cache under %s", c.where)
			}
		})
	}
}
