package live

import (
	"strings"
	"testing"

	"lifeboat/internal/qmp"
	"lifeboat/internal/recovery"
)

// Each reason a bitmap is not trusted is named as the disk's bitmaps show
// it; "QEMU restarted" only where nothing else explains a missing bitmap.
func TestJudgeBitmapReasons(t *testing.T) {
	const prefix = "lifeboat-0123abcd-"
	const prev = prefix + "aaaaaaaaaaaa"
	const leftover = prefix + "bbbbbbbbbbbb"
	parent := &recovery.Point{Disks: []recovery.Disk{{Name: "vda", Size: 1 << 20, Tracking: prev}}}
	disk := func(driver string, bitmaps ...qmp.DirtyBitmap) liveDisk {
		return liveDisk{Disk: qmp.Disk{Node: "n", Driver: driver, Size: 1 << 20, Bitmaps: bitmaps}, name: "vda"}
	}
	good := qmp.DirtyBitmap{Name: prev, Recording: true, Persistent: true}
	disabled := qmp.DirtyBitmap{Name: prev, Persistent: true}
	other := qmp.DirtyBitmap{Name: leftover, Recording: true, Persistent: true}
	for _, tc := range []struct {
		name   string
		d      liveDisk
		prev   string
		parent *recovery.Point
		want   []string // all in the reason; nil: usable
		not    []string
	}{
		{name: "usable", d: disk("qcow2", good, qmp.DirtyBitmap{Name: "theirs"}), prev: prev, parent: parent},
		{name: "killed after the instant", d: disk("qcow2", disabled, other), prev: prev, parent: parent,
			want: []string{"stopped recording", "killed", leftover}, not: []string{"restarted"}},
		{name: "disabled, no leftover", d: disk("qcow2", disabled), prev: prev, parent: parent,
			want: []string{"not recording", "killed"}, not: []string{"restarted"}},
		{name: "removed by a later backup", d: disk("qcow2", other), prev: prev, parent: parent,
			want: []string{"removed", leftover}, not: []string{"restarted"}},
		{name: "qcow2 lost on kill", d: disk("qcow2"), prev: prev, parent: parent,
			want: []string{"gone from the qcow2 image", "killed or crashed"}, not: []string{"restarted"}},
		{name: "raw image restarted", d: disk("raw"), prev: prev, parent: parent,
			want: []string{"QEMU restarted", "raw"}},
		{name: "inconsistent", d: disk("qcow2", qmp.DirtyBitmap{Name: prev, Recording: true, Inconsistent: true}), prev: prev, parent: parent,
			want: []string{"inconsistent", "killed or crashed"}},
		{name: "busy", d: disk("qcow2", qmp.DirtyBitmap{Name: prev, Recording: true, Busy: true}), prev: prev, parent: parent,
			want: []string{"in use"}},
		{name: "offline parent", d: disk("qcow2", good), prev: "", parent: parent,
			want: []string{"no change tracking", "not taken live"}},
		{name: "NBD parent", d: disk("qcow2", good), prev: "nbd:b0", parent: parent,
			want: []string{"NBD server's bitmap b0"}},
		{name: "copied from another vault", d: disk("qcow2", qmp.DirtyBitmap{Name: "lifeboat-ffffffff-cccccccccccc", Recording: true}),
			prev: "lifeboat-ffffffff-cccccccccccc", parent: parent, want: []string{"another vault"}},
		{name: "new disk", d: liveDisk{Disk: qmp.Disk{Size: 1 << 20}, name: "vdb"}, prev: "", parent: parent,
			want: []string{"has no disk vdb"}},
		{name: "resized", d: liveDisk{Disk: qmp.Disk{Size: 2 << 20, Bitmaps: []qmp.DirtyBitmap{good}}, name: "vda"}, prev: prev, parent: parent,
			want: []string{"2097152 bytes, was 1048576"}},
		{name: "no parent", d: disk("qcow2"), want: []string{"no earlier point"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := judgeBitmap(tc.d, tc.prev, prefix, tc.parent)
			if ok != (tc.want == nil) {
				t.Fatalf("usable %v (%q), want %v", ok, why, tc.want == nil)
			}
			for _, w := range tc.want {
				if !strings.Contains(why, w) {
					t.Errorf("reason %q does not say %q", why, w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(why, w) {
					t.Errorf("reason %q says %q", why, w)
				}
			}
		})
	}
}
