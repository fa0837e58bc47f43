// Package blobtest is the conformance suite for blob.Store implementations.
//
// Every backend and every wrapper runs the same suite, so the contract in
// the blob package documentation is checked in one place:
//
//	func TestMem(t *testing.T) {
//		blobtest.Run(t, func(t *testing.T) blob.Store { return blob.NewMem() })
//	}
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/blob"
)

// Run checks that the stores returned by newStore meet the blob.Store
// contract. newStore is called once per subtest and must return an empty
// store that is not shared with any other call; it registers its own
// cleanup with t.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"PutGet", testPutGet},
		{"PutCopiesData", testPutCopiesData},
		{"Overwrite", testOverwrite},
		{"Missing", testMissing},
		{"NotADirectory", testNotADirectory},
		{"GetRange", testGetRange},
		{"Stat", testStat},
		{"AllowedCharacters", testAllowedCharacters},
		{"List", testList},
		{"ListStops", testListStops},
		{"ListPrefixOutsideStore", testListPrefixOutsideStore},
		{"Delete", testDelete},
		{"InvalidNames", testInvalidNames},
		{"Concurrent", testConcurrent},
		{"AtomicOverwrite", testAtomicOverwrite},
		{"Cancelled", testCancelled},
		{"SizeCaps", testSizeCaps},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// payload returns n deterministic pseudo-random bytes that differ by seed.
func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustPut(t *testing.T, s blob.Store, name string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), name, data); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", name, len(data), err)
	}
}

func mustGet(t *testing.T, s blob.Store, name string) []byte {
	t.Helper()
	data, err := s.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return data
}

// checkEqual fails unless got equals want, without printing megabytes.
func checkEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Errorf("%s: got %d bytes, want %d", what, len(got), len(want))
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s: %d bytes, first difference at offset %d", what, len(got), i)
			return
		}
	}
}

