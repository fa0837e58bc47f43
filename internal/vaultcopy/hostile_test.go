package vaultcopy_test

import (
	"os"
	"strings"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/chunk"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

// copyStores are the stores a hostile-storage test runs its copy on: a
// real directory, and a bucket on a real S3 server (versitygw).
func copyStores(t *testing.T) map[string]func(t *testing.T) blob.Store {
	return map[string]func(t *testing.T) blob.Store{
		"dir": func(t *testing.T) blob.Store { _, s := dirStore(t); return s },
		"s3": func(t *testing.T) blob.Store {
			srv := s3test.Start(t)
			s, err := blob.NewS3(t.Context(), srv.Config)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

// pairOn makes a source vault on a directory and a copy of it on store.
func pairOn(t *testing.T, store blob.Store) (src, dst *site) {
	t.Helper()
	ctx := ctxT(t)
	src, dst = &site{}, &site{store: store}
	src.dir, src.store = dirStore(t)
	var err error
	if src.v, err = vault.Init(ctx, src.store, []byte("site-a"), cheap); err != nil {
		t.Fatal(err)
	}
	opts := cheap
	opts.PackSize = 0
	if dst.v, err = vault.InitCopyOf(ctx, dst.store, []byte("site-b"), src.v, opts); err != nil {
		t.Fatal(err)
	}
	return src, dst
}

// transplant copies the objects under prefix that from has and to lacks,
// byte for byte, as an attacker with access to both stores could. It
// returns their names.
func transplant(t *testing.T, from, to blob.Store, prefix string) []string {
	t.Helper()
	ctx := ctxT(t)
	have := map[string]bool{}
	to.List(ctx, prefix, func(i blob.Info) error { have[i.Name] = true; return nil })
	var moved []string
	err := from.List(ctx, prefix, func(i blob.Info) error {
		if have[i.Name] {
			return nil
		}
		data, err := from.Get(ctx, i.Name)
		if err != nil {
			return err
		}
		moved = append(moved, i.Name)
		return to.Put(ctx, i.Name, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	return moved
}

// pending is what vault status --copy reports for the copy.
func pending(t *testing.T, a *site, b *site) ([]*recovery.Point, []string) {
	t.Helper()
	p, warnings, err := vaultcopy.Pending(ctxT(t), a.v, b.store, "")
	if err != nil {
		t.Fatal(err)
	}
	return p, warnings
}

// TestPlantedIndexDoesNotHideData (issue 10 item 1): index objects of the
// source copied into the copy, which shares the data key, must not make
// the copy believe it holds chunks it lacks. Index objects are bound to
// their vault's ID: the planted ones fail to open at the copy and are
// named, the point is not committed there without its data, status keeps
// reporting it pending, and once the planted objects are gone the copy
// completes.
func TestPlantedIndexDoesNotHideData(t *testing.T) {
	for name, store := range copyStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			a, b := pairOn(t, store(t))
			d := newDisk(t, 3<<20, 21)
			backupDisk(t, a.v, "web1", d)
			if _, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{}); err != nil {
				t.Fatal(err)
			}
			d.scribble(t, 16, 22)
			p2 := backupDisk(t, a.v, "web1", d)
			planted := transplant(t, a.store, b.store, "index/")
			if len(planted) == 0 {
				t.Fatal("nothing to plant")
			}

			// The copy either refuses, naming a planted object, or does
			// without them (reads that skip bad objects); either way no
			// point is committed without its data.
			_, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
			rep, verr := maintenance.Verify(ctx, b.v, maintenance.VerifyOptions{})
			if verr != nil {
				t.Fatal(verr)
			}
			named := false
			for _, pr := range rep.Problems {
				named = named || pr.Object == planted[0]
				if !strings.HasPrefix(pr.Object, "index/") {
					t.Errorf("verify at the copy: %s: %s (data missing)", pr.Object, pr.Error)
				}
			}
			if !named {
				t.Errorf("verify at the copy does not name the planted %s: %+v", planted[0], rep.Problems)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "index/") {
					t.Fatalf("copy error does not name a planted index object %v: %v", planted, err)
				}
				if pointIDs(t, b.v)[p2.ID] {
					t.Fatal("the point was committed at the copy")
				}
				if p, _ := pending(t, a, b); len(p) != 1 || p[0].ID != p2.ID {
					t.Fatalf("status reports %d pending points, want the one not copied", len(p))
				}
				for _, n := range planted {
					b.store.Delete(ctx, n)
				}
				if _, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{}); err != nil {
					t.Fatal(err)
				}
			} else {
				for _, n := range planted {
					b.store.Delete(ctx, n)
				}
			}
			if p, _ := pending(t, a, b); len(p) != 0 {
				t.Fatalf("status reports %d pending points after the copy", len(p))
			}
			verifyClean(t, b.v)
			restoreEquals(t, b.v, p2.ID, d.data)
		})
	}
}

// TestForgedCopyMarkersIgnored (issue 10 item 4): a marker at the copy
// whose name does not authenticate — an empty one planted by name, one
// with a made-up tag, or the genuine marker of a second copy of the same
// source — records nothing: status reports the point pending, names the
// marker, and the copy copies the point.
func TestForgedCopyMarkersIgnored(t *testing.T) {
	for name, store := range copyStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			a, b := pairOn(t, store(t))
			_, other := dirStore(t)
			c, err := vault.InitCopyOf(ctx, other, []byte("site-c"), a.v, cheap)
			if err != nil {
				t.Fatal(err)
			}
			d := newDisk(t, 2<<20, 31)
			p1 := backupDisk(t, a.v, "web1", d)
			d.scribble(t, 8, 32)
			p2 := backupDisk(t, a.v, "web1", d)
			d.scribble(t, 8, 33)
			p3 := backupDisk(t, a.v, "web1", d)
			// The second copy holds p3 and its genuine marker.
			if _, err := vaultcopy.Run(ctx, a.v, c, vaultcopy.Options{}); err != nil {
				t.Fatal(err)
			}
			forged := []string{
				"copied/" + p1.ID.String(),
				"copied/" + p2.ID.String() + "-0123456789abcdef0123456789abcdef",
			}
			for _, n := range forged {
				if err := b.store.Put(ctx, n, nil); err != nil {
					t.Fatal(err)
				}
			}
			stolen := c.CopyMarkerName(c.Config(), p3.ID)
			forged = append(forged, stolen)
			transplant(t, other, b.store, stolen)

			p, warnings := pending(t, a, b)
			if len(p) != 3 {
				t.Fatalf("status reports %d pending points, want all 3 despite the forged markers", len(p))
			}
			for _, n := range forged {
				if !strings.Contains(strings.Join(warnings, "\n"), n) {
					t.Errorf("status does not name forged marker %s: %q", n, warnings)
				}
			}
			st, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if st.PointsCopied != 3 || len(st.Warnings) != len(forged) {
				t.Fatalf("copy: %d points, warnings %q; want 3 points and the %d forged markers named", st.PointsCopied, st.Warnings, len(forged))
			}
			if p, _ := pending(t, a, b); len(p) != 0 {
				t.Fatalf("%d points pending after the copy", len(p))
			}
			verifyClean(t, b.v)
			restoreEquals(t, b.v, p3.ID, d.data)
		})
	}
}

