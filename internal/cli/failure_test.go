package cli_test

// Failures that are not crashes: damaged objects, bad input, storage that
// errors mid-upload. Each test asserts the exit code, that the message
// names the problem, and that the vault is left as it was.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/chunk"
	"lifeboat/internal/cli"
	"lifeboat/internal/crypto"
	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

// smallFiles is the content of the small images of in-process tests:
// about 6 MiB of random and text data in a 16 MiB ext4 file system.
var smallFiles = []fileSpec{
	{"/srv/data/a.bin", 3 << 20, random, 1},
	{"/srv/data/b.bin", 2 << 20, random, 2},
	{"/var/log/syslog", 1 << 20, text, 3},
	{"/etc/hostname", 5, text, 4},
}

// smallVault is a healthy vault with 1 MiB packs and two points of machine
// web1 (disk vda), and copies of the image each point holds.
type smallVault struct {
	dir    string
	img    string   // the disk, in its latest state
	points []string // oldest first
	states []string // image copies, by point
}

func newSmallVault(t *testing.T) *smallVault {
	t.Helper()
	work := t.TempDir()
	sv := &smallVault{dir: filepath.Join(work, "vault"), img: filepath.Join(work, "web1-vda.img")}
	makeExt4(t, sv.img, 16, smallFiles)
	initVault(t, sv.dir, 1<<20)
	for i := 0; i < 2; i++ {
		if i > 0 {
			rewriteFile(t, sv.img, smallFiles[1], 50)
		}
		r := inProc(t, "--vault", sv.dir, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+sv.img)
		if r.code != 0 {
			t.Fatalf("backup: %s", r)
		}
		state := filepath.Join(work, "state"+strconv.Itoa(i)+".img")
		sparseCopy(t, sv.img, state)
		sv.points = append(sv.points, parsePoint(t, r).ID)
		sv.states = append(sv.states, state)
	}
	return sv
}

// restoreCheck restores point id (disk vda) of web1 in-process into a new
// file and returns the result. A restore that exits 0 must give exactly
// the want image: nothing is ever restored silently wrong.
func restoreCheck(t *testing.T, vaultDir, id, want string) result {
	t.Helper()
	out := filepath.Join(t.TempDir(), "vda.raw")
	r := inProc(t, "--vault", vaultDir, "-q", "restore", "--machine", "web1", id, "--disk", "vda", "--to-file", out)
	if r.code == 0 {
		if err := compareFiles(want, out); err != nil {
			t.Errorf("restore of %s exited 0 but: %v", id[:12], err)
		}
	} else if _, err := os.Stat(out); err == nil {
		t.Errorf("restore of %s failed (exit %d) but left a partial image at %s", id[:12], r.code, out)
	}
	os.Remove(out)
	return r
}

// flipByte flips the low bit of one byte of a vault object. It writes a new
// file, so hard-linked copies of the vault keep the original.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	data := fileBytes(t, path)
	data[off] ^= 0x01
	tmp := path + ".flip"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptObject flips one byte of each kind of stored object in a copy
