package vaultcopy_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

// indexGets counts the index objects read through it.
type indexGets struct {
	blob.Store
	n atomic.Int64
}

func (s *indexGets) Get(ctx context.Context, name string) ([]byte, error) {
	if strings.HasPrefix(name, "index/") {
		s.n.Add(1)
	}
	return s.Store.Get(ctx, name)
}

// A copy reads both vaults' indexes through the local index cache: the
// second copy reads only the source's index objects written since the
// first, not the whole index again.
func TestCopyThroughIndexCache(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	cache := t.TempDir()
	src := &indexGets{Store: a.store}
	reopen := func(s *site, pw string) *vault.Vault {
		o := cheap
		o.CacheDir = cache
		store := s.store
		if s == a {
			store = src
		}
		v, err := vault.Open(ctx, store, []byte(pw), o)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	web := newDisk(t, 6<<20, 1)
	for i := 0; i < 4; i++ {
		backupDisk(t, a.v, "web1", web)
		web.scribble(t, 3, int64(i))
	}
	if _, err := vaultcopy.Run(ctx, reopen(a, "site-a"), reopen(b, "site-b"), vaultcopy.Options{}); err != nil {
		t.Fatal(err)
	}
	objects := func() int64 {
		es, _ := os.ReadDir(filepath.Join(a.dir, "index"))
		return int64(len(es))
	}
	before := objects()
	p := backupDisk(t, a.v, "web1", web)
	added := objects() - before
	src.n.Store(0)
	st, err := vaultcopy.Run(ctx, reopen(a, "site-a"), reopen(b, "site-b"), vaultcopy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Points) != 1 || st.Points[0] != p.ID.String() {
		t.Fatalf("second copy sent %v, want the new point", st.Points)
	}
	if got := src.n.Load(); added == 0 || got != added {
		t.Fatalf("second copy read %d of the source's %d index objects, %d of them new", got, before+added, added)
	}
	restoreEquals(t, reopen(b, "site-b"), p.ID, web.data)
	verifyClean(t, b.v)
}
