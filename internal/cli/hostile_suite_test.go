package cli_test

// The hostile-storage suite (issue 10): every row of internal/hostile's
// table that names TestHostileStorage is run here against a fresh clone of
// one vault, on a directory and on a real S3 server (versitygw). The
// other rows name the test that covers them; internal/hostile checks that
// each such test exists and that docs/security.md shows the table.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/hostile"
	"lifeboat/internal/vault"
)

// suiteBase is the vault each row attacks a clone of: points p1 (sealed
// with the first data key) and p2 (after a rekey), p0 forgotten and
// pruned, two key slots ("default" and "ops"), a copy that received p1
// and p2, and what an attacker could have kept from before: the config
// and key slot from before the rekey, and every object the prune removed.
type suiteBase struct {
	backend   string // "dir" or "s3"
	open      func(t *testing.T, prefix string) (blob.Store, string)
	env       map[string]string
	stateDir  string
	p0, p1    string
	p2        string
	states    map[string]string
	oldConfig []byte
	oldSlot   []byte
	oldSlotAt string
	pruned    map[string][]byte // objects the prune removed, by name
}

// prunedOf returns the objects prune removed whose names start with prefix.
func (b *suiteBase) prunedOf(prefix string) map[string][]byte {
	m := map[string][]byte{}
	for n, d := range b.pruned {
		if strings.HasPrefix(n, prefix) {
			m[n] = d
		}
	}
	return m
}

// suiteRow is one row's clone of the base vault and its copy.
type suiteRow struct {
	*suiteBase
	t                *testing.T
	store, copyStore blob.Store
	url, copyURL     string
	rowEnv           map[string]string
	ctx              context.Context
}

func (r *suiteRow) runAs(pass string, args ...string) result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := map[string]string{}
	for k, v := range r.rowEnv {
		env[k] = v
	}
	env["LIFEBOAT_PASSWORD"] = pass
	return inProcEnv(ctx, env, append([]string{"-q"}, args...)...)
}

// run runs lifeboat on the row's vault.
func (r *suiteRow) run(args ...string) result {
	r.t.Helper()
	return r.runAs(testPassphrase, append([]string{"--vault", r.url}, args...)...)
}

// restore restores point id of web1 and returns the result; one that exits
// 0 must give exactly the image the point holds.
func (r *suiteRow) restore(id string) result {
	r.t.Helper()
	out := filepath.Join(r.t.TempDir(), "vda.raw")
	res := r.run("restore", "--machine", "web1", id, "--disk", "vda", "--to-file", out)
	if res.code == 0 {
		sameContent(r.t, r.states[id], out)
	}
	return res
}

// want fails the row unless res exited with code and its output names
// every one of words.
func (r *suiteRow) want(what string, res result, code int, words ...string) {
	r.t.Helper()
	r.t.Logf("%s: %s", what, res)
	if res.code != code {
		r.t.Errorf("%s: want exit %d, got %s", what, code, res)
		return
	}
	for _, w := range words {
		if !strings.Contains(res.output(), w) {
			r.t.Errorf("%s: output does not name %q:\n%s", what, w, res)
		}
	}
}

func (r *suiteRow) get(name string) []byte {
	r.t.Helper()
	b, err := r.store.Get(r.ctx, name)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *suiteRow) put(s blob.Store, name string, data []byte) {
	r.t.Helper()
	if err := s.Put(r.ctx, name, data); err != nil {
		r.t.Fatal(err)
	}
}

func (r *suiteRow) del(s blob.Store, name string) {
	r.t.Helper()
	if err := s.Delete(r.ctx, name); err != nil {
		r.t.Fatal(err)
	}
}

// names lists the objects of s under prefix.
func (r *suiteRow) names(s blob.Store, prefix string) []string {
	r.t.Helper()
	var n []string
	if err := s.List(r.ctx, prefix, func(i blob.Info) error { n = append(n, i.Name); return nil }); err != nil {
		r.t.Fatal(err)
	}
	sort.Strings(n)
	return n
}

