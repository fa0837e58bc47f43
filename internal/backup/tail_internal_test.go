package backup

import (
	"testing"

	"lifeboat/internal/image"
)

// mostToStore counts the dirty blocks of tracked disks and the clean ones
// whose parent chunk is gone, sealed; an untracked disk makes it unknown.
func TestMostToStore(t *testing.T) {
	const cs = 64 << 10
	tracked := &diskState{manifest: image.NewManifest(4*cs+100, cs), dirty: []bool{true, false, false, true, false},
		parentHeld: []bool{true, true, false, true, true}}
	if n, ok := mostToStore([]*diskState{tracked}); !ok || n != 3*(cs+sealOverhead) {
		t.Fatalf("tracked: %d %v, want 3 blocks", n, ok)
	}
	tail := &diskState{manifest: image.NewManifest(4*cs+100, cs), dirty: []bool{false, false, false, false, true},
		parentHeld: []bool{true, true, true, true, true}}
	if n, ok := mostToStore([]*diskState{tail}); !ok || n != 100+sealOverhead {
		t.Fatalf("short last block: %d %v", n, ok)
	}
	if _, ok := mostToStore([]*diskState{tracked, {manifest: image.NewManifest(cs, cs)}}); ok {
		t.Fatal("an untracked disk: the most to store is unknown")
	}
}
