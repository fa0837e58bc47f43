package vault

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/clock"
	"lifeboat/internal/crypto"
)

// Snapshots are saved sealed and bound to their vault, read back newest
// first, trimmed to the newest few; one planted from another vault (same
// data key: a copy) or damaged is skipped with a warning, never read.
func TestCatalogSnapshots(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC))
	var warnings []string
	opts := Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, Clock: fc, Warn: func(s string) { warnings = append(warnings, s) }}
	store := blob.NewMem()
	v, err := Init(ctx, store, []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.LatestCatalog(ctx); !errors.Is(err, ErrNoCatalog) {
		t.Fatalf("an empty vault's snapshot: %v", err)
	}
	for i := range 4 {
		if _, err := v.SaveCatalog(ctx, json.RawMessage(`{"n":`+string(rune('0'+i))+`}`)); err != nil {
			t.Fatal(err)
		}
		fc.Advance(time.Minute)
	}
	if _, err := v.SaveCatalog(ctx, json.RawMessage(`[1]`)); err == nil {
		t.Fatal("a document that is not an object was saved")
	}
	s, err := v.LatestCatalog(ctx)
	if err != nil || string(s.Doc) != `{"n":3}` {
		t.Fatalf("latest: %s %v", s.Doc, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.TrimCatalogs(ctx, 2))
	all, err := v.CatalogSnapshots(ctx)
	if err != nil || len(all) != 2 || string(all[1].Doc) != `{"n":2}` {
		t.Fatalf("after trimming to 2: %d %v", len(all), err)
	}

	// A copy shares the data key: its snapshot, planted here, does not open.
	cp, err := InitCopyOf(ctx, blob.NewMem(), []byte("pw"), v, opts)
	must(err)
	fc.Advance(time.Hour)
	id, err := cp.SaveCatalog(ctx, json.RawMessage(`{"planted":true}`))
	must(err)
	raw, err := cp.Store().Get(ctx, ObjectName(KindCatalog, id))
	must(err)
	must(store.Put(ctx, ObjectName(KindCatalog, id), raw))
	must(store.Put(ctx, "catalog/readme", []byte("hello")))
	s, err = v.LatestCatalog(ctx)
	if err != nil || string(s.Doc) != `{"n":3}` {
		t.Fatalf("latest with a planted snapshot: %s %v", s.Doc, err)
	}
	if w := strings.Join(warnings, "\n"); !strings.Contains(w, ObjectName(KindCatalog, id)) || !strings.Contains(w, "catalog/readme") {
		t.Fatalf("warnings do not name the objects skipped:\n%s", w)
	}
}