// of a healthy vault. verify --read-data exits 5 naming the object; restore
// fails, naming it, when it needs the object, and otherwise restores
// exactly the right bytes.
func TestCorruptObject(t *testing.T) {
	sv := newSmallVault(t)
	ctx := context.Background()
	v := openVault(t, dirStore(t, sv.dir))
	pointID, _ := chunk.ParseID(sv.points[1])
	latest, err := recovery.Load(ctx, v, pointID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := image.Load(ctx, v, latest.Disks[0].Manifest, latest.Disks[0].Size, latest.Disks[0].ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	inLatest := map[chunk.ID]bool{}
	for _, id := range m.IDs {
		inLatest[id] = true
	}
	packs, err := v.ListPacks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(packs) < 3 {
		t.Fatalf("want several packs, have %d", len(packs))
	}
	// A blob of the latest point, inside a pack.
	var refPack chunk.ID
	var refOff int64 = -1
	for _, p := range packs {
		entries, err := v.ReadPackHeader(ctx, p.ID, p.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if inLatest[e.ID] && refOff < 0 {
				refPack, refOff = p.ID, int64(e.Offset)+int64(e.Length)/2
			}
		}
	}
	indexes, _ := v.ListIDs(ctx, vault.KindIndex)
	manifestName := vault.ObjectName(vault.KindManifest, latest.Disks[0].Manifest)
	last := func(path string) int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size() - 1
	}

	type victim struct {
		name   string
		object string                  // vault-relative name, as messages give it
		offset func(path string) int64 // where to flip
		// needed: points whose restore needs the object and must fail
		needed []int
		// mayFail: points whose restore may fail (naming the object) or
		// succeed with the right bytes
		mayFail []int
		// fine: points whose restore must succeed, the damage is elsewhere
		fine []int
	}
	firstPack := chunk.PackName(packs[0].ID)
	cases := []victim{
		{"pack/referenced-chunk", chunk.PackName(refPack), func(string) int64 { return refOff }, []int{1}, []int{0}, nil},
		{"pack/first-byte", firstPack, func(string) int64 { return 0 }, nil, []int{0, 1}, nil},
		{"pack/header", firstPack, func(p string) int64 { return last(p) - 20 }, nil, []int{0, 1}, nil},
		{"pack/trailer", firstPack, last, nil, []int{0, 1}, nil},
		// A damaged index object is skipped with a warning naming it: a
		// restore fails only if a chunk it needs is located by no other.
		{"index/first-byte", vault.ObjectName(vault.KindIndex, indexes[0]), func(string) int64 { return 0 }, nil, []int{0, 1}, nil},
		{"index/last-byte", vault.ObjectName(vault.KindIndex, indexes[0]), last, nil, []int{0, 1}, nil},
		{"manifest/middle", manifestName, func(p string) int64 { return last(p) / 2 }, []int{1}, nil, []int{0}},
		{"manifest/last-byte", manifestName, last, []int{1}, nil, []int{0}},
		{"point/middle", "points/" + sv.points[1], func(p string) int64 { return last(p) / 2 }, []int{1}, []int{0}, nil},
		{"point/first-byte", "points/" + sv.points[0], func(string) int64 { return 0 }, []int{0}, []int{1}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vault")
			linkCopy(t, sv.dir, dir)
			path := filepath.Join(dir, filepath.FromSlash(c.object))
			flipByte(t, path, c.offset(path))

			r := inProc(t, "--vault", dir, "-q", "verify", "--read-data")
			if r.code != cli.ExitCorrupt || !strings.Contains(r.output(), c.object) {
				t.Errorf("verify --read-data: want exit %d naming %s, got %s", cli.ExitCorrupt, c.object, r)
			}
			for _, i := range c.needed {
				r := restoreCheck(t, dir, sv.points[i], sv.states[i])
				if r.code == 0 || !strings.Contains(r.stderr, c.object) {
					t.Errorf("restore of point %d: want a failure naming %s, got %s", i, c.object, r)
				}
			}
			for _, i := range c.mayFail {
				r := restoreCheck(t, dir, sv.points[i], sv.states[i])
				if r.code != 0 && !strings.Contains(r.stderr, c.object) {
					t.Errorf("restore of point %d failed without naming %s: %s", i, c.object, r)
				}
			}
			for _, i := range c.fine {
				if r := restoreCheck(t, dir, sv.points[i], sv.states[i]); r.code != 0 {
					t.Errorf("restore of point %d, which does not use %s: %s", i, c.object, r)
				}
			}
		})
	}

	// config and key slots are JSON: flip every byte in turn. A flip that
	// leaves everything lifeboat uses unchanged (the slot's creation time
	// is informational) must change nothing; any other must stop every
	// command with a message naming the object.
	slot := objectFiles(t, sv.dir, "keys")[0]
	jsonCases := []struct {
		object string
		same   func(a, b []byte) bool // do the two versions mean the same to lifeboat?
		codes  []int
	}{
		{"config", func(a, b []byte) bool {
			var x, y vault.Config
			return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
		}, []int{cli.ExitCorrupt, cli.ExitNewerFormat}},
		// A slot sealed under other KDF parameters or salt cannot be told
		// from a wrong passphrase: exit 3 is right as long as the slot is named.
		{slot, func(a, b []byte) bool {
			var x, y crypto.Slot
			if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
				return false
			}
			// The name is a label and the generation a hint for
			// staleness, neither trusted for keys (docs/format.md).
			x.Created, y.Created = time.Time{}, time.Time{}
			x.Name, y.Name, x.Generation, y.Generation = "", "", 0, 0
			return reflect.DeepEqual(x, y)
		}, []int{cli.ExitCorrupt, cli.ExitPassphrase}},
	}
	for _, c := range jsonCases {
		t.Run("json/"+c.object, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vault")
			linkCopy(t, sv.dir, dir)
			path := filepath.Join(dir, filepath.FromSlash(c.object))
			orig := fileBytes(t, path)
			harmless, failed, bad := 0, 0, 0
			errorf := func(format string, args ...any) {
				t.Helper()
				if bad++; bad <= 5 {
					t.Errorf(format, args...)
				}
			}
			for off := range orig {
				flipByte(t, path, int64(off))
				same := c.same(orig, fileBytes(t, path))
				args := []string{"--vault", dir, "-q", "verify", "--read-data"}
				if same && harmless > 0 {
					args = args[:len(args)-1] // reading every pack once is enough
				}
				r := inProc(t, args...)
				if same {
					harmless++
					if r.code != 0 {
						errorf("byte %d (%q): a flip that changes nothing lifeboat uses broke verify: %s", off, orig[off], r)
					}
				} else {
					failed++
					if !slicesContains(c.codes, r.code) || !strings.Contains(r.stderr, c.object) {
						errorf("byte %d (%q): verify: want exit %v naming %s, got %s", off, orig[off], c.codes, c.object, r)
					}
					// restore opens the vault as verify does: a sample suffices.
					if failed%8 == 1 {
						out := filepath.Join(t.TempDir(), "out")
						if rr := inProc(t, "--vault", dir, "-q", "restore", "--machine", "web1", "latest", "--to", out); rr.code == 0 {
							errorf("byte %d (%q): restore succeeded with a damaged %s", off, orig[off], c.object)
						}
					}
				}
				flipByte(t, path, int64(off)) // back
			}
			t.Logf("%s: %d flips reported, %d harmless, %d handled wrongly", c.object, failed, harmless, bad)
			if r := inProc(t, "--vault", dir, "-q", "verify"); r.code != 0 {
				t.Fatalf("after flipping every byte back: %s", r)
			}
		})
	}
}

