package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/cli"
	"lifeboat/internal/clock"
	"lifeboat/internal/vault"
)

// TestSoftDelete: forget soft-deletes; points --deleted lists the points
// with when they go; undelete brings one back and it restores; prune
// inside the window keeps their data (verify --read-data clean, restore
// byte-identical), and once the window has passed on the fake clock
// purges them and their data; a shorter window is refused without
// --force and, forced, applies only once the old one has passed. On a
// directory vault and on a real S3 server.
func TestSoftDelete(t *testing.T) {
	for _, kind := range []string{"dir", "s3"} {
		t.Run(kind, func(t *testing.T) {
			env := map[string]string{"LIFEBOAT_PASSWORD": testPassphrase}
			url := filepath.Join(t.TempDir(), "vault")
			var store blob.Store
			if kind == "s3" {
				srv := s3test.Start(t)
				cfg := srv.Config
				cfg.Prefix = "vault"
				env = s3Env(cfg)
				url = "s3://" + cfg.Bucket + "/vault"
				s, err := blob.NewS3(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				store = s
			}
			// The store dates objects by the real clock: the fake one
			// starts there.
			clk := clock.NewFake(time.Now())
			lb := func(args ...string) result {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				return inProcClock(ctx, env, clk, append([]string{"--vault", url, "-q"}, args...)...)
			}
			ok := func(args ...string) result {
				t.Helper()
				r := lb(args...)
				if r.code != 0 {
					t.Fatalf("lifeboat %v: %s", args, r)
				}
				return r
			}
			ok("vault", "init")
			if store == nil {
				store = dirStore(t, url)
			}

			// Three points, each with 2 MiB of its own.
			dir := t.TempDir()
			img := filepath.Join(dir, "vda.img")
			var ids []string
			var states [][]byte
			for i := range 3 {
				data := fill(4<<20, random, 7)
				copy(data[1<<20:], fill(2<<20, random, uint64(100+i)))
				if err := os.WriteFile(img, data, 0o600); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, parsePoint(t, ok("--json", "backup", "--machine", "web1", "--disk", "vda="+img)).ID)
				states = append(states, data)
				clk.Advance(time.Hour)
			}
			restores := func(i int) {
				t.Helper()
				to := filepath.Join(t.TempDir(), "r")
				ok("restore", "--machine", "web1", ids[i], "--to", to)
				if got := fileBytes(t, filepath.Join(to, "vda.raw")); !bytes.Equal(got, states[i]) {
					t.Fatalf("point %d restored different bytes", i)
				}
			}
			listed := func(args ...string) []string {
				t.Helper()
				var ps []struct {
					ID      string    `json:"id"`
					Deleted time.Time `json:"deleted"`
					PurgeAt time.Time `json:"purge_at"`
				}
				if err := json.Unmarshal([]byte(ok(append([]string{"--json", "points"}, args...)...).stdout), &ps); err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, p := range ps {
					out = append(out, p.ID)
					if len(args) > 0 && (p.PurgeAt.Sub(p.Deleted) != 14*24*time.Hour) {
						t.Errorf("point %s deleted %v, purged after %v: want 14 days later", p.ID, p.Deleted, p.PurgeAt)
					}
				}
				return out
			}

			r := ok("forget", "--keep-last", "1")
			if !strings.Contains(r.stdout, "undelete") {
				t.Errorf("forget does not say the points can be brought back: %s", r)
			}
			if got := listed(); len(got) != 1 || got[0] != ids[2] {
				t.Fatalf("points after forget: %v, want only %s", got, ids[2])
			}
			if got := listed("--deleted"); len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
				t.Fatalf("points --deleted: %v, want %v", got, ids[:2])
			}
			if r := lb("restore", "--machine", "web1", ids[0], "--to", t.TempDir()+"/x"); r.code != cli.ExitNotFound || !strings.Contains(r.stderr, "undelete") {
				t.Fatalf("restore of a soft-deleted point: %s (want exit %d)", r, cli.ExitNotFound)
			}

			// Inside the window prune keeps everything they need.
			clk.Advance(13 * 24 * time.Hour)
			var rep struct {
				Purged      int `json:"purged_points"`
				SoftDeleted int `json:"soft_deleted_points"`
				Deleted     int `json:"deleted_packs"`
			}
			json.Unmarshal([]byte(ok("--json", "prune").stdout), &rep)
			if rep.Purged != 0 || rep.SoftDeleted != 2 || rep.Deleted != 0 {
				t.Fatalf("prune inside the window: %+v, want nothing purged or deleted", rep)
			}
			ok("verify", "--read-data")
			ok("undelete", "--machine", "web1", ids[0][:8])
			if got := listed(); len(got) != 2 || got[0] != ids[0] {
				t.Fatalf("points after undelete: %v", got)
			}
			restores(0)
			if r := lb("undelete", "--machine", "web1", ids[0][:8]); r.code != cli.ExitNotFound {
				t.Fatalf("undelete of a point not deleted: %s", r)
			}

			// Past the window prune purges the points and their data.
			clk.Advance(2 * 24 * time.Hour)
			before := objectCount(t, store, "packs/")
			json.Unmarshal([]byte(ok("--json", "prune").stdout), &rep)
			if rep.Purged != 1 || rep.SoftDeleted != 0 || rep.Deleted == 0 {
				t.Fatalf("prune after the window: %+v, want point 1 purged with its data", rep)
			}
			if after := objectCount(t, store, "packs/"); after >= before {
				t.Errorf("packs: %d before the purge, %d after", before, after)
			}
			if got := listed("--deleted"); len(got) != 0 {
				t.Fatalf("points --deleted after the purge: %v", got)
			}
			if n := objectCount(t, store, "deleted/"); n != 0 {
				t.Errorf("%d tombstones left after the purge", n)
			}
			ok("verify", "--read-data")
			restores(0)
			restores(2)
			if r := lb("undelete", "--machine", "web1", ids[1][:8]); r.code != cli.ExitNotFound {
				t.Fatalf("undelete of a purged point: %s", r)
			}

			// The window: longer at once, shorter only with --force.
			ok("vault", "set", "--soft-delete", "30d")
			clk.Advance(time.Minute)
			r = lb("vault", "set", "--soft-delete", "1d")
			if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "--force") {
				t.Fatalf("shortening without --force: %s", r)
			}
			ok("vault", "set", "--soft-delete", "1d", "--force")
			var st struct {
				Window int64 `json:"soft_delete_seconds"`
				Set    int64 `json:"set_seconds"`
			}
			json.Unmarshal([]byte(ok("--json", "vault", "settings").stdout), &st)
			if st.Window != 30*86400 || st.Set != 86400 {
				t.Fatalf("settings after shortening: %+v, want 30d in force and 1d set", st)
			}
			// A point forgotten now keeps the 30 days it was promised.
			ok("forget", "--keep-last", "1")
			clk.Advance(29 * 24 * time.Hour)
			json.Unmarshal([]byte(ok("--json", "prune").stdout), &rep)
			if rep.Purged != 0 || rep.SoftDeleted != 1 {
				t.Fatalf("prune 29 days after a forget under a 30-day window shortened since: %+v", rep)
			}
			clk.Advance(2 * 24 * time.Hour)
			json.Unmarshal([]byte(ok("--json", "prune").stdout), &rep)
			if rep.Purged != 1 {
				t.Fatalf("prune 31 days after: %+v, want the point purged", rep)
			}
			json.Unmarshal([]byte(ok("--json", "vault", "settings").stdout), &st)
			if st.Window != 86400 {
				t.Fatalf("settings 31 days after shortening: %+v, want 1d in force", st)
			}
			ok("verify", "--read-data")
			restores(2)
		})
	}
}

