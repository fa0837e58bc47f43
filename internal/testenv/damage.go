package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// DamagePack overwrites a few bytes inside the first pack of the directory
// vault at dir, as failing storage would, and returns the pack's path.
func DamagePack(t testing.TB, dir string) string {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*", "*"))
	if len(packs) == 0 {
		t.Fatalf("no packs in %s", dir)
	}
	f, err := os.OpenFile(packs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("damage"), 100); err != nil {
		t.Fatal(err)
	}
	return packs[0]
}