func slicesContains(s []int, x int) bool {
	for _, y := range s {
		if x == y {
			return true
		}
	}
	return false
}

// TestDamagedKeySlotBesideGoodOne: one damaged key slot must not lock out
// a passphrase that another slot opens (docs/format.md: opening tries the
// passphrase on every slot).
func TestDamagedKeySlotBesideGoodOne(t *testing.T) {
	sv := newSmallVault(t)
	v := openVault(t, dirStore(t, sv.dir))
	first := objectFiles(t, sv.dir, "keys")[0]
	if err := v.AddKey(context.Background(), "second", []byte("second passphrase")); err != nil {
		t.Fatal(err)
	}
	// Break the first slot's JSON, and rename it so that it is listed, and
	// tried, before the good one.
	data := fileBytes(t, filepath.Join(sv.dir, first))
	os.Remove(filepath.Join(sv.dir, first))
	first = "keys/" + strings.Repeat("0", 32)
	if err := os.WriteFile(filepath.Join(sv.dir, first), data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if r := inProcPass(t, "second passphrase", "--vault", sv.dir, "-q", "verify"); r.code != 0 {
		t.Errorf("the second slot's passphrase no longer opens the vault: %s", r)
	}
	if r := restoreCheckPass(t, "second passphrase", sv.dir, sv.points[1], sv.states[1]); r.code != 0 {
		t.Errorf("restore with the second passphrase: %s", r)
	}
	// The first passphrase's slot is the damaged one: it is named.
	r := inProc(t, "--vault", sv.dir, "-q", "verify")
	if r.code != cli.ExitCorrupt || !strings.Contains(r.stderr, first) {
		t.Errorf("first passphrase: want exit %d naming %s, got %s", cli.ExitCorrupt, first, r)
	}
}

func restoreCheckPass(t *testing.T, pass, vaultDir, id, want string) result {
	t.Helper()
	out := filepath.Join(t.TempDir(), "vda.raw")
	r := inProcPass(t, pass, "--vault", vaultDir, "-q", "restore", "--machine", "web1", id, "--disk", "vda", "--to-file", out)
	if r.code == 0 {
		sameContent(t, want, out)
	}
	return r
}

// expect fails the test unless r has exit code want and stderr contains
// every one of the words (case-insensitive).
func expect(t *testing.T, what string, r result, want int, words ...string) {
	t.Helper()
	if r.code != want {
		t.Errorf("%s: want exit %d, got %s", what, want, r)
		return
	}
	for _, w := range words {
		if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(w)) {
			t.Errorf("%s: stderr does not mention %q:\n%s", what, w, r.stderr)
		}
	}
}

// unchanged fails the test unless the vault still has exactly the given
// points and verifies clean.
func unchanged(t *testing.T, dir string, points []string) {
	t.Helper()
	unchangedBut(t, dir, points, false)
}

// unchangedBut is unchanged, but with abandonedOK a session marker marked
// abandoned may be left.
func unchangedBut(t *testing.T, dir string, points []string, abandonedOK bool) {
	t.Helper()
	got := listPoints(t, dir)
	if len(got) != len(points) {
		t.Errorf("vault has %d points, want %d: %v", len(got), len(points), got)
	}
	for _, p := range points {
		if !slicesContainsStr(got, p) {
			t.Errorf("point %s is gone", p)
		}
	}
	if r := inProc(t, "--vault", dir, "-q", "verify"); r.code != 0 {
		t.Errorf("verify: %s", r)
	}
	// A run that failed after storing packs it could not index leaves its
	// marker, marked abandoned, for the next backup to adopt them; any
	// other marker would hold off prune as if the run were still going.
	for _, name := range objectFiles(t, dir, "sessions") {
		data, err := os.ReadFile(filepath.Join(dir, name))
		var m struct {
			Abandoned bool `json:"abandoned"`
		}
		if err != nil || json.Unmarshal(data, &m) != nil || !m.Abandoned || !abandonedOK {
			t.Errorf("session marker left behind: %s: %s", name, data)
		}
	}
}

func slicesContainsStr(s []string, x string) bool {
	for _, y := range s {
		if x == y {
			return true
		}
	}
	return false
}

