package backup_test

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

var cheap = vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10}

// makeDisk writes a disk image with random, text and zero regions.
func makeDisk(t *testing.T, path string, size int64, seed int64) []byte {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	data := make([]byte, size)
	for off := int64(0); off < size; off += 64 << 10 {
		end := min(off+64<<10, size)
		switch r.Intn(4) {
		case 0: // zeros
		case 1:
			r.Read(data[off:end])
		default:
			copy(data[off:end], bytes.Repeat([]byte("lifeboat test data "), 4000))
		}
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

func backupFiles(t *testing.T, v *vault.Vault, machine string, paths map[string]string) *recovery.Point {
	t.Helper()
	pt, err := runBackup(t, v, machine, paths)
	if err != nil {
		t.Fatal(err)
	}
	return pt
}

// runBackup backs up the image files paths (disk name -> file) as one
// point of machine.
func runBackup(t *testing.T, v *vault.Vault, machine string, paths map[string]string) (*recovery.Point, error) {
	t.Helper()
	var disks []backup.Disk
	for name, p := range paths {
		src, err := source.OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		disks = append(disks, backup.Disk{Name: name, Source: src})
	}
	return backup.Run(context.Background(), v, backup.Options{Machine: machine, Disks: disks})
}

func restoreTo(t *testing.T, v *vault.Vault, p *recovery.Point, dir string) map[string][]byte {
	t.Helper()
	var targets []restore.Target
	for _, d := range p.Disks {
		targets = append(targets, restore.Target{Disk: d, Path: filepath.Join(dir, d.Name+".raw")})
	}
	if _, err := restore.Run(context.Background(), v, p, targets, restore.Options{}); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, d := range p.Disks {
		data, err := os.ReadFile(filepath.Join(dir, d.Name+".raw"))
		if err != nil {
			t.Fatal(err)
		}
		out[d.Name] = data
	}
	return out
}

func newVault(t *testing.T, store blob.Store) *vault.Vault {
	v, err := vault.Init(context.Background(), store, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFullIncrementalDedupRestore(t *testing.T) {
	for name, store := range map[string]func() blob.Store{
		"mem": func() blob.Store { return blob.NewMem() },
		"dir": func() blob.Store { d, _ := blob.NewDir(t.TempDir()); return d },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			v := newVault(t, store())
			a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
			dataA := makeDisk(t, a, 8<<20+12345, 1) // not a multiple of the chunk size
			dataB := makeDisk(t, b, 4<<20, 2)
			p1 := backupFiles(t, v, "web1", map[string]string{"root": a, "data": b})
			got := restoreTo(t, v, p1, t.TempDir())
			if !bytes.Equal(got["root"], dataA) || !bytes.Equal(got["data"], dataB) {
				t.Fatal("full restore differs")
			}

			// Change 3 scattered 4 KiB blocks: the incremental stores 3 chunks.
			f, _ := os.OpenFile(a, os.O_RDWR, 0)
			for _, off := range []int64{100 << 10, 3 << 20, 8 << 20} {
				junk := make([]byte, 4096)
				rand.Read(junk)
				f.WriteAt(junk, off)
				copy(dataA[off:], junk)
			}
			f.Close()
			p2 := backupFiles(t, v, "web1", map[string]string{"root": a, "data": b})
			root, _ := p2.Disk("root")
			data, _ := p2.Disk("data")
			if root.Stats.NewChunks != 3 || data.Stats.NewChunks != 0 {
				t.Fatalf("incremental stored %d+%d new chunks, want 3+0", root.Stats.NewChunks, data.Stats.NewChunks)
			}
			if p2.Parent != p1.ID.String() {
				t.Fatalf("parent %s, want %s", p2.Parent, p1.ID)
			}
			got = restoreTo(t, v, p2, t.TempDir())
			if !bytes.Equal(got["root"], dataA) {
				t.Fatal("incremental restore differs")
			}
			// p1 still restores as it was.
			old := restoreTo(t, v, p1, t.TempDir())
			if !bytes.Equal(old["data"], dataB) || bytes.Equal(old["root"], dataA) {
				t.Fatal("old point changed")
			}

			// A clone of the machine adds no data.
			clone := filepath.Join(dir, "clone.raw")
			os.WriteFile(clone, dataA, 0o600)
			p3 := backupFiles(t, v, "web2", map[string]string{"root": clone})
			cd, _ := p3.Disk("root")
			if cd.Stats.NewChunks != 0 || p3.Stats.StoredBytes != 0 || cd.Stats.DedupChunks == 0 {
				t.Fatalf("clone stored %d new chunks, %d bytes", cd.Stats.NewChunks, p3.Stats.StoredBytes)
			}
		})
	}
}

func TestInPlaceRestoreWritesOnlyDifferences(t *testing.T) {
	dir := t.TempDir()
	store, _ := blob.NewDir(t.TempDir())
	v := newVault(t, store)
	disk := filepath.Join(dir, "d.raw")
	orig := makeDisk(t, disk, 16<<20, 3)
	p := backupFiles(t, v, "m", map[string]string{"d": disk})

	// Damage two chunks and zero-fill region; then revert in place.
	f, _ := os.OpenFile(disk, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{0xAA}, 100), 5<<20)
	f.WriteAt(bytes.Repeat([]byte{0xBB}, 70<<10), 9<<20)
	f.Close()
	d := p.Disks[0]
	st, err := restore.Run(context.Background(), v, p, []restore.Target{{Disk: d, Path: disk, InPlace: true}}, restore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(disk)
	if !bytes.Equal(got, orig) {
		t.Fatal("in-place restore did not revert the disk")
	}
	// 100 bytes touch 1 chunk, 70 KiB at a chunk boundary touch 2.
	if st.WrittenBytes != 3*64<<10 {
		t.Fatalf("in-place wrote %d bytes, want %d", st.WrittenBytes, 3*64<<10)
	}
	// Wrong size target is refused.
	small := filepath.Join(dir, "small.raw")
	os.WriteFile(small, make([]byte, 1<<20), 0o600)
	if _, err := restore.Run(context.Background(), v, p, []restore.Target{{Disk: d, Path: small, InPlace: true}}, restore.Options{}); err == nil {
		t.Fatal("in-place restore onto a smaller disk succeeded")
	}
	// A new-file restore never overwrites.
	if _, err := restore.Run(context.Background(), v, p, []restore.Target{{Disk: d, Path: disk}}, restore.Options{}); err == nil {
		t.Fatal("restore overwrote an existing file")
	}
}

func TestSparseHolesNotRead(t *testing.T) {
	dir := t.TempDir()
	v := newVault(t, blob.NewMem())
	disk := filepath.Join(dir, "sparse.raw")
	f, _ := os.Create(disk)
	f.Truncate(1 << 30) // 1 GiB hole
	f.WriteAt([]byte("data at 512M"), 512<<20)
	f.Close()
	p := backupFiles(t, v, "m", map[string]string{"d": disk})
	d := p.Disks[0]
	if d.Stats.ReadBytes > 1<<20 || d.Stats.NewChunks != 1 {
		t.Fatalf("read %d bytes, %d new chunks from a sparse disk", d.Stats.ReadBytes, d.Stats.NewChunks)
	}
	out := restoreTo(t, v, p, dir)
	if string(out["d"][512<<20:512<<20+12]) != "data at 512M" {
		t.Fatal("sparse restore lost data")
	}
}