// TestPlantedPointWithoutDataCopiedAgain: a source point planted at the
// copy (points are copied verbatim, so it is a genuine object) has no
// marker there: it is not taken as copied, and its data is.
func TestPlantedPointWithoutDataCopiedAgain(t *testing.T) {
	ctx := ctxT(t)
	a, b := newPair(t)
	d := newDisk(t, 2<<20, 41)
	p := backupDisk(t, a.v, "web1", d)
	for _, prefix := range []string{"points/", "manifests/"} {
		transplant(t, a.store, b.store, prefix)
	}
	if pend, _ := pending(t, a, b); len(pend) != 1 {
		t.Fatalf("status: %d pending, want the planted point pending", len(pend))
	}
	st, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{})
	if err != nil || st.PointsCopied != 1 || st.Chunks == 0 {
		t.Fatalf("copy: %+v, %v; want the point's chunks copied", st, err)
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, p.ID, d.data)
}

// TestPackBinding: pack headers and index objects are bound to the vault
// that wrote them; a copy accepts its origin's pack headers (so packs can
// be copied verbatim) but not its index objects, and no vault accepts a
// copy's packs or the objects of a version 1 vault, nor the other way.
func TestPackBinding(t *testing.T) {
	newCodec := func(id, origin string) *chunk.Codec {
		c, err := chunk.NewCodec([32]byte{1}, chunk.NewHasher([32]byte{2}), chunk.LevelFastest, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if id != "" {
			c.Bind(id, origin)
		}
		return c
	}
	src, cp, v1 := newCodec("aaaa", ""), newCodec("bbbb", "aaaa"), newCodec("", "")
	pack := func(c *chunk.Codec) []byte {
		b := chunk.NewPackBuilder(1 << 20)
		blob, _ := c.EncodeBlob(nil, chunk.ID{9}, []byte("x"), nil)
		b.Add(chunk.ID{9}, blob, 1)
		data, _, _ := b.Finish(c)
		return data
	}
	opens := func(c *chunk.Codec, data []byte) bool {
		hl, err := chunk.PackHeaderLength(data[len(data)-4:], int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		end := int64(len(data)) - 4 - hl
		_, err = chunk.ParsePackHeader(c, data[end:len(data)-4], end)
		return err == nil
	}
	for _, tc := range []struct {
		name         string
		writer, rdr  *chunk.Codec
		packs, index bool
	}{
		{"own", cp, cp, true, true},
		{"origin's at the copy", src, cp, true, false},
		{"copy's at the origin", cp, src, false, false},
		{"version 1 at a bound vault", v1, src, false, false},
		{"bound at a version 1 vault", src, v1, false, false},
	} {
		if got := opens(tc.rdr, pack(tc.writer)); got != tc.packs {
			t.Errorf("%s: pack header accepted %v, want %v", tc.name, got, tc.packs)
		}
		_, err := tc.rdr.OpenIndex(tc.writer.SealIndex(&chunk.IndexFile{}))
		if got := err == nil; got != tc.index {
			t.Errorf("%s: index object accepted %v, want %v", tc.name, got, tc.index)
		}
	}
}

// TestVersion1VaultStillWorks: a vault created before the binding
// (format version 1) is read and written as it is, unbound, and can be
// the source of a new, bound copy.
func TestVersion1VaultStillWorks(t *testing.T) {
	ctx := ctxT(t)
	a, b := &site{}, &site{}
	a.dir, a.store = dirStore(t)
	b.dir, b.store = dirStore(t)
	old := cheap
	old.Version = 1
	var err error
	if a.v, err = vault.Init(ctx, a.store, []byte("site-a"), old); err != nil {
		t.Fatal(err)
	}
	d := newDisk(t, 2<<20, 51)
	backupDisk(t, a.v, "web1", d)
	if a.v, err = vault.Open(ctx, a.store, []byte("site-a"), cheap); err != nil || a.v.Config().Version != 1 {
		t.Fatalf("reopening the version 1 vault: %v, %+v", err, a.v.Config())
	}
	d.scribble(t, 8, 52)
	p := backupDisk(t, a.v, "web1", d)
	verifyClean(t, a.v)
	if b.v, err = vault.InitCopyOf(ctx, b.store, []byte("site-b"), a.v, cheap); err != nil {
		t.Fatal(err)
	}
	if b.v.Config().Version != 2 || b.v.Config().Origin != a.v.Config().ID {
		t.Fatalf("copy config %+v", b.v.Config())
	}
	if _, err := vaultcopy.Run(ctx, a.v, b.v, vaultcopy.Options{}); err != nil {
		t.Fatal(err)
	}
	verifyClean(t, b.v)
	restoreEquals(t, b.v, p.ID, d.data)
	restoreEquals(t, a.v, p.ID, d.data)
	if _, err := maintenance.Prune(ctx, a.v, maintenance.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	verifyClean(t, a.v)
	raw, _ := os.ReadFile(a.dir + "/config")
	if !strings.Contains(string(raw), `"version": 1`) {
		t.Fatalf("the version 1 vault's config changed: %s", raw)
	}
}