// TestBadInput: each mistake a user can make gets its exit code and a
// message that names it, and changes nothing.
func TestBadInput(t *testing.T) {
	sv := newSmallVault(t)
	vaultArgs := func(args ...string) []string { return append([]string{"--vault", sv.dir, "-q"}, args...) }

	t.Run("wrong-passphrase", func(t *testing.T) {
		for _, args := range [][]string{{"points"}, {"verify"}, {"restore", "--machine", "web1", "latest", "--to", t.TempDir() + "/out"},
			{"backup", "--machine", "web1", "--disk", "vda=" + sv.img}} {
			expect(t, args[0], inProcPass(t, "not the passphrase", vaultArgs(args...)...), cli.ExitPassphrase, "wrong passphrase")
		}
		unchanged(t, sv.dir, sv.points)
	})

	t.Run("missing-vault", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "no-such-vault")
		expect(t, "points", inProc(t, "--vault", missing, "points"), cli.ExitNoVault, missing, "does not exist")
		expect(t, "backup", inProc(t, "--vault", missing, "backup", "--machine", "web1", "--disk", sv.img), cli.ExitNoVault, missing)
		if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a command other than init created %s", missing)
		}
		empty := t.TempDir()
		expect(t, "empty directory", inProc(t, "--vault", empty, "points"), cli.ExitNoVault, "vault init")
	})

	t.Run("newer-format", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vault")
		linkCopy(t, sv.dir, dir)
		cfgPath := filepath.Join(dir, "config")
		var cfg map[string]any
		if err := json.Unmarshal(fileBytes(t, cfgPath), &cfg); err != nil {
			t.Fatal(err)
		}
		cfg["version"] = vault.FormatVersion + 1
		data, _ := json.MarshalIndent(cfg, "", "  ")
		os.Remove(cfgPath) // a hard link: do not write through it
		if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"points"}, {"verify"}, {"backup", "--machine", "web1", "--disk", "vda=" + sv.img}, {"prune"}} {
			r := inProc(t, append([]string{"--vault", dir, "-q"}, args...)...)
			expect(t, args[0], r, cli.ExitNewerFormat, fmt.Sprintf("version %d", vault.FormatVersion+1), "upgrade")
		}
		// Nothing was written, not even a session marker.
		if got := listPoints(t, dir); len(got) != len(sv.points) {
			t.Errorf("points changed: %v", got)
		}
		if s := objectFiles(t, dir, "sessions"); len(s) > 0 {
			t.Errorf("session markers written to a newer vault: %v", s)
		}
	})

	t.Run("disk-changed-size", func(t *testing.T) {
		work := t.TempDir()
		dir := filepath.Join(work, "vault")
		img := filepath.Join(work, "db1-vda.img")
		makeExt4(t, img, 16, smallFiles)
		initVault(t, dir, 0)
		backupArgs := []string{"--vault", dir, "--json", "-q", "backup", "--machine", "db1", "--disk", "vda=" + img}
		r := inProc(t, backupArgs...)
		if r.code != 0 {
			t.Fatal(r)
		}
		small := parsePoint(t, r).ID
		smallCopy := filepath.Join(work, "small.img")
		sparseCopy(t, img, smallCopy)

		// The disk grows by 8 MiB and its file system with it.
		if err := os.Truncate(img, 24<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := execOut("resize2fs", img); err != nil {
			t.Fatalf("resize2fs: %v\n%s", err, out)
		}
		rewriteFile(t, img, smallFiles[0], 77)
		fsck(t, img)
		r = inProc(t, backupArgs...)
		expect(t, "backup of the grown disk", r, 0, "warning", "vda", strconv.Itoa(24<<20), strconv.Itoa(16<<20))
		big := parsePoint(t, r).ID
		bigCopy := filepath.Join(work, "big.img")
		sparseCopy(t, img, bigCopy)

		for id, want := range map[string]string{small: smallCopy, big: bigCopy} {
			out := filepath.Join(t.TempDir(), "vda.raw")
			r := inProc(t, "--vault", dir, "-q", "restore", "--machine", "db1", id, "--disk", "vda", "--to-file", out)
			if r.code != 0 {
				t.Fatalf("restore %s: %s", id[:12], r)
			}
			sameContent(t, want, out)
		}

		// Reverting the grown disk in place to the small point must refuse
		// and leave the disk alone.
		before := fileBytes(t, img)
		r = inProc(t, "--vault", dir, "-q", "restore", "--machine", "db1", small, "--in-place")
		expect(t, "in-place restore onto a disk of another size", r, cli.ExitNotFound, img, strconv.Itoa(24<<20), strconv.Itoa(16<<20))
		if !bytes.Equal(before, fileBytes(t, img)) {
			t.Errorf("the refused in-place restore changed %s", img)
		}
		// Of the right size, it works.
		rewriteFile(t, img, smallFiles[1], 78)
		r = inProc(t, "--vault", dir, "-q", "restore", "--machine", "db1", big, "--in-place")
		if r.code != 0 {
			t.Fatalf("in-place restore of the same size: %s", r)
		}
		sameContent(t, bigCopy, img)
	})

	t.Run("unreadable-disk", func(t *testing.T) {
		work := t.TempDir()
		noPerm := filepath.Join(work, "noperm.img")
		sparseCopy(t, sv.img, noPerm)
		os.Chmod(noPerm, 0)
		disks := map[string]string{
			"directory": work,
			"missing":   filepath.Join(work, "no-such.img"),
			"mode-000":  noPerm,
		}
		for kind, path := range disks {
			if kind == "mode-000" && os.Geteuid() == 0 {
				continue // root reads it anyway
			}
			r := inProc(t, vaultArgs("backup", "--machine", "web1", "--disk", "vda="+path)...)
			if r.code == 0 || !strings.Contains(r.stderr, path) {
				t.Errorf("%s: want a failure naming %s, got %s", kind, path, r)
			}
			// A good disk with a bad one: nothing at all is committed.
			r = inProc(t, vaultArgs("backup", "--machine", "web1", "--disk", "vda="+sv.img, "--disk", "vdb="+path)...)
			if r.code == 0 || !strings.Contains(r.stderr, path) {
				t.Errorf("%s as second disk: want a failure naming %s, got %s", kind, path, r)
			}
		}
		unchanged(t, sv.dir, sv.points)
	})

	t.Run("init-existing-vault", func(t *testing.T) {
		cfg := fileBytes(t, filepath.Join(sv.dir, "config"))
		slots := objectFiles(t, sv.dir, "keys")
		expect(t, "vault init", inProc(t, "--vault", sv.dir, "vault", "init"), cli.ExitUsage, "already exists")
		if !bytes.Equal(cfg, fileBytes(t, filepath.Join(sv.dir, "config"))) || len(objectFiles(t, sv.dir, "keys")) != len(slots) {
			t.Errorf("vault init changed the existing vault")
		}
		unchanged(t, sv.dir, sv.points)
	})

	t.Run("invalid-chunk-size", func(t *testing.T) {
		for _, cs := range []string{"100K", "32K", "16M", "0", "-1M", "abc", "1.5M"} {
			dir := filepath.Join(t.TempDir(), "vault")
			r := inProc(t, "--vault", dir, "vault", "init", "--chunk-size", cs)
			if r.code != cli.ExitUsage || !strings.Contains(r.stderr, cs) && !strings.Contains(strings.ToLower(r.stderr), "chunk size") {
				t.Errorf("--chunk-size %s: want exit %d naming the size, got %s", cs, cli.ExitUsage, r)
			}
			if _, err := os.Stat(filepath.Join(dir, "config")); err == nil {
				t.Errorf("--chunk-size %s: a vault was created anyway", cs)
			}
		}
	})

	t.Run("malformed-definition", func(t *testing.T) {
		work := t.TempDir()
		defs := map[string]string{
			"truncated.json": `{"schema": "lifeboat.machine/v1", "name": "web1", "cpus": 2, "disks": [{"name": "vda"`,
			"not-json.json":  "name: web1\ncpus: 2\n",
			"wrong-name.json": `{"schema": "lifeboat.machine/v1", "name": "db9", "cpus": 2, "memory_mib": 2048, "firmware": "bios",
				"disks": [{"name": "vda", "bus": "virtio", "format": "raw", "boot_order": 1}], "nics": []}`,
		}
		for name, content := range defs {
			path := filepath.Join(work, name)
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			r := inProc(t, vaultArgs("backup", "--machine", "web1", "--disk", "vda="+sv.img, "--definition", path)...)
			if r.code != cli.ExitUsage || !strings.Contains(r.stderr, path) {
				t.Errorf("%s: want exit %d naming %s, got %s", name, cli.ExitUsage, path, r)
			}
		}
		r := inProc(t, vaultArgs("backup", "--machine", "web1", "--disk", "vda="+sv.img, "--definition", filepath.Join(work, "missing.json"))...)
		expect(t, "missing definition", r, cli.ExitUsage, "missing.json")
		unchanged(t, sv.dir, sv.points)
	})

	t.Run("unknown-point", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		for _, ref := range []string{"deadbeef0000", strings.Repeat("0", 64)} {
			r := inProc(t, vaultArgs("restore", "--machine", "web1", ref, "--to", out)...)
			expect(t, "restore "+ref, r, cli.ExitNotFound, "no such recovery point", ref)
		}
		// A point of another machine is not found either.
		r := inProc(t, vaultArgs("restore", "--machine", "db9", sv.points[0], "--to", out)...)
		expect(t, "other machine", r, cli.ExitNotFound, "no such recovery point")
		r = inProc(t, vaultArgs("restore", "--machine", "web1", sv.points[0], "--disk", "vdz", "--to-file", out+".raw")...)
		expect(t, "unknown disk", r, cli.ExitNotFound, "vdz")
		if _, err := os.Stat(out); err == nil {
			t.Errorf("a failed restore created %s", out)
		}
	})

	t.Run("forget-without-rule", func(t *testing.T) {
		expect(t, "forget", inProc(t, vaultArgs("forget")...), cli.ExitUsage, "--keep")
		expect(t, "forget --machine", inProc(t, vaultArgs("forget", "--machine", "web1", "--prune")...), cli.ExitUsage, "--keep")
		unchanged(t, sv.dir, sv.points)
	})
}

