package cli_test

// Hostile storage (issue 10): objects planted or altered by someone with
// access to the vault's storage, or with the passphrase.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/chunk"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// hostileVault is a vault, on a directory or a real S3 server, with one
// point of machine web1 (disk vda) and the image it holds.
type hostileVault struct {
	store blob.Store
	url   string
	env   map[string]string
	img   string
	point string
}

func (h *hostileVault) run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return inProcEnv(ctx, h.env, append([]string{"--vault", h.url, "-q"}, args...)...)
}

func newHostileVault(t *testing.T, store blob.Store, url string, env map[string]string) *hostileVault {
	t.Helper()
	if _, err := vault.Init(context.Background(), store, []byte(testPassphrase), vault.Options{KDF: cheapKDF, PackSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	h := &hostileVault{store: store, url: url, env: env, img: filepath.Join(t.TempDir(), "vda.img")}
	if err := os.WriteFile(h.img, fill(3<<20, random, 7), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.run(t, "--json", "backup", "--machine", "web1", "--disk", "vda="+h.img)
	if r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	h.point = parsePoint(t, r).ID
	return h
}

func dirHostileVault(t *testing.T) *hostileVault {
	dir := filepath.Join(t.TempDir(), "vault")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return newHostileVault(t, dirStore(t, dir), dir, map[string]string{"LIFEBOAT_PASSWORD": testPassphrase})
}

// plantPoint stores p under the vault's own sealing, as an attacker with
// the passphrase (or a buggy writer) could: it authenticates, and it
// skips the checks recovery.Save makes.
func plantPoint(t *testing.T, v *vault.Vault, p *recovery.Point) string {
	t.Helper()
	p.Version = 1
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.SaveObject(context.Background(), vault.KindPoint, data)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// TestRestoreRefusesHostileNames: a point whose disk or machine name is
// not a name backup would accept ("../../x", a control character) is
// refused by restore, which writes nothing, and is not printed raw.
func TestRestoreRefusesHostileNames(t *testing.T) {
	h := dirHostileVault(t)
	ctx := context.Background()
	v := openVault(t, h.store)
	id, _ := chunk.ParseID(h.point)
	good, err := recovery.Load(ctx, v, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ machine, disk string }{
		{"web1", "../../x"},
		{"web1", "a/b"},
		{"web1", "vda\x1b[2J"},
		{"web1\x1b[31m", "vda"},
	} {
		p := *good
		p.Machine = tc.machine
		p.Disks = append([]recovery.Disk(nil), good.Disks...)
		p.Disks[0].Name = tc.disk
		p.Time = good.Time.Add(time.Hour) // the latest
		planted := plantPoint(t, v, &p)

		work := t.TempDir()
		to := filepath.Join(work, "a", "b", "out")
		for _, ref := range []string{planted[:12], "latest"} {
			r := h.run(t, "restore", "--machine", "web1", ref, "--to", to)
			if strings.ContainsRune(r.output(), 0x1b) {
				t.Errorf("restore %s of a point with machine %q disk %q printed a control character: %q", ref, tc.machine, tc.disk, r.output())
			}
			if ref == "latest" {
				// The planted point is skipped with a warning; the good one is restored.
				if r.code != 0 || !strings.Contains(r.stderr, planted) {
					t.Errorf("restore latest beside a planted point: want exit 0 and a warning naming points/%s, got %s", planted, r)
				}
				continue
			}
			if r.code == 0 || !strings.Contains(r.stderr, planted) {
				t.Errorf("restore of a point with machine %q disk %q: want a failure naming points/%s, got %s", tc.machine, tc.disk, planted, r)
			}
			var written []string
			filepath.Walk(work, func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() {
					written = append(written, p)
				}
				return nil
			})
			if len(written) > 0 {
				t.Errorf("restore of a point with disk %q wrote %v", tc.disk, written)
			}
		}
		os.RemoveAll(to)
		r := h.run(t, "points")
		if r.code != 0 || strings.ContainsRune(r.output(), 0x1b) || !strings.Contains(r.stdout, h.point[:12]) {
			t.Errorf("points beside a planted point (machine %q disk %q): %q", tc.machine, tc.disk, r)
		}
		h.store.Delete(ctx, vault.ObjectName(vault.KindPoint, mustID(t, planted)))
	}
}

func mustID(t *testing.T, s string) chunk.ID {
	t.Helper()
	id, err := chunk.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestRestoreDefinitionFile: the definition restore --to writes is a new
// file of mode 0600; one already there, or a symbolic link in its place,
// is refused before any image is written, and left as it was.
func TestRestoreDefinitionFile(t *testing.T) {
	h := dirHostileVault(t)
	work := t.TempDir()

	to := filepath.Join(work, "ok")
	if r := h.run(t, "restore", "--machine", "web1", "latest", "--to", to); r.code != 0 {
		t.Fatalf("restore: %s", r)
	}
	sameContent(t, h.img, filepath.Join(to, "vda.raw"))
	for _, name := range []string{"web1-dr.json", "vda.raw"} {
		st, err := os.Stat(filepath.Join(to, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}

	victim := filepath.Join(work, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for what, plant := range map[string]func(path string) error{
		"existing file": func(path string) error { return os.WriteFile(path, []byte("precious\n"), 0o644) },
		"symlink":       func(path string) error { return os.Symlink(victim, path) },
		"dangling link": func(path string) error { return os.Symlink(filepath.Join(work, "nowhere"), path) },
	} {
		to := filepath.Join(work, strings.ReplaceAll(what, " ", "-"))
		if err := os.MkdirAll(to, 0o755); err != nil {
			t.Fatal(err)
		}
		def := filepath.Join(to, "web1-dr.json")
		if err := plant(def); err != nil {
			t.Fatal(err)
		}
		r := h.run(t, "restore", "--machine", "web1", "latest", "--to", to)
		if r.code == 0 || !strings.Contains(r.stderr, def) {
			t.Errorf("%s at the definition's path: want a failure naming %s, got %s", what, def, r)
		}
		if _, err := os.Stat(filepath.Join(to, "vda.raw")); err == nil {
			t.Errorf("%s at the definition's path: the image was written anyway", what)
		}
		if got := string(fileBytes(t, victim)); got != "precious\n" {
			t.Errorf("%s at the definition's path: the file it points at now holds %q", what, got)
		}
		if _, err := os.Stat(filepath.Join(work, "nowhere")); err == nil {
			t.Errorf("%s: the link's target was created", what)
		}
	}
}

// plantJunk stores objects that are not what their directory holds: a
// stray file and 100 random bytes under a valid-looking ID, under points/
// and index/. It returns their names, the random point second.
func plantJunk(t *testing.T, s blob.Store) []string {
	t.Helper()
	var names []string
	for _, kind := range []string{"points", "index"} {
		junk := make([]byte, 100)
		rand.Read(junk)
		id := make([]byte, 32)
		rand.Read(id)
		for _, o := range []struct {
			name string
			data []byte
		}{
			{kind + "/readme.txt", []byte("not an object\n")},
			{kind + "/" + hex.EncodeToString(id), junk},
		} {
			if err := s.Put(context.Background(), o.name, o.data); err != nil {
				t.Fatal(err)
			}
			names = append(names, o.name)
		}
	}
	return names
}

func storeNames(t *testing.T, s blob.Store) []string {
	t.Helper()
	var names []string
	if err := s.List(context.Background(), "", func(i blob.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// TestPlantedObjects: stray and random objects under points/ and index/
// are skipped with a warning naming each by points, restore and backup;
// prune refuses to run and deletes nothing; a damaged point fails only its
// own restore. On a directory vault and on a real S3 server.
func TestPlantedObjects(t *testing.T) {
	for _, kind := range []string{"dir", "s3"} {
		t.Run(kind, func(t *testing.T) {
			var h *hostileVault
			if kind == "dir" {
				h = dirHostileVault(t)
			} else {
				srv := s3test.Start(t)
				cfg := srv.Config
				cfg.Prefix = "vault"
				store, err := blob.NewS3(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				h = newHostileVault(t, store, "s3://"+cfg.Bucket+"/vault", s3Env(cfg))
			}
			planted := plantJunk(t, h.store)
			if kind == "dir" {
				// A name no store would create, only a person.
				if err := os.WriteFile(filepath.Join(h.url, "points", "README"), []byte("hi\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				planted = append(planted, "points/README")
				// Objects over their kind's size cap (sparse: reading one
				// whole would take its size in memory).
				for _, kind := range []string{"points", "index", "keys"} {
					id := make([]byte, 32)
					rand.Read(id)
					name := kind + "/" + hex.EncodeToString(id)
					if kind == "keys" {
						name = "keys/" + strings.Repeat("0", 32) // listed before the real slot
					}
					f, err := os.Create(filepath.Join(h.url, filepath.FromSlash(name)))
					if err != nil {
						t.Fatal(err)
					}
					if err := f.Truncate(blob.MaxSize(name) + 1); err != nil {
						t.Fatal(err)
					}
					f.Close()
					if kind != "keys" { // a key slot too large is skipped quietly
						planted = append(planted, name)
					}
				}
			}
			warned := func(what string, r result) {
				t.Helper()
				for _, name := range planted {
					if strings.HasPrefix(name, "index/") && what == "points" {
						continue // points reads no index
					}
					if !strings.Contains(r.stderr, name) {
						t.Errorf("%s: no warning names %s: %s", what, name, r)
					}
				}
			}

			r := h.run(t, "--json", "points")
			if r.code != 0 || !strings.Contains(r.stdout, h.point) {
				t.Fatalf("points beside planted objects: %s", r)
			}
			warned("points", r)

			out := filepath.Join(t.TempDir(), "vda.raw")
			r = h.run(t, "restore", "--machine", "web1", "latest", "--disk", "vda", "--to-file", out)
			if r.code != 0 {
				t.Fatalf("restore beside planted objects: %s", r)
			}
			warned("restore", r)
			sameContent(t, h.img, out)

			r = h.run(t, "--json", "backup", "--machine", "web1", "--disk", "vda="+h.img)
			if r.code != 0 {
				t.Fatalf("backup beside planted objects: %s", r)
			}
			warned("backup", r)
			second := parsePoint(t, r).ID

			before := storeNames(t, h.store)
			r = h.run(t, "prune")
			if r.code == 0 {
				t.Errorf("prune ran with unreadable objects: %s", r)
			}
			if after := storeNames(t, h.store); strings.Join(after, " ") != strings.Join(before, " ") {
				t.Errorf("the refused prune changed the vault:\nbefore %v\nafter  %v", before, after)
			}

			// The planted point asked for by ID: its own error.
			junkPoint := strings.TrimPrefix(planted[1], "points/")
			r = h.run(t, "restore", "--machine", "web1", junkPoint[:12], "--disk", "vda", "--to-file", out+"2")
			if r.code == 0 || !strings.Contains(r.stderr, junkPoint) {
				t.Errorf("restore of the planted point: want a failure naming it, got %s", r)
			}

			// A real point damaged: its restore fails naming it, the other's works.
			name := vault.ObjectName(vault.KindPoint, mustID(t, h.point))
			junk := make([]byte, 100)
			rand.Read(junk)
			if err := h.store.Put(context.Background(), name, junk); err != nil {
				t.Fatal(err)
			}
			r = h.run(t, "restore", "--machine", "web1", h.point[:12], "--disk", "vda", "--to-file", out+"3")
			if r.code == 0 || !strings.Contains(r.stderr, name) {
				t.Errorf("restore of a damaged point: want a failure naming %s, got %s", name, r)
			}
			r = h.run(t, "restore", "--machine", "web1", second[:12], "--disk", "vda", "--to-file", out+"4")
			if r.code != 0 {
				t.Errorf("restore of the undamaged point: %s", r)
			}
		})
	}
}