// TestSoftDeleteOff: a vault made with --soft-delete 0, and one made
// before soft delete (no setting), delete at forget as before.
func TestSoftDeleteOff(t *testing.T) {
	for _, how := range []string{"init0", "old"} {
		t.Run(how, func(t *testing.T) {
			url := filepath.Join(t.TempDir(), "vault")
			if how == "old" {
				initVault(t, url, 0)
			} else if r := inProc(t, "--vault", url, "vault", "init", "--soft-delete", "0"); r.code != 0 || !strings.Contains(r.stdout, "soft delete off") {
				t.Fatalf("vault init --soft-delete 0: %s", r)
			}
			img := filepath.Join(t.TempDir(), "vda.img")
			for i := range 2 {
				os.WriteFile(img, fill(1<<20, random, uint64(i)), 0o600)
				if r := inProc(t, "--vault", url, "-q", "backup", "--machine", "web1", "--disk", "vda="+img); r.code != 0 {
					t.Fatal(r)
				}
			}
			if r := inProc(t, "--vault", url, "-q", "forget", "--keep-last", "1"); r.code != 0 {
				t.Fatal(r)
			}
			if n := len(objectFiles(t, url, "points")); n != 1 {
				t.Fatalf("%d point objects after forget with soft delete off, want 1", n)
			}
			if r := inProc(t, "--vault", url, "vault", "settings"); r.code != 0 || !strings.Contains(r.stdout, "soft delete: off") {
				t.Fatalf("vault settings: %s", r)
			}
		})
	}
}