func execOut(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// TestStorageFaultMidBackup fails one storage call of a backup (through
// blob.Faults on the vault's directory): the backup returns the error,
// commits nothing and cleans up its session; the vault verifies clean; and
// the next backup, without faults, succeeds and restores byte-identical.
func TestStorageFaultMidBackup(t *testing.T) {
	work := t.TempDir()
	img := filepath.Join(work, "web1-vda.img")
	files := append([]fileSpec{{"/srv/data/c.bin", 3 << 20, random, 5}}, smallFiles...)
	makeExt4(t, img, 24, files)
	base := filepath.Join(work, "base")
	initVault(t, base, 1<<20)
	r := inProc(t, "--vault", base, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+img)
	if r.code != 0 {
		t.Fatal(r)
	}
	first := parsePoint(t, r).ID
	firstState := filepath.Join(work, "state0.img")
	sparseCopy(t, img, firstState)
	// New data for the backups under test: several packs' worth.
	for _, f := range files[:3] {
		rewriteFile(t, img, f, 900)
	}
	state := filepath.Join(work, "state1.img")
	sparseCopy(t, img, state)

	// wantMarker: the run stored (or may have stored) packs that no index
	// names, so it leaves an abandoned session marker.
	faults := []struct {
		name       string
		fault      blob.Fault
		wantMarker bool
	}{
		{"second-pack-upload", blob.Fault{Op: blob.OpPut, Prefix: "packs/", Nth: 2}, true},
		{"pack-stored-reply-lost", blob.Fault{Op: blob.OpPut, Prefix: "packs/", Nth: 3, After: true}, true},
		{"index-upload", blob.Fault{Op: blob.OpPut, Prefix: "index/", Nth: 1}, true},
		{"manifest-upload", blob.Fault{Op: blob.OpPut, Prefix: "manifests/", Nth: 1}, false},
		{"point-upload", blob.Fault{Op: blob.OpPut, Prefix: "points/", Nth: 1}, false},
		{"index-read", blob.Fault{Op: blob.OpGet, Prefix: "index/", Nth: 1}, false},
		{"session-marker", blob.Fault{Op: blob.OpPut, Prefix: "sessions/", Nth: 1}, false},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vault")
			linkCopy(t, base, dir)
			store := blob.NewFaults(dirStore(t, dir))
			v := openVault(t, store)
			store.Add(f.fault)
			src, err := source.OpenFile(img)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			p, err := backup.Run(ctx, v, backup.Options{Machine: "web1", Disks: []backup.Disk{{Name: "vda", Source: src}}})
			if err == nil {
				t.Fatalf("backup succeeded (point %s) despite the fault", p.ID.Short())
			}
			if !errors.Is(err, blob.ErrInjected) || store.Injected() != 1 {
				t.Errorf("backup error %q does not carry the one injected fault (%d injected)", err, store.Injected())
			}
			if cli.ExitCode(err) == cli.ExitOK {
				t.Errorf("exit code 0 for %v", err)
			}
			unchangedBut(t, dir, []string{first}, true)
			markers := objectFiles(t, dir, "sessions")
			if f.wantMarker != (len(markers) == 1) || len(markers) > 1 {
				t.Errorf("session markers after the failure: %v; want an abandoned one: %v", markers, f.wantMarker)
			}
			if r := inProc(t, "--vault", dir, "-q", "verify", "--read-data"); r.code != 0 {
				t.Errorf("verify --read-data: %s", r)
			}

			r := inProc(t, "--vault", dir, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+img)
			if r.code != 0 {
				t.Fatalf("backup without faults: %s", r)
			}
			second := parsePoint(t, r).ID
			// The failed run marked its session abandoned, so the rerun
			// adopted what it stored: no pack is left outside an index.
			vr := inProc(t, "--vault", dir, "-q", "--json", "verify")
			var vrep struct {
				Warnings []string `json:"warnings"`
			}
			if err := json.Unmarshal([]byte(vr.stdout), &vrep); vr.code != 0 || err != nil || len(vrep.Warnings) > 0 {
				t.Errorf("verify after the rerun (want no warnings): %v\n%s", err, vr)
			}
			if m := objectFiles(t, dir, "sessions"); len(m) > 0 {
				t.Errorf("session markers left after the rerun adopted the orphans: %v", m)
			}
			if rr := restoreCheck(t, dir, first, firstState); rr.code != 0 {
				t.Errorf("restore of the earlier point: %s", rr)
			}
			if rr := restoreCheck(t, dir, second, state); rr.code != 0 {
				t.Errorf("restore of the new point: %s", rr)
			}
		})
	}
}