// listAll returns the objects under prefix keyed by name. It fails the test
// if List fails, reports a name twice, or reports a name that is invalid or
// does not have the prefix.
func listAll(t *testing.T, s blob.Store, prefix string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := s.List(t.Context(), prefix, func(info blob.Info) error {
		if err := blob.ValidName(info.Name); err != nil {
			t.Errorf("List(%q) reported %q: %v", prefix, info.Name, err)
		}
		if len(info.Name) < len(prefix) || info.Name[:len(prefix)] != prefix {
			t.Errorf("List(%q) reported %q, which lacks the prefix", prefix, info.Name)
		}
		if _, dup := got[info.Name]; dup {
			t.Errorf("List(%q) reported %q twice", prefix, info.Name)
		}
		got[info.Name] = info.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func sortedNames(m map[string]int64) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func testPutGet(t *testing.T, s blob.Store) {
	for i, size := range []int{0, 1, 5 << 20} {
		name := fmt.Sprintf("objects/size-%d", size)
		want := payload(uint64(i), size)
		mustPut(t, s, name, want)
		got := mustGet(t, s, name)
		checkEqual(t, "Get("+name+")", got, want)
		info, err := s.Stat(t.Context(), name)
		if err != nil {
			t.Fatalf("Stat(%q): %v", name, err)
		}
		if info.Size != int64(size) || info.Name != name {
			t.Errorf("Stat(%q) = %+v, want size %d", name, info, size)
		}
	}
	got := listAll(t, s, "objects/")
	want := map[string]int64{"objects/size-0": 0, "objects/size-1": 1, "objects/size-5242880": 5 << 20}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List(objects/) = %v, want %v", got, want)
	}
}

func testPutCopiesData(t *testing.T, s blob.Store) {
	data := []byte("original")
	mustPut(t, s, "copied", data)
	copy(data, "mutated!")
	checkEqual(t, "Get after the caller changed its buffer", mustGet(t, s, "copied"), []byte("original"))

	got := mustGet(t, s, "copied")
	copy(got, "mutated!")
	checkEqual(t, "Get after the caller changed a returned buffer", mustGet(t, s, "copied"), []byte("original"))
}

func testOverwrite(t *testing.T, s blob.Store) {
	first := payload(1, 4096)
	second := payload(2, 100) // shorter: no stale tail may survive
	mustPut(t, s, "config", first)
	mustPut(t, s, "config", second)
	checkEqual(t, "Get after overwrite", mustGet(t, s, "config"), second)
	info, err := s.Stat(t.Context(), "config")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Size != int64(len(second)) {
		t.Errorf("Stat after overwrite: size %d, want %d", info.Size, len(second))
	}
	if got := listAll(t, s, ""); len(got) != 1 || got["config"] != int64(len(second)) {
		t.Errorf("List after overwrite = %v, want only config of %d bytes", got, len(second))
	}

	third := payload(3, 10000) // longer again
	mustPut(t, s, "config", third)
	checkEqual(t, "Get after second overwrite", mustGet(t, s, "config"), third)
}

func testMissing(t *testing.T, s blob.Store) {
	ctx := t.Context()
	mustPut(t, s, "present", []byte("x"))
	for _, name := range []string{"absent", "present/child", "packs/ab/abcdef"} {
		if _, err := s.Get(ctx, name); !blob.IsNotExist(err) {
			t.Errorf("Get(%q) = %v, want an IsNotExist error", name, err)
		}
		if _, err := s.GetRange(ctx, name, 0, 1); !blob.IsNotExist(err) {
			t.Errorf("GetRange(%q) = %v, want an IsNotExist error", name, err)
		}
		if _, err := s.Stat(ctx, name); !blob.IsNotExist(err) {
			t.Errorf("Stat(%q) = %v, want an IsNotExist error", name, err)
		}
	}
	// ErrNotExist is permanent: the Retry wrapper must not spin on it.
	_, err := s.Get(ctx, "absent")
	if !blob.IsPermanent(err) {
		t.Errorf("Get of a missing object: %v is not IsPermanent", err)
	}
}

// testNotADirectory checks that the namespace is flat: the leading
// components of an object's name are not themselves objects.
func testNotADirectory(t *testing.T, s blob.Store) {
	ctx := t.Context()
	mustPut(t, s, "packs/ab/abcdef", []byte("pack"))
	for _, name := range []string{"packs", "packs/ab"} {
		if _, err := s.Get(ctx, name); !blob.IsNotExist(err) {
			t.Errorf("Get(%q) = %v, want an IsNotExist error", name, err)
		}
		if _, err := s.GetRange(ctx, name, 0, 1); !blob.IsNotExist(err) {
			t.Errorf("GetRange(%q) = %v, want an IsNotExist error", name, err)
		}
		if info, err := s.Stat(ctx, name); !blob.IsNotExist(err) {
			t.Errorf("Stat(%q) = %+v, %v, want an IsNotExist error", name, info, err)
		}
	}
	for _, name := range []string{"packs", "packs/ab", "packs/ab/abcdef/child"} {
		if err := s.Delete(ctx, name); err != nil {
			t.Errorf("Delete(%q), which is no object: %v", name, err)
		}
	}
	if got := listAll(t, s, ""); len(got) != 1 {
		t.Errorf("List = %v, want only packs/ab/abcdef", sortedNames(got))
	}
	checkEqual(t, "Get(packs/ab/abcdef)", mustGet(t, s, "packs/ab/abcdef"), []byte("pack"))
}

func testGetRange(t *testing.T, s blob.Store) {
	ctx := t.Context()
	const size = 1000
	data := payload(7, size)
	mustPut(t, s, "index/range", data)

	for _, r := range []struct{ off, n int64 }{
		{0, 1}, {0, 10}, {500, 100}, {990, 10}, {999, 1}, {0, size}, {1, size - 1},
		{0, 0}, {500, 0}, {size, 0},
	} {
		got, err := s.GetRange(ctx, "index/range", r.off, r.n)
		if err != nil {
			t.Errorf("GetRange(%d, %d): %v", r.off, r.n, err)
			continue
		}
		checkEqual(t, fmt.Sprintf("GetRange(%d, %d)", r.off, r.n), got, data[r.off:r.off+r.n])
	}

	for _, r := range []struct{ off, n int64 }{
		{995, 10},           // starts inside, ends past the end
		{size, 1},           // starts at the end
		{size + 1, 0},       // starts past the end, empty
		{5000, 10},          // far past the end
		{10, math.MaxInt64}, // offset+length overflows
		{math.MaxInt64, 1},  // offset+length overflows
		{0, size + 1},       // one byte too long
		{-1, 10},            // negative offset
		{10, -1},            // negative length
	} {
		got, err := s.GetRange(ctx, "index/range", r.off, r.n)
		if err == nil {
			t.Errorf("GetRange(%d, %d) = %d bytes, want an error", r.off, r.n, len(got))
			continue
		}
		if blob.IsNotExist(err) {
			t.Errorf("GetRange(%d, %d) = %v: a bad range of an existing object is not IsNotExist", r.off, r.n, err)
		}
		if !blob.IsPermanent(err) {
			t.Errorf("GetRange(%d, %d) = %v: retrying cannot fix a bad range, want IsPermanent", r.off, r.n, err)
		}
		if r.off >= 0 && r.n >= 0 && r.off <= math.MaxInt64-r.n && !errors.Is(err, blob.ErrOutOfRange) {
			t.Errorf("GetRange(%d, %d) = %v: past the end of the object, want ErrOutOfRange", r.off, r.n, err)
		}
	}

	// A range of the empty object.
	mustPut(t, s, "index/empty", nil)
	if got, err := s.GetRange(ctx, "index/empty", 0, 0); err != nil || len(got) != 0 {
		t.Errorf("GetRange(empty, 0, 0) = %q, %v, want no bytes and no error", got, err)
	}
	if _, err := s.GetRange(ctx, "index/empty", 0, 1); err == nil || blob.IsNotExist(err) {
		t.Errorf("GetRange(empty, 0, 1) = %v, want a past-the-end error", err)
	}

	// A range of a large object, across what might be buffer boundaries.
	big := payload(8, 3<<20+17)
	mustPut(t, s, "packs/00/big", big)
	for _, r := range []struct{ off, n int64 }{{1<<20 - 3, 1 << 20}, {int64(len(big)) - 100, 100}} {
		got, err := s.GetRange(ctx, "packs/00/big", r.off, r.n)
		if err != nil {
			t.Fatalf("GetRange(big, %d, %d): %v", r.off, r.n, err)
		}
		checkEqual(t, fmt.Sprintf("GetRange(big, %d, %d)", r.off, r.n), got, big[r.off:r.off+r.n])
	}
}

func testStat(t *testing.T, s blob.Store) {
	ctx := t.Context()
	for _, size := range []int{0, 1, 12345} {
		name := fmt.Sprintf("manifests/m%d", size)
		mustPut(t, s, name, payload(uint64(size), size))
		info, err := s.Stat(ctx, name)
		if err != nil {
			t.Fatalf("Stat(%q): %v", name, err)
		}
		if info.Name != name || info.Size != int64(size) {
			t.Errorf("Stat(%q) = %+v, want size %d", name, info, size)
		}
		// Stored is the store's own clock: allow for skew, not for nonsense.
		if !info.Stored.IsZero() && time.Since(info.Stored).Abs() > time.Hour {
			t.Errorf("Stat(%q): stored at %v, not about now", name, info.Stored)
		}
	}
}

// testAllowedCharacters puts names using every allowed character, including
// components that merely start or end with dots.
func testAllowedCharacters(t *testing.T, s blob.Store) {
	names := []string{
		"abcdefghijklmnopqrstuvwxyz0123456789._-",
		"a/b/c/d/e/f/g/h",
		"dots/..a/a../.a/a.",
		"dots/...",
		"-/_/0",
	}
	want := map[string]int64{}
	for i, name := range names {
		if err := blob.ValidName(name); err != nil {
			t.Fatalf("test name %q is invalid: %v", name, err)
		}
		data := payload(uint64(i), i+1)
		mustPut(t, s, name, data)
		checkEqual(t, "Get("+name+")", mustGet(t, s, name), data)
		want[name] = int64(i + 1)
	}
	if got := listAll(t, s, ""); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

func testList(t *testing.T, s blob.Store) {
	all := map[string]int64{
		"config":            6,
		"packs/ab/abcdef":   10,
		"packs/ab/abc123":   11,
		"packs/ac/ac0000":   12,
		"packs/b0/b00000":   13,
		"packsx/y":          14,
		"index/0001":        15,
		"snapshots/a/b/c/d": 16,
	}
	for name, size := range all {
		mustPut(t, s, name, payload(uint64(size), int(size)))
	}
	pick := func(names ...string) map[string]int64 {
		m := map[string]int64{}
		for _, n := range names {
			m[n] = all[n]
		}
		return m
	}
	for _, tc := range []struct {
		prefix string
		want   map[string]int64
	}{
		{"", all},
		{"packs/", pick("packs/ab/abcdef", "packs/ab/abc123", "packs/ac/ac0000", "packs/b0/b00000")},
		{"packs/a", pick("packs/ab/abcdef", "packs/ab/abc123", "packs/ac/ac0000")},
		{"packs/ab/", pick("packs/ab/abcdef", "packs/ab/abc123")},
		{"packs/ab", pick("packs/ab/abcdef", "packs/ab/abc123")},
		{"packs/ab/abc", pick("packs/ab/abcdef", "packs/ab/abc123")},
		{"packs/ab/abcdef", pick("packs/ab/abcdef")},
		{"packs", pick("packs/ab/abcdef", "packs/ab/abc123", "packs/ac/ac0000", "packs/b0/b00000", "packsx/y")},
		{"p", pick("packs/ab/abcdef", "packs/ab/abc123", "packs/ac/ac0000", "packs/b0/b00000", "packsx/y")},
		{"con", pick("config")},
		{"config", pick("config")},
		{"config/", pick()},
		{"config/x/", pick()},
		{"config/x/y", pick()},
		{"snapshots/a/b/", pick("snapshots/a/b/c/d")},
		{"packs/ab/abcdefg", pick()},
		{"packs/zz/", pick()},
		{"nothing/", pick()},
		{"z", pick()},
	} {
		got := listAll(t, s, tc.prefix)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.prefix, sortedNames(got), sortedNames(tc.want))
			continue
		}
		for name, size := range got {
			if size != tc.want[name] {
				t.Errorf("List(%q) reported %s with size %d, want %d", tc.prefix, name, size, tc.want[name])
			}
		}
	}
}

func testListStops(t *testing.T, s blob.Store) {
	for i := range 5 {
		mustPut(t, s, fmt.Sprintf("points/p%d", i), []byte{byte(i)})
	}
	stop := errors.New("stop listing")
	calls := 0
	err := s.List(t.Context(), "points/", func(blob.Info) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("List returned %v, want the error from fn", err)
	}
	if calls != 1 {
		t.Errorf("fn called %d times after returning an error, want 1", calls)
	}

	// The error must come back even when fn fails late in the listing.
	calls = 0
	err = s.List(t.Context(), "points/", func(blob.Info) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Errorf("List with fn failing on the third object: err %v after %d calls, want the error after 3", err, calls)
	}
}

// testListPrefixOutsideStore checks that a prefix cannot escape the store:
// it may be rejected (with a permanent error) or match nothing, but it must
// never report objects from outside.
func testListPrefixOutsideStore(t *testing.T, s blob.Store) {
	mustPut(t, s, "packs/ab/abcdef", []byte("x"))
	for _, prefix := range []string{"../", "./", "/", "packs/../", "packs/./ab", "packs//"} {
		var got []string
		err := s.List(t.Context(), prefix, func(info blob.Info) error {
			got = append(got, info.Name)
			return nil
		})
		if len(got) > 0 {
			t.Errorf("List(%q) reported %q", prefix, got)
		}
		if err != nil && !blob.IsPermanent(err) {
			t.Errorf("List(%q) = %v, want no error or an IsPermanent one", prefix, err)
		}
	}
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := t.Context()
	mustPut(t, s, "sessions/s1", []byte("running"))
	mustPut(t, s, "sessions/s2", []byte("running"))
	if err := s.Delete(ctx, "sessions/s1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, "sessions/s1"); !blob.IsNotExist(err) {
		t.Errorf("Get after Delete = %v, want IsNotExist", err)
	}
	if _, err := s.Stat(ctx, "sessions/s1"); !blob.IsNotExist(err) {
		t.Errorf("Stat after Delete = %v, want IsNotExist", err)
	}
	if got := listAll(t, s, "sessions/"); len(got) != 1 || got["sessions/s2"] != 7 {
		t.Errorf("List after Delete = %v, want only sessions/s2", got)
	}
	if err := s.Delete(ctx, "sessions/s1"); err != nil {
		t.Errorf("second Delete of the same object: %v", err)
	}
	if err := s.Delete(ctx, "never/existed"); err != nil {
		t.Errorf("Delete of a missing object: %v", err)
	}
	// Putting a deleted name again works.
	mustPut(t, s, "sessions/s1", []byte("again"))
	checkEqual(t, "Get after re-Put", mustGet(t, s, "sessions/s1"), []byte("again"))
}

func testInvalidNames(t *testing.T, s blob.Store) {
	ctx := t.Context()
	invalid := []string{
		"", "/", "/abs", "trailing/", "a//b", ".", "..", "./a", "a/./b", "a/../b", "../escape",
		"Upper", "space name", `back\slash`, "nul\x00", "tab\t", "ümlaut", "colon:", "star*", "a/b/",
	}
	for _, name := range invalid {
		if blob.ValidName(name) == nil {
			t.Fatalf("test name %q is valid", name)
		}
		check := func(op string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("%s(%q) succeeded, want an error", op, name)
			} else if !blob.IsPermanent(err) {
				t.Errorf("%s(%q) = %v, want an IsPermanent error", op, name, err)
			}
		}
		err := s.Put(ctx, name, []byte("data"))
		check("Put", err)
		if blob.IsNotExist(err) {
			t.Errorf("Put(%q) = %v: an invalid name is not a missing object", name, err)
		}
		_, err = s.Get(ctx, name)
		check("Get", err)
		_, err = s.GetRange(ctx, name, 0, 1)
		check("GetRange", err)
		_, err = s.Stat(ctx, name)
		check("Stat", err)
		check("Delete", s.Delete(ctx, name))
	}
	if got := listAll(t, s, ""); len(got) != 0 {
		t.Errorf("after Puts of invalid names, List = %v, want nothing", sortedNames(got))
	}
}

