package cli_test

import (
	"crypto/rand"
	"encoding/hex"
	"strings"

	"lifeboat/internal/blob"

	"lifeboat/internal/cli"
)

// suiteScenarios are the attacks TestHostileStorage runs, by row ID of
// internal/hostile's table; each checks the outcome the row states.
var suiteScenarios = map[string]func(r *suiteRow){
	"config-truncate": func(r *suiteRow) {
		r.truncate(r.store, "config")
		r.want("points", r.run("points"), cli.ExitCorrupt, "config")
	},
	"config-delete": func(r *suiteRow) {
		r.del(r.store, "config")
		r.want("points", r.run("points"), cli.ExitNoVault, "vault init")
	},
	"config-replay": func(r *suiteRow) {
		r.put(r.store, "config", r.oldConfig)
		r.want("restore p2", r.restore(r.p2), 0)
		r.want("backup", r.run("backup", "--machine", "web1", "--disk", "vda="+r.states[r.p2]), 0)
		if cfg := string(r.get("config")); !strings.Contains(cfg, `"version": 3`) {
			r.t.Errorf("config not written forward by the backup:\n%s", cfg)
		}
	},
	"keys-truncate": func(r *suiteRow) {
		for _, k := range r.names(r.store, "keys/") {
			r.truncate(r.store, k)
		}
		r.want("points", r.run("points"), cli.ExitCorrupt, "keys/")
	},
	"keys-delete": func(r *suiteRow) {
		for _, k := range r.names(r.store, "keys/") {
			r.del(r.store, k)
		}
		r.want("points", r.run("points"), cli.ExitCorrupt, "no key slots")
	},
	"keys-swap": func(r *suiteRow) {
		k := r.names(r.store, "keys/")
		r.swap(r.store, k[0], k[1])
		r.want("points", r.run("points"), 0)
		r.want("points as ops", r.runAs("ops passphrase", "--vault", r.url, "points"), 0)
	},
	"keys-replay": func(r *suiteRow) {
		// The slot from before the rekey instead of the current ones.
		for _, k := range r.names(r.store, "keys/") {
			r.del(r.store, k)
		}
		r.put(r.store, r.oldSlotAt, r.oldSlot)
		r.want("restore p1", r.restore(r.p1), 0)
		r.want("restore p2", r.restore(r.p2), cli.ExitPassphrase, "generation 2")
		r.want("backup", r.run("backup", "--machine", "web1", "--disk", "vda="+r.states[r.p1]), cli.ExitPassphrase, "rekeyed")
	},
	"keys-rollback": func(r *suiteRow) {
		// The config and the slot from before the rekey, nothing newer:
		// only this host's record of the generation it used tells.
		for _, k := range r.names(r.store, "keys/") {
			r.del(r.store, k)
		}
		r.put(r.store, r.oldSlotAt, r.oldSlot)
		r.put(r.store, "config", r.oldConfig)
		r.want("restore p1", r.restore(r.p1), 0, "rolled back")
		r.want("backup", r.run("backup", "--machine", "web1", "--disk", "vda="+r.states[r.p1]), cli.ExitPassphrase, "rolled back", "rekeyed")
	},
	"points-truncate": func(r *suiteRow) {
		r.truncate(r.store, "points/"+r.p1)
		r.want("points", r.run("points"), 0, "points/"+r.p1)
		r.want("restore p1", r.restore(r.p1), cli.ExitCorrupt, "points/"+r.p1)
		r.want("restore p2", r.restore(r.p2), 0)
	},
	"points-delete": func(r *suiteRow) {
		r.del(r.store, "points/"+r.p2)
		r.want("points", r.run("points"), 0, r.p2[:12], "is gone")
		r.want("restore p1", r.restore(r.p1), 0)
	},
	"points-swap": func(r *suiteRow) {
		r.swap(r.store, "points/"+r.p1, "points/"+r.p2)
		r.want("points", r.run("points"), 0, "points/"+r.p1, "points/"+r.p2)
		r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, "points/"+r.p2)
	},
	"points-replay": func(r *suiteRow) {
		r.put(r.store, "points/"+r.p0, r.pruned["points/"+r.p0])
		r.want("restore p0", r.restore(r.p0), cli.ExitCorrupt)
		r.want("verify", r.run("verify"), cli.ExitCorrupt)
		r.want("restore p2", r.restore(r.p2), 0)
	},
	"manifests-truncate": func(r *suiteRow) { manifestLost(r, r.truncate) },
	"manifests-delete":   func(r *suiteRow) { manifestLost(r, r.del) },
	"manifests-replay": func(r *suiteRow) {
		replay(r, "manifests/")
	},
	"manifests-swap": func(r *suiteRow) {
		m1, m2 := r.manifestOf(r.p1), r.manifestOf(r.p2)
		r.swap(r.store, m1, m2)
		r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, m2)
		r.want("verify", r.run("verify"), cli.ExitCorrupt, m1, m2)
	},
	"index-truncate": func(r *suiteRow) {
		ix := r.names(r.store, "index/")
		for _, n := range ix {
			r.truncate(r.store, n)
		}
		r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, ix[0])
		r.want("verify", r.run("verify"), cli.ExitCorrupt, ix[0])
	},
	"index-delete": func(r *suiteRow) {
		for _, n := range r.names(r.store, "index/") {
			r.del(r.store, n)
		}
		r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, "in no index")
		r.want("verify", r.run("verify"), cli.ExitCorrupt, "in no index")
		// The packs still hold every chunk: prune must not take them.
		packs := r.names(r.store, "packs/")
		res := r.run("prune")
		r.t.Logf("prune: %s", res)
		if after := r.names(r.store, "packs/"); strings.Join(after, " ") != strings.Join(packs, " ") {
			r.t.Errorf("prune deleted packs the points need while the index was gone: before %v, after %v", packs, after)
		}
	},
	"index-swap": func(r *suiteRow) {
		ix := r.names(r.store, "index/")
		r.swap(r.store, ix[0], ix[1])
		r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, ix[0])
		r.want("verify", r.run("verify"), cli.ExitCorrupt, ix[0], ix[1])
	},
	"index-replay": func(r *suiteRow) {
		for n, d := range r.prunedOf("index/") {
			r.put(r.store, n, d)
		}
		r.want("restore p1", r.restore(r.p1), 0)
		r.want("restore p2", r.restore(r.p2), 0)
		r.want("verify", r.run("verify"), cli.ExitCorrupt, "named by the index but missing")
	},
	"packs-truncate": func(r *suiteRow) {
		p := r.names(r.store, "packs/")
		for _, n := range p {
			r.truncate(r.store, n)
		}
		r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, "packs/")
		r.want("verify", r.run("verify", "--read-data"), cli.ExitCorrupt, p[0])
	},
	"packs-delete": func(r *suiteRow) {
		p := r.names(r.store, "packs/")
		for _, n := range p {
			r.del(r.store, n)
		}
		r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, "packs/")
		r.want("verify", r.run("verify"), cli.ExitCorrupt, p[0])
	},
	"packs-replay": func(r *suiteRow) {
		replay(r, "packs/")
	},
	"packs-swap": func(r *suiteRow) {
		p := r.names(r.store, "packs/")
		r.swap(r.store, p[0], p[1])
		r.want("verify", r.run("verify", "--read-data"), cli.ExitCorrupt, p[0], p[1])
	},
	"markers-delete": func(r *suiteRow) {
		for _, n := range r.names(r.copyStore, "copied/") {
			r.del(r.copyStore, n)
		}
		r.want("copy", r.runAs(testPassphrase, "vault", "copy", "--from", r.url, "--to", r.copyURL), 0)
		if n := r.names(r.copyStore, "copied/"); len(n) != 2 {
			r.t.Errorf("markers after the copy: %v", n)
		}
	},
	"markers-truncate": func(r *suiteRow) {
		for _, n := range r.names(r.copyStore, "copied/") {
			r.truncate(r.copyStore, n)
		}
		r.want("status", r.runAs(testPassphrase, "--vault", r.url, "vault", "status", "--copy", r.copyURL), 0, "up to date")
		r.want("copy", r.runAs(testPassphrase, "vault", "copy", "--from", r.url, "--to", r.copyURL), 0)
	},
	"sessions-garbage": func(r *suiteRow) {
		junk := make([]byte, 100)
		rand.Read(junk)
		name := "sessions/" + hex.EncodeToString(junk[:16])
		r.put(r.store, name, junk)
		r.want("prune", r.run("prune"), 0)
		r.want("backup", r.run("backup", "--machine", "web1", "--disk", "vda="+r.states[r.p2]), 0)
		r.want("restore p1", r.restore(r.p1), 0)
	},
	"markers-swap": func(r *suiteRow) {
		m := r.names(r.copyStore, "copied/")
		r.swap(r.copyStore, m[0], m[1])
		r.want("status", r.runAs(testPassphrase, "--vault", r.url, "vault", "status", "--copy", r.copyURL), 0, "up to date")
	},
}

// replay puts back the objects under prefix the base's prune removed:
// nothing refers to them, so restores and verify pass, and the next
// prune removes them again.
func replay(r *suiteRow, prefix string) {
	r.t.Helper()
	old := r.prunedOf(prefix)
	for n, d := range old {
		r.put(r.store, n, d)
	}
	r.want("restore p1", r.restore(r.p1), 0)
	r.want("restore p2", r.restore(r.p2), 0)
	r.want("verify", r.run("verify", "--read-data"), 0)
	r.want("prune", r.run("prune"), 0)
	for n := range old {
		if _, err := r.store.Stat(r.ctx, n); !blob.IsNotExist(err) {
			r.t.Errorf("%s replayed and left by prune: %v", n, err)
		}
	}
}

// manifestLost damages p2's manifest: p2's restore and verify fail naming
// it, and p1 still restores.
func manifestLost(r *suiteRow, damage func(s blob.Store, name string)) {
	r.t.Helper()
	m := r.manifestOf(r.p2)
	damage(r.store, m)
	r.want("restore p2", r.restore(r.p2), cli.ExitCorrupt, m)
	r.want("verify", r.run("verify"), cli.ExitCorrupt, m)
	r.want("restore p1", r.restore(r.p1), 0)
}