// s3Env is the environment that points lifeboat at an S3 endpoint.
func s3Env(cfg blob.S3Config) map[string]string {
	return map[string]string{
		"LIFEBOAT_PASSWORD":     testPassphrase,
		"LIFEBOAT_S3_ENDPOINT":  "http://" + cfg.Endpoint,
		"AWS_ACCESS_KEY_ID":     cfg.AccessKey,
		"AWS_SECRET_ACCESS_KEY": cfg.SecretKey,
		"AWS_REGION":            cfg.Region,
	}
}

// TestStorageS3DeadEndpoint: an S3 endpoint nobody listens on gives exit 7
// and a message naming it, quickly.
func TestStorageS3DeadEndpoint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env := s3Env(blob.S3Config{Endpoint: addr, AccessKey: "lifeboat", SecretKey: "secret", Region: "us-east-1"})
	img := filepath.Join(t.TempDir(), "vda.img")
	makeExt4(t, img, 16, smallFiles[3:])
	for _, args := range [][]string{{"vault", "init"}, {"points"}, {"backup", "--machine", "web1", "--disk", "vda=" + img}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		r := inProcEnv(ctx, env, append([]string{"--vault", "s3://lifeboat-test/v", "-q"}, args...)...)
		cancel()
		if r.code != cli.ExitStorage || !strings.Contains(r.stderr, addr) {
			t.Errorf("%s: want exit %d naming %s, got %s", args[0], cli.ExitStorage, addr, r)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("%s: took %v to give up on a dead endpoint", args[0], d)
		}
	}
}