// manifestOf is the name of the manifest of point id's disk.
func (r *suiteRow) manifestOf(id string) string {
	r.t.Helper()
	v := openVault(r.t, r.store)
	data, err := v.LoadObject(r.ctx, vault.KindPoint, mustID(r.t, id))
	if err != nil {
		r.t.Fatal(err)
	}
	i := bytes.Index(data, []byte(`"manifest":"`))
	if i < 0 {
		r.t.Fatalf("no manifest in point %s: %s", id, data)
	}
	return "manifests/" + string(data[i+12:i+12+64])
}

// swap exchanges the contents of two objects.
func (r *suiteRow) swap(s blob.Store, a, b string) {
	r.t.Helper()
	da, _ := s.Get(r.ctx, a)
	db, _ := s.Get(r.ctx, b)
	r.put(s, a, db)
	r.put(s, b, da)
}

// truncate keeps the first half of an object.
func (r *suiteRow) truncate(s blob.Store, name string) {
	r.t.Helper()
	d, err := s.Get(r.ctx, name)
	if err != nil {
		r.t.Fatal(err)
	}
	r.put(s, name, d[:len(d)/2])
}

// clone copies every object of from into to.
func clone(t *testing.T, from, to blob.Store) {
	t.Helper()
	ctx := context.Background()
	var names []string
	if err := from.List(ctx, "", func(i blob.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(n, ".tmp-") {
			continue
		}
		d, err := from.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := to.Put(ctx, n, d); err != nil {
			t.Fatal(err)
		}
	}
}

// buildSuiteBase makes the base vault (at prefix "base") and its copy
// ("base-copy").
func buildSuiteBase(t *testing.T, open func(t *testing.T, prefix string) (blob.Store, string), env map[string]string) *suiteBase {
	t.Helper()
	ctx := context.Background()
	b := &suiteBase{open: open, env: env, stateDir: filepath.Join(t.TempDir(), "state"), states: map[string]string{}}
	store, url := open(t, "base")
	_, copyURL := open(t, "base-copy")
	if _, err := vault.Init(ctx, store, []byte(testPassphrase), vault.Options{KDF: cheapKDF, PackSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	row := &suiteRow{suiteBase: b, t: t, store: store, url: url, ctx: ctx, rowEnv: b.rowEnv(b.stateDir)}
	ok := func(res result) result {
		t.Helper()
		if res.code != 0 {
			t.Fatalf("building the suite's vault: %s", res)
		}
		return res
	}
	img := filepath.Join(t.TempDir(), "vda.img")
	data := fill(3<<20, random, 11)
	backup := func(seed byte) string {
		for i := 0; i < 1<<20; i += 4096 {
			data[i+int(seed)*4096] ^= seed
		}
		os.WriteFile(img, data, 0o600)
		id := parsePoint(t, ok(row.run("--json", "backup", "--machine", "web1", "--disk", "vda="+img))).ID
		b.states[id] = filepath.Join(t.TempDir(), "state.raw")
		sparseCopy(t, img, b.states[id])
		return id
	}
	b.p0 = backup(1)
	b.p1 = backup(2)
	before := map[string][]byte{}
	for _, kind := range []string{"points/", "manifests/", "index/", "packs/"} {
		for _, n := range row.names(store, kind) {
			before[n] = row.get(n)
		}
	}
	ok(row.run("forget", "--keep-last", "1"))
	ok(row.run("prune"))
	for _, n := range row.names(store, "") {
		delete(before, n)
	}
	b.pruned = before
	if b.pruned["points/"+b.p0] == nil || len(b.prunedOf("manifests/")) == 0 || len(b.prunedOf("index/")) == 0 || len(b.prunedOf("packs/")) == 0 {
		t.Fatalf("the base prune removed too little to replay: %d objects", len(b.pruned))
	}
	b.oldConfig = row.get("config")
	slots := row.names(store, "keys/")
	b.oldSlotAt, b.oldSlot = slots[0], row.get(slots[0])
	ok(row.run("vault", "rekey"))
	ok(row.runAs(testPassphrase, "--vault", url, "vault", "key", "add", "--name", "ops"))
	b.p2 = backup(3)
	ok(row.runAs(testPassphrase, "--vault", copyURL, "vault", "init", "--copy-of", url))
	ok(row.runAs(testPassphrase, "vault", "copy", "--from", url, "--to", copyURL))
	return b
}

func (b *suiteBase) rowEnv(stateDir string) map[string]string {
	env := map[string]string{"LIFEBOAT_STATE_DIR": stateDir, "LIFEBOAT_NEW_PASSWORD": "ops passphrase"}
	for k, v := range b.env {
		env[k] = v
	}
	return env
}

// newRow clones the base vault and its copy to fresh prefixes, with a copy
// of the base's record of points seen.
func (b *suiteBase) newRow(t *testing.T, id string) *suiteRow {
	t.Helper()
	ctx := context.Background()
	r := &suiteRow{suiteBase: b, t: t, ctx: ctx}
	base, _ := b.open(t, "base")
	baseCopy, _ := b.open(t, "base-copy")
	r.store, r.url = b.open(t, "row-"+id)
	r.copyStore, r.copyURL = b.open(t, "row-"+id+"-copy")
	clone(t, base, r.store)
	clone(t, baseCopy, r.copyStore)
	state := filepath.Join(t.TempDir(), "state")
	if out, err := exec.Command("cp", "-r", b.stateDir, state).CombinedOutput(); err != nil {
		t.Fatalf("copying the state directory: %v: %s", err, out)
	}
	r.rowEnv = b.rowEnv(state)
	// A fresh host, with no index cache: one warmed on the intact base
	// would still know the locations a tampered index object held (its
	// name, which the cache goes by, is unchanged), and the row would
	// test the cache instead of what the vault itself gives a new host.
	r.rowEnv["LIFEBOAT_CACHE_DIR"] = filepath.Join(t.TempDir(), "cache")
	return r
}

// TestHostileStorage runs the hostile-storage table against a directory
// vault and a vault on versitygw.
func TestHostileStorage(t *testing.T) {
	backends := map[string]func(t *testing.T) (func(t *testing.T, prefix string) (blob.Store, string), map[string]string){
		"dir": func(t *testing.T) (func(t *testing.T, prefix string) (blob.Store, string), map[string]string) {
			root := t.TempDir()
			return func(t *testing.T, prefix string) (blob.Store, string) {
				dir := filepath.Join(root, prefix)
				os.MkdirAll(dir, 0o700)
				return dirStore(t, dir), dir
			}, nil
		},
		"s3": func(t *testing.T) (func(t *testing.T, prefix string) (blob.Store, string), map[string]string) {
			srv := s3test.Start(t)
			env := s3Env(srv.Config)
			delete(env, "LIFEBOAT_PASSWORD")
			return func(t *testing.T, prefix string) (blob.Store, string) {
				cfg := srv.Config
				cfg.Prefix = prefix
				s, err := blob.NewS3(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				return s, "s3://" + cfg.Bucket + "/" + prefix
			}, env
		},
	}
	rows := hostile.Rows(hostile.Suite)
	for _, name := range []string{"dir", "s3"} {
		t.Run(name, func(t *testing.T) {
			open, env := backends[name](t)
			base := buildSuiteBase(t, open, env)
			base.backend = name
			for _, row := range rows {
				t.Run(row.ID, func(t *testing.T) {
					run := suiteScenarios[row.ID]
					if run == nil {
						t.Fatalf("row %s names TestHostileStorage but has no scenario here", row.ID)
					}
					run(base.newRow(t, row.ID))
				})
			}
		})
	}
}

// TestHostileScenariosInTable: every scenario here is a row of the table.
func TestHostileScenariosInTable(t *testing.T) {
	in := map[string]bool{}
	for _, row := range hostile.Rows(hostile.Suite) {
		in[row.ID] = true
	}
	for id := range suiteScenarios {
		if !in[id] {
			t.Errorf("scenario %s is not a row of internal/hostile's table naming TestHostileStorage", id)
		}
	}
}
