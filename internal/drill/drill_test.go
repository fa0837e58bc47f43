package drill

import (
	"context"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/vault"
)

func TestSummary(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		r    *Result
		want string
	}{
		{nil, "-"},
		{&Result{OK: true, RTOMS: 8231, Time: now.Add(-3 * time.Hour)}, "ok 8.2s 3h ago"},
		{&Result{OK: true, RTOMS: 500, Time: now.Add(-90 * time.Second)}, "ok 0.5s 1m30s ago"},
		{&Result{OK: false, Time: now.Add(-72 * time.Hour)}, "FAILED 3d ago"},
		{&Result{OK: false, Time: now.Add(-5 * time.Minute)}, "FAILED 5m ago"},
	}
	for _, tc := range tests {
		if got := Summary(tc.r, now); got != tc.want {
			t.Errorf("Summary(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

// TestSaveList: results round-trip through the vault, the newest per
// point wins, a planted object is skipped with a warning naming it, and a
// result sealed for another vault does not open here.
func TestSaveList(t *testing.T) {
	ctx := context.Background()
	open := func() (*vault.Vault, blob.Store) {
		s := blob.NewMem()
		v, err := vault.Init(ctx, s, []byte("pw"), vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return v, s
	}
	v, store := open()
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for i, r := range []*Result{
		{Point: "aa", Time: t0, OK: false, Error: "no"},
		{Point: "aa", Time: t0.Add(time.Hour), OK: true, RTOMS: 900},
		{Point: "bb", Time: t0, OK: true, RTOMS: 100},
	} {
		if err := Save(ctx, v, r); err != nil || r.ID.IsZero() {
			t.Fatalf("Save %d: %v", i, err)
		}
	}
	if err := store.Put(ctx, "drills/readme.txt", []byte("planted")); err != nil {
		t.Fatal(err)
	}
	other, _ := open()
	foreign := &Result{Point: "cc", Time: t0, OK: true}
	if err := Save(ctx, other, foreign); err != nil {
		t.Fatal(err)
	}
	sealed, _ := other.Store().Get(ctx, vault.ObjectName(vault.KindDrill, foreign.ID))
	store.Put(ctx, vault.ObjectName(vault.KindDrill, foreign.ID), sealed)
	var warned []string
	rs, err := List(ctx, v, func(s string) { warned = append(warned, s) })
	if err != nil {
		t.Fatal(err)
	}
	latest := Latest(rs)
	if len(rs) != 3 || !latest["aa"].OK || latest["aa"].RTOMS != 900 || latest["bb"].RTOMS != 100 || latest["cc"] != nil {
		t.Fatalf("List/Latest: %d results, latest %+v", len(rs), latest)
	}
	if len(warned) != 2 || !strings.Contains(strings.Join(warned, "\n"), "drills/readme.txt") {
		t.Fatalf("warnings: %q, want the planted and the foreign object named", warned)
	}
}