// TestStorageS3ServerDies stops a real S3 server (versitygw) in the middle
// of a backup: the backup fails with exit 7 (or 1) and a message naming the
// endpoint instead of hanging; once the server is back, nothing was
// committed, verify is clean and the backup succeeds.
// s3Backup is a vault on versitygw and a disk image several packs large,
// for the tests that fail the server part way through a backup.
type s3Backup struct {
	srv   *s3test.Server
	cfg   blob.S3Config
	env   map[string]string
	url   string
	store blob.Store
	img   string
}

func newS3Backup(t *testing.T) *s3Backup {
	t.Helper()
	b := &s3Backup{srv: s3test.Start(t)}
	b.cfg = b.srv.Config
	b.cfg.Prefix = "vault"
	b.env = s3Env(b.cfg)
	b.url = "s3://" + b.cfg.Bucket + "/vault"
	store, err := blob.NewS3(context.Background(), b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.store = store
	if _, err := vault.Init(context.Background(), store, []byte(testPassphrase), vault.Options{KDF: cheapKDF, PackSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	b.img = filepath.Join(t.TempDir(), "web1-vda.img")
	makeExt4(t, b.img, 48, []fileSpec{{"/srv/a.bin", 12 << 20, random, 1}, {"/srv/b.bin", 12 << 20, random, 2}, {"/var/log/syslog", 2 << 20, text, 3}})
	return b
}

// backupFailing runs a backup in-process and calls fail as soon as its
// first pack is stored; it returns the result and how long the backup took.
func (b *s3Backup) backupFailing(t *testing.T, env map[string]string, fail func()) (result, time.Duration) {
	t.Helper()
	ctx := context.Background()
	var failed atomic.Bool
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		for watchCtx.Err() == nil {
			n := 0
			b.store.List(watchCtx, "packs/", func(blob.Info) error { n++; return nil })
			if n > 0 {
				fail()
				failed.Store(true)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	r := inProcEnv(runCtx, env, "--vault", b.url, "-q", "backup", "--machine", "web1", "--disk", "vda="+b.img)
	elapsed := time.Since(start)
	stopWatch()
	if !failed.Load() {
		t.Fatalf("the backup ended before the server failed: %s", r)
	}
	t.Logf("backup failed after %v: %s", elapsed, strings.TrimSpace(r.stderr))
	if runCtx.Err() != nil {
		t.Errorf("the backup only ended with its context (%v)", elapsed)
	}
	return r, elapsed
}

func TestStorageS3ServerDies(t *testing.T) {
	b := newS3Backup(t)
	srv, cfg, env, url, img := b.srv, b.cfg, b.env, b.url, b.img
	ctx := context.Background()
	work := t.TempDir()
	// Stop the server as soon as the first pack is stored.
	r, _ := b.backupFailing(t, env, srv.Stop)
	if r.code != cli.ExitStorage && r.code != cli.ExitError || !strings.Contains(r.stderr, cfg.Endpoint) {
		t.Errorf("want exit %d (or %d) naming %s, got %s", cli.ExitStorage, cli.ExitError, cfg.Endpoint, r)
	}

	srv.Restart()
	if r := inProcEnv(ctx, env, "--vault", url, "-q", "--json", "points"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("points after the failed backup: %s", r)
	}
	if r := inProcEnv(ctx, env, "--vault", url, "-q", "verify", "--read-data"); r.code != 0 {
		t.Errorf("verify: %s", r)
	}
	r = inProcEnv(ctx, env, "--vault", url, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+img)
	if r.code != 0 {
		t.Fatalf("backup after restart: %s", r)
	}
	p := parsePoint(t, r)
	out := filepath.Join(work, "restored.raw")
	if r := inProcEnv(ctx, env, "--vault", url, "-q", "restore", "--machine", "web1", p.ID, "--disk", "vda", "--to-file", out); r.code != 0 {
		t.Fatalf("restore: %s", r)
	}
	sameContent(t, img, out)
}

// TestStorageS3ServerFreezes: a server frozen (SIGSTOP, never thawed)
// part way through a backup fails it within the retry budget plus a stall
// timeout per operation (the pack upload, then the marker's clean-up),
// with an error naming the budget; it used to hang for 5 attempts of the
// stall timeout, and then on the marker's refresh lock.
func TestStorageS3ServerFreezes(t *testing.T) {
	b := newS3Backup(t)
	env := maps.Clone(b.env)
	env["LIFEBOAT_S3_STALL_TIMEOUT"] = "1s"
	env["LIFEBOAT_S3_RETRY_BUDGET"] = "2s"
	r, elapsed := b.backupFailing(t, env, b.srv.Pause)
	expect(t, "backup with the server frozen", r, cli.ExitStorage, b.cfg.Endpoint, "retry budget of 2s")
	if elapsed > 12*time.Second {
		t.Errorf("the backup took %v to fail with a 2s retry budget and a 1s stall timeout", elapsed)
	}
	b.srv.Resume()
	if r := inProcEnv(context.Background(), b.env, "--vault", b.url, "-q", "verify", "--read-data"); r.code != 0 {
		t.Errorf("verify after the thaw: %s", r)
	}
}

// TestRestoreS3PauseAndKill: a restore from a versitygw frozen (SIGSTOP)
// for longer than the stall and header timeouts completes once the server
// thaws; a restore killed (SIGKILL) part way leaves its partial image, and
// the same restore run again resumes it and gives the point's image.
func TestRestoreS3PauseAndKill(t *testing.T) {
	b := newS3Backup(t)
	ctx := context.Background()
	r := inProcEnv(ctx, b.env, "--vault", b.url, "-q", "--json", "backup", "--machine", "web1", "--disk", "vda="+b.img)
	if r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	id := parsePoint(t, r).ID
	env := maps.Clone(b.env)
	env["LIFEBOAT_S3_STALL_TIMEOUT"] = "500ms"
	env["LIFEBOAT_S3_RETRY_BUDGET"] = "30s"
	restoreArgs := func(out string) []string {
		return []string{"--vault", b.url, "restore", "--machine", "web1", id, "--disk", "vda", "--to-file", out}
	}

	// Paused 2 s, four stall timeouts, as soon as the restore starts.
	out := filepath.Join(t.TempDir(), "paused.raw")
	paused := make(chan struct{})
	go func() {
		defer close(paused)
		if waitFile(restore.PartialPath(out), 30*time.Second) {
			b.srv.Pause()
			time.Sleep(2 * time.Second)
			b.srv.Resume()
		}
	}()
	r = inProcEnv(ctx, env, restoreArgs(out)...)
	<-paused
	if r.code != 0 {
		t.Fatalf("restore across a 2s server pause: %s", r)
	}
	sameContent(t, b.img, out)

	// Killed once it has written data (the server is frozen meanwhile, so
	// that the restore cannot finish before it is killed).
	out = filepath.Join(t.TempDir(), "killed.raw")
	p := startProcEnv(t, env, restoreArgs(out)...)
	if !waitFile(restore.PartialPath(out), 30*time.Second) {
		t.Fatalf("no partial image appeared: %s", p.wait(t, time.Minute))
	}
	for {
		b.srv.Pause()
		if hasData(t, restore.PartialPath(out)) || p.exited() {
			break
		}
		b.srv.Resume()
		time.Sleep(20 * time.Millisecond)
	}
	if !p.kill() {
		t.Fatalf("the restore ended before it could be killed: %s", p.wait(t, time.Second))
	}
	b.srv.Resume()
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("a killed restore left an image at %s", out)
	}
	r = inProcEnv(ctx, env, restoreArgs(out)...)
	if r.code != 0 || !strings.Contains(r.stderr, "resuming") {
		t.Fatalf("the same restore after the kill: want it resumed, got %s", r)
	}
	sameContent(t, b.img, out)
	if _, err := os.Stat(restore.PartialPath(out)); err == nil {
		t.Error("the partial image is still there after the resumed restore")
	}
}

// waitFile waits for path to exist.
func waitFile(path string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// hasData reports whether the file holds a non-zero byte.
func hasData(t *testing.T, path string) bool {
	data := fileBytes(t, path)
	return !bytes.Equal(data, make([]byte, len(data)))
}
