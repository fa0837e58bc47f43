// Package e2e runs the lifeboat commands in-process, end to end, against a
// directory vault and a real S3 server (versitygw), on real ext4 images.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/cli"
	"lifeboat/internal/crypto"
	"lifeboat/internal/vault"
)

type run struct {
	t   *testing.T
	env map[string]string
}

func (r *run) lifeboat(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = cli.Main(context.Background(), args, cli.Env{
		Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string {
			if v, ok := r.env[k]; ok || k != "LIFEBOAT_STATE_DIR" {
				return v
			}
			return os.Getenv(k)
		},
		KDF: &vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}},
	})
	return out.String(), errb.String(), code
}

func (r *run) ok(args ...string) string {
	r.t.Helper()
	out, errs, code := r.lifeboat(args...)
	if code != 0 {
		r.t.Fatalf("lifeboat %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

// ext4Image makes a 64 MiB ext4 image holding real files.
func ext4Image(t *testing.T, path string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	src := t.TempDir()
	rnd := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(rnd)
	os.WriteFile(filepath.Join(src, "random.bin"), rnd, 0o644)
	os.WriteFile(filepath.Join(src, "text.txt"), bytes.Repeat([]byte("the quick brown fox\n"), 100000), 0o644)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(path, 64<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
}

func scribble(t *testing.T, path string, seed int64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewSource(seed))
	for i := 0; i < 10; i++ {
		b := make([]byte, 64<<10)
		r.Read(b)
		f.WriteAt(b, int64(r.Intn(1000))*64<<10)
	}
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

// scenario is the user story of issue 2 on one vault URL.
func scenario(t *testing.T, r *run) {
	dir := t.TempDir()
	root, data := filepath.Join(dir, "root.raw"), filepath.Join(dir, "data.raw")
	ext4Image(t, root)
	ext4Image(t, data)
	scribble(t, data, 7)
	def := filepath.Join(dir, "web1.json")
	os.WriteFile(def, []byte(`{"schema":"lifeboat.machine/v1","name":"web1","cpus":2,"memory_mib":2048,"firmware":"uefi",
 "disks":[{"name":"root","bus":"virtio","format":"raw","boot_order":1},{"name":"data","bus":"virtio","format":"raw"}],
 "nics":[{"model":"virtio","mac":"52:54:00:12:34:56","network":"lan"}]}`), 0o644)

	r.ok("vault", "init", "--chunk-size", "128K")
	id1 := strings.TrimSpace(r.ok("backup", "--machine", "web1", "--disk", root, "--disk", data, "--definition", def))
	keep1 := filepath.Join(dir, "root.p1")
	os.WriteFile(keep1, must(os.ReadFile(root)), 0o644)
	scribble(t, root, 8)

	var bj struct {
		ID    string `json:"id"`
		Disks []struct {
			Name  string `json:"name"`
			Stats struct {
				NewChunks int64 `json:"new_chunks"`
			} `json:"stats"`
		} `json:"disks"`
	}
	if err := json.Unmarshal([]byte(r.ok("backup", "--json", "--machine", "web1", "--disk", root, "--disk", data, "--definition", def)), &bj); err != nil {
		t.Fatal(err)
	}
	for _, d := range bj.Disks {
		switch {
		case d.Name == "data" && d.Stats.NewChunks != 0:
			t.Fatalf("unchanged disk stored %d chunks", d.Stats.NewChunks)
		case d.Name == "root" && (d.Stats.NewChunks == 0 || d.Stats.NewChunks > 20):
			t.Fatalf("incremental of 10 x 64K writes stored %d chunks", d.Stats.NewChunks)
		}
	}

	var points []struct {
		ID      string `json:"id"`
		Machine string `json:"machine"`
	}
	json.Unmarshal([]byte(r.ok("points", "--json", "--machine", "web1")), &points)
	if len(points) != 2 || points[0].ID != id1 || points[1].ID != bj.ID {
		t.Fatalf("points: %+v", points)
	}

	out := filepath.Join(dir, "out")
	r.ok("restore", "--machine", "web1", "latest", "--to", out)
	sameFile(t, root, filepath.Join(out, "root.raw"))
	sameFile(t, data, filepath.Join(out, "data.raw"))
	var restored map[string]any
	json.Unmarshal(must(os.ReadFile(filepath.Join(out, "web1-dr.json"))), &restored)
	if restored["name"] != "web1-dr" || restored["cpus"] != float64(2) {
		t.Fatalf("restored definition: %v", restored)
	}
	r.ok("restore", "--machine", "web1", id1[:8], "--disk", "root", "--to-file", filepath.Join(dir, "root.old"))
	sameFile(t, keep1, filepath.Join(dir, "root.old"))
	// In place: revert root to point 1.
	r.ok("restore", "--machine", "web1", id1[:8], "--disk", "root", "--in-place")
	sameFile(t, keep1, root)

	r.ok("verify", "--read-data")
	// Passphrase change: the new one opens, the old one no longer does.
	r.env["LIFEBOAT_NEW_PASSWORD"] = "new e2e passphrase"
	r.ok("vault", "passwd")
	if _, errs, code := r.lifeboat("points"); code != cli.ExitPassphrase {
		t.Fatalf("old passphrase after passwd: exit %d %s", code, errs)
	}
	r.env["LIFEBOAT_PASSWORD"] = "new e2e passphrase"
	r.ok("forget", "--machine", "web1", "--keep-last", "1", "--prune")
	r.ok("verify", "--read-data")
	json.Unmarshal([]byte(r.ok("points", "--json")), &points)
	if len(points) != 1 || points[0].ID != bj.ID {
		t.Fatalf("after forget: %+v", points)
	}
	out2 := filepath.Join(dir, "out2")
	r.ok("restore", "--machine", "web1", "latest", "--to", out2)
	sameFile(t, filepath.Join(out, "data.raw"), filepath.Join(out2, "data.raw"))
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestDirectoryVault(t *testing.T) {
	r := &run{t: t, env: map[string]string{"LIFEBOAT_PASSWORD": "e2e-passphrase", "LIFEBOAT_VAULT": filepath.Join(t.TempDir(), "vault")}}
	scenario(t, r)
}

func TestS3Vault(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config
	r := &run{t: t, env: map[string]string{
		"LIFEBOAT_PASSWORD":     "e2e-passphrase",
		"LIFEBOAT_VAULT":        "s3://" + cfg.Bucket + "/vaults/site-a",
		"LIFEBOAT_S3_ENDPOINT":  "http://" + srv.Addr(),
		"AWS_ACCESS_KEY_ID":     cfg.AccessKey,
		"AWS_SECRET_ACCESS_KEY": cfg.SecretKey,
	}}
	scenario(t, r)
}
