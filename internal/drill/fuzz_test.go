package drill

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/crypto"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vault"
)

// FuzzResult: bytes stored as a drill result (drills/<id>) are skipped
// with a warning by List, which never fails or panics on them and costs
// what they weigh; only what the vault sealed counts. The plaintext parse
// (reached only with the data key) refuses or reads a version 1 result.
func FuzzResult(f *testing.F) {
	ctx := context.Background()
	store := blob.NewMem()
	v, err := vault.Init(ctx, store, []byte("fuzz"), vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		f.Fatal(err)
	}
	r := &Result{Point: "ab", Machine: "web1", Time: time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC), OK: true, RTOMS: 1200, Probe: "guest-agent"}
	if err := Save(ctx, v, r); err != nil {
		f.Fatal(err)
	}
	sealed, _ := store.Get(ctx, vault.ObjectName(vault.KindDrill, r.ID))
	store.Delete(ctx, vault.ObjectName(vault.KindDrill, r.ID))
	plain, _ := json.Marshal(r)
	f.Add(sealed)
	f.Add(plain)
	f.Fuzz(func(t *testing.T, data []byte) {
		testenv.CheckAlloc(t, len(data), 64, 0, func() {
			if p, err := parse(data); err == nil && p.Version != 1 {
				t.Fatalf("result of version %d read", p.Version)
			}
		})
		name := vault.ObjectName(vault.KindDrill, chunk.ObjectID(data))
		if store.Put(ctx, name, data) != nil {
			return
		}
		defer store.Delete(ctx, name)
		var got []*Result
		var err error
		testenv.CheckAlloc(t, len(data), 8, 0, func() { got, err = List(ctx, v, func(string) {}) })
		if err != nil {
			t.Fatalf("a stored object failed the listing: %v", err)
		}
		if len(got) > 0 && string(data) != string(sealed) {
			t.Fatalf("%d bytes the fuzzer made were read as a drill result", len(data))
		}
	})
}