func testConcurrent(t *testing.T, s blob.Store) {
	const workers, perWorker = 16, 8
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				name := fmt.Sprintf("packs/%02x/w%d-%d", w, w, i)
				data := payload(uint64(w*1000+i), 1000+w*100+i)
				if err := s.Put(ctx, name, data); err != nil {
					errs <- fmt.Errorf("Put(%s): %w", name, err)
					return
				}
				got, err := s.Get(ctx, name)
				if err != nil {
					errs <- fmt.Errorf("Get(%s): %w", name, err)
					return
				}
				if !bytes.Equal(got, data) {
					errs <- fmt.Errorf("Get(%s) returned other data (%d bytes, want %d)", name, len(got), len(data))
					return
				}
				part, err := s.GetRange(ctx, name, 10, 100)
				if err != nil {
					errs <- fmt.Errorf("GetRange(%s): %w", name, err)
					return
				}
				if !bytes.Equal(part, data[10:110]) {
					errs <- fmt.Errorf("GetRange(%s) returned other data", name)
					return
				}
				if info, err := s.Stat(ctx, name); err != nil || info.Size != int64(len(data)) {
					errs <- fmt.Errorf("Stat(%s) = %+v, %v, want size %d", name, info, err, len(data))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	got := listAll(t, s, "packs/")
	if len(got) != workers*perWorker {
		t.Errorf("List after concurrent Puts found %d objects, want %d", len(got), workers*perWorker)
	}
	for w := range workers {
		for i := range perWorker {
			name := fmt.Sprintf("packs/%02x/w%d-%d", w, w, i)
			if got[name] != int64(1000+w*100+i) {
				t.Errorf("List: %s has size %d, want %d", name, got[name], 1000+w*100+i)
			}
		}
	}
}

// testAtomicOverwrite races writers replacing one object against readers:
// every read must see no object or one whole version, never a mixture or a
// prefix.
func testAtomicOverwrite(t *testing.T, s blob.Store) {
	const versions, size = 4, 256 << 10
	ctx := t.Context()
	var contents [versions][]byte
	for v := range versions {
		contents[v] = payload(uint64(100+v), size-v*1000)
	}
	isVersion := func(data []byte) bool {
		return slices.ContainsFunc(contents[:], func(c []byte) bool { return bytes.Equal(c, data) })
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for v := range versions {
		wg.Go(func() {
			for range 5 {
				if err := s.Put(ctx, "keys/slot", contents[v]); err != nil {
					report(fmt.Errorf("Put version %d: %w", v, err))
					return
				}
			}
		})
	}
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				data, err := s.Get(ctx, "keys/slot")
				if blob.IsNotExist(err) {
					continue
				}
				if err != nil {
					report(fmt.Errorf("Get during overwrites: %w", err))
					return
				}
				if !isVersion(data) {
					report(fmt.Errorf("Get during overwrites returned %d bytes that are no whole version", len(data)))
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	data := mustGet(t, s, "keys/slot")
	if !isVersion(data) {
		t.Errorf("after the overwrites the object is %d bytes of no whole version", len(data))
	}
}

func testCancelled(t *testing.T, s blob.Store) {
	mustPut(t, s, "points/kept", []byte("kept"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v, want an error wrapping context.Canceled", op, err)
		}
	}
	check("Put", s.Put(ctx, "points/new", []byte("new")))
	_, err := s.Get(ctx, "points/kept")
	check("Get", err)
	_, err = s.GetRange(ctx, "points/kept", 0, 2)
	check("GetRange", err)
	_, err = s.Stat(ctx, "points/kept")
	check("Stat", err)
	calls := 0
	err = s.List(ctx, "", func(blob.Info) error { calls++; return nil })
	check("List", err)
	err = s.List(ctx, "nothing/", func(blob.Info) error { calls++; return nil })
	check("List of an empty prefix", err)
	if calls != 0 {
		t.Errorf("List with a cancelled context called fn %d times", calls)
	}
	check("Delete", s.Delete(ctx, "points/kept"))

	// Nothing changed.
	if _, err := s.Stat(t.Context(), "points/new"); !blob.IsNotExist(err) {
		t.Errorf("Stat of an object put with a cancelled context = %v, want IsNotExist", err)
	}
	checkEqual(t, "object deleted with a cancelled context", mustGet(t, s, "points/kept"), []byte("kept"))

	// Cancelling while listing stops the listing with the context's error.
	for i := range 3 {
		mustPut(t, s, fmt.Sprintf("points/p%d", i), nil)
	}
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	calls = 0
	err = s.List(ctx, "points/", func(blob.Info) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("List cancelled from fn = %v after %d calls, want context.Canceled", err, calls)
	}
}

// testSizeCaps: an object over the cap of its kind (blob.MaxSize) is
// refused by Put, so that nothing stored is unreadable; one at the cap is
// stored and read back.
func testSizeCaps(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for _, name := range []string{"config", "keys/k1", "sessions/s1", "copied/c1"} {
		limit := blob.MaxSize(name)
		if limit > 16<<20 {
			t.Fatalf("MaxSize(%q) = %d: a marker or key slot needs no more than a few KiB", name, limit)
		}
		err := s.Put(ctx, name, make([]byte, limit+1))
		if !errors.Is(err, blob.ErrTooLarge) || !blob.IsPermanent(err) {
			t.Errorf("Put %s of %d bytes (cap %d): got %v, want ErrTooLarge (permanent)", name, limit+1, limit, err)
		}
		if _, err := s.Stat(ctx, name); !blob.IsNotExist(err) {
			t.Errorf("after a refused Put, Stat %s: %v, want not exist", name, err)
		}
	}
	at := payload(9, int(blob.MaxSize("sessions/s2")))
	mustPut(t, s, "sessions/s2", at)
	checkEqual(t, "object at its cap", mustGet(t, s, "sessions/s2"), at)
}
