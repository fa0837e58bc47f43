package qmp_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"lifeboat/internal/qmp"
)

// imageBitmaps reads the bitmaps stored in a qcow2 image with qemu-img
// info (the daemon must not be running: it holds the image lock).
func imageBitmaps(t *testing.T, path string) map[string][]string {
	t.Helper()
	var info struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps []struct {
					Name  string   `json:"name"`
					Flags []string `json:"flags"`
				} `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	out := run(t, "qemu-img", "info", "--output=json", path)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	got := map[string][]string{}
	for _, b := range info.FormatSpecific.Data.Bitmaps {
		got[b.Name] = b.Flags
	}
	return got
}

// TestBitmapsAfterCrash records what QEMU 7.2 does with persistent bitmaps
// across a clean shutdown and a kill -9, and that Fleece refuses to use an
// inconsistent one.
//
// Observed on QEMU 7.2: a persistent bitmap is written to the qcow2 only
// when the image is closed (or inactivated). On open for writing, QEMU
// marks the stored bitmaps "in-use" in the image; a clean close clears the
// flag. So after kill -9:
//   - a bitmap stored by an earlier clean shutdown comes back with
//     "inconsistent": true (flag in-use in qemu-img info), not recording,
//     and unusable except for block-dirty-bitmap-remove;
//   - a bitmap added since the last open is simply gone;
//   - non-persistent bitmaps are gone after any restart.
func TestBitmapsAfterCrash(t *testing.T) {
	d := startDaemon(t, disk{"d0", 16 << 20})
	m := d.dial()
	ctx := testCtx(t)
	if err := m.Transaction(ctx,
		qmp.BitmapAdd("d0", "stored", qmp.BitmapAddOptions{Persistent: true}),
		qmp.BitmapAdd("d0", "volatile", qmp.BitmapAddOptions{}),
	); err != nil {
		t.Fatal(err)
	}
	m.Close()
	d.stop() // clean: the persistent bitmap is written to the image
	if got, want := imageBitmaps(t, d.image("d0")), map[string][]string{"stored": {"auto"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("image bitmaps after clean shutdown = %v, want %v", got, want)
	}

	d.start()
	m = d.dial()
	n, err := m.Node(ctx, "d0")
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := n.Bitmap("stored"); !ok || b.Inconsistent || !b.Recording || !b.Persistent {
		t.Fatalf("after a clean restart: stored = %+v (present %v), want consistent and recording", b, ok)
	}
	if _, ok := n.Bitmap("volatile"); ok {
		t.Fatal("non-persistent bitmap survived a restart")
	}
	if err := m.Transaction(ctx, qmp.BitmapAdd("d0", "late", qmp.BitmapAddOptions{Persistent: true})); err != nil {
		t.Fatal(err)
	}
	m.Close()
	d.kill()
	if got := imageBitmaps(t, d.image("d0")); !reflect.DeepEqual(got, map[string][]string{"stored": {"in-use", "auto"}}) {
		t.Fatalf("image bitmaps after kill -9 = %v, want stored marked in-use and late absent", got)
	}

	d.start()
	m = d.dial()
	n, err = m.Node(ctx, "d0")
	if err != nil {
		t.Fatal(err)
	}
	b, ok := n.Bitmap("stored")
	if !ok || !b.Inconsistent || !b.Persistent {
		t.Fatalf("after kill -9: stored = %+v (present %v), want inconsistent", b, ok)
	}
	t.Logf("QEMU %v after kill -9: %+v; bitmap added since the last open: absent", m.Version(), b)
	if _, ok := n.Bitmap("late"); ok {
		t.Fatal("a bitmap never stored came back after kill -9")
	}
	disks, err := m.Disks(ctx)
	if err != nil || len(disks) != 1 || len(disks[0].Bitmaps) != 1 || !disks[0].Bitmaps[0].Inconsistent {
		t.Fatalf("Disks does not show the inconsistent bitmap: %+v, %v", disks, err)
	}

	// The engine detects it before using it.
	_, err = qmp.Fleece(ctx, m, []qmp.FleeceDisk{{Node: "d0", NewBitmap: "next", PrevBitmap: "stored"}},
		qmp.FleeceOptions{Dir: d.dir, Server: qmp.UnixSocket(d.dir + "/nbd.sock"), StartServer: true})
	if !errors.Is(err, qmp.ErrBitmapInconsistent) {
		t.Fatalf("Fleece from an inconsistent bitmap: %v, want ErrBitmapInconsistent", err)
	}
	// QEMU itself refuses to use it...
	if err := m.Transaction(ctx, qmp.BitmapDisable("d0", "stored")); !qmp.IsClass(err, "GenericError") {
		t.Fatalf("disabling an inconsistent bitmap: %v", err)
	} else {
		t.Logf("QEMU on using it: %v", err)
	}
	// ...but removes it, from the image too.
	if err := m.Transaction(ctx, qmp.BitmapRemove("d0", "stored")); err != nil {
		t.Fatal(err)
	}
	m.Close()
	d.stop()
	if got := imageBitmaps(t, d.image("d0")); len(got) != 0 {
		t.Fatalf("image bitmaps after removal = %v", got)
	}
}
