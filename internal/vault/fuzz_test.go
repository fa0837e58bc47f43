package vault

import (
	"context"
	"encoding/json"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/crypto"
	"lifeboat/internal/testenv"
)

// Fuzz targets for the vault objects read without the data key: config and
// session markers, and for the sealed objects (points, manifests, prune
// plans) as stored (issue 10, "Proof"). Each reads the fuzzer's bytes
// through the vault as it would read them from storage; the seeds are what
// the vault itself wrote.

func fuzzVault(f *testing.F) (*Vault, *blob.Mem) {
	store := blob.NewMem()
	v, err := Init(context.Background(), store, []byte("fuzz"), Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		f.Fatal(err)
	}
	return v, store
}

// FuzzConfig: ReadConfig either refuses a config or returns one whose
// values are in range.
func FuzzConfig(f *testing.F) {
	_, store := fuzzVault(f)
	cfg, err := store.Get(context.Background(), "config")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cfg)
	f.Add([]byte(`{"format":"lifeboat-vault","version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		s := blob.NewMem()
		if err := s.Put(ctx, "config", data); err != nil {
			return
		}
		var c Config
		testenv.CheckAlloc(t, len(data), 64, 0, func() { c, err = ReadConfig(ctx, s) })
		if err != nil {
			return
		}
		if ValidChunkSize(c.ChunkSize) != nil || c.PackSize < 1<<20 || c.PackSize > 1<<30 || c.Version < 1 || c.Version > FormatVersion {
			t.Fatalf("accepted config %+v", c)
		}
	})
}

// FuzzSessionMarker: a session marker of any content is read by
// ListSessions without failing it; a marker that does not parse is
// neither live nor dead.
func FuzzSessionMarker(f *testing.F) {
	v, store := fuzzVault(f)
	ctx := context.Background()
	s, err := v.StartSession(ctx, "backup")
	if err != nil {
		f.Fatal(err)
	}
	store.List(ctx, "sessions/", func(i blob.Info) error {
		data, err := store.Get(ctx, i.Name)
		if err == nil {
			f.Add(data)
		}
		return nil
	})
	s.End(ctx)
	f.Add([]byte(`{"version":1,"kind":"prune","refreshed":"9999-01-01T00:00:00Z","abandoned":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := store.Put(ctx, "sessions/fuzz", data); err != nil {
			return
		}
		defer store.Delete(ctx, "sessions/fuzz")
		var live, dead []SessionInfo
		testenv.CheckAlloc(t, len(data), 64, 0, func() { live, dead, err = v.ListSessions(ctx) })
		if err != nil {
			t.Fatalf("ListSessions failed on a marker: %v", err)
		}
		if len(live)+len(dead) > 1 {
			t.Fatalf("one marker listed as %d live and %d dead", len(live), len(dead))
		}
	})
}

// FuzzSealedObject: bytes stored as a point, a manifest or a prune plan
// under the name of their hash (so that only the seal can refuse them) are
// refused as corrupt, never panic, and cost what they weigh.
func FuzzSealedObject(f *testing.F) {
	v, store := fuzzVault(f)
	ctx := context.Background()
	sealedBy := map[string]string{} // the seeds, each sealed as one kind
	for _, kind := range []string{KindPoint, KindManifest, KindCondemned, KindCatalog} {
		id, err := v.SaveObject(ctx, kind, []byte(`{"version":1}`))
		if err != nil {
			f.Fatal(err)
		}
		data, _ := store.Get(ctx, ObjectName(kind, id))
		sealedBy[string(data)] = kind
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		id := chunk.ObjectID(data)
		for _, kind := range []string{KindPoint, KindManifest, KindCondemned, KindCatalog} {
			if err := store.Put(ctx, ObjectName(kind, id), data); err != nil {
				return
			}
			var err error
			testenv.CheckAlloc(t, len(data), 4, 0, func() { _, err = v.LoadObject(ctx, kind, id) })
			store.Delete(ctx, ObjectName(kind, id))
			if err == nil && sealedBy[string(data)] != kind {
				t.Fatalf("%s of %d bytes the fuzzer made was opened", kind, len(data))
			}
		}
	})
}

// FuzzSoftDeleteObjects: bytes stored as a tombstone (deleted/<point id>)
// and as a settings object (settings/<hash>) are skipped by Tombstones and
// Settings, which never fail on them, never panic, and cost what they
// weigh; only what the vault sealed counts.
func FuzzSoftDeleteObjects(f *testing.F) {
	v, store := fuzzVault(f)
	ctx := context.Background()
	var point chunk.ID
	point[0] = 1
	if _, err := v.SaveTombstone(ctx, point); err != nil {
		f.Fatal(err)
	}
	tomb, _ := store.Get(ctx, ObjectName(KindDeleted, point))
	store.Delete(ctx, ObjectName(KindDeleted, point))
	s, err := v.SaveSetting(ctx, 3600e9)
	if err != nil {
		f.Fatal(err)
	}
	setting, _ := store.Get(ctx, ObjectName(KindSettings, s.ID))
	store.Delete(ctx, ObjectName(KindSettings, s.ID))
	f.Add(tomb)
	f.Add(setting)
	f.Fuzz(func(t *testing.T, data []byte) {
		id := chunk.ObjectID(data)
		if store.Put(ctx, ObjectName(KindDeleted, point), data) != nil || store.Put(ctx, ObjectName(KindSettings, id), data) != nil {
			return
		}
		defer store.Delete(ctx, ObjectName(KindDeleted, point))
		defer store.Delete(ctx, ObjectName(KindSettings, id))
		var tombs map[chunk.ID]Tombstone
		var settings []Setting
		testenv.CheckAlloc(t, len(data), 8, 0, func() {
			if tombs, err = v.Tombstones(ctx); err == nil {
				settings, err = v.Settings(ctx)
			}
		})
		if err != nil {
			t.Fatalf("a stored object failed the listing: %v", err)
		}
		if len(tombs) > 0 && string(data) != string(tomb) || len(settings) > 0 && string(data) != string(setting) {
			t.Fatalf("%d bytes the fuzzer made were accepted: %d tombstones, %d settings", len(data), len(tombs), len(settings))
		}
	})
}

// FuzzCatalogSnapshot: the plaintext of a catalog snapshot is refused or
// read as an envelope whose document, saved again, reads back the same.
func FuzzCatalogSnapshot(f *testing.F) {
	v, _ := fuzzVault(f)
	ctx := context.Background()
	if _, err := v.SaveCatalog(ctx, []byte(`{"version":1,"tiers":[{"name":"gold","rpo":3600000000000}]}`)); err != nil {
		f.Fatal(err)
	}
	seed, err := v.LatestCatalog(ctx)
	if err != nil {
		f.Fatal(err)
	}
	plain, _ := json.Marshal(seed)
	f.Add(plain)
	f.Add([]byte(`{"version":1,"created":"2026-12-07T01:00:00Z","host":"h","catalog":{}}`))
	f.Add([]byte(`{"version":2,"created":"2026-12-07T01:00:00Z","catalog":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s CatalogSnapshot
		var err error
		testenv.CheckAlloc(t, len(data), 64, 0, func() { s, err = ParseCatalogSnapshot(data) })
		if err != nil {
			return
		}
		again, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("a snapshot read does not marshal: %v", err)
		}
		back, err := ParseCatalogSnapshot(again)
		if err != nil || !back.Created.Equal(s.Created) || back.Host != s.Host {
			t.Fatalf("a snapshot read (%+v) does not read back: %v", s, err)
		}
	})
}
