package cli_test

// Scenarios of TestHostileStorage for the kinds of object added after the
// first table: tombstones (deleted/), soft-delete settings (settings/),
// drill results (drills/) and catalog snapshots (catalog/).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
	"lifeboat/internal/cli"
	"lifeboat/internal/drill"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultserve"
)

func init() {
	for id, run := range newKindScenarios {
		suiteScenarios[id] = run
	}
}

var newKindScenarios = map[string]func(r *suiteRow){
	"append-only-delete": func(r *suiteRow) {
		ao := r.appendOnly()
		before := r.names(ao.admin, "")
		if err := ao.store.Delete(r.ctx, "points/"+r.p1); !blob.IsRefused(err) {
			r.t.Errorf("a delete with append-only access = %v, want it refused", err)
		}
		res := ao.run("forget", "--keep-last", "1")
		r.want("forget", res, cli.ExitStorage, "maintenance credentials", "nothing was changed")
		r.want("prune", ao.run("prune"), cli.ExitStorage, "maintenance credentials")
		r.want("backup", ao.run("backup", "--machine", "web1", "--disk", "vda="+r.states[r.p2]), 0)
		out := filepath.Join(r.t.TempDir(), "vda.raw")
		r.want("restore p1", ao.run("restore", "--machine", "web1", r.p1, "--disk", "vda", "--to-file", out), 0)
		sameContent(r.t, r.states[r.p1], out)
		after := r.names(ao.admin, "")
		for _, n := range before {
			if _, ok := slices.BinarySearch(after, n); !ok {
				r.t.Errorf("%s was deleted with append-only access", n)
			}
		}
	},
	"lock-delete": func(r *suiteRow) {
		if r.backend == "dir" {
			// A directory has no object lock: asking for one is refused.
			dir := filepath.Join(r.t.TempDir(), "locked")
			r.want("init --lock on a directory", r.runAs(testPassphrase, "--vault", dir, "vault", "init", "--lock", "30d"), cli.ExitStorage, "Object Lock")
			return
		}
		cfg := miniotest.Start(r.t).NewLockBucket(r.t)
		env := map[string]string{}
		for k, v := range r.rowEnv {
			env[k] = v
		}
		for k, v := range s3Env(cfg) {
			env[k] = v
		}
		url := "s3://" + cfg.Bucket + "/v"
		run := func(args ...string) result {
			ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
			defer cancel()
			return inProcEnv(ctx, env, append([]string{"-q", "--vault", url}, args...)...)
		}
		r.want("init --lock", run("vault", "init", "--soft-delete", "0", "--lock", "1h", "--lock-mode", "compliance"), 0)
		var ids []string
		for _, p := range []string{r.p1, r.p2} {
			res := run("--json", "backup", "--machine", "web1", "--disk", "vda="+r.states[p])
			r.want("backup", res, 0)
			ids = append(ids, parsePoint(r.t, res).ID)
		}
		cfg.Prefix = "v"
		cfg.Insecure = true
		store, err := blob.OpenS3(r.ctx, cfg)
		if err != nil {
			r.t.Fatal(err)
		}
		if err := store.(blob.Locker).DeleteVersions(r.ctx, "points/"+ids[0]); !errors.Is(err, blob.ErrLocked) {
			r.t.Errorf("deleting a locked point with the bucket's root credentials = %v, want refused as locked", err)
		}
		r.want("forget", run("forget", "--keep-last", "1"), 0)
		out := filepath.Join(r.t.TempDir(), "vda.raw")
		r.want("restore the locked point", run("restore", "--machine", "web1", ids[0], "--disk", "vda", "--to-file", out), 0)
		sameContent(r.t, r.states[r.p1], out)
	},
	"deleted-truncate": func(r *suiteRow) {
		tomb := softDeleteP1(r)
		r.truncate(r.store, tomb)
		// The safe direction: the point counts as not deleted.
		r.want("points", r.run("points"), 0, tomb)
		r.wantListed(true, r.p1)
		r.want("prune", r.run("prune"), 0)
		r.want("restore p1", r.restore(r.p1), 0)
	},
	"deleted-delete": func(r *suiteRow) {
		tomb := softDeleteP1(r)
		r.del(r.store, tomb)
		r.wantListed(true, r.p1)
		r.want("prune", r.run("prune"), 0)
		r.want("restore p1", r.restore(r.p1), 0)
	},
	"deleted-swap": func(r *suiteRow) {
		// p1's tombstone moved under p2's name: it is bound to p1.
		tomb := softDeleteP1(r)
		moved := "deleted/" + r.p2
		r.put(r.store, moved, r.get(tomb))
		r.del(r.store, tomb)
		r.want("points", r.run("points"), 0, moved)
		r.wantListed(true, r.p1, r.p2)
		r.want("restore p2", r.restore(r.p2), 0)
	},
	"deleted-replay": func(r *suiteRow) {
		tomb := softDeleteP1(r)
		old := r.get(tomb)
		r.want("undelete", r.run("undelete", "--machine", "web1", r.p1[:12]), 0)
		r.put(r.store, tomb, old)
		r.wantListed(false, r.p1)
		r.want("points --deleted", r.run("points", "--deleted"), 0, r.p1[:8])
		r.want("prune", r.run("prune"), 0)
		r.want("undelete", r.run("undelete", "--machine", "web1", r.p1[:12]), 0)
		r.want("restore p1", r.restore(r.p1), 0)
	},
	"deleted-garbage": func(r *suiteRow) {
		tomb := softDeleteP1(r)
		junk := make([]byte, 100)
		rand.Read(junk)
		planted := "deleted/" + r.p2
		r.put(r.store, planted, junk)
		r.put(r.store, "deleted/readme", []byte("hello"))
		r.want("points", r.run("points"), 0, planted, "deleted/readme")
		r.wantListed(true, r.p2)
		r.wantListed(false, r.p1)
		r.want("prune", r.run("prune"), 0)
		if _, err := r.store.Stat(r.ctx, tomb); err != nil {
			r.t.Errorf("p1's tombstone after prune: %v", err)
		}
		r.want("restore p2", r.restore(r.p2), 0)
	},
	"settings-truncate": func(r *suiteRow) {
		softDeleteP1(r)
		set := r.names(r.store, "settings/")
		r.truncate(r.store, set[0])
		r.want("prune", r.run("prune"), cli.ExitCorrupt, set[0], "soft-delete window is unknown")
		r.want("vault settings", r.run("vault", "settings"), 0, set[0]+" cannot be read")
		r.want("backup", r.run("backup", "--machine", "web1", "--disk", "vda="+r.states[r.p2]), 0)
		r.want("forget", r.run("forget", "--keep-last", "1"), cli.ExitCorrupt, set[0], "forget changed nothing")
		r.want("points --deleted", r.run("points", "--deleted"), 0, r.p1[:8])
		r.wantListed(true, r.p2)
	},
	"settings-delete": func(r *suiteRow) {
		softDeleteP1(r)
		for _, n := range r.names(r.store, "settings/") {
			r.del(r.store, n)
		}
		r.want("prune", r.run("prune"), cli.ExitCorrupt, "settings/ was deleted")
		r.want("vault settings", r.run("vault", "settings"), 0, "settings/ was deleted")
		r.want("points --deleted", r.run("points", "--deleted"), 0, r.p1[:8])
		r.want("vault set", r.run("vault", "set", "--soft-delete", "14d"), 0)
		r.want("prune", r.run("prune"), 0)
		r.want("points --deleted", r.run("points", "--deleted"), 0, r.p1[:8])
	},
	"settings-replay": func(r *suiteRow) {
		// A short window, then a long one; the short one stored again
		// (a new store date) must not become the newest.
		r.want("vault set 1d", r.run("vault", "set", "--soft-delete", "1d"), 0)
		short := r.names(r.store, "settings/")
		r.want("vault set 30d", r.run("vault", "set", "--soft-delete", "30d"), 0)
		// Store dates have whole seconds on S3: replay in a later one.
		for next := time.Now().Truncate(time.Second).Add(time.Second); time.Now().Before(next); {
			time.Sleep(time.Until(next) + 10*time.Millisecond)
		}
		r.put(r.store, short[0], r.get(short[0]))
		res := r.run("--json", "vault", "settings")
		r.want("vault settings", res, 0)
		var st struct {
			Window int64 `json:"soft_delete_seconds"`
			Set    int64 `json:"set_seconds"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
			r.t.Fatalf("vault settings --json: %v", err)
		}
		if st.Window != 30*86400 || st.Set != 30*86400 {
			r.t.Errorf("after replaying the 1d setting the window is %d s, set %d s; want 30d", st.Window, st.Set)
		}
	},
	"settings-garbage": func(r *suiteRow) {
		softDeleteP1(r)
		junk := make([]byte, 100)
		rand.Read(junk)
		planted := "settings/" + hex.EncodeToString(junk[:32])
		r.put(r.store, planted, junk)
		r.want("prune", r.run("prune"), cli.ExitCorrupt, planted)
		r.want("points --deleted", r.run("points", "--deleted"), 0, r.p1[:8])
	},
	"drills-truncate": func(r *suiteRow) {
		ids := saveDrills(r)
		r.truncate(r.store, ids[0])
		r.want("points", r.run("points"), 0, ids[0])
	},
	"drills-swap": func(r *suiteRow) {
		ids := saveDrills(r)
		r.swap(r.store, ids[0], ids[1])
		r.want("points", r.run("points"), 0, ids[0], ids[1])
		if res := r.run("points"); containsAny(res.stdout, "ok ", "FAILED") {
			r.t.Errorf("a swapped drill result is shown:\n%s", res)
		}
	},
	"drills-delete": func(r *suiteRow) {
		ids := saveDrills(r)
		r.del(r.store, ids[0])
		if res := r.run("points"); containsAny(res.stdout, "ok ") || !containsAny(res.stdout, "FAILED") {
			r.t.Errorf("with p1's drill result deleted, points shows:\n%s", res)
		}
	},
	"drills-garbage": func(r *suiteRow) {
		junk := make([]byte, 100)
		rand.Read(junk)
		planted := "drills/" + hex.EncodeToString(junk[:32])
		r.put(r.store, planted, junk)
		r.want("points", r.run("points"), 0, planted)
	},
	"catalog-replay": func(r *suiteRow) {
		v := openVault(r.t, r.store)
		old, err := v.SaveCatalog(r.ctx, json.RawMessage(`{"generation":1}`))
		if err != nil {
			r.t.Fatal(err)
		}
		stale := r.get(vault.ObjectName(vault.KindCatalog, old))
		if _, err := v.SaveCatalog(r.ctx, json.RawMessage(`{"generation":2}`)); err != nil {
			r.t.Fatal(err)
		}
		if err := v.TrimCatalogs(r.ctx, 1); err != nil {
			r.t.Fatal(err)
		}
		r.put(r.store, vault.ObjectName(vault.KindCatalog, old), stale)
		latest, err := openVault(r.t, r.store).LatestCatalog(r.ctx)
		if err != nil || string(latest.Doc) != `{"generation":2}` {
			r.t.Errorf("latest catalog after replaying an old one: %s, %v", latest.Doc, err)
		}
	},
	"catalog-delete": func(r *suiteRow) {
		v := openVault(r.t, r.store)
		if _, err := v.SaveCatalog(r.ctx, json.RawMessage(`{"generation":1}`)); err != nil {
			r.t.Fatal(err)
		}
		for _, n := range r.names(r.store, "catalog/") {
			r.del(r.store, n)
		}
		if _, err := openVault(r.t, r.store).LatestCatalog(r.ctx); !errors.Is(err, vault.ErrNoCatalog) {
			r.t.Errorf("latest catalog with every snapshot deleted: %v", err)
		}
	},
	"catalog-swap": func(r *suiteRow) {
		v := openVault(r.t, r.store)
		a, err := v.SaveCatalog(r.ctx, json.RawMessage(`{"generation":1}`))
		if err != nil {
			r.t.Fatal(err)
		}
		b, err := v.SaveCatalog(r.ctx, json.RawMessage(`{"generation":2}`))
		if err != nil {
			r.t.Fatal(err)
		}
		r.swap(r.store, vault.ObjectName(vault.KindCatalog, a), vault.ObjectName(vault.KindCatalog, b))
		if _, err := openVault(r.t, r.store).LatestCatalog(r.ctx); !errors.Is(err, vault.ErrNoCatalog) {
			r.t.Errorf("latest catalog with both snapshots swapped: %v", err)
		}
	},
	"catalog-truncate": func(r *suiteRow) {
		v := openVault(r.t, r.store)
		if _, err := v.SaveCatalog(r.ctx, json.RawMessage(`{"generation":1}`)); err != nil {
			r.t.Fatal(err)
		}
		id, err := v.SaveCatalog(r.ctx, json.RawMessage(`{"generation":2}`))
		if err != nil {
			r.t.Fatal(err)
		}
		r.truncate(r.store, vault.ObjectName(vault.KindCatalog, id))
		var warned []string
		v, err = vault.Open(r.ctx, r.store, []byte(testPassphrase), vault.Options{KDF: cheapKDF, Warn: func(s string) { warned = append(warned, s) }})
		if err != nil {
			r.t.Fatal(err)
		}
		latest, err := v.LatestCatalog(r.ctx)
		if err != nil || string(latest.Doc) != `{"generation":1}` {
			r.t.Errorf("latest catalog with the newest truncated: %s, %v", latest.Doc, err)
		}
		if !slices.ContainsFunc(warned, func(w string) bool { return containsAny(w, vault.ObjectName(vault.KindCatalog, id)) }) {
			r.t.Errorf("no warning names the truncated snapshot: %q", warned)
		}
	},
}

// appendOnlyAccess is a row's vault reached with access that can create
// objects but not delete or replace them.
type appendOnlyAccess struct {
	store blob.Store // through that access
	admin blob.Store // the same objects with full access
	run   func(args ...string) result
}

// appendOnly gives append-only access to the row's vault: a directory
// vault through `vault serve --append-only`'s handler, an S3 vault (cloned
// into MinIO, whose IAM policies versitygw lacks) with temporary
// credentials allowed no s3:DeleteObject.
func (r *suiteRow) appendOnly() appendOnlyAccess {
	r.t.Helper()
	env := map[string]string{}
	for k, v := range r.rowEnv {
		env[k] = v
	}
	env["LIFEBOAT_PASSWORD"] = testPassphrase
	var a appendOnlyAccess
	var url string
	if r.backend == "dir" {
		const token = "0123456789abcdef0123"
		srv := httptest.NewServer(vaultserve.Handler(dirStore(r.t, r.url), token, true, slog.New(slog.NewTextHandler(io.Discard, nil))))
		r.t.Cleanup(srv.Close)
		s, err := blob.NewRemote(r.ctx, blob.RemoteConfig{URL: srv.URL, Token: token})
		if err != nil {
			r.t.Fatal(err)
		}
		a.store, a.admin, url = s, r.store, "lifeboat+"+srv.URL
		env["LIFEBOAT_VAULT_TOKEN"] = token
	} else {
		mini := miniotest.Start(r.t)
		root := mini.Config
		root.Prefix = "v"
		admin, err := blob.NewS3(r.ctx, root)
		if err != nil {
			r.t.Fatal(err)
		}
		clone(r.t, r.store, admin)
		ao := miniotest.AppendOnly(r.t, mini.Config)
		ao.Prefix = "v"
		s, err := blob.NewS3(r.ctx, ao)
		if err != nil {
			r.t.Fatal(err)
		}
		a.store, a.admin, url = s, admin, "s3://"+ao.Bucket+"/v"
		for k, v := range s3Env(ao) {
			env[k] = v
		}
		env["AWS_SESSION_TOKEN"] = ao.SessionToken
		env["LIFEBOAT_S3_CREATE_ONLY"] = "1"
	}
	a.run = func(args ...string) result {
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
		defer cancel()
		return inProcEnv(ctx, env, append([]string{"-q", "--vault", url}, args...)...)
	}
	return a
}

// softDeleteP1 turns soft delete on (14 days) and forgets p1, returning
// the name of its tombstone.
func softDeleteP1(r *suiteRow) string {
	r.t.Helper()
	r.want("vault set", r.run("vault", "set", "--soft-delete", "14d"), 0)
	r.want("forget", r.run("forget", "--keep-last", "1"), 0)
	name := "deleted/" + r.p1
	if _, err := r.store.Stat(r.ctx, name); err != nil {
		r.t.Fatalf("forget wrote no tombstone for p1: %v", err)
	}
	return name
}

// wantListed checks that `points --json` lists (or does not list) ids.
func (r *suiteRow) wantListed(listed bool, ids ...string) {
	r.t.Helper()
	res := r.run("--json", "points")
	var pts []pointInfo
	if err := json.Unmarshal([]byte(res.stdout), &pts); err != nil {
		r.t.Fatalf("points --json: %v\n%s", err, res)
	}
	for _, id := range ids {
		if got := slices.ContainsFunc(pts, func(p pointInfo) bool { return p.ID == id }); got != listed {
			r.t.Errorf("point %s listed: %v, want %v\n%s", id[:12], got, listed, res)
		}
	}
}

// saveDrills records a passed drill of p1 and a failed one of p2, and
// returns their object names.
func saveDrills(r *suiteRow) []string {
	r.t.Helper()
	v := openVault(r.t, r.store)
	var names []string
	for i, p := range []string{r.p1, r.p2} {
		res := &drill.Result{Point: p, Machine: "web1", Time: time.Now().UTC(), Host: "h", OK: i == 0, RTOMS: 1200, Probe: "guest-agent"}
		if err := drill.Save(r.ctx, v, res); err != nil {
			r.t.Fatal(err)
		}
		names = append(names, vault.ObjectName(vault.KindDrill, res.ID))
	}
	if res := r.run("points"); !containsAny(res.stdout, "ok 1.2s") {
		r.t.Fatalf("the drill results are not shown:\n%s", res)
	}
	return names
}

func containsAny(s string, subs ...string) bool {
	return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
}