// TestPassphraseRules: vault init and passwd refuse a passphrase under 12
// characters, naming the rule; a vault made with a shorter one before the
// rule still opens; a password file others can read is warned about.
func TestPassphraseRules(t *testing.T) {
	dir := t.TempDir()
	url := filepath.Join(dir, "vault")
	r := inProcPass(t, "short-pw", "--vault", url, "vault", "init")
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "at least 12") {
		t.Fatalf("vault init with an 8-character passphrase: %s", r)
	}
	if _, err := os.Stat(filepath.Join(url, "config")); err == nil {
		t.Fatal("a vault was created with the short passphrase")
	}

	// An old vault with a short passphrase opens.
	store := dirStore(t, mkdir(t, url))
	if _, err := vault.Init(context.Background(), store, []byte("pw"), vault.Options{KDF: cheapKDF}); err != nil {
		t.Fatal(err)
	}
	if r := inProcPass(t, "pw", "--vault", url, "points"); r.code != 0 {
		t.Fatalf("opening a vault whose passphrase predates the rule: %s", r)
	}
	ctx := context.Background()
	r = inProcEnv(ctx, map[string]string{"LIFEBOAT_PASSWORD": "pw", "LIFEBOAT_NEW_PASSWORD": "still-short"}, "--vault", url, "vault", "passwd")
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "at least 12") {
		t.Fatalf("passwd to an 11-character passphrase: %s", r)
	}

	// A password file: warned about when its group or everyone can read it.
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("pw\n"), 0o600)
	for _, c := range []struct {
		mode os.FileMode
		warn string
	}{{0o600, ""}, {0o640, "readable by its group"}, {0o644, "readable by every user"}} {
		if err := os.Chmod(pwFile, c.mode); err != nil {
			t.Fatal(err)
		}
		r := inProcEnv(ctx, map[string]string{"LIFEBOAT_PASSWORD_FILE": pwFile}, "--vault", url, "points")
		if r.code != 0 {
			t.Fatalf("mode %o: %s", c.mode, r)
		}
		if got := strings.Contains(r.stderr, "chmod 600"); got != (c.warn != "") || c.warn != "" && !strings.Contains(r.stderr, c.warn) {
			t.Errorf("password file mode %04o: stderr %q, want a warning %q", c.mode, r.stderr, c.warn)
		}
	}
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// objectCount counts the objects under prefix.
func objectCount(t *testing.T, s blob.Store, prefix string) int {
	t.Helper()
	n := 0
	if err := s.List(context.Background(), prefix, func(blob.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}
